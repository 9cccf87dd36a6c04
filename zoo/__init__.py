"""The zoo: the paper's 13 video models, faithful to its configurations and exportable by construction.

>>> from vcompile.zoo import create_model
>>> model = create_model("mvit-s")          # seeded random weights, eval mode, model.spec holds the facts
"""

import importlib

from .registry import (
    TINY_CLASSES,
    TINY_FRAMES,
    TINY_SIZE,
    build_args,
    build_model,
    count_params,
    create_model,
    get_config,
    get_spec,
    list_models,
    load_weights,
    resolve_name,
)
from .spec import CATEGORIES, ModelSpec

__all__ = [
    "CATEGORIES",
    "ModelSpec",
    "TINY_CLASSES",
    "TINY_FRAMES",
    "TINY_SIZE",
    "build_args",
    "build_model",
    "count_params",
    "create_model",
    "get_config",
    "get_spec",
    "list_models",
    "load_weights",
    "resolve_name",
]

# One module per family; importing it registers its models.
_FAMILIES = ("tsm", "nonlocal_net", "tea", "i3d_bert", "vtn", "timesformer", "vivit", "swin", "mvit", "x3d", "movinet")
for _family in _FAMILIES:
    importlib.import_module(f".{_family}", __name__)
