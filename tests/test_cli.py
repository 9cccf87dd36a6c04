"""The command line, end to end in a subprocess: real output on good input, one clear line on bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest

from vcompile.zoo import get_spec, list_models


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_models_json_lists_every_model_with_paper_params(cli):
    result = cli("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(list_models())
    for name, row in rows.items():
        spec = get_spec(name)
        assert row["paper_name"] == spec.paper_name and row["category"] == spec.category
        assert isinstance(row["params"], int)
        assert abs(row["params"] / 1e6 - row["paper_params_m"]) / row["paper_params_m"] < 0.01
        assert row["input_shape"] == [1, 3, 16, 224, 224]
        assert row["gflops"] == pytest.approx(2 * row["gmacs"], rel=1e-3)
    # Reference compute at 16x224x224 (zoo-configs.md): ResNet-50 per frame is 65.4 GMACs.
    assert rows["tsm-r50"]["gmacs"] == pytest.approx(65.4, rel=0.01)


def test_models_csv_and_table(cli):
    result = cli("models", "vtn*", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in rows] == ["vtn-eff", "vtn-r50"]
    assert int(rows[1]["params"]) == 26_509_776
    table = cli("models", "tsm*")
    assert table.returncode == 0 and "TSM-R50" in table.stdout and "24.33" in table.stdout


def test_models_bad_format(cli):
    _assert_one_line_error(cli("models", "--format", "xml"), "'xml' is not one of", "--help")


def test_models_pattern_matching_nothing(cli):
    _assert_one_line_error(cli("models", "nothing-like-this*"), "no model matches")


def test_show_model_and_alias(cli):
    result = cli("show", "TSM_R50", "--tiny", "--format", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == "tsm-r50" and info["input_shape"] == [1, 3, 4, 64, 64]


def test_unknown_model_suggests_close_names(cli):
    _assert_one_line_error(cli("show", "tsm-r5"), "unknown model 'tsm-r5'", "did you mean tsm-r50")


def test_missing_weights_file(cli, tmp_path):
    _assert_one_line_error(cli("show", "tsm-r50", "--weights", str(tmp_path / "none.safetensors")),
                           "weights file not found")


def test_weights_that_do_not_fit(cli, tmp_path):
    import torch

    from vcompile.zoo import create_model

    path = tmp_path / "vtn.pt"
    torch.save(create_model("vtn-r50", tiny=True).state_dict(), path)
    _assert_one_line_error(cli("show", "tsm-r50", "--tiny", "--weights", str(path)), "does not fit tsm-r50",
                           "missing: fc.weight")
    ok = cli("show", "vtn-r50", "--tiny", "--weights", str(path))
    assert ok.returncode == 0 and "loads" in ok.stdout


def test_impossible_shape(cli):
    _assert_one_line_error(cli("show", "tsm-r50", "--size", "100"), "multiples of 32; got 100")


def test_doctor_reports_this_machine(cli):
    import platform

    import onnxruntime
    import torch

    result = cli("doctor", "--format", "json")
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["packages"]["torch"] == torch.__version__.split("+")[0]
    assert env["python"] == platform.python_version()
    assert env["cpu"]["usable_cores"] >= 1
    assert bool(env["gpus"]) == torch.cuda.is_available()
    runtimes = env["runtimes"]
    assert runtimes["onnxruntime"]["can_run"] and runtimes["onnxruntime"]["version"] == onnxruntime.__version__
    assert runtimes["torch"]["can_run"]
    assert runtimes["coreml"]["can_run"] == (platform.system() == "Darwin")
    if not torch.cuda.is_available():
        assert not runtimes["tensorrt"]["can_run"] and runtimes["tensorrt"]["detail"]
    table = cli("doctor")
    assert table.returncode == 0 and "onnxruntime" in table.stdout and "runtimes" in table.stdout


def test_every_command_has_help(cli):
    from vcompile.cli import cli as group

    commands = sorted(group.commands)
    assert {"models", "show", "build", "parity", "bench", "report", "doctor"} <= set(commands)
    for command in ([], *([c] for c in commands)):
        result = cli(*command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command
        assert f"vcompile {command[0]}" in result.stdout if command else "Commands:" in result.stdout
        if command:  # the command's own docstring, not just click's usage line
            assert group.commands[command[0]].help.split("\n")[0].strip()[:40] in " ".join(result.stdout.split())


def test_python_dash_m_and_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and "vcompile" in result.stdout


def test_build_bad_inputs_are_one_line_each(cli, tmp_path):
    _assert_one_line_error(cli("build", "--model", "mvit-z", "--target", "onnx", "--out", str(tmp_path)),
                           "unknown model 'mvit-z'")
    _assert_one_line_error(cli("build", "--model", "mvit-s", "--target", "tflite", "--out", str(tmp_path)),
                           "unknown target 'tflite'")
    _assert_one_line_error(cli("build", "--model", "x3d-xs", "--target", "onnx", "--tiny", "--weights",
                               str(tmp_path / "none.pt"), "--out", str(tmp_path)), "weights file not found")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    _assert_one_line_error(cli("build", "--model", "x3d-xs", "--target", "ptl", "--tiny", "--out",
                               str(blocked / "sub")), "cannot write artifacts under")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        _assert_one_line_error(cli("build", "--model", "x3d-xs", "--target", "trt", "--tiny", "--out", str(tmp_path)),
                               'pip install "vcompile[trt]"')


def test_build_prints_one_line_per_artifact_and_hits_the_cache(cli, tmp_path):
    first = cli("build", "--model", "x3d-xs", "--target", "ptl", "--tiny", "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "built" in first.stdout and "x3d-xs" in first.stdout and str(tmp_path) in first.stdout
    again = cli("build", "-m", "x3d-xs", "-t", "ptl", "--tiny", "--out", str(tmp_path), "--format", "json")
    (cell,) = json.loads(again.stdout)
    assert cell["status"] == "ok" and cell["cached"] is True and cell["path"].endswith("model.ptl")


def test_build_grid_records_failures_and_unavailable_targets(cli, tmp_path):
    result = cli("build", "--model", "x3d-xs,movinet-a0", "--target", "ptl,tensorrt", "--tiny", "--out", str(tmp_path))
    grid = json.loads((tmp_path / "build-grid.json").read_text())
    cells = {(c["model"], c["target"]): c for c in grid["cells"]}
    assert cells[("x3d-xs", "ptl")]["status"] == "ok" and cells[("movinet-a0", "ptl")]["status"] == "ok"
    assert cells[("x3d-xs", "ptl")]["parity"] == "pass"  # every build is verified
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert cells[("x3d-xs", "tensorrt")]["status"] == "unavailable"
        assert result.returncode == 0  # unavailable here is not a failure
    assert "build grid" in result.stdout


def test_build_grid_with_a_failing_build_exits_non_zero_and_builds_the_rest(cli, tmp_path):
    # TEA needs at least 2 frames: its cell fails, X3D's still builds.
    result = cli("build", "--model", "tea-r50,x3d-xs", "--target", "ptl", "--tiny", "--frames", "1",
                 "--out", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    cells = {c["model"]: c for c in json.loads((tmp_path / "build-grid.json").read_text())["cells"]}
    assert cells["tea-r50"]["status"] == "failed" and "at least 2 frames" in cells["tea-r50"]["reason"]
    assert cells["x3d-xs"]["status"] == "ok" and cells["x3d-xs"]["parity"] == "pass"
    assert "failed" in result.stdout and "tea-r50" in result.stdout


def test_empty_lists_are_errors_and_leave_the_grid_alone(cli, tmp_path):
    (tmp_path / "build-grid.json").write_text("keep")
    for models in ("", ","):
        _assert_one_line_error(cli("build", "--model", models, "--target", "onnx", "--out", str(tmp_path)),
                               "no model given")
    _assert_one_line_error(cli("build", "--model", "x3d-xs", "--target", ",", "--out", str(tmp_path)),
                           "no target given")
    assert (tmp_path / "build-grid.json").read_text() == "keep"
    _assert_one_line_error(cli("bench", "--model", "x3d-xs", "--mode", "single", "--device", "cudaXYZ",
                               "--out", str(tmp_path / "r.jsonl")), "unknown device 'cudaXYZ'")
    _assert_one_line_error(cli("parity", "--model", "x3d-xs", "--tiny", "--rtol", "nan", "--out", str(tmp_path)),
                           "--rtol must be a finite number >= 0")
    assert not (tmp_path / "r.jsonl").exists()


def test_bench_runs_where_os_has_no_sched_getaffinity(tmp_path):
    """macOS has no os.sched_getaffinity: bench (and every case process it starts) must not need it."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nif hasattr(os, 'sched_getaffinity'):\n"
                                           "    del os.sched_getaffinity\n")
    env = {**{k: v for k, v in os.environ.items() if k != "VCOMPILE_DEBUG"},
           "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = subprocess.run([sys.executable, "-c", "import os; print(hasattr(os, 'sched_getaffinity'))"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"  # the stand-in really removes it
    out = tmp_path / "results.jsonl"
    result = subprocess.run([sys.executable, "-m", "vcompile", "bench", "--tiny", "--model", "x3d-xs", "--runtime",
                             "torch", "--mode", "single", "--warmup", "0", "--iters", "2", "--out", str(out),
                             "--artifacts", str(tmp_path / "artifacts")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "ok" and record["iters_timed"] == 2
    assert record["threads"] == os.cpu_count() and record["env"]["cpu"]["usable_cores"] == os.cpu_count()


def test_build_explain_lists_what_each_target_leaves_unaccelerated(cli, artifacts):
    pytest.importorskip("executorch.exir", reason="the executorch target needs executorch (vcompile[mobile])")
    pytest.importorskip("coremltools", reason="the coreml target needs coremltools (vcompile[coreml])")
    result = cli("build", "-m", "x3d-xs", "-t", "executorch,coreml", "--tiny", "--explain", "--format", "json",
                 "--out", str(artifacts))
    assert result.returncode == 0, result.stderr
    cells = {c["target"]: c for c in json.loads(result.stdout)}
    et, coreml = cells["executorch"]["explain"], cells["coreml"]["explain"]
    assert et["accelerator"] == "XNNPACK" and et["accelerated_share"] == 1.0 and et["not_accelerated"] == []
    import sys

    if sys.platform != "darwin":  # Core ML decides placement on the device; off macOS it is not known
        assert coreml["accelerated_share"] is None and "macOS 14.4" in coreml["note"]
    table = cli("build", "-m", "x3d-xs", "-t", "executorch", "--tiny", "--explain", "--out", str(artifacts))
    assert "x3d-xs -> executorch: 100.0% of the model in XNNPACK; nothing runs outside it" in table.stdout
    assert "cached" in table.stdout and "cpuinfo" not in table.stderr
