"""Argument checks of the :mod:`gpu` package.

Every check raises ``TypeError`` or ``ValueError`` naming the parameter before any
arithmetic runs. Checks that need to look at tensor *values* (NaN, ``+inf``, rows of only
``-inf``) are not done here: they would cost a full pass over the logits and a device
synchronization, so :mod:`gpu._loss` folds them into its chunked pass and raises once at the
end of the forward (see :func:`gpu.amid_loss`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

# The contract (amid_ref.contract) holds the orders, the scalar checks and the divergence
# parameter rules that the reference and this package share; this module imports no other
# gpu module.
from amid_ref.contract import (
    ORDERS,
    check_alpha,
    check_bool,
    check_lam,
    check_order,
    check_temperature,
    check_vocabulary_axis,
    get_spec,
    resolve_params,
)

__all__ = [
    "ORDERS",
    "REDUCTIONS",
    "check_alpha",
    "check_bool",
    "check_chunk_size",
    "check_float_tensor",
    "check_ignore_index",
    "check_labels",
    "check_lam",
    "check_order",
    "check_pair",
    "check_reduction",
    "check_temperature",
    "compute_dtype",
    "resolve_div_params",
]

#: ``"batchmean"`` is an alias of ``"mean"``: the sum over valid positions divided by their
#: number (TRL's ``generalized_jsd_loss`` convention for token-level distillation).
REDUCTIONS = ("mean", "sum", "none", "batchmean")
#: Opt-in loss scalings: ``"T2"`` multiplies the loss (and its gradient) by T² (Hinton 2015).
TEMPERATURE_SCALINGS = (None, "T2")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_reduction(reduction: Any) -> str:
    """One of :data:`REDUCTIONS`; ``"batchmean"`` is returned as ``"mean"``."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    return "mean" if reduction == "batchmean" else reduction


def check_temperature_scaling(scaling: Any, temperature: float) -> float:
    """The factor applied to the loss: T² for ``"T2"``, 1 for ``None``."""
    if scaling is not None and not (isinstance(scaling, str) and scaling in TEMPERATURE_SCALINGS):
        raise ValueError(
            f"unknown temperature_scaling {scaling!r}; expected None or 'T2' (multiply the "
            "loss by temperature**2)"
        )
    return temperature * temperature if scaling == "T2" else 1.0


def check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return int(chunk_size)


def check_ignore_index(ignore_index: Any, labels_dtype: torch.dtype = torch.int64) -> int | None:
    """An int that a label of ``labels_dtype`` can equal (else nothing would be masked), or
    ``None`` (no label value is ignored)."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
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
    check_vocabulary_axis(tuple(x.shape), name)
    return x


def check_pair(
    a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, *, vocab: bool = True
) -> None:
    """Same shape (a clear message for a vocabulary mismatch) and same device."""
    if a.shape != b.shape:
        if vocab and a.shape[:-1] == b.shape[:-1]:
            raise ValueError(
                f"vocabulary sizes differ: {name_a} has V = {a.shape[-1]}, {name_b} has "
                f"V = {b.shape[-1]}; pass vocab_alignment='pad' or 'truncate' where one "
                "vocabulary is a padded copy of the other"
            )
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)}, {name_b} has {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def check_labels(labels: Any, leading_shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Integer labels or a bool mask (True = the position counts) of the leading shape."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"labels must be a torch.Tensor of integers or bools, got {type(labels).__name__}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must have an integer or bool dtype, got {labels.dtype}")
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
    """Check the divergence name and its parameters against the contract.

    The parameter names, defaults and admissible ranges are those of the records of
    :mod:`amid_ref._specs`, shared with :mod:`amid_ref`, so that the two packages never
    disagree on what ``{"alpha": 0.2, "beta": 0.7}`` means; the arithmetic here is separate.
    A divergence the contract marks as not offered by ``gpu`` raises ``ValueError`` with the
    reason.
    """
    spec = get_spec(name, "gpu")
    if div_params is not None and not isinstance(div_params, Mapping):
        raise TypeError(f"div_params must be a mapping of parameter names, got {div_params!r}")
    return resolve_params(spec, div_params)
