"""The benchmark's harness (``python -m gpu.bench``): failures recorded, JSON after every
implementation, the target verdicts, the sparse mode's detection of ``teacher_topk=``.

No timing is asserted here: the ratios are read off the benchmark's output (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import pytest

from gpu import bench


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_a_timeout_and_a_crash_are_recorded_and_the_others_still_come_out(tmp_path, monkeypatch):
    """Three implementations, each in a real subprocess: one prints its row, one sleeps past
    the per-process limit, one exits with an error. The run finishes, each outcome is a row,
    and the JSON file on disk after each implementation holds every row so far."""
    row = {"impl": "textbook", "status": "ok", "time_ms": 1.0, "peak_extra_mib": 2.0,
           "loss": 0.5, "bytes": 1, "flops": 1}  # fmt: skip
    commands = {
        "textbook": [sys.executable, "-c", f"print({json.dumps(json.dumps(row))})"],
        "torch": [sys.executable, "-c", "import time; time.sleep(60)"],
        "compiled": [sys.executable, "-c", "raise SystemExit('RuntimeError: simulated crash')"],
    }
    monkeypatch.setattr(bench, "_worker_command", lambda spec: commands[spec["impl"]])
    out = tmp_path / "bench.json"
    snapshots = []
    write = bench.Report.write

    def write_and_read(self):
        write(self)
        snapshots.append(json.loads(out.read_text()))

    monkeypatch.setattr(bench.Report, "write", write_and_read)
    args = _args("--device", "cpu", "--configs", "300:4", "--impls", "textbook,torch,compiled",
                 "--timeout", "2", "--out", str(out), "--json")  # fmt: skip
    assert bench.run(args) == 0
    report = json.loads(out.read_text())
    got = {r["impl"]: r for r in report["results"]}
    assert got["textbook"]["status"] == "ok" and got["textbook"]["loss"] == 0.5
    assert got["torch"]["status"] == "timeout" and "2 s" in got["torch"]["why"]
    assert got["compiled"]["status"] == "error" and "simulated crash" in got["compiled"]["why"]
    assert all(got[i]["objective"] == "kl" and got[i]["vocab"] == 300 for i in got)
    # the file was rewritten after each implementation: 0, 1, 2, 3 rows
    counts = [len(s["results"]) for s in snapshots]
    assert counts[:4] == [0, 1, 2, 3], counts
    assert [r["impl"] for r in snapshots[2]["results"]] == ["textbook", "torch"]


def test_failure_reason_names_out_of_memory_and_signals():
    oom = "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    assert bench._failure_reason(1, oom).startswith("out of memory:")
    assert "signal 9 (out of memory?)" in bench._failure_reason(-9, "")
    assert bench._failure_reason(2, "") == "exit status 2"


def _row(impl, objective="kl", time_ms=10.0, peak=100.0, status="ok", **size):
    size = {"device": "cuda", "dtype": "bfloat16", "rows": 8192, "vocab": 128256, **size}
    return {"impl": impl, "objective": objective, "status": status, "time_ms": time_ms,
            "peak_extra_mib": peak, **size}  # fmt: skip


def test_judge_met_not_met_and_not_measured():
    ref = _row("textbook", time_ms=100.0, peak=1000.0)
    met = bench.judge("t", _row("triton", time_ms=25.0), ref, "time_ms", 0.25)
    assert met["verdict"] == bench.MET and met["ratio"] == pytest.approx(0.25)  # ≤ is met
    over = bench.judge("t", _row("triton", time_ms=25.1), ref, "time_ms", 0.25)
    assert over["verdict"] == bench.NOT_MET and over["ratio"] == pytest.approx(0.251)
    gone = bench.judge("t", {"impl": "triton", "status": "timeout", "why": "over 40 s"}, ref,
                       "time_ms", 0.25)  # fmt: skip
    assert gone["verdict"] == bench.NOT_MEASURED and "timeout" in gone["why"]
    assert gone["ratio"] is None
    assert bench.judge("t", None, ref, "time_ms", 0.25)["verdict"] == bench.NOT_MEASURED
    interp = bench.judge("t", {**_row("triton"), "interpreted": True}, ref, "time_ms", 0.25)
    assert interp["verdict"] == bench.NOT_MEASURED
    zero = bench.judge("t", _row("triton"), _row("textbook", time_ms=0.0), "time_ms", 0.25)
    assert zero["verdict"] == bench.NOT_MEASURED


def test_the_cuda_targets_table():
    """Each objective's time and memory targets against the textbook row of its own case;
    a row of another size does not count; the fused target is against liger."""
    rows = [
        _row("textbook", "kl", 80.0, 35000.0), _row("triton", "kl", 12.0, 2000.0),
        _row("textbook", "js", 120.0, 36000.0), _row("triton", "js", 40.0, 3000.0),
        _row("textbook", "ab", 90.0, 35000.0), _row("triton", "ab", 15.0, 4000.0, rows=2048),
        {"impl": "fused", "device": "cuda", "rows": 8192, "vocab": 128256, "hidden": 4096,
         "status": "ok", "time_ms": 70.0, "peak_extra_mib": 3500.0},
        {"impl": "liger", "device": "cuda", "rows": 8192, "vocab": 128256, "hidden": 4096,
         "status": "ok", "time_ms": 77.0, "peak_extra_mib": 3000.0},
    ]  # fmt: skip
    targets = bench.logits_targets(rows, "cuda") + bench.fused_targets(rows)
    verdicts = [(t["target"].split(",")[0], t["target"].rsplit(":", 1)[1].strip()[:5],
                 t["verdict"]) for t in targets]  # fmt: skip
    assert [v for *_, v in verdicts] == [
        "MET",
        "MET",  # KL: 0.15 time, 0.057 memory
        "NOT MET",
        "MET",  # JS: 0.33 time, 0.083 memory
        "NOT MEASURED",
        "NOT MEASURED",  # AB: the triton row is of another size
        "MET",
        "NOT MET",  # fused: 0.91 time, 1.17 memory
    ], verdicts
    text = bench.format_targets(targets)
    assert "0.150× MET" in text and "0.333× NOT MET" in text and "NOT MEASURED" in text


def test_the_cpu_target_and_the_sparse_target():
    cpu = {"device": "cpu", "dtype": "float32", "rows": 256, "vocab": 32000}
    rows = [_row("textbook", time_ms=100.0, **cpu), _row("torch", time_ms=130.0, **cpu)]
    (t,) = bench.logits_targets(rows, "cpu")
    assert t["verdict"] == bench.NOT_MET and t["ratio"] == pytest.approx(1.3)
    size = {"device": "cpu", "dtype": "float32", "rows": 2048, "vocab": 151936}
    grad = 2048 * 151936 * 4 / 2**20
    rows = [
        {**_row("dense", peak=grad + 400.0, **size), "gradient_mib": grad},
        {**_row("sparse", peak=grad + 90.0, **size), "gradient_mib": grad},
    ]
    working, peak, _time = bench.sparse_targets(rows)
    assert working["verdict"] == bench.MET and working["ratio"] == pytest.approx(90 / 400)
    assert peak.get("reported_only")  # the gradient, which both write, dominates this ratio
    assert peak["ratio"] == pytest.approx((grad + 90.0) / (grad + 400.0))
    rows[1]["peak_extra_mib"] = grad + 101.0
    assert bench.sparse_targets(rows)[0]["verdict"] == bench.NOT_MET


def test_sparse_mode_records_not_available_without_teacher_topk(monkeypatch):
    """Where gpu.amid_loss takes no ``teacher_topk=`` the sparse row says so; the dense row
    is measured (in process, tiny)."""
    spec = {"mode": "sparse", "device": "cpu", "dtype": "float32", "rows": 8, "vocab": 300,
            "k": 4, "alpha": None, "lam": None, "reps": 1, "chunk_size": 4,
            "threads": 1}  # fmt: skip
    monkeypatch.setattr(bench, "accepts_teacher_topk", lambda: False)
    row = bench._worker_main({**spec, "impl": "sparse"})
    assert row["status"] == "not available" and "teacher_topk" in row["why"]
    dense = bench._worker_main({**spec, "impl": "dense"})
    assert dense["status"] == "ok" and math.isfinite(dense["loss"])
    assert dense["teacher_input_mib"] == pytest.approx(8 * 300 * 4 / 2**20)


def test_textbook_loss_matches_amid_ref():
    """The textbook implementations the targets are measured against compute the same
    objective as amid_ref (float64 inputs, loose: they are float32 inside)."""
    import numpy as np
    import torch

    import amid_ref

    gen = torch.Generator().manual_seed(3)
    s = 2 * torch.randn(4, 50, generator=gen, dtype=torch.float64)
    t = 2 * torch.randn(4, 50, generator=gen, dtype=torch.float64)
    for name, obj in bench.OBJECTIVES.items():
        kw = {k: v for k, v in obj.items() if k != "label"}
        got = float(bench.textbook_amid_loss(s, t, **kw))
        want = amid_ref.amid_loss(s.numpy(), t.numpy(), kw["alpha"], kw["lam"],
                                  kw["divergence"], kw["order"], kw["div_params"])  # fmt: skip
        np.testing.assert_allclose(got, np.mean(want), rtol=1e-5, err_msg=name)
    got = float(bench.naive_jsd(s, t, 0.5))
    want = amid_ref.amid_loss(s.numpy(), t.numpy(), 0.0, 0.0, "js", "pr", {"beta": 0.5})
    np.testing.assert_allclose(got, np.mean(want), rtol=1e-5)


def test_an_implementation_that_cannot_run_here_costs_no_subprocess(monkeypatch):
    """Liger's logits losses off CUDA, a Liger loss of another objective and the Triton
    backend on the CPU without the interpreter are told in the driver: a "not available"
    row, and no worker started; the worker tells the same reason if asked."""

    def no_worker(spec, timeout, env):
        raise AssertionError(f"a worker was started for {spec['impl']}")

    monkeypatch.setattr(bench, "_worker_process", no_worker)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    base = {"device": "cpu", "dtype": "float32", "rows": 4, "vocab": 64, "alpha": None,
            "lam": None, "reps": 1, "chunk_size": None, "threads": 1}  # fmt: skip
    liger = bench.importlib.util.find_spec("liger_kernel") is not None
    cases = [
        ("liger_kl", "kl", "run on CUDA" if liger else "not installed"),
        ("liger_jsd", "kl", "objective only"),
        ("triton", "kl", "TRITON_INTERPRET"),
    ]
    for impl, objective, why in cases:
        spec = {**base, "impl": impl, "objective": objective}
        row = bench.attempt(spec, 5.0)
        assert row["status"] == "not available" and why in row["why"], row
        assert row["impl"] == impl and row["objective"] == objective
        told = bench._worker_main(spec)
        assert told == {"impl": impl, "status": "not available", "why": row["why"]}
    with pytest.raises(AssertionError, match="worker was started for torch"):
        bench.attempt({**base, "impl": "torch", "objective": "kl"}, 5.0)
