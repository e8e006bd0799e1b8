"""Negative controls: deliberately false claims, each a plausible mistake, that the checker
must report as ``"failed"``. They show that both stages can say no: most fail in the
symbolic stage; ``negative.numeric.alpha_sign_convention`` has a true symbolic statement
and fails only because the implementation is evaluated under the wrong convention.

They are registered in :data:`proofs_check.NEGATIVE_CONTROLS`, never in
:data:`proofs_check.CLAIMS`, so ``python -m proofs_check`` passes.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

import amid_ref
from proofs_check._core import Claim
from proofs_check._numeric import check_log, log_pairs, mp_function, mp_values
from proofs_check._symbolic import (
    amari_term,
    beta_of_alpha,
    power_mean,
    prove_limit,
    prove_negative,
    prove_zero,
    require,
)

__all__ = ["CLAIMS"]

A, B = sp.symbols("a b", positive=True)
LAM = sp.Symbol("lambda", positive=True)
ALPHA = sp.Symbol("alpha", real=True)
BETA = sp.Symbol("beta", real=True, nonzero=True)
MEAN = power_mean(A, B, LAM, beta_of_alpha(ALPHA))
ARITHMETIC = LAM * A + (1 - LAM) * B


def _numeric_mean_against(target, alpha: float):
    """amid_ref.log_alpha_mean at ``alpha`` against ``target`` (a SymPy expression)."""

    def check_numeric() -> str:
        exact = mp_function(sp.log(target), (A, B, LAM))
        la, lb = log_pairs(8, 91)
        for lam in (0.1, 0.5):
            want = mp_values(exact, np.exp(la), np.exp(lb), lam)
            check_log(amid_ref.log_alpha_mean(la, lb, alpha, lam), want, f"α={alpha}")
        return f"log_alpha_mean at α={alpha} matches"

    return check_numeric


def _sym_alpha1_arithmetic() -> str:
    return prove_limit(MEAN, ALPHA, 1, ARITHMETIC, "lim_{α→1} m_α = λa + (1−λ)b")


def _sym_plus_inf_max() -> str:
    s = sp.Symbol("s", positive=True)
    b = sp.Symbol("beta_", real=True)
    m = (LAM * sp.exp(-s) ** b + (1 - LAM)) ** (1 / b)
    return prove_limit(m, b, -sp.oo, 1, "β → −∞: M(e^(−s), 1) → max(e^(−s), 1) = 1")


def _sym_increasing_in_alpha() -> str:
    k = sp.Symbol("k", positive=True)
    x = sp.Symbol("x", real=True)
    lam = 1 / (1 + k)
    kfun = sp.log(lam * sp.exp(x) + 1 - lam)
    return prove_negative(sp.diff(kfun, x, 2), "K'' < 0 (would make m_α increasing in α)")


def _sym_amari_swapped() -> str:
    want = B * sp.log(B / A) - B + A  # KL(b‖a): the swap of one published library
    gamma = sp.Symbol("gamma", real=True)
    return prove_limit(amari_term(A, B, gamma), gamma, -1, want, "γ → −1 gives KL(b‖a)")


def _sym_ab_wrong_power() -> str:
    x, y = sp.symbols("X Y", real=True)
    a_, b_ = sp.symbols("a_ b_", real=True, nonzero=True)
    s = a_ + b_
    term = (
        -1 / (a_ * b_) * (sp.exp(a_ * x + b_ * y) - a_ / s * sp.exp(s * x) - b_ / s * sp.exp(s * y))
    )
    wrong = (
        sp.exp(b_ * y) * b_ * (y - x) - sp.exp(b_ * y) + sp.exp(b_ * x)
    ) / b_  # 1/b_, not 1/b_²
    return prove_limit(term, a_, 0, wrong, "a_ → 0 limit with the 1/b_ prefactor", "+")


def _sym_weight_teacher() -> str:
    u, v = sp.symbols("u v", real=True)
    log_m = sp.log(LAM * sp.exp(BETA * u) + (1 - LAM) * sp.exp(BETA * v)) / BETA
    teacher_share = LAM * sp.exp(BETA * u) / (LAM * sp.exp(BETA * u) + (1 - LAM) * sp.exp(BETA * v))
    return prove_zero(sp.diff(log_m, v) - teacher_share, "w = λp^β/(λp^β + (1−λ)q^β)")


def _sym_no_full_support() -> str:
    half, quarter = sp.Rational(1, 2), sp.Rational(1, 4)
    p = [half, half, 0]
    q = [quarter, quarter, half]
    # α = 3 (β = −1): m = 1/(λ/p + (1−λ)/q), with m = 0 where p = 0 (limit p → 0⁺).
    x = sp.Symbol("x", positive=True)
    m = []
    for pi, qi in zip(p, q, strict=True):
        expr = 1 / (LAM / x + (1 - LAM) / qi)
        m.append(sp.limit(expr, x, 0, "+") if pi == 0 else expr.subs(x, pi))
    r = [sp.simplify(mi / sum(m)) for mi in m]
    require(r == p, f"(setup) expected r = p, got {r}")
    require(q == p, "r = p but q ≠ p: the 'only if' fails without full support")
    return "r = p ⇒ q = p"


CLAIMS: list[Claim] = [
    Claim(
        "negative.mean.alpha_to_1_arithmetic",
        r"\lim_{\alpha\to 1} m_\alpha(a,b;\lambda) = \lambda a + (1-\lambda) b \quad\text{(FALSE:"
        r" it is geometric)}",
        "negative control",
        _sym_alpha1_arithmetic,
        _numeric_mean_against(ARITHMETIC, 1.0),
    ),
    Claim(
        "negative.mean.alpha_to_plus_inf_max",
        r"\lim_{\alpha\to +\infty} m_\alpha(a,b;\lambda) = \max(a,b) \quad\text{(FALSE: it is"
        r" min)}",
        "negative control",
        _sym_plus_inf_max,
        lambda: "not reached",
    ),
    Claim(
        "negative.mean.increasing_in_alpha",
        r"\partial m_\alpha/\partial\alpha \ge 0 \quad\text{(FALSE: power-mean inequality"
        r" reversed)}",
        "negative control",
        _sym_increasing_in_alpha,
        lambda: "not reached",
    ),
    Claim(
        "negative.divergence.amari_swapped",
        r"\lim_{\gamma\to -1} D^{\mathrm{Amari}}_\gamma(a\|b) = \mathrm{KL}(b\|a)"
        r" \quad\text{(FALSE: a published swap)}",
        "negative control",
        _sym_amari_swapped,
        lambda: "not reached",
    ),
    Claim(
        "negative.divergence.ab_limit_wrong_power",
        r"\lim_{a_*\to 0} D_{AB} = \tfrac{1}{b_*}\sum(\dots) \quad\text{(FALSE: the prefactor is"
        r" } 1/b_*^2)",
        "negative control",
        _sym_ab_wrong_power,
        lambda: "not reached",
    ),
    Claim(
        "negative.prop_3_5.teacher_weight",
        r"\partial\log m_\alpha/\partial\log q = \lambda p^\beta/(\lambda p^\beta +"
        r" (1-\lambda)q^\beta) \quad\text{(FALSE)}",
        "negative control",
        _sym_weight_teacher,
        lambda: "not reached",
    ),
    Claim(
        "negative.theorem_3_4.without_full_support",
        r"\alpha = 3,\ p\not>0:\ r^{(\alpha,\lambda)} = p \Rightarrow q = p \quad\text{(FALSE)}",
        "negative control",
        _sym_no_full_support,
        lambda: "not reached",
    ),
    Claim(
        "negative.numeric.alpha_sign_convention",
        r"m_{3}(a,b;\lambda) = (\lambda/a + (1-\lambda)/b)^{-1} \text{, checked against amid\_ref"
        r" at } \alpha = -3 \quad\text{(FALSE pairing)}",
        "negative control (true statement, implementation evaluated under the flipped α sign)",
        lambda: prove_zero(
            MEAN.subs(ALPHA, 3) - 1 / (LAM / A + (1 - LAM) / B), "m_3 is the harmonic mean"
        ),
        _numeric_mean_against(1 / (LAM / A + (1 - LAM) / B), -3.0),
    ),
]
