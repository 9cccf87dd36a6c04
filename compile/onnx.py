"""ONNX target: ``torch.onnx.export``, ``onnx.checker``, shape inference and onnxsim.

The graph takes ``video`` (B, 3, T, H, W) and gives ``logits`` (B, classes), with a dynamic batch axis. Two
exporters capture it: the TorchScript exporter (``dynamo=False``; traces the module) and the dynamo exporter
(``torch.export`` + onnxscript). ``exporter="auto"`` (the default) tries TorchScript first: on this project's zoo
it is 3-10x faster (tiny variants: 0.3-4 s against 4-17 s) and every model exports with it and matches eager to
1e-6. Whichever exporter is tried first, the other is tried when it fails to export, to pass the checker, to keep
the batch dynamic in shape inference, or, when the build has a verifier (`BuildContext.verify`, from the layer
above), to run in onnxruntime at the build batch and another (a trace that froze the batch); the manifest records
every attempt. The verification of the kept graph is the manifest's parity: one onnxruntime session, one reference.

The exported graph is kept as ``model.exported.onnx`` (its node names map back to PyTorch modules for parity
localization); onnxsim's simplification of it is ``model.onnx``, the file runtimes load. If onnxsim fails or loses
the dynamic batch, the exported graph is kept as the simplified one and the reason recorded. The manifest holds
node counts and op-type histograms of both.

int8 graphs are the fp32 artifact's graph (``ctx.dependency``, built and verified first) quantized by onnxruntime's
static post-training quantizer: QDQ format, the inputs of convolutions and matrix products only (where the
arithmetic is; normalisations, softmax and additions stay float), weights int8 per output channel, activations
uint8 per tensor from min-max ranges observed on the build's calibration clips (`BuildContext.calibration`), never
on the gate's clips. When the gate fails, the nodes whose inputs lose most to quantization stay float (see
`int8_sensitivity`). The manifest names the quantizer's settings, the calibration clips and what stayed float.

fp16 graphs are exported from a half-precision copy of the model wrapped in casts, so the graph's input and
output stay float32 and every runner feeds the same clip. Models whose weights pass `EXTERNAL_DATA_BYTES` are
saved with their tensors in ``<file>.data`` beside the graph (protobuf cannot hold more than 2 GB).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import tempfile
import time
import warnings
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import VcompileError
from .base import MAX_FLOAT_SHARE, BuildContext, Target, TargetResult, float_counts

__all__ = ["OPSET", "EXPORTERS", "EXTERNAL_DATA_BYTES", "MODEL_FILE", "EXPORTED_FILE", "exporter_order",
           "export_onnx", "check_onnx", "simplify_onnx", "op_histogram", "prepare_for_quantization",
           "quantize_int8", "build",
           "TARGET"]

OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
# Weights above this many bytes go to an external data file: a serialized protobuf cannot exceed 2 GiB, and the
# graph itself needs some room. Tests lower it to exercise the external-data path on a tiny model.
EXTERNAL_DATA_BYTES = 2**31 - 2**27
MODEL_FILE = "model.onnx"
EXPORTED_FILE = "model.exported.onnx"
INPUT_NAME, OUTPUT_NAME = "video", "logits"


def exporter_order(choice: str) -> tuple[str, ...]:
    """The exporters to try, in order, for an ``exporter`` option: ``auto``, ``torchscript`` or ``dynamo``."""
    if choice == "auto":
        return EXPORTERS
    if choice not in EXPORTERS:
        raise VcompileError(f"unknown ONNX exporter {choice!r}; choose from auto, {', '.join(EXPORTERS)}")
    return (choice, *(e for e in EXPORTERS if e != choice))


class _CastBoundary(nn.Module):
    """Runs a half-precision copy of a model between float32 input and output casts."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = copy.deepcopy(model).to(dtype), dtype
        self.eval()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.inner(video.to(self.dtype)).float()


def _data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def _save(proto, path: Path, external: bool) -> None:
    """Write a model, with its tensors in ``<path>.data`` when ``external``."""
    import onnx
    _data_file(path).unlink(missing_ok=True)
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=_data_file(path).name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


def _batch_dim(proto) -> str | int:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.HasField("dim_param") else dim.dim_value


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str = "dynamo", opset: int = OPSET,
                external_data: bool = False) -> dict[str, Any]:
    """Export ``model`` to ``path`` with a dynamic batch axis (input ``video``, output ``logits``).

    Args:
        model: the module to export (eval mode).
        example: an input clip; a batch of 1 is repeated to 2 for tracing, so that the batch cannot be frozen.
        path: the .onnx file to write.
        exporter: ``torchscript`` or ``dynamo``.
        opset: ONNX opset of the default domain.
        external_data: write the tensors to ``<path>.data`` beside the graph.

    Returns:
        Facts for the manifest: the exporter, the batch traced at and the number of warnings it raised.

    Raises:
        ValueError: the exported graph has a fixed batch.
    """
    import onnx
    path = Path(path)
    trace = example.repeat(2, 1, 1, 1, 1) if example.shape[0] == 1 else example
    kwargs: dict[str, Any] = {"opset_version": opset, "input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if exporter == "torchscript":
        kwargs.update(dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    elif exporter == "dynamo":
        kwargs.update(dynamo=True, external_data=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / path.name
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            torch.onnx.export(model, (trace,), str(raw), **kwargs)
        proto = onnx.load(str(raw))  # pulls in any external data the exporter wrote
    batch = _batch_dim(proto)
    if not isinstance(batch, str) or not batch:
        raise ValueError(f"the {exporter} exporter gave a graph with a fixed batch of {batch}")
    _save(proto, path, external_data)
    return {"exporter": exporter, "trace_batch": int(trace.shape[0]), "export_warnings": len(caught)}


def check_onnx(path: Path) -> dict[str, Any]:
    """``onnx.checker.check_model(full_check=True)`` and shape inference, both by path (fine past 2 GB).

    Returns:
        The inferred output shape and how many intermediate values shape inference typed.

    Raises:
        onnx.checker.ValidationError, onnx.shape_inference.InferenceError: the graph is invalid.
    """
    import onnx
    onnx.checker.check_model(str(path), full_check=True)
    with tempfile.TemporaryDirectory(dir=Path(path).parent, prefix=".infer-") as tmp:
        inferred_path = Path(tmp) / "inferred.onnx"
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred_path), check_type=True, strict_mode=True)
        inferred = onnx.load(str(inferred_path), load_external_data=False)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]
    return {"full_check": True, "output_shape": shape, "typed_values": len(inferred.graph.value_info)}


def op_histogram(path: Path) -> dict[str, int]:
    """Count of each op type in the main graph (nodes of Loop/If bodies are not counted)."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(node.op_type for node in proto.graph.node).items()))


def simplify_onnx(source: Path, target: Path) -> dict[str, Any]:
    """onnxsim of ``source`` into ``target``, which must pass `check_onnx` and keep the dynamic batch.

    If onnxsim fails, or its graph fails the checks, ``target`` is a copy of ``source`` and the reason is returned.

    Returns:
        ``simplified``: whether onnxsim's graph was kept, ``simplify_error``: why not, ``check``: `check_onnx`
        of ``target`` (None when it is the unchanged source).
    """
    import onnx
    import onnxsim
    external = _data_file(source).exists()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(onnx.load(str(source)))
        if not ok:
            raise RuntimeError("onnxsim's own check of the simplified graph failed")
        if not isinstance(_batch_dim(simplified), str):
            raise RuntimeError(f"onnxsim fixed the batch to {_batch_dim(simplified)}")
        _save(simplified, target, external)
        return {"simplified": True, "simplify_error": None, "check": check_onnx(target)}
    except Exception as err:  # noqa: BLE001 - any onnxsim failure keeps the exported graph, with the reason
        _save(onnx.load(str(source)), target, external)
        return {"simplified": False, "simplify_error": _why(err), "check": None}


def _why(err: BaseException) -> str:
    """One line: the exception, and its cause when the exporter wraps it (ANSI colours stripped)."""
    parts = []
    while err is not None and len(parts) < 2:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
        parts.append(f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__)
        err = err.__cause__
    return " <- ".join(parts)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _data_file(path).unlink(missing_ok=True)


# Accuracy-aware int8: when the gate fails, the most sensitive of these nodes stay float, a doubling number at a
# time, until the gate passes or `MAX_FLOAT_SHARE` of them is float (then the artifact is kept, marked failed).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@contextlib.contextmanager
def _temporary_files_in(folder: str):
    """Point Python's temporary files (the quantizer's calibration graphs) into ``folder`` for a while, so that a
    build writes nowhere but its own staging folder."""
    before = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = before


def _clip_reader(clips: list[torch.Tensor]):
    """An onnxruntime calibration reader that feeds ``clips`` one by one as the graph's input."""
    from onnxruntime.quantization import CalibrationDataReader

    class Clips(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(clips)

        def get_next(self) -> dict | None:
            clip = next(self.remaining, None)
            return None if clip is None else {INPUT_NAME: clip.numpy()}

    return Clips()


def prepare_for_quantization(source: Path, prepared: Path) -> tuple[Path, str]:
    """onnxruntime's pre-processing (shape inference, graph optimisation) of ``source`` into ``prepared``; returns
    the graph to quantize (``source`` itself if pre-processing cannot run) and a note for the manifest."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    except Exception as err:  # noqa: BLE001 - the quantizer still works on the graph as it is
        return source, f"pre-processing skipped: {_why(err)}"
    return prepared, "shape inference and graph optimisation (quant_pre_process)"


def quantize_int8(prepared: Path, dest: Path, clips: list[torch.Tensor], exclude: tuple[str, ...] = ()) -> \
        dict[str, Any]:
    """Quantize the (pre-processed) fp32 graph ``prepared`` to a QDQ int8 graph at ``dest`` (see the module's
    docstring); the nodes named in ``exclude`` stay float. Returns the settings for the manifest. Call it inside
    `_temporary_files_in` to keep the quantizer's calibration graphs in a folder of the build's."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()  # the quantizer logs a warning per LayerNorm weight it leaves per tensor
    level, root.level = root.level, max(root.level, logging.ERROR)
    try:
        quantize_static(str(prepared), str(dest), _clip_reader(clips), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude),
                        op_types_to_quantize=list(QUANTIZED_OPS),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        root.level = level
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "quantized_ops": list(QUANTIZED_OPS), "weights": "int8 per channel",
            "activations": "uint8 per tensor, min-max", "kept_float": list(exclude)}


def int8_sensitivity(float_path: Path, qdq_path: Path, clip: torch.Tensor, scratch: Path) -> dict[str, float]:
    """How much quantizing each node's inputs costs, as a signal-to-quantization-noise ratio in dB (lower is
    worse): the worst of its activations' (each tensor before and after its quantize-dequantize pair in the int8
    graph, on one calibration clip) and its weight's (fp32 against dequantized int8), from onnxruntime's
    ``qdq_loss_debug``. The nodes with the lowest ratios are the ones to keep float."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    augmented = scratch / "qdq.augmented.onnx"
    modify_model_output_intermediate_tensors(str(qdq_path), str(augmented))
    try:
        activations = collect_activations(str(augmented), _clip_reader([clip]))
    finally:
        _remove(augmented)
    snr = {name: compute_signal_to_quantization_noice_ratio(pair["pre_qdq"], pair["post_qdq"])
           for name, pair in create_activation_matching(activations).items()
           if pair.get("pre_qdq") is not None and pair.get("post_qdq") is not None}
    snr.update(compute_weight_error(create_weight_matching(str(float_path), str(qdq_path))))
    ratios = {}
    for node in onnx.load(str(float_path), load_external_data=False).graph.node:
        if node.op_type in QUANTIZED_OPS:
            found = [snr[i] for i in node.input if i in snr]
            if found:
                ratios[node.name] = float(min(found))
    return ratios


def _build_int8(ctx: BuildContext) -> TargetResult:
    """Quantize the fp32 artifact's graph; if the gate fails, keep the most sensitive nodes float (see
    `MAX_FLOAT_SHARE`) and quantize again. The manifest names every attempt and what stayed float."""
    if ctx.dependency is None:
        raise RuntimeError("an int8 onnx build quantizes the fp32 onnx artifact, and none was given")
    source, dest, clips = ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE, ctx.calibration()
    with tempfile.TemporaryDirectory(dir=ctx.out_dir) as tmp, _temporary_files_in(tmp):
        with ctx.stage("prepare"):
            prepared, note = prepare_for_quantization(source, Path(tmp) / "prepared.onnx")
        with ctx.stage("quantize"):
            info = quantize_int8(prepared, dest, clips)
        parity = ctx.verify({"model": MODEL_FILE})
        attempts = [{"kept_float": 0, "status": parity["status"], "cosine": parity.get("cosine")}]
        if parity["status"] == "fail":
            with ctx.stage("sensitivity"):
                drops = int8_sensitivity(source, dest, clips[0], ctx.out_dir)
            ranked = sorted(drops, key=drops.get)  # the lowest signal-to-noise ratio first
            for count in float_counts(len(ranked)):
                if parity["status"] != "fail":
                    break
                with ctx.stage(f"quantize, {count} float"):
                    info = quantize_int8(prepared, dest, clips, tuple(ranked[:count]))
                parity = ctx.verify({"model": MODEL_FILE})
                attempts.append({"kept_float": count, "status": parity["status"], "cosine": parity.get("cosine")})
            info["snr_db"] = {name: round(drops[name], 2) for name in info["kept_float"]}
    fp32_ops = ctx.dependency.manifest["info"]["ops"]["simplified"]  # counted when the fp32 graph was built
    info["prepare"] = note
    info["accuracy_aware"] = {"attempts": attempts, "max_float_share": MAX_FLOAT_SHARE,
                              "quantized_nodes": sum(fp32_ops.get(op, 0) for op in QUANTIZED_OPS)}
    histogram = op_histogram(dest)
    info.update(fp32={"key": ctx.dependency.key}, ops=histogram, nodes=sum(histogram.values()),
                io={"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32", "dynamic_axes": {"batch": 0}})
    return TargetResult(files={"model": MODEL_FILE}, info=info, parity=parity)


def build(ctx: BuildContext) -> TargetResult:
    """Export (with exporter fallback), check, simplify, and verify the graph that runtimes load; for int8,
    quantize the fp32 artifact's graph."""
    if ctx.options.precision == "int8":
        return _build_int8(ctx)
    choice = ctx.options.exporter
    order = exporter_order(choice)
    precision = ctx.options.precision
    model = ctx.model if precision == "fp32" else _CastBoundary(ctx.model, torch.float16)
    weight_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    external = weight_bytes > EXTERNAL_DATA_BYTES
    exported, simplified = ctx.out_dir / EXPORTED_FILE, ctx.out_dir / MODEL_FILE
    files = {"model": MODEL_FILE, "exported": EXPORTED_FILE}
    if external:
        files.update(model_data=_data_file(simplified).name, exported_data=_data_file(exported).name)

    attempts: list[dict[str, Any]] = []
    for exporter in order:
        started = time.perf_counter()
        try:
            with ctx.stage("export"):
                model.eval()  # a failed export attempt may leave the module in training mode
                export_info = export_onnx(model, ctx.example, exported, exporter, OPSET, external)
            with ctx.stage("check"):
                check_info = check_onnx(exported)
            batch_out = check_info["output_shape"][0] if check_info["output_shape"] else None
            if isinstance(batch_out, int) and batch_out > 0:
                raise ValueError(f"the graph's output has a fixed batch of {batch_out} (the trace froze it)")
            with ctx.stage("simplify"):
                simplify_info = simplify_onnx(exported, simplified)
        except Exception as err:  # noqa: BLE001 - recorded, and the next exporter is tried
            attempts.append({"exporter": exporter, "ok": False, "seconds": round(time.perf_counter() - started, 3),
                             "error": _why(err)})
            _remove(exported)
            _remove(simplified)
            continue
        # One run in the runtime, at the build batch and another (a trace that froze the batch fails there).
        parity = ctx.verify(files)
        if parity["status"] == "error":
            attempts.append({"exporter": exporter, "ok": False, "seconds": round(time.perf_counter() - started, 3),
                             "error": f"the graph does not run: {parity['reason']}"})
            _remove(exported)
            _remove(simplified)
            continue
        attempts.append({"exporter": exporter, "ok": True, "seconds": round(time.perf_counter() - started, 3)})
        break
    else:
        raise RuntimeError("no exporter produced a working graph: "
                           + "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts))

    check_info = {"exported": check_info, "simplified": simplify_info.pop("check") or check_info}
    histograms = {"exported": op_histogram(exported), "simplified": op_histogram(simplified)}
    info: dict[str, Any] = {
        **export_info, "exporter_asked": choice, "export_attempts": attempts, "opset": OPSET,
        "io": {"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32", "dynamic_axes": {"batch": 0}},
        "external_data": external, "weight_bytes": weight_bytes, "check": check_info, **simplify_info,
        "nodes": {role: sum(ops.values()) for role, ops in histograms.items()}, "ops": histograms,
    }
    return TargetResult(files=files, info=info, parity=parity)


def _distribution_version(*names: str) -> str | None:
    """The installed version of the first of ``names`` that is installed (onnxruntime or onnxruntime-gpu)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _versions() -> dict[str, str | None]:
    # onnxsim folds constants with onnxruntime, so its version can change the graph.
    return {"onnxscript": _distribution_version("onnxscript"),
            "onnxruntime": _distribution_version("onnxruntime", "onnxruntime-gpu"), "opset": str(OPSET)}


TARGET = Target(
    name="onnx",
    build=build,
    versions=_versions,
    runtime="onnxruntime",
    requires=("onnx", "onnxsim", "onnxruntime"),
    precisions=("fp32", "fp16", "int8"),
    int8_from="onnx",
    dynamic_batch=True,
)
