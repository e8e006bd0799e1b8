"""The Triton backend of :func:`gpu.amid_loss` held to :mod:`amid_ref` in float64.

On a machine without CUDA the kernels run under triton's interpreter (``TRITON_INTERPRET=1``,
set by ``tests/conftest.py`` before triton is imported), in numpy: the same kernel source,
the same float32 arithmetic, the elementary functions formed as the module docstring of
:mod:`gpu._triton_kernel` says. Loss and gradient are compared with the reference on the
same dtype-rounded logits with the ``"gpu"`` rows of :mod:`amid_ref.tolerances`, through the
helpers of ``tests/test_gpu.py`` (:func:`compare_with_reference`).

Every check asserts that the Triton passes really ran (a launch counter on the first pass;
a fallback to the torch kernel would also warn, and warnings are errors here). The
interpreter costs about 0.08 s per launch whatever the rows (tests/_triton.py patches the
language once per launch), so each check batches its rows
into one launch per spec and keeps V small (two tiles of the interpreter's 32 columns).
Tests marked ``gpu`` run the compiled kernels on CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _memory import LiveBytes  # noqa: E402
from _triton import Launches, NoLaunch, interpreted  # noqa: E402
from test_gpu import (  # noqa: E402
    _PIVOT_PARAMS,
    ALPHAS,
    GRID_DIVERGENCES,
    LAMS,
    ORDERS,
    _pivot_exact,
    assert_grad_within,
    compare_with_reference,
    realistic_logits,
)

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu import _engine  # noqa: E402
from gpu import _triton_kernel as tk  # noqa: E402
from gpu._divergences import GRAD_SUM, SUM_OF_TERMS, pivot_series  # noqa: E402
from gpu._torch_kernel import chunk as torch_chunk  # noqa: E402

INF = math.inf
#: The grid divergences the Triton kernel computes itself (the rest hand the chunk over).
TRITON_GRID = tuple((d, p) for d, p in GRID_DIVERGENCES if d in tk.TRITON_DIVERGENCES)
#: KL and JS (the most used) on the whole α × λ grid; the others on every α, λ cycling.
FULL_GRID = ("kl", "js")
#: The divergences with closed-form pair gradients or a row log-sum-exp (AB, Amari, χ²,
#: Rényi): their grid is sampled (:func:`_grid`) to keep the interpreter's time down.
SAMPLED = tuple(sorted(GRAD_SUM | (frozenset(gpu.DIVERGENCES) - SUM_OF_TERMS)))

needs_a_runtime = pytest.mark.skipif(
    not (interpreted() or torch.cuda.is_available()),
    reason="the Triton kernels need CUDA or TRITON_INTERPRET=1",
)
pytestmark = needs_a_runtime


@pytest.fixture
def launches(monkeypatch):
    """The Triton backend, fresh (no earlier fallback), with its launches counted; the test
    must launch it at least once."""
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    spy = Launches(tk._normalizer_pass)
    monkeypatch.setattr(tk, "_normalizer_pass", spy)
    yield spy
    assert spy.count > 0, "the Triton kernel did not run"


@pytest.fixture
def triton_backend(monkeypatch, launches):
    """``gpu.amid_loss`` with ``backend="triton"`` inside the shared reference helpers."""
    original = gpu.amid_loss

    def amid_loss(*args, **kwargs):
        kwargs.setdefault("backend", "triton")
        return original(*args, **kwargs)

    monkeypatch.setattr(gpu, "amid_loss", amid_loss)
    return launches


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _grid(div: str, order: str = "pr"):
    """(α, λ) pairs: the whole grid for FULL_GRID, else every α once with λ cycling through
    the interior values and the endpoints at two α. For SAMPLED, each order takes every
    other α (offset by the order's index: every α, i.e. every mixture regime, twice per
    divergence over the four orders) and one endpoint of λ."""
    if div in FULL_GRID:
        return [(a, lam) for a in ALPHAS for lam in LAMS]
    inner = [(a, (0.1, 0.5)[i % 2]) for i, a in enumerate(ALPHAS)]
    if div in SAMPLED:
        k = ORDERS.index(order)
        ends = ((-5.0, 0.0), (0.5, 1.0), (INF, 0.0), (1.0, 1.0))
        return [*inner[k % 2 :: 2], ends[k]]
    return [*inner, (-5.0, 0.0), (0.5, 1.0), (INF, 0.0), (1.0, 1.0)]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("div,params", TRITON_GRID, ids=[d for d, _ in TRITON_GRID])
def test_grid_float32(triton_backend, div, params, order):
    s_np, t_np = realistic_logits(7, 8, 48, masked=4)
    for alpha, lam in _grid(div, order):
        compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("div,params", TRITON_GRID, ids=[d for d, _ in TRITON_GRID])
def test_grid_bfloat16(triton_backend, div, params, order):
    s_np, t_np = realistic_logits(11, 8, 48, masked=4)
    cases = ((-INF, 0.5), (-5.0, 0.1), (1.0 - 1e-6, 0.5), (3.0, 0.1))
    if div in SAMPLED:  # two of the four per order, every case twice over the orders
        cases = cases[ORDERS.index(order) % 2 :: 2]
    for alpha, lam in cases:
        compare_with_reference(s_np, t_np, torch.bfloat16, alpha, lam, div, order, params)


@pytest.mark.parametrize("lam", [0.7, 0.999])
def test_weights_above_one_half(triton_backend, lam):
    """λ > ½ (the grid's interior λ are 0.1 and ½): the mixture's near branch pivots on p
    with weight 1 − λ and argument −βd, in both mixture regimes (|β| ≥ ½ and < ½, β → 0),
    with the ratio to p and to q."""
    s_np, t_np = realistic_logits(17, 8, 48, masked=4)
    for alpha in (-5.0, 0.5, 1.0 - 1e-6):
        for div, order in (("kl", "pr"), ("kl", "rq"), ("js", "qr")):
            params = {"beta": 0.3} if div == "js" else None
            compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params)


@pytest.mark.skipif(not interpreted(), reason="the interpreter's patching (tests/_triton.py)")
def test_interpreter_patches_the_language_once_per_launch(triton_backend):
    """tests/_triton.py's patching is installed under the interpreter, and a launch still leaves
    triton.language as it found it, also where the kernel raises."""
    import triton.language as tl
    from triton.runtime import interpreter

    assert getattr(interpreter, "_patched_once", False), "triton's interpreter changed"
    names = ("exp", "where", "load", "fma")
    before = {n: getattr(tl, n) for n in names}
    s_np, t_np = realistic_logits(3, 4, 40, masked=2)
    compare_with_reference(s_np, t_np, torch.float32, -5.0, 0.1, "kl", "pr", None)
    assert {n: getattr(tl, n) for n in names} == before
    calls: list = []
    scope = {"tl": tl, "calls": calls}  # a kernel's globals see triton.language
    exec("def fails(x):\n    calls.append(tl.exp)\n    raise ValueError('inside')", scope)
    with pytest.raises(Exception, match="inside"):
        interpreter.GridExecutor(scope["fails"], ["x"], (1,))(torch.zeros(1))
    assert calls and calls[0] is not before["exp"]  # patched inside
    assert {n: getattr(tl, n) for n in names} == before  # restored after
    compare_with_reference(s_np, t_np, torch.float32, 0.5, 0.5, "kl", "rq", None)


def test_edge_rows(triton_backend):
    """One-hot teacher, student-only −inf entries, p = q, logits ±1e4, |α| huge, λ 1e-15
    from its ends: every row kind of the torch kernel's edge tests, batched."""
    rng = np.random.default_rng(5)
    s_np, t_np = realistic_logits(23, 8, 40, masked=3)
    s_np[0], t_np[0] = rng.normal(0.0, 2.0, 40), np.full(40, -INF)
    t_np[0, 7] = 0.0  # one-hot teacher
    s_np[1, :5] = -INF  # tokens masked for the student only
    s_np[2] = t_np[2]  # p = q
    s_np[3] = rng.choice([-1e4, 1e4], 40) + rng.normal(0.0, 1.0, 40)  # logits ±1e4
    t_np[3] = rng.choice([-1e4, 1e4], 40)
    s_np[4] = t_np[4] + rng.normal(0.0, 1e-4, 40)  # the loss near 0
    for div, order in (("kl", "pr"), ("kl", "rq"), ("js", "qr"), ("skew_kl", "rp")):
        params = dict(GRID_DIVERGENCES)[div]
        for alpha, lam in ((-5.0, 0.1), (0.0, 0.3), (1.0, 0.5), (3.0, 0.3), (INF, 0.5),
                           (-1e6, 1e-15), (1e300, 1.0 - 1e-15)):  # fmt: skip
            compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params)
    # α = 1 ± 1e-7 (the textbook logaddexp/β form has O(1) errors there), unmasked rows
    s_np, t_np = realistic_logits(9, 8, 40)
    for alpha in (1.0 - 1e-7, 1.0 + 1e-7, 1.0 + 3e-3):
        compare_with_reference(s_np, t_np, torch.float32, alpha, 0.2, "kl", "pr", {})
        compare_with_reference(s_np, t_np, torch.bfloat16, alpha, 0.8, "js", "rq", {"beta": 0.3})


#: The divergences' own edge parameters (the "accuracy" cases of amid_ref._specs: AB at
#: a_ or b_ = 0 and near it, a_ + b_ = 0 and near it, (0, 0), a_ < 0; Amari γ at and near
#: ±1; Rényi's order near and at 1), each on a few (order, α, λ) taken in turn.
PARAM_EDGES = (
    ("ab", [{"alpha": 1.0, "beta": 0.0}, {"alpha": 0.0, "beta": 1.0},
            {"alpha": 1e-9, "beta": 0.7}, {"alpha": 0.7, "beta": 0.0},
            {"alpha": 0.5, "beta": -0.5}, {"alpha": 0.5, "beta": -0.499999999},
            {"alpha": 0.0, "beta": 0.0}, {"alpha": 1e-9, "beta": -1e-9 / 3.0},
            {"alpha": -0.3, "beta": 0.8}, {"alpha": 1.5, "beta": 0.5}]),
    ("amari", [{"alpha": g} for g in (-3.0, -1.000000001, -1.0, -0.999999999, 0.0,
                                      0.999999999, 1.0, 1.000000001)]),
    ("renyi", [{"order": o} for o in (0.5, 0.999999999, 1.0, 1.000000001, 5.0)]),
)  # fmt: skip
#: (order, α, λ) taken in turn by the edge parameters: every order, the mixture regimes.
EDGE_SPECS = (("rq", -5.0, 0.1), ("pr", 0.5, 0.5), ("qr", 1.0, 0.3), ("rp", 3.0, 0.1),
              ("rq", INF, 0.5), ("qr", -1.0, 0.0), ("pr", 1.0 - 1e-6, 0.9))  # fmt: skip


@pytest.mark.parametrize(
    "div,cases", [c for c in PARAM_EDGES if c[0] in tk.TRITON_DIVERGENCES],
    ids=[c[0] for c in PARAM_EDGES if c[0] in tk.TRITON_DIVERGENCES])  # fmt: skip
def test_divergence_parameter_edges(triton_backend, div, cases):
    s_np, t_np = realistic_logits(13, 8, 40, masked=3)
    for i, params in enumerate(cases):
        for j in (0, 1):
            order, alpha, lam = EDGE_SPECS[(2 * i + j) % len(EDGE_SPECS)]
            compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params)


def test_edge_rows_sampled_divergences(triton_backend):
    """The edge rows of test_edge_rows for the SAMPLED divergences: one-hot teacher,
    student-only −inf entries, p = q, logits ±1e4, the loss near 0."""
    rng = np.random.default_rng(6)
    s_np, t_np = realistic_logits(25, 8, 40, masked=3)
    s_np[0], t_np[0] = rng.normal(0.0, 2.0, 40), np.full(40, -INF)
    t_np[0, 7] = 0.0
    s_np[1, :5] = -INF
    s_np[2] = t_np[2]
    s_np[3] = rng.choice([-1e4, 1e4], 40) + rng.normal(0.0, 1.0, 40)
    t_np[3] = rng.choice([-1e4, 1e4], 40)
    s_np[4] = t_np[4] + rng.normal(0.0, 1e-4, 40)
    specs = (("rq", -5.0, 0.1), ("pr", 0.0, 0.3), ("qr", 1.0, 0.5), ("rp", INF, 0.5))
    for div, params in TRITON_GRID:
        if div in SAMPLED:
            for order, alpha, lam in specs:
                compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params)


def test_ab_terms_beyond_the_float32_exponent(triton_backend):
    """AB with a_ + b_ = −0.7 on entries 113–118 below the row maximum: y^(a_+b_) is up to
    e^83, beyond the e^80 the direct form clamps to, while the terms stay finite:
    ``_times_exp`` takes its one-exponential form there (in rows of such entries only and
    among ordinary entries)."""
    rng = np.random.default_rng(8)
    s_np, t_np = realistic_logits(29, 4, 40)
    low = -rng.uniform(113.0, 118.0, 40)
    s_np[0, :6], t_np[0, :6] = low[:6], low[:6] + rng.normal(0.0, 0.5, 6)
    s_np[1, 30:], t_np[1, 30:] = low[30:], low[30:] - 0.3
    for params in ({"alpha": -0.4, "beta": -0.3}, {"alpha": -0.3, "beta": -0.4}):
        for order, alpha, lam in (("rq", -5.0, 0.1), ("qr", -1.0, 0.0)):
            compare_with_reference(s_np, t_np, torch.float32, alpha, lam, "ab", order, params)


def _horner_f32(coefficients, x: np.ndarray, fused: bool) -> np.ndarray:
    """Σ_i coefficients[i]·x^i in float32 as the kernel's series take it: Horner's rule from
    the last coefficient, each step ``tl.fma`` (``fused``: one rounding, as on a GPU and
    under triton 3.9's interpreter; the float64 sum of an exact float32 product, rounded
    once more, stands for it) or two roundings (triton 3.6's interpreter)."""
    c = [np.float32(v) for v in coefficients]
    k = np.full_like(x, c[-1])
    for coefficient in c[-2::-1]:
        if fused:
            k = (k.astype(np.float64) * x.astype(np.float64) + np.float64(coefficient)).astype(
                np.float32
            )
        else:
            k = k * x + coefficient
    return k


def _fma_literals(helper) -> list[float]:
    """The coefficients of a kernel series spelled as ``tl.fma`` literals (_expm1_ratio,
    _log1p_unit), read off its source in Horner order: the highest power's first."""
    import inspect
    import re

    source = inspect.getsource(getattr(helper, "fn", helper))
    calls = [c.split(",") for c in re.findall(r"tl\.fma\(([^)]*)\)", source)]
    return [float(calls[0][1]), float(calls[0][2])] + [float(c[2]) for c in calls[1:]]


@pytest.mark.parametrize("c", [1e-15, 1e-6, 1e-3, 0.1, 0.3, 0.45, 0.5])
def test_near_branch_series_against_mpmath(c):
    """The mixture's near branch K(x) = log1p(c·expm1(x)) on |x| ≤ 1 as the kernel sums it
    (the host's Taylor coefficients rounded to float32, Horner's rule in float32, each step
    fused or not) within 3 ulps of mpmath's K, for weights c from 1e-15 to ½ (where the
    series converges slowest: its singularities at ±iπ) and x from 1e-30 to 1."""
    import mpmath

    mpmath.mp.dps = 50
    a = tk._cgf_coefficients(c)
    assert len(a) == tk._K_TERMS == 15  # the kernel spells 14 and 13
    x = np.concatenate([np.linspace(-1.0, 1.0, 801), [1e-30, -1e-30, 1e-10, -1e-7, 3e-4]])
    x = x[x != 0.0].astype(np.float32)
    want = np.array([float(mpmath.log1p(c * mpmath.expm1(mpmath.mpf(float(v))))) for v in x])
    normal = np.abs(want) >= np.finfo(np.float32).tiny  # (c·x below it underflows either way)
    for fused in (True, False):
        k = _horner_f32(a, x, fused) * x
        ulps = np.abs(k - want)[normal] / np.spacing(np.abs(want[normal]).astype(np.float32))
        assert ulps.max() <= 3.0, (c, fused, x[normal][ulps.argmax()], ulps.max())


def test_expm1_ratio_series_against_mpmath():
    """expm1(x)/x as the AB terms and the pair's weights sum it (_expm1_ratio: the kernel's
    eleven coefficients 1/(n+1)! in float32, Horner's rule in float32, each step fused or
    not) within 2 ulps of mpmath on |x| ≤ 1, the ends and tiny x included; and the forms
    _scaled_expm1_pair joins to it, z·E(cz) and (e^(cz) − 1)/c, within 6 ulps of
    expm1(cz)/c on both sides of |cz| = 1, float32 exponentials of the rounded arguments
    standing for libdevice's."""
    import mpmath

    mpmath.mp.dps = 40
    literals = _fma_literals(tk._expm1_ratio)
    assert literals == [1.0 / math.factorial(n + 1) for n in range(10, -1, -1)]
    coefficients = literals[::-1]
    f32 = np.float32
    x = np.concatenate([np.linspace(-1.0, 1.0, 2001), [1e-30, -1e-30, 1e-8, -3e-5]])
    x = x.astype(f32)
    want = np.array([float(mpmath.expm1(mpmath.mpf(float(v))) / mpmath.mpf(float(v)))
                     if v != 0 else 1.0 for v in x])  # fmt: skip
    for fused in (True, False):
        got = _horner_f32(coefficients, x, fused)
        ulps = np.abs(got - want) / (np.abs(want) * np.finfo(f32).eps)
        assert ulps.max() <= 2.0, (fused, x[ulps.argmax()], ulps.max())
    # the two forms around |cz| = 1, for c of both signs and sizes
    for c in (-0.7, 0.2, 0.9, -3.0, 1e-3):
        cz = np.concatenate([np.linspace(-3.0, 3.0, 600), [1.0, -1.0]])
        z = (cz / c).astype(f32)
        exact = [mpmath.mpf(float(f32(c))) * mpmath.mpf(float(v)) for v in z]
        want = np.array([float(mpmath.expm1(v) / mpmath.mpf(float(f32(c)))) for v in exact])
        cz = z * f32(c)
        near = np.abs(cz) <= 1.0
        series = z * _horner_f32(coefficients, np.where(near, cz, f32(0.0)), True)
        # log_top = log_s + cz formed by the caller: here the exact product, rounded once
        top = np.exp(np.array([float(v) for v in exact]).astype(f32).astype(np.float64))
        direct = (top.astype(f32) - f32(1.0)) * (f32(1.0) / f32(c))
        got = np.where(near, series, direct)
        ulps = np.abs(got - want) / (np.abs(want) * np.finfo(f32).eps)
        assert ulps.max() <= 6.0, (c, cz[ulps.argmax()], ulps.max())


def test_log1p_unit_against_mpmath():
    """log1p(e) on 0 ≤ e ≤ 1 as the mixture and logaddexp form it (_log1p_unit: the kernel's
    ten coefficients in float32, Horner's rule in float32, each step fused or not, times e)
    within 1.5 ulps of mpmath, from e = 1e-30 to 1."""
    import mpmath

    mpmath.mp.dps = 40
    literals = _fma_literals(tk._log1p_unit)
    assert len(literals) == 10
    f32 = np.float32
    e = np.concatenate([np.linspace(0.0, 1.0, 4001)[1:], np.logspace(-30, -1, 300)]).astype(f32)
    want = np.array([float(mpmath.log1p(mpmath.mpf(float(v)))) for v in e])
    for fused in (True, False):
        got = _horner_f32(literals[::-1], e, fused) * e
        ulps = np.abs(got - want) / (np.abs(want) * np.finfo(f32).eps)
        assert ulps.max() <= 1.5, (fused, e[ulps.argmax()], ulps.max())
    # at e = 0 the polynomial is log1p(e)/e's limit, 1 (so log1p(0) = 0·1 = 0 exactly)
    at_zero = _horner_f32(literals[::-1], np.zeros(1, f32), True)[0]
    assert abs(at_zero - 1.0) <= np.finfo(f32).eps, at_zero


def test_pivot_series_against_mpmath():
    """The AB terms' second-order form as the kernel sums it (_pivot_series: float32 steps
    in the kernel's order, fused or not, on u = m·z with |u| ≤ 1, the ends included), within
    3 ulps of [F(λ) − F(c)]/(λ − c) in mpmath, for pivots of both signs, λ = 0, c = 0 and
    small and large parameters (tests/test_gpu.py's list)."""
    f32 = np.float32
    for a_, b_ in _PIVOT_PARAMS:
        mirror = abs(a_) > abs(b_)
        m, coefficients = pivot_series(a_, b_, mirror, torch.float32)
        u = np.concatenate([np.linspace(-1.0, 1.0, 401), [1e-20, -1e-20, 1e-7, -3e-4]])
        z = (u[u != 0.0] / m).astype(f32)
        u = z * f32(m)
        want = _pivot_exact(a_, b_, z)
        normal = np.abs(want) >= np.finfo(f32).tiny
        for fused in (True, False):
            got = _horner_f32(coefficients, u, fused) * z * z
            ulps = np.abs(got - want)[normal] / (np.abs(want[normal]) * np.finfo(f32).eps)
            assert ulps.max() <= 3.0, (a_, b_, fused, ulps.max())


@pytest.mark.parametrize("order", ORDERS)
def test_temperature_and_detached_assistant(triton_backend, order):
    s_np, t_np = realistic_logits(19, 8, 40, masked=2)
    for temperature in (0.5, 2.0):
        compare_with_reference(s_np, t_np, torch.float32, -2.0, 0.3, "kl", order, {},
                               temperature=temperature)  # fmt: skip
    compare_with_reference(s_np, t_np, torch.float32, 1.0, 0.6, "js", order, {"beta": 0.3},
                           temperature=0.7, detach_assistant=True)  # fmt: skip
    compare_with_reference(s_np, t_np, torch.float32, -5.0, 0.1, "kl", order, {},
                           detach_assistant=True)  # fmt: skip
    for div, params in TRITON_GRID:  # one spec each, the order and T rotating
        if div in SAMPLED:
            k = SAMPLED.index(div) + ORDERS.index(order)
            compare_with_reference(s_np, t_np, torch.float32, (-2.0, 1.0)[k % 2], 0.4, div,
                                   order, params, temperature=(2.0, 0.8)[k % 2],
                                   detach_assistant=k % 3 == 0)  # fmt: skip


def test_ignore_index_labels_and_mean(launches):
    s_np, t_np = realistic_logits(17, 8, 40, masked=3)
    labels = torch.tensor([[3, -100, 5, 1], [-100, -100, 0, 9]])
    s = torch.tensor(s_np.reshape(2, 4, 40), dtype=torch.float32, requires_grad=True)
    t = torch.tensor(t_np.reshape(2, 4, 40), dtype=torch.float32)
    s.data[0, 1] = torch.nan  # an ignored row is never read
    loss = gpu.amid_loss(s, t, -5.0, 0.1, "kl", "rq", labels=labels, backend="triton")
    loss.backward()
    valid = (labels != -100).numpy()
    s64 = s.detach().double().numpy()[valid]
    t64 = t.double().numpy()[valid]
    want = amid_ref.amid_loss(s64, t64, -5.0, 0.1, "kl", "rq").mean()
    assert_within(loss.item(), want, tolerance("gpu", "loss", "float32"), what="mean")
    grad = s.grad.double().numpy()
    assert np.all(grad[~valid] == 0.0)
    want_grad = amid_ref.amid_grad(s64, t64, -5.0, 0.1, "kl", "rq") / valid.sum()
    assert_grad_within(grad[valid], want_grad, "float32", "valid rows")


def test_rounding_residual_and_out_buffer(launches):
    """``out`` in bfloat16 with ``out_lo``: out + out_lo carries the float32 gradient (the
    fused loss's contract); ``out`` may be the student logits themselves."""
    s_np, t_np = realistic_logits(29, 8, 40, masked=2)
    s = torch.tensor(s_np, dtype=torch.bfloat16)
    t = torch.tensor(t_np, dtype=torch.bfloat16)
    spec = _engine._build_spec(torch.float32, 40, torch.device("cpu"), -5.0, 0.1, "kl", "pr",
                               None, 1.0, False, None)  # fmt: skip
    want = amid_ref.amid_grad(s.double().numpy(), t.double().numpy(), -5.0, 0.1, "kl", "pr")
    out, lo = s.clone(), t.clone()
    value, grad, flags = tk.triton_chunk(out, lo, spec, True, 1.0, out, out_lo=lo)
    assert grad is out and not bool(flags.any())
    both = out.double().numpy() + lo.double().numpy()
    assert_grad_within(both, want, "float32", "out + out_lo")
    want_loss = amid_ref.amid_loss(s.double().numpy(), t.double().numpy(), -5.0, 0.1, "kl", "pr")
    assert_within(value.numpy(), want_loss, tolerance("gpu", "loss", "float32"), what="loss")


def _rows_with_zeros(seed, alpha, lam, div, order, params):
    """(s, t, spec) of one float32 chunk, 8 × 48: realistic rows with masked tokens, a row
    with zeros of q only and one with zeros of p only."""
    s_np, t_np = realistic_logits(seed, 8, 48, masked=4)
    s_np[1, :5] = -np.inf  # zeros of q only
    t_np[2, 5:9] = -np.inf  # zeros of p only
    spec = _engine._build_spec(torch.float32, 48, torch.device("cpu"), alpha, lam, div, order,
                               params, 1.0, False, None)  # fmt: skip
    return torch.tensor(s_np, dtype=torch.float32), torch.tensor(t_np, dtype=torch.float32), spec


@pytest.mark.parametrize(
    "alpha,lam,div,order,params",
    [(-5.0, 0.1, "kl", "pr", None), (0.5, 0.7, "kl", "rq", None), (3.0, 0.3, "js", "qr", None),
     (-1.0, 0.5, "ab", "rq", {"alpha": 0.2, "beta": 0.7}), (0.9, 0.2, "tv", "pr", None)],
)  # fmt: skip
def test_stored_mixture_gives_the_same_bits(launches, alpha, lam, div, order, params):
    """With a gradient, pass b stores log m and its ratio and passes c and c2 read them; a
    forward alone forms them again in pass c: the two losses agree bit for bit (rows with
    zeros of p, q or both, one-hot and wide rows included), in both |β| > 0 regimes."""
    s, t, spec = _rows_with_zeros(31, alpha, lam, div, order, params)
    with_grad, grad, _ = tk.triton_chunk(s, t, spec, True, 1.0)
    alone, none, _ = tk.triton_chunk(s, t, spec, False, 1.0)
    assert none is None and grad is not None
    assert torch.equal(with_grad, alone), (with_grad - alone).abs().max()


@pytest.mark.parametrize("temperature", [1.0, 0.3, 1e-3])
def test_online_normalizer_against_float64(temperature):
    """Pass a forms each row's maximum, its first position and log1p(S_o) of (x − max)/T in
    one pass with an online maximum (the sum so far rescaled when a tile raises it): equal
    to the two-pass definition in float64 within a few float32 ulps of 1 + S_o, the
    position exactly, over rows whose maximum lies in the first, a middle or the last tile,
    is tied across tiles, follows tiles of only −inf, or is the one finite entry, and
    relatively where S_o is tiny (a confident row)."""
    rng = np.random.default_rng(7)
    n, v, block_v = 10, 200, 32  # seven tiles of 32 columns, the last one partial
    x = rng.normal(0.0, 3.0, size=(2, n, v)).astype(np.float32)
    for which in (0, 1):
        x[which, 0, 5] = 20.0  # the first tile
        x[which, 1, 100] = 20.0  # a middle tile
        x[which, 2, 199] = 20.0  # the last entry
        x[which, 3, [40, 70, 190]] = 20.0  # tied across tiles: the first is the maximum
        x[which, 4, :130] = -np.inf  # tiles of only -inf first
        x[which, 5, :] = -np.inf
        x[which, 5, 150] = 1.5  # the one finite entry: S_o = 0
        x[which, 6] = np.sort(x[which, 6])  # ascending: every tile raises the maximum
        x[which, 7, 3] = x[which, 7].max() + 1e-3  # a maximum barely above the rest
        x[which, 9] = -50.0  # a confident row at every T: S_o = e^(-20) + 198 e^(-50/T)
        x[which, 9, 17], x[which, 9, 60] = 0.0, -20.0 * temperature
    x[1, 8] = x[1, 8][::-1]  # the teacher's maximum in another tile than the student's
    s, t = torch.tensor(x[0]), torch.tensor(x[1])
    stats = torch.zeros(tk._N_STATS, n, dtype=torch.float32)
    idx = torch.zeros(3, n, dtype=torch.int32)
    flags = torch.zeros(n, dtype=torch.int16)
    inv_t = 1.0 / temperature
    tk._normalizer_pass[(1,)](s, t, v, n, v, stats, idx, flags, inv_t, ACC=False, BLOCK_R=16,
                              BLOCK_V=block_v, num_warps=1)  # fmt: skip
    assert not flags.any(), flags
    for which, (top_row, corr_row) in enumerate(((0, 2), (1, 3))):
        x64 = x[which].astype(np.float64)
        top = x64.max(axis=1)
        k = x64.argmax(axis=1)  # numpy's first maximum
        y = (x64 - top[:, None]) * (1.0 / np.float32(temperature)).astype(np.float64)
        e = np.exp(y)
        e[np.arange(n), k] = 0.0
        others = e.sum(axis=1)
        assert np.array_equal(idx[which].numpy(), k)
        assert np.array_equal(stats[top_row].numpy().astype(np.float64), top)
        got = stats[corr_row].numpy().astype(np.float64)
        want = np.log1p(others)
        # log1p(S_o) to a few float32 ulps of 1 + S_o (S_o's relative rounding, scaled)
        err = np.abs(got - want) / np.finfo(np.float32).eps
        assert err.max() <= 8.0, (which, err)
        # and relatively where S_o is small but a normal float32 sum (a confident row: q's
        # top entry exact)
        tiny = (others >= 1e-30) & (others < 1e-3)
        assert tiny[9], others  # at least the confident row
        rel = np.abs(got[tiny] - want[tiny]) / want[tiny]
        assert (rel <= 16 * np.finfo(np.float32).eps).all(), rel


@pytest.mark.parametrize("which", ["student_logits", "teacher_logits"])
@pytest.mark.parametrize("bad", [math.nan, INF, "all_neg_inf"])
def test_bad_rows_raise_the_same_words(launches, which, bad):
    s = torch.randn(2, 3, 10, requires_grad=True)
    t = torch.randn(2, 3, 10)
    target = s.data if which == "student_logits" else t
    if bad == "all_neg_inf":
        target[1, 2] = -INF
    else:
        target[1, 2, 4] = bad
    messages = []
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match=rf"{which}.*\(1, 2\)") as err:
            gpu.amid_loss(s, t, -5.0, 0.1, backend=backend)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    "div,params", [c for c in TRITON_GRID if c[0] in SAMPLED],
    ids=[c[0] for c in TRITON_GRID if c[0] in SAMPLED])  # fmt: skip
def test_row_flags_of_sampled_divergences(launches, div, params):
    """NaN / +inf logits name the row with the torch kernel's words; a +inf loss (a zero of
    one argument where the divergence diverges) raises as it does, with its message."""
    s = torch.randn(2, 3, 10, requires_grad=True)
    t = torch.randn(2, 3, 10)
    s.data[1, 2, 4] = math.nan
    t[0, 1, 3] = INF
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match=r"student_logits.*\(1, 2\)") as err:
            gpu.amid_loss(s, t, -5.0, 0.1, div, "rq", params, backend=backend)
        if backend == "triton":
            words = str(err.value)
        else:
            assert str(err.value) == words
    s2 = torch.randn(2, 6, requires_grad=True)
    t2 = torch.randn(2, 6)
    s2.data[0, 0] = -INF  # teacher mass where r = 0 for α ≥ 1
    messages = []
    for backend in ("triton", "torch"):
        try:
            gpu.amid_loss(s2, t2, 3.0, 0.5, div, "pr", params, backend=backend)
            messages.append(None)
        except ValueError as exc:
            messages.append(str(exc))
    assert messages[0] == messages[1]
    s64, t64 = s2.detach().double().numpy(), t2.double().numpy()
    infinite = np.isinf(amid_ref.amid_loss(s64, t64, 3.0, 0.5, div, "pr", params)).any()
    assert (messages[0] is not None) == infinite


def test_empty_support_infinite_loss_and_temperature_flags(launches):
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 6)
    s.data[1, :3] = -INF
    t[1, 3:] = -INF
    with pytest.raises(ValueError, match=r"undefined on row\(s\) \[\(1,\)\]"):
        gpu.amid_loss(s, t, 1.0, 0.5, backend="triton")
    gpu.amid_loss(s, t, 0.5, 0.5, backend="triton")  # α < 1: union support, fine
    s2 = torch.randn(2, 6, requires_grad=True)
    t2 = torch.randn(2, 6)
    s2.data[0, 0] = -INF  # teacher mass where r = 0 for α ≥ 1: KL(p‖r) = +inf
    with pytest.raises(ValueError, match="inf"):
        gpu.amid_loss(s2, t2, 3.0, 0.5, "kl", "pr", backend="triton")
    s3 = torch.tensor([[0.0, -3e38, 1.0]], requires_grad=True)
    with pytest.raises(ValueError, match="temperature"):
        gpu.amid_loss(s3, torch.zeros(1, 3), -5.0, 0.1, temperature=0.5, backend="triton")


def test_delegated_specs_run_the_torch_kernel(monkeypatch):
    """float64 inputs go to the torch kernel (no Triton launch): loss and gradient bitwise
    those of ``backend="torch"``. (Every divergence of gpu.DIVERGENCES runs in Triton,
    so no divergence is delegated.)"""
    assert tk.TRITON_DIVERGENCES == frozenset(gpu.DIVERGENCES)
    monkeypatch.setattr(_engine, "_TRITON", [])
    spy = Launches(tk._normalizer_pass)
    monkeypatch.setattr(tk, "_normalizer_pass", spy)
    s_np, t_np = realistic_logits(31, 4, 40, masked=2)
    got = []
    for backend in ("triton", "torch"):
        s = torch.tensor(s_np, requires_grad=True)
        loss = gpu.amid_loss(s, torch.tensor(t_np), -5.0, 0.1, "js", "rq", {"beta": 0.3},
                             reduction="none", backend=backend)  # fmt: skip
        loss.sum().backward()
        got.append((loss.detach(), s.grad))
    assert spy.count == 0
    for a, b in zip(*got, strict=True):
        assert torch.equal(a.view(torch.int64), b.view(torch.int64))


def test_auto_picks_torch_on_cpu(monkeypatch):
    spy = Launches(tk._normalizer_pass)
    monkeypatch.setattr(tk, "_normalizer_pass", spy)
    assert _engine._select_kernel(False, "auto", torch.device("cpu")) is torch_chunk
    gpu.amid_loss(torch.randn(2, 9, requires_grad=True), torch.randn(2, 9), -5.0, 0.1)
    assert spy.count == 0


# --- launch shapes (gpu._triton_kernel.LAUNCH_ENV) -------------------------------------------


def test_launch_variable_syntax_and_errors():
    """``R:V:W[:S]`` for every pass, ``LETTER=R:V:W[:S]`` for one, a pass's own shape winning
    wherever it stands, S (pipeline stages) 1 where left out; anything else a ValueError
    naming the variable and the item."""
    passes = tuple(tk.PASSES.values())
    shapes = tk.parse_launch("1:2048:4, c=4:1024:8:3")
    assert shapes["_divergence_pass"] == (4, 1024, 8, 3)
    assert all(shapes[k] == (1, 2048, 4, 1) for k in passes if k != "_divergence_pass")
    assert tk.parse_launch("c=4:1024:8:3,1:2048:4") == shapes
    assert tk.parse_launch("d=1:64:2") == {"_gradient_pass": (1, 64, 2, 1)}
    assert tk.parse_launch("") == {} and tk.parse_launch(" , ") == {}
    bad = {
        "1:100:4": "BLOCK_R and BLOCK_V must be powers of two",
        "1:4096": "is not R:V:W or R:V:W:S",
        "1:4096:8:2:1": "is not R:V:W or R:V:W:S",
        "a=1:x:4": "is not R:V:W",
        "1:4096:8:5": "the pipeline stages must be 1, 2, 3 or 4",
        "1:4096:8:0": "the pipeline stages must be 1, 2, 3 or 4",
        "e=1:64:4": "unknown pass 'e'",
        "1:64:3": "the warps must be 1, 2, 4, 8, 16 or 32",
        "128:64:4": "BLOCK_R ≤ 64",
        "1:32768:8": "16 ≤ BLOCK_V ≤ 16384",
        "64:512:8": "BLOCK_R·BLOCK_V ≤ 16384",
        "1:8:4": "16 ≤ BLOCK_V",
    }
    for text, words in bad.items():
        with pytest.raises(ValueError) as err:
            tk.parse_launch(text)
        assert str(err.value).startswith("AMID_TRITON_LAUNCH: "), err.value
        assert words in str(err.value), (text, err.value)
        assert repr(text.split(",")[-1].strip()) in str(err.value)


@pytest.mark.parametrize("shape", ["2:16:4", "4:64:8:3", "a=2:128:8:2,c=1:32:1,d=4:16:2:4"])
def test_launch_shapes_reach_the_launches_and_keep_the_numerics(monkeypatch, launches, shape):
    """Each pass launches with the shape :func:`gpu._triton_kernel.launch_config` sets (its
    tile narrowed to the vocabulary, its pipeline stages), and the loss and gradient stay
    within the gpu rows of amid_ref: the kernel's tiles, row blocks and stages are a
    layout and a schedule, not a change of the numerics (KL with the stored mixture, AB
    with the stored pair, Rényi's pass c0)."""
    want = tk.parse_launch(shape)
    spies = {name: Launches(getattr(tk, name)) for name in want}
    for name, spy in spies.items():
        monkeypatch.setattr(tk, name, spy)
    rows, vocab = 5, 70
    s_np, t_np = realistic_logits(23, rows, vocab, masked=2)
    with tk.launch_config(shape):
        for alpha, lam, div, order, params in [
            (-5.0, 0.1, "kl", "pr", None),
            (-1.0, 0.5, "ab", "rq", {"alpha": 0.2, "beta": 0.7}),
            (0.5, 0.3, "renyi", "pr", {"order": 2.0}),
        ]:
            compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params,
                                   backend="triton")  # fmt: skip
    for name, (r, bv, _, stages) in want.items():
        block_v = min(bv, 128)  # the next power of two above V = 70
        seen = {(k["BLOCK_R"], k["BLOCK_V"], k["STAGES"], grid[0]) for grid, k in spies[name].calls}
        assert seen == {(r, block_v, stages, -(-rows // r))}, (name, seen)


def test_malformed_launch_variable_is_raised_not_fallen_back_from(monkeypatch):
    """A malformed ``AMID_TRITON_LAUNCH`` is the caller's error: gpu.amid_loss raises it (no
    fall-back to the torch kernel, no warning) and the Triton backend keeps working once
    the variable is mended."""
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    spy = Launches(tk._normalizer_pass)
    monkeypatch.setattr(tk, "_normalizer_pass", spy)
    s, t = torch.randn(2, 40, requires_grad=True), torch.randn(2, 40)
    monkeypatch.setenv(tk.LAUNCH_ENV, "b=1:4096")
    with pytest.raises(ValueError, match=r"AMID_TRITON_LAUNCH: 'b=1:4096' is not R:V:W or"):
        gpu.amid_loss(s, t, -5.0, 0.1, backend="triton")
    assert spy.count == 0 and not _engine._WARNED
    monkeypatch.setenv(tk.LAUNCH_ENV, "b=2:16:2")
    gpu.amid_loss(s, t, -5.0, 0.1, backend="triton").backward()
    assert spy.count == 1 and not _engine._WARNED


def test_temperature_beyond_float32_goes_to_the_torch_kernel(launches):
    """1/T below float32's normal range (T ≥ 8.5e37) would reach the kernel as a subnormal or
    0 and every row would be refused as one of NaN or −inf entries: such a chunk is the
    torch kernel's, as one whose 1/T is beyond float32's largest number; T = 1e37 still runs
    in Triton. Both give amid_ref's loss."""
    gen = torch.Generator().manual_seed(9)
    s, t = torch.randn(3, 40, generator=gen), torch.randn(3, 40, generator=gen)
    for temperature, in_triton in ((1e37, True), (1e39, False), (1e46, False), (1e300, False)):
        before = launches.count
        got = gpu.amid_loss(s, t, -5.0, 0.1, temperature=temperature, reduction="none",
                            backend="triton").double().numpy()  # fmt: skip
        want = amid_ref.amid_loss(s.double().numpy(), t.double().numpy(), -5.0, 0.1,
                                  temperature=temperature)  # fmt: skip
        assert (launches.count > before) is in_triton, temperature
        assert_within(got, want, tolerance("gpu", "loss", "float32"), what=f"T={temperature}")


#: The CUDA logits targets (docs/gpu.md) and the float32 scratch each keeps per element of a
#: chunk: G and log m (8 B), and for AB with q an argument the stored pair and g_r (12 B).
MEMORY_TARGETS = (
    (-5.0, 0.1, "kl", "pr", None, 8),
    (0.0, 0.5, "js", "pr", {"beta": 0.5}, 8),
    (-5.0, 0.1, "ab", "rq", {"alpha": 0.2, "beta": 0.7}, 12),
)


@pytest.mark.parametrize("objective", MEMORY_TARGETS, ids=[o[2] for o in MEMORY_TARGETS])
def test_peak_memory_is_the_gradient_and_one_chunk(monkeypatch, objective):
    """The logits loss's peak extra memory with the Triton kernel: the gradient in the
    student's dtype and one chunk's float32 scratch (docs/gpu.md, the passes' memory), plus
    the row statistics; at the CUDA target (N = 8192, V = 128256, bf16) 1.96 GiB + 512 MiB
    (768 MiB for AB), against the 35 GiB the textbook KL version took on an H200.

    Here at that shape divided by 16 and the chunk's elements by 256 (32 rows of 8016, as
    523 of 128256), the passes launching nothing (on CUDA a launch allocates no memory; the
    numbers are the other tests'), the storages the call creates counted by
    :class:`LiveBytes`."""
    alpha, lam, div, order, params, scratch = objective
    k = 16
    n, v = 8192 // k, 128256 // k
    monkeypatch.setattr(_engine, "_TRITON_CHUNK_ELEMENTS", 2**26 // k**2)
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    spy = Launches(NoLaunch())
    for name in tk.PASSES.values():
        monkeypatch.setattr(tk, name, spy)
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(n, v, generator=gen).bfloat16().requires_grad_()
    t = torch.randn(n, v, generator=gen).bfloat16()
    chunk = gpu.default_chunk_size(v, "cuda", "triton")  # the CUDA rule, here on the CPU
    assert chunk == 32
    with LiveBytes() as meter:
        loss = gpu.amid_loss(s, t, alpha, lam, div, order, params, chunk_size=chunk,
                             backend="triton")  # fmt: skip
        loss.backward()
    assert spy.count >= 5 * n // chunk  # every chunk's passes launched
    gradient = n * v * 2
    assert gradient <= meter.peak <= gradient + scratch * chunk * v + 128 * n, meter.peak


# --- compiled, on CUDA ----------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_auto_picks_triton():
    kernel = _engine._select_kernel(False, "auto", torch.device("cuda"))
    assert getattr(kernel, "backend", None) == "triton"


@pytest.mark.gpu
@pytest.mark.parametrize("vocab", [32000, 151936])
def test_cuda_triton_matches_reference(triton_backend, vocab):
    s_np, t_np = realistic_logits(3, 4, vocab, masked=64)
    for div, order, alpha, lam in (("kl", "pr", -5.0, 0.1), ("js", "rq", 1.0 - 1e-6, 0.5),
                                   ("kl", "rq", INF, 0.5), ("tv", "qr", 3.0, 0.3)):  # fmt: skip
        params = dict(GRID_DIVERGENCES)[div]
        for dtype in (torch.float32, torch.bfloat16):
            compare_with_reference(s_np, t_np, dtype, alpha, lam, div, order, params,
                                   device="cuda")  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("order", ORDERS)
def test_cuda_small_grid(triton_backend, order):
    s_np, t_np = realistic_logits(7, 8, 96, masked=8)
    for div, params in TRITON_GRID:
        for alpha in ALPHAS:
            for lam in LAMS:
                compare_with_reference(s_np, t_np, torch.float32, alpha, lam, div, order, params,
                                       device="cuda")  # fmt: skip


@pytest.mark.parametrize("objective", [(-5.0, 0.1, "kl", "pr", None), (0.0, 0.5, "js", "qr", None)])
def test_fused_linear_loss_through_triton(launches, objective):
    """The fused lm_head loss with ``backend="triton"`` (its own chunk rule): loss, ∂h and
    ∂W against ``amid_ref`` in float64 on the logits h·Wᵀ the float32 inputs give."""
    alpha, lam, div, order, params = objective
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(6, 8, generator=gen, requires_grad=True)
    w = torch.randn(40, 8, generator=gen, requires_grad=True)
    th, tw = torch.randn(6, 8, generator=gen), torch.randn(40, 8, generator=gen)
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, alpha, lam, div, order, params,
                                      backend="triton", reduction="sum")  # fmt: skip
    loss.backward()
    s = (h.detach().double() @ w.detach().double().T).numpy()
    t = (th.double() @ tw.double().T).numpy()
    want = amid_ref.amid_loss(s, t, alpha, lam, div, order, params)
    g = amid_ref.amid_grad(s, t, alpha, lam, div, order, params)
    assert_within(loss.item(), want.sum(), tolerance("gpu", "loss", "float32"))
    for got, ref in (
        (h.grad, g @ w.detach().double().numpy()),
        (w.grad, g.T @ h.detach().double().numpy()),
    ):
        scale = max(1.0, float(abs(ref).max()))
        tol = tolerance("gpu", "grad", "float32")
        assert_within(got.double().numpy() / scale, ref / scale, tol)


@pytest.mark.parametrize(
    "alpha,lam,div,order,params",
    [(-5.0, 0.1, "ab", "rq", {"alpha": 0.2, "beta": 0.7}),
     (0.5, 0.7, "ab", "qr", {"alpha": 0.2, "beta": 0.7}),
     (3.0, 0.3, "ab", "rq", {"alpha": 0.0, "beta": 0.0}),
     (-1.0, 0.5, "chi2", "qr", None), (2.0, 0.2, "chi2", "rq", None),
     (-3.0, 0.4, "amari", "rq", {"alpha": 0.5})],
)  # fmt: skip
def test_stored_pair_gives_the_same_bits(launches, monkeypatch, alpha, lam, div, order, params):
    """For the AB family and χ² with q an argument, pass c stores g_q + w·g_r and g_r and
    pass c2 reads them (STORE_PAIR); forming them again in c2 gives the same loss and
    gradient bit for bit, rows with zeros of q (a through-Z term, pass d's) and of p,
    one-hot and wide rows included, in both |β| > 0 regimes."""
    s, t, spec = _rows_with_zeros(37, alpha, lam, div, order, params)
    paired = tk.triton_chunk(s, t, spec, True, 1.0)
    monkeypatch.setattr(tk, "_STORE_PAIR", False)
    again = tk.triton_chunk(s, t, spec, True, 1.0)
    for a, b in zip(paired, again, strict=True):
        assert torch.equal(a.view(torch.int32) if a.is_floating_point() else a,
                           b.view(torch.int32) if b.is_floating_point() else b)  # fmt: skip


#: The divergences with closed-form pair gradients (AB, Amari, χ²), their grid parameters.
PAIR_GRID = tuple((d, p) for d, p in TRITON_GRID if d in GRAD_SUM)


@pytest.mark.parametrize("div,params", PAIR_GRID, ids=[d for d, _ in PAIR_GRID])
def test_one_sided_zeros_of_the_ab_family(triton_backend, div, params):
    """The AB family's and χ²'s forms at entries where one argument is zero and the other
    not (y^λ/(a_ λ), x^λ/(b_ λ), their gradients, +inf where they diverge) against amid_ref:
    rows with zeros of p alone and rows with zeros of q alone, for every order, at α where
    the mixture's support is the union (β > 0) and the intersection (β < 0)."""
    for which in (0, 1):  # zeros of p alone, zeros of q alone
        s_np, t_np = realistic_logits(41 + which, 2, 24)
        (t_np if which == 0 else s_np)[:, [3, 17]] = -np.inf
        for order in ORDERS:
            for alpha in (-2.0, 3.0):
                compare_with_reference(s_np, t_np, torch.float32, alpha, 0.4, div, order, params)
