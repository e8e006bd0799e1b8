"""Arbitrary-precision oracle for :mod:`amid_ref` (mpmath).

Every float64 function of :mod:`amid_ref` is checked against the function of the same name
here. To be a real check the oracle shares no code and no numerical identity with the float
modules: it is a literal transcription of the definitions in ``MATH.md``, evaluated in mpmath
at ``dps`` decimal digits plus enough guard digits to absorb every cancellation of the
literal formulas.

* The α-mean is the power mean :math:`(\\lambda a^\\beta + (1-\\lambda) b^\\beta)^{1/\\beta}`
  with :math:`a^\\beta = e^{\\beta \\log a}` (no log1p/expm1 pivots); its limits
  (α = 1 geometric, α = ∓inf max/min, λ ∈ {0, 1}) are their closed forms at the exact
  parameter values. Near α = 1 the literal formula loses ``log10(1/|β|)`` digits, which are
  added to the working precision.
* Divergences are plain sums (:func:`mpmath.fsum`) of their defining terms; limit members
  (Amari γ = ±1, Rényi ρ = 1, the AB-divergence at a_ = 0, b_ = 0, a_ + b_ = 0) are their
  closed forms at the exact limit parameter and the literal formula elsewhere, with the
  precision raised by the digits the literal formula loses near the limit.
* :func:`amid_grad` differentiates :func:`amid_loss` numerically (central differences with
  a step of about ``10**-(dps/2 + 10)`` at raised precision), an identity independent of the
  analytic gradient of Proposition 3.5.

Inputs are float64 scalars or arrays (Python floats, lists, NumPy arrays), converted exactly
to ``mpf``; object arrays of ``mpf`` are accepted too (tests use them to step below float64
resolution), as are ``mpf`` parameters (α, λ, divergence parameters). Outputs are NumPy
object arrays of ``mpf`` (0-d results are plain ``mpf``); :func:`to_float` rounds them to
float64.

The oracle is written for correctness first: it loops over elements in Python (about
50-100 µs per element and operation) and :func:`amid_grad` costs ``O(V²)`` per row.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import mpmath
import numpy as np
from mpmath import mp, mpf

from amid_ref._specs import ORDERS as _CONTRACT_ORDERS
from amid_ref._specs import SPECS, as_real_scalar, get_spec, order_arguments, resolve_params
from amid_ref._validation import tensor_to_numpy

__all__ = [
    "DIVERGENCES",
    "ORDERS",
    "alpha_mean",
    "alpha_mixture",
    "alpha_mixture_normalizer",
    "alpha_mixture_weight",
    "amid_grad",
    "amid_loss",
    "divergence",
    "log_alpha_mean",
    "log_alpha_mixture",
    "to_float",
]

#: The divergences of the contract (:data:`amid_ref._specs.SPECS`), in its order.
DIVERGENCES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.offered_by("precise"))
#: The argument orders of the contract.
ORDERS: tuple[str, ...] = tuple(_CONTRACT_ORDERS)

#: Guard digits added to ``dps`` for the α-mean and the mixtures.
MEAN_GUARD_DIGITS = 15
#: Guard digits of :func:`amid_grad` on top of ``dps`` + the step's digits: there only the
#: absolute error of the loss matters (it is divided by the step).
GRADIENT_GUARD_DIGITS = 20
#: Guard digits added to ``dps`` for divergences and losses: a divergence of two float64
#: distributions that differ in the last bit is a sum of O(1) terms cancelling to O(1e-32).
DIVERGENCE_GUARD_DIGITS = 40

#: Precision (decimal digits) at which quantities derived from the parameters alone
#: (β = (1−α)/2, a_ + b_, (1∓γ)/2, ...) are formed, before the working precision is known:
#: enough to make them exact for float64 parameters and for mpf parameters of up to
#: ~1000 bits within 2**-2000 of a limit.
PARAMETER_DPS = 1000

_INF = mpf("inf")
_NINF = mpf("-inf")


# --------------------------------------------------------------------------------------
# conversion and validation
# --------------------------------------------------------------------------------------


def _check_dps(dps) -> int:
    if isinstance(dps, bool) or not isinstance(dps, numbers.Integral):
        raise TypeError(f"dps must be an int, got {dps!r}")
    if dps < 16:
        raise ValueError(f"dps must be at least 16 (float64 needs 17 digits), got {dps}")
    return int(dps)


def _param(value, name: str, *, allow_inf: bool = False) -> mpf:
    """A scalar parameter as an exact ``mpf`` (floats are converted exactly)."""
    if isinstance(value, mpf):
        x = value
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        x = mpf(int(value))
    else:  # the input rule shared with amid_ref and gpu (floats convert exactly)
        x = mpf(as_real_scalar(value, name))
    if mpmath.isnan(x):
        raise ValueError(f"{name} is NaN")
    if not allow_inf and mpmath.isinf(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def _lam_param(lam) -> mpf:
    x = _param(lam, "lam")
    if not 0 <= x <= 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    return x


def _mpf_array(x, name: str, *, log_domain: bool) -> np.ndarray:
    """Convert to an object array of ``mpf`` (exact for float64 input).

    ``log_domain``: entries may be any real or ``-inf`` (log of zero); otherwise they must be
    finite and non-negative. NaN is always rejected; ``+inf`` too.
    """
    x = tensor_to_numpy(x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "iub":
        raise TypeError(
            f"{name} must have a floating-point dtype, got {x.dtype}; "
            f"convert with np.asarray({name}, dtype=np.float64)"
        )
    arr = np.asarray(x)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == object:
        flat = [v if isinstance(v, mpf) else _param(v, name, allow_inf=True) for v in arr.flat]
        nan = any(mpmath.isnan(v) for v in flat)
        pos_inf = any(v == _INF for v in flat)
        negative = not log_domain and any(v < 0 for v in flat)
    else:
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real array of floats, got dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float64)
        nan = bool(np.isnan(arr).any())
        pos_inf = bool(np.isposinf(arr).any())
        negative = not log_domain and bool((arr < 0).any())
        flat = None
    if nan:
        raise ValueError(f"{name} contains NaN")
    if pos_inf:
        raise ValueError(f"{name} contains +inf")
    if negative:
        raise ValueError(f"{name} must be non-negative (and finite), got a negative entry")
    if flat is None:
        flat = [mpf(v) for v in arr.ravel().tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(arr.shape)


def _object_array(values: list, shape: tuple) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def _scalar_or_array(arr: np.ndarray):
    return arr[()] if arr.ndim == 0 else arr


def _digits_lost(x: mpf) -> int:
    """Decimal digits lost by dividing an O(x) cancellation by ``x`` (0 for x = 0, |x| ≥ 1).

    An upper bound from the binary exponent, ``2**(mag−1) ≤ |x| < 2**mag``.
    """
    if x == 0 or abs(x) >= 1:
        return 0
    return math.ceil((1 - mpmath.mag(x)) * math.log10(2)) + 1


def _rows(arr: np.ndarray, axis: int) -> tuple[list[list], tuple]:
    """Split ``arr`` into rows along ``axis``; return the rows and the moved shape."""
    if arr.ndim == 0:
        raise ValueError("input must have at least one dimension (the reduction axis)")
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"axis={axis} is out of range for an input with {arr.ndim} dimensions")
    moved = np.moveaxis(arr, axis, -1)
    v = moved.shape[-1]
    flat = moved.reshape(-1, v)
    return [list(row) for row in flat], moved.shape


def _unrows(rows: list[list], moved_shape: tuple, axis: int) -> np.ndarray:
    flat = [x for row in rows for x in row]
    return np.moveaxis(_object_array(flat, moved_shape), -1, axis)


def _to_float_scalar(x) -> float:
    if not isinstance(x, mpf):
        return float(x)
    if mpmath.isnan(x) or mpmath.isinf(x) or x == 0:
        return float(x)
    if abs(x) >= mpf(2) ** -1022:
        return float(x)  # mpmath rounds to nearest at 53 bits; overflow gives ±inf
    if abs(x) <= mpf(2) ** -1075:
        return math.copysign(0.0, float(mpmath.sign(x)))  # at most half the least subnormal
    # Subnormal range: round once, to a multiple of 2**-1074 (float(x) would round twice).
    man, exp = x.man_exp  # x = man * 2**exp exactly
    shift = exp + 1074
    if shift >= 0:
        n = man << shift
    else:
        d = 1 << -shift
        n, rem = divmod(abs(man), d)
        if 2 * rem > d or (2 * rem == d and n & 1):
            n += 1
        n = -n if man < 0 else n
    return math.ldexp(float(n), -1074)


def to_float(x) -> np.ndarray:
    """Round an oracle result (``mpf`` or object array of ``mpf``) to a float64 ndarray.

    Rounding is to nearest; ``mpf`` infinities become float infinities, values beyond the
    float64 range overflow to ``±inf`` or underflow to ``±0``.

    Parameters
    ----------
    x : mpf or array_like of mpf
        Oracle output, any shape.

    Returns
    -------
    ndarray of float64
        Same shape as ``x`` (0-d for a scalar).
    """
    arr = np.asarray(x, dtype=object)
    out = np.array([_to_float_scalar(v) for v in arr.flat], dtype=np.float64)
    return out.reshape(arr.shape)


# --------------------------------------------------------------------------------------
# the α-mean
# --------------------------------------------------------------------------------------


def _beta(alpha: mpf) -> mpf:
    return (1 - alpha) / 2


def _mean_extra_digits(alpha: mpf) -> int:
    if mpmath.isinf(alpha) or alpha == 1:
        return 0
    with mp.workdps(PARAMETER_DPS):
        return _digits_lost(_beta(alpha))


def _log_mean_kernel(alpha: mpf, lam: mpf) -> Callable[[mpf, mpf], mpf]:
    """``(log a, log b) -> log m_α(a, b; λ)`` in the current mpmath context.

    A literal transcription of MATH.md: ``m = (λ a^β + (1−λ) b^β)^(1/β)`` with
    ``a^β = exp(β log a)``; closed forms at λ ∈ {0, 1}, α = 1, α = ∓inf.
    """
    exp, log = mpmath.exp, mpmath.log
    if lam == 0 or lam == 1 or mpmath.isinf(alpha):
        return _closed_form_pick(alpha, lam)
    one_minus_lam = 1 - lam
    if alpha == 1:

        def geometric(la, lb):
            if la == _NINF or lb == _NINF:
                return _NINF  # a zero in either argument: intersection support
            return lam * la + one_minus_lam * lb

        return geometric
    beta = _beta(alpha)
    if beta > 0:

        def power_mean_union(la, lb):
            # 0^β = 0 for β > 0: a zero argument drops out of the sum (union support).
            s = (lam * exp(beta * la) if la != _NINF else 0) + (
                one_minus_lam * exp(beta * lb) if lb != _NINF else 0
            )
            return log(s) / beta if s != 0 else _NINF

        return power_mean_union

    def power_mean_intersection(la, lb):
        # 0^β = +inf for β < 0, and (+inf)^(1/β) = 0: intersection support.
        if la == _NINF or lb == _NINF:
            return _NINF
        return log(lam * exp(beta * la) + one_minus_lam * exp(beta * lb)) / beta

    return power_mean_intersection


def _closed_form_pick(alpha: mpf, lam: mpf) -> Callable[[mpf, mpf], mpf]:
    """The α-mean at λ ∈ {0, 1} or α = ∓inf: one of its arguments (the same rule in
    probability and log space, since log is increasing)."""
    if lam == 0:
        return lambda a, b: b
    if lam == 1:
        return lambda a, b: a
    return max if alpha < 0 else min


def _prepare_pair(x, y, names, *, log_domain: bool):
    ax = _mpf_array(x, names[0], log_domain=log_domain)
    ay = _mpf_array(y, names[1], log_domain=log_domain)
    try:
        ax, ay = np.broadcast_arrays(ax, ay)
    except ValueError:
        raise ValueError(
            f"shape mismatch: {names[0]} has shape {ax.shape}, {names[1]} has {ay.shape}"
        ) from None
    return ax, ay


def log_alpha_mean(log_a, log_b, alpha, lam, *, dps: int = 50):
    r"""Logarithm of the weighted α-mean, to ``dps`` digits.

    .. math::

        \log m_\alpha(a, b; \lambda) = \frac{1}{\beta}
            \log\big(\lambda e^{\beta \log a} + (1-\lambda) e^{\beta \log b}\big),
        \qquad \beta = \frac{1-\alpha}{2},

    with :math:`\lambda \log a + (1-\lambda)\log b` at α = 1, ``max``/``min`` at α = ∓inf.

    Parameters
    ----------
    log_a, log_b : array_like of float (or of mpf)
        Log-arguments, broadcast together; ``-inf`` is a zero argument.
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Weight of ``a`` in ``[0, 1]``.
    dps : int
        Decimal digits of the result; the working precision is raised by
        ``log10(1/|β|)`` + 15 digits.

    Returns
    -------
    mpf or ndarray of mpf
        ``log m``, broadcast shape; ``-inf`` where ``m = 0``.

    Notes
    -----
    λ = 1 gives ``log_a`` and λ = 0 gives ``log_b`` for every α. For 0 < λ < 1 and α < 1 a
    zero argument drops out (union support); for α ≥ 1 a zero in either gives ``-inf``.
    """
    dps = _check_dps(dps)
    alpha = _param(alpha, "alpha", allow_inf=True)
    lam = _lam_param(lam)
    with mp.workdps(dps + MEAN_GUARD_DIGITS + _mean_extra_digits(alpha)):
        la, lb = _prepare_pair(log_a, log_b, ("log_a", "log_b"), log_domain=True)
        kernel = _log_mean_kernel(alpha, lam)
        out = [kernel(x, y) for x, y in zip(la.flat, lb.flat, strict=True)]
    return _scalar_or_array(_object_array(out, la.shape))


def alpha_mean(a, b, alpha, lam, *, dps: int = 50):
    r"""Weighted α-mean of non-negative numbers, elementwise, to ``dps`` digits.

    .. math::

        m_\alpha(a, b; \lambda) = \big(\lambda a^\beta + (1-\lambda) b^\beta\big)^{1/\beta},
        \qquad \beta = \frac{1-\alpha}{2},

    with :math:`a^\lambda b^{1-\lambda}` at α = 1, :math:`\max(a, b)` at α = −inf and
    :math:`\min(a, b)` at α = +inf (for 0 < λ < 1); ``b`` at λ = 0 and ``a`` at λ = 1 for
    every α.

    Parameters
    ----------
    a, b : array_like of float (or of mpf)
        Finite non-negative numbers, broadcast together.
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Weight of ``a`` in ``[0, 1]``.
    dps : int
        Decimal digits of the result.

    Returns
    -------
    mpf or ndarray of mpf
        ``m``, broadcast shape.

    Notes
    -----
    Support: for α < 1 a zero argument contributes ``0^β = 0`` (union support); for α ≥ 1 a
    zero in either argument gives 0 (intersection). Paper: the α-mixture of Section 3.
    """
    dps = _check_dps(dps)
    alpha = _param(alpha, "alpha", allow_inf=True)
    lam = _lam_param(lam)
    with mp.workdps(dps + MEAN_GUARD_DIGITS + _mean_extra_digits(alpha)):
        xa, xb = _prepare_pair(a, b, ("a", "b"), log_domain=False)
        pairs = zip(xa.flat, xb.flat, strict=True)
        if lam == 0 or lam == 1 or mpmath.isinf(alpha):
            # closed forms in probability space: exact, no exp(log(.)) round trip
            pick = _closed_form_pick(alpha, lam)
            out = [pick(x, y) for x, y in pairs]
        else:
            kernel = _log_mean_kernel(alpha, lam)
            log, exp = mpmath.log, mpmath.exp
            out = [exp(kernel(log(x), log(y))) for x, y in pairs]
    return _scalar_or_array(_object_array(out, xa.shape))


def alpha_mixture_weight(log_p, log_q, alpha, lam, *, dps: int = 50):
    r"""Proposition 3.5 weight :math:`w = \partial \log m_\alpha(p, q; \lambda)/\partial \log q`.

    .. math::

        w = \frac{(1-\lambda)\, q^\beta}{\lambda p^\beta + (1-\lambda) q^\beta}
          = \frac{1-\lambda}{(1-\lambda) + \lambda\, e^{\beta(\log p - \log q)}}.

    Parameters
    ----------
    log_p, log_q : array_like of float (or of mpf)
        Log-arguments, broadcast together; ``-inf`` allowed.
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``.
    dps : int
        Decimal digits of the result.

    Returns
    -------
    mpf or ndarray of mpf
        ``w`` in ``[0, 1]``, broadcast shape.

    Notes
    -----
    Values are the derivative, or its limit where an argument is zero:

    * λ = 0 (m = q): 1; λ = 1 (m = p): 0; α = 1 (log m affine in log q): 1 − λ; all for
      every p, q including zeros.
    * α = ∓inf (max/min): 1 where q is strictly selected, 0 where p is, ½ on ties (the
      symmetric derivative of max/min), including p = q = 0.
    * finite α ≠ 1: q = 0 < p gives 0 for α < 1 and 1 for α > 1 (there m ∝ q as q → 0);
      p = 0 < q gives 1 for α < 1 and 0 for α > 1; p = q = 0 gives 1 − λ, the value on every
      ray p = q (w depends on q/p only).
    """
    dps = _check_dps(dps)
    alpha = _param(alpha, "alpha", allow_inf=True)
    lam = _lam_param(lam)
    with mp.workdps(dps + MEAN_GUARD_DIGITS):
        lp, lq = _prepare_pair(log_p, log_q, ("log_p", "log_q"), log_domain=True)
        one_minus_lam = 1 - lam
        half = mpf(1) / 2
        if lam == 0 or lam == 1 or alpha == 1:
            const = mpf(1) if lam == 0 else (mpf(0) if lam == 1 else one_minus_lam)

            def weight(x, y):
                return const

        elif mpmath.isinf(alpha):
            q_wins = (lambda x, y: y > x) if alpha < 0 else (lambda x, y: y < x)

            def weight(x, y):
                if x == y:
                    return half
                return mpf(1) if q_wins(x, y) else mpf(0)

        else:
            beta = _beta(alpha)
            exp = mpmath.exp

            def weight(x, y):
                if x == _NINF and y == _NINF:
                    return one_minus_lam
                if x == _NINF:  # p = 0 < q: p^β is 0 (β > 0) or +inf (β < 0)
                    return mpf(1) if beta > 0 else mpf(0)
                if y == _NINF:  # q = 0 < p
                    return mpf(0) if beta > 0 else mpf(1)
                return one_minus_lam / (one_minus_lam + lam * exp(beta * (x - y)))

        out = [weight(x, y) for x, y in zip(lp.flat, lq.flat, strict=True)]
    return _scalar_or_array(_object_array(out, lp.shape))


# --------------------------------------------------------------------------------------
# the α-mixture
# --------------------------------------------------------------------------------------


def _log_mixture_row(lp: list, lq: list, kernel) -> tuple[list, list, mpf]:
    """Return (log m, m, Z) of one row; ``m = exp(log m)``, ``Z = Σ m`` (exact sum)."""
    log_m = [kernel(x, y) for x, y in zip(lp, lq, strict=True)]
    exp = mpmath.exp
    m = [exp(v) for v in log_m]
    return log_m, m, mpmath.fsum(m)


def _mixture_rows(p, q, alpha, lam, axis, dps, *, log_input: bool):
    """Validate, then return ``(digits, alpha, results, moved_shape)`` with one
    ``(log m, m, Z)`` per row; post-process inside ``mp.workdps(digits)``."""
    dps = _check_dps(dps)
    alpha = _param(alpha, "alpha", allow_inf=True)
    lam = _lam_param(lam)
    names = ("log_p", "log_q") if log_input else ("p", "q")
    digits = dps + MEAN_GUARD_DIGITS + _mean_extra_digits(alpha)
    with mp.workdps(digits):
        xp = _mpf_array(p, names[0], log_domain=log_input)
        xq = _mpf_array(q, names[1], log_domain=log_input)
        if xp.shape != xq.shape:
            raise ValueError(
                f"shape mismatch: {names[0]} has shape {xp.shape}, {names[1]} has {xq.shape}"
            )
        rows_p, moved = _rows(xp, axis)
        rows_q, _ = _rows(xq, axis)
        if not log_input:
            log = mpmath.log
            rows_p = [[log(v) for v in row] for row in rows_p]
            rows_q = [[log(v) for v in row] for row in rows_q]
        kernel = _log_mean_kernel(alpha, lam)
        results = [_log_mixture_row(a, b, kernel) for a, b in zip(rows_p, rows_q, strict=True)]
    return digits, alpha, results, moved


def _raise_empty(results, alpha) -> None:
    empty = [i for i, (_, _, z) in enumerate(results) if z == 0]
    if empty:
        raise ValueError(
            f"the α-mixture is undefined for row(s) {empty[:5]} (flattened index): Z = 0, "
            "the mixture has empty support (for alpha ≥ 1 the supports of p and q are "
            f"disjoint; alpha={alpha})"
        )


def log_alpha_mixture(log_p, log_q, alpha, lam, axis: int = -1, *, dps: int = 50):
    r"""Log of the normalized α-mixture, to ``dps`` digits.

    .. math::

        \log r^{(\alpha,\lambda)}(x) = \log m_\alpha(p(x), q(x); \lambda) - \log Z_\alpha,
        \qquad Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda).

    Parameters
    ----------
    log_p, log_q : array_like of float (or of mpf), shape (..., V)
        Log-arguments (``-inf`` for zero), same shape. Not required to be normalized (the
        mixture is normalized by ``Z`` anyway).
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``.
    axis : int
        Vocabulary axis.
    dps : int
        Decimal digits.

    Returns
    -------
    ndarray of mpf
        ``log r``, input shape; ``-inf`` outside the support.

    Raises
    ------
    ValueError
        If ``Z = 0`` on a row (α ≥ 1, disjoint supports), or on NaN/+inf input.

    References
    ----------
    Theorem 3.2 (α-integration): r^(α,λ) minimizes λ D_α(p‖r) + (1−λ) D_α(q‖r).

    See Also
    --------
    amid_ref.log_alpha_mixture : the float64 implementation this oracle checks.
    gpu.log_alpha_mixture : the torch implementation.

    Examples
    --------
    >>> from amid_ref import precise
    >>> precise.to_float(precise.alpha_mixture([0.7, 0.3], [0.2, 0.8], -1.0, 0.5))
    array([0.45, 0.55])
    """
    digits, alpha, results, moved = _mixture_rows(
        log_p, log_q, alpha, lam, axis, dps, log_input=True
    )
    _raise_empty(results, alpha)
    with mp.workdps(digits):
        log = mpmath.log
        rows = []
        for log_m, _, z in results:
            log_z = log(z)
            rows.append([v - log_z for v in log_m])
    return _unrows(rows, moved, axis)


def alpha_mixture(p, q, alpha, lam, axis: int = -1, *, dps: int = 50):
    r"""Normalized α-mixture :math:`r^{(\alpha,\lambda)} = m_\alpha(p, q; \lambda)/Z_\alpha`.

    .. math::

        r^{(\alpha,\lambda)}(x) = \frac{\big(\lambda p(x)^\beta
            + (1-\lambda) q(x)^\beta\big)^{1/\beta}}{Z_\alpha},\qquad
        Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda).

    Parameters
    ----------
    p, q : array_like of float (or of mpf), shape (..., V)
        Non-negative finite arguments, same shape (not required to be normalized).
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``; λ = 1 gives ``p/Σp``, λ = 0 gives ``q/Σq``.
    axis : int
        Vocabulary axis.
    dps : int
        Decimal digits.

    Returns
    -------
    ndarray of mpf
        ``r``, input shape; exact zeros outside the support (union for α < 1, intersection
        for α ≥ 1).

    Raises
    ------
    ValueError
        If ``Z = 0`` on a row, or on invalid input.

    References
    ----------
    Theorem 3.2 (α-integration): r^(α,λ) minimizes λ D_α(p‖r) + (1−λ) D_α(q‖r).

    See Also
    --------
    amid_ref.alpha_mixture : the float64 implementation this oracle checks.
    gpu.log_alpha_mixture : the torch implementation.

    Examples
    --------
    >>> from amid_ref import precise
    >>> precise.to_float(precise.alpha_mixture([0.7, 0.3], [0.2, 0.8], -1.0, 0.5))
    array([0.45, 0.55])
    """
    digits, alpha, results, moved = _mixture_rows(p, q, alpha, lam, axis, dps, log_input=False)
    _raise_empty(results, alpha)
    with mp.workdps(digits):
        rows = [[v / z for v in m] for _, m, z in results]
    return _unrows(rows, moved, axis)


def alpha_mixture_normalizer(p, q, alpha, lam, axis: int = -1, *, dps: int = 50):
    r"""Normalizer :math:`Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda)`, to ``dps`` digits.

    .. math::

        Z_\alpha = \sum_x \big(\lambda p(x)^\beta + (1-\lambda) q(x)^\beta\big)^{1/\beta}

    Parameters
    ----------
    p, q : array_like of float (or of mpf), shape (..., V)
        Non-negative finite arguments, same shape.
    alpha : float or mpf
        Any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``.
    axis : int
        Vocabulary axis.
    dps : int
        Decimal digits.

    Returns
    -------
    mpf or ndarray of mpf
        ``Z``, the input shape without ``axis``. ``Z = 0`` (disjoint supports, α ≥ 1) is
        returned, not raised: the normalizer itself is well defined. Bounds:
        ``Z ≥ 1`` for α < −1, ``Z = 1`` at α = −1, ``Z ≤ 1`` for α > −1 when p, q are
        normalized [claim: mixture.normalizer.side_of_minus1].
    """
    _, _, results, moved = _mixture_rows(p, q, alpha, lam, axis, dps, log_input=False)
    return _scalar_or_array(_object_array([z for _, _, z in results], moved[:-1]))


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
                # the digits of the largest power are added for this term.
                big = -s_ * max(-log(x), -log(y), 0) / math.log(10)
                with mp.workdps(mp.dps + int(big) + 1):
                    terms.append(+positive_term(x, y))
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

        \mathrm{TV} = \tfrac12\sum|a-b|,\quad
        H^2 = \tfrac12\sum(\sqrt a - \sqrt b)^2,\quad
        \chi^2 = \sum\frac{(a-b)^2}{b},\quad
        D_f = \sum b\, f(a/b),

        D^{\mathrm{Amari}}_\gamma = \frac{4}{1-\gamma^2}\sum\Big[\tfrac{1-\gamma}{2}a
            + \tfrac{1+\gamma}{2}b - a^{\frac{1-\gamma}{2}} b^{\frac{1+\gamma}{2}}\Big],\quad
        D^{\mathrm{R}}_\rho = \frac{1}{\rho-1}\log\sum \hat a^\rho \hat b^{1-\rho},

        D_{AB}^{(a_, b_)} = -\frac{1}{a_ b_}\sum\Big(x^{a_} y^{b_}
            - \tfrac{a_}{a_+b_} x^{a_+b_} - \tfrac{b_}{a_+b_} y^{a_+b_}\Big).

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
    Zero conventions (MATH.md): KL-type terms with a = 0 contribute 0, a > 0 = b gives
    +inf; χ²: b = 0 < a gives +inf, a = b = 0 contributes 0. Amari: the literal terms with
    ``0^e = 0`` (e > 0) / ``+inf`` (e < 0); γ = −1 is the generalized KL
    ``Σ [a log(a/b) − a + b]`` [claim: divergence.amari.limit_minus1], γ = +1 its mirror
    ``Σ [b log(b/a) − b + a]`` [claim: divergence.amari.limit_plus1]. Rényi: inputs are
    normalized first; terms with a = 0 contribute 0 for every order; a > 0 = b gives 0
    (ρ < 1) or +inf (ρ > 1); a zero sum gives +inf; ρ = 1 is KL
    [claim: divergence.renyi.limit_1]. AB: closed forms at the exact limits
    [claim: divergence.ab.limit_a0] [claim: divergence.ab.limit_b0]
    [claim: divergence.ab.limit_sum0]

    * a_ = 0: :math:`b_^{-2}\sum(x^{b_} - y^{b_} - y^{b_}\log(x^{b_}/y^{b_}))`,
    * b_ = 0: :math:`a_^{-2}\sum(y^{a_} - x^{a_} - x^{a_}\log(y^{a_}/x^{a_}))`,
    * a_ + b_ = 0: :math:`a_^{-2}\sum(\log(y^{a_}/x^{a_}) + (x/y)^{a_} - 1)`,
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


# --------------------------------------------------------------------------------------
# the AMiD loss and its gradient
# --------------------------------------------------------------------------------------


def _log_softmax(x: list, inv_t: mpf) -> list:
    """log softmax(x/T) of one row of mpf logits (``-inf`` entries stay ``-inf``)."""
    z = [v * inv_t if v != _NINF else _NINF for v in x]
    finite = [v for v in z if v != _NINF]
    if not finite:
        raise ValueError("a row of logits is entirely -inf (no probability mass)")
    top = max(finite)
    exp = mpmath.exp
    lse = top + mpmath.log(mpmath.fsum(exp(v - top) for v in finite))
    return [v - lse if v != _NINF else _NINF for v in z]


class _LossSetup:
    """Validated parameters of :func:`amid_loss` / :func:`amid_grad`."""

    def __init__(self, alpha, lam, divergence, order, div_params, temperature, dps):
        self.dps = _check_dps(dps)
        self.alpha = _param(alpha, "alpha", allow_inf=True)
        self.lam = _lam_param(lam)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.order = order
        if div_params is None:
            div_params = {}
        if not isinstance(div_params, dict):
            raise TypeError(f"div_params must be a dict or None, got {div_params!r}")
        self.row_fn, div_extra = _divergence_row_fn(divergence, div_params)
        self.temperature = _param(temperature, "temperature")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.extra_digits = _mean_extra_digits(self.alpha) + div_extra
        self.digits = self.dps + DIVERGENCE_GUARD_DIGITS + self.extra_digits
        self.negative_power = 0.0
        if divergence == "ab":
            with mp.workdps(PARAMETER_DPS):
                s_ = _param(div_params["alpha"], "alpha") + _param(div_params["beta"], "beta")
            self.negative_power = float(max(-s_, 0))

    def input_digits(self, rows_s: list, rows_t: list) -> int:
        """Extra digits the inputs need: with a_ + b_ < 0 the AB terms are powers
        p^(a_+b_) up to e^(|a_+b_|·|log p|) cancelling to O(1), so every quantity they are
        formed from (p, q, r) must be accurate to that many more digits."""
        if not self.negative_power:
            return 0
        span = 0.0
        for row in (*rows_s, *rows_t):
            finite = [float(v) for v in row if v != _NINF]
            span = max(span, (max(finite) - min(finite)) / float(self.temperature))
        span += math.log(len(rows_s[0]))
        return int(self.negative_power * span / math.log(10)) + 5

    def rows(self, student_logits, teacher_logits):
        s = _mpf_array(student_logits, "student_logits", log_domain=True)
        t = _mpf_array(teacher_logits, "teacher_logits", log_domain=True)
        if s.shape != t.shape:
            raise ValueError(
                f"shape mismatch: student_logits has shape {s.shape}, teacher_logits has {t.shape}"
            )
        rows_s, moved = _rows(s, -1)
        rows_t, _ = _rows(t, -1)
        for rows, name in ((rows_s, "student_logits"), (rows_t, "teacher_logits")):
            if any(all(v == _NINF for v in row) for row in rows):
                raise ValueError(f"{name} has a row whose logits are all -inf: no distribution")
        return rows_s, rows_t, moved[:-1]

    def mixture(self, lp: list, lq: list) -> list:
        kernel = _log_mean_kernel(self.alpha, self.lam)
        _, m, z = _log_mixture_row(lp, lq, kernel)
        if z == 0:
            raise ValueError(
                f"the α-mixture is undefined: Z = 0 (alpha={self.alpha} keeps only the "
                "intersection of the teacher and student supports, and it is empty)"
            )
        return [v / z for v in m]

    def divergence_of(self, p: list, q: list, r: list) -> mpf:
        return self.row_fn(*order_arguments(self.order, p, q, r))

    def loss_row(self, s: list, t: list) -> mpf:
        """Loss of one row at student logits ``s`` and teacher logits ``t``."""
        exp = mpmath.exp
        lp = _log_softmax(t, 1 / self.temperature)
        lq = _log_softmax(s, 1 / self.temperature)
        p = [exp(v) for v in lp]
        q = [exp(v) for v in lq]
        return self.divergence_of(p, q, self.mixture(lp, lq))

    def teacher(self, t: list) -> list:
        exp = mpmath.exp
        return [exp(v) for v in _log_softmax(t, 1 / self.temperature)]


class _PerturbedRowLoss:
    """The loss of one row as a function of one shifted student logit, for :func:`amid_grad`.

    Shifting the scaled logit ``s_j/T`` by ``ε`` changes the log-sum-exp by
    ``δ = log(1 + q_j (e^ε − 1))``, so ``log q'_x = log q_x − δ`` (x ≠ j) and
    ``log q'_j = log q_j + ε − δ``; the student term of the power mean scales as
    ``(1−λ) q'^β = (1−λ) q^β · e^(−βδ)``. These exact identities let each evaluation reuse
    the powers ``λ p^β`` and ``(1−λ) q^β`` of the base point; everything else (the mean, Z,
    r, the divergence) is evaluated afresh by the same code as :func:`amid_loss`.
    """

    def __init__(self, setup: _LossSetup, s: list, t: list, *, detach: bool):
        exp, log = mpmath.exp, mpmath.log
        self.setup = setup
        self.p = setup.teacher(t)
        self.lp = [log(v) for v in self.p]
        self.lq = _log_softmax(s, 1 / setup.temperature)
        self.q = [exp(v) for v in self.lq]
        self.kernel = _log_mean_kernel(setup.alpha, setup.lam)
        self.r_fixed = setup.mixture(self.lp, self.lq) if detach else None
        alpha, lam = setup.alpha, setup.lam
        self.beta = None
        if 0 < lam < 1 and not mpmath.isinf(alpha) and alpha != 1:
            beta = self.beta = _beta(alpha)
            self.teacher_terms = [lam * exp(beta * v) if v != _NINF else None for v in self.lp]
            self.student_terms = [
                (1 - lam) * exp(beta * v) if v != _NINF else None for v in self.lq
            ]

    def base(self) -> mpf:
        r = self.r_fixed if self.r_fixed is not None else self.setup.mixture(self.lp, self.lq)
        return self.setup.divergence_of(self.p, self.q, r)

    def at(self, j: int, eps: mpf) -> mpf:
        """The loss with the scaled student logit ``j`` shifted by ``eps``."""
        exp = mpmath.exp
        delta = mpmath.log1p(self.q[j] * mpmath.expm1(eps))
        scale = exp(-delta)
        q = [v * scale for v in self.q]
        q[j] = self.q[j] * exp(eps - delta)
        if self.r_fixed is not None:
            r = self.r_fixed
        else:
            log_m = self._log_mean(j, self.lq[j] + eps - delta, delta)
            m = [exp(v) for v in log_m]
            z = mpmath.fsum(m)
            if z == 0:
                raise ValueError("the α-mixture is undefined at a perturbed point: Z = 0")
            r = [v / z for v in m]
        return self.setup.divergence_of(self.p, q, r)

    def _log_mean(self, j: int, lq_j: mpf, delta: mpf) -> list:
        if self.beta is None:  # λ ∈ {0, 1}, α = 1, α = ∓inf: closed forms, no powers
            lq = [v - delta for v in self.lq]
            lq[j] = lq_j
            return [self.kernel(x, y) for x, y in zip(self.lp, lq, strict=True)]
        beta, log = self.beta, mpmath.log
        factor = mpmath.exp(-beta * delta)
        out = []
        for a_term, b_term in zip(self.teacher_terms, self.student_terms, strict=True):
            if a_term is None or b_term is None:
                if beta < 0:  # intersection support
                    out.append(_NINF)
                    continue
                total = a_term if b_term is None else b_term * factor
                out.append(log(total) / beta if total is not None else _NINF)
                continue
            out.append(log(a_term + b_term * factor) / beta)
        out[j] = self.kernel(self.lp[j], lq_j)
        return out


def amid_loss(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    temperature=1.0,
    *,
    dps: int = 50,
):
    r"""AMiD loss per row, to ``dps`` digits.

    .. math::

        p = \mathrm{softmax}(t/T),\quad q = \mathrm{softmax}(s/T),\quad
        r = r^{(\alpha,\lambda)}(p, q),\qquad
        \mathcal L = D(p\|r),\ D(q\|r),\ D(r\|p)\ \text{or}\ D(r\|q).

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float (or of mpf), shape (..., V)
        Logits, same shape; ``-inf`` entries have probability 0.
    alpha : float or mpf
        Path parameter, any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``.
    divergence : str
        One of :data:`DIVERGENCES`.
    order : str
        ``"pr"``, ``"qr"``, ``"rp"`` or ``"rq"`` (:data:`ORDERS`).
    div_params : dict, optional
        Parameters of the divergence (see :func:`divergence`).
    temperature : float
        Softmax temperature ``T > 0``.
    dps : int
        Decimal digits.

    Returns
    -------
    mpf or ndarray of mpf
        Loss per row, shape (...).

    Raises
    ------
    ValueError
        NaN or +inf logits, a row of all ``-inf``, ``Z = 0``, bad parameters.

    Notes
    -----
    Theorem 3.4: for 0 < λ < 1 the loss vanishes iff the student equals the teacher
    [claim: theorem_3_4.optimality].

    References
    ----------
    Theorem 3.4 (optimality): for 0 < λ < 1, D(p‖r) = 0 iff q = p.

    See Also
    --------
    amid_ref.amid_loss : the float64 implementation this oracle checks.
    gpu.amid_loss : the chunked torch implementation.

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import precise
    >>> t = np.log([0.7, 0.2, 0.1])
    >>> precise.amid_loss(t, t, alpha=-5.0, lam=0.1) == 0
    True
    """
    setup = _LossSetup(alpha, lam, divergence, order, div_params, temperature, dps)
    with mp.workdps(setup.digits):
        rows_s, rows_t, shape = setup.rows(student_logits, teacher_logits)
    with mp.workdps(setup.digits + setup.input_digits(rows_s, rows_t)):
        out = [setup.loss_row(s, t) for s, t in zip(rows_s, rows_t, strict=True)]
    return _scalar_or_array(_object_array(out, shape))


def amid_grad(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    temperature=1.0,
    detach_assistant: bool = False,
    *,
    dps: int = 50,
):
    r"""Gradient of the per-row AMiD loss with respect to the student logits.

    Central differences of :func:`amid_loss` at raised precision:

    .. math::

        \frac{\partial \mathcal L}{\partial s_j} \approx
        \frac{\mathcal L(s + h e_j) - \mathcal L(s - h e_j)}{2h},\qquad
        h = 10^{-(\lfloor dps/2\rfloor + 10)},

    evaluated at ``dps + dps/2 + 30`` working digits (plus the digits the mean and the
    divergence lose near their limits), so that both the truncation error ``O(h² L''')`` and
    the rounding error ``O(10^-digits/h)`` are far below ``10**-dps`` in absolute terms.
    Each perturbed loss reuses the base point's powers through exact identities (the
    log-sum-exp shift ``δ = log(1 + q_j(e^ε − 1))``, ``q'^β = q^β e^(−βδ)``); the mean,
    ``Z``, ``r`` and the divergence are re-evaluated in full.
    With ``detach_assistant=True`` the mixture ``r`` is frozen at its value and only the
    explicit dependence on ``q`` is differentiated (zero for orders ``pr``, ``rp``).

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float (or of mpf), shape (..., V)
        Logits, same shape; ``-inf`` entries allowed.
    alpha, lam, divergence, order, div_params, temperature, dps
        As in :func:`amid_loss`.
    detach_assistant : bool
        Treat ``r`` as a constant (TAID / DistiLLM-2 style).

    Returns
    -------
    ndarray of mpf
        ``∂ loss_row / ∂ student_logits``, shape (..., V). Entries at ``-inf`` student logits
        are 0; rows whose loss is ``+inf`` are NaN (the gradient is undefined). At a kink
        (TV at a = b, α = ±inf at ties p = q) the value is the average of the one-sided
        derivatives.

    Notes
    -----
    Cost: ``2V`` loss evaluations per row, ``O(V²)`` element operations. Checked in the
    tests against Proposition 3.5, ``∂ KL(p‖r)/∂s_j = −g_j + q_j Σ g``,
    ``g = (p − r) w`` [claim: prop_3_5.kl_gradient].

    References
    ----------
    Proposition 3.5 (the gradient through the assistant); Theorem 3.4 (zero at q = p).

    See Also
    --------
    amid_ref.amid_grad : the closed-form float64 gradient this oracle checks.
    gpu.amid_loss : its backward pass is the same closed form in torch.

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import precise
    >>> t = np.log([0.7, 0.2, 0.1])
    >>> g = precise.to_float(precise.amid_grad(np.zeros(3), t, alpha=-5.0, lam=0.1))
    >>> g.shape, abs(float(g.sum())) < 1e-15  # a softmax gradient sums to 0
    ((3,), True)
    """
    setup = _LossSetup(alpha, lam, divergence, order, div_params, temperature, dps)
    if not isinstance(detach_assistant, bool | np.bool_):
        raise TypeError(f"detach_assistant must be a bool, got {detach_assistant!r}")
    step_digits = setup.dps // 2 + 10
    rows_s, rows_t, shape = setup.rows(student_logits, teacher_logits)
    more = setup.input_digits(rows_s, rows_t)
    with mp.workdps(setup.dps + step_digits + GRADIENT_GUARD_DIGITS + setup.extra_digits + more):
        h = mpf(10) ** (-step_digits)
        grads = []
        for s, t in zip(rows_s, rows_t, strict=True):
            row_loss = _PerturbedRowLoss(setup, s, t, detach=bool(detach_assistant))
            if mpmath.isinf(row_loss.base()):
                grads.append([mpmath.nan] * len(s))
                continue
            eps = h / setup.temperature  # a step h in s_j is a step h/T in the scaled logit
            grads.append(
                [
                    (row_loss.at(j, eps) - row_loss.at(j, -eps)) / (2 * h)
                    if sj != _NINF
                    else mpf(0)
                    for j, sj in enumerate(s)
                ]
            )
    shape_full = (*shape, len(rows_s[0]))
    return _object_array([g for row in grads for g in row], shape_full)
