"""Core ML target: an ML Program (``model.mlpackage``) converted by coremltools from the PyTorch module.

The graph is captured with ``torch.export`` (an ATen-dialect `ExportedProgram`, which coremltools 8+ converts), and
with ``torch.jit.trace`` where export or its conversion fails. The program computes in fp16 by default (fp32 on
request) for iOS 17 / macOS 14 or later; its input ``video`` and output ``logits`` stay fp32 either way.

Conversion runs on any OS; prediction needs macOS. So the build validates the saved package by loading its
specification (without compiling it) and checking the input and output names, shapes and types; the op
histogram of the MIL program goes to the manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import sys
import warnings
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import BuildContext, Target, TargetResult, module_path
from .rewrites import apply_rewrites

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "DEPLOYMENT_TARGET", "import_coremltools", "exported_program_from_module",
           "traced_module_from_module", "largest_tensor", "mlprogram_from_torch", "check_mlpackage",
           "compute_placement", "build", "TARGET"]

INPUT_NAME, OUTPUT_NAME = "video", "logits"
DEPLOYMENT_TARGET = "iOS17"
MODEL_FILE = "model.mlpackage"


def import_coremltools():
    """Import coremltools without its import-time warnings (untested torch version, no native runtime off macOS)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools
    finally:
        logger.setLevel(level)
    return coremltools


@contextlib.contextmanager
def _quiet():
    """Silence coremltools' progress bars (tqdm on stderr) and warnings while converting."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def exported_program_from_module(model: nn.Module, example: torch.Tensor):
    """``torch.export`` of the module, decomposed to the ATen dialect that coremltools converts."""
    with torch.no_grad():
        return torch.export.export(model, (example,)).run_decompositions({})


def traced_module_from_module(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the module (non-strict, no re-run check; tracer and deprecation warnings silenced)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, example, strict=False, check_trace=False)


def largest_tensor(model: nn.Module) -> int:
    """Elements of the model's largest parameter or buffer (see ``fold_limit`` in `mlprogram_from_torch`)."""
    return max((t.numel() for t in (*model.parameters(), *model.buffers())), default=0)


def mlprogram_from_torch(source: Any, shape: tuple[int, ...], precision: str = "fp16", fold_limit: int | None = None):
    """Convert an `ExportedProgram` or a traced module to a Core ML ML Program (`coremltools.models.MLModel`).

    Args:
        source: what `exported_program_from_module` or `traced_module_from_module` returned.
        shape: the static input shape (B, 3, T, H, W).
        precision: ``fp16`` or ``fp32`` compute precision; the input and output are fp32 either way.
        fold_limit: do not fold constant expressions with more elements than this into stored constants. With
            the model's `largest_tensor`, weights are folded as usual (casts, transposes) while broadcasts of
            constants are computed at run time instead of stored (Swin's relative-position bias plus shift mask
            would otherwise be stored expanded to windows x heads x tokens x tokens: 217 MB instead of 149 MB
            for swin-t at 16 x 224 x 224).
    """
    ct = import_coremltools()
    compute = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[precision]
    pipeline = ct.PassPipeline.DEFAULT
    if fold_limit:
        pipeline.set_options("common::const_elimination", {"skip_const_by_size": str(fold_limit)})
    with _quiet():
        return ct.convert(
            source,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(shape), dtype=np.float32)],
            outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
            convert_to="mlprogram",
            compute_precision=compute,
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            pass_pipeline=pipeline,
        )


def _feature(description) -> tuple[str, list[int], str]:
    array = description.type.multiArrayType
    ct = import_coremltools()
    dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return description.name, list(array.shape), dtype


def check_mlpackage(path: Path, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> dict[str, Any]:
    """Load a saved package's specification (no compilation, works off macOS) and check its interface.

    Returns:
        Manifest facts: spec version, MIL opset, op histogram (constants counted apart).

    Raises:
        ValueError: the package is not an ML Program, or its input or output differs from what was asked for.
    """
    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path.name} holds a {spec.WhichOneof('Type')} model, not an ML Program")
    want = [(INPUT_NAME, list(input_shape), "FLOAT32")], [(OUTPUT_NAME, list(output_shape), "FLOAT32")]
    got = [_feature(d) for d in spec.description.input], [_feature(d) for d in spec.description.output]
    for side, expected, found in zip(("input", "output"), want, got):
        if found != expected:
            raise ValueError(f"{path.name} has {side} {found}, expected {expected}")
    ops: Counter[str] = Counter()
    opsets = set()
    for function in spec.mlProgram.functions.values():
        opsets.add(function.opset)
        stack = [function.block_specializations[function.opset]]
        while stack:  # nested blocks (cond, while_loop) hold ops too
            block = stack.pop()
            for op in block.operations:
                ops[op.type] += 1
                stack.extend(op.blocks)
    consts = ops.pop("const", 0)
    return {"spec_version": spec.specificationVersion, "opset": sorted(opsets), "ops": sum(ops.values()),
            "constants": consts, "op_histogram": dict(ops.most_common())}


PLACEMENT_NOTE = ("Core ML places each op on the CPU, GPU or Neural Engine when a device loads the model; run on "
                  "macOS 14.4 or later to read that plan (MLComputePlan)")


def _module_paths(program) -> dict[str, str]:
    """Graph node name -> PyTorch module path, from an `ExportedProgram` (Core ML's ops keep those names)."""
    return {node.name: path for node in program.graph_module.graph.nodes if (path := module_path(node))}


def compute_placement(mlmodel, module_paths: dict[str, str] | None = None, top: int = 25) -> dict[str, Any]:
    """Where Core ML will run each op of a converted model, and the share of its estimated cost off the CPU.

    Only on macOS 14.4+ (MLComputePlan); elsewhere the explanation says so and gives no share. Shares are Core
    ML's own per-op cost estimates (fractions of the whole model), not FLOP counts.
    """
    explanation = {"accelerator": "Neural Engine or GPU", "accelerated_share": None, "not_accelerated": [],
                   "rows_omitted": 0, "note": PLACEMENT_NOTE}
    release = tuple(int(p) for p in platform.mac_ver()[0].split(".")[:2] if p.isdigit()) if sys.platform == \
        "darwin" else ()
    if release < (14, 4):
        return explanation
    ct = import_coremltools()
    plan = ct.models.compute_plan.MLComputePlan.load_from_path(
        path=mlmodel.get_compiled_model_path(), compute_units=ct.ComputeUnit.ALL)
    module_paths = module_paths or {}
    accelerated, total, rows = 0.0, 0.0, {}
    for op in plan.model_structure.program.functions["main"].block.operations:
        if op.operator_name == "const":
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        cost = plan.get_estimated_cost_for_mlprogram_operation(op)
        weight = cost.weight if cost else 0.0
        total += weight
        device = type(usage.preferred_compute_device).__name__ if usage else "unknown"
        if device in ("MLGPUComputeDevice", "MLNeuralEngineComputeDevice"):
            accelerated += weight
            continue
        name = op.outputs[0].name if op.outputs else op.operator_name
        key = (module_paths.get(name, name), op.operator_name)
        row = rows.setdefault(key, [0, 0.0])
        row[0], row[1] = row[0] + 1, row[1] + weight
    ordered = sorted(({"module": m, "op": o, "count": c, "cost_share": round(w / total, 6) if total else 0.0}
                      for (m, o), (c, w) in rows.items()), key=lambda r: (-r["cost_share"], -r["count"]))
    explanation.update(accelerated_share=round(accelerated / total, 6) if total else None,
                       not_accelerated=ordered[:top], rows_omitted=max(0, len(ordered) - top),
                       note="shares are Core ML's estimated cost per op; ops not accelerated run on the CPU")
    return explanation


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:140]}" if text else type(err).__name__


def build(ctx: BuildContext) -> TargetResult:
    """Capture (torch.export, else trace), convert to an ML Program, save, and validate the saved spec."""
    ct = import_coremltools()
    model, rewrites = apply_rewrites(ctx.model, "coreml")
    shape = tuple(ctx.example.shape)
    precision, fold_limit = ctx.options.precision, largest_tensor(model)
    mlmodel, frontend, failures, module_paths = None, None, [], {}
    try:
        with ctx.stage("export"):
            program = exported_program_from_module(model, ctx.example)
            module_paths = _module_paths(program)
        with ctx.stage("convert"):
            mlmodel = mlprogram_from_torch(program, shape, precision, fold_limit)
        frontend = "torch.export"
    except Exception as err:  # noqa: BLE001 - the trace path gets its chance; both failures are reported
        failures.append(f"torch.export path: {_first_line(err)}")
    if mlmodel is None:
        try:
            with ctx.stage("trace"):
                traced = traced_module_from_module(model, ctx.example)
            with ctx.stage("convert (trace)"):
                mlmodel = mlprogram_from_torch(traced, shape, precision, fold_limit)
            frontend = "torch.jit.trace"
        except Exception as err:  # noqa: BLE001
            failures.append(f"torch.jit.trace path: {_first_line(err)}")
            raise RuntimeError("; ".join(failures)) from err
    with ctx.stage("save"):
        mlmodel.save(str(ctx.out_dir / MODEL_FILE))
    with ctx.stage("validate"):
        num_classes = getattr(ctx.model, "build_args", {}).get("num_classes")
        if num_classes is None:  # a module from outside the zoo
            with torch.no_grad():
                num_classes = ctx.model(ctx.example).shape[-1]
        facts = check_mlpackage(ctx.out_dir / MODEL_FILE, shape, (shape[0], num_classes))
    with ctx.stage("placement"):
        placement = compute_placement(mlmodel, module_paths)
    ctx.explain(placement)
    info = {"frontend": frontend, "coremltools": ct.__version__, "deployment_target": DEPLOYMENT_TARGET,
            "compute_precision": precision, "format": "mlprogram", "rewrites": rewrites, "fold_limit": fold_limit,
            **facts, "explain": placement}
    if failures:
        info["fallback_reason"] = failures[0]
    return TargetResult(files={"model": MODEL_FILE}, info=info)


def _versions() -> dict[str, str]:
    return {"coremltools": version("coremltools"), "numpy": version("numpy")}


TARGET = Target(
    name="coreml",
    build=build,
    versions=_versions,
    runtime="coreml",
    requires=("coremltools",),
    extra="coreml",
    precisions=("fp16", "fp32"),
    default_precision="fp16",
)
