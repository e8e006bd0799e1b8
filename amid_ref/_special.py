"""Small special functions that keep the divergences accurate near their limit parameters.

All are elementwise on float64 arrays and free of catastrophic cancellation:

* ``expm1mx(z) = e^z − 1 − z`` (Taylor series for |z| < 0.7, ``expm1(z) − z`` beyond);
* ``scaled_expm1_ratio(log_s, c, z) = e^(log_s)·expm1(c z)/c`` (``→ e^(log_s)·z`` at c = 0);
* ``scaled_expm1mx_ratio(log_s, c, z) = e^(log_s)·(e^(cz) − 1 − cz)/c`` (``→ 0`` at c = 0);
* ``log_normalize(x)``: ``x − logsumexp(x)`` and ``logsumexp(x)`` with the largest entry's
  log-probability exact (a log-softmax).

The scaled forms multiply by ``e^(log_s)`` before anything can overflow, so that
``y^λ·e^(λδ)`` is evaluated as ``x^λ`` and never as ``0·inf``; the product with the scale
is :func:`times_exp`, which is exactly 0 for a zero factor and forms ``x·e^(log_s)`` as one
exponential where ``e^(log_s)`` alone would overflow or underflow (``y^λ`` with λ < 0 and y
tiny: D(q‖q) is 0, not ``inf·0``).
"""

from __future__ import annotations

import math

import numpy as np

_SERIES_CUTOFF = 0.7
# e^z − 1 − z = Σ_{k≥2} z^k / k!, 22 terms: 0.7^22/22! < 1e-17 · 0.7^2/2.
_COEFFS = np.array([1.0 / math.factorial(k) for k in range(2, 24)])
_BIG = 40.0  # beyond this, e^z dominates 1 + z by e^40 and direct subtraction is exact enough
#: |log s| up to which e^(log s) is a normal float64 and x·e^(log s) is formed directly.
_EXP_SAFE = 700.0


def times_exp(x: np.ndarray, log_s: np.ndarray) -> np.ndarray:
    """``x·e^(log_s)`` without overflow or underflow of ``e^(log_s)`` alone: exactly 0
    where ``x = 0``; ``sign(x)·e^(log|x| + log_s)`` where ``|log_s| > 700``."""
    x = np.asarray(x, dtype=np.float64)
    log_s = np.asarray(log_s, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        direct = x * np.exp(np.clip(log_s, -_EXP_SAFE, _EXP_SAFE))
        far = np.sign(x) * np.exp(np.log(np.abs(x)) + log_s)
    out = np.where(np.abs(log_s) <= _EXP_SAFE, direct, far)
    return np.where(x == 0.0, 0.0, out)


def log_normalize(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    r"""``(x − logsumexp(x), logsumexp(x))`` along ``axis`` (keepdims), accurate for every entry.

    With :math:`M = \max x` attained at k and :math:`S_o = \sum_{x \ne k} e^{x - M}` (the
    other entries, one occurrence of the maximum left out),

    .. math::

        \log\operatorname{softmax}(x)_j = (x_j - M) - \operatorname{log1p}(S_o),\qquad
        \operatorname{logsumexp}(x) = M + \operatorname{log1p}(S_o).

    The usual form ``(x − M) − log(Σ e^(x−M))`` rounds ``1 + S_o`` to 1 when the row is
    confident (S_o < 1e-16): the largest entry's log-probability comes out exactly 0 and
    ``1 − q_k = −expm1(log q_k)``, which a gradient's projection multiplies by a term as
    large as 1e14 (χ², AB with a negative parameter), is lost. Here it is exact to a few
    ulps of itself: ``−expm1(−log1p(S_o)) = S_o/(1 + S_o)``. Rows of only ``−inf`` give
    ``−inf`` for the sum and NaN entries (callers reject them).
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        top = np.max(x, axis=axis, keepdims=True)
        y = x - np.where(np.isneginf(top), 0.0, top)
        e = np.exp(y)
        k = np.argmax(x, axis=axis)
        np.put_along_axis(e, np.expand_dims(k, axis), 0.0, axis=axis)
        corr = np.log1p(np.sum(e, axis=axis, keepdims=True))
        lse = np.where(np.isneginf(top), -np.inf, top + corr)
        out = np.where(np.isneginf(top), np.nan, y - corr)
    return out, lse


def expm1mx(z: np.ndarray) -> np.ndarray:
    """``e^z − 1 − z`` accurate to a few ulps for all finite z (``+inf`` → ``inf``)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    small = np.abs(z) < _SERIES_CUTOFF
    zs = z[small]
    acc = np.zeros_like(zs)
    for c in _COEFFS[::-1]:
        acc = acc * zs + c
    out[small] = acc * zs * zs
    zl = z[~small]
    with np.errstate(over="ignore", invalid="ignore"):
        out[~small] = np.where(np.isposinf(zl), np.inf, np.expm1(zl) - zl)
    return out


def scaled_expm1_ratio(log_s: np.ndarray, c: float, z: np.ndarray, log_top=None) -> np.ndarray:
    """``exp(log_s)·expm1(c·z)/c``, equal to ``exp(log_s)·z`` at ``c = 0``.

    ``log_top``, if given, is ``log_s + c·z`` computed more accurately by the caller (e.g.
    ``a_·log x + b_·log y`` instead of ``λ·log y + a_·(log x − log y)``, whose rounding is
    an ulp of the larger log); it is used where ``e^(cz)`` dominates.
    """
    log_s = np.asarray(log_s, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if c == 0.0:
        return times_exp(z, log_s)
    with np.errstate(over="ignore"):
        s = np.exp(log_s)
    cz = c * z
    big = cz > _BIG
    top = log_s + cz if log_top is None else log_top
    with np.errstate(over="ignore", invalid="ignore"):
        direct = (np.exp(top) - s) / c
        return np.where(big, direct, times_exp(np.expm1(np.where(big, 0.0, cz)) / c, log_s))


def scaled_expm1mx_ratio(log_s: np.ndarray, c: float, z: np.ndarray, log_top=None) -> np.ndarray:
    """``exp(log_s)·(e^(cz) − 1 − cz)/c``, equal to ``0`` at ``c = 0`` (``log_top`` as in
    :func:`scaled_expm1_ratio`)."""
    log_s = np.asarray(log_s, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if c == 0.0:
        return np.zeros(np.broadcast_shapes(log_s.shape, z.shape))
    with np.errstate(over="ignore"):
        s = np.exp(log_s)
    cz = c * z
    big = cz > _BIG
    top = log_s + cz if log_top is None else log_top
    with np.errstate(over="ignore", invalid="ignore"):
        direct = (np.exp(top) - s * (1.0 + cz)) / c
        return np.where(big, direct, times_exp(expm1mx(np.where(big, 0.0, cz)) / c, log_s))


def expm1mx_ratio(c: float, z: np.ndarray) -> np.ndarray:
    """``(e^(cz) − 1 − cz)/c`` for ``|cz| ≤ 1`` (the unscaled kernel of
    :func:`scaled_expm1mx_ratio`), 0 at ``c = 0``."""
    z = np.asarray(z, dtype=np.float64)
    if c == 0.0:
        return np.zeros(z.shape)
    return expm1mx(c * z) / c


def call_generator(fn, u: np.ndarray, name: str) -> np.ndarray:
    """``fn(u)`` of a user generator (f or f_prime) on the array of ratios, with every
    failure reported as the generator's: it must be vectorized, real, same shape, and
    never −inf (a convex f with f(1) = 0 is > −inf; f' is −inf only at u = 0)."""
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = np.asarray(fn(u), dtype=np.float64)
    except Exception as exc:  # any failure inside user code
        raise TypeError(
            f"the f-divergence generator {name} failed on an array of ratios a/b "
            f"({type(exc).__name__}: {exc}); {name} must be vectorized over NumPy arrays"
        ) from exc
    if out.shape != u.shape:
        raise ValueError(
            f"the f-divergence generator {name} must be vectorized (same shape out as in), "
            f"got shape {out.shape} for input shape {u.shape}"
        )
    return out
