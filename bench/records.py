"""Result records: one JSON object per measured case, appended and flushed one by one to a ``.jsonl`` file."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import VcompileError

__all__ = ["SCHEMA", "LatencyStats", "Record", "append_record", "read_records"]

SCHEMA = "vcompile.bench/1"


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of raw per-run latencies, in milliseconds (the raw samples are kept beside them)."""

    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    cv: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_values(cls, values_ms: list[float]) -> LatencyStats:
        if not values_ms:
            raise ValueError("no latencies to summarise")
        ordered = sorted(values_ms)
        n = len(ordered)

        def percentile(q: float) -> float:  # linear interpolation between closest ranks (numpy's default)
            pos = (n - 1) * q
            lo, hi = math.floor(pos), math.ceil(pos)
            return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

        mean = sum(ordered) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / (n - 1)) if n > 1 else 0.0
        return cls(mean, percentile(0.5), percentile(0.9), percentile(0.99), std, std / mean if mean else 0.0,
                   ordered[0], ordered[-1])


@dataclass
class Record:
    """One measured case (model x runtime x mode). Missing measurements are None, never zero."""

    model: str
    runtime: str
    mode: str
    status: str
    precision: str
    batch: int
    input_shape: list[int]
    device: str
    threads: int | None
    warmup: int
    iters: int
    schema: str = SCHEMA
    timestamp: str = ""
    target: str | None = None
    requested_precision: str | None = None
    message: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    iters_timed: int = 0
    mean_ms: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    artifact: str | None = None
    peak_device_mb: float | None = None
    peak_device_reserved_mb: float | None = None
    peak_host_mb: float | None = None
    params: int | None = None
    gflops: float | None = None
    gmacs: float | None = None
    budget_s: float | None = None
    tiny: bool = False
    label: str = ""  # e.g. "mobile CPU proxy" for mobile records measured on this machine
    settings_key: str = ""
    env: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    process_means_ms: list[float] | None = None  # each fresh process's mean, when a case ran in several

    def set_latencies(self, values_ms: list[float]) -> None:
        self.latencies_ms = [round(v, 4) for v in values_ms]
        self.iters_timed = len(values_ms)
        if values_ms:
            stats = LatencyStats.from_values(values_ms)
            for name in ("mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "cv"):
                setattr(self, name, round(getattr(stats, name), 4 if name != "cv" else 5))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _drop_torn_tail(path: Path) -> None:
    """Cut an unfinished last line (a writer killed mid-record) so the next record starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - (1 << 20))
        handle.seek(start)
        tail = handle.read()
        cut = tail.rfind(b"\n")
        handle.truncate(start + cut + 1 if cut >= 0 else start)


def append_record(path: Path, record: Record) -> None:
    """Append one record as a JSON line and flush it to disk, so a crash loses nothing already measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(record.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: Path) -> list[Record]:
    """Read a results file; a torn last line (a sweep killed mid-write) is ignored, other bad lines are errors."""
    if not path.is_file():
        raise VcompileError(f"results file not found: {path}")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise VcompileError(f"{path}:{number} is not a JSON record; is this a vcompile results file?") from None
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("vcompile.bench/"):
            raise VcompileError(f"{path}:{number} is not a vcompile bench record (no 'schema' field)")
        records.append(Record.from_dict(data))
    return records
