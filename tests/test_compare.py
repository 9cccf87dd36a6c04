"""`vcompile compare BASE NEW`: a regression gate over two results files (records written here, no model runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vcompile.bench.records import Record, append_record


def _write(path, scale: float, seed: int, threads: int = 2, models=("x3d-xs", "movinet-a0")):
    rng = np.random.default_rng(seed)
    for model in models:
        record = Record(model=model, runtime="torch", mode="single", status="ok", precision="fp32", batch=1,
                        input_shape=[1, 3, 4, 64, 64], device="cpu", threads=threads, warmup=2, iters=40)
        record.set_latencies(list(scale * rng.normal(10.0, 0.3, 40)))
        append_record(path, record)
    return path


@pytest.fixture
def runs(tmp_path):
    return {"base": _write(tmp_path / "base.jsonl", 1.0, 0), "again": _write(tmp_path / "again.jsonl", 1.0, 1),
            "slower": _write(tmp_path / "slower.jsonl", 1.3, 2, threads=1)}


def test_two_runs_of_the_same_thing_pass(cli, runs):
    result = cli("compare", str(runs["base"]), str(runs["again"]))
    assert result.returncode == 0, result.stderr
    assert "2 case(s) compared: 0 regression(s), 0 improvement(s), 2 without a significant change" in result.stdout


def test_a_slower_run_is_a_regression_and_fails(cli, runs, tmp_path):
    out = tmp_path / "compare.json"
    # the slower run used 1 thread instead of 2: cases match by what was measured, not by the settings
    result = cli("compare", str(runs["base"]), str(runs["slower"]), "--format", "json", "--out", str(out))
    assert result.returncode == 1, result.stderr
    report = json.loads(out.read_text())
    assert report["regressions"] == 2 and all(c["verdict"] == "regression" for c in report["changes"])
    assert all(1.25 < c["ratio"]["low"] <= c["ratio"]["value"] <= c["ratio"]["high"] < 1.35 for c in report["changes"])
    markdown = cli("compare", str(runs["base"]), str(runs["slower"]), "--threshold", "50%")
    assert markdown.returncode == 0 and "| no significant change |" in markdown.stdout  # within a 50% threshold
    faster = cli("compare", str(runs["slower"]), str(runs["base"]))
    assert faster.returncode == 0 and "0 regression(s), 2 improvement(s)" in faster.stdout


def test_cases_in_one_file_only_are_listed_not_compared(cli, runs, tmp_path):
    partial = _write(tmp_path / "partial.jsonl", 1.0, 3, models=("x3d-xs", "vtn-eff"))
    result = cli("compare", str(runs["base"]), str(partial))
    assert result.returncode == 0 and "1 case(s) compared" in result.stdout
    assert "Only in the base file (not compared): movinet-a0 / torch / single" in result.stdout
    assert "Only in the new file (not compared): vtn-eff / torch / single" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["{base}", "{missing}"], "error: results file not found: .*missing.jsonl"),
    (["{base}", "{again}", "--threshold", "five"], "error: --threshold 'five' is not a share; give it as 5% or 0.05"),
    (["{base}", "{other}"], "error: no case was measured ok in both"),
])
def test_bad_input_is_one_line(cli, runs, tmp_path, args, message):
    import re

    other = _write(tmp_path / "other.jsonl", 1.0, 4, models=("vtn-eff",))
    paths = {**runs, "missing": tmp_path / "missing.jsonl", "other": other}
    result = cli("compare", *[a.format(**paths) for a in args])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and re.match(message, lines[0]), result.stderr
