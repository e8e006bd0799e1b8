"""Self-tests of the mpmath oracle :mod:`amid_ref.precise`.

The oracle is what every float64 test of :mod:`amid_ref` is held to, so it is checked here
on its own, never against the float64 code: against closed forms derived by hand (written
with sqrt, reciprocals, exact fractions and known logarithms rather than the power-mean
formula), against itself at a higher precision, for continuity through every limit member of
a family (closed form at the limit vs the literal formula 1e-20 away, at mpf parameters), and
against the analytic gradient of Proposition 3.5 (the oracle's gradient is numerical).
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from mpmath import mp, mpf

from amid_ref import precise
from amid_ref._specs import SPECS
from amid_ref.strategies import CONTRACT_ALPHAS, CONTRACT_LAMBDAS

ALPHAS = list(CONTRACT_ALPHAS)
LAMS = list(CONTRACT_LAMBDAS)
INNER_LAMS = [lam for lam in LAMS if 0.0 < lam < 1.0]
#: One parameter set per divergence of the contract (the records' "grid" set), plus the
#: f-divergence with an mpmath generator.
DIVERGENCE_CASES = [
    *((spec.name, params) for spec in SPECS.values() for params in spec.cases_for("grid")),
    ("f", {"f": lambda u: u * mpmath.log(u) if u else mpf(0)}),
]


def assert_close(got, want, rel, *, what="value", abs_floor=0):
    """|got − want| ≤ rel·|want| + abs_floor, with exact agreement of infinities."""
    got, want, abs_floor = mpf(got), mpf(want), mpf(abs_floor)
    if mpmath.isinf(want) or mpmath.isinf(got):
        assert got == want, f"{what}: got {got}, want {want}"
        return
    err = abs(got - want)
    assert err <= rel * abs(want) + abs_floor, (
        f"{what}: got {mpmath.nstr(got, 30)}, want {mpmath.nstr(want, 30)}, "
        f"error {mpmath.nstr(err, 5)} > {mpmath.nstr(rel * abs(want) + abs_floor, 5)}"
    )


def mpf_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [mpf(v) for v in values]
    return out


def softmax_mp(logits, temperature=1):
    """Softmax of float logits in mpmath (written independently of the oracle's)."""
    z = [mpf(x) / temperature if x != -np.inf else None for x in logits]
    top = max(v for v in z if v is not None)
    e = [mpmath.exp(v - top) if v is not None else mpf(0) for v in z]
    s = mpmath.fsum(e)
    return [v / s for v in e]


# --------------------------------------------------------------------------------------
# the α-mean
# --------------------------------------------------------------------------------------

CLOSED_FORMS = {
    -1.0: lambda a, b, l: l * a + (1 - l) * b,
    0.0: lambda a, b, l: (l * mpmath.sqrt(a) + (1 - l) * mpmath.sqrt(b)) ** 2,
    3.0: lambda a, b, l: 1 / (l / a + (1 - l) / b),
    -3.0: lambda a, b, l: mpmath.sqrt(l * a * a + (1 - l) * b * b),
    1.0: lambda a, b, l: mpmath.exp(l * mpmath.log(a) + (1 - l) * mpmath.log(b)),
    -np.inf: lambda a, b, l: max(a, b),
    np.inf: lambda a, b, l: min(a, b),
}
MEAN_A = [0.3, 0.7, 5.0, 2e-5, 1e-300, 0.3]
MEAN_B = [0.6, 0.7, 1e-3, 3.0, 0.25, 0.3 + 2**-54]


@pytest.mark.parametrize("alpha", list(CLOSED_FORMS))
@pytest.mark.parametrize("lam", INNER_LAMS)
def test_alpha_mean_special_cases_match_closed_forms(alpha, lam):
    """α = −1 arithmetic, 0, 3 harmonic, −3 quadratic, 1 geometric, ∓inf max/min."""
    got = precise.alpha_mean(MEAN_A, MEAN_B, alpha, lam)
    with mp.workdps(80):
        for g, a, b in zip(got, MEAN_A, MEAN_B, strict=True):
            want = CLOSED_FORMS[alpha](mpf(a), mpf(b), mpf(lam))
            assert_close(g, want, mpf("1e-45"), what=f"m_{alpha}({a}, {b}; {lam})")


def test_alpha_mean_closed_forms_at_extreme_log_arguments():
    """log a = −2e4 (a = e^−20000, far below float64) through the log-domain entry point."""
    la = [-2e4, -2e4, -1.0, -2e4]
    lb = [-1.0, -2e4 + 1e-9, -1.5e4, -3.0]
    for alpha in (-1.0, 0.0, 3.0, -3.0, 1.0):
        for lam in (1e-15, 0.5, 1 - 1e-15):
            got = precise.log_alpha_mean(la, lb, alpha, lam)
            with mp.workdps(80):
                for g, x, y in zip(got, la, lb, strict=True):
                    want = mpmath.log(CLOSED_FORMS[alpha](mpmath.exp(x), mpmath.exp(y), mpf(lam)))
                    assert_close(g, want, mpf("1e-45"), what=f"log m_{alpha} at ({x}, {y})")


@pytest.mark.parametrize("alpha", ALPHAS)
def test_lambda_endpoints_return_an_argument_exactly(alpha):
    a = [0.3, 0.0, 0.2, 0.0]
    b = [0.6, 0.5, 0.0, 0.0]
    assert list(precise.alpha_mean(a, b, alpha, 1.0)) == [mpf(x) for x in a]
    assert list(precise.alpha_mean(a, b, alpha, 0.0)) == [mpf(x) for x in b]


@pytest.mark.parametrize("alpha", [a for a in ALPHAS if a not in (-np.inf, np.inf)])
@pytest.mark.parametrize("lam", INNER_LAMS)
def test_support_rules_for_zero_arguments(alpha, lam):
    """α < 1: m(0, b) = (1−λ)^(1/β) b, m(a, 0) = λ^(1/β) a (union); α ≥ 1: zero."""
    got = precise.alpha_mean([0.0, 0.4, 0.0], [0.3, 0.0, 0.0], alpha, lam)
    assert got[2] == 0
    if alpha >= 1:
        assert got[0] == 0
        assert got[1] == 0
        return
    with mp.workdps(80):
        beta = (1 - mpf(alpha)) / 2
        assert_close(got[0], (1 - mpf(lam)) ** (1 / beta) * mpf(0.3), mpf("1e-45"))
        assert_close(got[1], mpf(lam) ** (1 / beta) * mpf(0.4), mpf("1e-45"))


def test_infinite_alpha_with_zero_arguments():
    a, b = [0.0, 0.4, 0.0], [0.3, 0.0, 0.0]
    assert list(precise.alpha_mean(a, b, -np.inf, 0.5)) == [mpf(0.3), mpf(0.4), 0]
    assert list(precise.alpha_mean(a, b, np.inf, 0.5)) == [0, 0, 0]


def test_alpha_mean_is_monotone_in_alpha():
    """Power-mean inequality: m_α is non-increasing in α (mathematics page, Facts)."""
    for a, b, lam in [(0.3, 0.6, 0.1), (1e-300, 0.25, 0.5), (5.0, 1e-3, 0.9)]:
        values = [precise.alpha_mean(a, b, alpha, lam) for alpha in sorted(ALPHAS)]
        for lo, hi in itertools.pairwise(values):
            assert hi <= lo


def test_alpha_mean_is_idempotent_and_homogeneous():
    for alpha in ALPHAS:
        got = precise.alpha_mean(0.37, 0.37, alpha, 0.3)
        assert_close(got, mpf(0.37), mpf("1e-48"), what=f"idempotence at α={alpha}")
        m = precise.alpha_mean(0.2, 0.6, alpha, 0.3)
        m8 = precise.alpha_mean(1.6, 4.8, alpha, 0.3)  # scaling by 8 is exact in float64
        assert_close(m8, 8 * m, mpf("1e-48"), what=f"homogeneity at α={alpha}")


def test_alpha_mean_broadcasts_and_returns_scalars_for_scalars():
    out = precise.alpha_mean([[0.1], [0.2]], [0.3, 0.4, 0.5], -1.0, 0.5)
    assert out.shape == (2, 3)
    assert out.dtype == object
    assert isinstance(precise.alpha_mean(0.1, 0.3, 0.0, 0.5), mpf)


# --------------------------------------------------------------------------------------
# precision: dps=50 against dps=80, continuity through limit members
# --------------------------------------------------------------------------------------

HARD_LOG_P = np.array([-2e4, -1e-300, -np.inf, -700.0, -1.0, -2e4 + 1.0])
HARD_LOG_Q = np.array([-1.0, -2e4, -5.0, -np.inf, -1.0 - 2**-40, -2e4])


def _rel_diff(x, y):
    if x == y:
        return mpf(0)
    return abs(x - y) / max(mpf(1), abs(y))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_log_alpha_mixture_dps50_agrees_with_dps80(alpha):
    for lam in LAMS:
        try:
            lo = precise.log_alpha_mixture(HARD_LOG_P, HARD_LOG_Q, alpha, lam)
        except ValueError:
            pytest.fail(f"unexpected Z = 0 at alpha={alpha}, lam={lam}")
        hi = precise.log_alpha_mixture(HARD_LOG_P, HARD_LOG_Q, alpha, lam, dps=80)
        worst = max(_rel_diff(x, y) for x, y in zip(lo, hi, strict=True))
        assert worst < mpf("1e-45"), (alpha, lam, worst)
        w_lo = precise.alpha_mixture_weight(HARD_LOG_P, HARD_LOG_Q, alpha, lam)
        w_hi = precise.alpha_mixture_weight(HARD_LOG_P, HARD_LOG_Q, alpha, lam, dps=80)
        assert max(_rel_diff(x, y) for x, y in zip(w_lo, w_hi, strict=True)) < mpf("1e-45")


@pytest.mark.parametrize(("name", "params"), DIVERGENCE_CASES)
def test_divergences_and_losses_dps50_agree_with_dps80(name, params):
    logits_s = np.array([1e4, -1e4, 3.0, -np.inf, 0.5, 1e4 - 1e-9])
    logits_t = np.array([1e4 - 2.0, 0.0, 2.0, -5.0, -1e4, 1e4])
    for alpha, lam in [(1 - 1e-12, 1e-15), (-1e6, 0.5), (1e6, 1 - 1e-15), (-5.0, 0.1)]:
        lo = precise.amid_loss(logits_s, logits_t, alpha, lam, name, "pr", params)
        hi = precise.amid_loss(logits_s, logits_t, alpha, lam, name, "pr", params, dps=80)
        assert _rel_diff(lo, hi) < mpf("1e-45"), (name, alpha, lam, lo, hi)
    a = np.array([1e-300, 0.5, 0.25, 0.25 - 1e-300])
    b = np.array([0.25, 0.25 + 2**-53, 0.5 - 2**-53, 1e-300])
    lo = precise.divergence(a, b, name, **params)
    hi = precise.divergence(a, b, name, dps=80, **params)
    assert _rel_diff(lo, hi) < mpf("1e-45"), (name, lo, hi)


def test_alpha_continuity_through_limit_members():
    """Closed forms at α = 1, ±inf against the literal power mean next to them."""
    la = [-2e4, -1.0, -3.0, -0.5]
    lb = [-1.0, -2e4 + 3.0, -3.0 - 1e-9, -0.7]
    with mp.workdps(60):
        eps = mpf("1e-30")
        big = mpf("1e60")
        cases = [
            (mpf(1), [mpf(1) - eps, mpf(1) + eps], mpf("1e-18")),
            (mpf(-1), [mpf(-1) - eps, mpf(-1) + eps], mpf("1e-18")),
            (mpf("-inf"), [-big], mpf("1e-45")),
            (mpf("inf"), [big], mpf("1e-45")),
        ]
    for at, nearby, tol in cases:
        for lam in (1e-15, 0.3, 1 - 1e-15):
            exact = precise.log_alpha_mean(la, lb, at, lam)
            for alpha in nearby:
                near = precise.log_alpha_mean(la, lb, alpha, lam)
                for x, y in zip(near, exact, strict=True):
                    assert _rel_diff(x, y) < tol, (at, alpha, lam, x, y)


# --------------------------------------------------------------------------------------
# the mixture
# --------------------------------------------------------------------------------------


def test_mixture_normalizer_and_sides_of_minus_one():
    """r sums to 1; Z ≥ 1 for α < −1, Z = 1 at α = −1, Z ≤ 1 for α > −1."""
    p = [0.5, 0.25, 0.125, 0.125, 0.0]
    q = [0.0625, 0.0625, 0.375, 0.25, 0.25]
    for alpha in ALPHAS:
        for lam in INNER_LAMS:
            r = precise.alpha_mixture(p, q, alpha, lam)
            with mp.workdps(60):
                assert abs(mpmath.fsum(r) - 1) < mpf("1e-48")
            z = precise.alpha_mixture_normalizer(p, q, alpha, lam)
            if alpha < -1:
                assert z >= 1
            elif alpha == -1:
                assert_close(z, mpf(1), mpf("1e-48"))
            else:
                assert z <= 1


def test_mixture_axis_and_log_domain_agree():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), size=(2, 3)).transpose(0, 2, 1)  # vocab on axis 1
    q = rng.dirichlet(np.ones(5), size=(2, 3)).transpose(0, 2, 1)
    r = precise.alpha_mixture(p, q, -5.0, 0.3, axis=1)
    log_r = precise.log_alpha_mixture(np.log(p), np.log(q), -5.0, 0.3, axis=1)
    assert r.shape == log_r.shape == p.shape
    with mp.workdps(60):
        for i, j in itertools.product(range(2), range(3)):
            col = r[i, :, j]
            assert abs(mpmath.fsum(col) - 1) < mpf("1e-48")
            # the log-domain input is log(float p), not p, so agreement is to float64 level
            for x, lx in zip(col, log_r[i, :, j], strict=True):
                assert abs(mpmath.log(x) - lx) < mpf("1e-14")
    z = precise.alpha_mixture_normalizer(p, q, -5.0, 0.3, axis=1)
    assert z.shape == (2, 3)


def test_empty_support_raises():
    p, q = [1.0, 0.0], [0.0, 1.0]
    for alpha in (1.0, 3.0, np.inf):
        with pytest.raises(ValueError, match="Z = 0"):
            precise.alpha_mixture(p, q, alpha, 0.5)
        with pytest.raises(ValueError, match="Z = 0"):
            precise.log_alpha_mixture([0.0, -np.inf], [-np.inf, 0.0], alpha, 0.5)
        with pytest.raises(ValueError, match="Z = 0"):
            precise.amid_loss([-np.inf, 0.0], [0.0, -np.inf], alpha, 0.5)
        assert precise.alpha_mixture_normalizer(p, q, alpha, 0.5) == 0
    assert precise.alpha_mixture_normalizer(p, q, 0.999, 0.5) > 0


def test_mixture_weight_is_the_derivative_of_log_mean():
    """w = ∂ log m/∂ log q by a central difference at 80 digits (Proposition 3.5)."""
    lp, lq = [-0.3, -2.0, -7.0, -1.0], [-1.2, -0.1, -7.0 + 1e-6, -1.0]
    with mp.workdps(80):
        h = mpf("1e-30")
        up = mpf_array(lq) + h
        down = mpf_array(lq) - h
    for alpha in [a for a in ALPHAS if np.isfinite(a)]:
        for lam in INNER_LAMS:
            w = precise.alpha_mixture_weight(lp, lq, alpha, lam)
            m_up = precise.log_alpha_mean(lp, up, alpha, lam, dps=80)
            m_down = precise.log_alpha_mean(lp, down, alpha, lam, dps=80)
            with mp.workdps(80):
                for i in range(len(lp)):
                    fd = (m_up[i] - m_down[i]) / (2 * h)
                    assert abs(w[i] - fd) < mpf("1e-25"), (alpha, lam, i, w[i], fd)


def test_mixture_weight_edge_values():
    """Derivative values (or their limits) where an argument is zero; ties at α = ∓inf."""
    lp = [-np.inf, -1.0, -np.inf, -1.0, -2.0]
    lq = [-1.0, -np.inf, -np.inf, -2.0, -1.0]
    lam = 0.25
    cases = {
        -5.0: [1, 0, 0.75, *_w(-5, lam)],
        3.0: [0, 1, 0.75, *_w(3, lam)],
        1.0: [0.75] * 5,
        -np.inf: [1, 0, 0.5, 0, 1],
        np.inf: [0, 1, 0.5, 1, 0],
    }
    for alpha, want in cases.items():
        got = precise.alpha_mixture_weight(lp, lq, alpha, lam)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, mpf("1e-48"), what=f"w at alpha={alpha}")
    assert list(precise.alpha_mixture_weight(lp, lq, 3.0, 0.0)) == [1] * 5
    assert list(precise.alpha_mixture_weight(lp, lq, 3.0, 1.0)) == [0] * 5


def _w(alpha, lam):
    """Closed-form weights (1−λ)q^β/(λp^β + (1−λ)q^β) at (p, q) = (e^−1, e^−2), (e^−2, e^−1)."""
    with mp.workdps(80):
        beta = (1 - mpf(alpha)) / 2
        lam = mpf(lam)
        out = []
        for lp, lq in [(-1, -2), (-2, -1)]:
            qb, pb = mpmath.exp(lq) ** beta, mpmath.exp(lp) ** beta
            out.append((1 - lam) * qb / (lam * pb + (1 - lam) * qb))
    return out


# --------------------------------------------------------------------------------------
# divergences on hand examples
# --------------------------------------------------------------------------------------

A = [0.5, 0.25, 0.25]
B = [0.25, 0.25, 0.5]


def _exact(fraction: Fraction) -> mpf:
    return mpf(fraction.numerator) / fraction.denominator


def test_kl_js_tv_hellinger_chi2_on_a_hand_example():
    with mp.workdps(80):
        log2, log3 = mpmath.log(2), mpmath.log(3)
        fa = [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)]
        fb = [Fraction(1, 4), Fraction(1, 4), Fraction(1, 2)]
        # KL = 1/2 log 2 + 0 + 1/4 log(1/2) = log(2)/4
        kl = _exact(Fraction(1, 4)) * log2
        # JS_{1/2}: m = (3/8, 1/4, 3/8) -> 1/2 log(4/3) + 1/4 log(2/3) = 5/4 log 2 − 3/4 log 3
        js = _exact(Fraction(5, 4)) * log2 - _exact(Fraction(3, 4)) * log3
        tv = _exact(sum(abs(x - y) for x, y in zip(fa, fb, strict=True)) / 2)
        # ½Σ(√a−√b)² = 1 − Σ√(ab) = 3/4 − 1/√2
        hellinger = mpf(3) / 4 - 1 / mpmath.sqrt(2)
        chi2 = _exact(sum((x - y) ** 2 / y for x, y in zip(fa, fb, strict=True)))
        assert chi2 == mpf(3) / 8
        renyi2 = mpmath.log(mpf(11) / 8)  # Σ a²/b = 1 + 1/4 + 1/8
        renyi_half = -2 * mpmath.log(mpf(1) / 4 + 1 / mpmath.sqrt(2))  # Σ√(ab)
    tol = mpf("1e-48")
    assert_close(precise.divergence(A, B, "kl"), kl, tol, what="kl")
    assert_close(precise.divergence(A, B, "js"), js, tol, what="js")
    assert_close(precise.divergence(A, B, "js", beta=0.5), js, tol, what="js")
    assert_close(precise.divergence(A, B, "tv"), tv, tol, what="tv")
    assert_close(precise.divergence(A, B, "hellinger"), hellinger, tol, what="hellinger")
    assert_close(precise.divergence(A, B, "chi2"), chi2, tol, what="chi2")
    assert_close(precise.divergence(A, B, "renyi", order=2.0), renyi2, tol, what="renyi 2")
    assert_close(precise.divergence(A, B, "renyi", order=0.5), renyi_half, tol, what="renyi ½")
    assert_close(precise.divergence(A, B, "renyi", order=1.0), kl, tol, what="renyi 1")
    # Rényi normalizes its inputs first; KL does not.
    scaled = precise.divergence([1.0, 0.5, 0.5], [0.75, 0.75, 1.5], "renyi", order=2.0)
    assert_close(scaled, renyi2, tol, what="renyi of unnormalized inputs")
    assert precise.divergence(A, A, "kl") == 0
    assert precise.divergence(A, B, "js", beta=0.0) == 0
    assert precise.divergence(A, B, "js", beta=1.0) == 0


def test_log_input_matches_probability_input():
    """log_input=True at log a equals the probability input at exp(log a) (in mpmath)."""
    la = np.array([-0.7, -1.3, -2.0, -np.inf])
    lb = np.array([-1.5, -1.0, -0.9, -2.5])
    with mp.workdps(120):
        a = mpf_array([mpmath.exp(mpf(v)) for v in la])
        b = mpf_array([mpmath.exp(mpf(v)) for v in lb])
    for name, params in DIVERGENCE_CASES:
        got = precise.divergence(la, lb, name, log_input=True, **params)
        want = precise.divergence(a, b, name, **params)
        assert_close(got, want, mpf("1e-48"), what=name)


def test_amari_special_members_are_other_divergences():
    """γ = 0 is 4× squared Hellinger, γ = 3 is ½ χ²(b‖a), γ = ∓1 the generalized KLs."""
    tol = mpf("1e-48")
    h2 = precise.divergence(A, B, "hellinger")
    assert_close(precise.divergence(A, B, "amari", alpha=0.0), 4 * h2, tol)
    chi2_reverse = precise.divergence(B, A, "chi2")
    assert_close(precise.divergence(A, B, "amari", alpha=3.0), chi2_reverse / 2, tol)
    # unnormalized measures: generalized KL Σ[a log(a/b) − a + b]
    x, y = [0.5, 1.5, 0.25], [1.0, 0.5, 0.25]
    with mp.workdps(80):
        gkl_xy = mpf(0.5) * mpmath.log(mpf(0.5)) + mpf(1.5) * mpmath.log(3) - 2.25 + 1.75
        gkl_yx = mpmath.log(2) + mpf(0.5) * mpmath.log(mpf(1) / 3) - 1.75 + 2.25
    assert_close(precise.divergence(x, y, "amari", alpha=-1.0), gkl_xy, tol, what="γ=−1")
    assert_close(precise.divergence(x, y, "amari", alpha=1.0), gkl_yx, tol, what="γ=+1")
    assert_close(precise.divergence(x, y, "ab", alpha=1.0, beta=0.0), gkl_xy, tol, what="(1,0)")
    assert_close(precise.divergence(x, y, "ab", alpha=0.0, beta=1.0), gkl_yx, tol, what="(0,1)")
    # AB(1, 1) = ½ Σ (x − y)²
    half_sq = mpf(sum((u - v) ** 2 for u, v in zip(x, y, strict=True))) / 2
    assert_close(precise.divergence(x, y, "ab", alpha=1.0, beta=1.0), half_sq, tol)


def test_f_divergence_generators():
    tol = mpf("1e-48")
    kl_gen = DIVERGENCE_CASES[-1][1]["f"]
    assert_close(precise.divergence(A, B, "f", f=kl_gen), precise.divergence(A, B, "kl"), tol)
    chi2 = precise.divergence(A, B, "f", f=lambda u: (u - 1) ** 2, f_prime=lambda u: 2 * (u - 1))
    assert_close(chi2, mpf(3) / 8, tol)
    # b = 0 < a contributes a·f_inf_slope; a = b = 0 contributes 0
    got = precise.divergence(
        [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], "f", f=lambda u: abs(u - 1), f_inf_slope=1.0
    )
    assert_close(got, mpf(1), tol)
    assert precise.divergence([0.5, 0.5], [1.0, 0.0], "f", f=lambda u: (u - 1) ** 2) == mpf("inf")
    # a float64 generator would silently cost the oracle its precision: refused
    with pytest.raises(TypeError, match="mpmath"):
        precise.divergence(A, B, "f", f=lambda u: u * np.log(u))
    with pytest.raises(TypeError, match="mpf result"):
        precise.divergence(A, B, "f", f=lambda u: float(u - 1) ** 2)


def test_zero_conventions():
    inf = mpf("inf")
    # a = 0 terms contribute 0 (0 log 0 = 0); a > 0 = b gives +inf
    with mp.workdps(60):
        want = mpf(0.5) * mpmath.log(2) + mpf(0.5) * mpmath.log(2)
    assert_close(precise.divergence([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], "kl"), want, mpf("1e-48"))
    assert precise.divergence([0.5, 0.5], [1.0, 0.0], "kl") == inf
    assert precise.divergence([0.5, 0.5], [1.0, 0.0], "chi2") == inf
    assert precise.divergence([1.0, 0.0], [1.0, 0.0], "chi2") == 0
    with mp.workdps(60):
        log2 = mpmath.log(2)
    assert_close(precise.divergence([1.0, 0.0], [0.0, 1.0], "js"), log2, mpf("1e-48"))
    assert precise.divergence([1.0, 0.0], [0.0, 1.0], "tv") == 1
    assert precise.divergence([1.0, 0.0], [0.0, 1.0], "hellinger") == 1
    # Rényi: ρ < 1 with disjoint supports -> empty sum -> +inf; ρ > 1 with b = 0 < a -> +inf
    assert precise.divergence([1.0, 0.0], [0.0, 1.0], "renyi", order=0.5) == inf
    assert precise.divergence([0.5, 0.5], [1.0, 0.0], "renyi", order=2.0) == inf
    # ρ = 0: −log Σ_{a > 0} b
    assert_close(
        precise.divergence([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], "renyi", order=0.0),
        log2,
        mpf("1e-48"),
    )
    # Amari with γ > 1 and a = 0 < b: a^((1−γ)/2) = +inf
    assert precise.divergence([0.0, 1.0], [0.5, 0.5], "amari", alpha=3.0) == inf
    # AB: x = 0 < y gives y^λ/(a_ λ) for a_ > 0, λ > 0, else +inf
    got = precise.divergence([0.0], [0.25], "ab", alpha=0.2, beta=0.7)
    with mp.workdps(60):
        lam = mpf(0.2) + mpf(0.7)  # a_ + b_ of the float parameters, exactly
        want = mpf(0.25) ** lam / (mpf(0.2) * lam)
    assert_close(got, want, mpf("1e-48"))
    assert precise.divergence([0.0], [0.25], "ab", alpha=-0.2, beta=0.7) == inf
    assert precise.divergence([0.25], [0.0], "ab", alpha=0.2, beta=-0.7) == inf
    assert precise.divergence([0.0], [0.0], "ab", alpha=0.2, beta=0.7) == 0


def test_ab_terms_of_tiny_arguments_with_a_negative_degree():
    """An AB term with a_ + b_ < 0 at tiny arguments is the cancellation of powers far beyond
    the term (y^(a_+b_) = 1e2480 at y = e^−3000): the oracle forms it as y^(a_+b_) times the
    term at (x/y, 1) (homogeneity), against the plain formula at as many more digits as the
    powers' size, both in mpmath."""
    import mpmath

    from amid_ref.precise._divergences import _ab_row_fn

    for ratio in ("1.001", "0.5", "40"):
        with mpmath.workdps(50):
            a_, b_ = mpmath.mpf(-1.5), mpmath.mpf(-0.4)
            y = mpmath.exp(-3000)
            x = y * mpmath.mpf(ratio)
            ab, _ = _ab_row_fn(a_, b_)
            got = ab([x], [y])
        with mpmath.workdps(50 + 3000):
            s_ = a_ + b_
            t = x**a_ * y**b_ - a_ / s_ * x**s_ - b_ / s_ * y**s_
            want = -t / (a_ * b_)
        assert abs(got - want) <= mpmath.mpf(10) ** -40 * abs(want), (ratio, got, want)


def test_ab_zero_rules_are_the_limits_of_the_formula():
    """x = 0 (resp. y = 0) against x = 1e-300 with the general formula."""
    tol = mpf("1e-50")
    assert_close(
        precise.divergence([0.0, 0.5], [0.25, 0.5], "ab", alpha=0.2, beta=0.7),
        precise.divergence([1e-300, 0.5], [0.25, 0.5], "ab", alpha=0.2, beta=0.7),
        tol,
    )
    assert_close(
        precise.divergence([0.25, 0.5], [0.0, 0.5], "ab", alpha=0.2, beta=0.7),
        precise.divergence([0.25, 0.5], [1e-300, 0.5], "ab", alpha=0.2, beta=0.7),
        mpf("1e-150"),
    )


X = [0.5, 0.25, 0.125, 0.125, 1e-30]
Y = [0.25, 0.125, 0.5, 0.0625, 0.0625]


def _continuity_cases():
    """(name, params at the limit, params 1e-20 away) for every limit member."""
    with mp.workdps(60):
        e = mpf("1e-20")
        return [
            ("amari", {"alpha": -1.0}, {"alpha": mpf(-1) + e}),
            ("amari", {"alpha": 1.0}, {"alpha": mpf(1) - e}),
            ("amari", {"alpha": -1.0}, {"alpha": mpf(-1) - e}),
            ("renyi", {"order": 1.0}, {"order": mpf(1) + e}),
            ("renyi", {"order": 1.0}, {"order": mpf(1) - e}),
            ("ab", {"alpha": 0.0, "beta": 0.7}, {"alpha": e, "beta": 0.7}),
            ("ab", {"alpha": 0.0, "beta": -0.7}, {"alpha": -e, "beta": -0.7}),
            ("ab", {"alpha": 0.5, "beta": 0.0}, {"alpha": 0.5, "beta": e}),
            ("ab", {"alpha": 0.5, "beta": -0.5}, {"alpha": 0.5, "beta": mpf(-0.5) + e}),
            ("ab", {"alpha": -2.0, "beta": 2.0}, {"alpha": -2.0, "beta": mpf(2) - e}),
            ("ab", {"alpha": 0.0, "beta": 0.0}, {"alpha": e, "beta": e}),
            ("ab", {"alpha": 0.0, "beta": 0.0}, {"alpha": e, "beta": -2 * e}),
            ("ab", {"alpha": 1.0, "beta": 0.0}, {"alpha": 1.0, "beta": e}),
            ("ab", {"alpha": 0.0, "beta": 1.0}, {"alpha": e, "beta": 1.0}),
        ]


@pytest.mark.parametrize(("name", "at", "near"), _continuity_cases())
def test_divergence_continuity_at_limit_parameters(name, at, near):
    exact = precise.divergence(X, Y, name, **at)
    nearby = precise.divergence(X, Y, name, **near)
    assert exact > 0
    assert_close(nearby, exact, mpf("1e-15"), what=f"{name} {at} vs {near}")


# --------------------------------------------------------------------------------------
# the loss and its gradient
# --------------------------------------------------------------------------------------

TEACHER = np.array([2.0, -1.0, 0.5, -np.inf, 3.0, -0.25, 1.0, 0.0])
STUDENT = np.array([1.0, 0.0, -0.5, -np.inf, 2.5, 0.75, -2.0, 0.5])


@pytest.mark.parametrize(("name", "params"), DIVERGENCE_CASES)
def test_theorem_3_4_loss_vanishes_iff_student_equals_teacher(name, params):
    for alpha in (-np.inf, -5.0, -1.0, 0.0, 1.0, 3.0, np.inf):
        for lam in (0.1, 0.9):
            same = precise.amid_loss(
                np.stack([TEACHER, TEACHER]),
                np.stack([TEACHER, TEACHER]),
                alpha,
                lam,
                name,
                "pr",
                params,
            )
            assert same.shape == (2,)
            for order in precise.ORDERS:
                zero = precise.amid_loss(TEACHER, TEACHER, alpha, lam, name, order, params)
                assert abs(zero) < mpf("1e-45"), (name, order, alpha, lam, zero)
                positive = precise.amid_loss(STUDENT, TEACHER, alpha, lam, name, order, params)
                assert positive > mpf("1e-6"), (name, order, alpha, lam, positive)


def test_loss_matches_a_hand_computed_skew_kl():
    """α = −1: r = λp + (1−λ)q, DistiLLM skew KL(p‖r), temperature 2."""
    lam, temperature = 0.1, 2.0
    got = precise.amid_loss(STUDENT, TEACHER, -1.0, lam, "kl", "pr", None, temperature)
    with mp.workdps(80):
        p = softmax_mp(TEACHER, temperature)
        q = softmax_mp(STUDENT, temperature)
        r = [mpf(lam) * x + (1 - mpf(lam)) * y for x, y in zip(p, q, strict=True)]
        want = mpmath.fsum(x * mpmath.log(x / y) for x, y in zip(p, r, strict=True) if x)
    assert_close(got, want, mpf("1e-48"))


def _kl_pr_gradient(student, teacher, alpha, lam, temperature):
    """Proposition 3.5 in closed form: ∂KL(p‖r)/∂s_j = (−g_j + q_j Σ g)/T, g = (p − r) w."""
    with mp.workdps(80):
        p = softmax_mp(teacher, temperature)
        q = softmax_mp(student, temperature)
        r = precise.alpha_mixture(mpf_array(p), mpf_array(q), alpha, lam, dps=70)
        lam = mpf(lam)
        w = []
        for x, y in zip(p, q, strict=True):
            if np.isinf(alpha):
                picked = y > x if alpha < 0 else y < x
                w.append(mpf(1) if picked else mpf(0))
            elif alpha == 1:
                w.append(1 - lam)
            elif y == 0:
                w.append(mpf(0))  # α < 1 here: q^β = 0
            else:
                beta = (1 - mpf(alpha)) / 2
                qb = y**beta
                pb = x**beta if x else (mpf(0) if beta > 0 else mpf("inf"))
                w.append((1 - lam) * qb / (lam * pb + (1 - lam) * qb))
        g = [(x - z) * v for x, z, v in zip(p, r, w, strict=True)]
        total = mpmath.fsum(g)
        return [(-gj + qj * total) / temperature for gj, qj in zip(g, q, strict=True)]


@pytest.mark.parametrize("alpha", [-np.inf, -1e6, -5.0, -1.0, 0.0, 1 - 1e-12, 1.0, 3.0, np.inf])
def test_grad_matches_proposition_3_5_for_kl(alpha):
    teacher = np.array([2.0, -1.0, 0.5, -np.inf, 3.0, -0.25, 1.0])
    student = np.array([1.0, 0.0, -0.5, -np.inf, 2.5, 0.75, -2.0])
    for lam, temperature in [(0.1, 1.0), (0.5, 2.0), (0.9, 0.5)]:
        got = precise.amid_grad(student, teacher, alpha, lam, "kl", "pr", None, temperature)
        want = _kl_pr_gradient(student, teacher, alpha, lam, temperature)
        assert got.shape == student.shape
        scale = max(abs(v) for v in want)
        assert scale > mpf("1e-3")
        for j, (x, y) in enumerate(zip(got, want, strict=True)):
            assert abs(x - y) < mpf("1e-40") * scale, (alpha, lam, j, x, y)
        assert got[3] == 0  # masked student logit


@pytest.mark.parametrize(("name", "params"), DIVERGENCE_CASES)
def test_grad_matches_plain_central_differences_of_amid_loss(name, params):
    """amid_grad (which reuses the base point's powers) against the public amid_loss
    evaluated at mpf-perturbed logits."""
    teacher = np.array([0.5, -1.0, 2.0, -np.inf, 0.25])
    student = np.array([1.0, 0.0, -0.5, -np.inf, 1.5])
    temperature = 1.5
    with mp.workdps(120):
        h = mpf("1e-40")
    for alpha, lam, order in [
        (-5.0, 0.3, "pr"),
        (3.0, 0.7, "rq"),
        (0.0, 0.5, "qr"),
        (-np.inf, 0.2, "rp"),
    ]:
        got = precise.amid_grad(student, teacher, alpha, lam, name, order, params, temperature)
        for j in (0, 2, 4):
            with mp.workdps(120):
                up, down = mpf_array(student), mpf_array(student)
                up[j] += h
                down[j] -= h
            args = (teacher, alpha, lam, name, order, params, temperature)
            l_up = precise.amid_loss(up, *args, dps=90)
            l_down = precise.amid_loss(down, *args, dps=90)
            with mp.workdps(120):
                fd = (l_up - l_down) / (2 * h)
            assert abs(got[j] - fd) < mpf("1e-40"), (name, alpha, order, j, got[j], fd)
        assert got[3] == 0


def test_grad_with_detached_assistant():
    """TAID form: KL(r‖q) with r frozen has gradient (q − r)/T; D(p‖r) frozen has none."""
    lam, temperature = 0.3, 1.5
    got = precise.amid_grad(STUDENT, TEACHER, 1.0, lam, "kl", "rq", None, temperature, True)
    frozen = precise.amid_grad(STUDENT, TEACHER, 1.0, lam, "kl", "pr", None, temperature, True)
    live = precise.amid_grad(STUDENT, TEACHER, 1.0, lam, "kl", "rq", None, temperature)
    with mp.workdps(80):
        p = softmax_mp(TEACHER, temperature)
        q = softmax_mp(STUDENT, temperature)
        r = precise.alpha_mixture(mpf_array(p), mpf_array(q), 1.0, lam, dps=70)
        want = [(y - z) / temperature for y, z in zip(q, r, strict=True)]
    for x, y in zip(got, want, strict=True):
        assert abs(x - y) < mpf("1e-40")
    assert all(v == 0 for v in frozen)
    assert max(abs(x - y) for x, y in zip(live, got, strict=True)) > mpf("1e-3")


def test_grad_rows_and_infinite_loss():
    rows = np.stack([STUDENT, STUDENT[::-1].copy()])
    teacher = np.stack([TEACHER, TEACHER])
    g = precise.amid_grad(rows, teacher, -5.0, 0.1)
    assert g.shape == rows.shape
    one = precise.amid_grad(rows[1], teacher[1], -5.0, 0.1)
    assert list(g[1]) == list(one)
    # α ≥ 1 and teacher mass where the student has none: KL(p‖r) = +inf, gradient undefined
    student = np.array([0.0, -np.inf, 1.0])
    assert precise.amid_loss(student, np.zeros(3), 1.0, 0.5) == mpf("inf")
    bad = precise.amid_grad(student, np.zeros(3), 1.0, 0.5)
    assert all(mpmath.isnan(v) for v in bad)


# --------------------------------------------------------------------------------------
# input handling and to_float
# --------------------------------------------------------------------------------------


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="NaN"):
        precise.alpha_mean([0.1, np.nan], 0.2, 0.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        precise.log_alpha_mixture([0.0, np.nan], [0.0, 0.0], 0.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        precise.amid_loss([0.0, np.nan], [0.0, 0.0], 0.0, 0.5)
    with pytest.raises(ValueError, match=r"\+inf"):
        precise.amid_loss([0.0, np.inf], [0.0, 0.0], 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha is NaN"):
        precise.alpha_mean(0.1, 0.2, np.nan, 0.5)
    with pytest.raises(ValueError, match="lam"):
        precise.alpha_mean(0.1, 0.2, 0.0, 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        precise.alpha_mean(-0.1, 0.2, 0.0, 0.5)
    with pytest.raises(ValueError, match="unknown divergence"):
        precise.divergence(A, B, "kld")
    with pytest.raises(ValueError, match=r"needs parameter.*'order'"):
        precise.divergence(A, B, "renyi")
    with pytest.raises(ValueError, match="unknown parameter"):
        precise.divergence(A, B, "kl", beta=0.5)
    with pytest.raises(ValueError, match="order"):
        precise.amid_loss(STUDENT, TEACHER, 0.0, 0.5, order="pq")
    with pytest.raises(ValueError, match="student_logits has a row whose logits are all -inf"):
        precise.amid_loss([-np.inf, -np.inf], [0.0, 0.0], 0.0, 0.5)


def test_to_float_rounds_to_nearest():
    with mp.workdps(60):
        values = [
            mpf("inf"),
            mpf("-inf"),
            mpf(1) / 3,
            mpf("1e-400"),
            mpf("1e400"),
            mpmath.exp(mpf(-1e10)),
            mpmath.ldexp(mpf(3), -1075),  # 1.5 * 2^-1074: ties to even -> 2^-1073
            mpmath.ldexp(mpf(5), -1076),  # 1.25 * 2^-1074 -> 2^-1074
            mpf(2) ** -1022 * (1 + mpf(2) ** -60),
        ]
        out = precise.to_float(mpf_array(values))
    assert out.dtype == np.float64
    assert list(out) == [
        np.inf,
        -np.inf,
        1 / 3,
        0.0,
        np.inf,
        0.0,
        2.0**-1073,
        2.0**-1074,
        2.0**-1022,
    ]
    assert precise.to_float(mpf(0.5)).shape == ()
    assert precise.to_float(np.empty((2, 0), dtype=object)).shape == (2, 0)
