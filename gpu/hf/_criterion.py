"""The objectives that :mod:`gpu.hf` takes, and the checks of its public parameters.

A *criterion* is what the trainers distil with: a :class:`gpu.AMiDLoss`, a
:class:`gpu.AMiDFusedLinearLoss`, a preset (``gpu.presets.get(name, ...)``, an
:class:`amid_ref.presets.Preset`) or its module form :class:`gpu.presets.PresetLoss`.
:func:`as_criterion` turns each into a module whose ``alpha`` and ``lam`` a schedule can set;
:func:`settings_of` reads the one :class:`gpu.AMiDLoss` that holds its settings and
:func:`terms_of` its ``(order, weight)`` terms.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from amid_ref import presets as _reference_presets
from gpu._fused import AMiDFusedLinearLoss
from gpu._loss import AMiDLoss
from gpu.presets import PresetLoss, TorchPreset

__all__ = [
    "HF_IGNORE_INDEX",
    "as_criterion",
    "check_ce_weight",
    "check_fused",
    "check_num_items_in_batch",
    "default_criterion",
    "parameter_of",
    "settings_of",
    "terms_of",
]

#: The label value that Hugging Face's collators, models and ``Trainer`` ignore.
HF_IGNORE_INDEX = -100

_CRITERIA = (
    "a gpu.AMiDLoss, a gpu.AMiDFusedLinearLoss, a preset (gpu.presets.get(name, ...)) or its "
    "criterion form (gpu.presets.PresetLoss)"
)


def default_criterion() -> AMiDLoss:
    """``AMiDLoss(alpha=0.0, lam=0.1, shift_labels=True)``: KL(p‖r), Hugging Face labels."""
    return AMiDLoss(alpha=0.0, lam=0.1, shift_labels=True)


def as_criterion(criterion: Any, name: str = "criterion") -> torch.nn.Module:
    """The criterion as a module with settable ``alpha`` and ``lam``.

    A preset (:class:`gpu.presets.TorchPreset` or :class:`amid_ref.presets.Preset`) becomes
    its :class:`gpu.presets.PresetLoss` with Hugging Face's unshifted labels
    (``shift_labels=True``) and ``ignore_index=-100``; modules are returned as they are.
    Anything else raises ``TypeError`` naming ``name``.
    """
    if isinstance(criterion, (AMiDLoss, AMiDFusedLinearLoss, PresetLoss)):
        return criterion
    if isinstance(criterion, (TorchPreset, _reference_presets.Preset)):
        return PresetLoss(criterion, shift_labels=True)
    raise TypeError(f"{name} must be {_CRITERIA}; got {type(criterion).__module__}."
                    f"{type(criterion).__qualname__}")  # fmt: skip


def settings_of(criterion: torch.nn.Module) -> AMiDLoss:
    """The :class:`gpu.AMiDLoss` that holds the criterion's settings."""
    return criterion if isinstance(criterion, AMiDLoss) else criterion.config


def terms_of(criterion: torch.nn.Module) -> tuple[tuple[str, float], ...]:
    """``((order, weight), ...)``: one term of weight 1 unless the criterion is a preset."""
    if isinstance(criterion, PresetLoss):
        return tuple((o, w) for o, w in criterion.terms if w != 0.0) or criterion.terms[:1]
    return ((settings_of(criterion).order, 1.0),)


def parameter_of(criterion: torch.nn.Module) -> tuple[str, float] | None:
    """The preset's own parameter ``(name, value)`` (TAID's ``t``, GKD's ``beta``), if any."""
    return criterion.parameter if isinstance(criterion, PresetLoss) else None


def check_ce_weight(ce_weight: Any) -> float:
    """A finite real ≥ 0 (the weight of the cross-entropy term)."""
    if (
        isinstance(ce_weight, torch.Tensor)
        and ce_weight.numel() == 1
        and not (ce_weight.dtype == torch.bool or ce_weight.is_complex())
    ):
        ce_weight = ce_weight.item()
    if isinstance(ce_weight, (bool, str)) or not isinstance(ce_weight, numbers.Real):
        raise TypeError(f"ce_weight must be a real number >= 0, got {ce_weight!r}")
    value = float(ce_weight)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"ce_weight must be a finite number >= 0 (the weight of the cross-entropy on the "
            f"labels; a negative weight maximizes it), got {ce_weight!r}"
        )
    return value


def check_fused(fused: Any) -> bool | None:
    """``None`` (automatic), ``True`` or ``False``."""
    if fused is None or isinstance(fused, bool):
        return fused
    raise TypeError(f"fused must be None (automatic), True or False, got {fused!r}")


def check_num_items_in_batch(num_items_in_batch: Any, n_tokens: int) -> float:
    """The divisor N: a finite number ≥ 0, and > 0 when this batch has counted positions.

    A tensor of several equal entries (``DataParallel`` repeats the count per device) is
    read as that one number.
    """
    value = num_items_in_batch
    if isinstance(value, torch.Tensor):
        if value.numel() == 0 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(
                f"num_items_in_batch must be a number or a one-number tensor, got {value!r}"
            )
        flat = value.detach().reshape(-1)
        if flat.numel() > 1 and not bool((flat == flat[0]).all()):
            raise ValueError(
                f"num_items_in_batch holds different numbers {flat.tolist()}; expected one count"
            )
        value = flat[0].item()
    if isinstance(value, (bool, str)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"num_items_in_batch must be a number (the count of counted label positions in the "
            f"optimizer step) or None, got {num_items_in_batch!r}"
        )
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"num_items_in_batch must be a finite count >= 0, got {num_items_in_batch!r}"
        )
    if value == 0.0 and n_tokens > 0:
        raise ValueError(
            f"num_items_in_batch is 0 but this batch has {n_tokens} counted label positions: "
            "the step's count cannot be smaller than one of its batches' (the batch would be "
            "skipped)"
        )
    return value
