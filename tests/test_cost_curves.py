"""Cost curves: latency and memory against clip size, from a `vcompile bench --frames ... --size ...` sweep."""

from __future__ import annotations

import json

import pytest

from vcompile.bench.records import Record, append_record, read_records
from vcompile.report.analysis import cost_curves, relative_latencies

CLIPS = [(8, 224), (16, 224), (32, 224), (16, 160)]
ENV = {"host": "h", "cpu": {"model": "test CPU"}, "gpus": []}


def _record(model: str, frames: int, size: int, mean_ms: float, peak_mb: float) -> Record:
    record = Record(model=model, runtime="torch", mode="single", status="ok", precision="fp32", batch=1,
                    input_shape=[1, 3, frames, size, size], device="cpu", threads=2, warmup=1, iters=3, env=ENV)
    record.set_latencies([mean_ms * 0.99, mean_ms, mean_ms * 1.01])
    record.peak_host_mb = peak_mb
    return record


@pytest.fixture
def sweep_records():
    records = []
    for frames, size in CLIPS:
        pixels = frames * size * size / (16 * 224 * 224)  # 1 at the default clip
        records.append(_record("x3d-xs", frames, size, 50 * pixels, 500 + 100 * pixels))  # linear
        records.append(_record("timesformer", frames, size, 80 * pixels**2, 900 * pixels**2))  # quadratic
    return records


def test_exponents_tell_linear_from_quadratic_models(sweep_records):
    curves = {c.model: c for c in cost_curves(sweep_records)}
    assert curves["x3d-xs"].latency_exponent == pytest.approx(1.0, abs=1e-6)
    assert curves["timesformer"].latency_exponent == pytest.approx(2.0, abs=1e-6)
    assert curves["timesformer"].memory_exponent == pytest.approx(2.0, abs=1e-6)
    assert 0 < curves["x3d-xs"].memory_exponent < 1  # a fixed part (weights, runtime) and a linear part
    assert [(f, s) for f, s, _, _ in curves["x3d-xs"].points] == [(8, 224), (16, 160), (16, 224), (32, 224)]


def test_relative_latency_is_never_averaged_over_clip_sizes(sweep_records):
    rows = relative_latencies(sweep_records)
    series = {r.series.title for r in rows}
    assert series == {"single · torch · fp32", "single · torch · fp32 · 8 frames x 224 px",
                      "single · torch · fp32 · 32 frames x 224 px", "single · torch · fp32 · 16 frames x 160 px"}
    default = {r.model: r.mean_ms for r in rows if r.series.clip == ""}
    assert default == pytest.approx({"x3d-xs": 50.0, "timesformer": 80.0})


def test_the_report_draws_the_cost_curves(sweep_records, tmp_path):
    from vcompile.report.documents import write_report

    results = tmp_path / "results.jsonl"
    for record in sweep_records:
        append_record(results, record)
    written = write_report([results], tmp_path / "report")
    text = written["report.md"].read_text()
    assert "## Cost curves: latency and memory against clip size" in text
    assert "| timesformer | attention-only | 2.00 | 2.00 |" in text and "| x3d-xs | baseline | 1.00 |" in text
    png = next(p for name, p in written.items() if name.startswith("cost-"))
    assert png.read_bytes().startswith(b"\x89PNG") and f"]({png.name})" in text


def test_bench_sweeps_clip_sizes_side_by_side(cli, tmp_path):
    out = tmp_path / "results.jsonl"
    result = cli("bench", "-m", "x3d-xs", "-r", "torch", "--mode", "single", "--tiny", "--frames", "4,8",
                 "--iters", "4", "--warmup", "1", "--threads", "1", "--out", str(out), "--artifacts",
                 str(tmp_path / "artifacts"))
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert [r.input_shape for r in records] == [[1, 3, 4, 64, 64], [1, 3, 8, 64, 64]]
    assert all(r.rounds == 5 and r.round_orders == records[0].round_orders for r in records)  # took turns
    assert json.loads(records[1].settings_key)["frames"] == 8
    bad = cli("bench", "-m", "x3d-xs", "--tiny", "--frames", "4,eight", "--out", str(out))
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "error: --frames '4,eight' is not a list of whole numbers; give it as 8,16,32"
