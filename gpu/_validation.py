"""Argument checks of the :mod:`gpu` package.

Every check raises ``TypeError`` or ``ValueError`` naming the parameter before any
arithmetic runs. Checks that need to look at tensor *values* (NaN, ``+inf``, rows of only
``-inf``) are not done here: they would cost a full pass over the logits and a device
synchronization, so :mod:`gpu._loss` folds them into its chunked pass and raises once at the
end of the forward (see :func:`gpu.amid_loss`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from amid_ref._validation import as_real_scalar

#: The four argument orders, ``D(first ‖ second)`` with p = teacher, q = student,
#: r = assistant. Same keys and meaning as :data:`amid_ref.ORDERS`.
ORDERS: dict[str, tuple[str, str]] = {
    "pr": ("p", "r"),
    "qr": ("q", "r"),
    "rp": ("r", "p"),
    "rq": ("r", "q"),
}

REDUCTIONS = ("mean", "sum", "none")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_alpha(alpha: Any) -> float:
    """α: any real number or ±inf (the scalar rule of :func:`amid_ref._validation.as_real_scalar`:
    Python/NumPy reals, 0-d arrays, one-element tensors); NaN is rejected."""
    alpha = as_real_scalar(alpha, "alpha", "a real number (float, ±inf allowed)")
    if math.isnan(alpha):
        raise ValueError("alpha is NaN; it must be a real number or ±inf")
    return alpha


def check_lam(lam: Any) -> float:
    """λ ∈ [0, 1] (weight of the teacher in the assistant)."""
    lam = as_real_scalar(lam, "lam", "a real number in [0, 1]")
    if math.isnan(lam) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    return lam


def check_temperature(temperature: Any) -> float:
    temperature = as_real_scalar(temperature, "temperature", "a positive real number")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return temperature


def check_order(order: Any) -> tuple[str, str]:
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(
            f"unknown order {order!r}; expected one of {', '.join(ORDERS)} "
            "(pr: D(p‖r), qr: D(q‖r), rp: D(r‖p), rq: D(r‖q))"
        )
    return ORDERS[order]


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    return reduction


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return int(chunk_size)


def check_ignore_index(ignore_index: Any, labels_dtype: torch.dtype = torch.int64) -> int:
    """An int that a label of ``labels_dtype`` can equal (else nothing would be masked)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    info = torch.iinfo(labels_dtype)
    if not info.min <= int(ignore_index) <= info.max:
        raise ValueError(
            f"ignore_index={int(ignore_index)} is outside the range [{info.min}, {info.max}] "
            f"of the labels' dtype {labels_dtype}: no label could equal it"
        )
    return int(ignore_index)


def check_float_tensor(x: Any, name: str) -> torch.Tensor:
    """A floating-point tensor with a (non-empty) vocabulary axis."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or "
            f"float64), got {x.dtype}"
        )
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (no data); use a cpu or cuda tensor")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a vocabulary axis (shape (..., V)), got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty vocabulary axis (V = 0)")
    return x


def check_pair(
    a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, *, vocab: bool = True
) -> None:
    """Same shape (a clear message for a vocabulary mismatch) and same device."""
    if a.shape != b.shape:
        if vocab and a.shape[:-1] == b.shape[:-1]:
            raise ValueError(
                f"vocabulary sizes differ: {name_a} has V = {a.shape[-1]}, {name_b} has "
                f"V = {b.shape[-1]}; teacher and student must share one vocabulary (pad the "
                "smaller one with -inf logits)"
            )
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)}, {name_b} has {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def check_labels(labels: Any, leading_shape: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of integers, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != leading_shape:
        raise ValueError(
            f"labels must have the leading shape of the logits {tuple(leading_shape)}, got "
            f"{tuple(labels.shape)}"
        )
    if labels.device != device:
        raise ValueError(f"labels are on {labels.device} but the logits are on {device}")
    return labels


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (never less than float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def resolve_div_params(name: Any, div_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the divergence name and its parameters against the shared registry.

    The parameter names, defaults and admissible ranges are those of the reference
    registry (:mod:`amid_ref._divergences`), so that the two packages never disagree on
    what ``{"alpha": 0.2, "beta": 0.7}`` means; the arithmetic here is separate.
    """
    from gpu._divergences import GPU_DIVERGENCES

    if not isinstance(name, str):
        raise TypeError(f"divergence must be a string, got {name!r}")
    if name not in GPU_DIVERGENCES:
        raise ValueError(
            f"unknown divergence {name!r} for the gpu package; known: {', '.join(GPU_DIVERGENCES)}"
        )
    if div_params is not None and not isinstance(div_params, Mapping):
        raise TypeError(f"div_params must be a mapping of parameter names, got {div_params!r}")
    from amid_ref._divergences import get_divergence

    return dict(get_divergence(name).resolve_params(div_params))
