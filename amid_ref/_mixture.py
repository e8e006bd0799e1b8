"""The weighted α-mean and the normalized α-mixture (MATH.md, "α-representation,
α-mean, α-mixture"), in float64, accurate uniformly in α.

The naive log-domain formula ``(1/β)·logaddexp(log λ + β log a, log(1−λ) + β log b)`` loses
all accuracy as ``β = (1−α)/2 → 0`` (α → 1): the bracket tends to ``0`` and is divided by
``β``. Here the bracket is rewritten, with ``d = log a − log b``:

* ``|β d| ≤ 1``: pivot on the argument with the larger weight,
  ``log m = log b + log1p(λ·expm1(β d))/β`` (λ ≤ ½) or
  ``log m = log a + log1p((1−λ)·expm1(−β d))/β`` (λ > ½). The argument of ``log1p`` stays
  in ``[−½, e)``, so ``log1p(·)/β`` carries a relative error of a few ulps for every β,
  including β → 0.
* ``|β d| > 1``: pivot on the dominant weighted term, with
  ``t = β d + log λ − log(1−λ)``:
  ``log m = log a + (log λ + log1p(e^(−t)))/β`` (t ≥ 0), else
  ``log m = log b + (log(1−λ) + log1p(e^t))/β``. No term overflows, even for |β| ≈ 1e300.
* ``β = 0`` (α = 1) is the geometric mean ``λ log a + (1−λ) log b``, pivoted the same way.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from amid_ref._validation import (
    as_float_array,
    check_alpha,
    check_axis,
    check_lam,
    check_log_probabilities,
    check_probabilities,
    check_same_shape,
)

__all__ = [
    "alpha_mean",
    "alpha_mixture",
    "alpha_mixture_normalizer",
    "alpha_mixture_weight",
    "log_alpha_mean",
    "log_alpha_mixture",
]

NEG_INF = -np.inf


def _scalar_or_array(x: np.ndarray):
    return x[()] if x.ndim == 0 else x


def beta_of(alpha: float) -> float:
    """β = (1 − α)/2, the exponent of the power mean (±inf for α = ∓inf)."""
    return (1.0 - alpha) / 2.0


def _log_alpha_mean(la: np.ndarray, lb: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    """Unchecked kernel of :func:`log_alpha_mean` (float64 arrays, −inf allowed)."""
    return _log_alpha_mean_ratios(la, lb, alpha, lam)[0]


def _log_alpha_mean_ratios(
    la: np.ndarray, lb: np.ndarray, alpha: float, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(log m, log m − log a, log m − log b)``, the two log ratios formed directly.

    Every branch of the module docstring computes ``log m`` as a pivot plus a correction
    (``log b + log1p(λ·expm1(βd))/β``, ...): the correction *is* the log ratio to the pivot,
    exact to a few ulps of itself, and the other ratio is it ∓ d. Subtracting ``log a`` from
    ``log m`` instead would carry an ulp of ``|log a|`` (2e-14 at log a = −90) into a ratio
    that may be 1e-13 (λ = 1 − 1e-15). Where an argument is zero the ratios are those of
    the plain differences (±inf, NaN where both logs are −inf).
    """
    la, lb = np.broadcast_arrays(np.asarray(la, np.float64), np.asarray(lb, np.float64))
    with np.errstate(invalid="ignore"):
        d_all = la - lb
    if lam == 0.0:
        with np.errstate(invalid="ignore"):
            return lb.copy(), -d_all, np.where(np.isneginf(lb), np.nan, 0.0)
    if lam == 1.0:
        return la.copy(), np.where(np.isneginf(la), np.nan, 0.0), d_all
    if np.isinf(alpha):
        lm = np.maximum(la, lb) if alpha < 0 else np.minimum(la, lb)
        with np.errstate(invalid="ignore"):
            return lm, lm - la, lm - lb
    beta = beta_of(alpha)
    out = np.full(la.shape, NEG_INF)
    a_zero = np.isneginf(la)
    b_zero = np.isneginf(lb)
    if beta > 0.0:
        # Union support: m(0, b) = (1−λ)^(1/β)·b and m(a, 0) = λ^(1/β)·a.
        only_b = a_zero & ~b_zero
        only_a = b_zero & ~a_zero
        out[only_b] = lb[only_b] + np.log1p(-lam) / beta
        out[only_a] = la[only_a] + np.log(lam) / beta
    # For β ≤ 0 a zero in either argument gives m = 0 (intersection support): stays −inf.
    with np.errstate(invalid="ignore"):
        ua, ub = np.array(out - la), np.array(out - lb)
    if beta > 0.0:  # the ratios to the one nonzero argument, formed directly
        ub[only_b] = np.log1p(-lam) / beta
        ua[only_a] = np.log(lam) / beta
    both = ~a_zero & ~b_zero
    x, y = la[both], lb[both]
    d = x - y
    if beta == 0.0:
        if lam <= 0.5:
            rb = lam * d
            ra = rb - d
            out[both] = y + rb
        else:
            ra = (1.0 - lam) * -d
            rb = ra + d
            out[both] = x + ra
        ua[both], ub[both] = ra, rb
        return out, ua, ub
    with np.errstate(over="ignore", invalid="ignore"):
        bd = beta * d
    bd = np.where(d == 0.0, 0.0, bd)  # |β| huge and d = 0: avoid inf·0
    small = np.abs(bd) <= 1.0
    ra = np.empty_like(d)
    rb = np.empty_like(d)
    # Small |β d|: log1p/expm1 around the argument with the larger weight.
    bs = bd[small]
    if lam <= 0.5:
        rb[small] = np.log1p(lam * np.expm1(bs)) / beta
        ra[small] = rb[small] - d[small]
    else:
        ra[small] = np.log1p((1.0 - lam) * np.expm1(-bs)) / beta
        rb[small] = ra[small] + d[small]
    # Large |β d|: pivot on the dominant weighted term.
    large = ~small
    bl = bd[large]
    t = bl + (np.log(lam) - np.log1p(-lam))
    a_dom = t >= 0.0
    with np.errstate(over="ignore"):
        corr = np.log1p(np.exp(-np.abs(t)))
        ra_a = (np.log(lam) + corr) / beta
        rb_b = (np.log1p(-lam) + corr) / beta
    dl = d[large]
    ra[large] = np.where(a_dom, ra_a, rb_b - dl)
    rb[large] = np.where(a_dom, ra_a + dl, rb_b)
    res = np.empty_like(d)
    res[small] = (y + rb)[small] if lam <= 0.5 else (x + ra)[small]
    res[large] = np.where(a_dom, x[large] + ra_a, y[large] + rb_b)
    out[both] = res
    ua[both], ub[both] = ra, rb
    return out, ua, ub


def _log_ratio_to_mixture(
    lm: np.ndarray, l_ref: np.ndarray, u: np.ndarray, axis: int
) -> np.ndarray:
    r"""``log(r/ŝ)`` for a reference distribution ``s = exp(l_ref)`` normalized to ``ŝ``,
    from ``u = log m − log s`` (:func:`_log_alpha_mean_ratios`):

    .. math::

        \log\frac{r_x}{\hat s_x} = u_x - \log\sum_y \hat s_y e^{u_y}
            = u_x - \operatorname{log1p}\Big(\sum_y \hat s_y \operatorname{expm1}(u_y)\Big),

    the ``log1p`` form while its argument is in ``[−½, ½]`` (it is then exact to a few ulps
    of itself, where ``log Z`` by log-sum-exp carries an absolute ulp of 1), log-sum-exp
    otherwise. Normalizing ``s`` keeps the rounding of ``Σ s ≈ 1`` (1e-16) out of a ratio
    that may be 1e-13.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s = np.exp(l_ref)
        terms = np.where(u <= 1.0, s * np.expm1(np.minimum(u, 1.0)), np.exp(lm) - s)
        terms = np.where(np.isnan(u), 0.0, terms)
        total = np.sum(s, axis=axis, keepdims=True)
        frac = np.sum(terms, axis=axis, keepdims=True) / total
        direct = logsumexp(lm, axis=axis, keepdims=True) - np.log(total)
        log_z = np.where(np.abs(frac) <= 0.5, np.log1p(np.clip(frac, -0.5, 0.5)), direct)
        return u - log_z


def _alpha_mixture_weight(la: np.ndarray, lb: np.ndarray, alpha: float, lam: float) -> np.ndarray:
    """Unchecked kernel of :func:`alpha_mixture_weight`: ∂ log m/∂ log b (b = q)."""
    return np.exp(_alpha_mixture_log_weight(la, lb, alpha, lam))


def _alpha_mixture_log_weight(
    la: np.ndarray, lb: np.ndarray, alpha: float, lam: float
) -> np.ndarray:
    """``log w`` (−inf where w = 0), with ``w = σ(−t)``, ``t = β d + log λ − log(1−λ)``:
    ``log w = −log(1 + e^t)``, exact to a few ulps of itself also where w ≈ 1 (λ → 0),
    where ``log(w)`` of a rounded w would keep only the ulp of 1."""
    return _alpha_mixture_log_weights(la, lb, alpha, lam)[0]


def _alpha_mixture_log_weights(
    la: np.ndarray, lb: np.ndarray, alpha: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(log w, log w̄)`` with w̄ = 1 − w = ∂ log m/∂ log a, each exact to a few ulps of
    itself: ``log w̄ = −log(1 + e^(−t))`` (σ(t)); ``1 − w`` of a rounded w near 1 would keep
    only the ulp of 1. Where m = 0 both are −inf (no path through m)."""
    lw, lw_bar, _ = _alpha_mixture_weights(la, lb, alpha, lam)
    return lw, lw_bar


def _alpha_mixture_weights(
    la: np.ndarray, lb: np.ndarray, alpha: float, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(log w, log w̄, w − w̄)``: the weight, its complement and their difference, each
    exact to a few ulps of itself. ``w − w̄ = −tanh(t/2)`` is formed from t, not as a
    difference of two numbers near ½ (its relative accuracy there is what a chain rule that
    weighs two opposite terms by w and w̄ needs). Where m = 0: −inf, −inf, 0."""
    la, lb = np.broadcast_arrays(np.asarray(la, np.float64), np.asarray(lb, np.float64))
    none = np.full(la.shape, NEG_INF)
    if lam == 0.0:
        lw = np.where(np.isneginf(lb), NEG_INF, 0.0)
        return lw, none, np.exp(lw)
    if lam == 1.0:
        lw_bar = np.where(np.isneginf(la), NEG_INF, 0.0)
        return none, lw_bar, -np.exp(lw_bar)
    m_zero = np.isneginf(_log_alpha_mean(la, lb, alpha, lam))
    if np.isinf(alpha):
        pick_b = (lb > la) if alpha < 0 else (lb < la)
        pick_a = (la > lb) if alpha < 0 else (la < lb)
        half = np.where(lb == la, -np.log(2.0), NEG_INF)
        lw = np.where(m_zero, NEG_INF, np.where(pick_b, 0.0, half))
        lw_bar = np.where(m_zero, NEG_INF, np.where(pick_a, 0.0, half))
        return lw, lw_bar, np.exp(lw) - np.exp(lw_bar)  # exact: w, w̄ ∈ {0, ½, 1}
    beta = beta_of(alpha)
    if beta == 0.0:
        return (
            np.where(m_zero, NEG_INF, np.log1p(-lam)),
            np.where(m_zero, NEG_INF, np.log(lam)),
            np.where(m_zero, 0.0, 1.0 - 2.0 * lam),
        )
    with np.errstate(over="ignore", invalid="ignore"):
        d = la - lb
        bd = np.where(d == 0.0, 0.0, beta * d)
        t = bd + (np.log(lam) - np.log1p(-lam))
        lw = -np.logaddexp(0.0, t)
        lw_bar = -np.logaddexp(0.0, -t)
        diff = -np.tanh(t / 2.0)
    bad = m_zero | np.isnan(t)
    return np.where(bad, NEG_INF, lw), np.where(bad, NEG_INF, lw_bar), np.where(bad, 0.0, diff)


def log_alpha_mean(log_a, log_b, alpha: float, lam: float):
    r"""Logarithm of the weighted α-mean :math:`\log m_\alpha(a, b; \lambda)`.

    .. math::

        m_\alpha(a, b; \lambda) = f_\alpha^{-1}\big(\lambda f_\alpha(a)
            + (1-\lambda) f_\alpha(b)\big),\qquad
        f_\alpha(u) = u^{(1-\alpha)/2}\ (\alpha \ne 1),\quad f_1(u) = \log u,

    i.e. the weighted power mean with exponent :math:`\beta = (1-\alpha)/2`, evaluated in
    the log domain with a branch that stays accurate uniformly in α (module docstring).

    Parameters
    ----------
    log_a, log_b : array_like of float
        Logarithms of the positive arguments; ``-inf`` means a zero argument. Broadcast
        against each other. NaN and ``+inf`` are rejected.
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Weight of the first argument, in ``[0, 1]``.

    Returns
    -------
    ndarray or float
        ``log m``, shape of the broadcast inputs.

    Notes
    -----
    Edge semantics: ``lam = 1`` returns ``log_a`` and ``lam = 0`` returns ``log_b`` for every
    α, including ±inf. For ``0 < lam < 1``: α = −inf gives the maximum and α = +inf the
    minimum [claim: mean.limit.alpha_to_minus_inf] [claim: mean.limit.alpha_to_plus_inf];
    α = 1 the geometric mean [claim: mean.limit.alpha_to_1]; α = −1 the arithmetic mean
    [claim: mean.special.arithmetic]; α = 3 the harmonic mean [claim: mean.special.harmonic];
    α = 0 and α = −3 [claim: mean.special.alpha0] [claim: mean.special.quadratic]. Zeros: for
    α < 1 a zero argument is ignored up to the factor of its weight (union support); for
    α ≥ 1 a zero in either argument gives ``-inf`` (intersection support). The mean is
    idempotent, 1-homogeneous and symmetric under (a, b, λ) → (b, a, 1−λ)
    [claim: mean.idempotent] [claim: mean.homogeneous] [claim: mean.symmetry], and
    non-increasing in α [claim: mean.monotone_in_alpha].

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import log_alpha_mean
    >>> float(np.exp(log_alpha_mean(np.log(4.0), np.log(1.0), 1.0, 0.5)))  # geometric
    2.0
    """
    la = as_float_array(log_a, "log_a", allow_neg_inf=True)
    lb = as_float_array(log_b, "log_b", allow_neg_inf=True)
    try:
        np.broadcast_shapes(la.shape, lb.shape)
    except ValueError:
        raise ValueError(
            f"shape mismatch: log_a has shape {la.shape}, log_b has {lb.shape} "
            "(they must broadcast)"
        ) from None
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    return _scalar_or_array(_log_alpha_mean(la, lb, alpha, lam))


def alpha_mean(a, b, alpha: float, lam: float):
    r"""Weighted α-mean :math:`m_\alpha(a, b; \lambda)` of non-negative numbers, elementwise.

    .. math::

        m_\alpha(a, b; \lambda) = \big(\lambda a^\beta + (1-\lambda) b^\beta\big)^{1/\beta},
        \qquad \beta = \frac{1-\alpha}{2},

    with the limits :math:`a^\lambda b^{1-\lambda}` at α = 1, ``max`` at α = −inf and
    ``min`` at α = +inf. Computed as ``exp(log_alpha_mean(log a, log b, alpha, lam))``.

    Parameters
    ----------
    a, b : array_like of float
        Non-negative finite numbers (not necessarily normalized), broadcast together.
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Weight of ``a`` in ``[0, 1]``.

    Returns
    -------
    ndarray or float
        The α-mean, shape of the broadcast inputs.

    Notes
    -----
    Same edge semantics as :func:`log_alpha_mean` [claim: mean.limit.lambda_endpoints]
    [claim: mean.special.harmonic] [claim: mean.special.arithmetic].

    Examples
    --------
    >>> from amid_ref import alpha_mean
    >>> round(float(alpha_mean(1.0, 3.0, 3.0, 0.5)), 12)  # harmonic mean of 1 and 3
    1.5
    """
    a = as_float_array(a, "a", allow_neg_inf=False)
    b = as_float_array(b, "b", allow_neg_inf=False)
    if (a < 0).any():
        raise ValueError("a has negative entries; the α-mean is defined for a ≥ 0")
    if (b < 0).any():
        raise ValueError("b has negative entries; the α-mean is defined for b ≥ 0")
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"shape mismatch: a has shape {a.shape}, b has {b.shape} (they must broadcast)"
        ) from None
    with np.errstate(divide="ignore"):
        lm = _log_alpha_mean(np.log(a), np.log(b), alpha, lam)
    return _scalar_or_array(np.exp(lm))


def _checked_log_pair(log_p, log_q, axis, *, log_input: bool):
    name_p, name_q = ("log_p", "log_q") if log_input else ("p", "q")
    p = as_float_array(log_p, name_p, allow_neg_inf=log_input)
    q = as_float_array(log_q, name_q, allow_neg_inf=log_input)
    check_same_shape(p, q, name_p, name_q)
    ax = check_axis(p, axis, name_p)
    if log_input:
        check_log_probabilities(p, name_p, ax)
        check_log_probabilities(q, name_q, ax)
        return p, q, ax
    check_probabilities(p, name_p, ax)
    check_probabilities(q, name_q, ax)
    with np.errstate(divide="ignore"):
        return np.log(p), np.log(q), ax


def _log_unnormalized_and_normalizer(lp, lq, alpha, lam, axis):
    lm = _log_alpha_mean(lp, lq, alpha, lam)
    log_z = logsumexp(lm, axis=axis, keepdims=True)
    empty = np.isneginf(log_z)
    if empty.any():
        rows = np.argwhere(np.squeeze(empty, axis=axis)) if lm.ndim > 1 else []
        where = f" (rows {[tuple(int(i) for i in r) for r in rows[:5]]})" if len(rows) else ""
        raise ValueError(
            f"the α-mixture is undefined{where}: Z = 0 because alpha={alpha} ≥ 1 keeps only "
            "the intersection of the supports of p and q, and it is empty"
        )
    return lm, log_z


def log_alpha_mixture(log_p, log_q, alpha: float, lam: float, axis: int = -1):
    r"""Log of the normalized α-mixture :math:`\log r^{(\alpha,\lambda)}` (the AMiD assistant).

    .. math::

        r^{(\alpha,\lambda)}(x) = \frac{m_\alpha(p(x), q(x); \lambda)}{Z_\alpha},\qquad
        Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda).

    Parameters
    ----------
    log_p, log_q : array_like of float, shape (..., V, ...)
        Log-probabilities of teacher and student (``-inf`` for zero probability), same
        shape; each must be normalized along ``axis`` (logsumexp 0 within 1e-6).
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Teacher weight in ``[0, 1]``: ``lam = 1`` gives ``log_p``, ``lam = 0`` gives ``log_q``.
    axis : int
        The vocabulary axis.

    Returns
    -------
    ndarray
        ``log r``, same shape as the inputs; ``-inf`` exactly where the mixture is zero.

    Raises
    ------
    ValueError
        If a row has ``Z = 0`` (α ≥ 1 and disjoint supports), or on invalid input.

    Notes
    -----
    Accurate to a few ulps of ``max(1, |log r|)`` for every α, including α → ±1 and
    |α| → ∞ (see the tolerance table). For α < 1 the support is the union of the supports of
    p and q; for α ≥ 1 their intersection. Theorem 3.2 of the paper: ``r`` minimizes
    ``λ D_α(p‖r) + (1−λ) D_α(q‖r)`` over the simplex [claim: theorem_3_2.stationary]
    [claim: theorem_3_2.minimizer] [claim: theorem_3_2.simplex]; Theorem 3.4: for
    0 < λ < 1, ``r = p`` iff ``q = p`` [claim: theorem_3_4.optimality].

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import log_alpha_mixture
    >>> lp, lq = np.log([0.7, 0.2, 0.1]), np.log([0.1, 0.3, 0.6])
    >>> np.round(np.exp(log_alpha_mixture(lp, lq, -1.0, 0.5)), 6)  # arithmetic mixture
    array([0.4 , 0.25, 0.35])
    """
    lp, lq, ax = _checked_log_pair(log_p, log_q, axis, log_input=True)
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    lm, log_z = _log_unnormalized_and_normalizer(lp, lq, alpha, lam, ax)
    return lm - log_z


def alpha_mixture(p, q, alpha: float, lam: float, axis: int = -1):
    r"""Normalized α-mixture :math:`r^{(\alpha,\lambda)} \propto m_\alpha(p, q; \lambda)`.

    .. math::

        r^{(\alpha,\lambda)} \propto \Big(\lambda p^{\frac{1-\alpha}{2}}
            + (1-\lambda)\, q^{\frac{1-\alpha}{2}}\Big)^{\frac{2}{1-\alpha}}

    Parameters
    ----------
    p, q : array_like of float, shape (..., V, ...)
        Teacher and student probabilities, non-negative and normalized along ``axis``
        (within 1e-6), same shape.
    alpha : float
        Any real or ``±inf``. α = −1 arithmetic, 1 geometric, 3 harmonic, ∓inf max/min.
    lam : float
        Teacher weight in ``[0, 1]``.
    axis : int
        The vocabulary axis.

    Returns
    -------
    ndarray
        ``r``, same shape as ``p``; exact zeros outside the support (union of supports
        for α < 1, intersection for α ≥ 1).

    Raises
    ------
    ValueError
        If ``Z = 0`` on a row (α ≥ 1, disjoint supports), or on invalid input.

    Notes
    -----
    Computed as ``exp(log_alpha_mixture(log p, log q, ...))``.
    [claim: theorem_3_4.optimality] [claim: mean.special.harmonic]

    Examples
    --------
    >>> from amid_ref import alpha_mixture
    >>> alpha_mixture([0.7, 0.2, 0.1], [0.1, 0.3, 0.6], 3, 0.5).round(6)  # harmonic
    array([0.298417, 0.409257, 0.292326])
    """
    lp, lq, ax = _checked_log_pair(p, q, axis, log_input=False)
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    lm, log_z = _log_unnormalized_and_normalizer(lp, lq, alpha, lam, ax)
    return np.exp(lm - log_z)


def alpha_mixture_normalizer(p, q, alpha: float, lam: float, axis: int = -1):
    r"""Normalizer :math:`Z_\alpha = \sum_x m_\alpha(p(x), q(x); \lambda)`.

    .. math::

        Z_\alpha \ge 1 \ (\alpha < -1),\qquad Z_{-1} = 1,\qquad Z_\alpha \le 1\ (\alpha > -1)

    by the power-mean inequality [claim: mixture.normalizer.side_of_minus1].

    Parameters
    ----------
    p, q : array_like of float, shape (..., V, ...)
        Normalized probabilities, same shape.
    alpha : float
        Any real or ``±inf``.
    lam : float
        Teacher weight in ``[0, 1]``.
    axis : int
        The vocabulary axis.

    Returns
    -------
    ndarray or float
        ``Z``, the input shape without ``axis``. ``Z = 0`` is returned (not raised) when the
        supports are disjoint and α ≥ 1, since the normalizer itself is well defined.
    """
    lp, lq, ax = _checked_log_pair(p, q, axis, log_input=False)
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    lm = _log_alpha_mean(lp, lq, alpha, lam)
    with np.errstate(divide="ignore"):
        return _scalar_or_array(np.exp(logsumexp(lm, axis=ax)))


def alpha_mixture_weight(log_p, log_q, alpha: float, lam: float):
    r"""Gradient weight of Proposition 3.5, :math:`w = \partial \log m_\alpha / \partial \log q`.

    .. math::

        w(x) = \frac{(1-\lambda)\, q(x)^\beta}{\lambda\, p(x)^\beta + (1-\lambda)\, q(x)^\beta},
        \qquad \beta = \frac{1-\alpha}{2}.

    Parameters
    ----------
    log_p, log_q : array_like of float
        Log-arguments (teacher, student), broadcast together; ``-inf`` allowed.
    alpha : float
        Any real or ``±inf``.
    lam : float
        Teacher weight in ``[0, 1]``.

    Returns
    -------
    ndarray or float
        ``w`` in ``[0, 1]``. Edge semantics: ``w = 1 − λ`` at α = 1; ``w = 1`` for λ = 0 and
        ``0`` for λ = 1; at α = ∓inf the indicator that q is the max/min (½ on ties, the
        average of the one-sided derivatives); ``w = 0`` wherever ``m = 0``.

    Notes
    -----
    Larger α increases w where p > q (mode covering) and decreases it where p < q
    [claim: prop_3_5.weight] [claim: prop_3_5.direction].
    """
    la = as_float_array(log_p, "log_p", allow_neg_inf=True)
    lb = as_float_array(log_q, "log_q", allow_neg_inf=True)
    try:
        np.broadcast_shapes(la.shape, lb.shape)
    except ValueError:
        raise ValueError(
            f"shape mismatch: log_p has shape {la.shape}, log_q has {lb.shape}"
        ) from None
    return _scalar_or_array(_alpha_mixture_weight(la, lb, check_alpha(alpha), check_lam(lam)))
