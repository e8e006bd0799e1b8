"""Claims of the AMiD paper's Theorem 3.2 (α-integration), Theorem 3.4 (optimality) and
Proposition 3.5 (gradient), with β = (1 − α)/2 throughout."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import sympy as sp

import amid_ref
from amid_ref.contract import SPECS
from amid_ref.tolerances import tolerance
from proofs_check._core import PROVED, PROVED_FOR_CASES, Claim
from proofs_check._numeric import (
    ALPHAS_WITH_INF,
    DPS,
    LAMS,
    check,
    check_log,
    distribution_pairs,
    log_pairs,
    mp_function,
    mp_grad,
    mp_softmax,
    mp_values,
    rng,
)
from proofs_check._symbolic import (
    alpha_of_beta,
    amari_term,
    power_mean,
    prove_limit,
    prove_positive,
    prove_zero,
    require,
)

__all__ = ["CLAIMS"]

P, Q, R, Z, CK = sp.symbols("p q r Z K", positive=True)
LAM, MU = sp.symbols("lambda mu", positive=True)
BETA = sp.Symbol("beta", real=True, nonzero=True)
ALPHA = sp.Symbol("alpha", real=True)
K = sp.Symbol("k", positive=True)

SRC_32 = "AMiD (arXiv 2510.15982) Theorem 3.2 (α-integration; Amari 2007)"
SRC_34 = "AMiD (arXiv 2510.15982) Theorem 3.4"
SRC_35 = "AMiD (arXiv 2510.15982) Proposition 3.5"

#: finite α of the Theorem 3.2 cross-checks (Amari's divergence needs a finite α)
ALPHAS_32 = (-7.0, -3.0, -1.0 - 1e-6, -1.0, 0.0, 0.5, 1.0, 1.0 + 1e-6, 2.0, 3.0, 9.0)


def _amari_beta(a, b, beta):
    """Amari's divergence term with α = 1 − 2β: (βa + (1−β)b − a^β b^(1−β))/(β(1−β))."""
    return (beta * a + (1 - beta) * b - a**beta * b ** (1 - beta)) / (beta * (1 - beta))


def _kl_measure(a, b):
    """Positive-measure KL term a log(a/b) − a + b (Amari's γ → −1 limit)."""
    return a * sp.log(a / b) - a + b


def _objective(beta):
    """λ D_α(p‖r) + μ D_α(q‖r) for one coordinate; β = 0 and β = 1 are α = 1 and α = −1."""
    if beta == 1:  # α = −1: D(p‖r) = KL̃(p‖r)
        return LAM * _kl_measure(P, R) + MU * _kl_measure(Q, R)
    if beta == 0:  # α = 1: D(p‖r) = KL̃(r‖p)
        return LAM * _kl_measure(R, P) + MU * _kl_measure(R, Q)
    return LAM * _amari_beta(P, R, beta) + MU * _amari_beta(Q, R, beta)


def _minimizer_of(beta):
    if beta == 1:
        return LAM * P + MU * Q
    if beta == 0:
        return P**LAM * Q**MU
    return power_mean(P, Q, LAM, beta, MU)


# --- Theorem 3.2 -------------------------------------------------------------------------


def _sym_32_stationary() -> str:
    prove_zero(
        amari_term(P, R, alpha_of_beta(BETA)) - _amari_beta(P, R, BETA),
        "Amari term with γ = α = 1 − 2β in the β form",
    )
    s = LAM * P**BETA + MU * Q**BETA
    df = sp.diff(_objective(BETA), R)
    prove_zero(df - ((LAM + MU) - s * R ** (-BETA)) / BETA, "∂F/∂r = ((λ+μ) − S r^(−β))/β")
    at_m = df.subs(R, _minimizer_of(BETA))
    prove_zero(at_m - (LAM + MU - 1) / BETA, "∂F/∂r at r = m_α is (λ+μ−1)/β")
    prove_zero(((LAM + MU - 1) / BETA).subs(MU, 1 - LAM), "= 0 when μ = 1 − λ")
    prove_positive(sp.diff(df, R), "∂²F/∂r² > 0, so ∂F/∂r has at most one zero")
    for beta, name in ((1, "α = −1"), (0, "α = 1")):
        df = sp.diff(_objective(beta), R)
        prove_zero(df.subs(R, _minimizer_of(beta)).subs(MU, 1 - LAM), f"{name}: stationary")
        prove_positive(sp.diff(df, R), f"{name}: ∂²F/∂r² > 0")
    return (
        "for symbolic β ∉ {0, 1} (α ≠ ±1) and for α = −1, 1 (Amari's KL limits): "
        "∂/∂r [λD_α(p‖r) + (1−λ)D_α(q‖r)] vanishes exactly at r = m_α(p, q; λ), its only zero"
    )


def _derivative_mp(beta):
    """∂F/∂r with μ = 1 − λ, as an mpmath function of (p, q, r, λ)."""
    df = sp.diff(_objective(beta), R).subs(MU, 1 - LAM)
    return mp_function(df, (P, Q, R, LAM))


def _objective_mp(beta):
    return mp_function(_objective(beta).subs(MU, 1 - LAM), (P, Q, R, LAM))


def _sym_beta(alpha: float):
    """β as an exact SymPy rational of the float64 α (so the check sees the α it was given)."""
    return (1 - sp.Rational(alpha)) / 2


def _num_32_stationary() -> str:
    la, lb = log_pairs(12, 31, spread=15.0)
    tol = tolerance("reference", "log_mixture", "float64")
    n = 0
    for alpha in ALPHAS_32:
        beta = _sym_beta(alpha)
        dfun = _derivative_mp(beta)
        for lam in (0.1, 0.5, 0.9):
            r = np.asarray(amid_ref.alpha_mean(np.exp(la), np.exp(lb), alpha, lam))
            res = mp_values(dfun, np.exp(la), np.exp(lb), r, lam)
            # A relative error ε in r moves ∂F/∂r by ≈ ε: compare with the log-r bound.
            bound = tol.atol + tol.rtol * np.maximum(1.0, np.abs(np.log(r)))
            require(
                bool(np.all(np.abs(res) <= bound)),
                f"α={alpha}, λ={lam}: |∂F/∂r| at alpha_mean = {np.abs(res).max():.3e} > bound",
            )
            n += r.size
    return f"∂F/∂r (exact) vanishes at r = amid_ref.alpha_mean to the log-r tolerance ({n} points)"


def _sym_32_minimizer() -> str:
    s = LAM * P**BETA + MU * Q**BETA
    d2 = sp.diff(_objective(BETA), R, 2)
    prove_zero(d2 - s * R ** (-BETA - 1), "∂²F/∂r² = S r^(−β−1)")
    prove_positive(s * R ** (-BETA - 1), "S r^(−β−1) > 0")
    prove_zero(sp.diff(_objective(1), R, 2) - (LAM * P + MU * Q) / R**2, "α = −1")
    prove_zero(sp.diff(_objective(0), R, 2) - (LAM + MU) / R, "α = 1")
    return (
        "∂²F/∂r² = (λp^β + (1−λ)q^β)·r^(−β−1) > 0 (β ≠ 0, 1), (λp + (1−λ)q)/r² (α = −1), 1/r "
        "(α = 1): F is strictly convex in each r(x) > 0, so its stationary point m_α is the "
        "unique global minimizer over positive measures"
    )


def _num_32_minimizer() -> str:
    la, lb = log_pairs(8, 32, spread=10.0)
    n = 0
    for alpha in ALPHAS_32:
        fobj = _objective_mp(_sym_beta(alpha))
        for lam in (0.1, 0.5, 0.9):
            r = np.asarray(amid_ref.alpha_mean(np.exp(la), np.exp(lb), alpha, lam))
            best = mp_values(fobj, np.exp(la), np.exp(lb), r, lam)
            for factor in (1 - 1e-3, 1 + 1e-3, 0.5, 2.0):
                other = mp_values(fobj, np.exp(la), np.exp(lb), r * factor, lam)
                require(
                    bool(np.all(other > best)),
                    f"α={alpha}, λ={lam}: F(r·{factor}) ≤ F(alpha_mean) somewhere",
                )
                n += r.size
    return f"F (exact) at amid_ref.alpha_mean is below F at r·(1 ± 1e-3), r/2, 2r ({n} comparisons)"


def _sym_32_simplex() -> str:
    s = LAM * P**BETA + MU * Q**BETA
    df = sp.diff(_objective(BETA), R)
    nu = (Z**BETA - 1) / BETA
    kkt = (df + nu).subs(R, s ** (1 / BETA) / Z)
    prove_zero(kkt - (LAM + MU - 1) / BETA, "β ∉ {0,1}: ∂L/∂r(x) = (λ+μ−1)/β")
    prove_zero(((LAM + MU - 1) / BETA).subs(MU, 1 - LAM), "= 0 when μ = 1 − λ")
    kkt_m1 = (sp.diff(_objective(1), R) + (Z - 1)).subs(R, (LAM * P + MU * Q) / Z)
    prove_zero(kkt_m1.subs(MU, 1 - LAM), "α = −1: ∂L/∂r(x) = 0 with ν = Z − 1")
    kkt_1 = (sp.diff(_objective(0), R) + sp.log(Z)).subs(R, P**LAM * Q**MU / Z)
    prove_zero(sp.expand_log(kkt_1.subs(MU, 1 - LAM), force=False), "α = 1: ν = log Z")
    return (
        "with Lagrangian L = Σ_x F_x(r(x)) + ν(Σ_x r(x) − 1): r(x) = m_α(x)/Z, Z = Σ m_α, "
        "ν = (Z^β − 1)/β (ν = Z − 1 at α = −1, log Z at α = 1) makes ∂L/∂r(x) = 0 for every x "
        "and every V (the condition is per coordinate); F is strictly convex "
        "(theorem_3_2.minimizer), so this KKT point is the minimizer over the simplex"
    )


def _num_32_simplex() -> str:
    _, _, p, q = distribution_pairs(3, 6, 33, scale=2.0)
    g = rng(34)
    n = 0
    tol = tolerance("reference", "log_mixture", "float64")
    for alpha in ALPHAS_32:
        beta = _sym_beta(alpha)
        dfun = _derivative_mp(beta)
        sens_fun = mp_function(
            (R * sp.diff(_objective(beta), R, 2)).subs(MU, 1 - LAM), (P, Q, R, LAM)
        )
        for lam in (0.1, 0.5, 0.9):
            r = amid_ref.alpha_mixture(p, q, alpha, lam)

            def objective(x, lam=lam, alpha=alpha):
                d_p = amid_ref.divergence(p, x, "amari", alpha=alpha)
                d_q = amid_ref.divergence(q, x, "amari", alpha=alpha)
                return lam * np.asarray(d_p) + (1 - lam) * np.asarray(d_q)

            best = objective(r)
            for _ in range(6):
                other = r * np.exp(0.05 * g.normal(size=r.shape))
                other /= other.sum(axis=-1, keepdims=True)
                require(
                    bool(np.all(objective(other) > best)),
                    f"α={alpha}, λ={lam}: a simplex point beats alpha_mixture",
                )
                n += r.shape[0]
            # KKT: ∂F/∂r(x) (exact) is the same constant −ν for every x of a row. An error δ
            # in log r(x) moves ∂F/∂r(x) by r·∂²F/∂r²·δ; δ is bounded by the log-r tolerance.
            grads = mp_values(dfun, p, q, r, lam)
            sens = mp_values(sens_fun, p, q, r, lam)
            delta = tol.atol + tol.rtol * np.maximum(1.0, np.abs(np.log(r)))
            spread = grads.max(axis=-1) - grads.min(axis=-1)
            allowed = 2 * (np.abs(sens) * delta).max(axis=-1)
            require(
                bool(np.all(spread <= allowed)),
                f"α={alpha}, λ={lam}: ∂F/∂r(x) not constant over x (spread {spread.max():.2e})",
            )
    return (
        "λD_α(p‖r) + (1−λ)D_α(q‖r) with amid_ref.divergence('amari') is smallest at "
        f"amid_ref.alpha_mixture among {n} perturbed simplex points, and ∂F/∂r(x) is constant "
        "over x there (KKT)"
    )


# --- Theorem 3.4 --------------------------------------------------------------------------


def _sym_34() -> str:
    # (⇐) q = p gives m = p (idempotence), Z = Σp = 1, r = p.
    prove_zero(power_mean(P, P, LAM, BETA) - P, "q = p ⇒ m_α(p, p) = p (β ≠ 0)")
    prove_zero(P**LAM * P ** (1 - LAM) - P, "q = p ⇒ m_α(p, p) = p (β = 0)")
    # (⇒) r = p means m(x) = Z·p(x) for all x, i.e. λp^β + μq^β = C p^β with C = Z^β > 0;
    # a positive solution q needs C > λ, written C = λ + μK with K > 0.
    sols = sp.solve(sp.Eq(LAM * P**BETA + MU * Q**BETA, (LAM + MU * CK) * P**BETA), Q)
    require(len(sols) == 1, f"β ≠ 0: expected one positive root q, got {sols}")
    ratio = sp.powdenest(sp.expand_power_base(sols[0] / P), force=False)
    prove_zero(sp.diff(ratio, P), "β ≠ 0: q(x)/p(x) does not depend on x")
    sols0 = sp.solve(sp.Eq(P**LAM * Q ** (1 - LAM), Z * P), Q)
    require(len(sols0) == 1, f"β = 0: expected one positive root q, got {sols0}")
    ratio0 = sp.powsimp(sp.expand_power_base(sols0[0] / P, force=False))
    prove_zero(sp.diff(ratio0, P), "β = 0: q(x)/p(x) does not depend on x")
    # and r = q: the same with the roles of p and q exchanged (mean.symmetry)
    sols_q = sp.solve(sp.Eq(LAM * P**BETA + MU * Q**BETA, (MU + LAM * CK) * Q**BETA), P)
    require(len(sols_q) == 1, f"r = q: expected one positive root p, got {sols_q}")
    prove_zero(sp.diff(sp.powdenest(sp.expand_power_base(sols_q[0] / Q)), Q), "r = q: p ∝ q")
    return (
        "q = p ⇒ r = p by idempotence; r = p ⇒ λp^β + (1−λ)q^β = Z^β p^β at every x, whose "
        "only positive root is q(x) = κ·p(x) with κ independent of x (β ≠ 0; likewise β = 0), "
        "and Σq = Σp = 1 forces κ = 1; r = q ⇔ q = p the same way with p, q exchanged. "
        "For every V, α ∈ ℝ, λ ∈ (0, 1) and strictly positive p, q"
    )


#: One parameter set per divergence (the records' "grid" sets, amid_ref._specs).
_DIV_CASES = tuple(
    (spec.name, params) for spec in SPECS.values() for params in spec.cases_for("grid")
)


def _num_34() -> str:
    t, s, p, q = distribution_pairs(4, 7, 35, scale=2.0)
    n = 0
    for alpha in ALPHAS_WITH_INF:
        for lam in (1e-3, 0.1, 0.5, 0.9):
            check(amid_ref.alpha_mixture(p, p, alpha, lam), p, "mixture", f"r(p, p), α={alpha}")
            r = amid_ref.alpha_mixture(p, q, alpha, lam)
            require(bool(np.all(np.abs(r - p).max(-1) > 1e-6)), f"q ≠ p but r = p, α={alpha}")
            require(bool(np.all(np.abs(r - q).max(-1) > 1e-6)), f"q ≠ p but r = q, α={alpha}")
    zero = tolerance("reference", "loss", "float64").atol
    for name, params in _DIV_CASES:
        for order in amid_ref.ORDERS:
            for alpha in (-np.inf, -5.0, -1.0, 0.0, 1.0, 3.0, np.inf):
                same = np.asarray(amid_ref.amid_loss(t, t, alpha, 0.3, name, order, params))
                require(bool(np.all(np.abs(same) <= zero)), f"{name}/{order}/α={alpha}: L(p,p)≠0")
                diff = np.asarray(amid_ref.amid_loss(s, t, alpha, 0.3, name, order, params))
                require(bool(np.all(diff > 1e-8)), f"{name}/{order}/α={alpha}: L = 0 with q ≠ p")
                n += 2 * diff.size
    return (
        "alpha_mixture(p, p) = p and r ∉ {p, q} for q ≠ p (α incl. ±inf); amid_loss is 0 for "
        f"equal logits and > 0 otherwise for {len(_DIV_CASES)} divergences × 4 orders × 7 α "
        f"({n} rows)"
    )


def _sym_34_infinite() -> str:
    u, v = sp.symbols("u v", positive=True)  # p = (u, 1−u), q = (v, 1−v), u, v ∈ (0, 1)
    # The selected (min or max) coordinates for each strict ordering of u and v; coordinate 2
    # compares 1−u with 1−v, i.e. the reverse ordering.
    selections = {
        "min with v < u, max with v > u": (v, 1 - u),
        "min with v > u, max with v < u": (u, 1 - v),
    }
    for label, (m1, m2) in selections.items():
        z = m1 + m2
        for target, name in ((u, "r = p"), (v, "r = q")):
            roots = [x for x in sp.solve(sp.Eq(m1, target * z), v) if x != 1]  # v = 1: q = (1, 0)
            require(bool(roots), f"{label}, {name}: no root found")
            for x in roots:
                prove_zero(x - u, f"{label}, {name}: the root is v = u")
    return (
        "V = 2, p = (u, 1−u), q = (v, 1−v): for min and max under each strict ordering of u and "
        "v, the only admissible root of r₁ = p₁ (and of r₁ = q₁) is v = u, contradicting the "
        "ordering; with v = u, r = p = q. So r = p ⇔ q = p ⇔ r = q"
    )


def _num_34_infinite() -> str:
    _, _, p, q = distribution_pairs(6, 9, 36, scale=2.0)
    for alpha in (-np.inf, np.inf):
        for lam in LAMS:
            check(amid_ref.alpha_mixture(p, p, alpha, lam), p, "mixture", f"α={alpha}")
            r = amid_ref.alpha_mixture(p, q, alpha, lam)
            require(bool(np.all(np.abs(r - p).max(-1) > 1e-6)), f"r = p with q ≠ p, α={alpha}")
    return "alpha_mixture at α = ±inf returns p for q = p and differs from p otherwise (V = 9)"


def _sym_34_support() -> str:
    bneg = sp.Symbol("beta", negative=True)
    half, quarter = sp.Rational(1, 2), sp.Rational(1, 4)
    x = sp.Symbol("x", positive=True)
    # p = (1/2, 1/2, 0), q = (1/4, 1/4, 1/2): coordinates 1, 2 are equal, coordinate 3 has m = 0.
    prove_limit(power_mean(x, half, LAM, bneg, MU), x, 0, 0, "β < 0: m(0⁺, ½) = 0", "+")
    prove_limit(x**LAM * half**MU, x, 0, 0, "β = 0: m(0⁺, ½) = 0", "+")
    require(sp.Min(0, half) == 0, "α = +∞: min(0, ½) = 0")
    for m12 in (power_mean(half, quarter, LAM, bneg, MU), half**LAM * quarter**MU, quarter):
        prove_positive(m12, "m(½, ¼) > 0")
        r = [m12 / (2 * m12), m12 / (2 * m12), 0]
        require(r == [half, half, 0], f"r = {r} ≠ p")
    return (
        "p = (½, ½, 0), q = (¼, ¼, ½): for every α ∈ [1, ∞] (β < 0 symbolic, β = 0, +∞) and "
        "λ ∈ (0, 1), m = (c, c, 0) with c > 0, so r = p although q ≠ p"
    )


def _num_34_support() -> str:
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    with np.errstate(divide="ignore"):
        t, s = np.log(p), np.log(q)
    zero = tolerance("reference", "loss", "float64").atol
    for alpha in (1.0, 1.5, 3.0, 10.0, np.inf):
        for lam in LAMS:
            check(amid_ref.alpha_mixture(p, q, alpha, lam), p, "mixture", f"α={alpha}, λ={lam}")
        loss = float(amid_ref.amid_loss(s, t, alpha, 0.5, "kl", "pr"))
        require(abs(loss) <= zero, f"α={alpha}: KL(p‖r) = {loss} with a masked teacher token")
    for alpha in (0.0, 0.99):  # α < 1: the union support keeps the student's extra mass
        r = amid_ref.alpha_mixture(p, q, alpha, 0.5)
        require(bool(r[2] > 0), f"α={alpha}: expected r₃ > 0")
    return (
        "amid_ref.alpha_mixture(p, q) = p and amid_loss(KL, pr) = 0 for the masked-teacher "
        "example at α ∈ {1, 1.5, 3, 10, inf}, while α < 1 keeps r₃ > 0"
    )


# --- Proposition 3.5 ----------------------------------------------------------------------


def _weight(p, q, lam, beta):
    return (1 - lam) * q**beta / (lam * p**beta + (1 - lam) * q**beta)


def _sym_35_weight() -> str:
    u, v = sp.symbols("u v", real=True)  # u = log p, v = log q
    lam = 1 / (1 + K)
    log_m = sp.log(lam * sp.exp(BETA * u) + (1 - lam) * sp.exp(BETA * v)) / BETA
    prove_zero(sp.diff(log_m, v) - _weight(sp.exp(u), sp.exp(v), lam, BETA), "β ≠ 0")
    prove_zero(sp.diff(lam * u + (1 - lam) * v, v) - (1 - lam), "β = 0: w = 1 − λ")
    b = sp.Symbol("b", real=True)
    prove_limit(_weight(P, Q, LAM, b), b, 0, 1 - LAM, "w continuous at β = 0")
    return (
        "∂ log m_α/∂ log q = (1−λ)q^β/(λp^β + (1−λ)q^β) for symbolic β ≠ 0, = 1 − λ at β = 0, "
        "and the formula is continuous at β = 0"
    )


def _num_35_weight() -> str:
    la, lb = log_pairs(10, 37, spread=8.0)
    n = 0
    with mp.workdps(DPS):
        for alpha in (-7.0, -3.0, -1.0, 0.0, 0.5, 1.0 - 1e-8, 1.0, 3.0):
            beta = (1 - mp.mpf(alpha)) / 2
            for lam in (1e-3, 0.3, 0.9):
                lam_mp = mp.mpf(lam)
                got = np.asarray(amid_ref.alpha_mixture_weight(la, lb, alpha, lam))

                def log_mean(y, x, beta=beta, lam_mp=lam_mp):
                    if beta == 0:
                        return lam_mp * x + (1 - lam_mp) * y
                    return (
                        mp.log(lam_mp * mp.exp(beta * x) + (1 - lam_mp) * mp.exp(beta * y)) / beta
                    )

                deriv = np.array(
                    [
                        float(mp.diff(lambda y, x=x: log_mean(y, mp.mpf(x)), mp.mpf(y)))
                        for x, y in zip(la, lb, strict=True)
                    ]
                )
                closed = np.array(
                    [
                        float(
                            mp.log(1 - lam_mp)
                            + beta * y
                            - mp.log(lam_mp * mp.exp(beta * x) + (1 - lam_mp) * mp.exp(beta * y))
                        )
                        for x, y in zip(map(mp.mpf, la), map(mp.mpf, lb), strict=True)
                    ]
                )
                check(got, deriv, "mixture", f"w vs ∂ log m/∂ log q, α={alpha}, λ={lam}")
                check_log(np.log(got), closed, f"log w vs closed form, α={alpha}, λ={lam}")
                n += got.size
    return (
        "amid_ref.alpha_mixture_weight equals mpmath's numerical ∂ log m/∂ log q of the exact "
        f"mean and the exact closed form ({n} values)"
    )


def _abstract_setting(vocab: int):
    """Symbols for a row of size V with an abstract α-mean: ℓ_x = L_x(log q_x) is any
    differentiable function of log q_x (p fixed), whose derivative is W_x."""
    e = sp.symbols(f"E1:{vocab + 1}", positive=True)  # E_x = exp(s_x)
    p = sp.symbols(f"p1:{vocab + 1}", positive=True)
    m = sp.symbols(f"M1:{vocab + 1}", positive=True)
    w = sp.symbols(f"W1:{vocab + 1}", real=True)
    funcs = [sp.Function(f"L{i + 1}") for i in range(vocab)]
    q = [ei / sum(e) for ei in e]
    ell = [funcs[i](sp.log(q[i])) for i in range(vocab)]
    return e, p, m, w, funcs, q, ell


def _derivative_in_logit(expr, e, j, funcs, ell, w, m):
    """∂expr/∂s_j (= E_j ∂/∂E_j), with L_x' → W_x and L_x(log q_x) → log M_x."""
    d = e[j] * sp.diff(expr, e[j])
    rep = {}
    for sub in d.atoms(sp.Subs):
        if sub.expr.expr.func in funcs:
            rep[sub] = w[funcs.index(sub.expr.expr.func)]
    d = d.xreplace(rep)
    return d.xreplace({ell[i]: sp.log(m[i]) for i in range(len(ell))})


def _numerator_is_zero(expr, what: str) -> str:
    num, _ = sp.fraction(sp.together(expr))
    return prove_zero(sp.expand(num), what)


KL_GRADIENT_SIZES = (2, 3, 4)


def _sym_35_kl_gradient() -> str:
    for vocab in KL_GRADIENT_SIZES:
        e, p, m, w, funcs, q, ell = _abstract_setting(vocab)
        log_z = sp.log(sum(sp.exp(li) for li in ell))
        kl = sum(p[i] * (sp.log(p[i]) - ell[i] + log_z) for i in range(vocab))
        r = [m[i] / sum(m) for i in range(vocab)]
        g = [(p[i] - r[i]) * w[i] for i in range(vocab)]
        for j in range(vocab):
            d = _derivative_in_logit(kl, e, j, funcs, ell, w, m)
            require(not d.atoms(sp.Subs), "unreplaced derivative")
            closed = -g[j] + q[j] * sum(g)
            diff = (d - closed).subs(p[-1], 1 - sum(p[:-1]))  # Σp = 1
            _numerator_is_zero(diff, f"V={vocab}, j={j}")
    return (
        "differentiating KL(p‖r), r = m/Σm, log m_x = L_x(log q_x), q = softmax(s), directly in "
        "s_j gives −g_j + q_j Σ_x g_x with g = (p − r)·W, W_x = L_x' = ∂ log m_x/∂ log q_x, for "
        f"V ∈ {set(KL_GRADIENT_SIZES)} and every j; with prop_3_5.weight, W = w for every α"
    )


def _mp_loss_kl_pr(t_row, alpha, lam):
    """Exact KL(p‖r) as a function of the student logits (a list of mpf); all arithmetic
    happens at call time, at the caller's working precision."""
    alpha, lam = mp.mpf(alpha), mp.mpf(lam)

    def loss(s):
        p = mp_softmax(t_row)
        q = mp_softmax(s)
        beta = (1 - alpha) / 2
        if beta == 0:
            m = [pi**lam * qi ** (1 - lam) for pi, qi in zip(p, q, strict=True)]
        else:
            m = [
                (lam * pi**beta + (1 - lam) * qi**beta) ** (1 / beta)
                for pi, qi in zip(p, q, strict=True)
            ]
        z = mp.fsum(m)
        return mp.fsum(pi * mp.log(pi * z / mi) for pi, mi in zip(p, m, strict=True))

    return loss


def _num_35_kl_gradient() -> str:
    t, s, _, _ = distribution_pairs(2, 5, 38, scale=2.0)
    n = 0
    for alpha in (-5.0, -1.0, 0.5, 1.0, 3.0):
        for lam in (0.1, 0.6):
            got = np.asarray(amid_ref.amid_grad(s, t, alpha, lam, "kl", "pr"))
            for row in range(t.shape[0]):
                want = mp_grad(_mp_loss_kl_pr(t[row], alpha, lam), s[row])
                check(got[row], want, "grad", f"amid_grad vs mpmath derivative, α={alpha}")
                with mp.workdps(DPS):  # the closed form, exactly
                    p = mp_softmax(t[row])
                    q = mp_softmax(s[row])
                    beta = (1 - mp.mpf(alpha)) / 2
                    lam_mp = mp.mpf(lam)
                    if beta == 0:
                        m = [pi**lam_mp * qi ** (1 - lam_mp) for pi, qi in zip(p, q, strict=True)]
                    else:
                        m = [
                            (lam_mp * pi**beta + (1 - lam_mp) * qi**beta) ** (1 / beta)
                            for pi, qi in zip(p, q, strict=True)
                        ]
                    r = [mi / mp.fsum(m) for mi in m]
                    w = [
                        (1 - lam_mp) * qi**beta / (lam_mp * pi**beta + (1 - lam_mp) * qi**beta)
                        for pi, qi in zip(p, q, strict=True)
                    ]
                    g = [(pi - ri) * wi for pi, ri, wi in zip(p, r, w, strict=True)]
                    closed = np.array(
                        [float(-gj + qj * mp.fsum(g)) for gj, qj in zip(g, q, strict=True)]
                    )
                check(closed, want, "grad", f"closed form vs mpmath derivative, α={alpha}")
                n += 1
    return (
        "amid_ref.amid_grad (KL, pr) and the closed form −g + q Σg (exact) both match mpmath's "
        f"numerical gradient of the exact loss ({n} rows, V = 5)"
    )


def _sym_35_direction() -> str:
    lam = 1 / (1 + K)
    u = sp.Symbol("u", real=True)
    w = _weight(Q * sp.exp(u), Q, lam, (1 - ALPHA) / 2)  # p = q·e^u, u = log(p/q)
    prove_positive(sp.simplify(sp.diff(w, ALPHA) / u), "∂w/∂α = (positive)·log(p/q)")
    return (
        "with p = q·e^u and λ = 1/(1+k): ∂w/∂α divided by u = log(p/q) simplifies to a positive "
        "expression, so w increases in α where p > q, decreases where p < q, and is constant "
        "(= 1 − λ) where p = q"
    )


def _num_35_direction() -> str:
    la, lb = log_pairs(30, 39, spread=10.0)
    alphas = sorted(ALPHAS_WITH_INF)
    for lam in LAMS:
        ws = np.stack([np.asarray(amid_ref.alpha_mixture_weight(la, lb, al, lam)) for al in alphas])
        steps = np.diff(ws, axis=0)
        up, down = la > lb, la < lb
        require(bool(np.all(steps[:, up] >= -1e-15)), f"λ={lam}: w decreases in α where p > q")
        require(bool(np.all(steps[:, down] <= 1e-15)), f"λ={lam}: w increases in α where p < q")
        tie = la == lb
        finite = np.isfinite(alphas)
        check(ws[finite][:, tie], np.full((finite.sum(), tie.sum()), 1 - lam), "mixture", "p = q")
    return "alpha_mixture_weight is monotone in α (incl. ±inf) as predicted, 1 − λ where p = q"


F_GRADIENT_SIZES = (2, 3)


def _sym_35_f_gradient() -> str:
    f = sp.Function("f")
    for vocab in F_GRADIENT_SIZES:
        e, p, m, w, funcs, q, ell = _abstract_setting(vocab)
        fv = sp.symbols(f"F1:{vocab + 1}", real=True)
        fp = sp.symbols(f"Fp1:{vocab + 1}", real=True)
        z = sum(sp.exp(li) for li in ell)
        r_expr = [sp.exp(ell[i]) / z for i in range(vocab)]
        dfun = sum(r_expr[i] * f(p[i] / r_expr[i]) for i in range(vocab))
        r = [m[i] / sum(m) for i in range(vocab)]
        psi = [fv[i] - p[i] / r[i] * fp[i] for i in range(vocab)]
        e_psi = sum(r[i] * psi[i] for i in range(vocab))
        for j in range(vocab):
            d = _derivative_in_logit(dfun, e, j, funcs, ell, w, m)
            rep = {}
            for sub in d.atoms(sp.Subs):  # f'(p_x/r_x)
                idx = [i for i in range(vocab) if sub.point[0].has(p[i])]
                require(len(idx) == 1, f"cannot attribute {sub}")
                rep[sub] = fp[idx[0]]
            d = d.xreplace(rep)
            rep = {}
            for app in d.atoms(sp.core.function.AppliedUndef):  # f(p_x/r_x)
                idx = [i for i in range(vocab) if app.args[0].has(p[i])]
                require(len(idx) == 1, f"cannot attribute {app}")
                rep[app] = fv[idx[0]]
            d = d.xreplace(rep)
            target = sum(
                r[x] * w[x] * (psi[x] - e_psi) * ((1 if x == j else 0) - q[j]) for x in range(vocab)
            )
            _numerator_is_zero(d - target, f"V={vocab}, j={j}")
    return (
        "for an arbitrary differentiable generator f and abstract α-mean: ∂/∂s_j Σ_x r f(p/r) "
        "= E_r[W (ψ_f − E_r ψ_f) ∂_j log q], ψ_f(u) = f(u) − u f'(u), u = p/r, for "
        f"V ∈ {set(F_GRADIENT_SIZES)} and every j"
    )


def _num_35_f_gradient() -> str:
    u = sp.Symbol("u", positive=True)
    generators = {
        "kl": u * sp.log(u),
        "hellinger": (sp.sqrt(u) - 1) ** 2 / 2,
        "chi2": (u - 1) ** 2,
    }
    t, s, p, q = distribution_pairs(2, 6, 40, scale=2.0)
    n = 0
    for name, gen in generators.items():
        psi = mp_function(gen - u * sp.diff(gen, u), (u,))
        for alpha in (-3.0, 0.0, 1.0, 3.0):
            lam = 0.4
            got = np.asarray(amid_ref.amid_grad(s, t, alpha, lam, name, "pr"))
            r = amid_ref.alpha_mixture(p, q, alpha, lam)
            w = np.asarray(amid_ref.alpha_mixture_weight(np.log(p), np.log(q), alpha, lam))
            with mp.workdps(DPS):
                for row in range(p.shape[0]):
                    ps = [
                        psi(mp.mpf(float(a)) / mp.mpf(float(b)))
                        for a, b in zip(p[row], r[row], strict=True)
                    ]
                    e_psi = mp.fsum(mp.mpf(float(ri)) * x for ri, x in zip(r[row], ps, strict=True))
                    c = [
                        mp.mpf(float(ri)) * mp.mpf(float(wi)) * (x - e_psi)
                        for ri, wi, x in zip(r[row], w[row], ps, strict=True)
                    ]
                    total = mp.fsum(c)
                    want = np.array(
                        [
                            float(cj - mp.mpf(float(qj)) * total)
                            for cj, qj in zip(c, q[row], strict=True)
                        ]
                    )
                    check(got[row], want, "grad", f"{name}, α={alpha}: amid_grad vs E_r form")
                    n += 1
    f_params = {"f": lambda x: (x - 1.0) ** 2, "f_prime": lambda x: 2.0 * (x - 1.0)}
    got_f = amid_ref.amid_grad(s, t, -3.0, 0.4, "f", "pr", f_params)
    check(got_f, amid_ref.amid_grad(s, t, -3.0, 0.4, "chi2", "pr"), "grad", "f=(u−1)² vs chi2")
    return (
        "amid_ref.amid_grad (pr) for KL, Hellinger, χ² matches E_r[w(ψ_f − E_r ψ_f)∇log q] "
        f"evaluated exactly on amid_ref's r and w ({n} rows), and the generic 'f' divergence "
        "with f = (u−1)² matches 'chi2'"
    )


# --- registry ------------------------------------------------------------------------------

CLAIMS: list[Claim] = [
    Claim(
        "theorem_3_2.stationary",
        r"\partial_{r(x)}\big[\lambda D_\alpha(p\|r) + (1-\lambda) D_\alpha(q\|r)\big] = 0 \iff"
        r" r(x) = m_\alpha(p(x),q(x);\lambda)",
        SRC_32 + ", stationarity over positive measures",
        _sym_32_stationary,
        _num_32_stationary,
        backs=("alpha_mean", "log_alpha_mixture"),
    ),
    Claim(
        "theorem_3_2.minimizer",
        r"m_\alpha(p,q;\lambda) = \arg\min_{r>0}\ \lambda D_\alpha(p\|r) + (1-\lambda)"
        r" D_\alpha(q\|r) \quad\text{(second-order condition)}",
        SRC_32 + ", minimizer over positive measures",
        _sym_32_minimizer,
        _num_32_minimizer,
        backs=("alpha_mean", "log_alpha_mixture"),
    ),
    Claim(
        "theorem_3_2.simplex",
        r"r^{(\alpha,\lambda)} = m_\alpha/Z_\alpha = \arg\min_{r\in\Delta}\ \lambda"
        r" D_\alpha(p\|r) + (1-\lambda) D_\alpha(q\|r)",
        SRC_32 + ", normalization over the simplex",
        _sym_32_simplex,
        _num_32_simplex,
        backs=("alpha_mixture", "log_alpha_mixture"),
    ),
    Claim(
        "theorem_3_4.optimality",
        r"0<\lambda<1,\ \alpha\in\mathbb{R},\ p,q>0:\ r^{(\alpha,\lambda)} = p \iff q = p \iff"
        r" r^{(\alpha,\lambda)} = q",
        SRC_34,
        _sym_34,
        _num_34,
        backs=("alpha_mixture", "amid_loss"),
    ),
    Claim(
        "theorem_3_4.optimality_infinite_alpha",
        r"0<\lambda<1,\ \alpha=\pm\infty,\ p,q>0:\ r^{(\alpha,\lambda)} = p \iff q = p \iff"
        r" r^{(\alpha,\lambda)} = q",
        SRC_34 + " (extended to α = ±∞)",
        _sym_34_infinite,
        _num_34_infinite,
        scope=PROVED_FOR_CASES,
        cases="V = 2 (all orderings of p and q); the V-general argument is the textbook one "
        "(Σ(p − q)⁺ = 1 − Z) and is not checked symbolically",
        backs=("alpha_mixture",),
    ),
    Claim(
        "theorem_3_4.full_support_needed",
        r"\alpha\ge 1:\ p=(\tfrac12,\tfrac12,0),\ q=(\tfrac14,\tfrac14,\tfrac12) \Rightarrow"
        r" r^{(\alpha,\lambda)} = p \ne q",
        SRC_34 + " (hypothesis p > 0 is needed for α ≥ 1: counterexample)",
        _sym_34_support,
        _num_34_support,
        backs=("alpha_mixture", "amid_loss"),
    ),
    Claim(
        "prop_3_5.weight",
        r"w = \frac{\partial\log m_\alpha}{\partial\log q} = \frac{(1-\lambda)q^\beta}{\lambda"
        r" p^\beta + (1-\lambda)q^\beta},\ \beta=\tfrac{1-\alpha}{2}",
        SRC_35,
        _sym_35_weight,
        _num_35_weight,
        backs=("alpha_mixture_weight", "amid_grad"),
    ),
    Claim(
        "prop_3_5.kl_gradient",
        r"\partial_{s_j}\mathrm{KL}(p\|r) = -g_j + q_j\sum_x g_x,\ g = (p-r)\,w,"
        r"\ q=\mathrm{softmax}(s)",
        SRC_35 + " (closed form for KL(p‖r))",
        _sym_35_kl_gradient,
        _num_35_kl_gradient,
        scope=PROVED_FOR_CASES,
        cases=f"vocabulary sizes V ∈ {set(KL_GRADIENT_SIZES)}, all α (abstract weight W, with "
        "prop_3_5.weight giving W = w), all logits and teacher distributions",
        backs=("amid_grad",),
    ),
    Claim(
        "prop_3_5.direction",
        r"\partial w/\partial\alpha > 0 \text{ where } p>q,\ < 0 \text{ where } p<q",
        SRC_35 + " (mode covering for larger α, mode seeking for smaller α)",
        _sym_35_direction,
        _num_35_direction,
        backs=("alpha_mixture_weight",),
    ),
    Claim(
        "prop_3_5.f_divergence_gradient",
        r"\nabla_s D_f(p\|r) = \mathbb{E}_r\big[w\,(\psi_f - \mathbb{E}_r\psi_f)\,\nabla_s\log"
        r" q\big],\ \psi_f(u) = f(u) - u f'(u),\ u = p/r",
        SRC_35 + " (general f-divergence form)",
        _sym_35_f_gradient,
        _num_35_f_gradient,
        scope=PROVED_FOR_CASES,
        cases=f"vocabulary sizes V ∈ {set(F_GRADIENT_SIZES)}, arbitrary generator f and α",
        backs=("amid_grad",),
    ),
]

assert all(c.scope in (PROVED, PROVED_FOR_CASES) for c in CLAIMS)
