"""OpenVINO target: the verified ONNX artifact converted to OpenVINO IR (``model.xml`` + ``model.bin``).

The IR is built from the onnx target's simplified graph (``depends_on="onnx"``), so OpenVINO runs exactly the graph
that onnxruntime was checked on, with the weights kept in fp32 (`ov.save_model` would compress them to fp16 by
default). The batch stays dynamic, as in the ONNX file. Precision is chosen when the runtime compiles the IR: a bf16
artifact is the same fp32 IR under its own cache key and manifest, and the runner asks for the artifact's precision
(f32 or bf16) and reads back what the compiled model runs.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from .base import BuildContext, Target, TargetResult

__all__ = ["MODEL_FILE", "WEIGHTS_FILE", "ir_from_onnx", "build", "TARGET"]

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"


def ir_from_onnx(onnx_path, xml_path) -> dict[str, Any]:
    """Convert an ONNX file to OpenVINO IR at ``xml_path`` (weights beside it in ``.bin``), uncompressed fp32."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    ops = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        ops[kind] = ops.get(kind, 0) + 1
    return {"openvino": ov.__version__, "ops": dict(sorted(ops.items())), "nodes": sum(ops.values()),
            "input_shape": str(model.inputs[0].get_partial_shape())}


def build(ctx: BuildContext) -> TargetResult:
    """Convert the onnx artifact's simplified graph (``ctx.dependency``) to IR."""
    if ctx.dependency is None:
        raise RuntimeError("the openvino target builds from an onnx artifact, and none was given")
    with ctx.stage("convert"):
        info = ir_from_onnx(ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE)
    info["onnx"] = {"key": ctx.dependency.key, "exporter": ctx.dependency.manifest["info"].get("exporter")}
    return TargetResult(files={"model": MODEL_FILE, "weights": WEIGHTS_FILE}, info=info)


def _versions() -> dict[str, str | None]:
    try:
        return {"openvino": metadata.version("openvino")}
    except metadata.PackageNotFoundError:
        return {"openvino": None}


TARGET = Target(
    name="openvino",
    build=build,
    versions=_versions,
    runtime="openvino",
    requires=("openvino",),
    extra="openvino",
    precisions=("fp32", "bf16"),
    depends_on="onnx",
    dynamic_batch=True,
)
