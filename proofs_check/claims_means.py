"""Claims about the weighted α-mean :math:`m_\\alpha(a, b; \\lambda)` and the normalizer
:math:`Z_\\alpha` (mathematics page, "α-representation, α-mean, α-mixture").

Throughout, β = (1 − α)/2 and :math:`m_\\alpha = M_\\beta = (\\lambda a^\\beta + (1-\\lambda)
b^\\beta)^{1/\\beta}`; α → 1 is β → 0 and α → ±∞ is β → ∓∞.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import sympy as sp

import amid_ref
from proofs_check._core import PROVED, Claim
from proofs_check._numeric import (
    ALPHAS_FINITE,
    ALPHAS_WITH_INF,
    LAMS,
    check,
    check_log,
    distribution_pairs,
    log_pairs,
    mp_function,
    mp_values,
)
from proofs_check._symbolic import (
    beta_of_alpha,
    power_mean,
    prove_limit,
    prove_positive,
    prove_zero,
    require,
)

__all__ = ["CLAIMS", "monotonicity_lemma"]

A, B, C = sp.symbols("a b c", positive=True)
LAM, MU = sp.symbols("lambda mu", positive=True)
ALPHA = sp.Symbol("alpha", real=True)
BETA = sp.Symbol("beta", real=True, nonzero=True)
BETA_ANY = sp.Symbol("beta", real=True)  # for limits β → 0
LA, LB, D, T, X = sp.symbols("l_a l_b d t x", real=True)
K = sp.Symbol("k", positive=True)

SOURCE_MEAN = "AMiD (arXiv 2510.15982), α-mixture via Amari's α-representation; power means"

MEAN_EXPR = power_mean(A, B, LAM, beta_of_alpha(ALPHA))  # m_α(a, b; λ) in terms of α


def _log_power_mean_mp():
    """Exact log m_α(e^la, e^lb; λ) as an mpmath function of (la, lb, α, λ), with the
    geometric mean at α = 1 (β = 0 exactly)."""

    def f(la, lb, alpha, lam):
        alpha, lam = mp.mpf(alpha), mp.mpf(lam)  # exact: never mix float arithmetic in
        beta = (1 - alpha) / 2
        if beta == 0:
            return lam * la + (1 - lam) * lb
        return mp.log(lam * mp.exp(beta * la) + (1 - lam) * mp.exp(beta * lb)) / beta

    return f


def _amid_log_mean(la, lb, alpha, lam):
    return np.asarray(amid_ref.log_alpha_mean(la, lb, alpha, lam), dtype=np.float64)


# --- special cases ------------------------------------------------------------------------

_SPECIAL = {
    "mean.special.arithmetic": (
        -1,
        LAM * A + (1 - LAM) * B,
        r"m_{-1}(a,b;\lambda) = \lambda a + (1-\lambda) b \quad\text{(arithmetic mean)}",
    ),
    "mean.special.alpha0": (
        0,
        (LAM * sp.sqrt(A) + (1 - LAM) * sp.sqrt(B)) ** 2,
        r"m_{0}(a,b;\lambda) = (\lambda\sqrt{a} + (1-\lambda)\sqrt{b})^2",
    ),
    "mean.special.harmonic": (
        3,
        1 / (LAM / A + (1 - LAM) / B),
        r"m_{3}(a,b;\lambda) = (\lambda/a + (1-\lambda)/b)^{-1} \quad\text{(harmonic mean)}",
    ),
    "mean.special.quadratic": (
        -3,
        sp.sqrt(LAM * A**2 + (1 - LAM) * B**2),
        r"m_{-3}(a,b;\lambda) = (\lambda a^2 + (1-\lambda) b^2)^{1/2} \quad\text{(quadratic mean)}",
    ),
}


def _special_symbolic(claim_id: str):
    alpha0, target, _ = _SPECIAL[claim_id]

    def check_symbolic() -> str:
        return prove_zero(
            MEAN_EXPR.subs(ALPHA, alpha0) - target,
            f"(λa^β+(1−λ)b^β)^(1/β) with β=(1−α)/2 at α={alpha0} equals the closed form "
            "for all a, b > 0 and λ",
        )

    return check_symbolic


def _special_numeric(claim_id: str, seed: int):
    alpha0, target, _ = _SPECIAL[claim_id]

    def check_numeric() -> str:
        exact = mp_function(sp.log(target), (A, B, LAM))
        la, lb = log_pairs(24, seed)
        a, b = np.exp(la), np.exp(lb)
        n = 0
        for lam in LAMS:
            want = mp_values(exact, a, b, lam)
            check_log(_amid_log_mean(np.log(a), np.log(b), alpha0, lam), want, "log_alpha_mean")
            got = np.asarray(amid_ref.alpha_mean(a, b, alpha0, lam), dtype=np.float64)
            check_log(np.log(got), want, "alpha_mean")
            n += 2 * a.size
        return (
            f"amid_ref.alpha_mean/log_alpha_mean at α={alpha0} match the closed form ({n} values)"
        )

    return check_numeric


# --- limits ---------------------------------------------------------------------------------


def _sym_alpha_to_1() -> str:
    log_m = sp.log(LAM * A**BETA_ANY + (1 - LAM) * B**BETA_ANY) / BETA_ANY
    prove_limit(log_m, BETA_ANY, 0, LAM * sp.log(A) + (1 - LAM) * sp.log(B), "lim_{β→0} log M_β")
    prove_limit(MEAN_EXPR, ALPHA, 1, A**LAM * B ** (1 - LAM), "lim_{α→1} m_α")
    return (
        "two-sided limits lim_{β→0} log M_β = λ log a + (1−λ) log b and lim_{α→1} m_α = a^λ b^(1−λ)"
    )


def _num_alpha_to_1() -> str:
    f = _log_power_mean_mp()
    la, lb = log_pairs(16, 11)
    n = 0
    for lam in LAMS:
        want = mp_values(lambda x, y, lam=lam: f(x, y, 1, lam), la, lb)
        check_log(_amid_log_mean(la, lb, 1.0, lam), want, "log_alpha_mean at α=1")
        for delta in (1e-3, 1e-8, 1e-13):
            for alpha in (1.0 - delta, 1.0 + delta):
                want_a = mp_values(lambda x, y, al=alpha, lam=lam: f(x, y, al, lam), la, lb)
                check_log(
                    _amid_log_mean(la, lb, alpha, lam), want_a, f"log_alpha_mean at α={alpha}"
                )
                n += la.size
    return f"log_alpha_mean at α = 1 and α = 1 ± δ (δ down to 1e-13) matches exact values ({n})"


def _sym_alpha_to_minus1() -> str:
    prove_limit(MEAN_EXPR, ALPHA, -1, LAM * A + (1 - LAM) * B, "lim_{α→−1} m_α")
    prove_zero(MEAN_EXPR.subs(ALPHA, -1) - (LAM * A + (1 - LAM) * B), "m_{−1}")
    return "two-sided lim_{α→−1} m_α = λa + (1−λ)b = m_{−1} (continuity at α = −1)"


def _num_alpha_to_minus1() -> str:
    f = _log_power_mean_mp()
    la, lb = log_pairs(16, 12)
    n = 0
    for lam in LAMS:
        for alpha in (-1.0 - 1e-3, -1.0 - 1e-9, -1.0, -1.0 + 1e-9, -1.0 + 1e-3):
            want = mp_values(lambda x, y, al=alpha, lam=lam: f(x, y, al, lam), la, lb)
            check_log(_amid_log_mean(la, lb, alpha, lam), want, f"log_alpha_mean at α={alpha}")
            n += la.size
    return f"log_alpha_mean around α = −1 matches exact values ({n})"


def _reduction_to_one_variable() -> str:
    return prove_zero(
        power_mean(B * A, B, LAM, BETA, MU) - B * power_mean(A, 1, LAM, BETA, MU),
        "homogeneity reduction M(b·t, b) = b·M(t, 1)",
    )


def _sym_infinite(sign: int) -> str:
    """Limits β → −∞ (α → +∞, min) for sign = +1 and β → +∞ (α → −∞, max) for sign = −1,
    for any positive weights λ, μ (in particular μ = 1 − λ with 0 < λ < 1)."""
    _reduction_to_one_variable()
    s = sp.Symbol("s", positive=True)
    point = -sp.oo if sign > 0 else sp.oo
    below, above = sp.exp(-s), sp.exp(s)  # t < 1 and t > 1
    m_below = (LAM * below**BETA_ANY + MU) ** (1 / BETA_ANY)
    m_above = (LAM * above**BETA_ANY + MU) ** (1 / BETA_ANY)
    if sign > 0:
        prove_limit(m_below, BETA_ANY, point, below, "t = e^(−s) < 1: M(t,1) → t = min(t,1)")
        prove_limit(m_above, BETA_ANY, point, 1, "t = e^s > 1: M(t,1) → 1 = min(t,1)")
    else:
        prove_limit(m_below, BETA_ANY, point, 1, "t = e^(−s) < 1: M(t,1) → 1 = max(t,1)")
        prove_limit(m_above, BETA_ANY, point, above, "t = e^s > 1: M(t,1) → t = max(t,1)")
    prove_zero(power_mean(A, A, LAM, BETA) - A, "t = 1: M(a, a) = a")
    which = "min" if sign > 0 else "max"
    return (
        f"M(a,b) = b·M(a/b,1); for every s > 0 and weights λ, μ > 0, M(e^∓s, 1) → {which}(e^∓s, 1) "
        f"as β → {'−' if sign > 0 else '+'}∞; a = b by idempotence"
    )


def _num_infinite(sign: int):
    def check_numeric() -> str:
        alpha_inf = np.inf if sign > 0 else -np.inf
        f = _log_power_mean_mp()
        la, lb = log_pairs(16, 13 + sign)
        pick = np.minimum if sign > 0 else np.maximum
        n = 0
        for lam in LAMS:
            check_log(_amid_log_mean(la, lb, alpha_inf, lam), pick(la, lb), f"α={alpha_inf}")
            for alpha in (sign * 20.0, sign * 1e3):
                want = mp_values(lambda x, y, al=alpha, lam=lam: f(x, y, al, lam), la, lb)
                check_log(_amid_log_mean(la, lb, alpha, lam), want, f"log_alpha_mean at α={alpha}")
            # Convergence: 0 ≤ ±(log m_α − log m_∞) ≤ |log w|/|β| with w the weight of the
            # selected argument (exact bound from M(a,b) = b·M(a/b, 1)).
            for alpha in (sign * 1e8, sign * 1e200):
                beta = abs((1.0 - alpha) / 2.0)
                gap = sign * (_amid_log_mean(la, lb, alpha, lam) - pick(la, lb))
                w = np.where((la < lb) == (sign > 0), lam, 1.0 - lam)
                bound = np.abs(np.log(w)) / beta + 1e-12 * np.maximum(1.0, np.abs(la))
                require(
                    bool(np.all(gap >= -1e-12 * np.maximum(1.0, np.abs(la)))),
                    f"α={alpha}: m_α on the wrong side of {('min' if sign > 0 else 'max')}",
                )
                require(bool(np.all(gap <= bound)), f"α={alpha}: m_α not within |log w|/|β|")
            n += la.size
        return (
            f"log_alpha_mean at α = {alpha_inf} is the {'min' if sign > 0 else 'max'}, at "
            "|α| = 20, "
            f"1e3 matches exact values, at |α| = 1e8, 1e200 lies within |log w|/|β| ({n} pairs)"
        )

    return check_numeric


def _sym_lambda_endpoints() -> str:
    lam = sp.Symbol("lambda", real=True)
    m = power_mean(A, B, lam, BETA)
    prove_limit(m, lam, 0, B, "β ≠ 0: λ → 0⁺", direction="+")
    prove_limit(m, lam, 1, A, "β ≠ 0: λ → 1⁻", direction="-")
    geo = A**lam * B ** (1 - lam)
    prove_limit(geo, lam, 0, B, "β = 0: λ → 0⁺", direction="+")
    prove_limit(geo, lam, 1, A, "β = 0: λ → 1⁻", direction="-")
    return "lim_{λ→0⁺} m_α = b and lim_{λ→1⁻} m_α = a for symbolic β ≠ 0 and for β = 0"


def _num_lambda_endpoints() -> str:
    f = _log_power_mean_mp()
    la, lb = log_pairs(12, 14)
    for alpha in ALPHAS_FINITE:
        check_log(_amid_log_mean(la, lb, alpha, 0.0), lb, f"λ=0, α={alpha}")
        check_log(_amid_log_mean(la, lb, alpha, 1.0), la, f"λ=1, α={alpha}")
        a, b = np.exp(la), np.exp(lb)
        check_log(np.log(amid_ref.alpha_mean(a, b, alpha, 0.0)), lb, f"alpha_mean λ=0 α={alpha}")
        check_log(np.log(amid_ref.alpha_mean(a, b, alpha, 1.0)), la, f"alpha_mean λ=1 α={alpha}")
        for lam in (2.0**-40, 1.0 - 2.0**-40):
            want = mp_values(lambda x, y, al=alpha, lam=lam: f(x, y, al, lam), la, lb)
            check_log(_amid_log_mean(la, lb, alpha, lam), want, f"λ={lam}, α={alpha}")
    return (
        f"alpha_mean/log_alpha_mean at λ ∈ {{0, 1}} give b, a and at λ = 2^-40, 1 − 2^-40 match "
        f"exact values, for {len(ALPHAS_FINITE)} finite α"
    )


# --- structural identities ------------------------------------------------------------------


def _sym_idempotent() -> str:
    prove_zero(power_mean(A, A, LAM, BETA) - A, "β ≠ 0: M(a, a) = a")
    prove_zero(A**LAM * A ** (1 - LAM) - A, "β = 0: a^λ a^(1−λ) = a")
    require(sp.Min(A, A) == A and sp.Max(A, A) == A, "min(a,a) = max(a,a) = a")
    return "m_α(a, a; λ) = a for symbolic β ≠ 0, β = 0 and α = ±∞"


def _num_idempotent() -> str:
    la, _ = log_pairs(20, 15)
    for alpha in ALPHAS_WITH_INF:
        for lam in LAMS:
            check_log(_amid_log_mean(la, la, alpha, lam), la, f"α={alpha}, λ={lam}")
    return f"log_alpha_mean(l, l) = l for {len(ALPHAS_WITH_INF)} α (incl. ±inf) × {len(LAMS)} λ"


def _sym_homogeneous() -> str:
    prove_zero(
        power_mean(C * A, C * B, LAM, BETA, MU) - C * power_mean(A, B, LAM, BETA, MU),
        "β ≠ 0 (any weights λ, μ > 0)",
    )
    prove_zero(
        (C * A) ** LAM * (C * B) ** (1 - LAM) - C * A**LAM * B ** (1 - LAM), "β = 0 (geometric)"
    )
    return (
        "m_α(ca, cb) = c·m_α(a, b) for c > 0, symbolic β ≠ 0 and β = 0; α = ±∞ by taking "
        "the limit of both sides (claims mean.limit.alpha_to_±inf)"
    )


def _num_homogeneous() -> str:
    la, lb = log_pairs(16, 16, spread=20.0)
    a, b = np.exp(la), np.exp(lb)
    n = 0
    for c in (2.0**-60, 2.0**-3, 2.0**7, 2.0**50):  # exact scalings in float64
        for alpha in ALPHAS_WITH_INF:
            for lam in (0.1, 0.5, 0.9):
                scaled = np.asarray(amid_ref.alpha_mean(c * a, c * b, alpha, lam))
                plain = np.asarray(amid_ref.alpha_mean(a, b, alpha, lam))
                check_log(np.log(scaled), np.log(c) + np.log(plain), f"c={c}, α={alpha}")
                n += a.size
    return f"alpha_mean(c·a, c·b) = c·alpha_mean(a, b) for c = 2^k, α incl. ±inf ({n} values)"


def _sym_symmetry() -> str:
    prove_zero(power_mean(A, B, LAM, BETA) - power_mean(B, A, 1 - LAM, BETA), "β ≠ 0")
    prove_zero(A**LAM * B ** (1 - LAM) - B ** (1 - LAM) * A ** (1 - (1 - LAM)), "β = 0")
    return "m_α(a, b; λ) = m_α(b, a; 1−λ) for symbolic β ≠ 0 and β = 0 (min/max are symmetric)"


def _num_symmetry() -> str:
    la, lb = log_pairs(20, 17)
    for alpha in ALPHAS_WITH_INF:
        for lam in (0.125, 0.25, 0.5, 0.75, 1.0 - 2.0**-30):  # 1 − λ exact in float64
            check_log(
                _amid_log_mean(la, lb, alpha, lam),
                _amid_log_mean(lb, la, alpha, 1.0 - lam),
                f"α={alpha}, λ={lam}",
            )
    return "log_alpha_mean(a, b; λ) = log_alpha_mean(b, a; 1−λ) for dyadic λ, α incl. ±inf"


# --- monotonicity in α ------------------------------------------------------------------------


def monotonicity_lemma() -> str:
    """d/dβ log M_β(a, b; λ) ≥ 0, with equality iff a = b (the power-mean inequality).

    With λ = 1/(1+k), k > 0 (any λ in (0, 1)) and a = b·e^t (homogeneity),
    β²·d/dβ log M_β(e^t, 1) = h(βt), h(x) = x K'(x) − K(x), K(x) = log(λ e^x + 1 − λ).
    h(0) = 0 and h'(x) = x K''(x) with K'' > 0, so h decreases on x < 0 and increases on
    x > 0: h(x) > 0 for x ≠ 0.
    """
    lam = 1 / (1 + K)
    kfun = sp.log(lam * sp.exp(X) + 1 - lam)
    h = X * sp.diff(kfun, X) - kfun
    log_m = sp.log(lam * sp.exp(BETA * T) + 1 - lam) / BETA
    _reduction_to_one_variable()
    prove_zero(sp.diff(log_m, BETA) * BETA**2 - h.subs(X, BETA * T), "β² ∂_β log M = h(βt)")
    prove_zero(h.subs(X, 0), "h(0) = 0")
    prove_zero(sp.diff(h, X) - X * sp.diff(kfun, X, 2), "h'(x) = x K''(x)")
    prove_positive(sp.diff(kfun, X, 2), "K''(x) > 0 for all real x and λ ∈ (0,1)")
    return (
        "with a = b·e^t: β²·∂_β log M_β = h(βt), h(0) = 0, h'(x) = x·K''(x), K'' > 0 "
        "(K = log(λe^x + 1 − λ)), hence h(x) > 0 for x ≠ 0 and ∂_β M ≥ 0 (= 0 iff a = b); "
        "∂_α = −½ ∂_β"
    )


def _num_monotone() -> str:
    la, lb = log_pairs(20, 18)
    alphas = sorted(ALPHAS_WITH_INF)
    n = 0
    for lam in LAMS:
        values = np.stack([_amid_log_mean(la, lb, al, lam) for al in alphas])
        steps = np.diff(values, axis=0)  # should be ≤ 0 (up to rounding)
        slack = 4e-13 * np.maximum(1.0, np.abs(values[1:]))
        require(
            bool(np.all(steps <= slack)),
            f"λ={lam}: log m_α increases with α somewhere (max step {steps.max():.3e})",
        )
        n += steps.size
    return f"log_alpha_mean is non-increasing along {len(alphas)} sorted α (incl. ±inf), {n} steps"


def _sym_normalizer() -> str:
    i, v = sp.symbols("i V", integer=True, positive=True)
    p, q = sp.IndexedBase("p", positive=True), sp.IndexedBase("q", positive=True)
    z_arith = sp.Sum(LAM * p[i] + (1 - LAM) * q[i], (i, 1, v))
    sum_p, sum_q = sp.Sum(p[i], (i, 1, v)), sp.Sum(q[i], (i, 1, v))
    prove_zero(z_arith - LAM * sum_p - (1 - LAM) * sum_q, "linearity of Σ")
    z = (LAM * sum_p + (1 - LAM) * sum_q).subs({sum_p: 1, sum_q: 1})
    prove_zero(z - 1, "Z_{−1} = λΣp + (1−λ)Σq = 1")
    lemma = monotonicity_lemma()
    return (
        "Z_{−1} = 1 for every V; m_α ≥ m_{−1} pointwise for α < −1 and ≤ for α > −1 "
        f"(monotonicity lemma: {lemma}), summed over x"
    )


def _num_normalizer() -> str:
    _, _, p, q = distribution_pairs(6, 9, 19)
    tol = 1e-13
    n = 0
    for lam in LAMS:
        for alpha in ALPHAS_WITH_INF:
            z = np.asarray(amid_ref.alpha_mixture_normalizer(p, q, alpha, lam))
            if alpha < -1:
                require(bool(np.all(z >= 1 - tol)), f"Z < 1 at α={alpha}, λ={lam}: {z.min()!r}")
            elif alpha > -1:
                require(bool(np.all(z <= 1 + tol)), f"Z > 1 at α={alpha}, λ={lam}: {z.max()!r}")
            else:
                check(z, np.ones_like(z), "mixture", f"Z at α=−1, λ={lam}")
            n += z.size
    # and the value itself against the exact sum of exact means
    f = _log_power_mean_mp()
    for alpha in (-5.0, 0.5, 3.0):
        with mp.workdps(50):
            want = [
                float(
                    mp.fsum(
                        mp.exp(f(mp.log(mp.mpf(float(x))), mp.log(mp.mpf(float(y))), alpha, 0.3))
                        for x, y in zip(pr, qr, strict=True)
                    )
                )
                for pr, qr in zip(p, q, strict=True)
            ]
        check(amid_ref.alpha_mixture_normalizer(p, q, alpha, 0.3), np.array(want), "mixture", "Z")
    return f"alpha_mixture_normalizer on the predicted side of 1 ({n} rows × α × λ) and exact"


# --- log-domain form and support ------------------------------------------------------------


def _sym_log_domain() -> str:
    a = B * sp.exp(D)  # a = b·e^d, d = log a − log b
    inner = LAM * a**BETA + (1 - LAM) * B**BETA  # m^β
    prove_zero(inner / B**BETA - (1 + LAM * (sp.exp(BETA * D) - 1)), "pivot on b")
    prove_zero(inner / a**BETA - (1 + (1 - LAM) * (sp.exp(-BETA * D) - 1)), "pivot on a")
    lam = 1 / (1 + K)  # keep 1 − λ > 0 visible to SymPy
    t_k = BETA * D + sp.log(lam) - sp.log(1 - lam)
    inner_k = lam * a**BETA + (1 - lam) * B**BETA
    prove_zero(lam * a**BETA * (1 + sp.exp(-t_k)) - inner_k, "dominant-term pivot")
    return (
        "m^β/b^β = 1 + λ·expm1(βd), m^β/a^β = 1 + (1−λ)·expm1(−βd) and "
        "m^β = λa^β(1 + e^(−t)), t = βd + log λ − log(1−λ) (d = log a − log b), so "
        "log m = log b + log1p(λ expm1(βd))/β etc. exactly"
    )


def _num_log_domain() -> str:
    f = _log_power_mean_mp()
    g = np.random.default_rng(20)
    la = g.uniform(-50, 50, 40)
    lb = la + np.concatenate([g.uniform(-1, 1, 20), g.uniform(-700, 700, 20)])
    n = 0
    for alpha in (1.0 - 1e-12, 1.0 - 1e-6, 1.0 + 1e-4, -1.0 + 1e-5, 1.0 - 2e-2, 5.0, -9.0):
        for lam in (1e-6, 0.3, 0.7):
            want = mp_values(lambda x, y, al=alpha, lam=lam: f(x, y, al, lam), la, lb)
            check_log(_amid_log_mean(la, lb, alpha, lam), want, f"α={alpha}, λ={lam}")
            n += la.size
    return f"log_alpha_mean accurate to the log_mixture tolerance near α = 1 and far from it ({n})"


def _sym_support() -> str:
    bp = sp.Symbol("beta", positive=True)
    bn = sp.Symbol("beta", negative=True)
    prove_limit(power_mean(A, B, LAM, bp), A, 0, (1 - LAM) ** (1 / bp) * B, "β > 0", "+")
    prove_positive((1 - 1 / (1 + K)) ** (1 / bp) * B, "β > 0: m(0, b) > 0")
    prove_limit(power_mean(A, B, LAM, bn, MU), A, 0, 0, "β < 0", "+")
    prove_limit(A**LAM * B**MU, A, 0, 0, "β = 0", "+")
    return (
        "lim_{a→0⁺} m = (1−λ)^(1/β) b > 0 for β > 0 (α < 1: union support) and = 0 for β ≤ 0 "
        "(α ≥ 1: intersection support)"
    )


def _num_support() -> str:
    p = np.array([0.5, 0.3, 0.0, 0.2, 0.0])
    q = np.array([0.0, 0.6, 0.1, 0.3, 0.0])
    union, inter = (p > 0) | (q > 0), (p > 0) & (q > 0)
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p), np.log(q)
    for alpha in ALPHAS_WITH_INF:
        # log r, not r: for α just below 1, m(0, b) = (1−λ)^(1/β)·b is positive but
        # underflows float64 (e.g. 0.6^(2e9)); the support is where log r > −inf.
        pos = ~np.isneginf(amid_ref.log_alpha_mixture(lp, lq, alpha, 0.4))
        want = union if alpha < 1 else inter
        require(bool(np.array_equal(pos, want)), f"α={alpha}: support {pos} != {want}")
        r = amid_ref.alpha_mixture(p, q, alpha, 0.4)
        require(bool(np.all(r[~want] == 0.0)), f"α={alpha}: alpha_mixture not 0 off the support")
    return (
        "log_alpha_mixture is finite exactly on the union (α < 1) / intersection (α ≥ 1) of the "
        "supports and alpha_mixture is exactly 0 off it"
    )


# --- registry ------------------------------------------------------------------------------

CLAIMS: list[Claim] = [
    *(
        Claim(
            claim_id,
            _SPECIAL[claim_id][2],
            f"{SOURCE_MEAN}; mathematics page, Special cases",
            _special_symbolic(claim_id),
            _special_numeric(claim_id, seed),
            PROVED,
            backs=("alpha_mean", "log_alpha_mean"),
        )
        for seed, claim_id in enumerate(_SPECIAL, start=1)
    ),
    Claim(
        "mean.limit.alpha_to_1",
        r"\lim_{\alpha\to 1} m_\alpha(a,b;\lambda) = a^\lambda b^{1-\lambda}"
        r" \quad\text{(geometric mean, e-mixture)}",
        f"{SOURCE_MEAN}; f_1(u) = log u",
        _sym_alpha_to_1,
        _num_alpha_to_1,
        backs=("log_alpha_mean", "alpha_mean"),
    ),
    Claim(
        "mean.limit.alpha_to_minus1",
        r"\lim_{\alpha\to -1} m_\alpha(a,b;\lambda) = m_{-1}(a,b;\lambda) = \lambda a +"
        r" (1-\lambda) b \quad\text{(continuity)}",
        SOURCE_MEAN,
        _sym_alpha_to_minus1,
        _num_alpha_to_minus1,
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mean.limit.alpha_to_plus_inf",
        r"\lim_{\alpha\to +\infty} m_\alpha(a,b;\lambda) = \min(a,b), \ 0<\lambda<1",
        "power means: M_β → min as β → −∞ (Hardy, Littlewood & Pólya, Inequalities)",
        lambda: _sym_infinite(+1),
        _num_infinite(+1),
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mean.limit.alpha_to_minus_inf",
        r"\lim_{\alpha\to -\infty} m_\alpha(a,b;\lambda) = \max(a,b), \ 0<\lambda<1",
        "power means: M_β → max as β → +∞ (Hardy, Littlewood & Pólya, Inequalities)",
        lambda: _sym_infinite(-1),
        _num_infinite(-1),
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mean.limit.lambda_endpoints",
        r"\lim_{\lambda\to 0^+} m_\alpha(a,b;\lambda) = b,\ \lim_{\lambda\to 1^-}"
        r" m_\alpha(a,b;\lambda) = a \quad (\alpha\in\mathbb{R})",
        SOURCE_MEAN + "; mathematics page (λ = 1 gives p, λ = 0 gives q)",
        _sym_lambda_endpoints,
        _num_lambda_endpoints,
        backs=("alpha_mean", "log_alpha_mean"),
    ),
    Claim(
        "mean.idempotent",
        r"m_\alpha(a,a;\lambda) = a",
        "means are idempotent (textbook); mathematics page, Properties",
        _sym_idempotent,
        _num_idempotent,
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mean.homogeneous",
        r"m_\alpha(ca,cb;\lambda) = c\, m_\alpha(a,b;\lambda), \ c>0",
        "power means are 1-homogeneous (textbook); mathematics page, Properties",
        _sym_homogeneous,
        _num_homogeneous,
        backs=("alpha_mean",),
    ),
    Claim(
        "mean.symmetry",
        r"m_\alpha(a,b;\lambda) = m_\alpha(b,a;1-\lambda)",
        "definition of the weighted α-mean (mathematics page)",
        _sym_symmetry,
        _num_symmetry,
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mean.monotone_in_alpha",
        r"\partial m_\alpha(a,b;\lambda)/\partial\alpha \le 0 \ (a,b>0,\ 0<\lambda<1;\ =0 \iff"
        r" a=b)",
        "power-mean inequality (Hardy, Littlewood & Pólya, Inequalities); "
        "mathematics page, Properties",
        lambda: monotonicity_lemma(),
        _num_monotone,
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mixture.normalizer.side_of_minus1",
        r"Z_\alpha \ge 1\ (\alpha<-1),\ Z_{-1}=1,\ Z_\alpha \le 1\ (\alpha>-1)",
        "power-mean inequality; mathematics page, Properties; AMiD (arXiv 2510.15982)",
        _sym_normalizer,
        _num_normalizer,
        backs=("alpha_mixture_normalizer",),
    ),
    Claim(
        "mean.log_domain_form",
        r"\log m_\alpha = \log b +"
        r" \tfrac{1}{\beta}\operatorname{log1p}\!\big(\lambda\operatorname{expm1}(\beta(\log"
        r" a-\log b))\big)",
        "mathematics page, log domain (the form that stays accurate as α → 1)",
        _sym_log_domain,
        _num_log_domain,
        backs=("log_alpha_mean",),
    ),
    Claim(
        "mixture.support",
        r"\operatorname{supp} r^{(\alpha,\lambda)} = \operatorname{supp} p \cup"
        r" \operatorname{supp} q\ (\alpha<1),\ \operatorname{supp} p \cap \operatorname{supp} q"
        r"\ (\alpha\ge 1)",
        "mathematics page, Properties (support)",
        _sym_support,
        _num_support,
        backs=("alpha_mixture", "log_alpha_mixture"),
    ),
]
