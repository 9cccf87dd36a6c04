"""Result records: one JSON object per measured case, appended and flushed one by one to a ``.jsonl`` file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VcompileError

try:
    import fcntl
except ImportError:  # Windows: appends are not locked across processes
    fcntl = None

__all__ = ["SCHEMA", "LatencyStats", "Record", "append_record", "check_results_file", "read_records"]

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
        values = np.asarray(values_ms, dtype=float)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0  # the sample standard deviation
        median, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
        return cls(mean, median, p90, p99, std, std / mean if mean else 0.0, float(values.min()),
                   float(values.max()))


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
    requested_precision: str | None = None  # what was asked for ("amp" included); `precision` is what ran
    precision_reason: str = ""  # why the precision that ran is the one that ran (or why it could not run)
    message: str = ""
    # End to end: one call as an application makes it, host array in, host logits out (transfers included).
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
    runtime_settings: dict[str, str] = field(default_factory=dict)  # as read back from the runtime (OpenVINO)
    first_run_ms: float | None = None  # the first call, before warm-up: lazy set-up, Inductor's compilation
    # The artifact's build-time check (fp32 parity, or the accuracy gate of a reduced precision): status "pass",
    # "fail", "not run"... A case whose artifact failed is measured, but is never a deployment (reports mark it).
    artifact_check: dict[str, Any] | None = None
    # Measured in rounds (`vcompile.bench.sweep.run_rounds`): how many, the round of each timed run (parallel to
    # latencies_ms), the seed of the shuffled turn orders, and each round's order (cases as model/runtime/mode).
    # Compute only (`vcompile.runtimes.Runner.bind`): the input already where the runtime computes, the output left
    # there; comparable with trtexec's GPU compute time. compute_kind says which it is: "compute only", or
    # "same as end to end" where the runtime takes and returns host arrays itself (PyTorch Lite, Core ML).
    compute_latencies_ms: list[float] = field(default_factory=list)
    compute_mean_ms: float | None = None
    compute_median_ms: float | None = None
    compute_kind: str = ""
    rounds: int | None = None
    sample_rounds: list[int] | None = None
    round_seed: int | None = None
    round_orders: list[list[str]] | None = None

    def set_latencies(self, values_ms: list[float]) -> None:
        self.latencies_ms = [round(v, 4) for v in values_ms]
        self.iters_timed = len(values_ms)
        if values_ms:
            stats = LatencyStats.from_values(values_ms)
            for name in ("mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "cv"):
                setattr(self, name, round(getattr(stats, name), 4 if name != "cv" else 5))

    def set_compute_latencies(self, values_ms: list[float]) -> None:
        self.compute_latencies_ms = [round(v, 4) for v in values_ms]
        if values_ms:
            self.compute_mean_ms = round(float(np.mean(values_ms)), 4)
            self.compute_median_ms = round(float(np.median(values_ms)), 4)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_FIRST_LINE_BYTES = 1 << 20


def _is_record_line(line: bytes, last: bool) -> bool:
    """Whether ``line`` is a vcompile record or, if it is the last line, one torn by a writer killed mid-record
    (a JSON object cut short that names a record's first field or the schema)."""
    try:
        data = json.loads(line)
    except ValueError:
        return last and line.startswith(b'{"') and (b'"model": "' in line or b'"vcompile.bench/' in line)
    return isinstance(data, dict) and str(data.get("schema", "")).startswith("vcompile.bench/")


def _not_a_results_file(path: Path) -> str | None:
    """Why vcompile must not append to ``path``, or None: it may if it is missing, empty, or a results file."""
    if path.exists() and not path.is_file():
        return f"{path} is not a regular file"
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        head = handle.read(_FIRST_LINE_BYTES)
    line, newline, _ = head.partition(b"\n")
    if not _is_record_line(line.strip(), last=not newline):
        return f"{path} is not a vcompile results file (its first line is not a vcompile record)"
    return None


def check_results_file(path: Path) -> None:
    """Refuse, before any work starts, a results path vcompile must not write: a file that is not a vcompile
    results file (it is never changed), or a place where no file can be written.

    Raises:
        VcompileError: one line that names the file and says what to do instead.
    """
    path = Path(path)
    problem = _not_a_results_file(path)
    if problem:
        raise VcompileError(f"refusing to append results to {problem}; give a new .jsonl file or an earlier "
                            "vcompile results file as --out")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VcompileError(f"cannot write results to {path} ({err.strerror}); choose a writable --out") from None
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise VcompileError(f"cannot write results to {path} (permission denied); choose a writable --out")


def _repair_torn_tail(fd: int, path: Path) -> None:
    """Cut an unfinished last line (a writer killed mid-record), after saving it aside in ``<file>.torn``, so
    that the next record starts on its own line. Called with the file locked."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - _FIRST_LINE_BYTES)
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    keep = start + cut + 1 if cut >= 0 else start
    with open(path.with_name(path.name + ".torn"), "ab") as aside:
        aside.write(tail[cut + 1:] + b"\n")
    os.ftruncate(fd, keep)


def append_record(path: Path, record: Record) -> None:
    """Append one record as one JSON line and flush it to disk, so a crash loses nothing already measured.

    Only to a vcompile results file (or a new or empty one): anything else is refused unchanged. The line is
    written with one ``write`` under an exclusive lock on the file, so processes appending to the same file at once
    (two sweeps) never lose or interleave records.
    """
    path = Path(path)
    check_results_file(path)
    line = (record.to_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        problem = _not_a_results_file(path)  # again under the lock: another process may have written meanwhile
        if problem:
            raise VcompileError(f"refusing to append results to {problem}")
        _repair_torn_tail(fd, path)
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_records(path: Path) -> list[Record]:
    """Read a results file; a torn last line (a sweep killed mid-write) is ignored, other bad lines are errors."""
    path = Path(path)
    if not path.is_file():
        raise VcompileError(f"results file not found: {path}" if not path.exists() else
                            f"{path} is not a results file (it is a folder or a device)")
    records = []
    lines = path.read_bytes().splitlines()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            if number == len(lines):
                break  # torn by a writer killed mid-record
            raise VcompileError(f"{path}:{number} is not a JSON record; is this a vcompile results file?") from None
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("vcompile.bench/"):
            raise VcompileError(f"{path}:{number} is not a vcompile bench record (no 'schema' field)")
        try:
            records.append(Record.from_dict(data))
        except TypeError as err:
            raise VcompileError(f"{path}:{number} is a vcompile record with fields missing ({err})") from None
    return records
