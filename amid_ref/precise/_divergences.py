"""Divergences in mpmath: one row function per record of the contract.

The mirror of :mod:`amid_ref._divergences`: each row function is a plain sum of the
defining terms (:func:`mpmath.fsum`), the limit members closed forms at the exact limit
parameters, registered by name in :data:`ROW_FUNCTIONS`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import mpmath
import numpy as np
from mpmath import mp, mpf

from amid_ref._specs import SPECS, get_spec, resolve_params
from amid_ref.precise._common import (
    _INF,
    _NINF,
    DIVERGENCE_GUARD_DIGITS,
    PARAMETER_DPS,
    _check_dps,
    _digits_lost,
    _object_array,
    _param,
    _prepare_pair,
    _rows,
    _scalar_or_array,
)

DIVERGENCES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.offered_by("precise"))
"""The divergences of the contract (:data:`amid_ref._specs.SPECS`), in its order: the names
:func:`divergence` and :func:`amid_loss` accept, the same as :data:`amid_ref.DIVERGENCES`."""


# --------------------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------------------


def _kl_row(a: list, b: list) -> mpf:
    r"""KL(a‖b) = Σ a log(a/b); a = 0 contributes 0, a > 0 = b gives +inf."""
    log = mpmath.log
    terms = []
    for x, y in zip(a, b, strict=True):
        if x == 0:
            continue
        if y == 0:
            return _INF
        terms.append(x * log(x / y))
    return mpmath.fsum(terms)


def _generalized_kl_row(a: list, b: list) -> mpf:
    """Σ [a log(a/b) − a + b] (the measure form; a = 0 contributes b)."""
    log = mpmath.log
    terms = []
    for x, y in zip(a, b, strict=True):
        if x == 0:
            terms.append(y)
            continue
        if y == 0:
            return _INF
        terms.append(x * log(x / y) - x + y)
    return mpmath.fsum(terms)


def _power(x: mpf, e: mpf) -> mpf:
    """x^e for x ≥ 0 with 0^e = 0 (e > 0), 1 (e = 0), +inf (e < 0)."""
    if x == 0:
        if e > 0:
            return mpf(0)
        return mpf(1) if e == 0 else _INF
    return mpmath.power(x, e)


def _js_row_fn(beta: mpf):
    if not 0 <= beta <= 1:
        raise ValueError(f"js parameter beta must lie in [0, 1], got {beta}")

    def js(a, b):
        if beta == 0 or beta == 1:
            return mpf(0)
        m = [beta * x + (1 - beta) * y for x, y in zip(a, b, strict=True)]
        return beta * _kl_row(a, m) + (1 - beta) * _kl_row(b, m)

    return js, 0


def _tv_row(a, b):
    return mpmath.fsum(abs(x - y) for x, y in zip(a, b, strict=True)) / 2


def _hellinger_row(a, b):
    sqrt = mpmath.sqrt
    return mpmath.fsum((sqrt(x) - sqrt(y)) ** 2 for x, y in zip(a, b, strict=True)) / 2


def _chi2_row(a, b):
    terms = []
    for x, y in zip(a, b, strict=True):
        if y == 0:
            if x == 0:
                continue
            return _INF
        terms.append((x - y) ** 2 / y)
    return mpmath.fsum(terms)


def _amari_row_fn(gamma: mpf):
    if gamma == -1:
        return _generalized_kl_row, 0
    if gamma == 1:
        return (lambda a, b: _generalized_kl_row(b, a)), 0
    u = (1 - gamma) / 2  # exponent of a
    v = (1 + gamma) / 2  # exponent of b
    extra = _digits_lost(u) + _digits_lost(v)

    def amari(a, b):
        scale = 4 / ((1 - gamma) * (1 + gamma))
        terms = []
        for x, y in zip(a, b, strict=True):
            if x == 0 and y == 0:
                continue
            terms.append(u * x + v * y - _power(x, u) * _power(y, v))
        return scale * mpmath.fsum(terms)

    return amari, extra


def _normalized(a: list, name: str) -> list:
    s = mpmath.fsum(a)
    if s == 0:
        raise ValueError(f"renyi: {name} sums to 0 and cannot be normalized")
    return [x / s for x in a]


def _renyi_row_fn(rho: mpf):
    if rho == 1:
        return (lambda a, b: _kl_row(_normalized(a, "a"), _normalized(b, "b"))), 0

    def renyi(a, b):
        a = _normalized(a, "a")
        b = _normalized(b, "b")
        terms = []
        for x, y in zip(a, b, strict=True):
            if x == 0:
                continue  # terms with a(x) = 0 contribute 0, for every order
            if y == 0:
                if rho > 1:
                    return _INF  # a^ρ b^(1−ρ) = +inf and 1/(ρ−1) > 0
                continue  # b^(1−ρ) = 0 for ρ < 1
            terms.append(mpmath.power(x, rho) * mpmath.power(y, 1 - rho))
        s = mpmath.fsum(terms)
        if s == 0:
            return _INF
        return mpmath.log(s) / (rho - 1)

    return renyi, _digits_lost(rho - 1)


def _ab_row_fn(a_: mpf, b_: mpf):
    s_ = a_ + b_
    log, power = mpmath.log, mpmath.power
    extra = _digits_lost(a_) + _digits_lost(b_) + _digits_lost(s_)

    if a_ == 0 and b_ == 0:

        def positive_term(x, y):
            return (log(x) - log(y)) ** 2 / 2

    elif a_ == 0:

        def positive_term(x, y):
            xb, yb = power(x, b_), power(y, b_)
            return (xb - yb - yb * b_ * (log(x) - log(y))) / b_**2

    elif b_ == 0:

        def positive_term(x, y):
            xa, ya = power(x, a_), power(y, a_)
            return (ya - xa - xa * a_ * (log(y) - log(x))) / a_**2

    elif s_ == 0:

        def positive_term(x, y):
            # 1/a² [log(y^a/x^a) + (y^a/x^a)^(−1) − 1]
            return (a_ * (log(y) - log(x)) + power(x / y, a_) - 1) / a_**2

    else:

        def positive_term(x, y):
            t = power(x, a_) * power(y, b_) - a_ / s_ * power(x, s_) - b_ / s_ * power(y, s_)
            return -t / (a_ * b_)

    def ab(a, b):
        terms = []
        for x, y in zip(a, b, strict=True):
            if x == 0 and y == 0:
                continue
            if x == 0:
                if a_ > 0 and s_ > 0:
                    terms.append(power(y, s_) / (a_ * s_))
                    continue
                return _INF
            if y == 0:
                if b_ > 0 and s_ > 0:
                    terms.append(power(x, s_) / (b_ * s_))
                    continue
                return _INF
            if s_ < 0:
                # Each power x^(a_+b_) is huge for tiny x and the term is their cancellation:
                # the term is homogeneous of degree a_ + b_, so it is y^(a_+b_) times the term
                # at (x/y, 1), whose powers are of the size of the term's own cancellation
                # (mpmath's exponent range holds y^(a_+b_)). Adding the largest power's digits
                # instead took 55 000 digits (and minutes) for a log-probability of −66 700.
                terms.append(power(y, s_) * positive_term(x / y, mpf(1)))
                continue
            terms.append(positive_term(x, y))
        return mpmath.fsum(terms)

    return ab, extra


def _f_row_fn(f, f_inf_slope):
    if not callable(f):
        raise TypeError(f"f-divergence parameter f must be callable, got {f!r}")

    def call(u):
        try:
            val = f(u)
        except (TypeError, AttributeError) as exc:
            raise TypeError(
                "the oracle calls the f-divergence generator f on mpmath mpf scalars and it "
                f"failed ({exc}); write f with mpmath functions (e.g. mpmath.log)"
            ) from exc
        if isinstance(val, np.ndarray) and val.ndim == 0 and val.dtype == object:
            val = val[()]
        if isinstance(val, numbers.Integral) and not isinstance(val, bool):
            val = mpf(int(val))
        if not isinstance(val, mpf):
            raise TypeError(
                f"the f-divergence generator returned {type(val).__name__} on an mpf input; "
                "the oracle needs an mpf result (a float would silently lose precision)"
            )
        if mpmath.isnan(val):
            raise ValueError(f"the f-divergence generator f returned NaN at u = {u}")
        if val == _NINF:
            raise ValueError(
                f"the f-divergence generator f returned -inf at u = {u}; a convex f with "
                "f(1) = 0 is > -inf everywhere"
            )
        return val

    def f_div(a, b):
        terms = []
        for x, y in zip(a, b, strict=True):
            if y == 0:
                if x == 0:
                    continue
                terms.append(x * f_inf_slope)
                continue
            terms.append(y * call(x / y))
        return mpmath.fsum(terms)

    return f_div, 0


def _jeffreys_row(a, b):
    r"""J(a‖b) = Σ (a − b) log(a/b); a = b = 0 contributes 0, a zero of one only gives +inf."""
    terms = []
    for x, y in zip(a, b, strict=True):
        if x == 0 and y == 0:
            continue
        if x == 0 or y == 0:
            return _INF
        terms.append((x - y) * mpmath.log(x / y))
    return mpmath.fsum(terms)


def _skew_kl_row_fn(skew: mpf):
    def skew_kl(a, b):
        m = [skew * x + (1 - skew) * y for x, y in zip(a, b, strict=True)]
        return _kl_row(a, m)

    return skew_kl, 0


def _divergence_row_fn(name: str, params: dict) -> tuple[Callable, int]:
    """The row function ``(a, b) -> D(a‖b)`` (lists of mpf) and the extra digits it needs.

    Quantities derived from the parameters are formed at :data:`PARAMETER_DPS` digits
    (exactly); the row function itself computes at the caller's working precision.
    """
    with mp.workdps(PARAMETER_DPS):
        return _divergence_row_fn_exact(name, params)


def _divergence_row_fn_exact(name: str, params: dict) -> tuple[Callable, int]:
    spec = get_spec(name, "precise")
    values = resolve_params(spec, params, real=_param, float_path=False)
    return ROW_FUNCTIONS[spec.name](values)


#: Divergence name -> builder of ``(row function, extra digits)`` from the checked ``mpf``
#: parameters: each an independent mpmath transcription of the definition, registered
#: against the contract's records (tests/test_registry.py checks that every record has one).
ROW_FUNCTIONS: dict[str, Callable[[dict], tuple[Callable, int]]] = {
    "kl": lambda p: (_kl_row, 0),
    "js": lambda p: _js_row_fn(p["beta"]),
    "tv": lambda p: (_tv_row, 0),
    "hellinger": lambda p: (_hellinger_row, 0),
    "chi2": lambda p: (_chi2_row, 0),
    "amari": lambda p: _amari_row_fn(p["alpha"]),
    "renyi": lambda p: _renyi_row_fn(p["order"]),
    "ab": lambda p: _ab_row_fn(p["alpha"], p["beta"]),
    "f": lambda p: _f_row_fn(p["f"], p["f_inf_slope"]),
    "jeffreys": lambda p: (_jeffreys_row, 0),
    "skew_kl": lambda p: _skew_kl_row_fn(p["skew"]),
}


def divergence(
    a, b, name: str, axis: int = -1, log_input: bool = False, *, dps: int = 50, **params
):
    r"""Divergence :math:`D(a \| b)` reduced over ``axis``, to ``dps`` digits.

    .. math::

        \mathrm{KL}(a\|b) = \sum_x a \log\frac{a}{b},\quad
        \mathrm{JS}_\beta = \beta\,\mathrm{KL}(a\|m) + (1-\beta)\,\mathrm{KL}(b\|m),\
        m = \beta a + (1-\beta) b,

    .. math::

        \mathrm{TV} = \tfrac12\sum|a-b|,\quad
        H^2 = \tfrac12\sum(\sqrt a - \sqrt b)^2,\quad
        \chi^2 = \sum\frac{(a-b)^2}{b},\quad
        D_f = \sum b\, f(a/b),

    .. math::

        D^{\mathrm{Amari}}_\gamma = \frac{4}{1-\gamma^2}\sum\Big[\tfrac{1-\gamma}{2}a
            + \tfrac{1+\gamma}{2}b - a^{\frac{1-\gamma}{2}} b^{\frac{1+\gamma}{2}}\Big],\quad
        D^{\mathrm{R}}_\rho = \frac{1}{\rho-1}\log\sum \hat a^\rho \hat b^{1-\rho},

    .. math::

        D_{AB}^{(a_\star, b_\star)} = -\frac{1}{a_\star b_\star}\sum\Big(x^{a_\star} y^{b_\star}
            - \tfrac{a_\star}{a_\star+b_\star} x^{a_\star+b_\star}
            - \tfrac{b_\star}{a_\star+b_\star} y^{a_\star+b_\star}\Big).

    Parameters
    ----------
    a, b : array_like of float (or of mpf), shape (..., V)
        Non-negative arguments (or log-arguments with ``log_input=True``, ``-inf`` = 0),
        broadcast together.
    name : str
        One of :data:`DIVERGENCES`.
    axis : int
        Reduction axis.
    log_input : bool
        Whether ``a``, ``b`` are logarithms.
    dps : int
        Decimal digits.
    **params
        The record's parameters (:data:`amid_ref._specs.SPECS`, the divergence table of the
        mathematics page), checked by the same rules as :func:`amid_ref.divergence` and
        converted exactly to ``mpf``; e.g. ``beta`` for ``"js"``. The generator ``f`` of
        ``"f"`` is called on ``mpf`` scalars, so write it with mpmath functions;
        ``f_prime`` is accepted for API symmetry and unused.

    Returns
    -------
    mpf or ndarray of mpf
        Shape of the broadcast inputs without ``axis``.

    Notes
    -----
    Zero conventions (mathematics page): KL-type terms with a = 0 contribute 0, a > 0 = b gives
    +inf; χ²: b = 0 < a gives +inf, a = b = 0 contributes 0. Amari: the literal terms with
    ``0^e = 0`` (e > 0) / ``+inf`` (e < 0); γ = −1 is the generalized KL
    ``Σ [a log(a/b) − a + b]`` [claim: divergence.amari.limit_minus1], γ = +1 its mirror
    ``Σ [b log(b/a) − b + a]`` [claim: divergence.amari.limit_plus1]. Rényi: inputs are
    normalized first; terms with a = 0 contribute 0 for every order; a > 0 = b gives 0
    (ρ < 1) or +inf (ρ > 1); a zero sum gives +inf; ρ = 1 is KL
    [claim: divergence.renyi.limit_1]. AB (:math:`a_\star` = ``alpha``, :math:`b_\star` =
    ``beta``): closed forms at the exact limits
    [claim: divergence.ab.limit_a0] [claim: divergence.ab.limit_b0]
    [claim: divergence.ab.limit_sum0]

    * :math:`a_\star = 0`: :math:`b_\star^{-2}\sum(x^{b_\star} - y^{b_\star} -
      y^{b_\star}\log(x^{b_\star}/y^{b_\star}))`,
    * :math:`b_\star = 0`: :math:`a_\star^{-2}\sum(y^{a_\star} - x^{a_\star} -
      x^{a_\star}\log(y^{a_\star}/x^{a_\star}))`,
    * :math:`a_\star + b_\star = 0`: :math:`a_\star^{-2}\sum(\log(y^{a_\star}/x^{a_\star}) +
      (x/y)^{a_\star} - 1)`,
    * (0, 0): :math:`\tfrac12\sum(\log x - \log y)^2`;

    (1, 0) is the generalized KL(x‖y) and (0, 1) the generalized KL(y‖x)
    [claim: divergence.ab.kl_forward] [claim: divergence.ab.kl_reverse]; x = 0 < y gives
    ``y^λ/(a_ λ)`` (λ = a_ + b_) when a_ > 0 and λ > 0, else +inf, symmetrically for
    y = 0 < x. f: b = 0 < a gives ``a·f_inf_slope``, a = b = 0 contributes 0. Near a limit
    the literal formula is used at a precision raised by the digits it loses.

    References
    ----------
    The divergences of the AMiD loss (Theorem 3.4) and of its gradient (Proposition 3.5).

    See Also
    --------
    amid_ref.divergence : the float64 implementation this oracle checks.
    gpu.divergence : the torch implementation.

    Examples
    --------
    >>> from amid_ref import precise
    >>> float(precise.to_float(precise.divergence([0.5, 0.5], [0.9, 0.1], "kl")))
    0.5108256237659906
    """
    dps = _check_dps(dps)
    if not isinstance(log_input, bool | np.bool_):
        raise TypeError(f"log_input must be a bool, got {log_input!r}")
    row_fn, extra = _divergence_row_fn(name, params)
    with mp.workdps(dps + DIVERGENCE_GUARD_DIGITS + extra):
        xa, xb = _prepare_pair(a, b, ("a", "b"), log_domain=bool(log_input))
        rows_a, moved = _rows(xa, axis)
        rows_b, _ = _rows(xb, axis)
        if log_input:
            exp = mpmath.exp
            rows_a = [[exp(v) for v in row] for row in rows_a]
            rows_b = [[exp(v) for v in row] for row in rows_b]
        out = [row_fn(x, y) for x, y in zip(rows_a, rows_b, strict=True)]
    return _scalar_or_array(_object_array(out, moved[:-1]))
