"""The model registry, in the manner of timm: `register_model`, `create_model`, `list_models`, `get_spec`.

Every model family registers a `ModelSpec`, its model class and two configurations: the paper's (``full``) and a
tiny one built by the same code (few blocks, small widths) that the tests run at 4 frames and 64 px. A model class
takes ``(cfg, *, num_classes, frames, size)``.

Seeded random initialisation is deterministic (same name and seed give bit-identical weights in every process)
and, unlike a training recipe's initialisation, it leaves no branch switched off: zero-initialised gates
(ReZero scalars, last-BN gammas, zero-init projections) and BatchNorm statistics are drawn from the same seed, so
that every layer contributes to the output and a parity check sees every layer.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import InvalidShapeError, UnknownModelError, WeightsError
from .spec import CATEGORIES, ModelSpec

__all__ = [
    "register_model",
    "create_model",
    "build_args",
    "list_models",
    "get_spec",
    "resolve_name",
    "load_weights",
    "count_params",
    "TINY_FRAMES",
    "TINY_SIZE",
    "TINY_CLASSES",
]

TINY_FRAMES, TINY_SIZE, TINY_CLASSES = 4, 64, 10
# Far beyond any action-recognition clip, and small enough that no weight table sized by the clip overflows.
MAX_FRAMES, MAX_SIZE = 1024, 4096


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    model_cls: Callable[..., nn.Module]
    full: Any
    tiny: Any


_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    """Spelling-insensitive lookup key: ``MViT-S``, ``mvit_s`` and ``mvits`` all give ``mvits``."""
    return re.sub(r"[-_ .]", "", name.lower())


def register_model(spec: ModelSpec, model_cls: Callable[..., nn.Module], *, full: Any, tiny: Any) -> None:
    """Add a model to the zoo. Duplicate names or aliases are errors."""
    for spelling in (spec.name, *spec.aliases):
        key = _key(spelling)
        if key in _ALIASES:
            raise ValueError(f"model name {spelling!r} of {spec.name} is already taken by {_ALIASES[key]}")
        _ALIASES[key] = spec.name
    _REGISTRY[spec.name] = _Entry(spec, model_cls, full, tiny)


def resolve_name(name: str) -> str:
    """Turn any accepted spelling of a model name into its canonical name."""
    canonical = _ALIASES.get(_key(name))
    if canonical is None:
        spellings = {s: e.spec.name for e in _REGISTRY.values() for s in (e.spec.name, *e.spec.aliases)}
        close = difflib.get_close_matches(name.lower(), list(spellings), n=6, cutoff=0.5)
        close = list(dict.fromkeys(spellings[s] for s in close))[:3]
        hint = f"did you mean {' or '.join(close)}?" if close else "run `vcompile models` to list them"
        raise UnknownModelError(f"unknown model {name!r}: {hint}")
    return canonical


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a model, by any accepted spelling of its name."""
    return _REGISTRY[resolve_name(name)].spec


def list_models(pattern: str = "*") -> list[str]:
    """Canonical names matching a shell-style pattern, in the paper's category order."""
    names = [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower())]
    return sorted(names, key=lambda n: (CATEGORIES.index(_REGISTRY[n].spec.category), n))


def get_config(name: str, tiny: bool = False) -> Any:
    """The architecture configuration (a frozen dataclass) a model is built from."""
    entry = _REGISTRY[resolve_name(name)]
    return entry.tiny if tiny else entry.full


def build_args(name: str, *, tiny: bool = False, num_classes: int | None = None, frames: int | None = None,
               size: int | None = None) -> dict[str, Any]:
    """The arguments a model is built with (``name``, ``tiny``, ``num_classes``, ``frames``, ``size``), defaults
    filled in and checked against the model's input contract, without constructing anything.

    Raises:
        UnknownModelError, InvalidShapeError: an unknown name, or a shape or width the model cannot take.
    """
    spec = _REGISTRY[resolve_name(name)].spec
    num_classes = (TINY_CLASSES if tiny else 400) if num_classes is None else num_classes
    frames = (TINY_FRAMES if tiny else spec.frames) if frames is None else frames
    size = (TINY_SIZE if tiny else spec.size) if size is None else size
    if num_classes < 1:
        raise InvalidShapeError(f"num_classes must be at least 1, got {num_classes}")
    if frames > MAX_FRAMES or size > MAX_SIZE:
        raise InvalidShapeError(f"{frames} frames of {size} px is beyond what vcompile builds (at most {MAX_FRAMES} "
                                f"frames of {MAX_SIZE} px); the paper's clips are {spec.frames} x {spec.size}")
    problem = spec.check_shape(frames, size)
    if problem:
        raise InvalidShapeError(problem)
    return {"name": spec.name, "tiny": tiny, "num_classes": num_classes, "frames": frames, "size": size}


def build_model(name: str, *, tiny: bool = False, num_classes: int | None = None, frames: int | None = None,
                size: int | None = None) -> nn.Module:
    """Construct a model with whatever initialisation its layers have (no seeding); works on the meta device."""
    args = build_args(name, tiny=tiny, num_classes=num_classes, frames=frames, size=size)
    entry = _REGISTRY[args["name"]]
    model = entry.model_cls(entry.tiny if tiny else entry.full, num_classes=args["num_classes"],
                            frames=args["frames"], size=args["size"])
    model.spec = entry.spec
    model.build_args = args
    return model


def create_model(
    name: str,
    num_classes: int | None = None,
    frames: int | None = None,
    size: int | None = None,
    seed: int = 0,
    weights: str | Path | Mapping[str, torch.Tensor] | None = None,
    tiny: bool = False,
) -> nn.Module:
    """Build a zoo model in eval mode, with seeded random weights or weights from a local file.

    Args:
        name: model name or alias (``mvit-s``, ``MViT-S`` and ``mvit_s`` all work).
        num_classes: classifier width; 400 (Kinetics-400), or 10 for tiny variants.
        frames: clip length; the paper's 16, or 4 for tiny variants.
        size: frame height and width; the paper's 224, or 64 for tiny variants.
        seed: seed of the random initialisation; the same seed gives bit-identical weights in every process.
        weights: a ``.safetensors`` file, a ``torch.save``-d state dict, or a state dict; replaces the random
            weights and must fit the model exactly.
        tiny: build the family's tiny test variant (same code, small widths and depths).

    Returns:
        The model, with its `ModelSpec` at ``.spec`` and its build arguments at ``.build_args``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("cpu"):
            model = build_model(name, tiny=tiny, num_classes=num_classes, frames=frames, size=size)
        _exercise_every_layer(model)
    model.build_args["seed"] = seed
    if weights is not None:
        load_weights(model, weights)
        model.build_args["weights"] = str(weights) if isinstance(weights, (str, Path)) else "<state dict>"
    return model.eval()


@torch.no_grad()
def _exercise_every_layer(model: nn.Module) -> None:
    """Draw BatchNorm statistics and all-zero parameters from the (already seeded) generator."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.normal_(0.0, 0.05)
            module.running_var.uniform_(0.8, 1.2)
            if module.affine:
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0.0, 0.05)
    for param in model.parameters():
        if param.is_floating_point() and not param.any():
            param.normal_(0.0, 0.02)


def count_params(model: nn.Module) -> int:
    """Number of parameters (unique tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise WeightsError(f"weights path {path} is a folder; give the path of a .safetensors or .pt state dict file")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; give the path of a .safetensors or .pt state dict")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is the same user-facing problem
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read weights file {path} ({first_line}); expected a .safetensors file "
                           "or a state dict saved with torch.save") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load a state dict into ``model``; any missing, unexpected or reshaped key is a `WeightsError`."""
    state = dict(weights) if isinstance(weights, Mapping) else _read_state_dict(Path(weights))
    where = f"weights file {weights}" if isinstance(weights, (str, Path)) else "the given state dict"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise WeightsError(f"{where} does not fit {name}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
