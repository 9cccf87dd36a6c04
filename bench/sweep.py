"""A benchmark sweep: every case in its own subprocess with a timeout, records appended one by one.

A case that crashes (a signal), hangs (the timeout) or runs out of memory becomes a record with that status and
the sweep goes on. ``resume`` skips cases already in the results file with the same settings.

Cases with ``rounds > 1`` are measured in rounds (`run_rounds`): the cases of one comparison (one device and mode,
at most `MAX_WORKERS` of them, whole models at a time) each keep a long-lived worker process, and a coordinator
gives them turns, every round in an order shuffled with a recorded seed, so that the slow drift of a shared
machine falls on every case alike instead of on whichever ran last.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
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

__all__ = ["plan_cases", "run_case_isolated", "run_rounds", "comparison_groups", "run_sweep", "DEFAULT_TIMEOUT_S",
           "MAX_WORKERS"]

DEFAULT_TIMEOUT_S = 1800.0
# The child that measures one case, and the one that takes turns; lists so that tests can stand in a process that
# crashes or hangs.
CASE_COMMAND = [sys.executable, "-m", "vcompile.bench.case"]
WORKER_COMMAND = [sys.executable, "-m", "vcompile.bench.case", "--worker"]
# Worker processes alive at once in round mode: each holds a model and its runtime's state (at batch 1 a few
# hundred MB; a 13-model x 6-runtime comparison at once would not fit in 24 GB).
MAX_WORKERS = 12


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
    stdout: list[str] = []
    readers = [threading.Thread(target=_pump_stderr, args=(proc.stderr, on_phase, last_lines), daemon=True),
               threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        proc.stdin.write(json.dumps(asdict(case)))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the child died before reading its case: its exit status says how
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
    return _death(case, proc.returncode, oom_kills, last_lines, time.perf_counter() - started)


def _pump_stderr(stream, on_phase: Callable[[str, int, int], None] | None, last_lines: list[str]) -> None:
    """Read a case process's stderr: ``PHASE name done total`` lines go to ``on_phase``, the last other lines are
    kept in ``last_lines`` (for the record of a process that dies)."""
    for line in stream:
        if line.startswith("PHASE ") and on_phase:
            parts = line.split()
            try:
                on_phase(" ".join(parts[1:-2]), int(parts[-2]), int(parts[-1]))
            except (ValueError, IndexError):
                pass
        elif line.strip():
            last_lines[:] = [*last_lines[-20:], line.rstrip()]


def _death(case: CaseSpec, returncode: int, oom_kills: int | None, last_lines: list[str], wall: float,
           when: str = "") -> Record:
    """The record of a case process that ended without reporting: killed by a signal (an out-of-memory kill when
    the cgroup's OOM counter moved since ``oom_kills``), or exited with a status (its last stderr line)."""
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        after = _oom_kills()
        if sig == "SIGKILL" and oom_kills is not None and after is not None and after > oom_kills:
            return _skeleton(case, "oom", "the case process was killed by the kernel's out-of-memory killer "
                                          f"(oom_kill count of this cgroup: {oom_kills} -> {after}){when}", wall)
        return _skeleton(case, "crashed", f"the case process died with {sig}{when}", wall)
    detail = next((ln for ln in reversed(last_lines) if ln.strip()), "no output")
    return _skeleton(case, "crashed", f"the case process exited with status {returncode}{when}: {detail[:300]}",
                     wall)


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


def _label(case: CaseSpec) -> str:
    return f"{case.model}/{case.runtime}/{case.mode}"


class _Worker:
    """One case's long-lived process in round mode (the protocol is `vcompile.bench.case.worker`)."""

    def __init__(self, case: CaseSpec, on_phase: Callable[[str, int, int], None] | None):
        self.case, self.started, self.oom_kills = case, time.perf_counter(), _oom_kills()
        self.samples: list[float] = []
        self.sample_rounds: list[int] = []
        self.record: Record | None = None  # set once the case is over, however it ended
        self.proc = subprocess.Popen(WORKER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     env={**os.environ, PARENT_ENV: str(os.getpid())})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.last_lines: list[str] = []

        def pump_stdout() -> None:
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)  # end of output: the process is gone

        threading.Thread(target=pump_stdout, daemon=True).start()
        threading.Thread(target=_pump_stderr, args=(self.proc.stderr, on_phase, self.last_lines), daemon=True).start()
        self.send(json.dumps(asdict(case)))

    @property
    def live(self) -> bool:
        return self.record is None

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the process is gone; `answer` finds out how

    def answer(self, timeout_s: float, when: str) -> tuple[str, str]:
        """The worker's next line as (word, rest): READY, TIMES or RECORD. Anything else ends the case with the
        record of how it ended (``when`` says at which point), returned as ("", "")."""
        deadline = time.perf_counter() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self.kill()
                self._end(_skeleton(self.case, "timeout", f"no answer after {timeout_s:g} s{when}; the case was "
                                                          "killed", self._wall()))
                return "", ""
            if line is None:
                self.proc.wait()
                self._end(_death(self.case, self.proc.returncode, self.oom_kills, self.last_lines, self._wall(),
                                 when))
                return "", ""
            word, _, rest = line.partition(" ")
            if word == "RECORD":
                self._end(Record.from_dict(json.loads(rest)))
                return word, rest
            if word in ("READY", "TIMES"):
                return word, rest

    def finish(self, timeout_s: float) -> None:
        """Ask for the record (every timed run so far) and let the process end."""
        if self.live:
            self.send("END")
            self.answer(timeout_s, " while writing its record")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def _wall(self) -> float:
        return time.perf_counter() - self.started

    def _end(self, record: Record) -> None:
        if self.samples and record.status != "ok":  # keep what was timed before the case died
            record.set_latencies(self.samples)
            record.sample_rounds = list(self.sample_rounds)
        self.record = record


def run_rounds(cases: list[CaseSpec], rounds: int, *, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S,
               on_start: Callable[[int, CaseSpec], None] | None = None,
               on_phase: Callable[[str, int, int], None] | None = None,
               on_turn: Callable[[int, CaseSpec], None] | None = None) -> list[Record]:
    """Measure ``cases`` side by side: each in its own long-lived process, prepared one at a time (build, load,
    first run, warm-up), then ``rounds`` rounds in which every live case makes ``ceil(iters / rounds)`` timed
    runs, in an order shuffled per round (``random.Random(seed)``; the orders are on every record). A case that
    crashes, hangs (``timeout_s`` per turn) or fails becomes its record and the others go on. Returns one record
    per case, in the order of ``cases``; each has ``sample_rounds``, the round of each of its timed runs."""
    rng = random.Random(seed)
    workers: list[_Worker] = []
    for index, case in enumerate(cases):
        if on_start:
            on_start(index, case)
        worker = _Worker(case, on_phase)
        workers.append(worker)
        worker.answer(timeout_s, " while preparing")  # READY, or the record of why it cannot run
    orders: list[list[str]] = []
    for round_index in range(rounds):
        order = [w for w in workers if w.live]
        rng.shuffle(order)
        orders.append([_label(w.case) for w in order])
        for worker in order:
            if on_turn:
                on_turn(round_index, worker.case)
            worker.send(f"RUN {math.ceil(worker.case.iters / rounds)}")
            word, rest = worker.answer(timeout_s, f" in round {round_index + 1} of {rounds}")
            if word != "TIMES":
                continue
            times = json.loads(rest)
            worker.samples += times
            worker.sample_rounds += [round_index] * len(times)
            if not times:  # the runtime failed on this turn: its record says why
                worker.finish(timeout_s)
    for worker in workers:
        worker.finish(timeout_s)
    records = []
    for worker in workers:
        record = worker.record
        record.settings_key = worker.case.settings_key()  # the case's identity, whatever the worker wrote
        if record.status == "ok":
            record.sample_rounds = list(worker.sample_rounds)
        record.rounds, record.round_seed, record.round_orders = rounds, seed, orders
        records.append(record)
    return records


def comparison_groups(cases: list[CaseSpec], max_workers: int = MAX_WORKERS) -> list[list[CaseSpec]]:
    """The cases measured side by side in rounds: those of one device and mode, in the sweep's order, cut between
    models so that at most ``max_workers`` run at once (a model with more cases than that is a group alone)."""
    groups: list[list[CaseSpec]] = []
    by_kind: dict[tuple[str, str], list[list[CaseSpec]]] = {}
    for case in cases:  # the cases of each model, per device and mode
        models = by_kind.setdefault((case.device, case.mode), [])
        if not models or models[-1][0].model != case.model:
            models.append([])
        models[-1].append(case)
    for models in by_kind.values():
        current: list[CaseSpec] = []
        for model_cases in models:
            if current and len(current) + len(model_cases) > max_workers:
                groups.append(current)
                current = []
            current += model_cases
        groups.append(current)
    return groups


def run_sweep(cases: list[CaseSpec], out: Path, *, resume: bool = False, resume_failed: bool = True,
              timeout_s: float = DEFAULT_TIMEOUT_S,
              on_start: Callable[[int, CaseSpec], None] | None = None,
              on_phase: Callable[[str, int, int], None] | None = None,
              on_record: Callable[[Record], None] | None = None,
              on_turn: Callable[[int, CaseSpec], None] | None = None) -> tuple[list[Record], int]:
    """Run ``cases`` one by one, appending each record to ``out`` as soon as it exists.

    Cases with ``rounds > 1`` are measured side by side in their comparison groups (`comparison_groups`,
    `run_rounds`), each group's records appended when it ends; ``on_turn(round, case)`` is called at every turn.

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

    def keep(record: Record) -> None:
        append_record(out, record)
        records.append(record)
        if on_record:
            on_record(record)

    in_rounds = [c for c in todo if c.rounds > 1]
    for index, case in enumerate(c for c in todo if c.rounds <= 1):
        if on_start:
            on_start(index, case)
        keep(_build(case, timeout_s, on_phase) or _measure(case, timeout_s, on_phase))
    started = len(todo) - len(in_rounds)
    for group in comparison_groups(in_rounds):
        failed = {}
        for case in group:  # every artifact first, each in a process of its own
            if on_start:
                on_start(started, case)
            failed[case] = _build(case, timeout_s, on_phase)
        ready = [c for c in group if failed[c] is None]
        measured = dict(zip(ready, run_rounds(ready, group[0].rounds, seed=_round_seed(group), timeout_s=timeout_s,
                                              on_phase=on_phase, on_turn=on_turn)))
        for case in group:  # records in the sweep's order, once the whole comparison is over
            keep(failed[case] or measured[case])
        started += len(group)
    return records, len(cases) - len(todo)


def _round_seed(group: list[CaseSpec]) -> int:
    """The seed of a comparison's turn orders: the cases' seed, so that a re-run shuffles the same way."""
    return group[0].seed


def _build(case: CaseSpec, timeout_s: float, on_phase: Callable[[str, int, int], None] | None) -> Record | None:
    """Build the case's artifact in a process of its own (so the measured process's peak memory is the runtime's
    alone); the record of the failure, or None when it built (or needs no artifact)."""
    if RUNTIMES[case.runtime].target is None or case.mode == "train":
        return None
    built = run_case_isolated(replace(case, build_only=True), timeout_s, on_phase)
    return None if built.status == "ok" and built.message == "built" else built
