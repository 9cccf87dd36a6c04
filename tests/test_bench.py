"""The benchmark harness: statistics, records, isolation of crashing and hanging cases, resume."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from vcompile.bench import sweep
from vcompile.bench.case import CaseSpec, case_precision
from vcompile.bench.records import LatencyStats, Record, append_record, read_records
from vcompile.errors import VcompileError
from vcompile.runtimes import precision as prec

TINY = CaseSpec(model="movinet-a0", runtime="torch", mode="single", warmup=1, iters=3, tiny=True, threads=1)


def test_latency_stats_match_numpy():
    values = list(np.random.default_rng(0).gamma(4.0, 3.0, size=101))
    stats = LatencyStats.from_values(values)
    assert stats.mean_ms == pytest.approx(np.mean(values))
    assert stats.median_ms == pytest.approx(np.median(values))
    assert stats.p90_ms == pytest.approx(np.percentile(values, 90))
    assert stats.p99_ms == pytest.approx(np.percentile(values, 99))
    assert stats.std_ms == pytest.approx(np.std(values, ddof=1))
    assert stats.cv == pytest.approx(np.std(values, ddof=1) / np.mean(values))


def test_amp_is_fp16_on_cuda_and_fp32_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, ",".join(prec.BF16_FLAGS))
    assert case_precision(TINY).precision == "fp32"
    assert case_precision(CaseSpec(model="x3d-xs", runtime="torch", mode="single", device="cuda")).precision == "fp16"
    assert case_precision(CaseSpec(model="x3d-xs", runtime="torch", mode="train", device="cuda",
                                   precision="bf16")).precision == "bf16"
    assert case_precision(CaseSpec(model="x3d-xs", runtime="executorch", mode="mobile")).precision == "fp32"


def test_plan_follows_the_protocol():
    cases = sweep.plan_cases(["x3d-xs"], ["torch", "ptl"], ["train", "single", "mobile"], TINY)
    assert [(c.runtime, c.mode) for c in cases] == [("torch", "train"), ("torch", "single"), ("ptl", "mobile")]


def test_a_case_measures_in_its_own_process(tmp_path, monkeypatch):
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, ",".join(prec.BF16_FLAGS))  # amp is then fp32 on any CPU
    record = sweep.run_case_isolated(TINY, timeout_s=300)
    assert record.status == "ok", record.message
    assert record.iters_timed == 3 and len(record.latencies_ms) == 3
    assert record.mean_ms == pytest.approx(np.mean(record.latencies_ms), rel=1e-3)
    assert record.precision == "fp32" and record.requested_precision == "amp"
    reason = record.precision_reason
    assert reason.startswith("amp on a CPU: this CPU has no native bf16") and "so fp32" in reason
    assert record.env["cpu"]["flags_hidden"] == ",".join(prec.BF16_FLAGS)
    assert record.input_shape == [1, 3, 4, 64, 64] and record.params > 0
    assert record.peak_host_mb > 100 and record.env["packages"]["torch"]
    assert record.first_run_ms is not None and record.first_run_ms > 0  # the first call, outside the timed runs
    assert record.runtime_settings["intra_op_threads"] == "1" and "inter_op_threads" in record.runtime_settings
    # end to end (latencies_ms) and compute only, a fifth as many runs, as separate fields
    assert record.compute_kind == "compute only" and len(record.compute_latencies_ms) == 1
    assert record.compute_median_ms == pytest.approx(record.compute_latencies_ms[0])


def test_budget_stops_early_and_says_so():
    record = sweep.run_case_isolated(
        CaseSpec(**{**TINY.__dict__, "iters": 10_000, "warmup": 0, "budget_s": 0.5}), timeout_s=300)
    assert record.status == "ok" and 1 <= record.iters_timed < 10_000
    assert "time budget of 0.5 s reached" in record.message


@pytest.mark.parametrize(("script", "status", "message"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed", "SIGSEGV"),
    ("import time; time.sleep(60)", "timeout", "no result after 2 s"),
    ("import sys; print('boom', file=sys.stderr); sys.exit(3)", "crashed", "exited with status 3: boom"),
    # A SIGKILL is an out-of-memory kill only if the cgroup's OOM killer counted one (tests/test_reliability.py).
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "crashed", "died with SIGKILL"),
])
def test_dying_cases_become_records(monkeypatch, script, status, message):
    monkeypatch.setattr(sweep, "CASE_COMMAND", [sys.executable, "-c", script])
    record = sweep.run_case_isolated(TINY, timeout_s=2)
    assert record.status == status and message in record.message
    assert record.settings_key == TINY.settings_key()


def test_a_killed_sweep_resumes_without_losing_or_duplicating(tmp_path, monkeypatch):
    out = tmp_path / "results.jsonl"
    cases = sweep.plan_cases(["movinet-a0", "x3d-xs"], ["torch"], ["single"], TINY)
    first, _ = sweep.run_sweep(cases[:1], out)
    with open(out, "a") as handle:  # the sweep was killed while writing the next record
        handle.write('{"schema": "vcompile.bench/1", "model": "x3d')
    records, skipped = sweep.run_sweep(cases, out, resume=True)
    assert skipped == 1 and [r.model for r in records] == ["x3d-xs"]
    assert [r.model for r in read_records(out)] == ["movinet-a0", "x3d-xs"]
    again, skipped = sweep.run_sweep(cases, out, resume=True)
    assert again == [] and skipped == 2


def test_a_case_can_be_timed_in_several_processes(tmp_path):
    out = tmp_path / "results.jsonl"
    case = CaseSpec(**{**TINY.__dict__, "processes": 2})
    (record,), _ = sweep.run_sweep([case], out)
    assert record.status == "ok" and record.iters_timed == 6 and len(record.process_means_ms) == 2
    halves = (record.latencies_ms[:3], record.latencies_ms[3:])
    assert record.process_means_ms == pytest.approx([np.mean(h) for h in halves], rel=1e-3)
    assert record.mean_ms == pytest.approx(np.mean(record.latencies_ms), rel=1e-3)
    assert read_records(out)[0].process_means_ms == record.process_means_ms
    # one process keeps the settings key of records written before the option existed
    assert "processes" not in json.loads(TINY.settings_key()) and case.settings_key() != TINY.settings_key()


def test_records_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "r.jsonl"
    record = Record(model="x3d-xs", runtime="torch", mode="single", status="ok", precision="fp32", batch=1,
                    input_shape=[1, 3, 16, 224, 224], device="cpu", threads=2, warmup=1, iters=2)
    record.set_latencies([2.0, 4.0])
    append_record(path, record)
    (back,) = read_records(path)
    assert back == record and back.mean_ms == 3.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(VcompileError, match="not a vcompile bench record"):
        read_records(bad)
    with pytest.raises(VcompileError, match="results file not found"):
        read_records(tmp_path / "none.jsonl")


def test_peak_host_memory_is_the_case_process_own_not_inherited_from_the_sweep():
    import subprocess
    import sys

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this process, which starts the child as the sweep does
    code = ("import resource; from vcompile.bench.case import _peak_host_mb; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _peak_host_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split()
    inherited, own = float(out[0]), float(out[1])
    assert ballast.sum() > 0 and own < inherited - 300  # ru_maxrss kept the parent's size across fork and exec
