"""Sweeps over whole classes of fragile inputs, in amid_ref and in every torch path.

Each test sweeps a class (every divergence of the contract with its accuracy parameter sets,
every order, the contract's α grid and the λ grid) rather than pinning one example:

* confident students (one token 20–60 nats above the rest) on tokens the teacher finds
  unlikely: the gradient keeps its softmax invariance Σ_j ∂L/∂s_j = 0, and matches the
  oracle; the dominant token's 1 − q_k was lost when the log-softmax rounded log q_k to 0;
* overflow: a loss is either finite with a finite gradient, or +inf and refused under a
  gradient with a ValueError; never a clamped number with a NaN gradient;
* AB values with teacher tokens masked at −1e9, −1e30 and the dtype's most negative number;
* equal distributions: every divergence of p = q is exactly 0, never negative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from amid_ref import amid_grad, amid_loss, precise
from amid_ref._specs import ORDERS, SPECS, alpha_grid, lambda_grid
from amid_ref.tolerances import assert_within, tolerance

torch = pytest.importorskip("torch")
from _triton import Launches, interpreted  # noqa: E402

import gpu  # noqa: E402

INF = math.inf
#: (name, params) for every divergence of the contract (its accuracy sets); "f" needs a
#: user generator and is swept by tests/test_fidelity.py.
DIVERGENCE_CASES = [
    (spec.name, params)
    for spec in SPECS.values()
    if spec.name != "f"
    for params in spec.cases_for("accuracy")
]
GPU_CASES = [(name, params) for name, params in DIVERGENCE_CASES if SPECS[name].offered_by("gpu")]
ALPHAS = alpha_grid("contract")
LAMS = lambda_grid("full")
#: A thinner grid for the torch paths (one call per objective costs ~1 ms).
GPU_ALPHAS = (-INF, -5.0, 0.0, 1.0 - 1e-7, 1.0, 3.0, INF)
GPU_LAMS = (0.0, 1e-15, 0.5, 1.0 - 1e-15, 1.0)
#: α at the endpoints λ ∈ {0, 1} of the sweeps: there r = q or r = p whatever α is
#: (:func:`amid_ref.log_alpha_mean`), so every α gives one objective. α = ±∞ are kept for
#: their own form of the gradient's normalizer term (gpu._torch_kernel._normalizer_operand),
#: α = 1 for the finite one.
ENDPOINT_ALPHAS = (-INF, 1.0, INF)


def _objectives(alphas, lams):
    """(α, λ) of a sweep: every α at each interior λ (1e-15 from an end included), the
    endpoints λ ∈ {0, 1} at :data:`ENDPOINT_ALPHAS` only."""
    assert set(ENDPOINT_ALPHAS) <= set(alphas)
    return [(a, lam) for lam in lams for a in (ENDPOINT_ALPHAS if lam in (0.0, 1.0) else alphas)]


def _case_id(case) -> str:
    name, params = case
    return f"{name}-{'-'.join(f'{v:g}' for v in params.values())}" if params else name


def confident_rows(v: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Rows where the student puts one token 20, 35 or 60 nats above its others, and the
    teacher puts that token 30 nats below its own maximum, 5 below, or 2 above."""
    rng = np.random.default_rng(0)
    s_rows, t_rows = [], []
    for margin in (20.0, 35.0, 60.0):
        for gap in (-30.0, -5.0, 2.0):
            s, t = rng.normal(0.0, 1.0, v), rng.normal(0.0, 1.0, v)
            s[2] = s.max() + margin
            t[2] = t.max() + gap
            s_rows.append(s)
            t_rows.append(t)
    # float32 values: the float32 and float64 torch paths share one reference
    return (np.array(s_rows, dtype=np.float32).astype(np.float64),
            np.array(t_rows, dtype=np.float32).astype(np.float64))  # fmt: skip


def assert_softmax_invariant(g: np.ndarray, tol, what: str) -> None:
    """Σ_j g_j = 0 per row, relative to the row's largest entry (plus the row-scaled floor)."""
    scale = np.abs(g).max(-1)
    bound = tol.rtol * scale + tol.atol * np.maximum(1.0, scale)
    excess = np.abs(g.sum(-1)) / bound
    assert excess.max() <= 1.0, f"{what}: |Σ g| is {excess.max():.3g}× the bound, rows {g}"


def _assert_grad_close(got, want, loss, tol, what):
    """``got`` within ``tol`` of ``want``, row-scaled by the larger of the row's largest
    gradient entry and its loss (the confident rows' loss reaches 1e13 where the gradient is
    1e6: :func:`test_gpu_gradient_on_confident_rows`)."""
    scale = np.maximum(np.abs(want).max(-1, keepdims=True), np.abs(loss)[:, None])
    bound = tol.atol * np.maximum(1.0, scale) + tol.rtol * scale
    err = np.abs(got - want) / bound
    assert err.max() <= 1.0, f"{what}: {err.max():.3g}× the bound\n{got}\n{want}"


# --- confident students ---------------------------------------------------------------------


@pytest.mark.parametrize("case", DIVERGENCE_CASES, ids=_case_id)
def test_reference_gradient_is_softmax_invariant_on_confident_rows(case):
    name, params = case
    s, t = confident_rows()
    tol = tolerance("reference", "grad")
    for order in ORDERS:
        for alpha, lam in _objectives(ALPHAS, LAMS):
            for detach in (False, True):
                try:
                    g = amid_grad(s, t, alpha, lam, name, order, params, 1.0, detach)
                except ValueError:  # +inf loss (α ≥ 1 and a masked side): refused
                    continue
                assert_softmax_invariant(g, tol, f"{name}{params} {order} α={alpha} λ={lam}")


#: The objectives held to the oracle on confident rows (the oracle differentiates at 50
#: digits: a subset of the grid, every divergence and order).
ORACLE_POINTS = ((-5.0, 0.1), (0.0, 0.0), (0.0, 1.0), (1.0, 0.5), (3.0, 0.9), (-INF, 0.5))


@pytest.mark.parametrize("case", DIVERGENCE_CASES[::2], ids=_case_id)
def test_reference_gradient_matches_oracle_on_confident_rows(case):
    name, params = case
    s, t = confident_rows(5)
    tol = tolerance("reference", "grad")
    for order in ORDERS:
        for alpha, lam in ORACLE_POINTS:
            for i in (1, 6, 8):  # margins 20 and 60; teacher 30 below, 5 below, 2 above
                try:
                    got = amid_grad(s[i], t[i], alpha, lam, name, order, params)
                except ValueError:
                    continue
                want = precise.to_float(
                    precise.amid_grad(s[i], t[i], alpha, lam, name, order, params)
                )
                err = np.abs(got - want).max()
                assert err <= tol.atol + tol.rtol * np.abs(want).max(), (
                    f"{name}{params} {order} α={alpha} λ={lam} row {i}: {got} vs {want}"
                )


def _torch_grad(s, t, alpha, lam, name, order, params, dtype, detach=False):
    x = torch.tensor(s, dtype=dtype, requires_grad=True)
    loss = gpu.amid_loss(
        x, torch.tensor(t, dtype=dtype), alpha, lam, name, order, params,
        reduction="sum", detach_assistant=detach,
    )  # fmt: skip
    loss.backward()
    return x.grad.double().numpy()


def _sweep_torch_gradient(s, t, name, params, points, dtypes=("float64", "float32")):
    """The torch loss's gradient on rows ``s``, ``t`` at each (α, λ) of ``points``, every
    order, in each of ``dtypes``: softmax invariance, and amid_ref's gradient within the gpu
    rows by :func:`_assert_grad_close` (objectives amid_ref refuses are left out)."""
    for order in ORDERS:
        for alpha, lam in points:
            try:
                want = amid_grad(s, t, alpha, lam, name, order, params)
            except ValueError:
                continue
            loss = amid_loss(s, t, alpha, lam, name, order, params)
            for dtype in dtypes:
                tol = tolerance("gpu", "grad", dtype)
                what = f"{name}{params} {order} α={alpha} λ={lam} {dtype}"
                got = _torch_grad(s, t, alpha, lam, name, order, params, getattr(torch, dtype))
                assert_softmax_invariant(got, tol, what)
                _assert_grad_close(got, want, loss, tol, what)


@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_gpu_gradient_on_confident_rows(case):
    """The torch loss on confident rows, float64 and float32: softmax invariance, and
    amid_ref's gradient within the gpu rows, row-scaled by the larger of the row's largest
    gradient entry and its loss. On these rows the loss reaches 1e13 (χ² of a student 60
    nats sure against a teacher 30 nats unsure) while the gradient is 1e6: in float32 the
    log-probabilities near −35 carry errors of 35 ulps, which the loss's powers of r/q
    turn into gradient errors of the loss's relative size. Row-scaled by the gradient alone,
    float32 is 11.8× the bound at worst there (χ² and Amari ±3 at α = 1 − 1e-7, λ = ½;
    875× before the closed-form pairs), and float64 within it."""
    name, params = case
    _sweep_torch_gradient(*confident_rows(), name, params, _objectives(GPU_ALPHAS, GPU_LAMS))


# --- distributions apart, α > 1 -----------------------------------------------------------------


def apart_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows where the student and the teacher are sure of different tokens, 10 to 100 nats
    apart. For α > 1 (β < 0) the mixture is near the smaller of p and q, so its normalizer Z
    falls to e^−20 … e^−60 (1/Z up to 1e26), and the weight w = ∂log m/∂log q underflows
    to 0 in float32 and float64 where q ≫ p (|β|·|log p − log q| beyond the dtype's range):
    those entries reach the student only through log Z, by the normalizer term K."""
    s = np.array([[-40.0, -60.0, 30.0, 40.0],  # the fuzzed row that found it
                  [0.0, -20.0, 1.0, 35.0],
                  [-5.0, 2.0, 60.0, 1.0],
                  [3.0, -1.0, 0.5, 100.0]])  # fmt: skip
    t = np.array([[70.0, -10.0, 10.0, -10.0],
                  [45.0, 0.0, -3.0, 1.0],
                  [0.5, 80.0, -2.0, 1.0],
                  [70.0, 0.0, -4.0, 2.0]])  # fmt: skip
    return s, t


#: α > 1 (β = −1 … −24.5) at interior λ: Z < 1 − λ on every row of :func:`apart_rows`.
APART_POINTS = tuple((a, lam) for a in (3.0, 5.0, 10.0, 50.0) for lam in (0.1, 0.5, 0.9))


def test_reference_normalizer_term_matches_oracle_on_apart_rows():
    """amid_ref's K = r ⊙ w − q Σ r ⊙ w (``_normalizer_gradient``) where (1−λ)/Z reaches
    1e26: against K formed at 50 digits from the oracle's log-probabilities. Taking
    (1−λ)/Z · q off r ⊙ w before the projection left it 2e6 off entries of 1e-3 there."""
    import mpmath

    from amid_ref import _loss
    from amid_ref._specs import Objective

    s, t = np.array([-40.0, -60.0, 30.0, 40.0]), np.array([70.0, -10.0, 10.0, -10.0])
    with mpmath.workdps(50):
        for alpha, lam in ((50.0, 0.5), (5.0, 0.1), (3.0, 0.9)):
            objective = Objective.of(alpha, lam, "kl", "rq", implementation="amid_ref")
            ctx = _loss._prepare(s[None], t[None], objective)
            log_w = _loss._alpha_mixture_weights(ctx.p, ctx.q, alpha, lam)[0]
            got = _loss._normalizer_gradient(ctx, np.exp(log_w))[0]
            lq, lp = ([mpmath.mpf(x) - mpmath.log(sum(mpmath.exp(y) for y in row)) for x in row]
                      for row in (s, t))  # fmt: skip
            beta = mpmath.mpf(1 - alpha) / 2
            m_beta = [lam * mpmath.exp(beta * a) + (1 - lam) * mpmath.exp(beta * b)
                      for a, b in zip(lp, lq, strict=True)]  # fmt: skip
            z = sum(mb ** (1 / beta) for mb in m_beta)
            # r ⊙ w = (1−λ) q^β m^(1−β) / Z
            rw = [(1 - lam) * mpmath.exp(beta * b) * mb ** ((1 - beta) / beta) / z
                  for b, mb in zip(lq, m_beta, strict=True)]  # fmt: skip
            total = sum(rw)
            want = np.array([float(x - mpmath.exp(b) * total) for x, b in zip(rw, lq, strict=True)])
            assert np.abs(got - want).max() <= 1e-15 * max(1.0, np.abs(want).max()), (
                alpha, lam, got, want)  # fmt: skip


@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_gpu_gradient_on_apart_rows(case):
    """The torch loss on :func:`apart_rows` at α > 1, float64 and float32, every order:
    softmax invariance, and amid_ref's gradient within the gpu rows (row-scaled as on
    confident rows). The entries whose w underflowed came back 1e7 (float64) and 1e16
    (float32) off unit entries at α = 50, λ = ½ while the normalizer term took
    (1−λ)/Z · q off r ⊙ w before its projection (now S·q·expm1(x − L))."""
    name, params = case
    _sweep_torch_gradient(*apart_rows(), name, params, APART_POINTS)


@pytest.fixture
def triton_launches(monkeypatch):
    """``(device, launches)``: the Triton backend fresh (no fallback left from an earlier
    test) on CUDA or under the interpreter (TRITON_INTERPRET=1), its first pass's launches
    counted; skipped where neither runs it."""
    pytest.importorskip("triton")
    from gpu import _engine
    from gpu import _triton_kernel as tk

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not interpreted():
        pytest.skip("the Triton kernel needs CUDA or TRITON_INTERPRET=1")
    launches = Launches(tk._normalizer_pass)
    monkeypatch.setattr(tk, "_normalizer_pass", launches)
    monkeypatch.setattr(_engine, "_TRITON", [])
    return device, launches


def test_triton_gradient_on_apart_rows(triton_launches):
    """:func:`test_gpu_gradient_on_apart_rows` through the Triton kernel (float32), KL, JS
    and AB (λ = ½), Jeffreys (λ = 0.9) and χ² (λ = 0.1) in every order at α = 5 and 50, its
    launches counted."""
    device, launches = triton_launches
    s, t = apart_rows()
    tol = tolerance("gpu", "grad", "float32")
    # AB and χ² with q an argument: pass c2 reads the stored pair and forms the through-Z
    # term from the tile; the others form both in c2
    cases = [("kl", {}, 0.5), ("js", {"beta": 0.5}, 0.5), ("ab", {"alpha": 0.2, "beta": 0.7}, 0.5),
             ("jeffreys", {}, 0.9), ("chi2", {}, 0.1)]  # fmt: skip
    runs = 0
    for name, params, lam in cases:
        for order in ORDERS:
            for alpha in (5.0, 50.0):
                want = amid_grad(s, t, alpha, lam, name, order, params)
                loss = amid_loss(s, t, alpha, lam, name, order, params)
                x = torch.tensor(s, dtype=torch.float32, device=device, requires_grad=True)
                gpu.amid_loss(x, torch.tensor(t, dtype=torch.float32, device=device), alpha,
                              lam, name, order, params, reduction="sum",
                              backend="triton").backward()  # fmt: skip
                runs += 1
                got = x.grad.double().cpu().numpy()
                what = f"triton {name} {order} α={alpha}"
                assert_softmax_invariant(got, tol, what)
                _assert_grad_close(got, want, loss, tol, what)
    assert launches.count == runs


# --- λ 1e-15 from 0, students close to the teacher ----------------------------------------------


def close_rows() -> tuple[np.ndarray, np.ndarray]:
    """Two teachers N(0, 3) over 10 tokens and students 1e-5 from them (the fuzzed rows
    that found it). At λ = 1e-15, r ≈ q and w ≈ 1: r ⊙ w is a multiple of q to 1e-15, and
    the AB-divergence with a_ + b_ = −4.5 weighs the unlikely tokens by q^−4.5."""
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(2):
        t = rng.normal(0.0, 3.0, 10)
        rows.append((t + rng.normal(0.0, 1e-5, 10), t))
    return np.array([s for s, _ in rows]), np.array([t for _, t in rows])


#: The paired objectives (g_q + w·g_r in closed form) at λ = 1e-15.
NEAR_ZERO_CASES = [("ab", {"alpha": -1.6, "beta": -2.9}), ("ab", {"alpha": 0.2, "beta": 0.7}),
                   ("chi2", {}), ("amari", {"alpha": 3.0})]  # fmt: skip
NEAR_ZERO_POINTS = ((1.0001, 1e-15), (-5.0, 1e-15), (3.0, 1e-15))


def test_reference_gradient_near_lambda_zero_matches_oracle():
    """amid_ref against the oracle on :func:`close_rows` at λ = 1e-15, AB(−1.6, −2.9) in
    both orders with q: projecting w ⊙ r·Σ g_r onto q's tangent space kept ε/λ = 10 % of
    that term, 8 % of the whole gradient (entries up to 0.05); those rows now take
    pair − (Σ g_r)·K, K exact."""
    s, t = close_rows()
    tol = tolerance("reference", "grad")
    for order in ("qr", "rq"):
        for alpha in (1.0001, -5.0):
            args = (alpha, 1e-15, "ab", order, {"alpha": -1.6, "beta": -2.9})
            got = amid_grad(s[0], t[0], *args)
            want = precise.to_float(precise.amid_grad(s[0], t[0], *args))
            err = np.abs(got - want).max()
            assert err <= tol.atol + tol.rtol * np.abs(want).max(), (args, got, want)


def resolved_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows float32 resolves (float32 values): three students 1e-2 from their teachers
    N(0, 3) and three drawn apart, over 12 tokens."""
    rng = np.random.default_rng(7)
    t = rng.normal(0.0, 3.0, (6, 12))
    s = np.concatenate([t[:3] + rng.normal(0.0, 1e-2, (3, 12)), rng.normal(0.0, 3.0, (3, 12))])
    return s.astype(np.float32).astype(np.float64), t.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("case", NEAR_ZERO_CASES, ids=_case_id)
def test_gpu_gradient_near_lambda_zero(case):
    """The torch loss at λ = 1e-15 and 1e-7, every order: softmax invariance, and
    amid_ref's gradient within the gpu rows (row-scaled as on confident rows), float64 on
    :func:`close_rows` and :func:`resolved_rows`, float32 on the latter. Float32 does not
    resolve rows 1e-5 apart (their log-probabilities differ by 40 ulps: 250× the bound at
    λ = 1e-4 as at 1e-15). AB(−1.6, −2.9) D(q‖r) was 2.5e6× the float64 bound on the close
    rows, and the projected form failed 54 of 2187 such checks (α from −∞ to 50, λ from
    1e-15 to ½) that now all pass, within 0.1 of the bound."""
    name, params = case
    points = [(alpha, lam) for alpha, _ in NEAR_ZERO_POINTS for lam in (1e-15, 1e-7)]
    _sweep_torch_gradient(*close_rows(), name, params, points, dtypes=("float64",))
    _sweep_torch_gradient(*resolved_rows(), name, params, points)


def test_triton_small_lambda_pairs_take_the_near_row_form(triton_launches):
    """backend="triton", float32, AB(−1.6, −2.9) D(q‖r) and D(r‖q) on :func:`resolved_rows`, in
    Triton (one launch each): at λ = 1e-6 and 1e-15 the passes take the near-row form
    (H_MODE 3, pair − (Σ g_r)·K on the rows where r ⊙ w is near a multiple of q), where the
    projected form was 60× and 5e10× the gpu bound; at λ = 1e-2 the projected form. Both
    within the bound of amid_ref."""
    device, launches = triton_launches
    s, t = resolved_rows()
    tol = tolerance("gpu", "grad", "float32")
    params = {"alpha": -1.6, "beta": -2.9}
    for lam in (1e-6, 1e-15, 1e-2):
        for order in ("qr", "rq"):
            before = launches.count
            want = amid_grad(s, t, 1.0001, lam, "ab", order, params)
            loss = amid_loss(s, t, 1.0001, lam, "ab", order, params)
            x = torch.tensor(s, dtype=torch.float32, device=device, requires_grad=True)
            teacher = torch.tensor(t, dtype=torch.float32, device=device)
            gpu.amid_loss(x, teacher, 1.0001, lam, "ab", order, params, reduction="sum",
                          backend="triton").backward()  # fmt: skip
            what = f"triton ab {order} λ={lam}"
            assert launches.count - before == 1, what
            _assert_grad_close(x.grad.double().cpu().numpy(), want, loss, tol, what)


def test_reproducer_infinite_alpha_with_a_huge_assistant_gradient():
    """AB(−1.6, −2.9) D(p‖r) at α = −inf on a fuzzed row of logits ±100: Σ g_r is 1e170
    and r ⊙ w = w ⊙ q/Z, so the projected P_q(w ⊙ r·Σ g_r) cancelled, 8× the whole
    gradient off the oracle in amid_ref and the torch kernel alike (entries of 2e157). Now
    −(Σ g_r)·K with K = w r Ā − (1 − w) q S, from two sums of positive terms; the torch
    loss in float64 against amid_ref as well (float32 cannot hold these gradients)."""
    s = np.array([-73.990186, 68.305119, -117.609663, 4.658434, -36.686101, -74.985845,
                  43.578451, -47.865657])  # fmt: skip
    t = np.array([-60.739025, 39.115787, -51.7249, 15.7662, -10.02906, -29.614953, -69.176923,
                  -46.812427])  # fmt: skip
    params = {"alpha": -1.6, "beta": -2.9}
    for order in ("pr", "rp"):  # (with q an argument, or at α = +inf, the loss overflows)
        args = (-INF, 0.3, "ab", order, params)
        got = amid_grad(s, t, *args)
        want = precise.to_float(precise.amid_grad(s, t, *args))
        tol = tolerance("reference", "grad")
        assert np.abs(got - want).max() <= tol.atol + tol.rtol * np.abs(want).max(), (
            order, got, want)  # fmt: skip
        loss = amid_loss(s[None], t[None], *args)
        torch_got = _torch_grad(s[None], t[None], *args, torch.float64)
        _assert_grad_close(torch_got, got[None], loss, tolerance("gpu", "grad", "float64"),
                           f"torch {order}")  # fmt: skip


def test_reproducer_underflowed_weight_with_a_huge_divergence_gradient():
    """Amari γ = 7 (AB(−3, 4)) D(r‖p) at α = −1, λ = 1e-8, logits ±9984: where q = e^−19968,
    r = λp/Z is 1e-9 and ∂D/∂log r is −8e22, while w = e^−19948 is 0 in float64. That
    entry reaches the student only through log Z (and K = 0 at α = −1): amid_ref took it
    into P_r's sum, which cancelled every other entry to 0; it now splits it off where w is
    0 in float64, as the torch kernel does."""
    s = np.array([9984.0, 9984.0, 9984.0, -9984.0, 9984.0])
    t = np.array([9984.0, 9984.0, -9984.0, 9984.0, -9984.0])
    args = (-1.0, 1e-8, "amari", "rp", {"alpha": 7.0})
    want = precise.to_float(precise.amid_grad(s, t, *args))
    assert np.abs(want).max() > 0.09
    tol = tolerance("reference", "grad")
    got = amid_grad(s, t, *args)
    assert np.abs(got - want).max() <= tol.atol + tol.rtol * np.abs(want).max(), (got, want)
    got = _torch_grad(s[None], t[None], *args, torch.float64)[0]
    tol = tolerance("gpu", "grad", "float64")
    assert np.abs(got - want).max() <= tol.atol + tol.rtol * np.abs(want).max(), (got, want)


def test_reproducer_chi2_gradient_on_logits_of_1e4():
    """χ² D(p‖r), α = 0, λ = 1e-8, logits ±1e4 (a fuzzed row): w underflows to 0 in float64
    where the student's logit is 2e4 below the teacher's, and ∂D/∂log r is 1e8 there; taken
    into P_r's sum (the reference's old split, at log w = −inf only) it left the gradient
    2.5e-7 off mpmath relative to its 1.2e6 entries, 25× the reference's row."""
    s = np.array([-9999.063184828015, 9999.737546405351, -9999.302796070677,
                  10000.533769940508, -10001.171215710776])  # fmt: skip
    t = np.array([9999.76212829635, 9999.400570904465, 10001.839446896776,
                  9999.856061984436, 10000.121805159533])  # fmt: skip
    args = (0.0, 1e-8, "chi2", "pr", {})
    want = precise.to_float(precise.amid_grad(s, t, *args))
    tol = tolerance("reference", "grad")
    got = amid_grad(s, t, *args)
    assert np.abs(got - want).max() <= tol.atol + tol.rtol * np.abs(want).max(), (got, want)


def test_reproducer_confident_chi2_gradient():
    """χ² with λ = 1 (r = p) in the order qr is the same loss as λ = 0 in the order rp."""
    s, t = np.array([0.0, 1.0, 40.0]), np.array([0.0, 1.5, -30.0])
    want = precise.to_float(precise.amid_grad(s, t, 0.0, 1.0, "chi2", "qr"))
    for got in (amid_grad(s, t, 0.0, 0.0, "chi2", "rp"), amid_grad(s, t, 0.0, 1.0, "chi2", "qr")):
        assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max()
    for dtype in (torch.float64, torch.float32):
        got = _torch_grad(s[None], t[None], 0.0, 1.0, "chi2", "qr", {}, dtype)[0]
        tol = tolerance("gpu", "grad", str(dtype).removeprefix("torch."))
        assert np.abs(got - want).max() <= tol.rtol * np.abs(want).max()


# --- overflow ----------------------------------------------------------------------------------


def overflow_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows where terms overflow float32 or are infinite: one-sided masked tokens (−inf),
    logits 100 and 1000 apart, a confident student against a near-zero teacher token."""
    s = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, -INF],
            [0.0, 1.0, -100.0, 2.0],
            [50.0, 0.0, -50.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 900.0, 0.0],
        ]
    )
    t = np.array(
        [
            [0.0, 0.0, -100.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 2.0, -INF],
            [-50.0, 0.0, 50.0, 0.0],
            [0.0, -1000.0, 0.0, 1000.0],
            [0.0, 0.0, -900.0, 0.0],
        ]
    )
    return s, t


@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_gpu_overflow_scan(case):
    """float64, float32, bfloat16: a +inf loss raises under a gradient (naming the loss),
    and a finite loss has a finite gradient (or an error naming the gradient's dtype);
    never a NaN, never a loss clamped to the dtype's largest number."""
    name, params = case
    s_all, t_all = overflow_rows()
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        s_t, t_t = torch.tensor(s_all, dtype=dtype), torch.tensor(t_all, dtype=dtype)
        for order in ORDERS:
            for alpha, lam in _objectives(GPU_ALPHAS, (0.0, 0.5, 1.0)):
                _overflow_check(s_t, t_t, (alpha, lam, name, order, params), dtype)


def _overflow_check(s, t, objective, dtype) -> None:
    what = f"{objective} {dtype}"
    try:
        values = gpu.amid_loss(s, t, *objective, reduction="none")
    except ValueError as exc:  # an empty assistant support on some row (α ≥ 1): row by row
        assert "undefined" in str(exc), f"{what}: {exc}"
        if len(s) > 1:
            for i in range(len(s)):
                _overflow_check(s[i : i + 1], t[i : i + 1], objective, dtype)
        return
    assert not values.isnan().any(), what
    assert (values.abs() < torch.finfo(values.dtype).max).logical_or(values == INF).all(), (
        f"{what}: a loss clamped to the dtype's largest number: {values}"
    )
    finite = torch.isfinite(values)
    if finite.any():
        x = s[finite].clone().requires_grad_(True)
        try:
            gpu.amid_loss(x, t[finite], *objective, reduction="sum").backward()
        except ValueError as exc:
            assert "exceeds the range of its dtype" in str(exc), f"{what}: {exc}"
        else:
            assert torch.isfinite(x.grad).all(), f"{what}: gradient {x.grad}"
    for i in torch.nonzero(~finite).flatten().tolist():
        x = s[i : i + 1].clone().requires_grad_(True)
        with pytest.raises(ValueError, match=r"loss is \+inf"):
            gpu.amid_loss(x, t[i : i + 1], *objective).backward()


@pytest.mark.parametrize("case", DIVERGENCE_CASES, ids=_case_id)
def test_reference_overflow_scan(case):
    """amid_ref on the same rows: a finite loss has a finite gradient; +inf refuses it."""
    name, params = case
    s_all, t_all = overflow_rows()
    for order in ORDERS:
        for alpha, lam in _objectives(ALPHAS, (0.0, 0.5, 1.0)):
            _reference_overflow_check(s_all, t_all, (alpha, lam, name, order, params))


def _reference_overflow_check(s, t, objective) -> None:
    """All rows in one call; row by row where one row's assistant support is empty (the
    call refuses them all), the +inf rows alone under the gradient."""
    what = f"{objective} rows {s.tolist()}"
    try:
        values = np.asarray(amid_loss(s, t, *objective), dtype=float).reshape(len(s))
    except ValueError as exc:
        assert "undefined" in str(exc), f"{what}: {exc}"
        if len(s) > 1:
            for i in range(len(s)):
                _reference_overflow_check(s[i : i + 1], t[i : i + 1], objective)
        return
    assert not np.isnan(values).any(), what
    finite = np.isfinite(values)
    assert (finite | (values == INF)).all(), what
    if finite.any():
        assert np.isfinite(amid_grad(s[finite], t[finite], *objective)).all(), what
    for i in np.flatnonzero(~finite):
        with pytest.raises(ValueError, match=r"loss is \+inf"):
            amid_grad(s[i : i + 1], t[i : i + 1], *objective)


def test_reproducer_overflowing_amari_term():
    s, t = torch.zeros(1, 3, requires_grad=True), torch.tensor([[0.0, 0.0, -100.0]])
    with pytest.raises(ValueError, match=r"loss is \+inf.*exceeds the float32 range"):
        gpu.amid_loss(s, t, 0.0, 1.0, "amari", "qr", {"alpha": -3.0}).backward()
    value = gpu.amid_loss(s.detach().double(), t.double(), 0.0, 1.0, "amari", "qr", {"alpha": -3.0})
    want = amid_loss(s.detach().double().numpy(), t.double().numpy(), 0.0, 1.0, "amari", "qr",
                     {"alpha": -3.0})  # fmt: skip
    assert_within(float(value), float(want[0]), tolerance("gpu", "loss", "float64"))


def test_inf_loss_message_names_alpha_only_where_it_matters():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[0.0, 0.0, -INF]])
    with pytest.raises(ValueError, match=r"loss is \+inf") as info:
        gpu.amid_loss(s, t, -5.0, 0.0, "kl", "rp").backward()
    assert "≥ 1" not in str(info.value) and "alpha" not in str(info.value)
    with pytest.raises(ValueError, match=r"loss is \+inf") as info:
        amid_grad(s.detach().numpy(), t.numpy(), -5.0, 0.0, "kl", "rp")
    assert "≥ 1" not in str(info.value)


# --- AB with masked teacher tokens ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mask", [-1e9, -1e30, "finfo.min"])
def test_ab_with_masked_teacher_tokens(mask, dtype):
    """ABKD (λ = 0, AB(0.2, 0.7)) with a tenth of the teacher's tokens masked by a very
    negative finite logit, the common masking idiom: y^λ(Q(λ) − Q(a_))/b_ cancelled there."""
    tdt = getattr(torch, dtype)
    fill = torch.finfo(tdt).min if mask == "finfo.min" else mask
    rng = np.random.default_rng(4)
    s, t = rng.normal(0, 2, (4, 1000)), rng.normal(0, 2, (4, 1000))
    t[:, :100] = fill
    s = torch.tensor(s, dtype=tdt)
    t = torch.tensor(t, dtype=tdt)
    got = gpu.presets.get("abkd").loss(s, t, reduction="none").double().numpy()
    want = np.asarray(
        __import__("amid_ref").presets.get("abkd").loss(s.double().numpy(), t.double().numpy())
    )
    assert_within(got, want, tolerance("gpu", "loss", dtype), what=f"ABKD masked at {mask}")


def test_ab_with_masked_teacher_tokens_reference_matches_oracle():
    rng = np.random.default_rng(4)
    s, t = rng.normal(0, 2, (2, 12)), rng.normal(0, 2, (2, 12))
    t[:, :3] = -1e9
    t[1, 3] = np.finfo(np.float64).min / 2
    for i in range(2):
        got = amid_loss(s[i], t[i], 0.0, 0.0, "ab", "pr", {"alpha": 0.2, "beta": 0.7})
        want = precise.to_float(
            precise.amid_loss(s[i], t[i], 0.0, 0.0, "ab", "pr", {"alpha": 0.2, "beta": 0.7})
        )
        assert_within(got, want, tolerance("reference", "loss"))


# --- equal distributions ---------------------------------------------------------------------


def _equal_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, (3, 40)), rng.normal(0, 30, (2, 40))])
    x[0, :5] = -INF
    x[1, 7] = 60.0  # a confident row
    return x


@pytest.mark.parametrize("case", DIVERGENCE_CASES, ids=_case_id)
def test_reference_equal_distributions_give_exact_zero(case):
    name, params = case
    x = _equal_rows()
    for order in ORDERS:
        for alpha, lam in _objectives(ALPHAS, LAMS):
            try:
                value = amid_loss(x, x, alpha, lam, name, order, params)
            except ValueError:
                continue
            assert (value == 0.0).all(), (name, params, order, alpha, lam, value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_gpu_equal_distributions_give_exact_zero(case, dtype):
    name, params = case
    x = torch.tensor(_equal_rows(), dtype=getattr(torch, dtype))
    for order in ORDERS:
        for alpha, lam in _objectives(GPU_ALPHAS, GPU_LAMS):
            value = gpu.amid_loss(x, x, alpha, lam, name, order, params, reduction="none")
            assert (value == 0.0).all(), (name, params, order, alpha, lam, value)


# --- supports that differ, with an assistant mass that underflows ---------------------------


def _support_mismatch_rows() -> tuple[np.ndarray, np.ndarray]:
    """A student zero where the teacher has mass, and a teacher zero where the student has
    mass. Near α = 1 the assistant keeps ~λ^(1/β)·p on the student's zero (β = (1−α)/2):
    e^(−3219) at α = 0.999, λ = 0.2, below every float's range, yet positive."""
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(2, 12)), rng.normal(size=(2, 12))
    s[:, 3] = -INF
    t[:, 5] = -INF
    return s, t


@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_gpu_support_mismatch_follows_reference(case):
    """+inf exactly where amid_ref has it (a > 0 = b), also where a underflowed (a KL term
    of 0·inf read as 0 gave a finite loss near α = 1), and the same finite values elsewhere:
    the torch kernel in float64."""
    name, params = case
    s, t = _support_mismatch_rows()
    tol = tolerance("gpu", "loss", "float64")
    for order in ORDERS:
        for alpha in (0.999, 1.0 - 1e-7, 1.001, -0.999):
            for lam in (0.2, 0.8):
                want = amid_loss(s, t, alpha, lam, name, order, params)
                got = gpu.amid_loss(
                    torch.tensor(s), torch.tensor(t), alpha, lam, name, order, params,
                    reduction="none", backend="torch",
                ).numpy()  # fmt: skip
                what = (name, params, order, alpha, lam)
                assert (np.isposinf(got) == np.isposinf(want)).all(), (what, got, want)
                fin = np.isfinite(want)
                assert_within(got[fin], want[fin], tol, what=str(what))


@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_triton_support_mismatch_follows_reference(triton_launches, case):
    """The same rows through the Triton kernel (float32: it hands float64 to the torch
    kernel), its launches counted: each order once, near α = 1 on either side of the
    underflow (α = 0.999 and 1 − 1e-7) and at α = −0.999, λ 0.2 and 0.8 in turn, against
    amid_ref on the float32-rounded rows. Interpreted on the CPU (TRITON_INTERPRET=1)."""
    from gpu import _triton_kernel as tk

    device, launches = triton_launches
    name, params = case
    s64, t64 = (x.astype(np.float32).astype(np.float64) for x in _support_mismatch_rows())
    tol = tolerance("gpu", "loss", "float32")
    runs = zip(ORDERS, (0.999, 1.0 - 1e-7, -0.999, 0.999), (0.2, 0.8, 0.2, 0.8), strict=True)
    for order, alpha, lam in runs:
        want = amid_loss(s64, t64, alpha, lam, name, order, params)
        got = gpu.amid_loss(
            torch.tensor(s64, dtype=torch.float32, device=device),
            torch.tensor(t64, dtype=torch.float32, device=device),
            alpha, lam, name, order, params, reduction="none", backend="triton",
        ).double().cpu().numpy()  # fmt: skip
        what = (name, params, order, alpha, lam)
        assert (np.isposinf(got) == np.isposinf(want)).all(), (what, got, want)
        fin = np.isfinite(want)
        assert_within(got[fin], want[fin], tol, what=str(what))
    assert launches.count == len(ORDERS) or name not in tk.TRITON_DIVERGENCES, launches.count
