"""One benchmark case (model x runtime x mode), measured in the process that runs this module.

`vcompile.bench.sweep` starts ``python -m vcompile.bench.case`` once per case with the case as JSON on stdin, so
that a crash, a hang or an out-of-memory in one runtime is recorded and the sweep goes on. The child reports
its phase on stderr (``PHASE name done total``) and its record as the last stdout line (``RECORD {...}``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..check.parity import build_verified
from ..compile import BuildOptions, get_target
from ..data import example_input
from ..errors import VcompileError
from ..runtimes import RUNTIMES, load
from ..runtimes.precision import PrecisionError, Resolved, resolve_precision
from ..zoo import create_model, get_spec
from ..zoo.flops import model_cost
from .environment import environment, usable_cores
from .records import Record
from .timing import time_runs
from .train import TrainStep

__all__ = ["ModeSpec", "MODES", "CaseSpec", "requested_precision", "case_precision", "precision_for_record",
           "run_case"]


@dataclass(frozen=True)
class ModeSpec:
    """A mode of the paper's protocol: its batch, its precision and the runtimes it applies to."""

    batch: int
    precision: str  # "amp": mixed precision (fp16 on CUDA, bf16 on a CPU with native bf16, else fp32)
    runtimes: tuple[str, ...]
    what: str


MODES = {
    "train": ModeSpec(8, "amp", ("torch",), "one training step: forward, cross-entropy, backward, AdamW step"),
    "batch": ModeSpec(32, "amp", ("torch", "inductor", "onnxruntime", "openvino", "tensorrt", "executorch"),
                      "forward pass, batch 32"),
    "single": ModeSpec(1, "amp", ("torch", "inductor", "onnxruntime", "openvino", "tensorrt", "executorch"),
                       "forward pass, batch 1"),
    "mobile": ModeSpec(1, "fp32", ("executorch", "ptl", "coreml"), "forward pass, batch 1, fp32, mobile runtimes"),
}


@dataclass(frozen=True)
class CaseSpec:
    """Everything one case needs; it is also the identity used by ``--resume``."""

    model: str
    runtime: str
    mode: str
    device: str = "cpu"
    precision: str | None = None  # None: the mode's default
    batch: int | None = None  # None: the mode's default
    threads: int | None = None
    warmup: int = 10
    iters: int = 100
    budget_s: float | None = None
    seed: int = 0
    tiny: bool = False
    frames: int | None = None
    size: int | None = None
    out: str = "artifacts"
    build_only: bool = False  # only build the artifact into the cache (a separate process from the measurement)
    processes: int = 1  # fresh processes that each time `iters` runs (the sweep merges them into one record)
    rounds: int = 1  # > 1: the case takes turns with the others of its comparison, `iters` split over the rounds
    compute_iters: int | None = None  # compute-only timed runs (`Runner.bind`); None: a fifth of `iters`, at least 1

    def settings_key(self) -> str:
        skip = ("out", "budget_s", "build_only") + (("processes",) if self.processes == 1 else ()) + (
            ("rounds",) if self.rounds == 1 else ()) + (("compute_iters",) if self.compute_iters is None else ())
        keep = {k: v for k, v in asdict(self).items() if k not in skip}  # one process: the key of older records
        return json.dumps(keep, sort_keys=True)


def compute_iters(case: CaseSpec) -> int:
    """How many compute-only runs a case times (`CaseSpec.compute_iters`)."""
    return case.compute_iters if case.compute_iters is not None else max(1, math.ceil(case.iters / 5))


def requested_precision(case: CaseSpec) -> str:
    """What the case asks for: its own precision, else its mode's (``amp`` for the paper's desktop modes)."""
    return case.precision or MODES[case.mode].precision


def case_precision(case: CaseSpec) -> Resolved:
    """The precision a case runs in on its device and runtime, and why (`vcompile.runtimes.precision`).

    Raises:
        PrecisionError: the runtime cannot run the precision asked for, or bf16 on a CPU without native bf16.
    """
    return resolve_precision(requested_precision(case), case.device, case.runtime, RUNTIMES[case.runtime].runs)


def precision_for_record(case: CaseSpec) -> tuple[Resolved, PrecisionError | None]:
    """`case_precision` for a record: what ran and why, or, when the request is refused, what was asked and the
    refusal (returned, for the caller to record)."""
    try:
        return case_precision(case), None
    except PrecisionError as err:
        return Resolved(requested_precision(case), str(err)), err


def _phase(name: str, done: int = 0, total: int = 0) -> None:
    print(f"PHASE {name} {done} {total}", file=sys.stderr, flush=True)


def _peak_host_mb() -> float:
    """This process's peak resident set. On Linux, the current program's own high-water mark (``VmHWM``): the
    ``ru_maxrss`` of a child carries over the RSS of the process it was forked from (the sweep, with torch
    loaded), which put a floor of several hundred MB under every case's figure."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(usage / (2**20 if sys.platform == "darwin" else 2**10), 1)


def run_case(case: CaseSpec):
    """Measure one case in this process and return its `Record` (errors become records, not exceptions)."""
    return _Session(case).run()


class _Session:
    """One case in this process: `start` prepares it (build, load, first run, warm-up), `timed` makes timed runs
    (once, or once per round when a coordinator sends turns), `close` completes the record. A failure at any point
    becomes the record's status and message, never an exception."""

    def __init__(self, case: CaseSpec):
        self.case, self.started = case, time.perf_counter()
        self.step, self.cuda, self.latencies = None, False, []
        self.compute, self.compute_latencies = None, []
        self.record = self._start()

    def run(self) -> Record:
        if self.step is not None:
            self.timed(self.case.iters, warmup=self.case.warmup, budget_s=self.case.budget_s,
                       compute=compute_iters(self.case))
        return self.close()

    def timed(self, iters: int, warmup: int = 0, budget_s: float | None = None, compute: int = 0) -> list[float]:
        """``warmup`` untimed and up to ``iters`` timed runs end to end, then ``compute`` compute-only runs (after
        one untimed, the first time); returns this turn's end-to-end latencies (ms)."""
        case, record = self.case, self.record
        try:
            _phase("measure", 0, iters)
            runs = time_runs(self.step, warmup=warmup, iters=iters, budget_s=budget_s, cuda=self.cuda,
                             on_progress=lambda phase, done, total: _phase(phase, done, total))
            if compute and self.compute is not None:
                _phase("compute only", 0, compute)
                first = not self.compute_latencies
                self.compute_latencies += time_runs(self.compute, warmup=int(first), iters=compute,
                                                    cuda=self.cuda).latencies_ms
        except Exception as err:  # noqa: BLE001 - recorded, like a failure while preparing
            self._failed(err)
            return []
        self.latencies += runs.latencies_ms
        record.status = "ok"
        if runs.stopped_by_budget:
            record.message = (f"time budget of {case.budget_s:g} s reached: {runs.warmup_done} of {case.warmup} "
                              f"warm-up and {len(runs.latencies_ms)} of {case.iters} timed runs")
        return runs.latencies_ms

    def _start(self) -> Record:
        case = self.case
        mode = MODES[case.mode]
        resolved, refusal = precision_for_record(case)
        precision = resolved.precision
        batch = case.batch or mode.batch
        if case.threads:
            torch.set_num_threads(case.threads)
        spec = get_spec(case.model)
        cost = model_cost(spec.name, batch=batch, tiny=case.tiny, frames=case.frames, size=case.size)
        threads = (case.threads or torch.get_num_threads()) if RUNTIMES[case.runtime].thread_control else None
        record = Record(model=spec.name, runtime=case.runtime, mode=case.mode, status="error", precision=precision,
                        batch=batch, input_shape=list(cost.input_shape), device=case.device,
                        threads=threads, warmup=case.warmup, iters=case.iters,
                        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        requested_precision=requested_precision(case), precision_reason=resolved.reason,
                        params=cost.params,
                        gflops=round(cost.flops / 1e9 / batch, 3), gmacs=round(cost.macs / 1e9 / batch, 3),
                        budget_s=case.budget_s, tiny=case.tiny, settings_key=case.settings_key(), env=environment())
        self.record = record
        if case.mode == "mobile" and case.device == "cpu":
            record.label = "mobile CPU proxy (this machine's CPU)"
        try:
            if refusal is not None:  # a request that cannot run as asked is refused here, in one line
                raise refusal
            if case.build_only:
                _build_artifact(case, precision, batch)
                record.status, record.message = "ok", "built"
                return record
            prepared = _prepare(case, precision, batch, cost.input_shape)
            timing, record.target, record.artifact, record.precision, record.runtime_settings, \
                record.artifact_check = prepared
            step, self.compute, record.compute_kind = timing.step, timing.compute, timing.compute_kind
            self.cuda = case.device.startswith("cuda")
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            _phase("first run")
            first = time.perf_counter()
            step()  # lazy set-up and compilation (Inductor) happen here, never inside the timed runs
            if self.cuda:
                torch.cuda.synchronize()
            record.first_run_ms = round((time.perf_counter() - first) * 1000, 3)
            self.step = step
        except Exception as err:  # noqa: BLE001 - see _failed
            self._failed(err)
        return record

    def _failed(self, err: BaseException) -> None:
        """Any failure of a runtime is a result, recorded in one line; the case takes no more turns."""
        record, self.step = self.record, None
        if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
            record.status = "oom"
            record.message = f"out of memory: {str(err).splitlines()[0][:200] if str(err) else ''}"
        elif isinstance(err, (_Unsupported, PrecisionError)):
            record.status, record.message = "unsupported", str(err)
        elif isinstance(err, VcompileError):
            record.status, record.message = "error", str(err)
        else:
            text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            oom = is_out_of_memory(err)  # an allocator's failure (onnxruntime, ExecuTorch, torch's CPU allocator)
            record.status = "oom" if oom else "error"
            record.message = f"{'out of memory: ' if oom else ''}{type(err).__name__}: {text}"

    def close(self) -> Record:
        """The record, with every timed run so far, peak memory, and notes."""
        case, record = self.case, self.record
        if self.latencies:
            record.set_latencies(self.latencies)
        if self.compute_latencies:
            record.set_compute_latencies(self.compute_latencies)
        if self.cuda and record.status == "ok":
            record.peak_device_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            record.peak_device_reserved_mb = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        cores = usable_cores()
        if case.threads and case.threads > cores:  # allowed, but the figure then measures threads sharing cores
            note = f"{case.threads} threads on {cores} usable cores: threads share cores"
            record.message = f"{record.message}; {note}" if record.message else note
        record.peak_host_mb = _peak_host_mb()
        record.wall_s = round(time.perf_counter() - self.started, 2)
        return record


# How allocators word a failed allocation when they raise something other than MemoryError: torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory"), onnxruntime ("Failed to allocate memory"), C++ std::bad_alloc,
# CUDA and cuDNN ("out of memory", "CUDNN_STATUS_ALLOC_FAILED"), ExecuTorch's MemoryAllocationFailed error.
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "failed to allocate memory", "bad_alloc",
              "out of memory", "alloc_failed", "memoryallocationfailed", "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception reports a failed memory allocation (so the case's status is ``oom``, not ``error``)."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower().replace("\u2019", "'")
    return any(word in text for word in _OOM_WORDS)


COMPUTE_ONLY = "compute only"
COMPUTE_AS_END_TO_END = "same as end to end: the runtime takes and returns host arrays itself"


@dataclass(frozen=True)
class _Timing:
    """What a case times: ``step`` end to end, and ``compute`` (None for training) with the input already where
    the runtime computes; ``compute_kind`` goes on the record."""

    step: Callable[[], object]
    compute: Callable[[], object] | None
    compute_kind: str


class _Unsupported(Exception):
    """A case this runtime cannot run (mode or precision it does not support)."""


def _prepare(case: CaseSpec, precision: str, batch: int, shape: tuple[int, ...]):
    """Build what the case runs: (step, target, artifact path, precision that runs, the runtime's settings, the
    artifact's build-time check); ``step()`` is one timed unit."""
    info = RUNTIMES[case.runtime]
    if case.runtime not in MODES[case.mode].runtimes:
        raise _Unsupported(f"mode {case.mode} does not run on {case.runtime}; its runtimes are "
                           f"{', '.join(MODES[case.mode].runtimes)}")
    availability = info.probe()
    if not availability.can_run:
        raise _Unsupported(f"{case.runtime} cannot run here: {availability.detail}")
    clip = example_input(shape, case.seed + 1)
    if case.mode == "train":
        _phase("create model")
        model = create_model(case.model, seed=case.seed, tiny=case.tiny, frames=case.frames, size=case.size)
        step = TrainStep(model, clip, precision=precision, device=case.device)
        return _Timing(step, None, "a training step is timed end to end only"), None, None, precision, {}, None
    if info.target is None:
        _phase("create model")
        source = create_model(case.model, seed=case.seed, tiny=case.tiny, frames=case.frames, size=case.size)
        target, artifact_path, runs_in, check = None, None, precision, None
    else:
        source, runs_in = _build_artifact(case, precision, batch)
        target, artifact_path = source.target, str(source.file())
        check = _artifact_check(source.manifest.get("parity", {}))
    # Artifact runtimes run the artifact's own precision; a thread count goes only to runtimes that honour one.
    runner = load(source, case.runtime, device=case.device, precision=precision if info.target is None else None,
                  threads=case.threads if info.thread_control else None)
    _phase(f"load {case.runtime}")
    runner.activate()
    video = clip.numpy()
    compute, separate = runner.bind(video)
    if case.device.startswith("cuda"):
        torch.cuda.synchronize()

    def computed() -> None:
        compute()
        runner.synchronize()

    timing = _Timing(lambda: runner.infer(video), computed, COMPUTE_ONLY if separate else COMPUTE_AS_END_TO_END)
    return timing, target, artifact_path, runs_in, dict(runner.settings), check


def _artifact_check(parity: dict) -> dict:
    """The artifact's build-time check, for its record: fp32 parity or the accuracy gate, and how it went."""
    keys = ("status", "clips", "cosine", "top1", "top5", "max_abs", "reason")
    return {k: parity[k] for k in keys if k in parity}


def _build_artifact(case: CaseSpec, precision: str, batch: int):
    """The case's artifact from the cache (built and verified if missing) and the precision it runs in (the
    resolved ``precision``, which `case_precision` has checked the target builds)."""
    tgt = get_target(RUNTIMES[case.runtime].target)
    runs_in = precision
    _phase(f"build {tgt.name}")
    options = BuildOptions(precision=runs_in, batch=batch, seed=case.seed, tiny=case.tiny, frames=case.frames,
                           size=case.size)
    artifact = build_verified(case.model, tgt.name, options, out=case.out,
                              log=lambda stage: _phase(f"build {tgt.name}: {stage}"))
    return artifact, runs_in


PARENT_ENV = "VCOMPILE_SWEEP_PID"  # set by the sweep to its own pid: the case process dies with it
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """End this case process when the sweep that started it dies (killed included), so that no orphan goes on
    building into the cache or holding the CPU that the next measurement needs. On Linux the kernel does it
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread polls the parent id twice a second."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return
    parent_pid = int(parent)
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name and ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
        if os.getppid() != parent_pid:  # the sweep died before the request took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="vcompile-parent-watch").start()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker() -> None:
    """A case that takes turns (``--worker``): the case as one JSON line on stdin; once prepared (built, loaded,
    first run, warm-up) it says ``READY``, or ``RECORD {...}`` and exits if it could not be. Then each ``RUN n``
    line makes ``n`` timed runs, answered by ``TIMES [ms, ...]`` (empty when the runtime failed: the record says
    why); ``END``, or the end of stdin, answers ``RECORD {...}`` with every timed run. A time budget applies to
    each turn, in equal shares of ``case.budget_s`` over ``case.rounds``."""
    die_with_parent()
    case = CaseSpec(**json.loads(sys.stdin.readline()))
    session = _Session(case)
    if session.step is not None:
        session.timed(0, warmup=case.warmup)
    if session.step is None:
        _say("RECORD " + session.close().to_json())
        return
    _say("READY")
    turn_budget = case.budget_s / max(1, case.rounds) if case.budget_s else None
    turn_compute = math.ceil(compute_iters(case) / max(1, case.rounds))
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["RUN"] and len(command) == 2 and command[1].isdigit():
            times = (session.timed(int(command[1]), budget_s=turn_budget, compute=turn_compute)
                     if session.step is not None else [])
            _say("TIMES " + json.dumps([round(t, 4) for t in times]))
        elif command[:1] == ["END"]:
            break
    _say("RECORD " + session.close().to_json())


def main() -> None:
    """Child entry point: read a CaseSpec as JSON on stdin, print ``RECORD {...}`` on stdout (``--worker``: take
    turns, see `worker`)."""
    if "--worker" in sys.argv[1:]:
        worker()
        return
    die_with_parent()
    case = CaseSpec(**json.loads(sys.stdin.read()))
    _say("RECORD " + run_case(case).to_json())


if __name__ == "__main__":
    main()
