"""The accuracy gate: a reduced-precision artifact is checked on held-apart clips at its precision's thresholds;
it passes a sound artifact and rejects one whose weights were damaged."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from vcompile.check.metrics import TOLERANCES
from vcompile.check.parity import build_verified, check_runtime, reference_logits
from vcompile.compile import GATE_BATCHES, BuildOptions
from vcompile.data import clip_set
from vcompile.zoo import create_model

SHAPE = (1, 3, 4, 64, 64)


def test_the_gate_passes_a_sound_artifact_and_rejects_a_damaged_one(tmp_path):
    artifact = build_verified("x3d-xs", "onnx", BuildOptions(tiny=True, batch=1, precision="fp16"), out=tmp_path)
    gate = artifact.manifest["parity"]
    assert gate["status"] == "pass" and gate["clips"] == "held_apart", gate
    assert gate["batches"] == [1] * GATE_BATCHES + [2] and gate["cosine"] >= TOLERANCES["fp16"].min_cosine
    clips = clip_set("held_apart", SHAPE, GATE_BATCHES)
    reference = reference_logits(create_model("x3d-xs", tiny=True), clips)
    assert check_runtime(artifact, "onnxruntime", clips, reference, TOLERANCES["fp16"]).passed

    proto = onnx.load(str(artifact.file()))  # damage it: 30% noise on every weight tensor
    rng = np.random.default_rng(0)
    for init in proto.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype.kind == "f" and weights.size > 16:
            noisy = weights * (1 + 0.3 * rng.standard_normal(weights.shape))
            init.CopyFrom(numpy_helper.from_array(noisy.astype(weights.dtype), init.name))
    onnx.save(proto, str(artifact.file()))
    damaged = check_runtime(artifact, "onnxruntime", clips, reference, TOLERANCES["fp16"])
    assert not damaged.passed and "cosine" in damaged.reason and damaged.cosine < TOLERANCES["fp16"].min_cosine


def test_gate_clips_are_never_calibration_or_trace_clips():
    gate = clip_set("held_apart", SHAPE, 8)
    others = clip_set("calibration", SHAPE, 64) + clip_set("trace", SHAPE, 8) + clip_set("parity", SHAPE, 8)
    assert not any(np.array_equal(g.numpy(), o.numpy()) for g in gate for o in others)
