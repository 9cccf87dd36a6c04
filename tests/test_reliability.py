"""Nothing a user owns is damaged, results are never lost, and a failure gets the status it really is.

Each test is one of the probes of issue 12, run on tiny cases or stand-in processes.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vcompile.bench import sweep
from vcompile.bench.case import CaseSpec, is_out_of_memory
from vcompile.bench.records import Record, append_record, check_results_file, read_records
from vcompile.errors import VcompileError

TINY = CaseSpec(model="x3d-xs", runtime="torch", mode="single", warmup=1, iters=2, tiny=True, threads=1)

# Files a user may name as --out by mistake: none may change by a byte.
NOT_RESULTS = {
    "text.txt": b"keep me",
    "one-line.json": b'{"a": 1}',
    "notes.jsonl": b'{"kind": "my own log"}\n{"kind": "second"}\n',
    "weights.safetensors": struct.pack("<Q", 2) + b"{}" + bytes(range(256)) * 4,
    "model.onnx": b"\x08\x08\x12\x07pytorch\x1a\x052.1.0:\x9a\x01\n\x05video" + bytes(64),
    "utf16.txt": "résultats\n".encode("utf-16"),
}


def _record(model: str = "x3d-xs", status: str = "ok", key: str = "") -> Record:
    record = Record(model=model, runtime="torch", mode="single", status=status, precision="fp32", batch=1,
                    input_shape=[1, 3, 4, 64, 64], device="cpu", threads=1, warmup=1, iters=2, settings_key=key)
    if status == "ok":
        record.set_latencies([1.0, 2.0])
    return record


@pytest.mark.parametrize("name", NOT_RESULTS)
def test_a_file_that_is_not_a_results_file_is_never_changed(tmp_path, monkeypatch, name):
    path = tmp_path / name
    path.write_bytes(NOT_RESULTS[name])
    with pytest.raises(VcompileError, match=f"refusing to append results to {path}") as caught:
        append_record(path, _record())
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == NOT_RESULTS[name]
    # A sweep refuses before it runs any case.
    started = tmp_path / "started"
    monkeypatch.setattr(sweep, "CASE_COMMAND", [sys.executable, "-c", f"open({str(started)!r}, 'w')"])
    with pytest.raises(VcompileError, match="refusing to append results"):
        sweep.run_sweep([TINY], path)
    assert not started.exists() and path.read_bytes() == NOT_RESULTS[name]


def test_the_cli_refuses_a_text_file_as_out_before_measuring(cli, tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"keep me")
    result = cli("bench", "--tiny", "-m", "x3d-xs", "-r", "torch", "--mode", "single", "--iters", "2",
                 "--out", str(path), "--artifacts", str(tmp_path / "a"))
    assert result.returncode != 0 and path.read_bytes() == b"keep me"
    assert "refusing to append results to" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "ok " not in result.stdout  # nothing was measured


def test_unwritable_and_folder_outs_are_refused_up_front(tmp_path):
    with pytest.raises(VcompileError, match="is not a regular file"):
        check_results_file(tmp_path)
    parent_is_a_file = tmp_path / "file"
    parent_is_a_file.write_text("x")
    with pytest.raises(VcompileError, match="cannot write results to"):
        check_results_file(parent_is_a_file / "results.jsonl")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(VcompileError, match="permission denied"):
            check_results_file(locked / "results.jsonl")


def test_a_torn_last_line_is_saved_aside_then_cut(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, _record("x3d-xs"))
    with open(path, "ab") as handle:  # a writer killed mid-record
        handle.write(b'{"model": "movinet-a0", "runtime": "tor')
    check_results_file(path)  # still a results file
    append_record(path, _record("movinet-a0"))
    assert [r.model for r in read_records(path)] == ["x3d-xs", "movinet-a0"]
    assert (tmp_path / "results.jsonl.torn").read_bytes() == b'{"model": "movinet-a0", "runtime": "tor\n'
    only_torn = tmp_path / "killed-at-first.jsonl"
    only_torn.write_bytes(b'{"model": "x3d')
    append_record(only_torn, _record())
    assert len(read_records(only_torn)) == 1


def test_two_processes_appending_to_one_file_keep_every_record(tmp_path):
    path = tmp_path / "results.jsonl"
    code = ("import sys\nfrom vcompile.bench.records import Record, append_record\n"
            "for i in range(400):\n"
            "    r = Record(model=sys.argv[1], runtime='torch', mode='single', status='ok', precision='fp32',"
            " batch=1, input_shape=[1], device='cpu', threads=1, warmup=0, iters=200, message=str(i))\n"
            "    r.set_latencies([1.0 + j for j in range(200)])\n"  # long lines: several kB each
            f"    append_record(__import__('pathlib').Path({str(path)!r}), r)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, name], stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    records = read_records(path)
    assert len(records) == 800
    for name in ("a", "b"):
        assert sorted(int(r.message) for r in records if r.model == name) == list(range(400))


def test_resume_runs_again_what_did_not_succeed(tmp_path, monkeypatch):
    out = tmp_path / "results.jsonl"
    cases = sweep.plan_cases(["x3d-xs", "movinet-a0"], ["torch"], ["single"], TINY)
    ran = []

    def measure(case, timeout_s, on_phase):
        ran.append(case.model)
        return _record(case.model, key=case.settings_key())

    monkeypatch.setattr(sweep, "_measure", measure)
    append_record(out, _record("x3d-xs", "ok", cases[0].settings_key()))
    append_record(out, _record("movinet-a0", "crashed", cases[1].settings_key()))
    records, skipped = sweep.run_sweep(cases, out, resume=True, resume_failed=False)
    assert (records, skipped, ran) == ([], 2, [])
    records, skipped = sweep.run_sweep(cases, out, resume=True)
    assert skipped == 1 and ran == ["movinet-a0"] and [r.status for r in records] == ["ok"]
    records, skipped = sweep.run_sweep(cases, out, resume=True)  # its last record is ok now
    assert (records, skipped) == ([], 2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_a_case_process_dies_with_its_killed_sweep(tmp_path):
    marker = tmp_path / "child.pid"
    child = ("from vcompile.bench.case import die_with_parent\ndie_with_parent()\nimport os, time\n"
             f"open({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    parent = ("import sys\nfrom vcompile.bench import sweep\nfrom vcompile.bench.case import CaseSpec\n"
              f"sweep.CASE_COMMAND = [sys.executable, '-c', {child!r}]\n"
              "sweep.run_case_isolated(CaseSpec(model='x3d-xs', runtime='torch', mode='single'), timeout_s=300)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(marker.read_text())
    assert _alive(child_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid), "the case process outlived its sweep"


def test_statuses_say_what_happened(monkeypatch):
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 40000000000 bytes"))
    assert is_out_of_memory(RuntimeError("Failed to allocate memory for requested buffer of size 123"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape '[2, 3]' is invalid for input of size 7"))
    # A SIGKILL is oom only when the cgroup's OOM killer counted a kill meanwhile.
    monkeypatch.setattr(sweep, "CASE_COMMAND", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"])
    counts = iter([3, 4])
    monkeypatch.setattr(sweep, "_oom_kills", lambda: next(counts))
    record = sweep.run_case_isolated(TINY, timeout_s=60)
    assert record.status == "oom" and "out-of-memory killer" in record.message and "3 -> 4" in record.message
    monkeypatch.setattr(sweep, "_oom_kills", lambda: 4)
    assert sweep.run_case_isolated(TINY, timeout_s=60).status == "crashed"


def test_the_oom_counter_is_read_where_the_kernel_has_one():
    count = sweep._oom_kills()
    assert count is None or count >= 0
    if Path("/sys/fs/cgroup/memory/memory.oom_control").exists() or Path("/sys/fs/cgroup/memory.events").exists():
        assert isinstance(count, int)


def test_a_record_line_is_one_json_object(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, _record())
    line = path.read_bytes()
    assert line.count(b"\n") == 1 and json.loads(line)["schema"].startswith("vcompile.bench/")


def _edit_manifest(artifact, change) -> None:
    path = artifact.path / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_the_cache_serves_only_what_was_built(tmp_path):
    """Names outside the artifact's folder, a tensor corrupted in place (same size and time) and a malformed file
    list each make the artifact invalid: it is rebuilt, never served."""
    from vcompile.compile import BuildOptions, build
    from vcompile.compile.cache import verify_artifact

    options = BuildOptions(tiny=True, batch=1)
    first = build("x3d-xs", "ptl", options, out=tmp_path)
    good = first.file().read_bytes()
    outside = tmp_path / "outside.ptl"
    outside.write_bytes(good)
    for name in ("../../../../outside.ptl", str(outside)):
        _edit_manifest(first, lambda m, n=name: m["files"]["model"].update(name=n))
        again = build("x3d-xs", "ptl", options, out=tmp_path)
        assert not again.cached and again.file().parent == first.path and verify_artifact(again.path, again.manifest) \
            is None
    data = first.file()
    stat = data.stat()
    corrupted = bytearray(data.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    data.write_bytes(bytes(corrupted))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same modification time
    again = build("x3d-xs", "ptl", options, out=tmp_path)
    assert not again.cached and again.file().read_bytes() != bytes(corrupted)
    assert verify_artifact(again.path, again.manifest) is None
    for broken in ({"files": []}, {"files": {"model": {"name": "model.ptl"}}}, {"info": None}):
        _edit_manifest(again, lambda m, b=broken: m.update(b))
        again = build("x3d-xs", "ptl", options, out=tmp_path)
        assert not again.cached
    assert build("x3d-xs", "ptl", options, out=tmp_path).cached
    assert not list((tmp_path / "builds" / "x3d-xs" / "ptl").glob("*.partial-*"))


def test_out_of_range_inputs_are_refused_before_any_work(cli, tmp_path):
    from vcompile.check.parity import run_parity
    from vcompile.compile import BuildOptions, build
    from vcompile.zoo import build_args

    for seed in (-1, 2**63, 2**64):
        with pytest.raises(VcompileError, match="out of range; give an integer from 0 to"):
            build("x3d-xs", "onnx", BuildOptions(tiny=True, seed=seed), out=tmp_path)
    with pytest.raises(VcompileError, match="beyond what vcompile builds"):
        build_args("x3d-xs", size=100_000)
    with pytest.raises(VcompileError, match=r"needs \d+\.\d GiB, more than this machine's"):
        build("x3d-xs", "onnx", BuildOptions(batch=10**6), out=tmp_path)
    with pytest.raises(VcompileError, match="nothing to compare"):
        run_parity("x3d-xs", ["onnxruntime"], samples=0, options=BuildOptions(tiny=True), out=tmp_path)
    assert not (tmp_path / "builds").exists() or not list((tmp_path / "builds").rglob("*.partial-*"))
    for args, words in ((("build", "-m", "x3d-xs", "-t", "onnx", "--size", "100000"), "beyond what vcompile builds"),
                        (("build", "-m", "x3d-xs", "-t", "onnx", "--seed", "-1"), "--seed"),
                        (("show", "x3d-xs", "--weights", str(tmp_path)), "is a folder")):
        result = cli(*args, "--out", str(tmp_path)) if args[0] == "build" else cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and words in lines[0], result.stderr
        assert "internal error" not in result.stderr
    assert not list(tmp_path.rglob("*.partial-*"))


def test_threads_beyond_the_cores_are_a_note_on_the_record():
    from vcompile.bench.environment import usable_cores

    many = usable_cores() + 3
    record = sweep.run_case_isolated(CaseSpec(**{**TINY.__dict__, "threads": many}), timeout_s=300)
    assert record.status == "ok" and record.threads == many
    assert f"{many} threads on {usable_cores()} usable cores" in record.message


def test_a_report_skips_and_counts_non_finite_latencies(tmp_path):
    from vcompile.report.documents import write_report

    path = tmp_path / "r.jsonl"
    for model, latencies in (("x3d-xs", [1.0, 2.0]), ("movinet-a0", [3.0, float("nan")]), ("mvit-s", [4.0, 5.0])):
        record = _record(model, key=model)
        record.set_latencies(latencies)
        append_record(path, record)
    written = write_report([path], tmp_path / "report")
    text = written["report.md"].read_text()
    assert "1 'ok' record(s) with latencies that are not finite numbers" in text
    latency = written["latency.csv"].read_text()
    assert "x3d-xs" in latency and "mvit-s" in latency and "movinet-a0" not in latency
    assert "nan" not in latency.lower()


def test_onnxruntime_sessions_send_no_telemetry(artifacts, monkeypatch):
    import onnxruntime as ort

    from vcompile.check.parity import build_verified
    from vcompile.compile import BuildOptions
    from vcompile.runtimes import load

    calls = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append(True))
    artifact = build_verified("x3d-xs", "onnx", BuildOptions(tiny=True, batch=1), out=artifacts)
    with load(artifact, "onnxruntime", threads=1) as runner:
        assert runner.infer(__import__("numpy").zeros((1, 3, 4, 64, 64), "float32")).shape == (1, 10)
        assert runner.settings["intra_op_num_threads"] == "1" and runner.settings["providers"] == "CPUExecutionProvider"
    assert calls


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, "résultats\n".encode("utf-16"),
                                     b'{"schema": "vcompile.bench/1", "model": 1}\n{"x": 1}\n'])
def test_an_unreadable_results_file_is_one_line_naming_file_and_line(cli, tmp_path, content):
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    result = cli("report", str(path), "--out", str(tmp_path / "report"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and f"{path}:" in lines[0], result.stderr
    assert "internal error" not in lines[0]


def test_parity_json_is_checked_before_checking_and_never_replaces_a_user_file(cli, tmp_path):
    from vcompile.check.parity import ParityRow, check_rows_file, write_rows_file

    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "settings"}')
    result = cli("parity", "-m", "x3d-xs", "--runtimes", "ort", "--tiny", "--json", str(mine), "--out",
                 str(tmp_path / "a"))
    assert result.returncode != 0 and "refusing to replace" in result.stderr and "parity x3d-xs" not in result.stdout
    assert mine.read_text() == '{"my": "settings"}' and not (tmp_path / "a").exists()  # nothing was built
    parent_is_a_file = tmp_path / "file"
    parent_is_a_file.write_text("x")
    with pytest.raises(VcompileError, match="cannot write"):
        check_rows_file(parent_is_a_file / "rows.json")
    rows = tmp_path / "rows.json"
    write_rows_file(rows, [ParityRow("x3d-xs", "onnxruntime", "fp32", "pass")])
    check_rows_file(rows)  # an earlier parity --json file may be replaced
    assert json.loads(rows.read_text())[0]["status"] == "pass" and len(list(tmp_path.glob(".rows.json.*"))) == 0
