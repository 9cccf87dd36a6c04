"""The paper's reported accuracies (Koot et al. 2022, arXiv 2111.09641, Table 4) as data, for the report's summary.

Top-1 (and top-5) accuracy in %, single crop, single view, models at 400 Kinetics classes. SSV2 and EK100 rows
marked ``from_k400`` were initialised from K400 weights, all others from ImageNet-1K. The paper did not train
MViT-S, so its accuracies are None.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperAccuracy", "PAPER_ACCURACY", "SUMMARY_DATASETS", "DATASET_METRIC", "paper_accuracy",
           "normalised_accuracy"]


@dataclass(frozen=True)
class PaperAccuracy:
    """One row of the paper's Table 4; None where the paper reports nothing."""

    params_m: float
    k400_top1: float | None = None
    k400_top5: float | None = None
    ssv2_top1: float | None = None
    ssv2_top5: float | None = None
    ek100_action: float | None = None
    ek100_verb: float | None = None
    ek100_noun: float | None = None
    from_k400: bool = False  # SSV2 and EK100 fine-tuned from K400 weights (the paper's asterisk)


# vcompile name -> Table 4 row, in the table's order.
PAPER_ACCURACY: dict[str, PaperAccuracy] = {
    "i3d-bert": PaperAccuracy(50.6, 64.8, 85.6, 57.8, 85.2, 31.5, 62.0, 41.8),
    "tea-r50": PaperAccuracy(24.9, 66.0, 87.0, 52.6, 80.4, 31.3, 61.0, 42.2),
    "nl-r50": PaperAccuracy(31.7, 66.9, 87.7, 47.5, 78.6, 28.5, 52.0, 45.3),
    "vtn-r50": PaperAccuracy(26.5, 67.2, 87.4, 53.6, 80.8, 33.6, 62.5, 44.3),
    "vtn-eff": PaperAccuracy(6.8, 68.2, 88.1, 52.9, 80.6, 31.9, 60.9, 42.2),
    "vivit-fe": PaperAccuracy(25.4, 68.8, 87.7, 49.9, 77.0, 30.3, 58.4, 41.3),
    "swin-t": PaperAccuracy(28.0, 69.8, 88.7, 52.3, 80.2, 25.9, 51.0, 40.5),
    "timesformer": PaperAccuracy(121.0, 74.5, 91.5, 62.7, 89.8, 31.3, 54.6, 48.4),
    "mvit-s": PaperAccuracy(26.1),
    "movinet-a0": PaperAccuracy(2.7, 65.8, 87.4, 57.2, 84.9, 31.3, 62.4, 41.1, from_k400=True),
    "x3d-xs": PaperAccuracy(3.8, 68.6, 87.9, 58.1, 85.4, 32.6, 62.5, 43.4, from_k400=True),
    "tsm-r50": PaperAccuracy(24.3, 70.0, 89.5, 59.5, 86.1, 32.7, 60.1, 44.7),
    "movinet-a2": PaperAccuracy(4.8, 75.0, 92.3, 60.6, 86.5, 34.4, 64.2, 44.8, from_k400=True),
}

# The headline metric of each dataset: top-1 for K400 and SSV2, action top-1 for EK100.
DATASET_METRIC = {"k400": "k400_top1", "ssv2": "ssv2_top1", "ek100": "ek100_action"}

# The summary figure averages the normalised accuracy over these datasets.
SUMMARY_DATASETS = ("ssv2", "ek100")


def paper_accuracy(model: str, dataset: str) -> float | None:
    """The paper's headline accuracy of ``model`` on ``dataset`` (``k400``, ``ssv2``, ``ek100``), or None."""
    row = PAPER_ACCURACY.get(model)
    return None if row is None else getattr(row, DATASET_METRIC[dataset])


def normalised_accuracy(model: str, datasets: tuple[str, ...] = SUMMARY_DATASETS,
                        models: tuple[str, ...] | None = None) -> float | None:
    """Accuracy min-max normalised per dataset over ``models`` and averaged over ``datasets``, as the summary does.

    Args:
        model: vcompile model name.
        datasets: datasets to average over (the summary figure uses SSV2 and EK100).
        models: the models that set each dataset's minimum and maximum; default every model the paper trained,
            so a model's score does not depend on which models a report happens to include.

    Returns:
        A value in [0, 1] (1 = most accurate on every dataset), or None if the paper has no accuracy for
        ``model`` on one of ``datasets``.
    """
    pool = tuple(PAPER_ACCURACY) if models is None else models
    scores = []
    for dataset in datasets:
        value = paper_accuracy(model, dataset)
        if value is None:
            return None
        known = [v for v in (paper_accuracy(m, dataset) for m in pool) if v is not None] + [value]
        low, high = min(known), max(known)
        scores.append((value - low) / (high - low) if high > low else 1.0)
    return sum(scores) / len(scores)
