"""Hypothesis property tests of the α-mean and α-mixture (mathematics page, "Facts").

Domains: logits are drawn as finite floats in [-30, 30] (so probabilities span ~1e-26)
with optional -inf entries (masked tokens); α mixes a wide real range with the special
values and points within 1e-12..1e-6 of ±1; λ includes its endpoints and 1e-15 from them.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, example, given, target
from hypothesis import strategies as st
from scipy.special import log_softmax

import amid_ref
from amid_ref import (
    alpha_mixture_normalizer,
    amid_loss,
    log_alpha_mean,
    log_alpha_mixture,
)
from amid_ref._specs import SPECS

SPECIAL_ALPHAS = [
    -np.inf,
    -1e6,
    -5.0,
    -3.0,
    -1.0 - 1e-9,
    -1.0,
    -1.0 + 1e-9,
    0.0,
    1.0 - 1e-12,
    1.0 - 1e-7,
    1.0,
    1.0 + 1e-7,
    3.0,
    5.0,
    1e6,
    np.inf,
]
alphas = st.one_of(
    st.sampled_from(SPECIAL_ALPHAS), st.floats(-50, 50, allow_nan=False, allow_infinity=False)
)
finite_alphas = st.one_of(
    st.sampled_from([a for a in SPECIAL_ALPHAS if np.isfinite(a)]),
    st.floats(-50, 50, allow_nan=False, allow_infinity=False),
)
lams = st.one_of(
    st.sampled_from([0.0, 1e-15, 0.1, 0.5, 0.9, 1 - 1e-15, 1.0]),
    st.floats(0.0, 1.0, allow_nan=False),
)
inner_lams = st.floats(1e-6, 1 - 1e-6)


def _row(draw, v, masked):
    row = np.array(draw(st.lists(st.floats(-30, 30), min_size=v, max_size=v)))
    if masked and draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=v, max_size=v)))
        mask[draw(st.integers(0, v - 1))] = False
        row[mask] = -np.inf
    return row


@st.composite
def logit_rows(draw, v_min=2, v_max=12, masked=True):
    """A row of logits in [-30, 30], some entries -inf (never all)."""
    return _row(draw, draw(st.integers(v_min, v_max)), masked)


@st.composite
def logit_pairs(draw, v_min=2, v_max=12, masked=True):
    """(student, teacher) logit rows of the same vocabulary size."""
    v = draw(st.integers(v_min, v_max))
    return _row(draw, v, masked), _row(draw, v, masked)


def _logp(row):
    with np.errstate(divide="ignore"):
        return log_softmax(row)


@given(logit_pairs(), alphas, lams)
def test_mixture_is_normalized(st_pair, alpha, lam):
    s, t = st_pair
    lp, lq = _logp(t), _logp(s)
    try:
        lr = log_alpha_mixture(lp, lq, alpha, lam)
    except ValueError:
        # Only an empty intersection of supports (α ≥ 1, 0 < λ < 1) may refuse.
        assert alpha >= 1 and 0 < lam < 1
        assert not np.any(np.isfinite(lp) & np.isfinite(lq))
        return
    assert not np.isnan(lr).any()
    total = float(np.exp(lr).sum())
    assert abs(total - 1.0) <= 1e-13 * len(lr)


@given(logit_pairs(), alphas)
def test_lambda_endpoints_give_teacher_and_student(st_pair, alpha):
    s, t = st_pair
    lp, lq = _logp(t), _logp(s)
    np.testing.assert_allclose(
        np.exp(log_alpha_mixture(lp, lq, alpha, 1.0)), np.exp(lp), rtol=1e-14, atol=0
    )
    np.testing.assert_allclose(
        np.exp(log_alpha_mixture(lp, lq, alpha, 0.0)), np.exp(lq), rtol=1e-14, atol=0
    )


@given(
    st.floats(-700, 700),
    st.floats(-700, 700),
    alphas,
    st.one_of(st.sampled_from([0.5, 0.9, 1 - 1e-15, 1.0]), st.floats(0.5, 1.0)),
)
@example(-2e4, 0.0, 1.0 - 1e-12, 0.5)
@example(0.0, -2.0, -9.0, 1 - 1e-15)
def test_symmetry_swaps_weights(la, lb, alpha, lam):
    # m_α(a, b; λ) = m_α(b, a; 1 − λ). For λ ≥ ½ both λ and 1 − λ are exact floats
    # (Sterbenz), so the two calls see exactly complementary weights.
    assert 1.0 - (1.0 - lam) == lam
    lhs = log_alpha_mean(la, lb, alpha, lam)
    rhs = log_alpha_mean(lb, la, alpha, 1.0 - lam)
    assert abs(lhs - rhs) <= 8e-16 * max(1.0, abs(la), abs(lb))


@given(st.floats(-700, 700), alphas, lams)
def test_idempotence(la, alpha, lam):
    assert abs(log_alpha_mean(la, la, alpha, lam) - la) <= 2e-16 * max(1.0, abs(la))


@given(st.floats(-300, 300), st.floats(-300, 300), st.floats(-300, 300), alphas, lams)
def test_homogeneity(la, lb, c, alpha, lam):
    # m(e^c a, e^c b) = e^c m(a, b): log m shifts by c.
    lhs = log_alpha_mean(la + c, lb + c, alpha, lam)
    rhs = log_alpha_mean(la, lb, alpha, lam) + c
    assert abs(lhs - rhs) <= 1e-14 * max(1.0, abs(la), abs(lb), abs(c))


@given(st.floats(-100, 100), st.floats(-100, 100), alphas, alphas, lams)
def test_monotone_non_increasing_in_alpha(la, lb, a1, a2, lam):
    lo, hi = min(a1, a2), max(a1, a2)
    m_lo = log_alpha_mean(la, lb, lo, lam)
    m_hi = log_alpha_mean(la, lb, hi, lam)
    target(float(m_hi - m_lo), label="violation of monotonicity")
    assert m_hi <= m_lo + 1e-14 * max(1.0, abs(la), abs(lb))


@given(logit_pairs(masked=False), alphas, inner_lams)
def test_normalizer_side_of_minus_one(st_pair, alpha, lam):
    s, t = st_pair
    p, q = np.exp(_logp(t)), np.exp(_logp(s))
    z = alpha_mixture_normalizer(p, q, alpha, lam)
    if alpha < -1:
        assert z >= 1 - 1e-14
    elif alpha > -1:
        assert z <= 1 + 1e-14
    else:
        assert abs(z - 1) <= 1e-14


@given(logit_pairs(), alphas, inner_lams)
def test_support_rules(st_pair, alpha, lam):
    s, t = st_pair
    lp, lq = _logp(t), _logp(s)
    union = np.isfinite(lp) | np.isfinite(lq)
    inter = np.isfinite(lp) & np.isfinite(lq)
    try:
        lr = log_alpha_mixture(lp, lq, alpha, lam)
    except ValueError:
        assert alpha >= 1 and not inter.any()
        return
    support = np.isfinite(lr)
    if alpha < 1:
        # Union support, except where a weight^(1/β) underflows for huge |β log λ|.
        assert not (support & ~union).any()
        if abs((1 - alpha) / 2) <= 1.0:
            assert (support == union).all()
    else:
        assert (support == inter).all()


#: One parameter set per divergence (the records' "grid" sets).
DIVS = [(spec.name, params) for spec in SPECS.values() for params in spec.cases_for("grid")]


@given(
    logit_rows(masked=False),
    finite_alphas,
    inner_lams,
    st.sampled_from(DIVS),
    st.sampled_from(list(amid_ref.ORDERS)),
)
def test_theorem_3_4_zero_loss_at_student_equal_teacher(t, alpha, lam, div, order):
    name, params = div
    loss = amid_loss(t, t, alpha, lam, name, order, params)
    assert abs(loss) <= 1e-13


@given(
    logit_pairs(masked=False),
    finite_alphas,
    inner_lams,
    st.sampled_from(DIVS),
    st.sampled_from(list(amid_ref.ORDERS)),
)
def test_theorem_3_4_positive_loss_when_student_differs(st_pair, alpha, lam, div, order):
    s, t = st_pair
    lp, lq = _logp(t), _logp(s)
    # Distinguishable distributions: far enough apart that the loss is not rounding noise.
    assume(0.5 * np.abs(np.exp(lp) - np.exp(lq)).sum() > 1e-3)
    name, params = div
    loss = amid_loss(s, t, alpha, lam, name, order, params)
    assert loss > 0


@given(
    logit_pairs(), st.sampled_from([-1.0, 1.0]), inner_lams, st.sampled_from([1e-12, 1e-10, 1e-8])
)
def test_continuous_in_alpha_through_plus_minus_one(st_pair, center, lam, eps):
    s, t = st_pair
    lp, lq = _logp(t), _logp(s)
    assume(np.any(np.isfinite(lp) & np.isfinite(lq)))
    try:
        at = np.exp(log_alpha_mixture(lp, lq, center, lam))
        below = np.exp(log_alpha_mixture(lp, lq, center - eps, lam))
        above = np.exp(log_alpha_mixture(lp, lq, center + eps, lam))
    except ValueError:
        return
    if center == 1.0:
        # Below α = 1 the support is the union; entries outside the intersection carry
        # m ∝ weight^(1/β), which vanishes only as β → 0: compare on the intersection.
        keep = np.isfinite(lp) & np.isfinite(lq)
        at, below, above = at[keep], below[keep] / below[keep].sum(), above[keep]
    spread = np.abs(lp[np.isfinite(lp)]).max() + np.abs(lq[np.isfinite(lq)]).max()
    bound = eps * (1 + spread) ** 2 * 10
    assert np.abs(below - at).max() <= bound
    assert np.abs(above - at).max() <= bound
