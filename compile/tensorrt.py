"""TensorRT target: a serialized engine (``model.plan``) built from the onnx target's simplified graph.

TensorRT 10's ONNX parser fills a network (explicit batch is the only mode in TensorRT 10, so
``create_network(0)``), and the builder compiles it for this GPU with one optimization profile over the batch
(min 1, opt the build batch, max the larger of the build batch and ``max_batch``, 32 by default). fp16 and bf16 set
the builder's FP16 / BF16 flags (weakly typed precision, layers fall back to fp32 where faster or required); fp32
clears TF32 so that fp32 means fp32. Tactic timings persist in ``<out>/cache/tensorrt-timing-<gpu>-<trt>.cache``,
shared by every build of that output folder on the same GPU kind and TensorRT version.

An engine runs only on the GPU architecture and TensorRT version that built it: both are in the cache key
(`TARGET.versions`) and the manifest. TensorRT 11 removed the FP16 / BF16 builder flags (strongly typed networks
only); there, fp16 and bf16 builds fail with a message saying so.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from .base import BuildContext, Target, TargetResult

__all__ = ["DEFAULT_MAX_BATCH", "WORKSPACE_BYTES", "MODEL_FILE", "profile_shapes", "precision_flags",
           "gpu_capability", "timing_cache_path", "engine_info", "engine_from_onnx", "build", "TARGET"]

DEFAULT_MAX_BATCH = 32
WORKSPACE_BYTES = 8 << 30
MODEL_FILE = "model.plan"
_FLAGS = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",)}


def profile_shapes(shape: tuple[int, ...], max_batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """The optimization profile of an input ``shape`` (B, C, T, H, W): min batch 1, opt B, max max(B, max_batch)."""
    batch, rest = int(shape[0]), tuple(int(d) for d in shape[1:])
    top = max(batch, max_batch or DEFAULT_MAX_BATCH)
    return {"min": (1, *rest), "opt": (batch, *rest), "max": (top, *rest)}


def precision_flags(precision: str) -> tuple[str, ...]:
    """Names of the ``trt.BuilderFlag`` members a precision sets."""
    if precision not in _FLAGS:
        raise ValueError(f"TensorRT builds {', '.join(_FLAGS)}, not {precision!r}")
    return _FLAGS[precision]


def gpu_capability() -> str | None:
    """Compute capability of the current CUDA device (``"9.0"`` on an H100), or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def timing_cache_path(root: Path, capability: str, trt_version: str) -> Path:
    """The persistent timing cache of a GPU architecture and TensorRT version under an output folder."""
    return Path(root) / "cache" / f"tensorrt-timing-sm{capability.replace('.', '')}-trt{trt_version}.cache"


def engine_info(*, trt_version: str, gpu: str, capability: str, input_name: str,
                shapes: dict[str, tuple[int, ...]], precision: str, timing_cache: Path, timing_cache_found: bool,
                engine_bytes: int) -> dict[str, Any]:
    """The manifest entries of an engine (engines are not portable: they name what they need)."""
    return {
        "tensorrt": trt_version, "gpu": gpu, "gpu_capability": capability,
        "profile": {"input": input_name, **{k: list(v) for k, v in shapes.items()}},
        "precision_flags": list(precision_flags(precision)), "tf32": precision != "fp32",
        "workspace_bytes": WORKSPACE_BYTES, "timing_cache": str(timing_cache),
        "timing_cache_found": timing_cache_found, "engine_bytes": engine_bytes,
        "portable": False,
    }


def engine_from_onnx(onnx_path: Path, plan_path: Path, *, shape: tuple[int, ...], precision: str,
                     max_batch: int | None, timing_cache: Path) -> dict[str, Any]:
    """Parse an ONNX file and build a serialized engine into ``plan_path``, reading and updating the timing cache.

    Args:
        onnx_path: the graph (its input's batch axis dynamic); external data beside it is found by path.
        plan_path: the engine file to write.
        shape: the build input shape (B, C, T, H, W); B is the profile's optimum.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        max_batch: the profile's largest batch (None: `DEFAULT_MAX_BATCH`).
        timing_cache: the persistent timing cache file (created if missing).

    Returns:
        The manifest entries of `engine_info`.
    """
    import tensorrt as trt

    shapes = profile_shapes(shape, max_batch)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # by path, so external data next to the file is found
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for name in precision_flags(precision):
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise RuntimeError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (removed in TensorRT 11); "
                               f"build fp32, or use TensorRT 10 for {precision}")
        config.set_flag(flag)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)

    tensor = network.get_input(0)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    found = timing_cache.is_file()
    cache = config.create_timing_cache(timing_cache.read_bytes() if found else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT's builder produced no engine (see its log above)")
    plan_path.write_bytes(serialized)
    _write_atomic(timing_cache, config.get_timing_cache().serialize())
    return engine_info(trt_version=trt.__version__, gpu=torch.cuda.get_device_name(), capability=gpu_capability(),
                       input_name=tensor.name, shapes=shapes, precision=precision, timing_cache=timing_cache,
                       timing_cache_found=found, engine_bytes=plan_path.stat().st_size)


def _write_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(ctx: BuildContext) -> TargetResult:
    """Build the engine from the onnx artifact's simplified graph (``ctx.dependency``)."""
    import tensorrt as trt

    if ctx.dependency is None:
        raise RuntimeError("the tensorrt target builds from an onnx artifact, and none was given")
    cache = timing_cache_path(ctx.cache_root, gpu_capability() or "unknown", trt.__version__)
    with ctx.stage("engine"):
        info = engine_from_onnx(ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE, shape=tuple(ctx.example.shape),
                                precision=ctx.options.precision, max_batch=ctx.options.max_batch,
                                timing_cache=cache)
    info["onnx"] = {"key": ctx.dependency.key, "exporter": ctx.dependency.manifest["info"].get("exporter")}
    return TargetResult(files={"model": MODEL_FILE}, info=info)


def _versions() -> dict[str, str | None]:
    version = None
    if importlib.util.find_spec("tensorrt") is not None:
        import tensorrt

        version = tensorrt.__version__
    return {"tensorrt": version, "gpu_capability": gpu_capability()}


def _needs() -> str | None:
    if not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU with CUDA, and torch sees none here; build the onnx target instead"
    return None


TARGET = Target(
    name="tensorrt",
    build=build,
    versions=_versions,
    runtime="tensorrt",
    requires=("tensorrt",),
    extra="trt",
    precisions=("fp32", "fp16", "bf16"),
    depends_on="onnx",
    dynamic_batch=True,
    needs=_needs,
)
