"""Ground-truth fidelity at the inputs where float64 formulas are most fragile.

Each case is checked against the mpmath oracle :mod:`amid_ref.precise`, whose value there is
itself checked (against a higher working precision or a closed form). Gradients are
compared row-scaled: ``|got − want| ≤ 1e-8 · max(1, max_j |want_j|)``.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from scipy.special import xlogy

from amid_ref import amid_grad, amid_loss, divergence, precise
from amid_ref._specs import ORDERS, SPECS
from amid_ref.tolerances import assert_within, tolerance

INF = np.inf


def _oracle_loss(*args, **kwargs):
    """precise.amid_loss, checked against itself at 30 more digits."""
    want = precise.amid_loss(*args, **kwargs)
    higher = precise.amid_loss(*args, dps=80, **kwargs)
    assert abs(precise.to_float(want) - precise.to_float(higher)) <= 1e-15 * abs(
        precise.to_float(higher)
    ), (want, higher)
    return precise.to_float(want)


def assert_grad_rows(got, want, what: str, rtol: float = 1e-8) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = np.maximum(1.0, np.max(np.abs(want), axis=-1, keepdims=True))
    err = np.max(np.abs(got - want) / scale)
    assert err <= rtol, f"{what}: row-scaled error {err:.3g} > {rtol} (got {got}, want {want})"


# --- generic f-divergence gradients --------------------------------------------------------


def _kl_generator(u):
    if isinstance(u, mpmath.mpf):
        return u * mpmath.log(u) if u else mpmath.mpf(0)
    return xlogy(u, u)


def _hellinger_generator(u):
    if isinstance(u, mpmath.mpf):
        return (mpmath.sqrt(u) - 1) ** 2 / 2
    return (np.sqrt(u) - 1.0) ** 2 / 2.0


def _tv_generator(u):
    return abs(u - 1) / 2 if isinstance(u, mpmath.mpf) else np.abs(u - 1.0) / 2.0


F_KL = {"f": _kl_generator, "f_prime": lambda u: np.log(u) + 1.0}
F_HELLINGER = {"f": _hellinger_generator, "f_prime": lambda u: (1.0 - 1.0 / np.sqrt(u)) / 2.0}
F_TV = {"f": _tv_generator, "f_prime": lambda u: np.sign(u - 1.0) / 2.0, "f_inf_slope": 0.5}


def _mp(params):
    return {k: v for k, v in params.items() if k != "f_prime"}


@pytest.mark.parametrize(
    "params,named,t",
    [
        (F_KL, "kl", [0.5, 0.1, -INF]),  # an exact zero of p: 0·f'(0) with f'(0) = −inf
        (F_KL, "kl", [0.5, 0.1, -1000.0]),  # p underflows to 0 with a finite logit
        (F_HELLINGER, "hellinger", [0.5, 0.1, -INF]),
    ],
    ids=["kl-neginf", "kl-underflow", "hellinger-neginf"],
)
def test_f_gradient_at_zero_first_argument(params, named, t):
    s = [0.3, -0.2, 1.0]
    got = amid_grad(s, t, 0.0, 0.5, "f", "pr", params)
    assert_grad_rows(got, amid_grad(s, t, 0.0, 0.5, named, "pr"), f"f vs {named}")
    want = precise.to_float(precise.amid_grad(s, t, 0.0, 0.5, "f", "pr", _mp(params)))
    assert_grad_rows(got, want, "f vs oracle")
    loss = amid_loss(s, t, 0.0, 0.5, "f", "pr", params)
    assert_within(
        loss, _oracle_loss(s, t, 0.0, 0.5, "f", "pr", _mp(params)), tolerance("reference", "loss")
    )


@pytest.mark.parametrize("order", ["rp", "pr", "qr"])
def test_f_gradient_carries_the_infinite_ratio_tail(order):
    """b = 0 < a terms a·f_inf_slope: in the loss and in its gradient (TV: slope ½)."""
    s = [0.3, -0.2, 1.0, 0.2]
    t = [0.5, 0.1, -0.4, -INF]  # p = 0 where q, r > 0 (α = −1: union support)
    got = amid_grad(s, t, -1.0, 0.5, "f", order, F_TV)
    assert_grad_rows(got, amid_grad(s, t, -1.0, 0.5, "tv", order), "f(TV) vs tv")
    want = precise.to_float(precise.amid_grad(s, t, -1.0, 0.5, "f", order, _mp(F_TV)))
    assert_grad_rows(got, want, "f(TV) vs oracle")


# --- AB-divergence with a_ + b_ < 0: powers y^(a_+b_) beyond float64 range ----------------


@pytest.mark.parametrize("ab", [(-0.4, -0.3), (-2.0, 0.5), (0.3, -1.0)])
def test_ab_negative_sum_self_divergence_is_zero(ab):
    """D(q‖q) = 0 even where y^(a_+b_) overflows (Theorem 3.4 at q = p)."""
    import torch

    import gpu

    params = {"alpha": ab[0], "beta": ab[1]}
    s = np.array([0.0, -1100.0, -3.0])
    for lam in (0.3, 1.0 - 1e-15):
        for order in ORDERS:
            want = precise.to_float(precise.amid_loss(s, s, -5.0, lam, "ab", order, params))
            got = amid_loss(s, s, -5.0, lam, "ab", order, params)
            assert_within(got, want, tolerance("reference", "loss"), what=f"{ab} {order}")
            assert_grad_rows(amid_grad(s, s, -5.0, lam, "ab", order, params), 0 * s, "grad")
    ls = s - np.logaddexp.reduce(s)
    assert divergence(ls, ls, "ab", log_input=True, **params) == 0.0
    for dtype, tiny in ((torch.float64, -1500.0), (torch.float32, -150.0)):
        x = torch.tensor([[0.0, tiny, -3.0]], dtype=dtype, requires_grad=True)
        loss = gpu.amid_loss(x, x.detach(), -5.0, 0.3, "ab", "pr", params)
        loss.backward()
        assert abs(float(loss.detach())) <= 1e-12 and float(x.grad.abs().max()) <= 1e-12
        lx = torch.log_softmax(x.detach(), -1)
        assert float(gpu.divergence(lx, lx, "ab", log_input=True, **params)) == 0.0


# --- the tangent projection near a one-hot student ----------------------------------------

ONE_HOT_CASES = [
    ([0.0, 1.0, 60.0], [0.0, 1.5, -30.0], "chi2", {}),
    ([0.0, 1.0, 70.0], [0.0, 1.5, -40.0], "amari", {"alpha": -3.0}),
    ([0.0, 1.0, 45.0], [0.0, 1.5, -20.0], "ab", {"alpha": 1.5, "beta": 0.5}),
    ([0.0, 1.0, 60.0], [0.0, 1.5, -30.0], "kl", {}),
]


def test_oracle_gradient_near_one_hot_student_is_converged():
    s, t, div, params = ONE_HOT_CASES[0]
    low = precise.to_float(precise.amid_grad(s, t, 0.0, 0.1, div, "rp", params))
    high = precise.to_float(precise.amid_grad(s, t, 0.0, 0.1, div, "rp", params, dps=70))
    assert_grad_rows(low, high, "oracle dps 50 vs 70", rtol=1e-15)


@pytest.mark.parametrize("s,t,div,params", ONE_HOT_CASES, ids=[c[2] for c in ONE_HOT_CASES])
def test_gradient_near_one_hot_student(s, t, div, params):
    import torch

    import gpu

    for alpha in (0.0, -5.0, 3.0):
        for order in ORDERS:
            what = f"{div} α={alpha} {order}"
            want = precise.to_float(precise.amid_grad(s, t, alpha, 0.1, div, order, params))
            got = amid_grad(s, t, alpha, 0.1, div, order, params)
            assert_grad_rows(got, want, what)
            scale = max(1.0, float(np.max(np.abs(want))))
            assert abs(float(np.sum(got))) <= 1e-12 * scale, what  # ∂/∂s sums to 0
            x = torch.tensor([s], dtype=torch.float64, requires_grad=True)
            teacher = torch.tensor([t], dtype=torch.float64)
            gpu.amid_loss(x, teacher, alpha, 0.1, div, order, params).backward()
            assert_grad_rows(x.grad.numpy()[0], got, what + " gpu f64", rtol=1e-9)


def test_gradient_near_one_hot_student_float32():
    import torch

    import gpu

    s, t, div, params = ONE_HOT_CASES[0]
    x = torch.tensor([s], dtype=torch.float32, requires_grad=True)
    gpu.amid_loss(x, torch.tensor([t]), 0.0, 0.1, div, "rp", params).backward()
    want = amid_grad(s, t, 0.0, 0.1, div, "rp", params)
    assert_grad_rows(x.grad.double().numpy()[0], want, "gpu f32", rtol=1e-3)


# --- gpu at the largest real vocabularies, on realistic rows ------------------------------

#: (divergence, params, order, α, λ, dtypes): the first is where torch.log_softmax failed.
REALISTIC_CASES = [
    ("kl", {}, "qr", np.inf, 0.3, ("float32", "bfloat16", "float16")),
    ("kl", {}, "pr", -5.0, 0.1, ("float32",)),
    ("js", {"beta": 0.5}, "rq", 0.5, 0.5, ("bfloat16",)),
    ("ab", {"alpha": 0.2, "beta": 0.7}, "rp", 1.0 - 1e-6, 0.1, ("float16",)),
]


def _realistic(rows: int, vocab: int, seed: int):
    """Teacher N(0, 2) − 1.1·log(rank), student = teacher + N(0, 1) (float64)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, 2.0, (rows, vocab)) - 1.1 * np.log(np.arange(1, vocab + 1))
    return t + rng.normal(0.0, 1.0, (rows, vocab)), t


@pytest.mark.parametrize("vocab", [128256, 151936])
def test_gpu_low_precision_at_largest_vocab_realistic_rows(vocab):
    import torch

    import gpu

    s_np, t_np = _realistic(2, vocab, vocab)
    for div, params, order, alpha, lam, dnames in REALISTIC_CASES:
        for dname in dnames:
            dtype = getattr(torch, dname)
            s = torch.tensor(s_np).to(dtype).requires_grad_()
            t = torch.tensor(t_np).to(dtype)
            s64, t64 = s.detach().double().numpy(), t.double().numpy()
            loss = gpu.amid_loss(s, t, alpha, lam, div, order, params, reduction="none")
            loss.sum().backward()
            what = f"{div} {order} α={alpha} λ={lam} {dname} V={vocab}"
            want = amid_loss(s64, t64, alpha, lam, div, order, params)
            assert_within(loss.detach().numpy(), want, tolerance("gpu", "loss", dname), what=what)
            want_g = amid_grad(s64, t64, alpha, lam, div, order, params)
            scale = np.maximum(1.0, np.max(np.abs(want_g), axis=-1, keepdims=True))
            got_g = s.grad.double().numpy()
            if np.isinf(alpha):  # entries tied within fp32 rounding may take either side
                lp = t64 - np.logaddexp.reduce(t64, axis=-1, keepdims=True)
                lq = s64 - np.logaddexp.reduce(s64, axis=-1, keepdims=True)
                tie = np.abs(lq - lp) <= 8 * 1.2e-7 * (1.0 + np.abs(lp))
                got_g = np.where(tie, want_g, got_g)
            assert_within(
                got_g / scale, want_g / scale, tolerance("gpu", "grad", dname), what=what + " grad"
            )


def test_kernel_accuracy_cpu():
    import gpu

    result = gpu.kernel_accuracy(vocab=151936, rows=2)
    held = {k: v["holds"] for k, v in result.items() if k != "log_softmax"}
    assert all(held.values()), result


@pytest.mark.gpu
def test_kernel_accuracy_cuda():
    import gpu

    result = gpu.kernel_accuracy(vocab=151936, rows=4, device="cuda")
    held = {k: v["holds"] for k, v in result.items() if k != "log_softmax"}
    assert all(held.values()), result


# --- log ratios from the mixture: r ≈ p or r ≈ q with tiny probabilities --------------------

#: Every divergence the gpu package offers at its representative parameters, and the
#: parameter sets whose terms are largest for tiny probabilities (AB with a_ + b_ < 0 or
#: b_ < 0, Amari γ = 3, Rényi away from its series branch).
LOG_RATIO_DIVERGENCES = [
    *((name, spec.typical_params) for name, spec in SPECS.items() if spec.offered_by("gpu")),
    ("ab", {"alpha": -0.4, "beta": -0.3}),
    ("ab", {"alpha": 0.5, "beta": -1.2}),
    ("amari", {"alpha": 3.0}),
    ("renyi", {"order": 0.7}),
]


def test_ab_negative_sum_log_ratio_reproducer():
    s, t = [0.0, 5.0, -3.0, 2.0], [40.0, -5.0, 0.0, -2.0]
    args = (s, t, 1.0, 1.0 - 1e-15, "ab", "pr", {"alpha": -0.4, "beta": -0.3}, 0.5)
    want = _oracle_loss(*args)
    assert_within(amid_loss(*args), want, tolerance("reference", "loss"), what="AB λ→1")


@pytest.mark.parametrize("div,params", LOG_RATIO_DIVERGENCES, ids=lambda x: str(x))
def test_losses_with_assistant_near_an_endpoint(div, params):
    """r ≈ p (λ → 1) or r ≈ q (λ → 0): the divergence sees log(r/p) ≈ 1e-13 on tokens with
    log p ≈ −90, which only a directly formed ratio carries to full relative accuracy."""
    import torch

    import gpu

    s, t = [0.0, 5.0, -3.0, 2.0], [40.0, -5.0, 0.0, -2.0]
    tol = tolerance("reference", "loss")
    for alpha in (1.0, -3.0, 0.5):
        for lam, order in ((1.0 - 1e-15, "pr"), (1.0 - 1e-15, "rp"), (1e-15, "qr"), (1e-15, "rq")):
            args = (s, t, alpha, lam, div, order, params, 0.5)
            want = precise.to_float(precise.amid_loss(*args))
            what = f"{div} α={alpha} λ={lam} {order}"
            assert_within(amid_loss(*args), want, tol, what=what)
            got = gpu.amid_loss(
                torch.tensor([s], dtype=torch.float64),
                torch.tensor([t], dtype=torch.float64),
                *args[2:7],
                temperature=0.5,
                reduction="none",
            )
            assert_within(got.numpy()[0], want, tolerance("gpu", "loss", "float64"), what=what)


# --- gradients with huge but cancelling zero-entry terms --------------------------------------

ZERO_ENTRY_S = [-INF, 1.2, -0.7, 0.4]
ZERO_ENTRY_T = [0.3, -0.5, 1.0, -INF]
NEAR_LIMIT_PARAMS = [
    ("ab", {"alpha": 1e-9 * np.cos(1.2), "beta": 1e-9 * np.sin(1.2)}),  # the origin
    ("ab", {"alpha": 1e-9, "beta": 0.6}),  # a_ → 0
    ("ab", {"alpha": 0.6, "beta": 1e-9}),  # b_ → 0
    ("amari", {"alpha": -(1.0 - 1e-9)}),  # γ → −1
    ("amari", {"alpha": 1.0 - 1e-9}),  # γ → +1
]


@pytest.mark.parametrize("div,params", NEAR_LIMIT_PARAMS, ids=lambda x: str(x))
def test_gradient_with_huge_zero_entry_terms(div, params):
    """Terms y^λ/(a_ λ) ~ 1e18 at zeros of one argument: their gradients cancel in exact
    arithmetic and must not leave a rounding residue on gradients of size 1e-7."""
    import torch

    import gpu

    tol = tolerance("reference", "grad")
    for alpha, lam in ((0.0, 1e-15), (-1.0, 0.5), (0.5, 1.0 - 1e-15)):
        for order in ORDERS:
            args = (ZERO_ENTRY_S, ZERO_ENTRY_T, alpha, lam, div, order, params)
            what = f"{div} {params} α={alpha} λ={lam} {order}"
            try:
                want = precise.to_float(precise.amid_grad(*args))
            except ValueError:
                continue
            if np.isnan(want).any():  # +inf loss: the reference refuses it
                with pytest.raises(ValueError, match="inf"):
                    amid_grad(*args)
                continue
            assert_within(amid_grad(*args), want, tol, what=what)
            x = torch.tensor([ZERO_ENTRY_S], dtype=torch.float64, requires_grad=True)
            teacher = torch.tensor([ZERO_ENTRY_T], dtype=torch.float64)
            gpu.amid_loss(x, teacher, *args[2:]).backward()
            assert_grad_rows(x.grad.numpy()[0], want, what + " gpu f64", rtol=1e-9)
