"""amid_ref (float64) against the mpmath oracle amid_ref.precise, on the grids of the
numerical contract: α near ±1 and at ±inf, λ at and 1e-15 from its endpoints, logits
spanning ±1e4, -inf entries, one-hot teachers. Tolerances come from amid_ref.tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, xlogy

from amid_ref import (
    ORDERS,
    alpha_mixture,
    amid_grad,
    amid_loss,
    divergence,
    log_alpha_mixture,
    precise,
)
from amid_ref._specs import SPECS
from amid_ref.strategies import CONTRACT_ALPHAS, CONTRACT_LAMBDAS, LOSS_ALPHAS
from amid_ref.tolerances import assert_within, tolerance

ALPHAS = list(CONTRACT_ALPHAS)
LAMS = list(CONTRACT_LAMBDAS)


def _logits_family(name: str, v: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(student, teacher) logits of one input family."""
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=3.0, size=v)
    t = rng.normal(scale=3.0, size=v)
    if name == "extreme":  # logits spanning ±1e4: log-probabilities down to -2e4
        s = rng.uniform(-1e4, 1e4, size=v)
        t = rng.uniform(-1e4, 1e4, size=v)
        s[0], t[1] = 1e4, 1e4
    elif name == "masked":  # padded / masked vocabulary entries, overlapping supports
        s[[1, 4]] = -np.inf
        t[[2, 4, 5]] = -np.inf
    elif name == "one_hot":  # one-hot teacher
        t = np.full(v, -np.inf)
        t[3] = 0.0
    elif name == "peaked":  # confident teacher, long-tailed student
        t = 40.0 * t
        s = rng.standard_cauchy(size=v)
    return s, t


FAMILIES = ["moderate", "extreme", "masked", "one_hot", "peaked"]


def _log_probs(family, v=12, seed=0):
    s, t = _logits_family(family, v, seed)
    with np.errstate(divide="ignore"):
        return log_softmax(t), log_softmax(s)


def _exact_or_error(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except ValueError as exc:
        return None, exc


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("alpha", ALPHAS, ids=repr)
def test_log_alpha_mixture_matches_oracle(family, alpha):
    lp, lq = _log_probs(family)
    tol = tolerance("reference", "log_mixture")
    for lam in LAMS:
        want, err = _exact_or_error(precise.log_alpha_mixture, lp, lq, alpha, lam)
        if err is not None:  # empty support intersection: the reference must refuse too
            with pytest.raises(ValueError, match="Z = 0"):
                log_alpha_mixture(lp, lq, alpha, lam)
            continue
        got = log_alpha_mixture(lp, lq, alpha, lam)
        want = precise.to_float(want)
        assert (np.isneginf(got) == np.isneginf(want)).all(), (lam, got, want)
        assert_within(got, want, tol, what=f"log r (family={family}, α={alpha}, λ={lam})")


@pytest.mark.parametrize("family", ["moderate", "masked", "peaked"])
@pytest.mark.parametrize("alpha", ALPHAS, ids=repr)
def test_alpha_mixture_probabilities_match_oracle(family, alpha):
    lp, lq = _log_probs(family)
    p, q = np.exp(lp), np.exp(lq)
    tol = tolerance("reference", "mixture")
    for lam in LAMS:
        want, err = _exact_or_error(precise.alpha_mixture, p, q, alpha, lam)
        if err is not None:
            with pytest.raises(ValueError):
                alpha_mixture(p, q, alpha, lam)
            continue
        got = alpha_mixture(p, q, alpha, lam)
        want_log = precise.to_float(
            precise.log_alpha_mixture(np.log(p), np.log(q), alpha, lam)
            if np.all(p > 0) and np.all(q > 0)
            else _log_of(want)
        )
        want = precise.to_float(want)
        assert ((got == 0) == (want == 0)).all()
        big = want > 1e-300
        rel = np.abs(got[big] - want[big]) / want[big]
        bound = tol.rtol * np.maximum(1.0, np.abs(want_log[big]))
        assert (rel <= bound).all(), (lam, rel.max())


def _log_of(values):
    import mpmath

    return np.array([mpmath.log(v) if v > 0 else mpmath.mpf("-inf") for v in values], dtype=object)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [-5.0, 1.0 - 1e-12], ids=repr)
def test_log_alpha_mixture_at_qwen_vocabulary(alpha):
    """V = 151936 (Qwen2) with extreme logits, -inf padding and λ 1e-15 from 1."""
    rng = np.random.default_rng(3)
    v = 151936
    s = rng.uniform(-1e4, 1e4, size=v)
    t = rng.normal(scale=5.0, size=v)
    t[-64:] = -np.inf  # padded vocabulary rows
    lp, lq = log_softmax(t), log_softmax(s)
    got = log_alpha_mixture(lp, lq, alpha, 1.0 - 1e-15)
    want = precise.to_float(precise.log_alpha_mixture(lp, lq, alpha, 1.0 - 1e-15))
    assert (np.isneginf(got) == np.isneginf(want)).all()
    assert_within(got, want, tolerance("reference", "log_mixture"), what="log r (V=151936)")


#: Every divergence of the contract at and near its limits (the records' "accuracy" sets).
RECORD_CASES = [
    (spec.name, params) for spec in SPECS.values() for params in spec.cases_for("accuracy")
]
#: The same plus the f-divergence with a float generator (its mpmath twin: _mp_generator_for).
DIV_CASES = [*RECORD_CASES, ("f", {"f": lambda u: xlogy(u, u) - u + 1.0})]


def _mp_generator_for(params):
    """The same f in mpmath for the oracle (f-divergence only)."""
    import mpmath

    if "f" not in params:
        return params
    return {"f": lambda u: u * mpmath.log(u) - u + 1 if u > 0 else mpmath.mpf(1)}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("name", "params"),
    DIV_CASES,
    # a function's parameter by its name: the same id in every process (pytest -n)
    ids=[f"{n}-{[getattr(v, '__name__', v) for v in list(p.values())[:2]]}" for n, p in DIV_CASES],
)
def test_divergence_matches_oracle(family, name, params):
    lp, lq = _log_probs(family, v=10, seed=1)
    tol = tolerance("reference", "divergence")
    for a, b in ((lp, lq), (lq, lp)):
        with np.errstate(invalid="ignore"):
            log_ratio = np.where(np.isfinite(b), a - b, -np.inf)
        if name == "f" and (log_ratio > 709).any():
            with pytest.raises(ValueError, match="exceeds the float64 range"):
                divergence(a, b, name, log_input=True, **params)
            continue
        got = divergence(a, b, name, log_input=True, **params)
        want = precise.to_float(
            precise.divergence(a, b, name, log_input=True, **_mp_generator_for(params))
        )
        assert_within(got, want, tol, what=f"{name}{params} on {family}")


#: One parameter set per divergence (the records' "grid" set).
LOSS_DIVS = [(spec.name, params) for spec in SPECS.values() for params in spec.cases_for("grid")]


@pytest.mark.parametrize("family", ["moderate", "extreme", "masked", "one_hot"])
@pytest.mark.parametrize(("name", "params"), LOSS_DIVS, ids=[n for n, _ in LOSS_DIVS])
def test_amid_loss_matches_oracle(family, name, params):
    s, t = _logits_family(family, 8, seed=2)
    tol = tolerance("reference", "loss")
    for order in ORDERS:
        for alpha in LOSS_ALPHAS:
            for lam in (0.0, 0.1, 0.5, 1.0):
                want, err = _exact_or_error(
                    precise.amid_loss, s, t, alpha, lam, name, order, params
                )
                if err is not None:
                    with pytest.raises(ValueError):
                        amid_loss(s, t, alpha, lam, name, order, params)
                    continue
                got = amid_loss(s, t, alpha, lam, name, order, params)
                assert_within(
                    got,
                    precise.to_float(want),
                    tol,
                    what=f"{name} {order} α={alpha} λ={lam} {family}",
                )


GRAD_ALPHAS = LOSS_ALPHAS


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("name", "params"), LOSS_DIVS, ids=[n for n, _ in LOSS_DIVS])
def test_amid_grad_matches_mpmath_finite_differences(order, name, params):
    s, t = _logits_family("moderate", 5, seed=4)
    t[2] = -np.inf  # a masked teacher token
    tol = tolerance("reference", "grad")
    for alpha in GRAD_ALPHAS:
        for lam in (0.1, 0.5):
            for detach in (False, True):
                loss = precise.to_float(precise.amid_loss(s, t, alpha, lam, name, order, params))
                if not np.isfinite(loss):
                    with pytest.raises(ValueError, match=r"\+inf"):
                        amid_grad(s, t, alpha, lam, name, order, params, detach_assistant=detach)
                    continue
                want = precise.to_float(
                    precise.amid_grad(
                        s, t, alpha, lam, name, order, params, detach_assistant=detach
                    )
                )
                got = amid_grad(s, t, alpha, lam, name, order, params, detach_assistant=detach)
                # Entries are compared on the scale of the row (a gradient entry of 1e-20 is
                # the difference of O(1) terms).
                scale = np.abs(want).max()
                assert np.abs(got - want).max() <= tol.atol + tol.rtol * scale, (
                    f"{name} {order} α={alpha} λ={lam} detach={detach}: {got} vs {want}"
                )


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_matches_oracle(temperature):
    s, t = _logits_family("moderate", 6, seed=5)
    got = amid_loss(s, t, -5.0, 0.1, temperature=temperature)
    want = precise.to_float(precise.amid_loss(s, t, -5.0, 0.1, temperature=temperature))
    assert_within(got, want, tolerance("reference", "loss"))
    g = amid_grad(s, t, -5.0, 0.1, temperature=temperature)
    gw = precise.to_float(precise.amid_grad(s, t, -5.0, 0.1, temperature=temperature))
    assert np.abs(g - gw).max() <= 1e-8 * np.abs(gw).max()


def test_batched_rows_match_row_by_row():
    rng = np.random.default_rng(9)
    s = rng.normal(size=(2, 3, 7))
    t = rng.normal(size=(2, 3, 7))
    loss = amid_loss(s, t, 0.5, 0.3, "renyi", "rq", {"order": 0.7})
    assert loss.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            want = precise.to_float(
                precise.amid_loss(s[i, j], t[i, j], 0.5, 0.3, "renyi", "rq", {"order": 0.7})
            )
            assert_within(loss[i, j], want, tolerance("reference", "loss"))


@pytest.mark.parametrize(
    ("name", "limit", "direction"),
    [
        ("ab", {"alpha": 0.0, "beta": 0.7}, {"alpha": 1.0}),
        ("ab", {"alpha": 0.7, "beta": 0.0}, {"beta": 1.0}),
        ("ab", {"alpha": 0.5, "beta": -0.5}, {"beta": 1.0}),
        ("ab", {"alpha": 0.0, "beta": 0.0}, {"alpha": 1.0, "beta": 0.5}),
        ("amari", {"alpha": -1.0}, {"alpha": 1.0}),
        ("amari", {"alpha": 1.0}, {"alpha": 1.0}),
        ("renyi", {"order": 1.0}, {"order": 1.0}),
    ],
)
def test_divergences_continuous_through_their_limits(name, limit, direction):
    """|D(limit ± ε) − D(limit)| = O(ε) for ε from 1e-2 down to 1e-15, from both sides:
    no threshold switch, no 1/a_ instead of 1/a_² (which would blow up as ε → 0)."""
    lp, lq = _log_probs("moderate", v=10, seed=1)
    at = divergence(lp, lq, name, log_input=True, **limit)
    for sign in (-1.0, 1.0):
        prev = None
        for eps in 10.0 ** -np.arange(2, 16):
            params = {k: v + sign * eps * direction.get(k, 0.0) for k, v in limit.items()}
            if name == "renyi" and params["order"] <= 0:
                continue
            d = divergence(lp, lq, name, log_input=True, **params)
            gap = abs(d - at)
            assert gap <= 50 * eps * max(1.0, abs(at)) + 1e-13, (params, d, at)
            if prev is not None and prev > 1e-12:
                assert gap <= prev, (params, gap, prev)  # converging, not oscillating
            prev = gap


def test_f_divergence_gradient_matches_mpmath_finite_differences():
    import mpmath

    s, t = _logits_family("moderate", 5, seed=4)
    params = {"f": lambda u: xlogy(u, u) - u + 1.0, "f_prime": np.log}
    mp_params = {"f": lambda u: u * mpmath.log(u) - u + 1 if u > 0 else mpmath.mpf(1)}
    for order in ORDERS:
        got = amid_grad(s, t, 0.5, 0.3, "f", order, params)
        want = precise.to_float(precise.amid_grad(s, t, 0.5, 0.3, "f", order, mp_params))
        assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max(), order


@pytest.mark.parametrize(
    ("name", "params"),
    RECORD_CASES,
    ids=[f"{n}-{list(p.values())[:2]}" for n, p in RECORD_CASES],
)
def test_divergence_with_astronomically_small_probabilities(name, params):
    """log-probabilities like -4.6e12 arise from r at α = 1 − 1e-12 outside the teacher's
    support; rounding of log x − log y (an ulp of 1e-3 there) must not leak into the terms."""
    from scipy.special import logsumexp

    la = np.array([-0.5, -1.0, -4.6e12, -2.0])
    lb = np.array([-4.6e12, -0.3, -1.5, -7e11])
    la, lb = la - logsumexp(la), lb - logsumexp(lb)
    for a, b in ((la, lb), (lb, la)):
        got = divergence(a, b, name, log_input=True, **params)
        want = precise.to_float(precise.divergence(a, b, name, log_input=True, **params))
        assert_within(got, want, tolerance("reference", "divergence"), what=f"{name}{params}")


@pytest.mark.parametrize("family", FAMILIES)
def test_alpha_mixture_weight_matches_oracle(family):
    """Proposition 3.5's w against the oracle wherever m > 0 (where m = 0 the weight
    multiplies zero: ours is 0 there by convention, the oracle's a one-sided limit)."""
    from amid_ref import alpha_mixture_weight, log_alpha_mean

    lp, lq = _log_probs(family)
    for alpha in ALPHAS:
        for lam in LAMS:
            got = alpha_mixture_weight(lp, lq, alpha, lam)
            want = precise.to_float(precise.alpha_mixture_weight(lp, lq, alpha, lam))
            keep = np.isfinite(log_alpha_mean(lp, lq, alpha, lam)) & (lp != lq)
            assert np.all(np.abs(got[keep] - want[keep]) <= 1e-14), (alpha, lam)
            assert np.all((got >= 0) & (got <= 1))
