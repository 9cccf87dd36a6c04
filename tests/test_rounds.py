"""Round mode: cases of one comparison take turns in long-lived worker processes (stand-in workers here; the CLI
tests run real ones)."""

from __future__ import annotations

import json
import sys

import pytest

from vcompile.bench import sweep
from vcompile.bench.case import CaseSpec
from vcompile.bench.records import read_records

# A worker that speaks the protocol of `vcompile.bench.case.worker` without a model: each turn's runs take 1 ms
# (reported as 1.0 plus the round), every turn is logged to LOG, and the model named in CRASH dies on its
# CRASH_TURN-th turn.
FAKE = r"""
import json, os, signal, sys
case = json.loads(sys.stdin.readline())
label = f"{case['model']}/{case['runtime']}/{case['mode']}"
print("READY", flush=True)
times, turn = [], 0
for line in sys.stdin:
    if line.startswith("RUN "):
        turn += 1
        with open(os.environ["LOG"], "a") as log:
            log.write(f"{label}\n")
        if case["model"] == os.environ.get("CRASH") and turn == int(os.environ["CRASH_TURN"]):
            os.kill(os.getpid(), signal.SIGSEGV)
        new = [1.0 + turn] * int(line.split()[1])
        times += new
        print("TIMES " + json.dumps(new), flush=True)
    elif line.strip() == "END":
        break
record = {"model": case["model"], "runtime": case["runtime"], "mode": case["mode"], "status": "ok",
          "precision": "fp32", "batch": 1, "input_shape": [1, 3, 4, 64, 64], "device": "cpu", "threads": 1,
          "warmup": case["warmup"], "iters": case["iters"], "latencies_ms": times, "iters_timed": len(times)}
print("RECORD " + json.dumps(record), flush=True)
"""

BASE = CaseSpec(model="", runtime="torch", mode="single", tiny=True, iters=8, warmup=0, rounds=4)
MODELS = ["x3d-xs", "movinet-a0", "vtn-eff"]


@pytest.fixture
def fake_workers(monkeypatch, tmp_path):
    log = tmp_path / "turns.log"
    monkeypatch.setattr(sweep, "WORKER_COMMAND", [sys.executable, "-c", FAKE])
    monkeypatch.setenv("LOG", str(log))
    return log


def _cases(models=MODELS):
    return sweep.plan_cases(models, ["torch"], ["single"], BASE)


def test_cases_take_turns_in_shuffled_recorded_orders(fake_workers):
    records = sweep.run_rounds(_cases(), rounds=4, seed=3)
    assert [r.model for r in records] == MODELS and all(r.status == "ok" for r in records)
    orders = records[0].round_orders
    assert all(r.round_orders == orders and r.rounds == 4 and r.round_seed == 3 for r in records)
    turns = fake_workers.read_text().split()
    assert [turns[i:i + 3] for i in range(0, 12, 3)] == orders  # each round: every case once, in that order
    assert all(sorted(order) == sorted(f"{m}/torch/single" for m in MODELS) for order in orders)
    assert len({tuple(order) for order in orders}) > 1  # shuffled, not one fixed order
    for record in records:  # iters split over the rounds: 2 runs a turn, each tagged with its round
        assert record.sample_rounds == [0, 0, 1, 1, 2, 2, 3, 3] and record.iters_timed == 8
    fake_workers.unlink()
    again = sweep.run_rounds(_cases(), rounds=4, seed=3)
    assert again[0].round_orders == orders  # the seed fixes the orders


def test_a_worker_that_crashes_mid_round_is_a_record_and_the_others_finish(fake_workers, monkeypatch):
    monkeypatch.setenv("CRASH", "movinet-a0")
    monkeypatch.setenv("CRASH_TURN", "2")
    records = {r.model: r for r in sweep.run_rounds(_cases(), rounds=4, seed=0)}
    crashed = records["movinet-a0"]
    assert crashed.status == "crashed" and "SIGSEGV in round 2 of 4" in crashed.message
    assert crashed.latencies_ms == [2.0, 2.0] and crashed.sample_rounds == [0, 0]  # what it timed before dying
    assert all(records[m].status == "ok" and records[m].iters_timed == 8 for m in ("x3d-xs", "vtn-eff"))
    orders = crashed.round_orders
    assert all("movinet-a0/torch/single" not in order for order in orders[2:])  # no turns after its death


def test_comparisons_are_one_device_and_mode_cut_between_models():
    cases = sweep.plan_cases(MODELS, ["torch", "onnxruntime"], ["single", "batch"], BASE)
    groups = sweep.comparison_groups(cases, max_workers=4)
    assert [[(c.model, c.mode) for c in g] for g in groups] == [
        [("x3d-xs", "single")] * 2 + [("movinet-a0", "single")] * 2, [("vtn-eff", "single")] * 2,
        [("x3d-xs", "batch")] * 2 + [("movinet-a0", "batch")] * 2, [("vtn-eff", "batch")] * 2]


def test_a_killed_round_sweep_resumes_without_losing_or_duplicating(fake_workers, tmp_path):
    out = tmp_path / "results.jsonl"
    cases = _cases()
    first, _ = sweep.run_sweep(cases[:2], out)
    assert [r.sample_rounds for r in first] == [[0, 0, 1, 1, 2, 2, 3, 3]] * 2
    with open(out, "a") as handle:  # killed while the next comparison was writing its first record
        handle.write('{"schema": "vcompile.bench/1", "model": "vtn')
    records, skipped = sweep.run_sweep(cases, out, resume=True)
    assert skipped == 2 and [r.model for r in records] == ["vtn-eff"]
    assert [r.model for r in read_records(out)] == MODELS
    assert json.loads(cases[0].settings_key())["rounds"] == 4  # a round record is not taken for a sequential one
