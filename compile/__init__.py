"""Compile zoo models to deployable artifacts, through a content-addressed cache.

>>> from vcompile.compile import build, BuildOptions
>>> artifact = build("mvit-s", "onnx", BuildOptions(batch=1))
>>> artifact.file()            # artifacts/builds/mvit-s/onnx/<key>/model.onnx

Each target is a module of this package (``onnx``, ``tensorrt``, ``coreml``, ``executorch``, ``ptl``) that
defines ``TARGET``, a `Target`; its runtime twin has the same module name in `vcompile.runtimes`.
"""

from __future__ import annotations

import importlib
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from vcompile.compile.base import PRECISIONS, Artifact, BuildContext, BuildOptions, Target, TargetResult
from vcompile.compile.cache import (
    SCHEMA,
    cache_key,
    describe_files,
    file_sha256,
    read_manifest,
    source_hash,
    verify_artifact,
    write_manifest,
)
from vcompile.errors import VcompileError

__all__ = ["PRECISIONS", "Artifact", "BuildContext", "BuildOptions", "BuildError", "Target", "TargetResult",
           "TARGET_NAMES", "get_target", "resolve_target", "build", "example_input", "DEFAULT_OUT"]

TARGET_NAMES = ("onnx", "tensorrt", "coreml", "executorch", "ptl")
_ALIASES = {"trt": "tensorrt", "et": "executorch", "ort": "onnx", "pte": "executorch", "mlpackage": "coreml",
            "lite": "ptl"}
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


def get_target(name: str) -> Target:
    """The `Target` of a name or alias (importing its module; heavy packages load only when it builds)."""
    return importlib.import_module(f"vcompile.compile.{resolve_target(name)}").TARGET


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The seeded clip used to trace and to check a build (standard normal, like normalised video)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _weights_identity(weights: str | None) -> str | None:
    if weights is None:
        return None
    path = Path(weights)
    if not path.is_file():
        from vcompile.errors import WeightsError

        raise WeightsError(f"weights file not found: {path}; give the path of a .safetensors or .pt state dict")
    return file_sha256(path)


def _quick_parity(artifact: Artifact, ctx: BuildContext) -> dict:
    """Run the build's example through the artifact's runtime, if it can run here, and compare with PyTorch."""
    from vcompile.bench.metrics import TOLERANCES, compare_logits
    from vcompile.runtimes import RUNTIMES, load

    availability = RUNTIMES[artifact.manifest["runtime"]].probe()
    if not availability.can_run:
        return {"status": "not run", "reason": availability.detail}
    try:
        with load(artifact, artifact.manifest["runtime"]) as runner:
            got = runner.infer(ctx.example.numpy())
    except VcompileError as err:
        return {"status": "error", "reason": str(err)}
    with torch.inference_mode():
        want = ctx.model(ctx.example).numpy()
    agreement = compare_logits(want, got, TOLERANCES[ctx.options.precision])
    return {"status": "pass" if agreement.passed else "fail", "runtime": artifact.manifest["runtime"],
            **agreement.to_dict()}


def build(model: str, target: str, options: BuildOptions | None = None, *, out: str | Path = DEFAULT_OUT,
          force: bool = False, log: Callable[[str], None] | None = None,
          explain: Callable[[str, str, dict], None] | None = None) -> Artifact:
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

    Raises:
        VcompileError: unknown model or target, unsupported precision, missing package; BuildError when the
            target fails.
    """
    from vcompile.zoo import build_model, create_model, get_spec

    options = options or BuildOptions()
    log = log or (lambda message: None)
    spec = get_spec(model)
    tgt = get_target(target)
    if options.precision not in tgt.precisions:
        raise VcompileError(f"the {tgt.name} target builds {', '.join(tgt.precisions)}, not {options.precision}")
    if tgt.name in spec.unsupported:
        raise BuildError(f"{spec.name} cannot be built for {tgt.name}: {spec.unsupported[tgt.name]}")
    if options.batch < 1:
        raise VcompileError(f"batch must be at least 1, got {options.batch}")
    reason = tgt.unavailable_reason()
    if reason:
        raise VcompileError(reason)
    # Validates the shape and gives the defaults the model will be built with, without allocating weights.
    with torch.device("meta"):
        args = build_model(spec.name, tiny=options.tiny, num_classes=options.num_classes, frames=options.frames,
                           size=options.size).build_args
    shape = (options.batch, 3, args["frames"], args["size"], args["size"])

    dependency = None
    if tgt.depends_on:
        dependency = build(spec.name, tgt.depends_on, BuildOptions(**{**options.to_dict(), "precision": "fp32"}),
                           out=out, force=False, log=log)
    key, key_inputs = cache_key({
        "model": args, "target": tgt.name, "input_shape": shape,
        "options": {k: v for k, v in options.to_dict().items() if k != "weights"},
        "weights_sha256": _weights_identity(options.weights),
        "target_versions": tgt.versions(), "zoo_source": source_hash("zoo"),
        "target_source": source_hash(f"compile/{tgt.name}.py", "compile/base.py", "compile/rewrites.py"),
        "dependency": dependency.key if dependency else None,
    })
    folder = Path(out) / "builds" / spec.name / tgt.name / key
    manifest = read_manifest(folder)
    if manifest and not force:
        problem = verify_artifact(folder, manifest)
        if problem is None:
            if explain and "explain" in manifest["info"]:
                explain(spec.name, tgt.name, manifest["info"]["explain"])
            return Artifact(spec.name, tgt.name, key, folder, manifest, cached=True)
        log(f"rebuilding: {problem}")

    staging = folder.with_name(f"{key}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise VcompileError(f"cannot write artifacts under {out} ({err.strerror}); choose a writable --out") from None
    started = time.perf_counter()
    ctx = BuildContext(model=None, example=example_input(shape, options.seed), options=options, out_dir=staging,
                       dependency=dependency, log=log, cache_root=Path(out),
                       explain=(lambda e: explain(spec.name, tgt.name, e)) if explain else (lambda e: None))
    try:
        with ctx.stage("create model"):
            ctx.model = create_model(spec.name, num_classes=options.num_classes, frames=options.frames,
                                     size=options.size, seed=options.seed, weights=options.weights,
                                     tiny=options.tiny)
        result = tgt.build(ctx)
    except VcompileError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as err:  # noqa: BLE001 - a target's failure is reported as data, never as a traceback
        shutil.rmtree(staging, ignore_errors=True)
        stage = next(reversed(ctx.stages), "build") if ctx.stages else "build"
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise BuildError(f"{tgt.name} build of {spec.name} failed at '{stage}': {type(err).__name__}: {first}") \
            from err
    manifest = {
        "schema": SCHEMA, "model": spec.name, "target": tgt.name, "key": key, "key_inputs": key_inputs,
        "options": options.to_dict(), "input_shape": list(shape), "runtime": tgt.runtime,
        "files": describe_files(staging, result.files), "stages": ctx.stages,
        "build_seconds": round(time.perf_counter() - started, 3), "info": result.info,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dependency": str(dependency.path) if dependency else None,
    }
    with ctx.stage("parity"):
        manifest["parity"] = _quick_parity(Artifact(spec.name, tgt.name, key, staging, manifest), ctx)
    write_manifest(staging, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return Artifact(spec.name, tgt.name, key, folder, manifest, cached=False)
