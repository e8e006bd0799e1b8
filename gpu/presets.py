r"""Prior distillation methods as AMiD settings, in torch.

Torch twin of :mod:`amid_ref.presets`, on the *same* registry (:data:`PRESETS` is
:data:`amid_ref.presets.PRESETS`; overrides are resolved by :func:`amid_ref.presets.get`),
so the two packages cannot disagree on what ``"taid"`` means. A preset's loss is

.. math::

    L = \sum_k w_k\, D_{\text{order}_k}\big(p, q, r^{(\alpha,\lambda)}\big),

each term a :func:`gpu.amid_loss` (or :func:`gpu.amid_fused_linear_loss`) call.
:meth:`TorchPreset.criterion` gives the same loss as a module shaped like
:class:`gpu.AMiDLoss` (:class:`PresetLoss`): ``alpha`` and ``lam`` are schedulable float
attributes kept in ``state_dict``, and it is accepted wherever :mod:`gpu.hf` takes a
criterion.

Examples
--------
>>> import torch, gpu
>>> s, t = torch.randn(4, 50, requires_grad=True), torch.randn(4, 50)
>>> taid = gpu.presets.get("taid", t=0.3)
>>> (taid.alpha, taid.lam, taid.terms)
(1.0, 0.3, (('rq', 1.0),))
>>> taid.loss(s, t).backward()
>>> crit = taid.criterion(shift_labels=True)  # the module form
>>> crit.lam = 0.5  # TAID's t, e.g. from a schedule
>>> crit.parameter
('t', 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from amid_ref import presets as _reference
from gpu._fused import amid_fused_linear_loss
from gpu._loss import AMiDLoss, amid_loss

__all__ = ["PRESETS", "PresetLoss", "TorchPreset", "get"]

#: The one registry of named settings (shared with :mod:`amid_ref.presets`).
PRESETS = _reference.PRESETS


@dataclass(frozen=True)
class TorchPreset:
    """A named AMiD setting (an :class:`amid_ref.presets.Preset`) evaluated in torch."""

    preset: _reference.Preset

    def __getattr__(self, name: str) -> Any:  # name, alpha, lam, divergence, terms, ...
        return getattr(self.__dict__["preset"], name)

    def _sum(self, term) -> torch.Tensor:
        total = None
        for order, weight in self.preset.terms:
            if weight != 0.0:
                value = weight * term(order)
                total = value if total is None else total + value
        return total

    def _common(self) -> dict[str, Any]:
        p = self.preset
        return dict(
            alpha=p.alpha,
            lam=p.lam,
            divergence=p.divergence,
            div_params=dict(p.div_params),
            detach_assistant=p.detach_assistant,
        )

    def loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """``Σ_k w_k · gpu.amid_loss(..., order=order_k)``; ``kwargs`` as in
        :func:`gpu.amid_loss` (labels, reduction, temperature, shift_labels, ...)."""
        common = {**self._common(), **kwargs}
        return self._sum(
            lambda order: amid_loss(student_logits, teacher_logits, order=order, **common)
        )

    def fused_loss(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The same from the lm_head inputs (:func:`gpu.amid_fused_linear_loss`)."""
        common = {**self._common(), **kwargs}
        return self._sum(
            lambda order: amid_fused_linear_loss(
                student_hidden, student_weight, teacher_hidden, teacher_weight, order=order,
                **common,
            )
        )  # fmt: skip

    def criterion(
        self,
        temperature: float = 1.0,
        ignore_index: int | None = -100,
        reduction: str = "mean",
        chunk_size: int | None = None,
        *,
        shift_labels: bool = False,
        temperature_scaling: str | None = None,
        compile: bool | str = False,
    ) -> PresetLoss:
        """The preset as a :class:`PresetLoss` module (arguments as in :class:`PresetLoss`)."""
        return PresetLoss(
            self, temperature, ignore_index, reduction, chunk_size, shift_labels=shift_labels,
            temperature_scaling=temperature_scaling, compile=compile,
        )  # fmt: skip


class PresetLoss(torch.nn.Module):
    r"""A preset as a criterion: the module form of :meth:`TorchPreset.loss`.

    .. math::

        \mathcal L = \sum_k w_k\, \operatorname{reduce}_{\text{valid positions}}
            D_{\text{order}_k}\big(p, q, r^{(\alpha,\lambda)}\big)

    Shaped like :class:`gpu.AMiDLoss`: ``alpha`` and ``lam`` read and assign as floats
    (validated on assignment) and are float64 buffers, so ``state_dict()`` holds a
    schedule's current values; ``forward(student_logits, teacher_logits, labels)``. Setting
    ``lam`` sets the preset's own parameter: TAID's interpolation ``t``, or GKD's ``beta``
    together with its term weights (β, 1 − β). The settings common to every term
    (temperature, labels, reduction, ...) are held by an :class:`gpu.AMiDLoss`,
    :attr:`config`, which checks them.

    Parameters
    ----------
    preset : TorchPreset or amid_ref.presets.Preset or str
        The preset (``gpu.presets.get(name, **overrides)``) or its name.
    temperature : float
        As in :func:`gpu.amid_loss`.
    ignore_index : int or None
        As in :func:`gpu.amid_loss`.
    reduction : {"mean", "batchmean", "sum", "none"}
        As in :func:`gpu.amid_loss`, applied to every term.
    chunk_size : int, optional
        As in :func:`gpu.amid_loss`.
    shift_labels : bool
        As in :func:`gpu.amid_loss`: False (the torch convention) masks position t by
        ``labels[..., t]``; True takes Hugging Face's unshifted causal-LM labels.
    temperature_scaling : {None, "T2"}
        As in :func:`gpu.amid_loss`.
    compile : bool or str
        As in :func:`gpu.amid_loss`.

    Examples
    --------
    >>> import torch, gpu
    >>> crit = gpu.presets.get("gkd_jsd", beta=0.5).criterion()
    >>> crit.lam = 0.2
    >>> crit.terms
    (('pr', 0.2), ('qr', 0.8))
    >>> s, t = torch.randn(3, 7, requires_grad=True), torch.randn(3, 7)
    >>> crit(s, t).backward()
    """

    def __init__(
        self,
        preset: TorchPreset | _reference.Preset | str,
        temperature: float = 1.0,
        ignore_index: int | None = -100,
        reduction: str = "mean",
        chunk_size: int | None = None,
        *,
        shift_labels: bool = False,
        temperature_scaling: str | None = None,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if isinstance(preset, str):
            preset = _reference.get(preset)
        elif isinstance(preset, TorchPreset):
            preset = preset.preset
        if not isinstance(preset, _reference.Preset):
            raise TypeError(
                "preset must be a gpu.presets.get(...) result, an amid_ref.presets.Preset or a "
                f"preset name, got {type(preset).__name__}"
            )
        self._preset = preset
        # One validated configuration for every term (alpha and lam are its buffers).
        self.config = AMiDLoss(
            preset.alpha, preset.lam, preset.divergence, preset.terms[0][0],
            dict(preset.div_params), temperature, ignore_index, reduction,
            preset.detach_assistant, chunk_size, shift_labels=shift_labels,
            temperature_scaling=temperature_scaling, compile=compile,
        )  # fmt: skip

    # --- the preset's fields, current values ----------------------------------------------

    @property
    def preset(self) -> _reference.Preset:
        """The preset with the current ``alpha`` and ``lam`` (and GKD's weights)."""
        lam, alpha = self.config.lam, self.config.alpha
        if self._preset.name == "gkd_jsd":
            terms = _reference.get("gkd_jsd", beta=lam).terms
            return replace(self._preset, alpha=alpha, lam=lam, terms=terms)
        return replace(self._preset, alpha=alpha, lam=lam)

    @property
    def name(self) -> str:
        return self._preset.name

    @property
    def terms(self) -> tuple[tuple[str, float], ...]:
        """``((order, weight), ...)`` at the current λ."""
        return self.preset.terms

    @property
    def parameter(self) -> tuple[str, float] | None:
        """``(name, value)`` of the preset's own parameter (TAID's ``t``, GKD's ``beta``:
        both are λ), or ``None`` for presets without one."""
        name = _reference.LAMBDA_PARAMETERS.get(self._preset.name)
        return None if name is None else (name, self.config.lam)

    def __getattr__(self, name: str) -> Any:
        if name in ("alpha", "lam"):
            return getattr(self._modules["config"], name)
        if name in _SHARED_SETTINGS and "config" in self.__dict__.get("_modules", {}):
            return getattr(self._modules["config"], name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("alpha", "lam") and "config" in self.__dict__.get("_modules", {}):
            setattr(self._modules["config"], name, value)
            return
        super().__setattr__(name, value)

    def _term_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`gpu.amid_loss` shared by the terms (no ``order``)."""
        kwargs = self.config._loss_kwargs()
        kwargs.pop("order")
        return kwargs

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = self._term_kwargs()
        total = None
        for order, weight in _nonzero_terms(self.terms):
            term = weight * amid_loss(
                student_logits, teacher_logits, order=order, labels=labels, **kwargs
            )
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return (
            f"{self.name!r}, alpha={self.alpha}, lam={self.lam}, terms={self.terms}, "
            f"reduction={self.config.reduction!r}, shift_labels={self.config.shift_labels}"
        )


def _nonzero_terms(terms):
    """The terms of nonzero weight (the first term, weighted 0, if there is none)."""
    kept = tuple((order, weight) for order, weight in terms if weight != 0.0)
    return kept or ((terms[0][0], 0.0),)


#: Settings of :class:`PresetLoss` read from its :attr:`PresetLoss.config`.
_SHARED_SETTINGS = frozenset(
    ("divergence", "div_params", "temperature", "ignore_index", "reduction", "detach_assistant",
     "chunk_size", "shift_labels", "temperature_scaling", "compile")
)  # fmt: skip


def get(name: str, **overrides: Any) -> TorchPreset:
    """The preset ``name`` with overrides, as :func:`amid_ref.presets.get` (``taid`` takes
    ``t=``, ``gkd_jsd`` takes ``beta=``; unknown names and fields raise ``ValueError``)."""
    return TorchPreset(_reference.get(name, **overrides))
