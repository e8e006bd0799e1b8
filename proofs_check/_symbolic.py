"""SymPy helpers shared by the claims: the objects of the mathematics page as expressions, and
proof steps that either establish a fact or raise :class:`ClaimFailed` (never "probably true").

Nothing here tests equality numerically: ``Expr.equals`` (which may decide by evaluating at
random points) is never used. An identity holds only when a chain of symbolic rewrites
reduces ``lhs - rhs`` to the literal ``0``; a sign holds only when SymPy's assumption system
answers ``True``.
"""

from __future__ import annotations

import sympy as sp

from proofs_check._core import ClaimFailed

__all__ = [
    "alpha_of_beta",
    "amari_term",
    "beta_of_alpha",
    "power_mean",
    "prove_limit",
    "prove_negative",
    "prove_positive",
    "prove_zero",
    "require",
    "short",
]


def short(expr, limit: int = 160) -> str:
    """``str(expr)`` cut to ``limit`` characters, for failure messages."""
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def require(condition: bool, message: str) -> None:
    """Raise :class:`ClaimFailed` with ``message`` unless ``condition`` is exactly ``True``."""
    if condition is not True:
        raise ClaimFailed(message)


_REWRITES = (
    lambda e: e,
    sp.expand_power_base,
    sp.factor_terms,
    sp.expand_power_base,
    sp.powdenest,
    lambda e: sp.expand_log(e, force=False),
    sp.cancel,
    sp.simplify,
)


def prove_zero(expr, what: str) -> str:
    """Show ``expr`` is identically 0 under the symbols' assumptions, or raise.

    The rewrites are cheap first (power-base expansion, denesting, cancellation), then
    ``simplify``; each keeps the expression equal to the input, so reaching the literal 0
    is a proof.
    """
    e = sp.sympify(expr)
    for rewrite in _REWRITES:
        e = rewrite(e)
        if e == 0:
            return what
    raise ClaimFailed(f"{what}: not shown to be 0; SymPy is left with {short(e)}")


def prove_positive(expr, what: str) -> str:
    """Show ``expr > 0`` under the symbols' assumptions, or raise."""
    e = sp.sympify(expr)
    for candidate in (e, sp.factor_terms(e), sp.simplify(e)):
        if candidate.is_positive is True:
            return what
    raise ClaimFailed(f"{what}: SymPy cannot show {short(e)} > 0")


def prove_negative(expr, what: str) -> str:
    """Show ``expr < 0`` under the symbols' assumptions, or raise."""
    e = sp.sympify(expr)
    for candidate in (e, sp.factor_terms(e), sp.simplify(e)):
        if candidate.is_negative is True:
            return what
    raise ClaimFailed(f"{what}: SymPy cannot show {short(e)} < 0")


def prove_limit(expr, var, point, expected, what: str, direction: str = "+-") -> str:
    """Show ``lim_{var -> point} expr == expected`` (two-sided by default), or raise.

    For ``point = ±oo`` the direction is implied and ``direction`` is ignored.
    """
    if point in (sp.oo, -sp.oo):
        directions = ["-" if point == sp.oo else "+"]
    elif direction == "+-":
        directions = ["+", "-"]
    else:
        directions = [direction]
    for d in directions:
        value = sp.limit(expr, var, point, d)
        if value.has(sp.nan, sp.zoo) or isinstance(value, sp.Limit):
            raise ClaimFailed(f"{what}: SymPy could not evaluate the limit ({d}): {short(value)}")
        prove_zero(value - expected, f"{what} ({d})")
    return what


def beta_of_alpha(alpha):
    """β = (1 − α)/2, the exponent of the power mean."""
    return (1 - alpha) / 2


def alpha_of_beta(beta):
    """α = 1 − 2β."""
    return 1 - 2 * beta


def power_mean(a, b, lam, beta, mu=None):
    r"""The weighted power mean :math:`(\lambda a^\beta + \mu b^\beta)^{1/\beta}`,
    ``mu = 1 − lam`` unless given (independent positive weights give a stronger statement
    where the identity does not need :math:`\lambda + \mu = 1`)."""
    if mu is None:
        mu = 1 - lam
    return (lam * a**beta + mu * b**beta) ** (1 / beta)


def amari_term(a, b, gamma):
    r"""One term of Amari's α-divergence with parameter γ (mathematics page):
    :math:`\frac{4}{1-\gamma^2}\big[\frac{1-\gamma}{2}a + \frac{1+\gamma}{2}b
    - a^{(1-\gamma)/2} b^{(1+\gamma)/2}\big]`."""
    return (
        4
        / (1 - gamma**2)
        * (
            (1 - gamma) / 2 * a
            + (1 + gamma) / 2 * b
            - a ** ((1 - gamma) / 2) * b ** ((1 + gamma) / 2)
        )
    )
