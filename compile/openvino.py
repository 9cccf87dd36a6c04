"""OpenVINO target: the verified ONNX artifact converted to OpenVINO IR (``model.xml`` + ``model.bin``).

The IR is built from the onnx target's simplified graph (``depends_on="onnx"``), so OpenVINO runs exactly the graph
that onnxruntime was checked on, with the weights kept in fp32 (`ov.save_model` would compress them to fp16 by
default). The batch stays dynamic, as in the ONNX file. Precision is chosen when the runtime compiles the IR: a bf16
artifact is the same fp32 IR under its own cache key and manifest, and the runner asks for the artifact's precision
(f32 or bf16) and reads back what the compiled model runs.

int8 IRs are the fp32 IR (``ctx.dependency``) quantized by NNCF's post-training quantization (``nncf.quantize``,
its default mixed preset: weights symmetric per channel, activations per tensor) on the build's calibration clips,
never on the gate's. When the gate fails, NNCF's accuracy control (``nncf.quantize_with_accuracy_control``) returns
the most sensitive layers to float until the int8 model's cosine similarity to fp32 on the calibration clips is
within 0.01 of 1, or `MAX_FLOAT_SHARE` of them is float; the gate then judges it on held-apart clips.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Any

import numpy as np

from ..errors import VcompileError
from .base import MAX_FLOAT_SHARE, BuildContext, Target, TargetResult

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


# Clips NNCF's accuracy control ranks layers on (the ones int8 hurts most): it compiles and runs the model once per
# quantized layer group on each, which is most of its time; all 8 calibration clips made I3D-BERT's run pass 10 min.
RANKING_CLIPS = 3


def quantize_int8(ir_path, xml_path, clips, accuracy_control: bool = False) -> dict[str, Any]:
    """NNCF int8 of the IR at ``ir_path`` into ``xml_path`` (see the module's docstring); settings for the manifest."""
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(ir_path))
    dataset = nncf.Dataset([clip.numpy() for clip in clips])
    layers = _quantized_layers(model)
    settings = {"quantizer": f"nncf {nncf.__version__}", "preset": "mixed", "accuracy_control": accuracy_control}
    if not accuracy_control:
        quantized = nncf.quantize(model, dataset, subset_size=len(clips))
    else:
        compiled_fp32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        reference = [compiled_fp32(clip.numpy())[0] for clip in clips]

        def cosine(compiled, items) -> float:  # NNCF's validation: mean cosine to fp32 over the calibration clips
            values = []
            for index, x in enumerate(items):
                got, ref = compiled(x)[0].ravel().astype(np.float64), reference[index].ravel().astype(np.float64)
                values.append(float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref) + 1e-30)))
            return float(np.mean(values))

        quantized = nncf.quantize_with_accuracy_control(
            model, dataset, dataset, validation_fn=cosine, max_drop=0.01, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(clips),
            advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
                max_num_iterations=max(1, int(layers * MAX_FLOAT_SHARE)),
                ranking_subset_size=min(len(clips), RANKING_CLIPS)))
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    settings.update(fake_quantize_ops=fake_quantize, quantized_layers=layers)
    return settings


def _quantized_layers(model) -> int:
    """Convolutions and matrix products in an OpenVINO model: what NNCF can quantize."""
    return sum(op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul") for op in model.get_ordered_ops())


def _build_int8(ctx: BuildContext) -> TargetResult:
    if importlib.util.find_spec("nncf") is None:
        raise VcompileError('an int8 openvino build quantizes with NNCF, which is not installed; pip install '
                            '"vcompile[openvino]"')
    if ctx.dependency is None:
        raise RuntimeError("an int8 openvino build quantizes the fp32 IR, and none was given")
    files = {"model": MODEL_FILE, "weights": WEIGHTS_FILE}
    with ctx.stage("quantize"):
        info = quantize_int8(ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE, ctx.calibration())
    parity = ctx.verify(files)
    attempts = [{"accuracy_control": False, "status": parity["status"], "cosine": parity.get("cosine")}]
    if parity["status"] == "fail":
        with ctx.stage("quantize with accuracy control"):
            info = quantize_int8(ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE, ctx.calibration(),
                                 accuracy_control=True)
        parity = ctx.verify(files)
        attempts.append({"accuracy_control": True, "status": parity["status"], "cosine": parity.get("cosine")})
    info.update(attempts=attempts, fp32={"key": ctx.dependency.key})
    return TargetResult(files=files, info=info, parity=parity)


def build(ctx: BuildContext) -> TargetResult:
    """Convert the onnx artifact's simplified graph (``ctx.dependency``) to IR; for int8, quantize the fp32 IR."""
    if ctx.options.precision == "int8":
        return _build_int8(ctx)
    if ctx.dependency is None:
        raise RuntimeError("the openvino target builds from an onnx artifact, and none was given")
    with ctx.stage("convert"):
        info = ir_from_onnx(ctx.dependency.file("model"), ctx.out_dir / MODEL_FILE)
    info["onnx"] = {"key": ctx.dependency.key, "exporter": ctx.dependency.manifest["info"].get("exporter")}
    return TargetResult(files={"model": MODEL_FILE, "weights": WEIGHTS_FILE}, info=info)


def _versions() -> dict[str, str | None]:
    found = {}
    for name in ("openvino", "nncf"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


TARGET = Target(
    name="openvino",
    build=build,
    versions=_versions,
    runtime="openvino",
    requires=("openvino",),
    extra="openvino",
    precisions=("fp32", "bf16", "int8"),
    depends_on="onnx",
    int8_from="openvino",
    dynamic_batch=True,
)
