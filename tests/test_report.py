"""`vcompile report`: relative latencies, averages over devices, memory table, failures, plots, HTML, errors."""

from __future__ import annotations

import base64
import csv
import json
import re

import pytest

from vcompile.bench.records import Record, append_record
from vcompile.errors import VcompileError
from vcompile.report.documents import (
    Device,
    Series,
    average_over_devices,
    memory_table,
    relative_latencies,
    runtime_speedups,
    summary_points,
    write_report,
)
from vcompile.report.paper import PAPER_ACCURACY, normalised_accuracy

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GPU = Device("GPU", "NVIDIA H100 80GB HBM3")
CPU = Device("CPU", "Intel Xeon Gold 6338 (host-b)")
PROXY = Device("mobile CPU proxy", "Intel Xeon Gold 6338 (host-b)")
ENV_GPU = {"host": "host-a", "cpu": {"model": "AMD EPYC 9454"}, "gpus": [{"index": 0, "name": GPU.name,
           "driver": "550.54", "cuda": "12.8"}], "packages": {"torch": "2.14.1"}, "git_commit": "abc123"}
ENV_CPU = {"host": "host-b", "cpu": {"model": "Intel Xeon Gold 6338"}, "gpus": [], "packages": {"torch": "2.14.1"},
           "git_commit": "abc123"}

# mean latency in ms per (machine, mode): x3d-xs, mvit-s, vtn-eff, nl-r50 (None: out of memory)
MEANS = {
    ("gpu", "train"): (10.0, 30.0, 20.0, 40.0),
    ("gpu", "single"): (2.0, 4.0, 3.0, 8.0),
    ("cpu", "train"): (100.0, 200.0, 400.0, None),
    ("cpu", "single"): (50.0, 25.0, 100.0, 75.0),
    ("cpu", "mobile"): (30.0, 90.0, 60.0, None),
}
MODELS = ("x3d-xs", "mvit-s", "vtn-eff", "nl-r50")


def fake_record(model: str, machine: str, mode: str, mean_ms: float | None) -> Record:
    gpu = machine == "gpu" and mode != "mobile"
    record = Record(model=model, runtime="executorch" if mode == "mobile" else "torch", mode=mode,
                    status="ok" if mean_ms is not None else "oom", precision="fp16" if gpu else "fp32",
                    batch=8 if mode == "train" else 1, input_shape=[8 if mode == "train" else 1, 3, 16, 224, 224],
                    device="cuda" if gpu else "cpu", threads=2, warmup=10, iters=100,
                    requested_precision="fp32" if mode == "mobile" else "amp", params=1_000_000 * (1 + len(model)),
                    gmacs=float(1 + MODELS.index(model)), gflops=float(2 + 2 * MODELS.index(model)),
                    env=ENV_GPU if gpu else ENV_CPU,
                    label="mobile CPU proxy (this machine's CPU)" if mode == "mobile" else "")
    if mean_ms is None:
        record.message = "out of memory: tried to allocate 2 GiB"
    else:
        record.set_latencies([mean_ms * 0.9, mean_ms, mean_ms * 1.1])
        record.peak_host_mb = 1000.0 + mean_ms
        record.peak_device_mb = 100.0 * mean_ms if gpu else None
    return record


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    files = {"gpu": folder / "results-gpu.jsonl", "cpu": folder / "results-cpu.jsonl"}
    for (machine, mode), means in MEANS.items():
        for model, mean_ms in zip(MODELS, means):
            append_record(files[machine], fake_record(model, machine, mode, mean_ms))
    return [files["gpu"], files["cpu"]]


@pytest.fixture(scope="module")
def records(results):
    from vcompile.bench.records import read_records

    return [r for path in results for r in read_records(path)]


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory):
    """A build grid and a parity file for the report to include."""
    folder = tmp_path_factory.mktemp("inputs")
    grid = folder / "build-grid.json"
    grid.write_text(json.dumps({"cells": [
        {"model": "x3d-xs", "target": "onnx", "status": "ok", "reason": ""},
        {"model": "mvit-s", "target": "onnx", "status": "failed", "reason": "export: unsupported op roll"},
        {"model": "x3d-xs", "target": "tensorrt", "status": "unavailable", "reason": "no NVIDIA GPU"}]}))
    parity = folder / "parity.json"
    parity.write_text(json.dumps([
        {"model": "x3d-xs", "runtime": "onnxruntime", "precision": "fp32", "status": "pass",
         "agreement": {"max_abs": 2.5e-6}, "message": ""},
        {"model": "vtn-eff", "runtime": "onnxruntime", "precision": "fp32", "status": "fail",
         "agreement": {"max_abs": 0.3}, "message": "cosine 0.98 below 0.9999"}]))
    return grid, parity


@pytest.fixture(scope="module")
def report(results, report_inputs, tmp_path_factory):
    grid, parity = report_inputs
    out = tmp_path_factory.mktemp("report")
    return out, write_report(results, out, build_grid=grid, parity=[parity])


def relative(rows, mode, device):
    return {r.model: r.relative for r in rows if r.series.mode == mode and r.device == device}


def test_relative_latency_is_the_ratio_to_the_fastest_model_per_device(records):
    rows = relative_latencies(records)
    assert relative(rows, "train", GPU) == pytest.approx({"x3d-xs": 1.0, "mvit-s": 3.0, "vtn-eff": 2.0, "nl-r50": 4.0})
    assert relative(rows, "train", CPU) == pytest.approx({"x3d-xs": 1.0, "mvit-s": 2.0, "vtn-eff": 4.0})
    assert relative(rows, "single", CPU) == pytest.approx({"x3d-xs": 2.0, "mvit-s": 1.0, "vtn-eff": 4.0, "nl-r50": 3.0})
    assert relative(rows, "mobile", PROXY) == pytest.approx({"x3d-xs": 1.0, "mvit-s": 3.0, "vtn-eff": 2.0})
    assert {r.series for r in rows if r.series.mode == "mobile"} == {Series("mobile", "executorch", "fp32")}
    gpu_single = {r.model: r for r in rows if r.series.mode == "single" and r.device == GPU}
    assert gpu_single["mvit-s"].mean_ms == pytest.approx(4.0) and gpu_single["mvit-s"].precision == "fp16"


def test_series_are_the_precision_that_ran_not_the_one_requested(records):
    # every record asked for amp: the GPU ran fp16, the CPU fp32, and they are two series, never averaged together
    averaged = average_over_devices(relative_latencies(records))
    averages = {(a.series.mode, a.series.setting, a.model): a for a in averaged}
    assert averages[("train", "fp16", "mvit-s")].relative == pytest.approx(3.0)
    assert averages[("train", "fp32", "mvit-s")].relative == pytest.approx(2.0)
    assert averages[("train", "fp16", "nl-r50")].devices == (GPU,)
    assert ("train", "fp32", "nl-r50") not in averages  # out of memory on the CPU machine
    assert averages[("single", "fp32", "nl-r50")].relative == pytest.approx(3.0)
    assert {a.series.setting for a in averages.values()} == {"fp16", "fp32"}


def test_averages_over_devices_say_how_many_devices(records):
    a100 = Device("GPU", "NVIDIA A100-SXM4-40GB")
    env = {**ENV_GPU, "gpus": [{**ENV_GPU["gpus"][0], "name": a100.name}]}
    second = []
    for model, mean_ms in zip(MODELS, (20.0, 50.0, 60.0, None)):  # train on a second GPU: nl-r50 out of memory
        record = fake_record(model, "gpu", "train", mean_ms)
        record.env = env
        second.append(record)
    averages = {(a.series.mode, a.model): a for a in average_over_devices(relative_latencies([*records, *second]))
                if a.series.setting == "fp16"}
    assert averages[("train", "mvit-s")].relative == pytest.approx((3.0 + 2.5) / 2)
    assert averages[("train", "vtn-eff")].relative == pytest.approx((2.0 + 3.0) / 2)
    assert averages[("train", "nl-r50")].relative == pytest.approx(4.0)
    assert averages[("train", "nl-r50")].devices == (GPU,)
    assert set(averages[("train", "mvit-s")].devices) == {GPU, a100}


def test_memory_table_has_the_paper_layout(records):
    table = memory_table(records)
    assert list(table) == [GPU, CPU]
    assert table[GPU]["mvit-s"] == {"train": (3000.0, "device"), "single": (400.0, "device")}
    assert table[CPU]["vtn-eff"] == {"train": (1400.0, "host"), "single": (1100.0, "host")}
    assert table[CPU]["nl-r50"]["train"] == "oom"
    assert "mobile" not in table[CPU]["x3d-xs"] and PROXY not in table


def test_summary_uses_paper_accuracy_and_torch_modes(records):
    points = {p.model: p for p in summary_points(average_over_devices(relative_latencies(records)), records)}
    assert "mvit-s" not in points  # the paper did not train MViT-S
    assert points["x3d-xs"].relative == pytest.approx((1.0 + 1.5) / 2)
    assert points["x3d-xs"].modes == ("train", "single")
    assert points["nl-r50"].relative == pytest.approx((4.0 + 3.5) / 2)
    assert points["x3d-xs"].accuracy == pytest.approx(normalised_accuracy("x3d-xs"))


def test_normalised_accuracy_is_min_max_per_dataset_then_averaged():
    ssv2 = (60.6 - 47.5) / (62.7 - 47.5)  # movinet-a2 between nl-r50 (lowest) and timesformer (highest)
    assert normalised_accuracy("movinet-a2") == pytest.approx((ssv2 + 1.0) / 2)  # best on EK100 action
    assert normalised_accuracy("nl-r50") == pytest.approx((0.0 + (28.5 - 25.9) / (34.4 - 25.9)) / 2)
    assert normalised_accuracy("mvit-s") is None
    assert normalised_accuracy("movinet-a2", ("k400",)) == pytest.approx(1.0)
    assert len(PAPER_ACCURACY) == 13 and PAPER_ACCURACY["movinet-a0"].from_k400


def test_report_files_and_csv(report):
    out, written = report
    pngs = sorted(name for name in written if name.endswith(".png"))
    assert pngs == ["flops-mobile.png", "flops-single.png", "flops-train.png", "relative-mobile-executorch-fp32.png",
                    "relative-single-torch-fp16.png", "relative-single-torch-fp32.png", "relative-train-torch-fp16.png",
                    "relative-train-torch-fp32.png", "speedup-intel-xeon-gold-6338-host-b-fp32.png", "summary.png"]
    for name in pngs:
        data = written[name].read_bytes()
        assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 5000
    with open(written["latency.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    mean_train = {(r["setting"], r["model"]): (float(r["relative_latency"]), int(r["devices"])) for r in rows
                  if r["mode"] == "train" and r["device"] == "mean over devices"}
    assert mean_train == {("fp16", "x3d-xs"): (1.0, 1), ("fp16", "mvit-s"): (3.0, 1), ("fp16", "vtn-eff"): (2.0, 1),
                          ("fp16", "nl-r50"): (4.0, 1), ("fp32", "x3d-xs"): (1.0, 1), ("fp32", "mvit-s"): (2.0, 1),
                          ("fp32", "vtn-eff"): (4.0, 1)}
    with open(written["memory.csv"], newline="") as handle:
        memory = {(r["device"], r["mode"], r["model"]): r for r in csv.DictReader(handle)}
    assert float(memory[(GPU.label, "train", "vtn-eff")]["peak_device_mb"]) == 2000.0


def test_runtime_speedups_compare_batch_1_runtimes_with_eager_on_the_same_machine(records):
    rows = runtime_speedups(records)
    # only the CPU has a runtime besides eager; mobile executorch is compared with eager single on that CPU
    assert {(r.machine, r.precision, r.column) for r in rows} == {(CPU.name, "fp32", "executorch · mobile")}
    speedups = {r.model: round(r.speedup, 3) for r in rows}
    assert speedups == {"x3d-xs": round(50 / 30, 3), "mvit-s": round(25 / 90, 3), "vtn-eff": round(100 / 60, 3)}


def test_markdown_lists_tables_failures_grids_and_environment(report):
    out, written = report
    text = written["report.md"].read_text()
    assert "### train · torch · fp16" in text and "### train · torch · fp32" in text and "· amp" not in text
    # single records, three runs each and measured apart: ratios of medians with independent bootstrap intervals
    assert "| mvit-s | attention-only | 3.00 | 1 of 1 | 3.00 [2.45-3.67] (30 ms) |" in text
    assert "| mvit-s | attention-only | 2.00 | 1 of 1 | 2.00 [1.64-2.44] (200 ms) |" in text
    assert "| CPU: Intel Xeon Gold 6338 (host-b) | train | torch | nl-r50 | oom | out of memory: tried" in text
    assert "| executorch | mobile" not in text and "| mobile | executorch | nl-r50 | oom |" in text
    assert "![relative latency, train · torch · fp16](relative-train-torch-fp16.png)" in text
    assert "| vtn-eff | 14000 | " not in text and "| mvit-s | attention-only | 3000 | - | 400 |" in text
    assert "| mvit-s | failed | - |" in text and "export: unsupported op roll" in text
    assert "pass 2.5e-06" in text and "cosine 0.98 below 0.9999" in text
    assert "abc123" in text and "550.54, 12.8" in text and "| torch | 2.14.1 | 2.14.1 |" in text
    assert "Left out (no accuracy in the paper): mvit-s." in text
    assert "Latency is the mean over the timed runs (10 warm-up and 100 timed runs per case, unless" in text
    assert "| mvit-s | attention-only | 25 | 90 (0.28x [0.23-0.34]) |" in text
    assert "| median speedup |  |  | 1.67x |" in text and "| slower than eager |  |  | 1 of 3 |" in text
    speedup_png = written["speedup-intel-xeon-gold-6338-host-b-fp32.png"]
    assert speedup_png.read_bytes().startswith(PNG_SIGNATURE) and f"]({speedup_png.name})" in text


def test_html_is_self_contained_and_deterministic(report, report_inputs, results, tmp_path):
    out, written = report
    page = written["report.html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 10 and all(base64.b64decode(i)[:8] == PNG_SIGNATURE for i in images)
    assert "src=\"http" not in page and ".png\"" not in page
    grid, parity = report_inputs
    again = write_report(results, tmp_path, build_grid=grid, parity=[parity])
    assert again["relative-train-torch-fp16.png"].read_bytes() == written["relative-train-torch-fp16.png"].read_bytes()
    assert again["latency.csv"].read_text() == written["latency.csv"].read_text()
    assert again["report.html"].read_text() == page  # the whole page, plots embedded, byte for byte


def test_bad_input_is_one_clear_error(tmp_path):
    failed = tmp_path / "failed.jsonl"
    append_record(failed, fake_record("x3d-xs", "cpu", "train", None))
    with pytest.raises(VcompileError, match=r"no 'ok' records in .*failed.jsonl \(1 oom\)"):
        write_report([failed], tmp_path / "out")
    with pytest.raises(VcompileError, match="results file not found"):
        write_report([tmp_path / "missing.jsonl"], tmp_path / "out")
    with pytest.raises(VcompileError, match="no results files"):
        write_report([], tmp_path / "out")
    good = tmp_path / "good.jsonl"
    append_record(good, fake_record("x3d-xs", "cpu", "train", 10.0))
    (tmp_path / "grid.json").write_text("{\"cells\": [{\"model\": \"x3d-xs\"}]}")
    with pytest.raises(VcompileError, match="is not a build grid"):
        write_report([good], tmp_path / "out", build_grid=tmp_path / "grid.json")
    assert not (tmp_path / "out").exists()


def test_a_runtime_whose_artifact_failed_its_check_is_never_a_deployment(records):
    failed = []
    for record in records:
        if record.runtime == "executorch" and record.model == "x3d-xs" and record.status == "ok":
            copy = Record.from_dict({**record.__dict__})
            copy.artifact_check = {"status": "fail", "reason": "cosine 0.9 below 0.99"}
            failed.append(copy)
    rows = runtime_speedups([r for r in records if not (r.runtime == "executorch" and r.model == "x3d-xs")] + failed)
    assert {r.column for r in rows if r.model == "x3d-xs"} == {"executorch (fails its check) · mobile"}
