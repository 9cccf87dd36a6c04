"""Agreement between a runtime's logits and the PyTorch fp32 reference, with classification-aware metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import VcompileError

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "Agreement", "compare_logits", "logit_scale"]


@dataclass(frozen=True)
class Tolerance:
    """When an artifact agrees with the reference: elementwise closeness (fp32 only) and cosine similarity.

    With ``scaled_atol`` (the fp32 default), ``atol`` is stated for logits of unit scale and is multiplied by each
    clip's logit scale (the root mean square of its reference logits) where that exceeds 1. Rounding error in fp32
    grows with the size of the sums that make a logit, not with the logit itself: a model whose logits lie in the
    thousands (seeded TEA-R50: RMS ~700) puts ~1e-2 of honest summation-order noise on every logit, including the
    ones near zero, where a fixed atol of 1e-4 calls it a failure although it is 1e-5 of the scale. Logits of unit
    scale or less (every trained classifier) are judged exactly as ``allclose(got, ref, atol, rtol)``.
    """

    atol: float
    rtol: float
    min_cosine: float
    elementwise: bool  # fp16/bf16 artifacts are judged by cosine and top-1, not by elementwise closeness
    scaled_atol: bool = False  # atol is per unit of logit scale (see above); an atol the user states is absolute
    min_top5: float = 0.0  # the least mean top-5 overlap with the reference (the int8 gate)


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999, elementwise=True, scaled_atol=True),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999, elementwise=False),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, elementwise=False),
    "int8": Tolerance(atol=1e-1, rtol=1e-1, min_cosine=0.99, elementwise=False, min_top5=0.8),
}


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The tolerance of a precision, with ``atol`` / ``rtol`` overriding its defaults.

    An override makes the check elementwise at any precision (asking for a tolerance means wanting it applied) and
    its atol absolute (not scaled by the logits' scale).
    Tolerances must be finite and non-negative: a NaN would make every comparison pass.
    """
    if precision not in TOLERANCES:
        raise VcompileError(f"no tolerance for precision {precision!r}; choose from {', '.join(TOLERANCES)}")
    tol = TOLERANCES[precision]
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise VcompileError(f"--{name} must be a finite number >= 0, got {value}")
    if atol is None and rtol is None:
        return tol
    return replace(tol, atol=tol.atol if atol is None else atol, rtol=tol.rtol if rtol is None else rtol,
                   elementwise=True, scaled_atol=tol.scaled_atol and atol is None)


@dataclass(frozen=True)
class Agreement:
    """How well ``got`` matches ``ref`` over a batch of logits (rows are clips)."""

    max_abs: float
    max_rel: float
    cosine: float  # the worst row's cosine similarity
    top1: float  # fraction of clips whose top-1 class agrees
    top5: float  # mean overlap of the top-5 sets, in [0, 1]
    ties: int  # top-1 disagreements where the reference's top-2 margin is within tolerance
    disagreements: int  # top-1 disagreements that are not ties
    smallest_atol: float  # the smallest atol that would pass at the given rtol (per unit of logit scale if scaled)
    passed: bool
    reason: str
    scale: float = 1.0  # the largest logit scale the atol was multiplied by (1 when not scaled)

    def to_dict(self) -> dict:
        return asdict(self)


def _top(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def logit_scale(ref: np.ndarray) -> np.ndarray:
    """Each row's logit scale, as a column: the root mean square of its logits, never below 1."""
    rms = np.sqrt(np.mean(np.square(ref), axis=1, keepdims=True)) if ref.size else np.ones((ref.shape[0], 1))
    return np.maximum(rms, 1.0)


def compare_logits(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> Agreement:
    """Compare logits of shape (N, classes); non-finite outputs never pass."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        return Agreement(np.inf, np.inf, -1.0, 0.0, 0.0, 0, ref.shape[0], np.inf, False,
                         f"output shape {got.shape} differs from the reference's {ref.shape}")
    if not np.isfinite(got).all():
        return Agreement(np.inf, np.inf, -1.0, 0.0, 0.0, 0, ref.shape[0], np.inf, False, "non-finite outputs")
    diff = np.abs(got - ref)
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cosines = np.where(norms > 0, (ref * got).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    cosine = float(cosines.min(initial=1.0))
    ref_top, got_top = _top(ref, 5), _top(got, 5)
    agree = ref_top[:, 0] == got_top[:, 0]
    rows = np.arange(ref.shape[0])
    if ref.shape[1] > 1:
        margin = ref[rows, ref_top[:, 0]] - ref[rows, ref_top[:, 1]]
    else:
        margin = np.full(ref.shape[0], np.inf)
    scale = logit_scale(ref) if tol.scaled_atol else np.ones((ref.shape[0], 1))
    tie = ~agree & (margin <= tol.atol * scale[:, 0] + tol.rtol * np.abs(ref[rows, ref_top[:, 0]]))
    top5 = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ref_top, got_top)])) if len(rows) else 1.0
    smallest_atol = float(np.max((diff - tol.rtol * np.abs(ref)) / scale, initial=0.0).clip(min=0.0))
    worst_scale = float(scale.max(initial=1.0))
    disagreements = int((~agree & ~tie).sum())
    reasons = []
    if tol.elementwise and smallest_atol > tol.atol:  # i.e. not allclose(got, ref, atol, rtol)
        per = f" x logit scale {worst_scale:.3g}" if worst_scale > 1 else ""
        reasons.append(f"max abs error {max_abs:.2e} exceeds atol {tol.atol:g}{per} + rtol {tol.rtol:g} x |ref|")
    if cosine < tol.min_cosine:
        reasons.append(f"cosine {cosine:.6f} below {tol.min_cosine}")
    if disagreements:
        reasons.append(f"top-1 differs on {disagreements} of {len(rows)} clips")
    if top5 < tol.min_top5 - 1e-9:  # a mean of fifths: 4/5 on every clip must not fail 0.8 by rounding
        reasons.append(f"top-5 overlap {top5:.2f} below {tol.min_top5}")
    return Agreement(max_abs, max_rel, cosine, float(agree.mean()) if len(rows) else 1.0, top5, int(tie.sum()),
                     disagreements, smallest_atol, not reasons, "; ".join(reasons), worst_scale)
