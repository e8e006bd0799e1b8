"""The vocabulary-parallel loss over torch.distributed (gloo, CPU), held to the unsharded one.

One pool of worker processes per world size (2 and 3) is started for the whole module
(tests/_sharded.py), each worker holding one gloo process group on 127.0.0.1 (a free port);
cases are fed to every worker through queues in batches, the workers return the replicated
loss and their gradient slice, and this process compares them with :func:`gpu.amid_loss` on
the full rows (float64: the ``"vocab_parallel"`` rows of :mod:`amid_ref.tolerances`) and with
the oracle :mod:`amid_ref` in float64 (the ``"gpu"`` rows). Where the unsharded loss raises,
every rank must raise the same error with the same message.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from _sharded import (  # noqa: E402 (tests/ is on sys.path)
    DIVERGENCES,
    PG_TIMEOUT_S,
    RESULT_TIMEOUT_S,
    Pool,
    _agreed,
    _bounds,
    _grad_within,
    _log_softmax,
    _logits,
    _outcome,
    _started_pools,
)
from _triton import Launches, interpreted  # noqa: E402

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref._specs import ORDERS  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu._divergences import is_sum_of_terms  # noqa: E402

INF = math.inf
ALPHAS = (-INF, -5.0, 0.0, 1.0 - 1e-6, 1.0, 1.0 + 1e-6, INF)


@pytest.fixture(scope="module")
def pools(request):
    yield from _started_pools(request.module.__name__)


# --- jobs (run in the workers) --------------------------------------------------------------


def _first_pass_counter() -> Launches | None:
    """The Triton kernel's first pass, counted in this worker (installed once); ``None``
    where triton does not import."""
    try:
        from gpu import _triton_kernel as tk
    except ImportError:
        return None
    if not isinstance(tk._normalizer_pass, Launches):
        tk._normalizer_pass = Launches(tk._normalizer_pass)
    return tk._normalizer_pass


def _job_cases(rank: int, world: int, cases: list[dict]) -> list:
    """Each case: the full logits, this rank's columns; returns loss and gradient slice,
    and how many times this rank launched the Triton kernel's first pass."""
    counter = _first_pass_counter()
    out = []
    for c in cases:
        before = counter.count if counter is not None else 0
        lo, hi = c["bounds"][rank]
        dtype = getattr(torch, c["dtype"])
        s = torch.tensor(c["s"][..., lo:hi], dtype=dtype, requires_grad=c.get("grad", True))
        t = torch.tensor(c["t"][..., lo:hi], dtype=dtype)
        labels = None if c.get("labels") is None else torch.tensor(c["labels"])
        kw = dict(c["kw"])
        if c.get("vocab_start"):
            kw["vocab_start"] = lo

        def loss(s=s, t=t, labels=labels, kw=kw):
            return gpu.vocab_parallel_amid_loss(s, t, labels=labels, **kw)

        outcome = _outcome(loss, s, c)
        launched = (counter.count if counter is not None else 0) - before
        out.append((*outcome, launched))
    return out


# --- data and comparison --------------------------------------------------------------------


def _unsharded(c: dict):
    """``gpu.amid_loss`` on the full rows, with the same arguments (the outcome to match)."""
    dtype = getattr(torch, c["dtype"])
    s = torch.tensor(c["s"], dtype=dtype, requires_grad=c.get("grad", True))
    t = torch.tensor(c["t"], dtype=dtype)
    labels = None if c.get("labels") is None else torch.tensor(c["labels"])
    return _outcome(lambda: gpu.amid_loss(s, t, labels=labels, **c["kw"]), s, c)


def _check(
    pool: Pool, cases: list[dict], *, oracle: bool = False, timeout: float = RESULT_TIMEOUT_S
) -> int:
    """Run the cases on every rank (answers within ``timeout`` seconds); compare with the
    unsharded loss (and amid_ref)."""
    answers = pool.run(_job_cases, cases, timeout=timeout)
    for k, a in enumerate(answers):
        assert a[0] == "ok", f"rank {k} failed: {a}"
    n_raised = 0
    for i, c in enumerate(cases):
        what = f"world={pool.world} {c['dtype']} bounds={c['bounds']} {c['kw']}"
        want = _unsharded(c)
        got = [answers[k][1][i][:-1] for k in range(pool.world)]
        if c["kw"].get("backend") == "triton":  # the Triton kernel ran on every rank
            launched = [answers[k][1][i][-1] for k in range(pool.world)]
            assert all(n > 0 for n in launched), f"{what}: Triton launches per rank {launched}"
        agreed = _agreed(what, got, want, c["dtype"])
        if agreed is None:
            n_raised += 1
            continue
        loss, grad = agreed
        # amid_ref gives the loss per row: the oracle holds the cases of reduction "none"
        # without labels (the others are held to the unsharded loss above)
        per_row = c["kw"].get("reduction") == "none" and c.get("labels") is None
        if (oracle or c["dtype"] != "float64") and per_row:
            _check_oracle(c, loss, grad, what)
    return n_raised


def _check_oracle(c, loss, grad, what):
    """The sharded loss against amid_ref in float64 on the dtype-rounded logits."""
    kw = c["kw"]
    assert kw.get("reduction") == "none" and c.get("labels") is None
    dtype = getattr(torch, c["dtype"])
    s = torch.tensor(c["s"], dtype=dtype).double().numpy()
    t = torch.tensor(c["t"], dtype=dtype).double().numpy()
    args = (kw["alpha"], kw["lam"], kw["divergence"], kw["order"], kw["div_params"])
    temperature = kw.get("temperature", 1.0)
    want = amid_ref.amid_loss(s, t, *args, temperature)
    assert_within(loss, want, tolerance("gpu", "loss", c["dtype"]), what=what + " vs amid_ref")
    if grad is None:
        return
    want_g = amid_ref.amid_grad(
        s, t, *args, temperature, detach_assistant=kw.get("detach_assistant", False)
    )
    if c.get("upstream") is not None:  # the gradient of Σ upstream·loss
        want_g = want_g * np.asarray(c["upstream"], dtype=np.float64)[..., None]
    if math.isinf(kw["alpha"]) and 0.0 < kw["lam"] < 1.0:  # ties of the indicator w (test_gpu)
        lp, lq = _log_softmax(t / temperature), _log_softmax(s / temperature)
        eps = 2.2e-16 if c["dtype"] == "float64" else 1.2e-7
        with np.errstate(invalid="ignore"):
            grad = np.where(np.abs(lq - lp) <= 8 * eps * (1.0 + np.abs(lp)), want_g, grad)
    tol = tolerance("gpu", "grad", c["dtype"])
    _grad_within(grad, want_g, tol, what + " grad vs amid_ref", want)


def _case(s, t, bounds, dtype="float64", **kw) -> dict:
    extra = {k: kw.pop(k) for k in ("labels", "upstream", "grad", "vocab_start") if k in kw}
    kw.setdefault("reduction", "none")
    kw.setdefault("div_params", {})
    return {"s": s, "t": t, "bounds": bounds, "dtype": dtype, "kw": kw, **extra}


# --- the grid -------------------------------------------------------------------------------


#: The four shardings of the grid: world sizes 2 and 3, even and uneven (a width-1 shard).
LAYOUTS = {
    "w2-even": (2, 12, None),
    "w2-uneven": (2, 11, None),
    "w3-even": (3, 12, None),
    "w3-uneven": (3, 11, [1, 6, 4]),
}


def _rotated(items, n_slots: int, slot: int):
    """The items of one slot when item ``(i, j, ...)`` goes to slot ``sum(indices) % n``:
    every slot sees every divergence and order, and the slots together see every item."""
    return [it for idx, it in items if sum(idx) % n_slots == slot]


def _grid(alphas, lams, endpoint_alphas=()):
    """Divergence × order × α × λ, plus λ ∈ {0, 1} (r = q, r = p) at ``endpoint_alphas``."""
    pairs = [(a, lam) for a in alphas for lam in lams]
    pairs += [(a, lam) for a in endpoint_alphas for lam in (0.0, 1.0)]
    return [
        ((i, j, k), (d, p, o, a, lam))
        for i, (d, p) in enumerate(DIVERGENCES)
        for j, o in enumerate(ORDERS)
        for k, (a, lam) in enumerate(pairs)
    ]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_grid_float64_equals_unsharded(pools, layout):
    """Divergence × order × α × λ in float64, the full grid spread over the four layouts:
    loss ('none') and gathered gradient against gpu.amid_loss and amid_ref."""
    world, vocab, widths = LAYOUTS[layout]
    s, t = _logits(world * 100 + vocab, 4, vocab)
    bounds = _bounds(vocab, world, widths)
    slot = list(LAYOUTS).index(layout)
    cases = [
        _case(s, t, bounds, alpha=a, lam=lam, divergence=d, order=o, div_params=p)
        for d, p, o, a, lam in _rotated(_grid(ALPHAS, (0.3,), (-INF, 1.0)), len(LAYOUTS), slot)
    ]
    assert {(c["kw"]["divergence"], c["kw"]["order"]) for c in cases} == {
        (d, o) for d, _ in DIVERGENCES for o in ORDERS
    }
    _check(pools[world], cases, oracle=True)


@pytest.mark.parametrize("world", [2, 3])
def test_grid_float32_within_gpu_tolerance(pools, world):
    """float32: the sharded loss against amid_ref float64 with the ``"gpu"`` float32 rows
    (half of the grid per world size)."""
    vocab = 37
    s, t = _logits(7 + world, 4, vocab)
    bounds = _bounds(vocab, world)
    grid = _grid((-INF, 1.0 - 1e-6, 1.0 + 1e-6, INF), (0.3,))
    cases = [
        _case(s, t, bounds, "float32", alpha=a, lam=lam, divergence=d, order=o, div_params=p)
        for d, p, o, a, lam in _rotated(grid, 2, world - 2)
    ]
    _check(pools[world], cases)


def test_whole_shard_of_minus_inf(pools):
    """A shard entirely -inf on a row (both, student only, teacher only): exact, or the
    same error as the unsharded loss (e.g. +inf loss, empty support at α ≥ 1)."""
    vocab = 11
    s, t = _logits(3, 4, vocab)
    for world, widths in ((2, None), (3, [4, 4, 3])):
        bounds = _bounds(vocab, world, widths)
        lo, hi = bounds[-1]
        s2, t2 = s.copy(), t.copy()
        s2[0, lo:hi] = t2[0, lo:hi] = -INF  # a padded vocabulary tail
        s2[1, :lo] = -INF  # the student puts no mass on the first shards
        t2[2, lo:hi] = -INF  # the teacher puts none on the last
        grid = _grid((-INF, 0.5, 1.0, 3.0), (0.4,), (0.5,))
        cases = [
            _case(s2, t2, bounds, dtype, alpha=a, lam=lam, divergence=d, order=o, div_params=p)
            for dtype in ("float64", "float32")
            for d, p, o, a, lam in _rotated(grid, 4, 2 * (world - 2) + (dtype == "float32"))
        ]
        n_raised = _check(pools[world], cases)
        assert 0 < n_raised < len(cases)  # both outcomes are exercised


def _tied_maxima(vocab: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (rows ≥ 4, V = 11) whose first four rows have their maximum on several shards
    of the layouts (2, even) and (3, [4, 4, 3])."""
    s, t = _logits(5, rows, vocab)
    s[0, [1, 9]] = t[0, [1, 9]] = 30.0  # on the first and the last shard, both sides
    s[1, [2, 6, 10]] = 25.0  # on every shard of three, the student only
    t[2, [0, 10]] = 40.0  # the teacher only; s, t and so log m tied on row 3:
    s[3], t[3] = np.full(vocab, -50.0), np.full(vocab, -50.0)
    s[3, [3, 8]] = t[3, [3, 8]] = 0.0
    return s, t


def test_maximum_tied_across_shards(pools):
    """Rows whose maximum (of s, of t, of log m) occurs on several shards: the first
    occurrence in vocabulary order is the dominant entry (the reducer's rarer path, one more
    collective), as in the unsharded loss; a confident row (S_o < eps) keeps it exact."""
    vocab = 11
    s, t = _tied_maxima(vocab, 4)
    for world, widths in ((2, None), (3, [4, 4, 3])):
        bounds = _bounds(vocab, world, widths)
        cases = [
            _case(
                s,
                t,
                bounds,
                "float64",
                alpha=a,
                lam=lam,
                divergence=d,
                order=o,
                div_params=p,
                temperature=temp,
            )
            for (d, p), o, a, lam, temp in (
                (("kl", {}), "pr", -5.0, 0.1, 1.0),
                (("kl", {}), "pr", 0.5, 0.3, 0.7),
                (("chi2", {}), "rq", INF, 0.4, 1.0),
                (("js", {}), "qr", 1.0, 0.6, 1.0),
            )
        ]
        assert _check(pools[world], cases, oracle=True) == 0


def test_masks_reductions_temperature_and_upstream(pools):
    """ignore_index masks with mean/sum/none, an all-ignored batch, temperature, a non-unit
    upstream gradient, detach_assistant, chunking, vocab_start, no-grad forward."""
    vocab = 13
    s, t = _logits(5, 6, vocab)
    s3 = s.reshape(2, 3, vocab)
    t3 = t.reshape(2, 3, vocab)
    labels = np.array([[1, -100, 2], [-100, 5, 6]])
    none_ignored = np.full((2, 3), -7)
    all_ignored = np.full((2, 3), -100)
    up = np.linspace(0.5, 2.0, 6).reshape(2, 3)
    base = {"alpha": -5.0, "lam": 0.1, "divergence": "kl", "order": "pr"}
    for world in (2, 3):
        bounds = _bounds(vocab, world)
        cases = []
        for red in ("mean", "sum", "none"):
            for lab in (labels, all_ignored, None):
                cases.append(_case(s3, t3, bounds, **{**base, "reduction": red}, labels=lab))
        cases += [
            _case(s3, t3, bounds, **base, ignore_index=-7, labels=none_ignored, reduction="mean"),
            _case(s3, t3, bounds, **base, upstream=up),
            _case(s3, t3, bounds, **{**base, "reduction": "mean"}, labels=labels, chunk_size=1),
            # a bool mask (True: the position counts) in place of the labels
            _case(s3, t3, bounds, **{**base, "reduction": "mean"}, labels=labels != -100),
            _case(s3, t3, bounds, **base, chunk_size=4, vocab_start=True),
            _case(s3, t3, bounds, **base, grad=False),
            _case(s3, t3, bounds, "float32", **base, temperature=0.3, upstream=up),
            _case(s3, t3, bounds, "bfloat16", **{**base, "order": "rq"}, labels=labels),
        ]
        for temperature in (0.5, 2.0):
            # the divergences that are not sums of terms, and one that is
            not_sums = [c for c in DIVERGENCES if not is_sum_of_terms(*c)]
            for d, p in (*not_sums, DIVERGENCES[1]):
                for o in ORDERS:
                    cases.append(
                        _case(
                            s,
                            t,
                            bounds,
                            alpha=0.5,
                            lam=0.4,
                            divergence=d,
                            order=o,
                            div_params=p,
                            temperature=temperature,
                        )
                    )
        for o in ORDERS:
            cases.append(
                _case(
                    s,
                    t,
                    bounds,
                    alpha=1.0,
                    lam=0.3,
                    divergence="kl",
                    order=o,
                    detach_assistant=True,
                )
            )
        _check(pools[world], cases)


def test_tiny_mixture_mass_takes_the_shifted_sum(pools):
    """Nearly disjoint p and q at α ≥ 1: Z far below e^-40 (float32) and e^-600 (float64);
    the sharded Z is then shifted by the global max of log m, as logsumexp does."""
    vocab = 10
    s = np.zeros((2, vocab))
    t = np.zeros((2, vocab))
    s[0, 1], t[0, 8] = 400.0, 400.0
    s[1, 2], t[1, 7] = 2000.0, 2000.0
    cases = [
        _case(s, t, _bounds(vocab, 2), dtype, alpha=a, lam=0.5, divergence=d, order=o, div_params=p)
        for dtype in ("float64", "float32")
        for a in (1.0, 3.0, INF)
        for d, p in (("kl", {}), ("tv", {}), ("renyi", {"order": 0.7}))
        for o in ("qr", "rp")
    ]
    assert _check(pools[2], cases) == 0  # the unsharded loss is finite on all of them


def test_nan_on_one_rank_raises_everywhere(pools):
    """A NaN (or +inf) in one rank's shard only: every rank raises the unsharded loss's
    ValueError naming the global row, within the process-group timeout."""
    vocab = 12
    s, t = _logits(11, 4, vocab)
    s = s.reshape(2, 2, vocab)
    t = t.reshape(2, 2, vocab)
    for world in (2, 3):
        bounds = _bounds(vocab, world)
        lo, _ = bounds[-1]
        s_bad = s.copy()
        s_bad[1, 0, lo + 1] = np.nan
        t_bad = t.copy()
        t_bad[0, 1, 0] = INF
        empty_shard = s.copy()
        empty_shard[0, 0, :] = -INF  # every shard of the row -inf: only -inf entries
        cases = [
            _case(s_bad, t, bounds, alpha=-5.0, lam=0.1),
            _case(s, t_bad, bounds, alpha=-5.0, lam=0.1, reduction="mean"),
            _case(s_bad, t, bounds, alpha=-5.0, lam=0.1, grad=False),
            _case(empty_shard, t, bounds, alpha=0.5, lam=0.1),
            _case(s_bad, t_bad, bounds, alpha=0.5, lam=0.1, labels=np.array([[1, 1], [-100, 1]])),
        ]
        raised = _check(pools[world], cases)
        assert raised == len(cases)  # the last one ignores the NaN row, not the +inf one
        # and the group still works afterwards
        _check(pools[world], [_case(s, t, bounds, alpha=-5.0, lam=0.1)])


def _overflow_inputs(vocab: int, bad: dict[tuple[int, int], int], dtype: str):
    """Logits of shape (2, 2, V) whose χ²(p‖q) gradient (λ = 0: r = q) exceeds the range of
    ``dtype`` on exactly one column per bad row (``bad``: row → column) and nowhere else,
    with a finite loss: q tiny at that column, so that ∂D/∂s_j ≈ −D/T there and q_k·D/T
    (k ≠ j, 1/V of it) elsewhere. float16 at T = 1: D ≈ 9.2e4 > 65504 > D/11; float32 at
    T = 0.01 (p peaked on the column): D ≈ 1e37 finite, D/T ≈ 1e39 > 3.4e38 > D/(11 T)."""
    s = np.zeros((2, 2, vocab))
    t = np.zeros((2, 2, vocab))
    for row, col in bad.items():
        if dtype == "float16":
            s[row][col] = -14.0
        else:
            s[row][col], t[row][col] = -0.828, 0.2
    return s, t


def test_gradient_overflow_on_one_rank_raises_everywhere(pools):
    """The gradient's flag bits travel in their own collective once per pass
    (``_ShardReduce.settle``): a gradient that overflows its dtype on one column, so on one
    rank's shard only, makes every rank raise the unsharded loss's ValueError naming the
    global row(s), with chunks of one row and with labels (the valid rows only), within the
    process-group timeout; the group keeps working afterwards."""
    vocab = 12
    temperature = {"float16": 1.0, "float32": 0.01}
    for world in (2, 3):
        bounds = _bounds(vocab, world)
        # one bad row on the last rank's shard, one on the first rank's
        bad = {(1, 0): bounds[-1][0] + 1, (0, 1): 0}
        first_kept, last_kept = np.array([[1, -100], [1, 1]]), np.array([[1, 1], [-100, 1]])
        cases = []
        for dtype in ("float16", "float32"):
            s, t = _overflow_inputs(vocab, bad, dtype)
            # the premise, by the oracle: one column per bad row beyond the dtype's range
            want_g = amid_ref.amid_grad(
                s.reshape(-1, vocab), t.reshape(-1, vocab), -5.0, 0.0, "chi2", "pr", {},
                temperature[dtype],
            ).reshape(s.shape)  # fmt: skip
            beyond = np.abs(want_g) > np.finfo(dtype).max
            assert sorted(map(tuple, np.argwhere(beyond))) == sorted(
                (*r, c) for r, c in bad.items()
            )
            kw = {"alpha": -5.0, "lam": 0.0, "divergence": "chi2", "order": "pr"}
            kw["temperature"] = temperature[dtype]
            cases += [
                _case(s, t, bounds, dtype, **kw),
                _case(s, t, bounds, dtype, **kw, chunk_size=1, reduction="sum"),
                _case(s, t, bounds, dtype, **kw, chunk_size=1, labels=first_kept),
                _case(s, t, bounds, dtype, **kw, chunk_size=3, labels=last_kept),
                _case(s, t, bounds, dtype, **kw, grad=False),  # no gradient: the loss
            ]
        assert _check(pools[world], cases, timeout=2 * PG_TIMEOUT_S) == len(cases) - 2
        s, t = _logits(11, 4, vocab)
        _check(pools[world], [_case(s, t, bounds, alpha=-5.0, lam=0.1)])


def _job_nan_gradient(rank: int, world: int, case: dict, bad_rank: int, bad_chunk: int):
    """:func:`_job_cases` with the gradient of chunk ``bad_chunk`` made NaN (at its first
    column) on rank ``bad_rank`` only, where its flag bits are looked for."""
    chunk = bad_chunk if rank == bad_rank else -1
    return _with_nan_gradient(chunk, _job_cases, rank, world, [case])


def _with_nan_gradient(bad_chunk: int, fn, *args):
    """``fn(*args)`` with the gradient of the torch kernel's chunk number ``bad_chunk`` (in
    call order) made NaN at its first column before its flags are taken."""
    import gpu._torch_kernel as kernel

    flags_of = kernel._grad_flags
    calls = []

    def poisoned(g):
        if len(calls) == bad_chunk:
            g[0, 0] = math.nan
        calls.append(len(g))
        return flags_of(g)

    kernel._grad_flags = poisoned
    try:
        return fn(*args)
    finally:
        kernel._grad_flags = flags_of


def test_nan_gradient_on_one_rank_raises_everywhere(pools):
    """A NaN gradient entry (a kernel bug: the guard is the same in every backend) on one
    rank's shard of one row: every rank raises the unsharded loss's FloatingPointError
    naming that row, within the process-group timeout."""
    vocab = 12
    s, t = _logits(13, 4, vocab)
    s, t = s.reshape(2, 2, vocab), t.reshape(2, 2, vocab)
    for world, bad_rank in ((2, 1), (3, 0)):
        case = _case(s, t, _bounds(vocab, world), alpha=-5.0, lam=0.1, chunk_size=1)
        want = _with_nan_gradient(2, _unsharded, case)  # the third row: (1, 0)
        assert want[0] == "raised" and "NaN gradient on row(s) [(1, 0)]" in want[2], want
        answers = pools[world].run(_job_nan_gradient, case, bad_rank, 2, timeout=2 * PG_TIMEOUT_S)
        for k, a in enumerate(answers):
            assert a == ("ok", [(*want, 0)]), f"rank {k}: {a}"  # 0: no Triton launch
        _check(pools[world], [case])  # the group keeps working


def _job_mismatch(rank: int, world: int, kws: list[dict]) -> list[str]:
    out = []
    for kw in kws:
        s = torch.zeros(3, 4, requires_grad=True)
        try:
            gpu.vocab_parallel_amid_loss(s, torch.zeros(3, 4), **kw[rank])
            out.append("no error")
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_ranks_disagreeing_on_arguments_raise_everywhere(pools):
    """Different λ on the two ranks, or a bad α on one rank only: every rank raises (the
    argument error travels in the first collective), and the group keeps working."""
    kws = [
        [{"alpha": -5.0, "lam": 0.2}, {"alpha": -5.0, "lam": 0.1}],
        [{"alpha": -5.0, "lam": 0.1}, {"alpha": math.nan, "lam": 0.1}],
        [{"alpha": -5.0, "lam": 0.1, "vocab_start": 0}, {"alpha": -5.0, "lam": 0.1}],
        [{"alpha": -5.0, "lam": 0.1, "vocab_start": 0}] * 2,
        [{"alpha": -5.0, "lam": 0.1}] * 2,
    ]
    (s0, out0), (s1, out1) = pools[2].run(_job_mismatch, kws)
    assert s0 == s1 == "ok"
    assert out0[0] == out1[0] and "disagree on lam" in out0[0]
    assert "another rank" in out0[1] and "alpha is NaN" in out1[1]
    assert out0[2] == out1[2] and "given on every rank or on none" in out0[2]
    assert out0[3] == out1[3] and "do not tile" in out0[3]
    assert out0[4] == out1[4] == "no error"


def _job_label_masks(rank: int, world: int, masks) -> list[str]:
    """Each case: this rank's bool mask of 13 rows; the loss raises iff the ranks differ."""
    out = []
    for mask in masks:
        s = torch.zeros(13, 4, requires_grad=True)
        try:
            gpu.vocab_parallel_amid_loss(
                s, torch.zeros(13, 4), -5.0, 0.1, labels=torch.tensor(mask[rank])
            )
            out.append("no error")
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_ranks_disagreeing_on_label_masks_raise_everywhere(pools):
    """Random pairs of valid-row masks (same counts, different rows, and equal ones), among
    them {0, 4, 5} against {1, 2, 6}, whose Σ (row + 1)² agree: the ranks raise exactly when
    their masks differ, every rank alike."""
    rng = np.random.default_rng(7)
    collide = np.zeros((2, 13), dtype=bool)
    collide[0, [0, 4, 5]] = collide[1, [1, 2, 6]] = True
    cases = [collide]
    for _ in range(40):
        a = rng.random(13) < rng.uniform(0.1, 0.9)
        b = a.copy() if rng.random() < 0.3 else rng.permutation(a)  # same count of valid rows
        cases.append(np.stack([a, b]))
    (s0, out0), (s1, out1) = pools[2].run(_job_label_masks, cases)
    assert s0 == s1 == "ok"
    for case, got0, got1 in zip(cases, out0, out1, strict=True):
        assert got0 == got1
        if (case[0] == case[1]).all():
            assert got0 == "no error"
        else:
            assert "disagree on labels (valid rows)" in got0, (case, got0)


def _job_retain_graph(rank: int, world: int, s_np, t_np, bounds) -> np.ndarray:
    lo, hi = bounds[rank]
    s = torch.tensor(s_np[:, lo:hi], requires_grad=True)
    loss = gpu.vocab_parallel_amid_loss(
        s, torch.tensor(t_np[:, lo:hi]), 0.5, 0.4, "hellinger", "rq"
    )
    loss.backward(retain_graph=True)
    (loss * 2.0).backward()  # the second backward recomputes, with collectives, on every rank
    return s.grad.numpy()


def test_retain_graph_second_backward(pools):
    s, t = _logits(4, 3, 11)
    s_t = torch.tensor(s, requires_grad=True)
    gpu.amid_loss(s_t, torch.tensor(t), 0.5, 0.4, "hellinger", "rq").backward()
    bounds = _bounds(11, 3)
    out = pools[3].run(_job_retain_graph, s, t, bounds)
    assert all(status == "ok" for status, _ in out), out
    grad = np.concatenate([g for _, g in out], axis=-1)
    tol = tolerance("vocab_parallel", "grad", "float64")
    _grad_within(grad, 3.0 * s_t.grad.numpy(), tol, "retain_graph")


def _job_create_graph(rank: int, world: int, s_np, t_np, bounds) -> str:
    lo, hi = bounds[rank]
    s = torch.tensor(s_np[:, lo:hi], requires_grad=True)
    loss = gpu.vocab_parallel_amid_loss(s, torch.tensor(t_np[:, lo:hi]), -5.0, 0.1)
    try:
        torch.autograd.grad(loss, s, create_graph=True)
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def test_double_backward_is_refused_on_every_rank(pools):
    """``create_graph=True`` raises the logits loss's error on every rank, before any
    collective (a plain ``once_differentiable`` would hand back a silent zero Hessian)."""
    s, t = _logits(4, 3, 11)
    out = pools[2].run(_job_create_graph, s, t, _bounds(11, 2))
    assert all(status == "ok" and "create_graph" in msg for status, msg in out), out


# --- DTensor --------------------------------------------------------------------------------


def _job_dtensor(rank: int, world: int, s_np, t_np) -> tuple:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    s = distribute_tensor(torch.tensor(s_np, requires_grad=True), mesh, [Shard(-1)])
    s = s.detach().requires_grad_()
    t = distribute_tensor(torch.tensor(t_np), mesh, [Shard(-1)])
    loss = gpu.vocab_parallel_amid_loss(s, t, 0.5, 0.3, "js", "qr", {"beta": 0.4})
    loss.backward()
    return float(loss.detach()), s.grad.full_tensor().numpy()


def test_dtensor_sharded_on_the_vocabulary(pools):
    s, t = _logits(21, 5, 11)
    s_t = torch.tensor(s, requires_grad=True)
    want = gpu.amid_loss(s_t, torch.tensor(t), 0.5, 0.3, "js", "qr", {"beta": 0.4})
    want.backward()
    for world in (3,):  # 11 columns: DTensor's uneven layout 4, 4, 3
        for k, (status, (loss, grad)) in enumerate(pools[world].run(_job_dtensor, s, t)):
            assert status == "ok", (k, loss)
            tol = tolerance("vocab_parallel", "loss", "float64")
            assert_within(loss, float(want.detach()), tol, what="dtensor loss")
            _grad_within(
                grad,
                s_t.grad.numpy(),
                tolerance("vocab_parallel", "grad", "float64"),
                "dtensor grad",
            )


# --- data parallel: DDP of AMiDLoss ------------------------------------------------------------


def _tiny_model(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Embedding(17, 8), torch.nn.Tanh(), torch.nn.Linear(8, 17)
    ).double()


def _ddp_batch():
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 17, (4, 6), generator=g)
    teacher = 3.0 * torch.randn(4, 6, 17, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 17, (4, 6), generator=g)
    labels[0, :2] = labels[1, 0] = -100  # 3 ignored in each half: 9 valid tokens each
    labels[3, 5] = labels[2, 1] = labels[2, 4] = -100
    return tokens, teacher, labels


def _job_ddp(rank: int, world: int) -> list:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(_tiny_model(0))
    tokens, teacher, labels = _ddp_batch()
    half = slice(2 * rank, 2 * rank + 2)
    crit = gpu.AMiDLoss(
        alpha=-5.0, lam=0.1, divergence="ab", div_params={"alpha": 0.2, "beta": 0.7}
    )
    crit(model(tokens[half]), teacher[half], labels=labels[half]).backward()
    return [p.grad.numpy() for p in model.parameters()]


def test_ddp_gradients_equal_single_process(pools):
    """DDP (gloo, 2 processes) of ``gpu.AMiDLoss``: each rank's averaged gradients equal the
    single-process gradients on the concatenated batch (each half has 9 valid tokens, so
    the mean of the two means is the mean over the batch)."""
    tokens, teacher, labels = _ddp_batch()
    assert int((labels[:2] != -100).sum()) == int((labels[2:] != -100).sum())
    model = _tiny_model(0)
    crit = gpu.AMiDLoss(
        alpha=-5.0, lam=0.1, divergence="ab", div_params={"alpha": 0.2, "beta": 0.7}
    )
    crit(model(tokens), teacher, labels=labels).backward()
    want = [p.grad.numpy() for p in model.parameters()]
    for k, (status, grads) in enumerate(pools[2].run(_job_ddp)):
        assert status == "ok", (k, grads)
        for g, w in zip(grads, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


# --- single-process errors (no collective is reached) ------------------------------------------


def test_bad_arguments_raise_before_any_collective():
    with pytest.raises(ValueError, match="alpha is NaN"):
        gpu.vocab_parallel_amid_loss(torch.zeros(2, 3), torch.zeros(2, 3), math.nan, 0.1)
    with pytest.raises(ValueError, match="lam must lie in"):
        gpu.vocab_parallel_amid_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, 2.0)
    with pytest.raises(TypeError, match="vocab_start"):
        gpu.vocab_parallel_amid_loss(
            torch.zeros(2, 3), torch.zeros(2, 3), 1.0, 0.5, vocab_start=1.5
        )


def test_needs_an_initialized_group():
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is initialized in the test process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        gpu.vocab_parallel_amid_loss(torch.zeros(2, 3), torch.zeros(2, 3), -5.0, 0.1)


def test_module_repr_and_names():
    crit = gpu.VocabParallelAMiDLoss(alpha=-5.0, lam=0.1)
    assert "alpha=-5.0" in repr(crit)
    assert "vocab_parallel_amid_loss" in gpu.__all__
    assert "VocabParallelAMiDLoss" in gpu.__all__


def test_logit_transforms_and_student_temperature(pools):
    """softcap, logit_scale and a student-only temperature on the shards equal the unsharded
    loss (held to amid_ref in tests/test_gpu_sparse.py)."""
    vocab = 12
    s, t = _logits(9, 4, vocab)
    base = {"alpha": -5.0, "lam": 0.1, "divergence": "kl", "order": "pr"}
    bounds = _bounds(vocab, 2)
    cases = [
        _case(s, t, bounds, **base, softcap=3.0),
        _case(s, t, bounds, **{**base, "order": "rq"}, softcap=(2.0, None), logit_scale=1.5),
        _case(s, t, bounds, **{**base, "divergence": "js"}, logit_scale=(0.5, 2.0)),
        _case(s, t, bounds, **base, temperature=2.0, temperature_applies_to="student"),
    ]
    assert _check(pools[2], cases) == 0


# --- communication: all_reduce calls and bytes, counted ------------------------------------

#: Bytes all-reduced per row per forward+backward of KL(p‖r) in float32 (docs/sharded.md).
BYTES_PER_ROW_BOUND = 64


def _job_count(rank: int, world: int, s_np, t_np, bounds, kw) -> dict:
    """One forward+backward, every ``torch.distributed.all_reduce`` counted (calls, bytes)."""
    lo, hi = bounds[rank]
    s = torch.tensor(s_np[:, lo:hi], dtype=torch.float32, requires_grad=True)
    t = torch.tensor(t_np[:, lo:hi], dtype=torch.float32)
    counts = {"calls": 0, "bytes": 0}
    all_reduce = dist.all_reduce
    counter = _first_pass_counter()
    before = counter.count if counter is not None else 0

    def counting(tensor, *args, **kwargs):
        counts["calls"] += 1
        counts["bytes"] += tensor.numel() * tensor.element_size()
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        loss = gpu.vocab_parallel_amid_loss(s, t, **kw)
        loss.sum().backward()
    finally:
        dist.all_reduce = all_reduce
    launched = (counter.count if counter is not None else 0) - before
    return {**counts, "launched": launched, "loss": loss.detach().double().numpy(),
            "grad": s.grad.double().numpy()}  # fmt: skip


def _bench_logits(seed: int, rows: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``python -m gpu.bench_vocab_parallel``'s kind: N(0, 2) logits, the
    teacher's with one token raised by 12."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, (rows, vocab))
    t = rng.normal(0.0, 2.0, (rows, vocab))
    t[np.arange(rows), rng.integers(0, vocab, rows)] += 12.0
    return s, t


@pytest.mark.parametrize(
    ("extra", "data", "max_bytes"),
    [
        ({}, _bench_logits, BYTES_PER_ROW_BOUND),
        ({"temperature": 2.0}, _bench_logits, BYTES_PER_ROW_BOUND),
        # peaked, long-tailed and wide rows: q underflows to 0 on the wide ones, whose
        # entries reach the student through log Z (3 more numbers per row)
        ({}, _logits, BYTES_PER_ROW_BOUND + 12),
    ],
    ids=["kl-pr", "kl-pr-temperature", "kl-pr-zeros-of-q"],
)
def test_collectives_counted_kl_pr(pools, extra, data, max_bytes):
    """KL(p‖r), α = −5, λ = 0.1, float32, 2 ranks, 128 rows in 4 chunks: the all_reduce
    calls (1 agreement check, 6 per chunk, 1 for the gradient's flags of every chunk at the
    end: docs/sharded.md) and the bytes per row (the agreement check's 288 included)."""
    rows, vocab, chunks = 128, 1000, 4
    s, t = data(11, rows, vocab)
    kw = {"alpha": -5.0, "lam": 0.1, "divergence": "kl", "order": "pr", "div_params": {},
          "reduction": "none", "chunk_size": rows // chunks, **extra}  # fmt: skip
    bounds = _bounds(vocab, 2)
    out = pools[2].run(_job_count, s, t, bounds, kw)
    assert all(a[0] == "ok" for a in out), out
    got = [a[1] for a in out]
    assert got[0]["calls"] == got[1]["calls"] and got[0]["bytes"] == got[1]["bytes"]
    per_row = got[0]["bytes"] / rows
    assert per_row <= max_bytes, f"{per_row:.1f} bytes per row"
    assert got[0]["calls"] == 1 + 6 * chunks + 1, got[0]["calls"]
    # the counted run is still the loss: against amid_ref in float64
    np.testing.assert_array_equal(got[0]["loss"], got[1]["loss"])
    grad = np.concatenate([g["grad"] for g in got], axis=-1)
    case = {"s": s, "t": t, "dtype": "float32", "kw": kw}
    _check_oracle(case, got[0]["loss"], grad, "counted KL(p‖r)")


# --- the Triton backend (compiled on CUDA, interpreted here: TRITON_INTERPRET=1) -------------

needs_triton = pytest.mark.skipif(
    not interpreted() or importlib.util.find_spec("triton") is None,
    reason="the sharded Triton kernel is checked here under TRITON_INTERPRET=1 (CPU)",
)


@needs_triton
@pytest.mark.parametrize("world", [2, 3])
def test_triton_grid_within_gpu_tolerance(pools, world):
    """backend="triton": the passes on each shard, their row statistics combined over the
    group between passes; every divergence once, the order and α ∈ {−5, 1 + 1e-6, ∞}
    taken in turn, λ = 0.3, in float32, against the unsharded Triton loss and amid_ref:
    half of the divergences per world size (uneven shards at 3). The divergence × order ×
    α × λ grid itself is tests/test_triton_kernel.py's, unsharded; the combine steps do not
    depend on the divergence but through Rényi's row sums and the pair's stored terms,
    which test_triton_edges_ties_minus_inf_temperature covers in more orders."""
    vocab = 37
    s, t = _logits(17 + world, 4, vocab)
    bounds = _bounds(vocab, world, [12, 20, 5] if world == 3 else None)
    alphas = (-5.0, 1.0 + 1e-6, INF)
    cases = [
        _case(s, t, bounds, "float32", alpha=alphas[i % 3], lam=0.3, divergence=d,
              order=list(ORDERS)[i % len(ORDERS)], div_params=p, backend="triton")
        for i, (d, p) in enumerate(DIVERGENCES)
        if i % 2 == world - 2
    ]  # fmt: skip
    assert _check(pools[world], cases) == 0


@needs_triton
def test_triton_edges_ties_minus_inf_temperature(pools):
    """backend="triton" where the combination of the slices matters: maxima tied across
    shards (the first in vocabulary order is the dominant entry), a shard entirely −inf on
    a row (one side or both), a confident row, temperature, detach_assistant, a
    non-unit upstream and labels; bfloat16 at a larger V."""
    vocab = 11
    s, t = _tied_maxima(vocab, 6)
    for world, widths in ((2, None), (3, [4, 4, 3])):
        bounds = _bounds(vocab, world, widths)
        lo, hi = bounds[-1]
        s2, t2 = s.copy(), t.copy()
        s2[4, lo:hi] = t2[4, lo:hi] = -INF
        t2[5, lo:hi] = -INF
        cases = [
            _case(s2, t2, bounds, "float32", alpha=a, lam=lam, divergence=d, order=o,
                  div_params=p, temperature=temp, detach_assistant=detach, backend="triton")
            for (d, p), o, a, lam, temp, detach in (
                (("kl", {}), "pr", -5.0, 0.1, 1.0, False),
                (("kl", {}), "rq", 0.5, 0.3, 0.7, False),
                (("chi2", {}), "rq", INF, 0.4, 1.0, False),
                (("js", {"beta": 0.5}), "qr", 1.0, 0.6, 1.0, True),
                (("ab", {"alpha": 0.2, "beta": 0.7}), "rq", -5.0, 0.1, 2.0, False),
                (("renyi", {"order": 2.0}), "pr", 3.0, 0.5, 1.0, False),
            )
        ]  # fmt: skip
        labels = np.array([1, -100, 3, 1, 1, -100])
        cases += [
            _case(s2, t2, bounds, "float32", alpha=-5.0, lam=0.1, labels=labels,
                  reduction=reduction, backend="triton", upstream=0.5)
            for reduction in ("mean", "sum")
        ]  # fmt: skip
        _check(pools[world], cases)
    big = 300
    s, t = _logits(9, 3, big)
    bounds = _bounds(big, 2, [170, 130])
    cases = [
        _case(
            s,
            t,
            bounds,
            "bfloat16",
            alpha=a,
            lam=0.1,
            divergence=d,
            order=o,
            div_params=p,
            backend="triton",
        )
        for (d, p), o, a in (
            (("kl", {}), "pr", -5.0),
            (("js", {"beta": 0.5}), "pr", 1.0),
            (("ab", {"alpha": 0.2, "beta": 0.7}), "rq", -5.0),
        )
    ]
    _check(pools[2], cases)


@needs_triton
def test_apart_rows_through_log_z_on_three_ranks(pools):
    """p and q 10–100 nats apart at α > 1 (tests/test_fidelity_sweeps.py's apart rows): Z
    down to e^−60, w 0 in the dtype where q ≫ p, and those entries reach the student only
    through log Z, by the normalizer term K, whose two row sums each rank completes with
    P_r's; torch in float64 and float32 and Triton in float32 on 3 uneven ranks, against
    the unsharded loss and amid_ref."""
    from test_fidelity_sweeps import apart_rows

    s, t = apart_rows()
    bounds = _bounds(s.shape[-1], 3, [1, 2, 1])
    objectives = (("kl", "rq", {}), ("chi2", "rp", {}), ("ab", "qr", {"alpha": 0.2, "beta": 0.7}))
    cases = [
        _case(s, t, bounds, dtype, alpha=a, lam=0.5, divergence=d, order=o, div_params=p,
              **({"backend": "triton"} if triton else {}))
        for dtype, triton in (("float64", False), ("float32", False), ("float32", True))
        if not triton or (interpreted() and importlib.util.find_spec("triton") is not None)
        for a in (5.0, 50.0)
        for d, o, p in objectives
    ]  # fmt: skip
    assert _check(pools[3], cases, oracle=True) == 0


def test_small_lambda_pairs_and_infinite_alpha_on_three_ranks(pools):
    """The near-row forms on 3 uneven ranks: AB(−1.6, −2.9) D(q‖r) and χ² D(r‖q) at
    λ = 1e-6 (pair − (Σ g_r)·K on rows where r ⊙ w is near a multiple of q), and AB D(p‖r)
    at α = −inf (K exact on every row), torch in float64 and float32 and Triton in float32,
    on rows 1e-2 apart and drawn apart, against the unsharded loss and amid_ref. Σ g_r and
    K's sums are completed across the shards with P_r's collective."""
    rng = np.random.default_rng(3)
    t = rng.normal(0.0, 3.0, (4, 9))
    s = np.concatenate([t[:2] + rng.normal(0.0, 1e-2, (2, 9)), rng.normal(0.0, 3.0, (2, 9))])
    s, t = s.astype(np.float32).astype(np.float64), t.astype(np.float32).astype(np.float64)
    bounds = _bounds(9, 3, [4, 1, 4])
    ab = {"alpha": -1.6, "beta": -2.9}
    objectives = ((1.0001, 1e-6, "ab", "qr", ab), (-5.0, 1e-6, "chi2", "rq", {}),
                  (-INF, 0.5, "ab", "pr", ab))  # fmt: skip
    cases = [
        _case(s, t, bounds, dtype, alpha=a, lam=lam, divergence=d, order=o, div_params=p,
              **({"backend": "triton"} if triton else {}))
        for dtype, triton in (("float64", False), ("float32", False), ("float32", True))
        if not triton or (interpreted() and importlib.util.find_spec("triton") is not None)
        for a, lam, d, o, p in objectives
    ]  # fmt: skip
    assert _check(pools[3], cases, oracle=True) == 0


def test_triton_every_mixture_regime(pools):
    """backend="triton" in each mixture regime the kernel specializes on (λ = 0, λ = 1,
    α = ±∞, α = 1, |β| ≥ ½ and the pivoted |β| < ½ with its α → 1 series, λ on both sides
    of ½), for KL(p‖r) and AB D(r‖q) (q an argument: the closed-form pair) in turn (both
    at λ = 0 and 1), on 3 uneven ranks in float32, against the unsharded Triton loss and
    amid_ref."""
    vocab = 23
    s, t = _logits(29, 4, vocab)
    bounds = _bounds(vocab, 3, [9, 3, 11])
    regimes = [(-5.0, 0.0), (-5.0, 1.0), (-INF, 0.3), (INF, 0.7), (1.0, 0.3), (-3.0, 0.8),
               (0.5, 0.2), (1.0 + 1e-6, 0.6)]  # fmt: skip
    objectives = (("kl", "pr", {}), ("ab", "rq", {"alpha": 0.2, "beta": 0.7}))
    cases = [
        _case(s, t, bounds, "float32", alpha=a, lam=lam, divergence=d, order=o, div_params=p,
              backend="triton")
        for k, (a, lam) in enumerate(regimes)
        for d, o, p in (objectives if k < 2 else objectives[k % 2 : k % 2 + 1])
    ]  # fmt: skip
    assert _check(pools[3], cases) == 0


@needs_triton
@pytest.mark.parametrize("divergence", ["kl", "renyi"])
def test_triton_collectives_counted(pools, divergence):
    """backend="triton", 2 ranks, 16 rows in 2 chunks: 1 agreement check, per chunk 3
    (pass a) + 3 (pass b) + 1 (pass c) + 1 (pass c2), Rényi 2 more (pass c0), and 1 for the
    gradient's flags at the end (docs/gpu.md, *The Triton kernel*), and the bytes they
    carry; the loss against amid_ref."""
    rows, vocab, chunks = 16, 40, 2
    s, t = _bench_logits(3, rows, vocab)
    params = {"order": 2.0} if divergence == "renyi" else {}
    kw = {"alpha": -5.0, "lam": 0.1, "divergence": divergence, "order": "pr",
          "div_params": params, "reduction": "none", "chunk_size": rows // chunks,
          "backend": "triton"}  # fmt: skip
    out = pools[2].run(_job_count, s, t, _bounds(vocab, 2), kw)
    assert all(a[0] == "ok" for a in out), out
    got = [a[1] for a in out]
    assert got[0]["launched"] == got[1]["launched"] == chunks  # the Triton kernel ran
    per_chunk = 8 + 2 * (divergence == "renyi")
    assert got[0]["calls"] == got[1]["calls"] == 1 + per_chunk * chunks + 1, got[0]["calls"]
    # bytes per row, the agreement check's 288 included: 111.25 (KL) and 119.25 (Rényi)
    # with the first maxima's ids in float32 (123.25 and 131.25 in float64)
    per_row = got[0]["bytes"] / rows
    assert got[0]["bytes"] == got[1]["bytes"] and per_row <= 112 + 8 * (divergence == "renyi")
    np.testing.assert_array_equal(got[0]["loss"], got[1]["loss"])
    grad = np.concatenate([g["grad"] for g in got], axis=-1)
    case = {"s": s, "t": t, "dtype": "float32", "kw": kw}
    _check_oracle(case, got[0]["loss"], grad, f"counted {divergence} (triton)")


@needs_triton
def test_triton_nan_on_one_rank_raises_everywhere(pools):
    """backend="triton": a NaN or +inf in one rank's shard raises the unsharded loss's error
    on every rank; the group works afterwards."""
    vocab = 12
    s, t = _logits(11, 4, vocab)
    bounds = _bounds(vocab, 2)
    lo, _ = bounds[-1]
    s_bad = s.copy()
    s_bad[1, lo + 1] = np.nan
    t_bad = t.copy()
    t_bad[2, 0] = INF
    cases = [
        _case(s_bad, t, bounds, "float32", alpha=-5.0, lam=0.1, backend="triton"),
        _case(s, t_bad, bounds, "float32", alpha=0.5, lam=0.1, backend="triton"),
        _case(s_bad, t, bounds, "float32", alpha=-5.0, lam=0.1, grad=False, backend="triton"),
    ]
    assert _check(pools[2], cases) == len(cases)
    valid = _case(
        s, t, bounds, "float32", alpha=-5.0, lam=0.1, divergence="kl", order="pr", backend="triton"
    )
    assert _check(pools[2], [valid]) == 0


def test_backend_is_agreed_and_checked():
    """A bad backend is refused before any collective, naming the parameter."""
    s = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        gpu.vocab_parallel_amid_loss(s, s, -5.0, 0.1, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        gpu.VocabParallelAMiDLoss(-5.0, 0.1, backend="fast")


def _count_all_reduces(monkeypatch) -> list[int]:
    """``torch.distributed.all_reduce`` counted in this process: ``calls[0]``."""
    calls = [0]
    all_reduce = dist.all_reduce

    def counting(*args, **kwargs):
        calls[0] += 1
        return all_reduce(*args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", counting)
    return calls


def _one_rank_group(device: str):
    """A default process group of one rank in this process (gloo on the CPU, NCCL on CUDA);
    the caller destroys it."""
    if dist.is_initialized():  # pragma: no cover - left by another test
        pytest.skip("a default process group already exists in this process")
    if device == "cuda":
        torch.cuda.set_device(0)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


@pytest.mark.parametrize(
    "device",
    [pytest.param("cpu", marks=needs_triton), pytest.param("cuda", marks=pytest.mark.gpu)],
)
def test_triton_one_rank_group_is_the_unsharded_kernel(monkeypatch, device):
    """backend="triton" on a group of one rank, in this process: the whole vocabulary is the
    one shard, so every combine step of gpu._triton_kernel.shard_chunk runs on its own
    partials, and loss and gradient are the unsharded Triton loss's within float32 rounding
    (the host's log1p against the kernel's). On CUDA (NCCL) this is the sharded kernel's
    compile and collectives on one GPU; here (gloo) the same steps under the interpreter.
    Every pair form (KL, JS, AB) and Rényi's row sums, with the collectives counted."""
    calls = _count_all_reduces(monkeypatch)
    _one_rank_group(device)
    try:
        s_np, t_np = _logits(29, 8, 70 if device == "cpu" else 4099)
        s0 = torch.tensor(s_np, dtype=torch.float32, device=device)
        t0 = torch.tensor(t_np, dtype=torch.float32, device=device)
        for divergence, params in (("kl", None), ("js", {"beta": 0.3}),
                                   ("ab", {"alpha": 0.2, "beta": 0.7}),
                                   ("renyi", {"order": 2.0})):  # fmt: skip
            kw = {"divergence": divergence, "order": "rq" if divergence == "ab" else "pr",
                  "div_params": params, "reduction": "none", "chunk_size": 4,
                  "backend": "triton"}  # fmt: skip
            s1 = s0.clone().requires_grad_()
            calls[0] = 0
            got = gpu.vocab_parallel_amid_loss(s1, t0, -5.0, 0.1, vocab_start=0, **kw)
            got.sum().backward()
            counted = calls[0]
            s2 = s0.clone().requires_grad_()
            want = gpu.amid_loss(s2, t0, -5.0, 0.1, **kw)
            want.sum().backward()
            what = f"{divergence} on {device}"
            torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7, msg=what)
            torch.testing.assert_close(s1.grad, s2.grad, rtol=2e-6, atol=1e-7, msg=what)
            per_chunk = 8 + 2 * (divergence == "renyi")
            assert counted == 1 + per_chunk * 2 + 1, (what, counted)
    finally:
        dist.destroy_process_group()


@needs_triton
def test_triton_malformed_launch_variable_is_an_argument_error(monkeypatch):
    """A malformed ``AMID_TRITON_LAUNCH`` (gpu._triton_kernel.LAUNCH_ENV) is an argument
    error of the sharded Triton loss: raised with its message after the agreement
    collective, which a rank that rejected its arguments still joins (the others raise
    too), before any kernel runs; never a fall-back or a rank left waiting."""
    calls = _count_all_reduces(monkeypatch)
    monkeypatch.setenv("AMID_TRITON_LAUNCH", "1:100:4")
    _one_rank_group("cpu")
    try:
        s = torch.zeros(2, 40, requires_grad=True)
        with pytest.raises(ValueError, match="AMID_TRITON_LAUNCH: '1:100:4'"):
            gpu.vocab_parallel_amid_loss(s, torch.zeros(2, 40), -5.0, 0.1, backend="triton")
        assert calls[0] == 1  # the agreement check, and nothing after it
    finally:
        dist.destroy_process_group()
