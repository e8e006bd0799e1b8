"""The α-mean, the α-mixture, its normalizer and its weight, in mpmath.

The mirror of :mod:`amid_ref._mixture`: the power mean written literally, its limits in
closed form at the exact parameter values.
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
from mpmath import mp, mpf

from amid_ref.precise._common import (
    _NINF,
    MEAN_GUARD_DIGITS,
    PARAMETER_DPS,
    _check_dps,
    _digits_lost,
    _lam_param,
    _mpf_array,
    _object_array,
    _param,
    _prepare_pair,
    _rows,
    _scalar_or_array,
    _unrows,
)

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

    A literal transcription of the mathematics page: ``m = (λ a^β + (1−λ) b^β)^(1/β)`` with
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
