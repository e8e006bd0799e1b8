"""Input validation shared by the public functions of :mod:`amid_ref`.

Every check raises ``ValueError`` or ``TypeError`` whose message names the parameter and
the problem, before any arithmetic runs, so that bad input never surfaces as a NaN or as an
exception from deep inside NumPy.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import logsumexp

# The scalar checks are part of the contract (shared with the gpu package).
from amid_ref._specs import check_alpha, check_lam, check_real

__all__ = [
    "NORMALIZATION_TOL",
    "as_float_array",
    "check_alpha",
    "check_axis",
    "check_lam",
    "check_log_probabilities",
    "check_probabilities",
    "check_real",
    "check_same_shape",
    "check_vocabulary_axis",
    "empty_vocabulary_message",
    "temperature_overflow_message",
]

#: Probabilities must sum to 1 within this absolute tolerance (per row).
NORMALIZATION_TOL = 1e-6


def temperature_overflow_message(
    name: str, temperature: float, where: str, dtype: str = "float64"
) -> str:
    """The error for logits whose scaled offsets ``(x − max x)/T`` leave the dtype's range
    (the same words in every implementation): a finite logit would become a masked token
    (probability exactly 0) and change the support, which for α ≥ 1 and the KL-type
    divergences changes the loss itself, so it is refused rather than computed."""
    fix = "use a larger temperature" + ("" if dtype == "float64" else " or float64 logits")
    return (
        f"temperature={temperature!r} is too small for {name}: (logit − row max)/temperature "
        f"exceeds the {dtype} range on {where}, where a finite logit would become a masked "
        f"token (probability exactly 0); {fix}"
    )


def empty_vocabulary_message(name: str) -> str:
    """The error for logits of shape (..., 0) (the same words in every implementation).

    Zero rows with V > 0 are not an error (the per-row result is empty); a vocabulary axis
    of length 0 holds no distribution at all, whatever the number of rows."""
    return f"{name} has an empty vocabulary axis (V = 0)"


def check_vocabulary_axis(shape: tuple[int, ...], name: str) -> None:
    """Logits of this shape have a vocabulary axis of length V ≥ 1, or ``ValueError`` in the
    same words in every implementation: a scalar, or :func:`empty_vocabulary_message`."""
    if len(shape) == 0:
        raise ValueError(f"{name} must have a vocabulary axis (shape (..., V)), got a scalar")
    if shape[-1] == 0:
        raise ValueError(empty_vocabulary_message(name))


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def tensor_to_numpy(x):
    """A torch tensor as a NumPy array (detached, on the CPU; float16/bfloat16 widened to
    float64 exactly); anything else unchanged. A teacher tensor that requires grad is data
    here, not an error from inside torch."""
    if not _is_torch_tensor(x):
        return x
    t = x.detach().cpu()
    if t.is_floating_point():
        t = t.double()
    return t.numpy()


def as_float_array(
    x, name: str, *, allow_neg_inf: bool, allow_pos_inf: bool = False, allow_empty: bool = False
):
    """Convert ``x`` to a float64 array, rejecting non-float dtypes, NaN and infinities.

    Python scalars and lists of Python floats/ints are accepted (they carry no dtype);
    NumPy arrays and torch tensors of integer, boolean, complex or object dtype are
    rejected, as are lists of bools and, unless ``allow_empty``, empty arrays (the callers
    that allow them check the axes that must not be empty themselves).
    """
    x = tensor_to_numpy(x)
    if not isinstance(x, np.ndarray | np.generic) and not hasattr(x, "dtype"):
        try:
            kind = np.asarray(x).dtype.kind
        except (TypeError, ValueError):
            kind = "O"
        if kind == "b":
            raise TypeError(f"{name} must be real numbers, got bools")
    if isinstance(x, np.ndarray) or hasattr(x, "dtype"):
        arr = np.asarray(x)
        if arr.dtype.kind not in "f":
            raise TypeError(
                f"{name} must have a floating-point dtype, got {arr.dtype}; "
                f"convert with np.asarray({name}, dtype=np.float64)"
            )
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a real array-like of floats: {exc}") from None
        if isinstance(x, bool | np.bool_):
            raise TypeError(f"{name} must be a float, got a bool")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (first at index {_first(np.isnan(arr))})")
    if not allow_pos_inf and np.isposinf(arr).any():
        raise ValueError(f"{name} contains +inf (first at index {_first(np.isposinf(arr))})")
    if not allow_neg_inf and np.isneginf(arr).any():
        raise ValueError(f"{name} contains -inf (first at index {_first(np.isneginf(arr))})")
    return arr


def _first(mask: np.ndarray):
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return idx[0] if len(idx) == 1 else idx


def check_axis(arr: np.ndarray, axis: int, name: str) -> int:
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the vocabulary axis)")
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"axis={axis} is out of range for {name} with {arr.ndim} dimension(s)")
    return int(axis) % arr.ndim


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} has shape {a.shape}, {name_b} has {b.shape}")


def check_probabilities(p: np.ndarray, name: str, axis: int) -> None:
    """Non-negative entries summing to 1 (within NORMALIZATION_TOL) along ``axis``."""
    if (p < 0).any():
        raise ValueError(f"{name} has negative probabilities (first at index {_first(p < 0)})")
    if np.isinf(p).any():
        raise ValueError(f"{name} contains infinite probabilities")
    sums = p.sum(axis=axis)
    bad = np.abs(sums - 1.0) > NORMALIZATION_TOL
    if bad.any():
        worst = float(np.max(np.abs(sums - 1.0)))
        raise ValueError(
            f"{name} is not normalized along axis {axis}: a row sums to "
            f"{float(np.ravel(sums)[np.argmax(np.ravel(bad))])!r} (|sum-1| up to {worst:.3g} > "
            f"tolerance {NORMALIZATION_TOL})"
        )


def check_log_probabilities(lp: np.ndarray, name: str, axis: int) -> None:
    """Log-probabilities: no +inf/NaN (checked on conversion), logsumexp = 0 within tolerance."""
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        lse = logsumexp(lp, axis=axis)
    bad = ~(np.abs(lse) <= NORMALIZATION_TOL)
    if bad.any():
        raise ValueError(
            f"{name} (log-probabilities) is not normalized along axis {axis}: a row has "
            f"logsumexp {float(np.ravel(lse)[np.argmax(np.ravel(bad))])!r}, expected 0 "
            f"(tolerance {NORMALIZATION_TOL})"
        )
