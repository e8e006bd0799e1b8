r"""Prior distillation methods as AMiD settings, in torch.

Torch twin of :mod:`amid_ref.presets`, on the *same* registry (:data:`PRESETS` is
:data:`amid_ref.presets.PRESETS`; overrides are resolved by :func:`amid_ref.presets.get`),
so the two packages cannot disagree on what ``"taid"`` means. A preset's loss is

.. math::

    L = \sum_k w_k\, D_{\text{order}_k}\big(p, q, r^{(\alpha,\lambda)}\big),

each term a :func:`gpu.amid_loss` (or :func:`gpu.amid_fused_linear_loss`) call.

Examples
--------
>>> import torch, gpu
>>> s, t = torch.randn(4, 50, requires_grad=True), torch.randn(4, 50)
>>> taid = gpu.presets.get("taid", t=0.3)
>>> (taid.alpha, taid.lam, taid.terms)
(1.0, 0.3, (('rq', 1.0),))
>>> taid.loss(s, t).backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amid_ref import presets as _reference
from gpu._fused import amid_fused_linear_loss
from gpu._loss import amid_loss

__all__ = ["PRESETS", "TorchPreset", "get"]

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


def get(name: str, **overrides: Any) -> TorchPreset:
    """The preset ``name`` with overrides, as :func:`amid_ref.presets.get` (``taid`` takes
    ``t=``, ``gkd_jsd`` takes ``beta=``; unknown names and fields raise ``ValueError``)."""
    return TorchPreset(_reference.get(name, **overrides))
