"""Speedups over PyTorch eager from a `vcompile bench --processes N` results file, with the spread between processes.

For each model, each (runtime, mode) at batch 1 is summarised by the median of its per-process means, with the
lowest and highest process mean beside it; its speedup is eager's median over its median. A speedup whose
process ranges overlap eager's is marked "~" (not resolved by this measurement).

    python benchmarks/process_spread.py docs/results/cpu-2core-processes3.jsonl
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from vcompile.bench.records import read_records
from vcompile.report.analysis import model_sort_key


def main(path: str) -> None:
    cases: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for record in read_records(Path(path)):
        if record.status == "ok" and record.batch == 1:
            cases[record.model][f"{record.runtime} · {record.mode}"] = record.process_means_ms or [record.mean_ms]
    columns = sorted({c for per_model in cases.values() for c in per_model} - {"torch · single"})
    print("| model | torch · single (ms) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    speedups: dict[str, list[float]] = defaultdict(list)
    for model in sorted(cases, key=model_sort_key):
        eager = cases[model].get("torch · single")
        if not eager:
            continue
        cells = [f"{statistics.median(eager):.0f} ({min(eager):.0f}-{max(eager):.0f})"]
        for column in columns:
            means = cases[model].get(column)
            if not means:
                cells.append("-")
                continue
            speedup = statistics.median(eager) / statistics.median(means)
            speedups[column].append(speedup)
            overlap = min(means) <= max(eager) and min(eager) <= max(means)
            cells.append(f"{statistics.median(means):.0f} ({min(means):.0f}-{max(means):.0f}): "
                         f"{'~' if overlap else ''}{speedup:.2f}x")
        print(f"| {model} | " + " | ".join(cells) + " |")
    print("| **median speedup** | | " + " | ".join(f"**{statistics.median(speedups[c]):.2f}x**" for c in columns)
          + " |")
    print("| slower than eager | | " + " | ".join(f"{sum(s < 1 for s in speedups[c])} of {len(speedups[c])}"
                                                  for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
