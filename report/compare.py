"""`vcompile compare BASE NEW`: the same cases in two results files, each one's latency ratio with its interval.

A case matches across the files by what it measured (model, runtime, mode, device, the precision that ran, batch
and input shape), not by how (threads, iterations, rounds), so that a change of setting is what is compared. Where a
file holds several ok records of a case, the last one counts. The ratio is NEW's median over BASE's, with a 95%
interval from resampling each run's samples (`vcompile.bench.stats.ratio_interval`: two runs are never paired by
round). A case is a regression when the whole interval lies above ``1 + threshold``: slower by more than the
threshold, with confidence; an improvement when it lies below ``1 - threshold``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bench.records import Record, read_records
from ..bench.stats import Interval, ratio_interval

__all__ = ["CaseChange", "Comparison", "compare_files", "comparison_markdown"]


@dataclass(frozen=True)
class CaseChange:
    case: str  # model / runtime / mode / precision / batch N / device
    base_ms: float
    new_ms: float
    ratio: Interval  # new latency over base latency: above 1 is slower
    verdict: str  # "regression", "improvement" or "no significant change"


@dataclass(frozen=True)
class Comparison:
    base: str
    new: str
    threshold: float
    changes: list[CaseChange]
    only_in_base: list[str]
    only_in_new: list[str]

    @property
    def regressions(self) -> list[CaseChange]:
        return [c for c in self.changes if c.verdict == "regression"]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "regressions": len(self.regressions)}, indent=1)


def _identity(record: Record) -> tuple:
    return (record.model, record.runtime, record.mode, record.device, record.precision, record.batch,
            tuple(record.input_shape))


def _label(key: tuple) -> str:
    model, runtime, mode, device, precision, batch, shape = key
    return f"{model} / {runtime} / {mode} / {precision} / batch {batch} / {device}" + (
        f" / {'x'.join(map(str, shape[1:]))}" if shape else "")


def _latest_ok(path: Path) -> dict[tuple, Record]:
    found = {}
    for record in read_records(path):  # later records win
        if record.status == "ok" and record.latencies_ms:
            found[_identity(record)] = record
    return found


def compare_files(base: Path, new: Path, threshold: float = 0.05) -> Comparison:
    """Every case measured ok in both files, as a `CaseChange`, with the cases found in only one of them."""
    before, after = _latest_ok(base), _latest_ok(new)
    changes = []
    for key in sorted(before.keys() & after.keys()):
        ratio = ratio_interval(after[key], before[key])
        if ratio.low > 1 + threshold:
            verdict = "regression"
        elif ratio.high < 1 - threshold:
            verdict = "improvement"
        else:
            verdict = "no significant change"
        changes.append(CaseChange(_label(key), before[key].median_ms, after[key].median_ms, ratio, verdict))
    return Comparison(str(base), str(new), threshold, changes,
                      [_label(k) for k in sorted(before.keys() - after.keys())],
                      [_label(k) for k in sorted(after.keys() - before.keys())])


def comparison_markdown(comparison: Comparison) -> str:
    limit = comparison.threshold
    lines = [f"# {comparison.new} against {comparison.base}", "",
             f"Ratio: the new median latency over the base's, with its 95% interval; a regression is slower by more "
             f"than {limit:.0%} with confidence (the whole interval above {1 + limit:.2f}).", "",
             "| case | base median (ms) | new median (ms) | ratio [95% interval] | verdict |", "|---|---|---|---|---|"]
    for change in comparison.changes:
        r = change.ratio
        verdict = f"**{change.verdict}**" if change.verdict == "regression" else change.verdict
        lines.append(f"| {change.case} | {change.base_ms:.3g} | {change.new_ms:.3g} | {r.value:.3f} "
                     f"[{r.low:.3f}-{r.high:.3f}] | {verdict} |")
    counts = {v: sum(c.verdict == v for c in comparison.changes)
              for v in ("regression", "improvement", "no significant change")}
    lines += ["", f"{len(comparison.changes)} case(s) compared: {counts['regression']} regression(s), "
                  f"{counts['improvement']} improvement(s), {counts['no significant change']} without a significant "
                  "change."]
    for where, labels in (("base", comparison.only_in_base), ("new", comparison.only_in_new)):
        if labels:
            lines.append(f"Only in the {where} file (not compared): " + "; ".join(labels) + ".")
    return "\n".join(lines) + "\n"
