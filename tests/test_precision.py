"""Precisions as data: how amp and an explicit precision resolve per device, runtime and CPU (simulated flags),
and the one-line refusals of a precision a runtime or CPU cannot run."""

from __future__ import annotations

import pytest

from vcompile.bench.case import CaseSpec, case_precision
from vcompile.compile import PRECISIONS
from vcompile.runtimes import RUNTIMES
from vcompile.runtimes import precision as prec
from vcompile.runtimes.precision import PrecisionError, native_bf16, resolve_precision

NO_BF16 = ",".join(prec.BF16_FLAGS)  # hides every bf16 flag: this CPU, seen as one without native bf16
TORCH = ("fp32", "fp16", "bf16")


@pytest.fixture
def cpu(monkeypatch):
    """Simulate a CPU's flags (what /proc/cpuinfo would say)."""
    monkeypatch.delenv(prec.FLAGS_OFF_ENV, raising=False)

    def simulate(*flags: str) -> None:
        monkeypatch.setattr(prec, "_proc_flags", lambda: frozenset(flags))

    return simulate


def test_precisions_are_data():
    assert PRECISIONS == ("fp32", "fp16", "bf16", "int8") and prec.REQUESTS == ("amp", *PRECISIONS)
    from vcompile.compile.base import PRECISION_NOTES

    assert all(PRECISION_NOTES[p] for p in PRECISIONS)


def test_amp_resolves_per_device_and_cpu(cpu):
    cpu("avx2", "avx512f", "avx512_bf16")
    assert resolve_precision("amp", "cpu", "torch", TORCH) == prec.Resolved(
        "bf16", "amp on a CPU: this CPU has native bf16 (avx512_bf16)")
    assert resolve_precision("amp", "cuda", "torch", TORCH).precision == "fp16"
    assert resolve_precision("amp", "cuda:1", "torch", TORCH).reason == "amp on CUDA: fp16, as the paper"
    # a runtime that runs no bf16 on a CPU that has it: fp32, and the reason says why
    ort = resolve_precision("amp", "cpu", "onnxruntime", ("fp32", "fp16"))
    assert ort.precision == "fp32" and "onnxruntime runs no bf16" in ort.reason
    cpu("avx2", "avx512f", "avx512_vnni")  # VNNI but no bf16 (a Cascade Lake Xeon)
    plain = resolve_precision("amp", "cpu", "torch", TORCH)
    assert plain.precision == "fp32" and "no native bf16" in plain.reason
    cpu("amx_tile", "amx_bf16")  # Sapphire Rapids' AMX counts
    assert resolve_precision("amp", "cpu", "torch", TORCH).precision == "bf16"
    cpu("asimd", "bf16")  # Arm (Graviton 3, Apple M2 on Linux)
    assert native_bf16()[0]


def test_flags_can_be_hidden_never_claimed(cpu, monkeypatch):
    cpu("avx2", "avx512_bf16")
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, NO_BF16)
    assert not native_bf16()[0] and prec.cpu_flags() == {"avx2"}
    cpu("avx2")
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, "avx2,-avx512_bf16,avx512_bf16")
    assert prec.cpu_flags() == frozenset()


def test_explicit_precisions_are_refused_in_one_line(cpu):
    cpu("avx2")
    with pytest.raises(PrecisionError, match=r"^--precision bf16 on the CPU: this CPU has no native bf16"):
        resolve_precision("bf16", "cpu", "torch", TORCH)
    assert resolve_precision("bf16", "cuda", "torch", TORCH).precision == "bf16"  # GPUs: the runtime decides
    with pytest.raises(PrecisionError, match=r"^ptl runs fp32, not int8; choose one of those \(or amp\)$"):
        resolve_precision("int8", "cpu", "ptl", RUNTIMES["ptl"].runs)
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu", "torch", TORCH)
    assert resolve_precision("fp32", "cpu", "ptl", ("fp32",)) == prec.Resolved("fp32", "requested")


def test_a_case_resolves_with_its_runtime_and_target(cpu):
    cpu("avx512_bf16")
    single = CaseSpec(model="x3d-xs", runtime="torch", mode="single")
    assert case_precision(single).precision == "bf16"
    mobile = CaseSpec(model="x3d-xs", runtime="executorch", mode="mobile")  # the mobile mode is fp32 by protocol
    assert case_precision(mobile) == prec.Resolved("fp32", "requested")
    # an artifact runtime runs only what its runner executes and its target builds
    assert RUNTIMES["onnxruntime"].runs == ("fp32", "fp16", "int8") and RUNTIMES["ptl"].runs == ("fp32",)
    with pytest.raises(PrecisionError, match="executorch runs fp32 or int8, not fp16"):
        case_precision(CaseSpec(model="x3d-xs", runtime="executorch", mode="single", precision="fp16"))


def test_cli_refuses_a_precision_the_runtime_cannot_run(cli, tmp_path):
    out = tmp_path / "results.jsonl"
    result = cli("bench", "--tiny", "-m", "x3d-xs", "-r", "ptl", "--mode", "mobile", "--precision", "int8",
                 "--out", str(out), "--artifacts", str(tmp_path / "a"))
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert "ptl runs fp32, not int8" in result.stdout + result.stderr
    assert not out.exists() and not (tmp_path / "a").exists()  # refused before anything ran or was built


def test_cli_refuses_bf16_on_a_cpu_without_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, NO_BF16)
    out = tmp_path / "results.jsonl"
    result = cli("bench", "--tiny", "-m", "x3d-xs", "--mode", "single", "--precision", "bf16", "--out", str(out))
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "Traceback" not in text
    assert "--precision bf16 on the CPU: this CPU has no native bf16" in text and not out.exists()


@pytest.mark.skipif(not native_bf16()[0], reason="amp is bf16 only on a CPU with native bf16, and this one has none")
def test_amp_runs_in_bf16_on_a_cpu_that_has_it(monkeypatch):
    from vcompile.bench import sweep

    monkeypatch.delenv(prec.FLAGS_OFF_ENV, raising=False)
    case = CaseSpec(model="movinet-a0", runtime="torch", mode="single", warmup=1, iters=2, tiny=True, threads=1)
    record = sweep.run_case_isolated(case, timeout_s=300)
    assert record.status == "ok", record.message
    assert (record.requested_precision, record.precision, record.runtime_settings["autocast"]) == ("amp", "bf16",
                                                                                                   "bf16")
    assert "native bf16" in record.precision_reason


def test_reports_group_by_the_precision_that_ran():
    from vcompile.bench.records import Record
    from vcompile.report.analysis import paper_records, series_of

    def record(precision: str, requested: str | None) -> Record:
        return Record(model="x3d-xs", runtime="torch", mode="single", status="ok", precision=precision, batch=1,
                      input_shape=[1, 3, 16, 224, 224], device="cpu", threads=2, warmup=1, iters=1,
                      requested_precision=requested, mean_ms=1.0)

    amp_bf16, asked_bf16, amp_fp32 = record("bf16", "amp"), record("bf16", "bf16"), record("fp32", "amp")
    assert series_of(amp_bf16) == series_of(asked_bf16) != series_of(amp_fp32)
    assert series_of(amp_bf16).title == "single · torch · bf16"
    assert paper_records([amp_bf16, asked_bf16, amp_fp32]) == [amp_bf16, amp_fp32]  # the protocol asked for amp
