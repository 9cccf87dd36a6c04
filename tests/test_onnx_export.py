"""Every model's tiny variant exports to ONNX and runs in onnxruntime like PyTorch, at a batch it was not traced at."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.zoo import create_model, list_models

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a core dependency; install vcompile")


@pytest.mark.parametrize("name", list_models())
def test_tiny_onnx_matches_pytorch(name, tmp_path):
    model = create_model(name, tiny=True)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (tiny_clip(batch=2),), str(path), dynamo=False, opset_version=18,
                          input_names=["video"], output_names=["logits"],
                          dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = tiny_clip(batch=3, seed=1)
    (got,) = session.run(None, {"video": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
