"""PyTorch Lite target: a TorchScript trace saved for the lite interpreter (``model.ptl``).

``torch.jit.trace`` captures the module; where the torch build has XNNPACK, ``optimize_for_mobile`` folds
BatchNorm into convolutions, removes dropout and pre-packs weights for XNNPACK (it refuses to run on builds without
XNNPACK, such as the PyPI CUDA wheels, and the build records why it was skipped). The saved file is loaded back
with the lite interpreter and checked against the PyTorch module on the example clip.

TorchScript and PyTorch Mobile are in maintenance; ExecuTorch (the ``executorch`` target) is their successor.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.backends.xnnpack
from torch import nn
from torch.jit.mobile import _export_operator_list, _get_model_bytecode_version, _load_for_lite_interpreter
from torch.utils.mobile_optimizer import optimize_for_mobile

from .base import BuildContext, Target, TargetResult
from .rewrites import apply_rewrites

__all__ = ["quiet_lite_interpreter", "xnnpack_enabled", "traced_module_from_module", "mobile_module_from_traced",
           "save_lite", "build", "TARGET"]

MODEL_FILE = "model.ptl"


@contextlib.contextmanager
def quiet_lite_interpreter() -> Iterator[None]:
    """Silence the lite interpreter's deprecation warning (it is deprecated in favour of ExecuTorch)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Lite Interpreter is deprecated")
        yield


def xnnpack_enabled() -> bool:
    """Whether this torch build has XNNPACK, which ``optimize_for_mobile`` needs."""
    return bool(torch.backends.xnnpack.enabled)


def traced_module_from_module(model: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, list[str]]:
    """``torch.jit.trace`` of the module, and the distinct tracer warnings (Python values frozen into the graph)."""
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    messages = [str(w.message).splitlines()[0][:100] for w in caught
                if issubclass(w.category, torch.jit.TracerWarning)]
    return traced, list(dict.fromkeys(messages))


def mobile_module_from_traced(traced: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """``optimize_for_mobile`` (needs a torch build with XNNPACK)."""
    return optimize_for_mobile(traced)


def save_lite(module: torch.jit.ScriptModule, path: Path) -> dict[str, Any]:
    """Save for the lite interpreter; returns the bytecode version and the root operators it needs."""
    with quiet_lite_interpreter():
        module._save_for_lite_interpreter(str(path))
        operators = sorted(_export_operator_list(_load_for_lite_interpreter(str(path))))
    return {"bytecode_version": _get_model_bytecode_version(str(path)), "operators": len(operators),
            "operator_list": operators}


def build(ctx: BuildContext) -> TargetResult:
    """Trace, optimize for mobile where possible and save for the lite interpreter (`build` then verifies it)."""
    model, rewrites = apply_rewrites(ctx.model, "ptl")
    with ctx.stage("trace"):
        module, tracer_warnings = traced_module_from_module(model, ctx.example)
    info: dict[str, Any] = {"exporter": "torch.jit.trace", "rewrites": rewrites,
                            "tracer_warnings": tracer_warnings[:5], "optimized_for_mobile": False}
    if xnnpack_enabled():
        with ctx.stage("optimize"):
            module = mobile_module_from_traced(module)
        info["optimized_for_mobile"] = True
    else:
        info["optimize_skipped"] = "XNNPACK is not enabled in this torch build, so optimize_for_mobile cannot run"
    with ctx.stage("save"):
        info.update(save_lite(module, ctx.out_dir / MODEL_FILE))
    return TargetResult(files={"model": MODEL_FILE}, info=info)


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "xnnpack": "enabled" if xnnpack_enabled() else "disabled"}


TARGET = Target(
    name="ptl",
    build=build,
    versions=_versions,
    runtime="ptl",
    precisions=("fp32",),
)
