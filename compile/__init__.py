"""Compile zoo models to deployable artifacts, through a content-addressed cache.

>>> from vcompile.compile import build, BuildOptions
>>> artifact = build("mvit-s", "onnx", BuildOptions(batch=1))
>>> artifact.file()            # artifacts/builds/mvit-s/onnx/<key>/model.onnx

Each target is a module of this package (``onnx``, ``tensorrt``, ``coreml``, ``executorch``, ``ptl``) that
defines ``TARGET``, a `Target`; its runtime twin has the same module name in `vcompile.runtimes`.

`compile` turns modules into artifacts and never runs one. The check that a fresh artifact computes what the
model computes runs in the layer above, which passes it to `build` as ``verify`` (`vcompile.check.parity`'s
`verify_build`); its result is the manifest's ``parity``. Without it a manifest says ``unverified``, and a later
build with a verifier verifies the cached artifact and records the result.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # Windows: builds of one key are not serialised across processes
    fcntl = None

from ..data import calibration_videos, check_seed, clip_set, example_input
from ..errors import InvalidShapeError, VcompileError, WeightsError, first_line
from ..zoo import build_args, create_model, get_spec
from .base import (
    CALIBRATION_CLIPS,
    PRECISIONS,
    UNVERIFIED,
    Artifact,
    BuildContext,
    BuildOptions,
    Judge,
    Target,
    TargetResult,
    Verifier,
)
from .cache import (
    SCHEMA,
    cache_key,
    describe_files,
    file_sha256,
    read_manifest,
    source_hash,
    verify_artifact,
    write_manifest,
)

__all__ = ["PRECISIONS", "CALIBRATION_CLIPS", "GATE_BATCHES", "UNVERIFIED", "Artifact", "BuildContext", "BuildOptions",
           "BuildError", "Target", "TargetResult", "Verifier", "TARGET_NAMES", "get_target", "resolve_target",
           "resolve_targets", "build", "DEFAULT_OUT"]

TARGET_NAMES = ("onnx", "openvino", "tensorrt", "coreml", "executorch", "ptl")
_ALIASES = {"trt": "tensorrt", "et": "executorch", "ort": "onnx", "pte": "executorch", "mlpackage": "coreml",
            "lite": "ptl", "ov": "openvino"}
DEFAULT_OUT = Path("artifacts")


class BuildError(VcompileError):
    """A target failed to build a model; the message names the stage and the cause."""


def resolve_target(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TARGET_NAMES:
        raise VcompileError(f"unknown target {name!r}; choose from {', '.join(TARGET_NAMES)} "
                            f"(aliases: {', '.join(f'{a}={t}' for a, t in _ALIASES.items())})")
    return key


def resolve_targets(spec: str) -> list[str]:
    """``all`` or a comma-separated list of target names and aliases -> canonical names (duplicates dropped)."""
    if spec.strip().lower() == "all":
        return list(TARGET_NAMES)
    names = list(dict.fromkeys(resolve_target(t) for t in spec.split(",") if t.strip()))
    if not names:
        raise VcompileError(f"no target given in {spec!r}; name one or more of {', '.join(TARGET_NAMES)}, or all")
    return names


def get_target(name: str) -> Target:
    """The `Target` of a name or alias (importing its module; heavy packages load only when it builds)."""
    return importlib.import_module(f"{__name__}.{resolve_target(name)}").TARGET


def _check_fits_in_memory(model: str, shape: tuple[int, ...]) -> None:
    """Refuse up front an input that alone would need more memory than this machine has (a build traces it)."""
    needed = 4 * math.prod(shape)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if needed > total:
        raise InvalidShapeError(f"a {' x '.join(map(str, shape))} input to {model} needs {needed / 2**30:.1f} GiB, "
                                f"more than this machine's {total / 2**30:.1f} GiB; choose a smaller batch, --frames "
                                "or --size")


def _calibration_videos(options: BuildOptions, frames: int) -> tuple[list[Path], list[list[str]] | None]:
    """The checked videos of ``options.calibration``, and their identity for the cache key: each one's path in the
    folder and content hash (None without a folder)."""
    if options.calibration is None:
        return [], None
    if options.precision != "int8":
        raise VcompileError(f"--calibration sets the ranges of int8 quantization; this build is {options.precision} "
                            "(add --precision int8, or leave --calibration out)")
    videos = calibration_videos(options.calibration, frames)
    root = Path(options.calibration)
    return videos, [[v.relative_to(root).as_posix(), file_sha256(v)] for v in videos]


def _weights_identity(weights: str | None) -> str | None:
    if weights is None:
        return None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; give the path of a .safetensors or .pt state dict")
    return file_sha256(path)


# How many held-apart batches a reduced-precision artifact's accuracy gate compares (each at the build batch).
GATE_BATCHES = 4


def _check_inputs(tgt: Target, shape: tuple[int, ...], options: BuildOptions) -> tuple[str, list[torch.Tensor]]:
    """The clip set and the clips a build is verified on. fp32: the example, and another batch for targets with a
    dynamic batch. Reduced precision: `GATE_BATCHES` held-apart batches (never calibration clips), plus a batch of
    another size for targets with a dynamic batch."""
    other = (1 if shape[0] > 1 else 2, *shape[1:])
    if options.precision == "fp32":
        inputs = [example_input(shape, options.seed)]
        if tgt.dynamic_batch:
            inputs.append(example_input(other, options.seed + 1))
        return "trace", inputs
    inputs = clip_set("held_apart", shape, GATE_BATCHES, options.seed)
    if tgt.dynamic_batch:
        inputs += clip_set("held_apart", other, 1, options.seed + GATE_BATCHES)
    return "held_apart", inputs


def _context(spec_name: str, tgt: Target, shape: tuple[int, ...], options: BuildOptions, out_dir: Path,
             out: Path, dependency: Artifact | None, log: Callable[[str], None],
             explain: Callable[[str, str, dict], None] | None, videos: list[Path] = ()) -> BuildContext:
    check_set, inputs = _check_inputs(tgt, shape, options)
    spec = get_spec(spec_name)
    return BuildContext(model=None, example=example_input(shape, options.seed), options=options, out_dir=out_dir,
                        dependency=dependency, log=log, cache_root=Path(out), check_inputs=inputs, check_set=check_set,
                        explain=(lambda e: explain(spec_name, tgt.name, e)) if explain else (lambda e: None),
                        calibration_videos=list(videos), normalization=(spec.mean, spec.std))


def _create_model(spec_name: str, options: BuildOptions) -> torch.nn.Module:
    return create_model(spec_name, num_classes=options.num_classes, frames=options.frames, size=options.size,
                        seed=options.seed, weights=options.weights, tiny=options.tiny)


def _verifier(artifact: Artifact, ctx: BuildContext, verify: Verifier | None) -> Callable[[dict[str, str]], dict]:
    """``ctx.verify``: runs ``verify`` on the files a target has written so far, in the stage ``verify``."""

    def check(files: dict[str, str]) -> dict[str, Any]:
        if verify is None:
            return dict(UNVERIFIED)
        manifest = {**artifact.manifest, "files": {role: {"name": name} for role, name in files.items()}}
        with ctx.stage("verify"):
            return verify(Artifact(artifact.model, artifact.target, artifact.key, artifact.path, manifest), ctx)

    return check


@contextlib.contextmanager
def _key_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on one cache key while it is looked up, built or verified, so that processes building
    the same key (parallel tests, two sweeps) never replace files another is reading: the later one waits, then
    finds the artifact cached. The lock is ``<key>.lock`` beside the key's folder. Where no lock can be taken (a
    read-only cache, no fcntl) the look-up goes on without one, and a build that must write says why it cannot."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(folder.with_name(folder.name + ".lock"), "a")  # noqa: SIM115 - closed by the with below
    except OSError:
        yield
        return
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, on error too


def build(model: str, target: str, options: BuildOptions | None = None, *, out: str | Path = DEFAULT_OUT,
          force: bool = False, log: Callable[[str], None] | None = None,
          explain: Callable[[str, str, dict], None] | None = None, verify: Verifier | None = None,
          judge: Judge | None = None) -> Artifact:
    """Build (or fetch from the cache) one model for one target.

    Args:
        model: zoo model name or alias.
        target: target name or alias.
        options: build options (precision, batch, shape, seed, weights, tiny).
        out: output folder; artifacts go to ``<out>/builds/<model>/<target>/<key>/``.
        force: rebuild even if a valid cached artifact exists.
        log: called with the name of each stage as it starts (for progress display).
        explain: called as ``explain(model, target, explanation)`` by targets that accelerate part of a graph
            (executorch, coreml) with the ops left outside the accelerator; from the manifest on a cache hit.
        verify: checks the artifact right after it is built (see `Verifier`); its result is the manifest's
            ``parity``. A cached artifact that was built without one is verified now and its manifest updated.
        judge: the same check on outputs a build computes itself (`BuildContext.judge`), for accuracy-aware
            searches that try many candidates before writing one.

    Raises:
        VcompileError: unknown model or target, unsupported precision, missing package; BuildError when the
            target fails.
    """
    options = options or BuildOptions()
    log = log or (lambda message: None)
    spec = get_spec(model)
    tgt = get_target(target)
    if options.precision not in tgt.precisions:
        raise VcompileError(f"the {tgt.name} target builds {', '.join(tgt.precisions)}, not {options.precision}")
    unsupported = spec.unsupported_reason(tgt.name)
    if unsupported is not None:
        raise BuildError(f"{spec.name} cannot be built for {tgt.name}: {unsupported}")
    if options.batch < 1:
        raise VcompileError(f"batch must be at least 1, got {options.batch}")
    check_seed(options.seed)
    reason = tgt.unavailable_reason()
    if reason:
        raise VcompileError(reason)
    # Validates the shape and gives the defaults the model will be built with, without constructing it.
    args = build_args(spec.name, tiny=options.tiny, num_classes=options.num_classes, frames=options.frames,
                      size=options.size)
    shape = (options.batch, 3, args["frames"], args["size"], args["size"])
    _check_fits_in_memory(spec.name, shape)
    videos, videos_identity = _calibration_videos(options, args["frames"])  # checked before anything is built

    dependency = None
    source = tgt.int8_from if options.precision == "int8" and tgt.int8_from else tgt.depends_on
    if source:
        dependency = build(spec.name, source, replace(options, precision="fp32", calibration=None),
                           out=out, force=False, log=log, verify=verify, judge=judge)
    key, key_inputs = cache_key({
        "model": args, "target": tgt.name, "input_shape": shape,
        "options": {k: v for k, v in options.to_dict().items() if k not in ("weights", "calibration")},
        "weights_sha256": _weights_identity(options.weights), "calibration_videos": videos_identity,
        "target_versions": tgt.versions(), "zoo_source": source_hash("zoo"),
        "target_source": source_hash(f"compile/{tgt.name}.py", "compile/base.py", "compile/rewrites.py"),
        "dependency": dependency.key if dependency else None,
    })
    folder = Path(out) / "builds" / spec.name / tgt.name / key
    with _key_lock(folder):  # a concurrent build of the same key waits here, then finds it cached
        manifest = read_manifest(folder)
        if manifest and not force:
            problem = verify_artifact(folder, manifest)
            if problem is None and not all(isinstance(manifest.get(k), dict) for k in ("info", "parity", "options")):
                problem = "the manifest is malformed"
            if problem is None:
                if explain and "explain" in manifest["info"]:
                    explain(spec.name, tgt.name, manifest["info"]["explain"])
                artifact = Artifact(spec.name, tgt.name, key, folder, manifest, cached=True)
                if verify is not None and manifest.get("parity", {}).get("status") == UNVERIFIED["status"]:
                    artifact = _verify_cached(artifact, tgt, shape, options, out, dependency, log, verify)
                return artifact
            log(f"rebuilding: {problem}")

        # A staging folder per process, so that concurrent builds of one key never write into each other's files.
        staging = folder.with_name(f"{key}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
        except OSError as err:
            raise VcompileError(f"cannot write artifacts under {out} ({err.strerror}); choose a writable --out") \
                from None
        started = time.perf_counter()
        ctx = _context(spec.name, tgt, shape, options, staging, Path(out), dependency, log, explain, videos)
        manifest = {
            "schema": SCHEMA, "model": spec.name, "target": tgt.name, "key": key, "key_inputs": key_inputs,
            "options": options.to_dict(), "input_shape": list(shape), "runtime": tgt.runtime,
            "dependency": str(dependency.path) if dependency else None,
        }
        ctx.verify = _verifier(Artifact(spec.name, tgt.name, key, staging, manifest), ctx, verify)
        if judge is not None:
            ctx.judge = lambda outputs: judge(outputs, ctx)
        try:
            with ctx.stage("create model"):
                ctx.model = _create_model(spec.name, options)
            result = tgt.build(ctx)
            if options.precision == "int8":
                result.info["calibration"] = ctx.calibration_info()
            parity = result.parity or ctx.verify(result.files)
        except VcompileError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except Exception as err:  # noqa: BLE001 - a target's failure is reported as data, never as a traceback
            shutil.rmtree(staging, ignore_errors=True)
            stage = next(reversed(ctx.stages), "build") if ctx.stages else "build"
            raise BuildError(f"{tgt.name} build of {spec.name} failed at '{stage}': "
                             f"{type(err).__name__}: {first_line(err)}") from err
        except BaseException:  # interrupted (Ctrl-C): leave no staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest.update({
            "files": describe_files(staging, result.files), "stages": ctx.stages,
            "build_seconds": round(time.perf_counter() - started, 3), "info": result.info, "parity": parity,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        write_manifest(staging, manifest)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        return Artifact(spec.name, tgt.name, key, folder, manifest, cached=False)


def _verify_cached(artifact: Artifact, tgt: Target, shape: tuple[int, ...], options: BuildOptions, out: str | Path,
                   dependency: Artifact | None, log: Callable[[str], None], verify: Verifier) -> Artifact:
    """Verify a cached artifact that was built without a verifier, and record the result in its manifest."""
    ctx = _context(artifact.model, tgt, shape, options, artifact.path, Path(out), dependency, log, None)
    with ctx.stage("create model"):
        ctx.model = _create_model(artifact.model, options)
    with ctx.stage("verify"):
        parity = verify(artifact, ctx)
    manifest = {**artifact.manifest, "parity": parity}
    write_manifest(artifact.path, manifest)
    return Artifact(artifact.model, artifact.target, artifact.key, artifact.path, manifest, cached=True)
