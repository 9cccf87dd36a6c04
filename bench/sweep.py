"""A benchmark sweep: every case in its own subprocess with a timeout, records appended one by one.

A case that crashes (a signal), hangs (the timeout) or runs out of memory becomes a record with that status and
the sweep goes on. ``resume`` skips cases already in the results file with the same settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from ..runtimes import RUNTIMES
from .case import MODES, PARENT_ENV, CaseSpec, precision_for_record, requested_precision
from .environment import environment
from .records import Record, append_record, check_results_file, read_records

__all__ = ["plan_cases", "run_case_isolated", "run_sweep", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 1800.0
# The child that measures one case; a list so that tests can stand in a process that crashes or hangs.
CASE_COMMAND = [sys.executable, "-m", "vcompile.bench.case"]


def plan_cases(models: Iterable[str], runtimes: Iterable[str], modes: Iterable[str], base: CaseSpec) -> list[CaseSpec]:
    """Every (model, runtime, mode) that the protocol defines, models outermost (one model's artifacts at a time)."""
    return [replace(base, model=model, runtime=runtime, mode=mode)
            for model in models for mode in modes for runtime in runtimes if runtime in MODES[mode].runtimes]


def _oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup, or None where that
    cannot be read: the only sign that a SIGKILL was an out-of-memory kill. Reads cgroup v2's ``memory.events`` or
    v1's ``memory.oom_control`` (the ``oom_kill`` line), at the cgroup's path or at the root a container sees."""
    try:
        entries = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    candidates = []
    for _, controllers, path in (e for e in entries if len(e) == 3):
        if controllers == "":  # cgroup v2
            candidates += [root / path.lstrip("/") / "memory.events", root / "memory.events"]
        elif "memory" in controllers.split(","):
            candidates += [root / "memory" / path.lstrip("/") / "memory.oom_control",
                           root / "memory" / "memory.oom_control"]
    for candidate in candidates:
        try:
            counts = dict(line.split() for line in candidate.read_text().splitlines() if len(line.split()) == 2)
        except OSError:
            continue
        if counts.get("oom_kill", "").isdigit():
            return int(counts["oom_kill"])
    return None


def _skeleton(case: CaseSpec, status: str, message: str, wall_s: float) -> Record:
    """A record for a case whose process died before it could report."""
    batch = case.batch or MODES[case.mode].batch
    resolved, _ = precision_for_record(case)
    return Record(model=case.model, runtime=case.runtime, mode=case.mode, status=status,
                  precision=resolved.precision, precision_reason=resolved.reason, batch=batch, input_shape=[],
                  device=case.device, threads=case.threads, warmup=case.warmup, iters=case.iters,
                  timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  requested_precision=requested_precision(case), message=message,
                  budget_s=case.budget_s, tiny=case.tiny, settings_key=case.settings_key(), env=environment(),
                  wall_s=round(wall_s, 2))


def run_case_isolated(case: CaseSpec, timeout_s: float = DEFAULT_TIMEOUT_S,
                      on_phase: Callable[[str, int, int], None] | None = None) -> Record:
    """Run one case in a fresh Python process; its death or hang becomes the record's status."""
    started = time.perf_counter()
    oom_kills = _oom_kills()
    proc = subprocess.Popen(CASE_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, PARENT_ENV: str(os.getpid())})
    last_lines: list[str] = []

    def pump_stderr() -> None:
        for line in proc.stderr:
            if line.startswith("PHASE ") and on_phase:
                parts = line.split()
                try:
                    on_phase(" ".join(parts[1:-2]), int(parts[-2]), int(parts[-1]))
                except (ValueError, IndexError):
                    pass
            elif line.strip():
                last_lines[:] = [*last_lines[-20:], line.rstrip()]

    stdout: list[str] = []
    readers = [threading.Thread(target=pump_stderr, daemon=True),
               threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True)]
    for reader in readers:
        reader.start()
    proc.stdin.write(json.dumps(asdict(case)))
    proc.stdin.close()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return _skeleton(case, "timeout", f"no result after {timeout_s:g} s; the case was killed",
                         time.perf_counter() - started)
    for reader in readers:
        reader.join(timeout=10)
    for line in reversed(stdout):
        if line.startswith("RECORD "):
            return Record.from_dict(json.loads(line[len("RECORD "):]))
    wall = time.perf_counter() - started
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        after = _oom_kills()
        if sig == "SIGKILL" and oom_kills is not None and after is not None and after > oom_kills:
            return _skeleton(case, "oom", "the case process was killed by the kernel's out-of-memory killer "
                                          f"(oom_kill count of this cgroup: {oom_kills} -> {after})", wall)
        return _skeleton(case, "crashed", f"the case process died with {sig}", wall)
    detail = next((ln for ln in reversed(last_lines) if ln.strip()), "no output")
    return _skeleton(case, "crashed", f"the case process exited with status {proc.returncode}: {detail[:300]}", wall)


def _measure(case: CaseSpec, timeout_s: float, on_phase: Callable[[str, int, int], None] | None) -> Record:
    """Time a case in ``case.processes`` fresh processes, one after the other, and merge them into one record.

    Latency can differ more between fresh processes than between runs of one process (where threads and memory
    land on the machine): on a 2-vCPU virtual machine, 6 processes of one eager loop gave means from 64 to 121 ms
    (docs/results/harness-vs-bare.md). The merged record holds every timed run of every process, with statistics
    over all of them, and each process's mean in ``process_means_ms``. A process that fails makes the record.
    """
    runs = []
    for _ in range(case.processes):
        record = run_case_isolated(case, timeout_s, on_phase)
        if record.status != "ok":
            return record
        runs.append(record)
    merged = runs[0]
    if len(runs) > 1:
        means = [r.mean_ms for r in runs]
        merged.set_latencies([ms for r in runs for ms in r.latencies_ms])
        merged.process_means_ms = means
        merged.peak_host_mb = max((r.peak_host_mb for r in runs if r.peak_host_mb is not None), default=None)
        merged.peak_device_mb = max((r.peak_device_mb for r in runs if r.peak_device_mb is not None), default=None)
        merged.wall_s = round(sum(r.wall_s or 0.0 for r in runs), 2)
        merged.message = "; ".join(dict.fromkeys(r.message for r in runs if r.message))
    return merged


def run_sweep(cases: list[CaseSpec], out: Path, *, resume: bool = False, resume_failed: bool = True,
              timeout_s: float = DEFAULT_TIMEOUT_S,
              on_start: Callable[[int, CaseSpec], None] | None = None,
              on_phase: Callable[[str, int, int], None] | None = None,
              on_record: Callable[[Record], None] | None = None) -> tuple[list[Record], int]:
    """Run ``cases`` one by one, appending each record to ``out`` as soon as it exists.

    Returns the new records and how many cases were skipped because ``out`` already had them (``resume``): a case
    is skipped when its last record there is ``ok``, or has any status when ``resume_failed`` is False. Without
    ``resume`` an existing file is appended to, never overwritten; a file that is not a vcompile results file, or
    cannot be written, is refused before any case runs.
    """
    check_results_file(out)
    last_status: dict[str, str] = {}
    if resume and out.exists():
        last_status = {r.settings_key: r.status for r in read_records(out)}  # later records win
    done = {key for key, status in last_status.items() if status == "ok" or not resume_failed}
    todo = [c for c in cases if c.settings_key() not in done]
    records = []
    for index, case in enumerate(todo):
        if on_start:
            on_start(index, case)
        record = None
        if RUNTIMES[case.runtime].target is not None and case.mode != "train":
            # Build in a process of its own, so the measured process's peak memory is the runtime's alone.
            built = run_case_isolated(replace(case, build_only=True), timeout_s, on_phase)
            if built.status != "ok" or built.message != "built":
                record = built
        record = record or _measure(case, timeout_s, on_phase)
        append_record(out, record)
        records.append(record)
        if on_record:
            on_record(record)
    return records, len(cases) - len(todo)
