"""Claims about the divergence families of the mathematics page: the KL limits of the Amari,
Rényi and AB families, the AB limit forms, and "zero iff equal".

The divergences are sums of per-coordinate terms, so a limit of a term (for positive
arguments) is a limit of the divergence; the linear terms Σ(b − a) vanish for distributions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp

import amid_ref
from amid_ref import precise, presets
from amid_ref.contract import SPECS
from amid_ref.tolerances import tolerance
from proofs_check._core import PROVED, PROVED_FOR_CASES, Claim
from proofs_check._numeric import check, distribution_pairs
from proofs_check._symbolic import amari_term, prove_limit, prove_positive, prove_zero, require

__all__ = ["CLAIMS", "ZERO_GENERATORS"]

A, B = sp.symbols("a b", positive=True)  # the two arguments (one coordinate)
XL, YL = sp.symbols("X Y", real=True)  # log-arguments: x = e^X, y = e^Y
GAMMA = sp.Symbol("gamma", real=True)
AP, BP = sp.symbols("a_ b_", real=True, nonzero=True)  # AB parameters a_, b_
EPS = sp.Symbol("epsilon", real=True)
T = sp.Symbol("t", positive=True)
K = sp.Symbol("k", positive=True)

SRC_AMARI = "Amari (2009), α-divergence; mathematics page, Divergences (γ → −1 is KL(a‖b))"
SRC_RENYI = "Rényi (1961); van Erven & Harremoës (2014); mathematics page"
SRC_JEFFREYS = "Jeffreys (1946), the symmetrized KL divergence; mathematics page, Divergences"
SRC_SKEW = "Lee (1999), skew divergence; Ko et al. 2024, DistiLLM (skew KL); mathematics page"
SRC_AB = "Cichocki, Cruces & Amari (2011), AB-divergence and its limit forms; mathematics page"


DIV_TOL = tolerance("reference", "divergence", "float64")


def _kl_term(a, b):
    """a log(a/b) − a + b: the positive-measure KL term (sums to KL(a‖b) on distributions)."""
    return a * sp.log(a / b) - a + b


def _ab_term(a_, b_):
    """One AB-divergence term in the log-arguments X = log x, Y = log y."""
    s = a_ + b_
    return (
        -1
        / (a_ * b_)
        * (sp.exp(a_ * XL + b_ * YL) - a_ / s * sp.exp(s * XL) - b_ / s * sp.exp(s * YL))
    )


def _ab_limit_a0(b_):
    """a_ = 0 ≠ b_: (1/b_²)(y^b_ log(y^b_/x^b_) − y^b_ + x^b_) (Cichocki et al. 2011)."""
    return (sp.exp(b_ * YL) * b_ * (YL - XL) - sp.exp(b_ * YL) + sp.exp(b_ * XL)) / b_**2


def _ab_limit_b0(a_):
    """b_ = 0 ≠ a_: (1/a_²)(x^a_ log(x^a_/y^a_) − x^a_ + y^a_)."""
    return (sp.exp(a_ * XL) * a_ * (XL - YL) - sp.exp(a_ * XL) + sp.exp(a_ * YL)) / a_**2


def _ab_limit_sum0(a_):
    """a_ = −b_ ≠ 0: (1/a_²)(log(y^a_/x^a_) + (y^a_/x^a_)^(−1) − 1)."""
    return (a_ * (YL - XL) + sp.exp(a_ * (XL - YL)) - 1) / a_**2


def _ab_limit_origin():
    """a_ = b_ = 0: ½(log x − log y)²."""
    return (XL - YL) ** 2 / 2


# --- the oracle ---------------------------------------------------------------------------


def _oracle(a, b, name: str, **params) -> np.ndarray:
    """``D(a‖b)`` per row from the mpmath oracle :func:`amid_ref.precise.divergence` (the
    independent transcription of each record's definition), rounded to float64."""
    return precise.to_float(precise.divergence(a, b, name, **params))


def _pairs():
    _, _, p, q = distribution_pairs(4, 7, 51, scale=2.0)
    return p, q


# --- Amari ------------------------------------------------------------------------------


def _sym_amari(sign: int) -> str:
    point = -1 if sign < 0 else 1
    want = _kl_term(A, B) if sign < 0 else _kl_term(B, A)
    prove_limit(amari_term(A, B, GAMMA), GAMMA, point, want, f"term, γ → {point}")
    which = "KL(a‖b)" if sign < 0 else "KL(b‖a)"
    return (
        f"two-sided per-term limit γ → {point}: the Amari term tends to "
        f"{'a log(a/b) − a + b' if sign < 0 else 'b log(b/a) − b + a'}, whose sum over a "
        f"distribution pair is {which}"
    )


def _num_amari(sign: int):
    def check_numeric() -> str:
        p, q = _pairs()
        point = float(sign)
        kl = _oracle(p, q, "kl") if sign < 0 else _oracle(q, p, "kl")
        check(amid_ref.divergence(p, q, "amari", alpha=point), kl, "divergence", f"γ={point}")
        for delta in (1e-3, 1e-7, 1e-12):
            for gamma in (point - delta, point + delta):
                want = _oracle(p, q, "amari", alpha=gamma)
                got = amid_ref.divergence(p, q, "amari", alpha=gamma)
                check(got, want, "divergence", f"γ={gamma}")
        return (
            f"amid_ref.divergence('amari') at γ = {point:+g} equals the exact KL and at γ = "
            f"{point:+g} ± δ (δ down to 1e-12) matches the exact Amari value"
        )

    return check_numeric


# --- Rényi ------------------------------------------------------------------------------


def _sym_renyi() -> str:
    i, v = sp.symbols("i V", integer=True, positive=True)
    a, b = sp.IndexedBase("a", positive=True), sp.IndexedBase("b", positive=True)
    rho = sp.Symbol("rho", real=True)
    big_s = sp.Sum(a[i] ** rho * b[i] ** (1 - rho), (i, 1, v))
    numerator = sp.log(big_s)  # D_ρ = N(ρ)/(ρ − 1)
    sum_a = sp.Sum(a[i], (i, 1, v))
    n_at_1 = numerator.subs(rho, 1)
    require(sp.simplify(n_at_1 - sp.log(sum_a)) == 0, "N(1) = log Σa")
    dn = sp.diff(numerator, rho).subs(rho, 1).doit()
    kl = sp.Sum(a[i] * (sp.log(a[i]) - sp.log(b[i])), (i, 1, v))
    prove_zero(sp.simplify(dn * sum_a - kl), "N'(1)·Σa = Σ a log(a/b)")
    return (
        "for every V: N(ρ) = log Σ a^ρ b^(1−ρ) has N(1) = log Σa = 0 on distributions and "
        "N'(1) = Σ a log(a/b)/Σa, so by l'Hôpital lim_{ρ→1} N(ρ)/(ρ−1) = KL(a‖b) (two-sided, "
        "N is differentiable)"
    )


def _num_renyi() -> str:
    p, q = _pairs()
    check(amid_ref.divergence(p, q, "renyi", order=1.0), _oracle(p, q, "kl"), "divergence", "ρ=1")
    for delta in (1e-3, 1e-7, 1e-12):
        for rho in (1.0 - delta, 1.0 + delta):
            got = amid_ref.divergence(p, q, "renyi", order=rho)
            check(got, _oracle(p, q, "renyi", order=rho), "divergence", f"ρ={rho}")
    return "amid_ref.divergence('renyi') at ρ = 1 and 1 ± δ (δ down to 1e-12) matches exact values"


# --- AB ----------------------------------------------------------------------------------


def _sym_ab_forward() -> str:
    prove_limit(_ab_term(1, BP), BP, 0, _kl_term(sp.exp(XL), sp.exp(YL)), "(1, b_→0)")
    prove_zero(_ab_limit_b0(1) - _kl_term(sp.exp(XL), sp.exp(YL)), "b_ = 0 form at a_ = 1")
    return (
        "two-sided b_ → 0 at a_ = 1: the AB term tends to x log(x/y) − x + y (sum: KL(x‖y)), "
        "which is also the b_ = 0 limit form at a_ = 1"
    )


def _sym_ab_reverse() -> str:
    prove_limit(_ab_term(AP, 1), AP, 0, _kl_term(sp.exp(YL), sp.exp(XL)), "(a_→0, 1)")
    prove_zero(_ab_limit_a0(1) - _kl_term(sp.exp(YL), sp.exp(XL)), "a_ = 0 form at b_ = 1")
    return (
        "two-sided a_ → 0 at b_ = 1: the AB term tends to y log(y/x) − y + x (sum: KL(y‖x)), "
        "which is also the a_ = 0 limit form at b_ = 1"
    )


def _sym_ab_a0() -> str:
    prove_limit(_ab_term(AP, BP), AP, 0, _ab_limit_a0(BP), "a_ → 0, b_ ≠ 0")
    return "two-sided a_ → 0 for symbolic b_ ≠ 0: (1/b_²)(y^b_ log(y^b_/x^b_) − y^b_ + x^b_)"


def _sym_ab_b0() -> str:
    prove_limit(_ab_term(AP, BP), BP, 0, _ab_limit_b0(AP), "b_ → 0, a_ ≠ 0")
    return "two-sided b_ → 0 for symbolic a_ ≠ 0: (1/a_²)(x^a_ log(x^a_/y^a_) − x^a_ + y^a_)"


def _sym_ab_sum0() -> str:
    prove_limit(_ab_term(AP, -AP + EPS), EPS, 0, _ab_limit_sum0(AP), "a_ + b_ → 0")
    return "two-sided a_ + b_ → 0 for symbolic a_ ≠ 0: (1/a_²)(log(y^a_/x^a_) + x^a_/y^a_ − 1)"


def _sym_ab_origin() -> str:
    s = sp.Symbol("s", positive=True)
    u, v = sp.symbols("u v", real=True, nonzero=True)
    want = _ab_limit_origin()
    # s → 0⁺ along (s·u, s·v) with u, v of any sign covers every ray from the origin.
    prove_limit(_ab_term(s * u, s * v), s, 0, want, "generic ray (s u, s v)", "+")
    prove_limit(_ab_limit_a0(s * v), s, 0, want, "rays along a_ = 0", "+")
    prove_limit(_ab_limit_b0(s * u), s, 0, want, "rays along b_ = 0", "+")
    prove_limit(_ab_limit_sum0(s * u), s, 0, want, "rays along a_ + b_ = 0", "+")
    return (
        "the AB term tends to ½(log x − log y)² along every ray from (0, 0): generic "
        "directions (u, v) with u v (u + v) ≠ 0, and the three singular lines"
    )


def _num_ab(case: str):
    def check_numeric() -> str:
        p, q = _pairs()
        if case == "forward":
            points, exact_at = [(1.0, 0.0)], [(1.0, d) for d in (1e-3, -1e-7, 1e-12)]
            check(amid_ref.divergence(p, q, "ab", alpha=1.0, beta=0.0), _oracle(p, q, "kl"),
                  "divergence", "(1, 0) vs KL(x‖y)")  # fmt: skip
        elif case == "reverse":
            points, exact_at = [(0.0, 1.0)], [(d, 1.0) for d in (1e-3, -1e-7, 1e-12)]
            check(amid_ref.divergence(p, q, "ab", alpha=0.0, beta=1.0), _oracle(q, p, "kl"),
                  "divergence", "(0, 1) vs KL(y‖x)")  # fmt: skip
        elif case == "a0":
            points = [(0.0, 0.7), (0.0, -1.3), (0.0, 2.0)]
            exact_at = [(d, b) for _, b in points for d in (1e-3, -1e-7, 1e-12)]
        elif case == "b0":
            points = [(0.7, 0.0), (-1.3, 0.0), (2.0, 0.0)]
            exact_at = [(a, d) for a, _ in points for d in (1e-3, -1e-7, 1e-12)]
        elif case == "sum0":
            points = [(0.4, -0.4), (-1.5, 1.5)]
            exact_at = [(a, -a + d) for a, _ in points for d in (1e-3, -1e-7, 1e-12)]
        else:  # origin
            points = [(0.0, 0.0)]
            exact_at = [(1e-7, 2e-7), (-1e-9, 3e-9), (1e-6, -1e-6 + 1e-9), (0.0, 1e-8)]
        for a_, b_ in [*points, *exact_at]:
            got = amid_ref.divergence(p, q, "ab", alpha=a_, beta=b_)
            want = _oracle(p, q, "ab", alpha=a_, beta=b_)
            check(got, want, "divergence", f"(a_, b_) = ({a_}, {b_})")
        return (
            f"amid_ref.divergence('ab') at {points} and at {len(exact_at)} nearby (a_, b_) "
            "(offsets down to 1e-12) matches the exact value (limit form on the singular line)"
        )

    return check_numeric


# --- Jeffreys and skew KL ------------------------------------------------------------------


def _sym_jeffreys() -> str:
    term = (A - B) * sp.log(A / B)
    prove_zero(term - (A * sp.log(A / B) + B * sp.log(B / A)), "J term = KL term + mirror")
    prove_zero(term - (B - A) * sp.log(B / A), "J term symmetric in (a, b)")
    return "(a − b) log(a/b) = a log(a/b) + b log(b/a), symmetric in a and b, term by term"


def _num_jeffreys() -> str:
    p, q = _pairs()
    want = _oracle(p, q, "jeffreys")
    check(amid_ref.divergence(p, q, "jeffreys"), want, "divergence", "J(p‖q)")
    check(amid_ref.divergence(q, p, "jeffreys"), want, "divergence", "J(q‖p) = J(p‖q)")
    kl_sum = _oracle(p, q, "kl") + _oracle(q, p, "kl")
    check(amid_ref.divergence(p, q, "jeffreys"), kl_sum, "divergence", "J = KL + KL mirror")
    return "amid_ref.divergence('jeffreys') equals the exact Σ(a − b)log(a/b) = KL(a‖b) + KL(b‖a)"


S_SKEW = sp.Symbol("s", positive=True)


def _skew_term(s):
    return A * sp.log(A / (s * A + (1 - s) * B))


def _sym_skew_at_zero() -> str:
    prove_zero(_skew_term(S_SKEW).subs(S_SKEW, 0) - A * sp.log(A / B), "s = 0 term")
    prove_limit(_skew_term(S_SKEW), S_SKEW, 0, A * sp.log(A / B), "s → 0⁺", "+")
    return "the skew KL term a log(a/(s a + (1 − s) b)) is a log(a/b) at s = 0 and tends to it"


def _num_skew_at_zero() -> str:
    p, q = _pairs()
    want = _oracle(p, q, "kl")
    check(amid_ref.divergence(p, q, "skew_kl", skew=0.0), want, "divergence", "s = 0")
    for s in (1e-12, 1e-15):
        got = amid_ref.divergence(p, q, "skew_kl", skew=s)
        check(got, _oracle(p, q, "skew_kl", skew=s), "divergence", f"s = {s}")
    # The DistiLLM preset: α = −1 (arithmetic mixture), λ = 0.1, KL(p‖r) is KL_0.1(p‖q).
    t, st = np.log(p[0]), np.log(q[0])
    check(presets.get("distillm_skl").loss(st, t), amid_ref.divergence(p[0], q[0], "skew_kl"),
          "loss", "distillm_skl preset = skew_kl(s = 0.1)")  # fmt: skip
    return (
        "amid_ref.divergence('skew_kl') at s = 0 is the exact KL, at s = 1e-12, 1e-15 the exact "
        "skew KL; the distillm_skl preset equals skew_kl with s = 0.1"
    )


def _sym_skew_bounded() -> str:
    # s = 1/(1 + K) covers (0, 1): log(1/s) − log(a/m) = log(m/(s a)), m/(s a) = 1 + K b/a.
    s = 1 / (1 + K)
    m = s * A + (1 - s) * B
    prove_zero(m / (s * A) - 1 - K * B / A, "m/(s a) = 1 + K b/a")
    prove_positive(K * B / A, "K b/a > 0")
    return (
        "for 0 < s < 1 each term a log(a/m) ≤ a log(1/s) (m ≥ s a), so 0 ≤ KL_s ≤ log(1/s): "
        "finite for every pair of distributions"
    )


def _num_skew_bounded() -> str:
    p, q = _pairs()
    one_hot = np.zeros_like(p)
    one_hot[:, 0] = 1.0
    for s in (0.1, 0.5, 0.9):
        for a, b in ((p, q), (one_hot, np.roll(one_hot, 1, axis=-1))):
            got = np.asarray(amid_ref.divergence(a, b, "skew_kl", skew=s))
            require(bool(np.all((got >= 0) & (got <= np.log(1 / s) * (1 + 1e-12)))),
                    f"s = {s}: KL_s = {got} not in [0, log(1/s)]")  # fmt: skip
    return "0 ≤ KL_s ≤ log(1/s) for s ∈ {0.1, 0.5, 0.9} on random and disjoint one-hot pairs"


# --- zero iff equal ------------------------------------------------------------------------


def _tangent_convex(phi, t, what: str) -> str:
    """φ(1) = 0, φ'(1) = 0 and φ'' > 0 on t > 0: φ(t) > 0 for t ≠ 1 (strict convexity)."""
    prove_zero(phi.subs(t, 1), f"{what}: φ(1) = 0")
    prove_zero(sp.diff(phi, t).subs(t, 1), f"{what}: φ'(1) = 0")
    prove_positive(sp.diff(phi, t, 2), f"{what}: φ'' > 0")
    return what


# Each divergence is Σ (positive weight)·φ(t), t = a/b (or a power of it). Its entry proves
# φ ≥ 0 with φ(t) = 0 only at t = 1 and returns what it showed. The f-divergence generators
# are shifted by a multiple of (t − 1) (which sums to 0 over a distribution pair) so that the
# tangent at t = 1 is flat.


def _zero_kl() -> str:
    return _tangent_convex(T * sp.log(T) - T + 1, T, "KL")


def _zero_js() -> str:
    beta_js = 1 / (1 + K)  # any β ∈ (0, 1)
    m = beta_js * T + 1 - beta_js
    js = beta_js * T * sp.log(T / m) + (1 - beta_js) * sp.log(1 / m)
    return _tangent_convex(js, T, "JS_β, 0 < β < 1")


def _zero_tv() -> str:
    require(sp.solve(sp.Eq(sp.Abs(T - 1), 0), T) == [1], "TV: |t − 1| = 0 only at t = 1")
    return "TV"


def _zero_hellinger() -> str:
    return _tangent_convex((sp.sqrt(T) - 1) ** 2 / 2, T, "Hellinger²")


def _zero_chi2() -> str:
    return _tangent_convex((T - 1) ** 2, T, "χ²")


def _zero_amari() -> str:
    amari = amari_term(T, 1, GAMMA)  # b·φ(a/b) with b = 1
    prove_zero(sp.diff(amari, T, 2) - T ** (-(GAMMA + 3) / 2), "Amari φ'' = t^(−(γ+3)/2)")
    return _tangent_convex(amari, T, "Amari, γ ≠ ±1 (γ = ±1 is KL)")


def _zero_renyi() -> str:
    # Rényi (ρ > 0, ρ ≠ 1): Σ a^ρ b^(1−ρ) = 1 + ρ(ρ−1)·H with H = Σ b f_ρ(a/b) ≥ 0,
    # f_ρ(t) = (t^ρ − 1 − ρ(t − 1))/(ρ(ρ−1)); D_ρ = log(1 + ρ(ρ−1)H)/(ρ−1) = 0 iff H = 0.
    t = T
    rho = sp.Symbol("rho", positive=True)
    f_rho = (t**rho - 1 - rho * (t - 1)) / (rho * (rho - 1))
    prove_zero(
        B * (A / B) ** rho - B - rho * (A - B) - rho * (rho - 1) * B * f_rho.subs(t, A / B),
        "Rényi: b t^ρ = b + ρ(a − b) + ρ(ρ−1) b f_ρ(t) per term",
    )
    prove_zero(sp.diff(f_rho, t, 2) - t ** (rho - 2), "Rényi f_ρ'' = t^(ρ−2)")
    return _tangent_convex(f_rho, t, "Rényi, ρ > 0, ρ ≠ 1 (ρ = 1 is KL)")


def _zero_ab() -> str:
    # AB, generic (a_, b_, a_ + b_ ≠ 0): term = y^(a_+b_)·φ(x/y); with t = e^u,
    # φ'(e^u) = u·e^((a_−1)u)·∫₀¹ e^(b_ u s) ds, whose sign is that of u = log t.
    t = T
    shown = []
    u = sp.Symbol("u", real=True, nonzero=True)
    s_var = sp.Symbol("s", real=True)
    total = AP + BP
    phi = -1 / (AP * BP) * (t**AP - AP / total * t**total - BP / total)
    prove_zero(phi.subs(t, 1), "AB: φ(1) = 0")
    integral = sp.integrate(sp.exp(BP * u * s_var), (s_var, 0, 1))
    prove_zero(sp.diff(phi, t).subs(t, sp.exp(u)) - u * sp.exp((AP - 1) * u) * integral, "AB φ'")
    shown.append("AB generic (φ' has the sign of log t)")
    # AB limit forms in T = t^a_ (a_ ≠ 0, so T = 1 iff t = 1): KL generator at b_ = 0 (and
    # a_ = 0 with the roles exchanged), T − 1 − log T at a_ + b_ = 0, ½ log² t at the origin.
    big_t = sp.Symbol("T", positive=True)
    shown.append(
        _tangent_convex(big_t * sp.log(big_t) - big_t + 1, big_t, "AB at b_ = 0 or a_ = 0")
    )
    shown.append(_tangent_convex(big_t - 1 - sp.log(big_t), big_t, "AB at a_ + b_ = 0"))
    require(sp.solve(sp.Eq(sp.log(t) ** 2 / 2, 0), t) == [1], "AB at (0, 0)")
    shown.append("AB at (0, 0)")
    return ", ".join(shown)


def _zero_jeffreys() -> str:
    return _tangent_convex((T - 1) * sp.log(T), T, "Jeffreys")


def _zero_skew_kl() -> str:
    s_skew = 1 / (1 + K)  # any s ∈ (0, 1); s = 0 is KL
    skew = T * sp.log(T / (s_skew * T + 1 - s_skew)) - (1 - s_skew) * (T - 1)
    return _tangent_convex(skew, T, "skew KL, 0 < s < 1 (s = 0 is KL)")


#: The zero-iff-equal proof of each divergence by record name: a function proving that its
#: generator φ vanishes only at t = 1, returning what it showed. The proof iterates over the
#: records (the f-divergence, whose generator is the user's, has none); the registry tests
#: check that every record has one.
ZERO_GENERATORS: dict[str, Callable[[], str]] = {
    "kl": _zero_kl,
    "js": _zero_js,
    "tv": _zero_tv,
    "hellinger": _zero_hellinger,
    "chi2": _zero_chi2,
    "amari": _zero_amari,
    "renyi": _zero_renyi,
    "ab": _zero_ab,
    "jeffreys": _zero_jeffreys,
    "skew_kl": _zero_skew_kl,
}


def _sym_zero_iff_equal() -> str:
    names = [name for name, spec in SPECS.items() if not spec.no_cases]
    missing = [name for name in names if name not in ZERO_GENERATORS]
    require(
        not missing,
        f"no zero-iff-equal generator for {missing} (ZERO_GENERATORS in "
        "proofs_check/claims_divergences.py)",
    )
    shown = [ZERO_GENERATORS[name]() for name in names]
    return (
        "each divergence is Σ (positive weight)·φ(t), t = a/b (or a power of it), with φ ≥ 0 and "
        "φ(t) = 0 only at t = 1, shown by φ(1) = φ'(1) = 0 and φ'' > 0 or by the sign of φ': "
        + ", ".join(shown)
        + "; so D = 0 iff every t = 1 iff a = b (positive distributions)"
    )


#: The (divergence, params) cases of the numeric zero check: every record's "zero" sets
#: (amid_ref._specs), plus the f-divergence with a float generator (its record has none).
_ZERO_CASES = (
    *((spec.name, params) for spec in SPECS.values() for params in spec.cases_for("zero")),
    ("f", {"f": lambda u: u * np.log(u)}),
)


def _num_zero_iff_equal() -> str:
    _, _, p, q = distribution_pairs(8, 6, 52, scale=1.5)
    zero = DIV_TOL.atol
    names = set()
    for name, params in _ZERO_CASES:
        same = np.asarray(amid_ref.divergence(p, p, name, **params))
        require(bool(np.all(np.abs(same) <= zero)), f"{name} {params}: D(a, a) = {same.max()!r}")
        diff = np.asarray(amid_ref.divergence(p, q, name, **params))
        require(bool(np.all(diff > 1e-6)), f"{name} {params}: D(a, b) = {diff.min()!r} for a ≠ b")
        names.add(name)
    missing = set(amid_ref.DIVERGENCES) - names
    require(not missing, f"divergences without a cross-check: {sorted(missing)}")
    return (
        f"amid_ref.divergence is 0 (|D| ≤ {zero:g}) on equal and > 0 on unequal distributions for "
        f"{len(_ZERO_CASES)} (divergence, parameter) cases covering all of amid_ref.DIVERGENCES"
    )


# --- registry ------------------------------------------------------------------------------

CLAIMS: list[Claim] = [
    Claim(
        "divergence.amari.limit_minus1",
        r"\lim_{\gamma\to -1} D^{\mathrm{Amari}}_\gamma(a\|b) = \mathrm{KL}(a\|b)",
        SRC_AMARI,
        lambda: _sym_amari(-1),
        _num_amari(-1),
        backs=("divergence",),
    ),
    Claim(
        "divergence.amari.limit_plus1",
        r"\lim_{\gamma\to +1} D^{\mathrm{Amari}}_\gamma(a\|b) = \mathrm{KL}(b\|a)",
        SRC_AMARI,
        lambda: _sym_amari(+1),
        _num_amari(+1),
        backs=("divergence",),
    ),
    Claim(
        "divergence.renyi.limit_1",
        r"\lim_{\rho\to 1} \tfrac{1}{\rho-1}\log\sum_x a^\rho b^{1-\rho} = \mathrm{KL}(a\|b)",
        SRC_RENYI,
        _sym_renyi,
        _num_renyi,
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.kl_forward",
        r"D_{AB}^{(1,0)}(x\|y) = \lim_{b_*\to 0} D_{AB}^{(1,b_*)}(x\|y) = \mathrm{KL}(x\|y)",
        SRC_AB,
        _sym_ab_forward,
        _num_ab("forward"),
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.kl_reverse",
        r"D_{AB}^{(0,1)}(x\|y) = \lim_{a_*\to 0} D_{AB}^{(a_*,1)}(x\|y) = \mathrm{KL}(y\|x)",
        SRC_AB,
        _sym_ab_reverse,
        _num_ab("reverse"),
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.limit_a0",
        r"\lim_{a_*\to 0} D_{AB}^{(a_*,b_*)} ="
        r" \tfrac{1}{b_*^2}\sum\big(y^{b_*}\log\tfrac{y^{b_*}}{x^{b_*}} - y^{b_*} + x^{b_*}\big)",
        SRC_AB,
        _sym_ab_a0,
        _num_ab("a0"),
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.limit_b0",
        r"\lim_{b_*\to 0} D_{AB}^{(a_*,b_*)} ="
        r" \tfrac{1}{a_*^2}\sum\big(x^{a_*}\log\tfrac{x^{a_*}}{y^{a_*}} - x^{a_*} + y^{a_*}\big)",
        SRC_AB,
        _sym_ab_b0,
        _num_ab("b0"),
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.limit_sum0",
        r"\lim_{b_*\to -a_*} D_{AB}^{(a_*,b_*)} ="
        r" \tfrac{1}{a_*^2}\sum\big(\log\tfrac{y^{a_*}}{x^{a_*}} + \tfrac{x^{a_*}}{y^{a_*}} -"
        r" 1\big)",
        SRC_AB,
        _sym_ab_sum0,
        _num_ab("sum0"),
        backs=("divergence",),
    ),
    Claim(
        "divergence.ab.limit_origin",
        r"\lim_{(a_*,b_*)\to(0,0)} D_{AB}^{(a_*,b_*)} = \tfrac12\sum(\log x - \log y)^2",
        SRC_AB,
        _sym_ab_origin,
        _num_ab("origin"),
        scope=PROVED_FOR_CASES,
        cases="limits along every ray from (0, 0); the joint two-variable limit is not checked "
        "symbolically",
        backs=("divergence",),
    ),
    Claim(
        "divergence.jeffreys.symmetric_kl",
        r"J(a\|b) = \sum_x (a-b)\log\tfrac{a}{b} = \mathrm{KL}(a\|b) + \mathrm{KL}(b\|a)"
        r" = J(b\|a)",
        SRC_JEFFREYS,
        _sym_jeffreys,
        _num_jeffreys,
        backs=("divergence",),
    ),
    Claim(
        "divergence.skew_kl.kl_at_zero",
        r"\mathrm{KL}_s(a\|b) = \mathrm{KL}(a\|s a + (1-s) b) \to \mathrm{KL}(a\|b)"
        r"\ (s \to 0)",
        SRC_SKEW,
        _sym_skew_at_zero,
        _num_skew_at_zero,
        backs=("divergence",),
    ),
    Claim(
        "divergence.skew_kl.bounded",
        r"0 < s < 1:\ 0 \le \mathrm{KL}_s(a\|b) \le \log(1/s)",
        SRC_SKEW,
        _sym_skew_bounded,
        _num_skew_bounded,
        backs=("divergence",),
    ),
    Claim(
        "divergence.zero_iff_equal",
        r"a,b>0:\ D(a\|b)=0 \iff a=b \text{ for KL, JS}_\beta,\ \text{TV, Hellinger}^2,\ \chi^2,"
        r"\ \text{Amari}_\gamma,\ \text{Rényi}_{\rho>0},\ \text{AB}_{(a_*,b_*)},"
        r"\ \text{Jeffreys},\ \mathrm{KL}_{s\in[0,1)}",
        "textbook (Csiszár 1967; Cichocki, Cruces & Amari 2011); mathematics page, Divergences",
        _sym_zero_iff_equal,
        _num_zero_iff_equal,
        PROVED,
        backs=("divergence",),
    ),
]
