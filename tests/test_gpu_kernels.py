"""The two ways of running the per-chunk kernel faster, against the plain eager path.

* CPU chunk workers (torch threads > 1): each chunk runs on one thread, chunks side by
  side; per-row results are bitwise those of the single-threaded path, and so are the
  fused weight and bias gradients (one accumulator, added to in chunk order).
* ``compile=...``: the kernel through ``torch.compile``; here with the ``"eager"`` backend
  (dynamo tracing, no C++ toolchain, seconds), which checks the wrapper (the scale and the
  cast applied after the compiled graph, the retained-graph recompute) within the ``"gpu"``
  tolerance rows; the inductor backend is timed by ``python -m gpu.bench --fused``.
* A failing compilation falls back to the eager kernel with a ``RuntimeWarning``.
"""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
import threading
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.strategies import DIVERGENCE_PARAM_GRID  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu._divergences import GPU_PAIR  # noqa: E402
from gpu._elementwise import _expm1_traced  # noqa: E402
from gpu._engine import _COMPILED, _for_each_chunk, _recompile_limit  # noqa: E402


@pytest.fixture
def threads(monkeypatch):
    """Set torch's thread count; chunk workers for calls of any size (the tests' are small)."""
    from gpu import _engine

    monkeypatch.setattr(_engine, "_CPU_WORKER_MIN_ELEMENTS", 0)
    before = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(before)


def test_small_calls_run_in_the_calling_thread(monkeypatch):
    """Below _CPU_WORKER_MIN_ELEMENTS logits no chunk worker starts (they cost more than
    they save there); at it, with two threads, they do, with the same bits."""
    from gpu import _engine

    started = []

    class Counting(_engine.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            started.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_engine, "ThreadPoolExecutor", Counting)
    s0, t, _ = _inputs()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = []
        for floor in (s0.numel() + 1, s0.numel()):
            monkeypatch.setattr(_engine, "_CPU_WORKER_MIN_ELEMENTS", floor)
            s = s0.clone().requires_grad_()
            loss = gpu.amid_loss(s, t, -5.0, 0.1, "js", "qr", reduction="none", chunk_size=4)
            loss.sum().backward()
            out.append((loss.detach(), s.grad))
            assert len(started) == (0 if floor > s0.numel() else 1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def _inputs(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    s = (2 * torch.randn(3, 9, 70, generator=gen)).to(dtype)
    t = (2 * torch.randn(3, 9, 70, generator=gen)).to(dtype)
    labels = torch.randint(0, 5, (3, 9), generator=gen).masked_fill_(
        torch.rand(3, 9, generator=gen) < 0.3, -100
    )
    return s, t, labels


@pytest.mark.parametrize("masked", [False, True])
def test_chunk_workers_are_bitwise_the_sequential_path(threads, masked):
    s0, t, labels = _inputs()
    kw = dict(labels=labels if masked else None, reduction="none", chunk_size=4)
    out = []
    for n in (1, 2):
        threads(n)
        s = s0.clone().requires_grad_()
        loss = gpu.amid_loss(s, t, -5.0, 0.1, "js", "qr", **kw)
        loss.sum().backward()
        out.append((loss.detach(), s.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_chunk_workers_fused(threads):
    gen = torch.Generator().manual_seed(1)
    h0 = torch.randn(2, 11, 8, dtype=torch.float64, generator=gen)
    w0 = torch.randn(70, 8, dtype=torch.float64, generator=gen)
    b0 = torch.randn(70, dtype=torch.float64, generator=gen)
    th = torch.randn(2, 11, 6, dtype=torch.float64, generator=gen)
    tw = torch.randn(70, 6, dtype=torch.float64, generator=gen)
    got = []
    for n in (1, 2):
        threads(n)
        h, w, b = (x.clone().requires_grad_() for x in (h0, w0, b0))
        loss = gpu.amid_fused_linear_loss(
            h, w, th, tw, 0.5, 0.3, "kl", "rq", student_bias=b, chunk_size=3
        )
        loss.backward()
        got.append((loss.detach(), h.grad, w.grad, b.grad))
    for one, two in zip(*got, strict=True):
        assert torch.equal(one, two)


def test_commits_run_one_at_a_time_in_chunk_order(threads):
    threads(2)
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.004) for _ in range(40)]
    order, inside, overlap = [], [0], []
    lock = threading.Lock()

    def body(start, stop):
        time.sleep(delays[start])  # chunks finish out of order

        def commit():
            with lock:
                inside[0] += 1
                overlap.append(inside[0])
            time.sleep(0.001)
            order.append(start)
            with lock:
                inside[0] -= 1

        return commit

    _for_each_chunk(40, 1, torch.device("cpu"), body)
    assert order == list(range(40))
    assert max(overlap) == 1


def test_a_failing_chunk_releases_the_waiting_workers(threads):
    threads(2)
    outcome = []

    def body(start, stop):
        if start == 0:
            raise RuntimeError("chunk 0 failed")
        return lambda: None  # chunk 1's commit waits for chunk 0's turn

    def run():
        try:
            _for_each_chunk(8, 1, torch.device("cpu"), body)
        except RuntimeError as exc:
            outcome.append(str(exc))

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "a worker waited forever for a failed chunk's turn"
    assert outcome == ["chunk 0 failed"]


def test_worker_errors_are_raised_in_the_caller(threads):
    threads(2)
    s, t, _ = _inputs(torch.float32)
    t[2, 8, 3] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_logits.*\(2, 8\)"):
        gpu.amid_loss(s.requires_grad_(), t, -5.0, 0.1, chunk_size=2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_compiled_kernel_matches_eager(dtype, threads):
    threads(1)
    torch._dynamo.reset()
    s0, t, labels = _inputs(dtype)
    name = "float64" if dtype == torch.float64 else "float32"
    results = []
    for compile in (False, "eager"):
        s = s0.clone().requires_grad_()
        loss = gpu.amid_loss(s, t, 1.0 - 1e-6, 0.4, "kl", "pr", labels=labels, chunk_size=8,
                             temperature=1.5, compile=compile)  # fmt: skip
        loss.backward(retain_graph=True)
        loss.backward()  # the recompute path of a retained graph, through the same kernel
        results.append((loss.item(), s.grad.double().numpy()))
    assert_within(results[1][0], results[0][0], tolerance("gpu", "loss", name))
    assert_within(results[1][1], results[0][1], tolerance("gpu", "grad", name))
    crit = gpu.AMiDFusedLinearLoss(0.0, 0.1, compile="eager", chunk_size=5)
    h = torch.randn(3, 9, 4, dtype=dtype, requires_grad=True)
    w = torch.randn(70, 4, dtype=dtype)
    fused = crit(h, w, teacher_logits=t, labels=labels)
    plain = gpu.amid_fused_linear_loss(h, w, None, None, 0.0, 0.1, teacher_logits=t,
                                       labels=labels)  # fmt: skip
    assert_within(fused.item(), plain.item(), tolerance("gpu", "loss", name))


def test_compile_failure_falls_back_with_a_warning():
    s, t, _ = _inputs()
    want = gpu.amid_loss(s, t, -5.0, 0.1)
    with pytest.warns(RuntimeWarning, match="torch.compile.*failed.*eager"):
        got = gpu.amid_loss(s, t, -5.0, 0.1, compile="no-such-backend")
    assert got.item() == want.item()
    with pytest.raises(TypeError, match="compile"):
        gpu.amid_loss(s, t, -5.0, 0.1, compile=1)


def test_bench_fused_mode_smoke():
    """The workers of ``python -m gpu.bench --fused`` at a tiny size, in process (the
    subprocess driver is the one of the classic mode, smoke-tested in tests/test_gpu.py):
    every implementation computes the same JSD; the busy-load context manager starts and stops its
    process; the report formats. The ratios at real sizes are read off the benchmark's
    output (docs/gpu.md), never asserted here."""
    from gpu import bench

    spec = {"mode": "fused", "device": "cpu", "dtype": "float32", "rows": 24, "vocab": 400,
            "hidden": 8, "beta": 0.5, "reps": 1, "threads": 0, "chunk_size": 5,
            "our_chunk": 5, "hbm_tbps": 4.8}  # fmt: skip
    impls = ["naive", "unfused", "fused", "logits_naive", "logits_chunked"]
    if importlib.util.find_spec("liger_kernel") is not None:
        impls.append("liger_chunk")
    got = {impl: bench._fused_worker({**spec, "impl": impl}) for impl in impls}
    for impl in impls[1:]:
        assert abs(got[impl]["loss"] - got["naive"]["loss"]) < 1e-5, impl
    with bench._BusyLoad() as load:
        assert load.proc.poll() is None
    assert load.proc.poll() is not None
    rows = [{**r, "condition": c, "our_chunk": 5} for c in ("quiet", "loaded")
            for r in got.values()]  # fmt: skip
    text = bench.format_fused({"beta": 0.5, "results": rows}, reps=1)
    assert "target fused peak ≤ 0.3× unfused" in text and "×ref" in text


@pytest.mark.slow
def test_device_check_cpu_dry_run(tmp_path):
    """``python -m gpu.device_check --cpu-dry-run``: every stage at tiny sizes on the CPU,
    through the same subprocesses as on CUDA, one JSON (about 100 s on 2 shared cores)."""
    import json

    from gpu import device_check

    out = tmp_path / "check.json"
    assert device_check.main(["--cpu-dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-dry-run" and report["cuda"] is False
    stages = report["stages"]
    assert list(stages) == list(device_check.STAGES)
    assert all(stages[s]["status"] == "ok" for s in stages), stages
    kernels = stages["kernels"]["result"]["4099"]
    assert kernels["log_softmax"] < 64 and kernels["logsumexp"] < 64  # in float32 eps
    torch_rows = [r for r in stages["accuracy"]["result"]["rows"] if r["backend"] == "torch"]
    assert torch_rows and all(r["holds"] for r in torch_rows)
    sigmoid = stages["sigmoid"]["result"]
    assert sigmoid["eager_sigmoid_eps"] <= sigmoid["budget_eps"]
    assert sigmoid["compile_backend"] == "eager"  # the steps, not inductor's CPU code
    assert sigmoid["compiled_sigmoid_eps"] == sigmoid["eager_sigmoid_eps"]
    bench = stages["bench"]["result"]
    ok = [r for r in bench["results"] if r["status"] == "ok"]
    assert {r["impl"] for r in ok} >= {"textbook", "torch", "fused", "fused_rows"}
    assert {r.get("objective") for r in ok if r["impl"] == "textbook"} == {"kl", "js", "ab"}
    pair = [r["loss"] for r in ok if r.get("objective") == "kl"]  # textbook and torch
    assert len(pair) >= 2 and max(pair) - min(pair) < 1e-5, pair  # textbook, torch (triton)
    verdicts = {t["verdict"] for t in stages["bench"]["targets"]}
    assert verdicts <= {"MET", "NOT MET", "NOT MEASURED"} and len(stages["bench"]["targets"]) == 8
    ceilings = bench["ceilings"]["cpu"]  # measured in this run
    assert ceilings["bytes_per_s"] > 1e8 and ceilings["flops_per_s"] > 1e8, ceilings
    tune = stages["tune"]["result"]  # the Triton kernel, interpreted, under each launch shape
    shapes = device_check.DRY_TUNE_SHAPES
    assert [r["launch"] for r in tune["rows"][: len(shapes)]] == ["default", *shapes[1:]]
    passes = {"_normalizer_pass", "_mixture_pass", "_divergence_pass", "_gradient_sum_pass",
              "_gradient_pass"}  # fmt: skip
    assert all(set(r["passes_ms"]) == passes for r in tune["rows"]), tune["rows"]
    assert tune["launches"] == dict.fromkeys(passes, 2 * len(tune["rows"]))  # warm-up + 1 rep
    assert tune["best"]["kl"]["launch"] in {r["launch"] for r in tune["rows"]}
    *composed, wide = tune["rows"][len(shapes) :]  # per-pass fastest; the larger chunk
    assert len(composed) <= 1
    assert all(r["status"] == "ok" and r["launch"].count("=") == 5 for r in composed), composed
    assert wide["launch"] == "default" and wide["status"] == "ok"
    assert wide["chunk_rows"] == device_check.TUNE_CHUNK_SCALE * tune["chunk_rows"]
    assert tune["best"]["kl"]["larger_chunk"]["chunk_rows"] == wide["chunk_rows"]


def test_tune_best_picks_per_objective_and_per_pass():
    """The tune stage's summary: per objective the shape of the least total pass time, and
    per pass the shape of its own least time (failed shapes left out)."""
    from gpu import device_check

    def row(launch, a, b, status="ok"):
        passes = {"_normalizer_pass": a, "_mixture_pass": b}
        return {"objective": "kl", "launch": launch, "status": status, "passes_ms": passes,
                "passes_total_ms": a + b}  # fmt: skip

    rows = [row("default", 2.0, 9.0), row("1:2048:4", 3.0, 7.0), row("1:1024:2", 1.0, 9.5),
            row("4:1024:8", 0.1, 0.1, status="error"),
            {**row("default", 0.5, 0.5), "chunk_rows": 2092}]  # fmt: skip
    best = device_check._tune_best(rows)["kl"]  # the larger chunk's row is apart
    assert best["larger_chunk"] == {"chunk_rows": 2092, "passes_total_ms": 1.0}
    assert best["launch"] == "1:2048:4" and best["passes_total_ms"] == 10.0
    assert best["default_passes_total_ms"] == 11.0
    assert best["per_pass"] == {"_normalizer_pass": {"launch": "1:1024:2", "ms": 1.0},
                                "_mixture_pass": {"launch": "1:2048:4", "ms": 7.0}}  # fmt: skip
    assert best["per_pass_total_ms"] == 8.0
    assert device_check._tune_result({"rows": rows})["status"] == "failed"
    line = device_check.format_tune({"kl": best})
    assert line.startswith("tune kl: passes 11.0 ms at the default, 10.0 ms at 1:2048:4;")
    assert line.endswith("mixture 1:2048:4; the default at 2092 rows a chunk: 1.0 ms"), line


def test_tune_rows_that_fail_alike_are_each_an_error(monkeypatch):
    """A launch shape whose pass c fails (after passes a and b ran) is an error row, and so
    is the next one failing with the same words: the engine would warn once per process
    and then fall back silently, and the row would time the torch kernel with a and b."""
    pytest.importorskip("triton")
    from _triton import interpreted

    from gpu import _engine, bench, device_check
    from gpu import _triton_kernel as tk

    if not (interpreted() or torch.cuda.is_available()):
        pytest.skip("the Triton kernels need CUDA or TRITON_INTERPRET=1")

    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("pass c failed (test)")

            return launch

    monkeypatch.setattr(tk, "_divergence_pass", Broken())
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    s, t = bench._make_inputs(4, 64, torch.float32, "cpu")
    with device_check._PassTimer(False) as timer, warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*using the torch kernel.*")
        rows = [device_check._tune_row(s, t, "kl", shape, 1, timer) for shape in (None, "2:16:4")]
    assert [r["status"] for r in rows] == ["error", "error"], rows
    assert all("pass c failed (test)" in r["why"] for r in rows), rows
    assert timer.launches["_normalizer_pass"] == 2  # a ran once per row, then c failed


def test_per_pass_shape_gives_each_pass_its_fastest(monkeypatch):
    """The tune stage's last row per objective: each pass at its own fastest shape, in the
    launch variable's syntax (the default written out as the pass's default shape at the
    stage's size); none where one shape is the fastest for every pass."""
    pytest.importorskip("triton")
    from gpu import _triton_kernel as tk
    from gpu import device_check

    monkeypatch.setattr(tk, "_interpreted", lambda: False)  # the CUDA defaults
    plan = {"rows": 8192, "vocab": 128256}
    fastest = {"_normalizer_pass": "default", "_mixture_pass": "1:2048:4",
               "_divergence_pass": "1:1024:2:2", "_gradient_sum_pass": "default",
               "_gradient_pass": "4:1024:8"}  # fmt: skip
    best = {"per_pass": {k: {"launch": v, "ms": 1.0} for k, v in fastest.items()}}
    text = device_check._per_pass_shape(best, plan)
    assert tk.parse_launch(text) == {
        "_normalizer_pass": (1, 4096, 8, 1), "_mixture_pass": (1, 2048, 4, 1),
        "_divergence_pass": (1, 1024, 2, 2), "_gradient_sum_pass": (1, 4096, 8, 1),
        "_gradient_pass": (4, 1024, 8, 1),
    }  # fmt: skip
    same = {"per_pass": {k: {"launch": "1:2048:4", "ms": 1.0} for k in fastest}}
    assert device_check._per_pass_shape(same, plan) is None
    assert device_check._per_pass_shape(None, plan) is None


def test_measured_ceilings_are_the_devices():
    """gpu.bench.measure_ceilings, the roofline's denominators (on CUDA a 1 GiB copy and a
    bf16 8192³ product, the same code): a copy and a product at small sizes here are
    finite, positive rates; ``hbm_tbps`` replaces the bandwidth and says so."""
    from gpu import bench

    got = bench.measure_ceilings("cpu", copy_bytes=1 << 22, gemm=128)
    assert set(got) == {"bytes_per_s", "flops_per_s"}
    assert all(0 < v < float("inf") for v in got.values()), got
    over = bench.device_ceilings("cpu", hbm_tbps=2.5)
    assert over["bytes_per_s"] == 2.5e12 and "--hbm-tbps 2.5" in over["source"]
    assert over["measured_bytes_per_s"] < 2.5e12


def test_traced_expm1_is_accurate_everywhere():
    """The form of expm1 that the compiled kernel uses (inductor's own vectorized expm1 is
    exp(x) - 1), against float64 expm1 on the float32 grid: a few ulps at every scale."""
    tiny = torch.logspace(-38, 0, 4001, dtype=torch.float64)
    x = torch.cat([-tiny, tiny, torch.linspace(-100, 88, 40001, dtype=torch.float64)]).float()
    x = torch.cat([x, torch.tensor([0.0, -0.0, float("inf"), -float("inf")])])
    want = torch.expm1(x.double())
    got = _expm1_traced(x).double()
    finite = torch.isfinite(want)
    rel = ((got - want).abs() / want.abs().clamp(min=1e-300))[finite & (want != 0)]
    assert float(rel.max()) <= 4 * torch.finfo(torch.float32).eps
    assert torch.equal(got[~finite], want[~finite]) and bool((got[want == 0] == 0).all())


#: Importing inductor warns (a deprecation inside torch); with warnings as errors it would
#: count as a failed compilation and the test would check the eager fallback instead.
INDUCTOR_IMPORT = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)


def _inductor_usable() -> bool:
    return shutil.which("g++") is not None or shutil.which("c++") is not None


@pytest.mark.slow
@INDUCTOR_IMPORT
@pytest.mark.skipif(not _inductor_usable(), reason="inductor needs a C++ compiler")
@pytest.mark.parametrize(
    "alpha,lam,div,order", [(-5.0, 0.1, "kl", "pr"), (0.0, 0.3, "js", "rq")], ids=["kl", "js"]
)
def test_inductor_kernel_is_accurate_near_p_equal_q(threads, alpha, lam, div, order):
    """compile=True with the real (inductor) backend, where the student is within 1e-4 of
    the teacher (late training): per-row loss and gradient against amid_ref on the same
    float32 inputs. With inductor's exp(x) - 1 for expm1 the loss was off by 170% (KL)
    and 3900% (JS); the eager kernel's error here is 0.3%."""
    threads(2)
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    t = (2 * torch.randn(16, 2048, generator=gen, dtype=torch.float64)).float()
    s = (t.double() + 1e-4 * torch.randn(16, 2048, generator=gen, dtype=torch.float64)).float()
    want = amid_ref.amid_loss(s.double().numpy(), t.double().numpy(), alpha, lam, div, order)
    gwant = amid_ref.amid_grad(s.double().numpy(), t.double().numpy(), alpha, lam, div, order)
    x = s.clone().requires_grad_()
    loss = gpu.amid_loss(x, t, alpha, lam, div, order, reduction="none", compile=True)
    loss.sum().backward()
    rel = abs(loss.detach().double().numpy() - want) / abs(want)
    assert rel.max() <= 0.05, rel.max()
    grel = float(abs(x.grad.double().numpy() - gwant).max() / abs(gwant).max())
    assert grel <= 0.02, grel


@INDUCTOR_IMPORT
def test_compiled_kernel_accuracy_rows():
    result = gpu.kernel_accuracy(vocab=4099, rows=2, compiled=True)
    assert result["gpu expm1 (compiled)"]["holds"], result["gpu expm1 (compiled)"]
    from gpu.accuracy import NOT_CALLED

    assert all(row["holds"] for name, row in result.items() if name not in NOT_CALLED), result


def test_reaching_the_recompile_limit_is_said(threads):
    """Each new objective compiles the kernel again; from half torch's recompile limit in
    objectives (past the limit a new objective runs eagerly) a RuntimeWarning says so,
    once."""
    threads(1)
    torch._dynamo.reset()
    _COMPILED.pop("eager", None)  # a fresh count of objectives for the "eager" backend
    s, t, _ = _inputs()
    limit = _recompile_limit() // 2
    for k in range(limit - 1):
        gpu.amid_loss(s, t, -5.0, 0.1 + 0.01 * k, compile="eager")
    with pytest.warns(RuntimeWarning, match="recompile limit"):
        gpu.amid_loss(s, t, -5.0, 0.5, compile="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every further objective
        gpu.amid_loss(s, t, -5.0, 0.6, compile="eager")
        gpu.amid_loss(s, t, -5.0, 0.5, compile="eager")


def _first_params(name: str) -> dict | None:
    """The first battery parameter set of divergence ``name`` (``None`` if it takes none)."""
    return next((dict(p) or None for n, p in DIVERGENCE_PARAM_GRID if n == name), None)


@pytest.mark.parametrize("div,order", [("kl", "pr")] + [(name, "rq") for name in GPU_PAIR])
def test_compiled_kernel_is_one_graph(threads, div, order):
    """The compiled kernel takes no branch on tensor values (``branchless``): dynamo traces
    it, loss and gradient, without a graph break (each break would split the graph and, on
    CUDA, wait for the device). The gradient's row flags, which branch, are formed after
    the graph. (Every divergence × order at four (α, λ) traced without a break when this
    was written; KL and the divergences of the closed-form gradient pairs cover the
    kernel's tensor-reading shortcuts: the gradient's flags, the AB family's far branch
    and χ²'s zero entries.)"""
    from torch._dynamo.utils import counters

    threads(1)
    torch._dynamo.reset()
    _COMPILED.pop("eager", None)
    counters.clear()
    s, t, _ = _inputs(torch.float32)
    x = s.clone().requires_grad_()
    params = _first_params(div)
    gpu.amid_loss(x, t, -5.0, 0.1, div, order, div_params=params, compile="eager").backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    assert torch.isfinite(x.grad).all()


def _cuda_specialization(fn, args, kwargs):
    """Triton's own binder for a CUDA sm_90 target (no GPU needed): the signature types and
    attributes of a launch, what the on-disk cache key is made of besides the source."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    jit = JITFunction(fn)  # the compiled kernel of the function the interpreter runs here
    backend = make_backend(GPUTarget("cuda", 90, 128))
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    _, specialization, options = binder(*args, **kwargs, debug=False)
    return specialization, options


def test_compile_stage_plan_is_what_the_stages_launch():
    """The compile stage's variants (gpu.device_check.record_variants) are the launches of the
    accuracy and bench workloads, and a variant warmed up from its description has the cache
    key of the real launch: Triton's binder for sm_90 gives the same specialization for the
    recorded arguments and for the mock ones (dtype-only tensors, integer representatives)."""
    from gpu import _engine, device_check
    from gpu import _triton_kernel as tk

    before = (tk.triton_chunk, tk._normalizer_pass, _engine._triton_usable, list(_engine._TRITON))
    with device_check._Recording(keep_launches=True) as rec:
        device_check._accuracy_workloads("cpu", True)
    assert (
        tk.triton_chunk,
        tk._normalizer_pass,
        _engine._triton_usable,
        list(_engine._TRITON),
    ) == before
    assert not rec.errors and rec.launches
    planned = device_check.record_variants("accuracy", "cpu", True)
    assert planned == list(rec.variants)
    assert len(planned) == len({device_check.variant_key(*launch) for launch in rec.launches})
    # every (dtype, objective) of the stage runs its divergence pass with a gradient
    divergence = [v for v in planned if v[0] == "_divergence_pass"]
    assert {dict(v[2])["WANT_GRAD"] for v in divergence} == {True}
    assert {v[1][0][1] for v in divergence} == {"float32", "bfloat16"}
    seen = set()
    for name, args, kwargs in rec.launches:
        key = device_check.variant_key(name, args, kwargs)
        if key in seen:
            continue
        seen.add(key)
        fn = getattr(tk, name).fn
        mock = device_check._mock_args(key[1])
        assert _cuda_specialization(fn, args, kwargs) == _cuda_specialization(fn, mock, kwargs)
    assert {"ACC", "BLOCK_V", "num_warps"} <= {k for v in planned for k, _ in v[2]}
    assert {dict(v[2]).get("ACC") for v in planned} <= {True, None}  # the compiled choices


def test_compile_stage_torch_values_keep_the_losses():
    """Recording with the torch kernel's values (the tests stage's plan) leaves every loss as
    the torch backend computes it."""
    from gpu import device_check

    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 40, generator=gen), torch.randn(3, 40, generator=gen)
    want = gpu.amid_loss(s, t, -5.0, 0.1, reduction="none", backend="torch")
    with device_check._Recording(values="torch") as rec:
        got = gpu.amid_loss(s, t, -5.0, 0.1, reduction="none", backend="triton")
    assert rec.variants and torch.equal(got, want)


# --- eager CPU shortcuts ---------------------------------------------------------------------


def _without_shortcuts(monkeypatch):
    """Turn off every eager-CPU shortcut of the torch kernel: the uniform selects
    (``side``), the reductions that tell a mask is empty or full before it is formed
    (``bounds``, ``surely_above``, ``surely_nonzero``) and the two-stage row maximum."""
    from gpu import _divergences, _elementwise, _mixture, _torch_kernel

    def full_max(x):
        return tuple(torch.max(x, -1, keepdim=True))

    monkeypatch.setattr(_torch_kernel, "_max_and_index", full_max)
    for module in (_elementwise, _divergences, _mixture, _torch_kernel):
        for name, off in (("side", None), ("_side", None), ("bounds", None),
                          ("surely_above", False), ("surely_nonzero", False)):  # fmt: skip
            if hasattr(module, name):
                monkeypatch.setattr(module, name, lambda *a, _off=off, **k: _off)


def _shortcut_inputs():
    """Rows that take and that miss each shortcut: N(0, 2) rows, a peaked teacher, a student
    close to its teacher, rows spread over ±40 nats, rows with masked (−inf) tokens, a
    one-hot teacher, an all-equal student (ties at the maximum), p = q and ±1e4 logits."""
    gen = torch.Generator().manual_seed(20)
    n, v = 12, 300
    t = 2.0 * torch.randn(n, v, dtype=torch.float64, generator=gen)
    s = 2.0 * torch.randn(n, v, dtype=torch.float64, generator=gen)
    t[4, 17] += 15.0
    s[5] = t[5] + 0.05 * torch.randn(v, dtype=torch.float64, generator=gen)
    s[6], t[6] = 80.0 * torch.rand(2, v, dtype=torch.float64, generator=gen) - 40.0
    s[7:9, 250:], t[7:9, 250:] = float("-inf"), float("-inf")
    s[9, 3], t[9, 40] = float("-inf"), float("-inf")
    s[0, 7], t[0, 7] = 1e4, -1e4
    t[1] = float("-inf")
    t[1, 5] = 0.0  # a one-hot teacher
    s[2] = 0.0  # an all-equal student
    s[3] = t[3]  # p = q
    return s, t


_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_eager_shortcuts_give_the_bits_of_the_full_forms(monkeypatch, dtype):
    """The eager-CPU shortcuts (uniform selects, masks told empty by a reduction, the
    two-stage row maximum) and the selects' bit blends only spare passes: loss and gradient
    are bitwise those of the kernel with every shortcut off and torch's own selects, for
    every divergence, order and α regime. The blends run here from 1 entry on (by default
    from ``_BLEND_MIN``, more than these 3600)."""
    from amid_ref._specs import SPECS
    from gpu import _elementwise

    grid = [(spec.name, params) for spec in SPECS.values() if spec.offered_by("gpu")
            for params in spec.cases_for("grid")]  # fmt: skip
    s0, t0 = (x.to(dtype) for x in _shortcut_inputs())
    cases = [(div, params, order, alpha, lam)
             for div, params in grid for order in amid_ref.ORDERS
             for alpha, lam in ((-5.0, 0.1), (0.5, 0.3), (3.0, 0.7), (0.0, 0.0),
                                (float("-inf"), 0.4), (1.0, 0.5))]  # fmt: skip

    def run():
        out = []
        for div, params, order, alpha, lam in cases:
            s = s0.clone().requires_grad_()
            try:
                loss = gpu.amid_loss(s, t0, alpha, lam, div, order, div_params=params,
                                     reduction="none", backend="torch")  # fmt: skip
                loss.sum().backward()
            except ValueError as exc:  # an infinite loss with a gradient: the same message
                out.append(str(exc))
                continue
            out.append((loss.detach(), s.grad))
        return out

    default = run()
    monkeypatch.setattr(_elementwise, "_BLEND_MIN", 0)
    fast = run()
    _without_shortcuts(monkeypatch)
    monkeypatch.setattr(_elementwise, "_BLEND_MIN", math.inf)
    full = run()
    taken = 0
    for case, a, b, c in zip(cases, fast, full, default, strict=True):
        if any(isinstance(x, str) for x in (a, b, c)):
            assert a == b == c, case
            continue
        taken += 1
        for x, y, z in zip(a, b, c, strict=True):
            assert torch.equal(x.view(_BITS[dtype]), y.view(_BITS[dtype])), case
            assert torch.equal(z.view(_BITS[dtype]), y.view(_BITS[dtype])), case
    assert taken >= len(cases) // 2  # most cases ran to a gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_selects_blend_the_bits_of_torch_where(dtype):
    """``where`` and ``masked_fill_`` just below and from ``_BLEND_MIN`` entries on (torch's
    select, then the blend): the bits of ``torch.where`` / ``Tensor.masked_fill_`` for
    every operand form, with NaNs (their payloads), ±inf and ±0 among the operands, and a
    mixed, an empty and a full mask."""
    from gpu._elementwise import _BLEND_MIN, Shared, masked_fill_, where

    ints = _BITS[dtype]

    def same(got, want, what):
        assert got.dtype == want.dtype and torch.equal(got.view(ints), want.view(ints)), what

    gen = torch.Generator().manual_seed(3)
    for n in (_BLEND_MIN - 1, _BLEND_MIN, 2 * _BLEND_MIN + 7):
        a = torch.randn(n, dtype=dtype, generator=gen)
        b = torch.randn(n, dtype=dtype, generator=gen)
        for x in (a, b):
            x[:8] = torch.tensor([math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-310, 1.0])
            x[:8] = x[:8][torch.randperm(8, generator=gen)]
        mixed = torch.rand(n, generator=gen) < 0.5
        for cond in (mixed, torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)):
            same(where(cond, a, b), torch.where(cond, a, b), (n, "a, b"))
            same(where(Shared(cond), a, b), torch.where(cond, a, b), (n, "shared"))
            for z in (0.0, -0.0, 2.5, math.inf, math.nan):
                same(where(cond, a, z), torch.where(cond, a, z), (n, "a", z))
                same(where(cond, z, b), torch.where(cond, z, b), (n, z, "b"))
                same(masked_fill_(a.clone(), cond, z), a.clone().masked_fill_(cond, z), (n, z))
            out = b.clone()
            got = where(cond, a, out, out=out)
            same(got, torch.where(cond, a, b), (n, "out=b"))
            assert got.data_ptr() == out.data_ptr()
            out, spent = b.clone(), a.clone()  # the blend may work in a spent operand
            got = where(cond, spent, out, out=out, spend_a=True)
            same(got, torch.where(cond, a, b), (n, "out=b, a spent"))
            assert got.data_ptr() == out.data_ptr()
            out = torch.empty_like(a)
            assert where(cond, a, b, out=out).data_ptr() == out.data_ptr()
            same(out, torch.where(cond, a, b), (n, "out"))


def test_told_forms_the_mask_unless_the_bounds_settle_it():
    """``told`` skips the mask only where every entry lies in [lo, hi] (its value there);
    at a bound's edge, beyond it, with a NaN or when traced it forms the mask and its side."""
    from gpu._elementwise import told

    formed = []

    def form(x, cond):
        return lambda: formed.append(1) or cond(x)

    x = torch.tensor([-1.0, 0.5, 1.0])
    assert told(x, -1.0, 1.0, True, form(x, lambda v: v.abs() <= 1.0)) == (None, True)
    assert told(x, -math.inf, 2.0, False, form(x, lambda v: v > 2.0)) == (None, False)
    assert not formed
    mask, side = told(x, -0.5, 1.0, True, form(x, lambda v: v.abs() <= 0.5))
    assert formed and side is None and mask.tolist() == [False, True, False]
    mask, side = told(x, 0.0, 2.0, False, form(x, lambda v: v > 2.0))
    assert side is False and not mask.any()  # formed: the bounds leave -1 outside [0, 2]
    nan = torch.tensor([0.0, math.nan])
    mask, side = told(nan, -1.0, 1.0, True, form(nan, lambda v: v.abs() <= 1.0))
    assert mask.tolist() == [True, False] and side is None


def test_mask_bounds_tell_only_what_holds():
    """``bounds``, ``surely_above`` and ``surely_nonzero`` say True only when the mask they
    spare would be empty; a NaN, a ±0, an entry at the bound or a traced call make them
    say *unknown* (False / None)."""
    from gpu._elementwise import bounds, surely_above, surely_nonzero

    x = torch.tensor([1.0, -2.0, 3.0])
    assert bounds(x) == (-2.0, 3.0)
    assert surely_nonzero(x) and surely_nonzero(-x.abs()) and surely_nonzero(x.abs())
    for zero in (0.0, -0.0):
        assert not surely_nonzero(torch.tensor([1.0, zero, -1.0]))
        assert not surely_nonzero(torch.tensor([1.0, zero]))
    nan = torch.tensor([1.0, float("nan")])
    assert not surely_nonzero(nan) and not surely_above(nan, 0.0)
    assert all(v != v for v in bounds(nan))  # NaN: every comparison false
    assert surely_above(torch.tensor([float("-inf") + 1e300, 0.5]), -1.0) is False
    assert surely_above(torch.tensor([0.5, 2.0]), 0.5) is False  # at the bound
    assert surely_above(torch.tensor([0.5, 2.0]), 0.25)
    assert not surely_above(torch.tensor([float("-inf"), 2.0]), float("-inf"))
    assert surely_above(torch.tensor([-1e38, 2.0]), float("-inf"))
    empty = torch.empty(0)
    assert bounds(empty) is None and not surely_above(empty, 0.0) and not surely_nonzero(empty)


@pytest.mark.parametrize("vocab", [1, 255, 256, 300, 512, 1000])
def test_two_stage_row_maximum_is_torch_max(vocab):
    """``_max_and_index`` gives ``torch.max(x, -1, keepdim=True)``: values and the first
    index of the maximum, ties within and across blocks, NaN (the first NaN), ±inf and
    all −inf rows, leading dimensions and a non-contiguous row stride."""
    from gpu._torch_kernel import _max_and_index

    gen = torch.Generator().manual_seed(vocab)
    x = torch.randn(3, 9, vocab, generator=gen)
    x[0, 0] = 5.0  # all tied
    x[0, 1, -1] = 50.0  # the last entry
    x[0, 2, vocab // 2] = x[0, 2, vocab - 1] = 40.0  # ties across blocks
    x[0, 3, vocab // 3] = float("nan")
    x[0, 3, -1] = float("nan")
    x[0, 4] = float("-inf")
    x[0, 5, vocab // 2] = float("inf")
    x[1, :, 0] = 30.0
    x[2, :, :] = x[2, :, :].round()  # many ties
    for t in (x, x.double(), x[:, ::2], x.transpose(0, 1), x[..., ::2]):
        top, index = _max_and_index(t)
        want_top, want_index = torch.max(t, -1, keepdim=True)
        assert torch.equal(index, want_index)
        assert torch.equal(top.nan_to_num(nan=7.0), want_top.nan_to_num(nan=7.0))


def test_known_exponentials_are_the_exponentials():
    """``exp_of`` of a log-distribution recorded by ``note_exp`` (its log-normalizer's
    ``e^(x − M)`` times ``e^(−log1p(S_o))``) is the softmax of x − M to 4 ulps (against
    float64; ``torch.exp`` of the log-probabilities carries an ulp of |log q| relative, up
    to 32 ulps here), on rows with −inf entries, ties of the maximum and a
    one-hot row; a write into the log-probabilities (a new version) or leaving
    ``known_exps`` drops the record (``torch.exp`` itself)."""
    from gpu._elementwise import exp_of, known_exps, note_exp
    from gpu._torch_kernel import LocalReduce

    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(3)
        x = (6 * torch.randn(5, 300, generator=gen)).to(dtype)
        x[1, ::3] = -math.inf
        x[2, :4] = x[2].max() + 1.0  # a tie of the maximum
        x[3] = -math.inf
        x[3, 7] = 0.0  # one-hot
        red = LocalReduce()
        ((top, k),) = red.row_maxima(x)
        shifted = x - top
        kept: list = []
        (others,) = red.others((shifted, k), keep=kept)
        lx = shifted - others.log1p()
        want = torch.softmax(shifted.double(), -1)  # (x − M rounds in float32)
        with known_exps():
            note_exp(lx, kept[0], torch.exp(-others.log1p()))
            got = exp_of(lx)
            assert got is not kept[0]  # a new tensor: callers write into it
            ulp = torch.finfo(dtype).eps * want
            assert bool(((got.double() - want).abs() <= 4 * ulp).all()), dtype
            assert bool(torch.equal(got == 0, want == 0))
            lx.add_(0.0)  # a new version: the record no longer holds
            assert torch.equal(exp_of(lx), torch.exp(lx))
            note_exp(lx, kept[0], torch.exp(-others.log1p()))
        assert torch.equal(exp_of(lx), torch.exp(lx))  # outside: no record


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_two_pivot_mixture_beyond_expm1_range(dtype):
    """The two-pivot mixture (λ ∈ [0.05, 0.95], the log ratios wanted) where |β·d| passes
    the range of its ``expm1`` (80 in float32, 700 in float64): each ratio is then the other
    one ± d and w = 1/(1 + e^t). Loss and gradient against ``amid_ref`` on rows whose
    log-probabilities differ by up to ±300, for β of both signs, λ at both ends of the range
    and between, the orders through r, and a closed-form pair."""
    from test_gpu import assert_grad_within

    from gpu._mixture import TWO_PIVOT_LAM_MIN

    gen = np.random.default_rng(5)
    base = gen.normal(0.0, 2.0, (4, 24))
    s = base + np.where(gen.random((4, 24)) < 0.5, 0.0, gen.uniform(-300.0, 300.0, (4, 24)))
    t = base.copy()
    s, t = (np.asarray(torch.tensor(x, dtype=dtype), dtype=np.float64) for x in (s, t))
    name = str(dtype).split(".")[1]
    for alpha in (-5.0, 7.0, -300.0):
        for lam in (TWO_PIVOT_LAM_MIN, 0.3, 1.0 - TWO_PIVOT_LAM_MIN):
            for div, params, order in (("kl", None, "pr"), ("kl", None, "rq"),
                                       ("ab", {"alpha": 0.2, "beta": 0.7}, "qr")):  # fmt: skip
                what = f"{div} {order} α={alpha} λ={lam} {name}"
                want = amid_ref.amid_loss(s, t, alpha, lam, div, order, params)
                want_g = amid_ref.amid_grad(s, t, alpha, lam, div, order, params)
                x = torch.tensor(s, dtype=dtype, requires_grad=True)
                loss = gpu.amid_loss(x, torch.tensor(t, dtype=dtype), alpha, lam, div, order,
                                     params, reduction="none", backend="torch")  # fmt: skip
                loss.sum().backward()
                span = np.maximum(np.ptp(s, -1), np.ptp(t, -1))
                assert_within(loss.detach().double().numpy(), want,
                              tolerance("gpu", "loss", name), what=what)  # fmt: skip
                assert_grad_within(x.grad.double().numpy(), want_g, name, what, span)
