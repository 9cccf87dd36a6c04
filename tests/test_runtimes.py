"""The Runner contract: one conformance test over every registered runtime, including those that cannot run here.

Every runtime's declarations and refusals are checked everywhere (they need no optional package and no probe);
the full behaviour (metadata, input checks, logits that match PyTorch) where the runtime runs on this machine.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.compile import BuildOptions, build, get_target
from vcompile.errors import VcompileError
from vcompile.runtimes import RUNTIMES, check_request, load
from vcompile.runtimes.base import PRECISIONS, Runner, RunnerError, TensorMetadata, parse_device
from vcompile.zoo import TINY_FRAMES, TINY_SIZE, create_model

MODEL = "tsm-r50"
TINY = BuildOptions(tiny=True, batch=2)
SHAPE = (2, 3, TINY_FRAMES, TINY_SIZE, TINY_SIZE)
# Runtimes whose input takes any batch (the ONNX graph's "batch" axis, a trace without frozen values, a module,
# an engine profile, the IR converted from the ONNX); ExecuTorch and Core ML programs are static.
DYNAMIC_BATCH = {"torch", "inductor", "onnxruntime", "openvino", "ptl", "tensorrt"}
BAD_DEVICES = ("gpu0", "cudaXYZ", "cuda:", "cuda:-1", "cuda:01", "cuda:1x", "cpu:0", "", "CUDA :0")
HEAVY = ("tensorrt", "coremltools", "executorch", "openvino", "av")
PARAMS = [pytest.param(r, marks=pytest.mark.slow) if r == "inductor" else r for r in RUNTIMES]


class FakeArtifact:
    """What a runner reads of an artifact before activation: target, manifest (precision, input shape), path."""

    def __init__(self, target: str, precision: str):
        self.target, self.path = target, Path("fake-artifact")
        self.manifest = {"options": {"precision": precision}, "input_shape": list(SHAPE), "info": {}}


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """The tiny model built once per target for this module: ``tiny_build("onnx")``."""
    out, built = tmp_path_factory.mktemp("runtimes"), {}

    def get(target: str):
        if target not in built:
            built[target] = build(MODEL, target, TINY, out=out)
        return built[target]

    return get


def _refused(call, *words: str) -> str:
    """The one-line message of the `VcompileError` that ``call()`` raises; it must contain every word."""
    with pytest.raises(VcompileError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def _no_probe():
    raise AssertionError("a request the declarations refuse must be refused before the runtime is probed")


# Runtimes that take and return host arrays themselves: their compute cannot be timed apart from infer.
COMPUTE_AS_END_TO_END = ("ptl", "coreml")


@pytest.mark.parametrize("runtime", PARAMS)
def test_runner_contract(runtime, tiny_build, monkeypatch):
    info = RUNTIMES[runtime]
    cls = info.runner_class

    # Declarations: present and well formed.
    assert issubclass(cls, Runner) and cls.name == runtime
    assert isinstance(info.devices, tuple) and info.devices and info.default_device == info.devices[0]
    assert all(parse_device(d, info.devices) == d for d in info.devices)
    assert isinstance(info.precisions, tuple) and info.precisions and set(info.precisions) <= set(PRECISIONS)
    assert isinstance(info.thread_control, bool)
    assert info.precision_from_artifact is (info.target is not None)
    if info.target is not None:  # what the runner executes is what its target builds
        assert set(info.precisions) == set(get_target(info.target).precisions)

    # Refusals: one line each, before any probe (so also where the runtime's package is missing).
    built = info.precisions[0]
    source = create_model(MODEL, tiny=True) if info.target is None else FakeArtifact(info.target, built)
    monkeypatch.setitem(RUNTIMES, runtime, replace(info, probe=_no_probe))
    unsupported = [d for d in ("cpu", "cuda", "cuda:1", "ane") if parse_device(d, info.devices) is None]
    for device in (*BAD_DEVICES, *unsupported):
        _refused(lambda d=device: load(source, runtime, device=d), f"the {runtime} runtime", repr(device),
                 "use --device")
    never = next(p for p in PRECISIONS if p not in info.precisions)  # a precision this runtime does not run
    _refused(lambda: load(source, runtime, precision=never), f"the {runtime} runtime", repr(never), "choose")
    if info.target is not None:  # an artifact runs in its own precision, never another one
        other = next(p for p in PRECISIONS if p != built)
        _refused(lambda: load(source, runtime, precision=other), f"the {runtime} runtime", built, other)
        assert check_request(runtime, precision=built, source=source)[1] == built
        assert check_request(runtime, source=source)[1] == built
    else:
        assert check_request(runtime)[1] == "fp32"
    if not info.thread_control:
        _refused(lambda: load(source, runtime, threads=2), f"the {runtime} runtime", "threads=2")
    for threads in (0, -1, 1.5, True):
        _refused(lambda n=threads: load(source, runtime, threads=n), "threads must be a positive integer")
    idle = cls(source)  # the hooks are reachable only through the public methods
    for call, caller in ((idle.activate_impl, "activate"), (lambda: idle.infer_impl(None), "infer"),
                         (idle.get_input_metadata_impl, "activate"), (idle.deactivate_impl, "deactivate"),
                         (lambda: idle.bind_impl(None), "bind")):
        _refused(call, f"called by {caller}()")
    monkeypatch.undo()

    availability = RUNTIMES[runtime].probe()
    if not availability.can_run:
        with pytest.raises(VcompileError, match=f"the {runtime} runtime cannot run here"):
            load(source, runtime)
        pytest.skip(f"{runtime} cannot run on this machine: {availability.detail}")

    # Full behaviour.
    source = create_model(MODEL, tiny=True) if info.target is None else tiny_build(info.target)
    runner = load(source, runtime, threads=2 if info.thread_control else None)
    assert isinstance(runner, Runner) and runner.name == runtime and not runner.is_active
    assert runner.device == info.default_device and runner.precision == "fp32" and runner.threads == 2
    x = tiny_clip(batch=2).numpy()
    with pytest.raises(RunnerError, match="before activate"):
        runner.infer(x)
    with pytest.raises(RunnerError, match="before activate"):
        runner.get_input_metadata()
    with runner:
        assert runner.is_active
        shape = (None, *SHAPE[1:]) if runtime in DYNAMIC_BATCH else SHAPE
        assert runner.get_input_metadata() == {"video": TensorMetadata(np.dtype(np.float32), shape)}
        _refused(lambda: runner.infer(x.astype(np.float64)), runtime, "'video'", "float64", "float32")
        _refused(lambda: runner.infer(x.astype(np.int64)), runtime, "int64")
        wrong = np.zeros((2, 3, TINY_FRAMES + 1, TINY_SIZE, TINY_SIZE), dtype=np.float32)
        _refused(lambda: runner.infer(wrong), runtime, str(wrong.shape), str(shape))
        _refused(lambda: runner.infer(x[0]), runtime, str(x[0].shape))  # rank 4
        _refused(lambda: runner.infer(torch.from_numpy(x)), "numpy array")
        _refused(lambda: runner.infer_impl(x), "called by infer()")
        if shape[0] is None:
            assert runner.infer(x[:1]).shape == (1, 10)
        else:
            _refused(lambda: runner.infer(x[:1]), f"takes input shape {SHAPE} (static)")
        got = runner.infer(x)
        again = runner.infer(x)
        # compute only: the input bound once where the runtime computes; checked like infer's
        _refused(lambda: runner.bind(x.astype(np.float64)), runtime, "float64")
        compute, separate = runner.bind(x)
        compute()
        runner.synchronize()
        assert separate is (runtime not in COMPUTE_AS_END_TO_END)
        np.testing.assert_array_equal(runner.infer(x), got)  # binding leaves infer as it was
    assert not runner.is_active
    assert got.dtype == np.float32 and got.shape == (2, 10)
    np.testing.assert_array_equal(got, again)  # deterministic
    with torch.no_grad():
        want = create_model(MODEL, tiny=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


# Every (runtime, reduced precision) it declares: the conformance of running it, where this machine can.
REDUCED = [pytest.param(r, p, marks=[pytest.mark.slow] if r == "inductor" else [])
           for r, info in RUNTIMES.items() for p in info.precisions if p != "fp32"]


@pytest.mark.parametrize(("runtime", "precision"), REDUCED)
def test_each_reduced_precision_runs_as_declared(runtime, precision, artifacts):
    # X3D-XS at batch 1 in the session's cache: the int8 artifacts test_int8.py checks in detail, built once
    from vcompile.check.metrics import TOLERANCES, compare_logits
    from vcompile.check.parity import build_verified
    from vcompile.runtimes.precision import PrecisionError, resolve_precision

    info = RUNTIMES[runtime]
    if not info.probe().can_run:
        pytest.skip(f"{runtime} cannot run on this machine: {info.probe().detail}")
    if precision not in info.runs:
        pytest.skip(f"{runtime}'s target builds no {precision}")
    try:
        resolve_precision(precision, info.default_device, runtime, info.runs)
    except PrecisionError as err:
        pytest.skip(f"{precision} cannot run here: {err}")
    if info.default_device != "cpu" or (precision == "fp16" and info.target is None):
        pytest.skip(f"{runtime} {precision} runs on a GPU (or autocasts fp16 there); this test runs on the CPU")
    model, options = "x3d-xs", BuildOptions(tiny=True, batch=1, precision=precision)
    source = create_model(model, tiny=True) if info.target is None else build_verified(model, info.target,
                                                                                      options, out=artifacts)
    x = tiny_clip(batch=1).numpy()
    with load(source, runtime, precision=precision if info.target is None else None, threads=1) as runner:
        assert runner.precision == precision
        got = runner.infer(x)
    assert got.dtype == np.float32 and got.shape == (1, 10)
    with torch.no_grad():
        want = create_model(model, tiny=True)(torch.from_numpy(x)).numpy()
    agreement = compare_logits(want, got, TOLERANCES[precision])
    assert agreement.passed and not np.array_equal(got, want), agreement.reason  # close, and really reduced


def test_device_parser_is_exact():
    standard = ("cpu", "cuda")
    for good, canonical in (("cpu", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"), ("cuda:12", "cuda:12"),
                            (" CUDA:1 ", "cuda:1")):
        assert parse_device(good, standard) == canonical
    for bad in (*BAD_DEVICES, "cuda:+1", "cuda:0:1", "mps", None, 0):
        assert parse_device(bad, standard) is None
    assert parse_device("ane", ("cpu", "ane")) == "ane" and parse_device("ane:0", ("cpu", "ane")) is None
    assert parse_device("cuda", ("cpu",)) is None


def test_declarations_are_read_without_optional_packages():
    code = ("import sys; from vcompile.runtimes import RUNTIMES, check_request\n"
            "for name, info in RUNTIMES.items():\n"
            "    assert info.devices and info.precisions and info.thread_control in (True, False)\n"
            "    check_request(name, device=info.default_device)\n"
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_malformed_runner_is_refused_when_defined():
    for bad in ({"devices": ("cuda:0",)}, {"devices": ()}, {"precisions": ("int4",)}, {"thread_control": "yes"}):
        with pytest.raises(TypeError):
            type("BadRunner", (Runner,), {"name": "bad", "devices": ("cpu",), "precisions": ("fp32",), **bad})


def test_torch_runner_metadata_without_build_args():
    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3, 4))

    with load(Pool(), "torch") as runner:
        assert runner.get_input_metadata() == {"video": (np.dtype(np.float32), (None, 3, None, None, None))}
        assert runner.infer(np.ones((1, 3, 2, 5, 7), dtype=np.float32)).shape == (1, 3)
        with pytest.raises(RunnerError, match=r"takes input shape \(None, 3, None, None, None\)"):
            runner.infer(np.ones((1, 4, 2, 5, 7), dtype=np.float32))


@pytest.mark.parametrize("runtime", [r for r, info in RUNTIMES.items() if info.target is not None])
def test_artifact_runtimes_refuse_a_module(runtime):
    if not RUNTIMES[runtime].probe().can_run:
        pytest.skip(f"{runtime} cannot run on this machine")
    with pytest.raises(VcompileError, match=f"runs {RUNTIMES[runtime].target} artifacts, not a module"):
        load(create_model(MODEL, tiny=True), runtime)


def test_torch_runner_amp_and_errors():
    model = create_model(MODEL, tiny=True)
    x = tiny_clip(batch=1).numpy()
    with load(model, "torch", precision="bf16") as runner:
        assert runner.precision == "bf16"
        bf16 = runner.infer(x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    cos = float((bf16 * want).sum() / np.linalg.norm(bf16) / np.linalg.norm(want))
    assert cos > 0.99 and not np.array_equal(bf16, want)  # autocast really ran in bf16
    if not torch.cuda.is_available():
        with pytest.raises(RunnerError, match="CUDA is not available"):
            load(model, "torch", device="cuda").activate()
    with pytest.raises(VcompileError, match="unknown runtime 'tensorflow'"):
        load(model, "tensorflow")
    with load(model, "torch") as runner, pytest.raises(RunnerError, match="torch failed to run"):
        runner.infer(np.zeros((1, 3, 5, 64, 64), dtype=np.float32))  # wrong clip length


def test_a_runtime_error_is_reported_by_its_first_informative_line():
    from vcompile.runtimes.base import _first_line

    openvino = RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:224:\n"
                            "Exception from src/plugins/intel_cpu/src/node.cpp:794:\n"
                            "[CPU] Multiply node with name '/me/Mul' Check 'input_shape[j] == 1' failed\n")
    expected = "RuntimeError: [CPU] Multiply node with name '/me/Mul' Check 'input_shape[j] == 1' failed"
    assert _first_line(openvino) == expected
    assert _first_line(ValueError("first\nsecond")) == "ValueError: first" and _first_line(KeyError()) == "KeyError"
