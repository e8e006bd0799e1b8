"""Conversions, parameter checks and precision constants of :mod:`amid_ref.precise`.

Inputs become exact ``mpf`` (object arrays of them), results go back to float64 with
:func:`to_float` (one rounding, subnormals included); the parameter checks use the input
rule of the contract (:func:`amid_ref._specs.as_real_scalar`).
"""

from __future__ import annotations

import math
import numbers

import mpmath
import numpy as np
from mpmath import mpf

from amid_ref._specs import as_real_scalar
from amid_ref._validation import check_vocabulary_axis, tensor_to_numpy

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


def _mpf_array(x, name: str, *, log_domain: bool, allow_empty: bool = False) -> np.ndarray:
    """Convert to an object array of ``mpf`` (exact for float64 input).

    ``log_domain``: entries may be any real or ``-inf`` (log of zero); otherwise they must be
    finite and non-negative. NaN is always rejected; ``+inf`` too. An empty array is
    rejected unless ``allow_empty`` (then the caller checks the axes that must not be empty).
    """
    x = tensor_to_numpy(x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "iub":
        raise TypeError(
            f"{name} must have a floating-point dtype, got {x.dtype}; "
            f"convert with np.asarray({name}, dtype=np.float64)"
        )
    arr = np.asarray(x)
    if arr.size == 0 and not allow_empty:
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


def _logits_array(x, name: str) -> np.ndarray:
    """Logits of shape (..., V) as an object array of ``mpf``: V ≥ 1 (the words of
    :func:`amid_ref._validation.check_vocabulary_axis`), any number of rows, zero
    included (the per-row results are then empty)."""
    arr = _mpf_array(x, name, log_domain=True, allow_empty=True)
    check_vocabulary_axis(arr.shape, name)
    return arr


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

    Examples
    --------
    >>> from mpmath import mpf
    >>> from amid_ref import precise
    >>> precise.to_float([mpf(1) / 4, mpf("-inf")])
    array([0.25, -inf])
    """
    arr = np.asarray(x, dtype=object)
    out = np.array([_to_float_scalar(v) for v in arr.flat], dtype=np.float64)
    return out.reshape(arr.shape)


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
