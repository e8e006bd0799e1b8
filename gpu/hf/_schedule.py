r"""A λ (and α) schedule as a ``TrainerCallback`` that checkpoints write and resumes restore."""

from __future__ import annotations

import math
import numbers
from typing import Any

from gpu._validation import check_alpha, check_lam

__all__ = ["AMiDSchedule"]

SHAPES = ("linear", "cosine")


def _interpolate(start: float, end: float, frac: float, shape: str) -> float:
    if start == end:  # a constant, ±inf included (inf − inf would be NaN)
        return start
    if shape == "linear":
        w = frac
    elif shape == "cosine":
        w = 0.5 * (1.0 - math.cos(math.pi * frac))
    else:  # pragma: no cover - checked in __init__
        raise ValueError(shape)
    return start + (end - start) * w


def _endpoints(value: Any, name: str, check) -> list[float]:
    """``[start, end]`` from a number (a constant) or a pair, each checked by ``check``."""
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", None) == 1:
        pair = list(value)
    else:  # one number (check() refuses anything else, naming the parameter)
        pair = [value, value]
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (start, end) pair, got {value!r}")
    start, end = (check(x) for x in pair)
    if start != end and not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(
            f"{name}=({start}, {end}): a schedule between an infinite and another value has no "
            f"meaning (the path would stay at {start if math.isinf(start) else end} and jump at "
            f"one end); give finite ends, or set a constant {name} on the criterion"
        )
    return [start, end]


def _callback_bases() -> tuple[type, ...]:
    try:
        # transformers: optional (the hf extra)
        from transformers.trainer_callback import ExportableState, TrainerCallback
    except ImportError:  # pragma: no cover - the extra is not installed
        return (object,)
    return (TrainerCallback, ExportableState)


class AMiDSchedule(*_callback_bases()):
    r"""λ (and optionally α) as a function of the optimizer step, checkpointed.

    .. math::

        \lambda_k = \lambda_0 + (\lambda_1 - \lambda_0)\,\phi\big(\min(1, k/K)\big),\quad
        \phi(u) = u\ (\text{linear})\ \text{or}\ \tfrac12(1 - \cos\pi u)\ (\text{cosine}),

    k the trainer's ``global_step`` and K = ``num_steps`` (default: the run's
    ``max_steps``); the same for α when ``alpha`` is given. A schedule sets ``criterion.lam``
    (and ``.alpha``) before every batch: for a preset that is its own parameter (TAID's
    ``t``, GKD's ``beta`` with its term weights). As a ``TrainerCallback`` with
    ``ExportableState`` its arguments and current values are written into every
    checkpoint's ``trainer_state.json`` (``stateful_callbacks``) and restored on resume
    (``TrainingArguments(restore_callback_states_from_checkpoint=True)``); as the values are
    a function of ``global_step``, which every checkpoint stores, a resumed run continues
    the schedule exactly either way.

    Parameters
    ----------
    lam : float or (float, float)
        λ at step 0 and at step K (e.g. TAID: ``(0.4, 1.0)`` with ``gpu.presets`` "taid"),
        each in [0, 1]; one number is a constant λ.
    alpha : float or (float, float), optional
        α at step 0 and at step K; ``None`` keeps the criterion's α. The ends may be
        ±inf only when equal (a constant): a path from an infinite α has no finite points.
    num_steps : int, optional
        K > 0; ``None``: the trainer's ``max_steps``.
    shape : {"linear", "cosine"}
        φ above.
    """

    def __init__(
        self,
        lam: float | tuple[float, float] | list[float],
        alpha: float | tuple[float, float] | list[float] | None = None,
        num_steps: int | None = None,
        shape: str = "linear",
    ) -> None:
        self.lam = _endpoints(lam, "lam", check_lam)
        self.alpha = None if alpha is None else _endpoints(alpha, "alpha", check_alpha)
        if num_steps is not None and (
            isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral)
        ):
            raise TypeError(f"num_steps must be a positive int or None, got {num_steps!r}")
        if num_steps is not None and num_steps <= 0:
            raise ValueError(f"num_steps must be a positive int or None, got {num_steps!r}")
        if not isinstance(shape, str) or shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; expected 'linear' or 'cosine'")
        self.num_steps = None if num_steps is None else int(num_steps)
        self.shape = shape
        self.step = 0
        self.lam_value = self.lam[0]
        self.alpha_value = None if self.alpha is None else self.alpha[0]

    def values_at(self, step: int, max_steps: int | None = None) -> tuple[float, float | None]:
        """(λ, α) at optimizer step ``step`` (α is ``None`` when not scheduled).

        Parameters
        ----------
        step : int
            The optimizer step k.
        max_steps : int, optional
            K when ``num_steps`` is ``None`` (the trainer's ``max_steps``).

        Returns
        -------
        (float, float or None)
            λ_k and α_k.
        """
        horizon = self.num_steps or max_steps or 1
        frac = min(1.0, max(0.0, step / horizon))
        lam = _interpolate(self.lam[0], self.lam[1], frac, self.shape)
        lam = min(1.0, max(0.0, lam))
        alpha = None
        if self.alpha is not None:
            alpha = _interpolate(self.alpha[0], self.alpha[1], frac, self.shape)
        return lam, alpha

    def apply(self, criterion) -> None:
        """Write the current values into a criterion (``.lam``, and ``.alpha`` if scheduled).

        Parameters
        ----------
        criterion : gpu.AMiDLoss, gpu.AMiDFusedLinearLoss or gpu.presets.PresetLoss
            The criterion to set.
        """
        criterion.lam = self.lam_value
        if self.alpha_value is not None:
            criterion.alpha = self.alpha_value

    # --- TrainerCallback / ExportableState ----------------------------------------------------

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = int(state.global_step)
        self.lam_value, self.alpha_value = self.values_at(self.step, state.max_steps)
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        return self.on_step_begin(args, state, control)

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "lam": list(self.lam),
                "alpha": None if self.alpha is None else list(self.alpha),
                "num_steps": self.num_steps,
                "shape": self.shape,
            },
            "attributes": {
                "step": self.step,
                "lam_value": self.lam_value,
                "alpha_value": self.alpha_value,
            },
        }
