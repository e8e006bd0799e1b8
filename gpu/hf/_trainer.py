""":class:`AMiDTrainer`, a ``transformers.Trainer`` distilling with AMiD (imports transformers)."""

from __future__ import annotations

from typing import Any

import torch

# transformers: optional (the hf extra); this module is imported on first use of AMiDTrainer
from transformers import Trainer, TrainingArguments

from gpu.hf._config import AMiDConfig
from gpu.hf._mixin import AMiDTrainerMixin, _resolve_options, _with_schedule
from gpu.hf._schedule import AMiDSchedule

__all__ = ["AMiDTrainer"]


class AMiDTrainer(AMiDTrainerMixin, Trainer):
    r"""``transformers.Trainer`` distilling ``teacher_model`` into ``model`` with AMiD.

    ``compute_loss`` is :func:`gpu.hf.amid_compute_loss` (the causal shift, the ``-100``
    mask, the teacher in eval mode under ``no_grad`` with its parameters frozen, the
    division by ``num_items_in_batch``, an optional cross-entropy mix, the fused lm_head
    path); every training log carries α, λ, a preset's parameter and the KD and CE terms
    (:class:`gpu.hf.AMiDTrainerMixin`).

    The criterion's settings are honoured or refused, never ignored: ``shift_labels``
    decides how the batch's labels are read (``True``: Hugging Face's unshifted labels, the
    default criterion's, a preset's and :class:`gpu.hf.AMiDConfig`'s; ``False``: labels
    aligned with the logits; labels that contradict it in a way ``input_ids`` shows are
    refused at the first batch); ``reduction`` ``"mean"``/``"batchmean"`` normalize per
    counted token of the optimizer step, ``"sum"`` does not, ``"none"`` is refused;
    ``ignore_index`` must be ``-100``, the value the Trainer counts ``num_items_in_batch``
    by (another value is refused).

    Parameters
    ----------
    model : transformers.PreTrainedModel or torch.nn.Module, optional
        The student (as ``Trainer``'s ``model``).
    args : transformers.TrainingArguments, optional
        As ``Trainer``'s ``args``.
    teacher_model : torch.nn.Module
        The teacher, a causal LM with the student's vocabulary (required).
    criterion : gpu.AMiDLoss, gpu.AMiDFusedLinearLoss, preset or gpu.presets.PresetLoss, optional
        The objective. A preset (``gpu.presets.get("taid", t=0.4)``) is used as its
        criterion form with Hugging Face labels. ``None``:
        ``gpu.AMiDLoss(alpha=0.0, lam=0.1, shift_labels=True)`` (see docs/choosing.md).
    schedule : gpu.hf.AMiDSchedule, optional
        A λ (and α) schedule, added to the callbacks; for a preset λ is its own parameter
        (TAID's t).
    ce_weight : float, optional
        Weight (finite, ≥ 0) of the cross-entropy on the labels; ``None``: 0.
    fused : bool, optional
        The fused lm_head path (:func:`gpu.hf.amid_compute_loss`); ``None``: automatic.
    amid_config : gpu.hf.AMiDConfig, optional
        The objective as a config (criterion, schedule, CE weight, fused path), in place of
        the four arguments above.
    **trainer_kwargs
        The other arguments of ``transformers.Trainer`` (``train_dataset``,
        ``eval_dataset``, ``data_collator``, ``processing_class``, ``callbacks``, ...).

    Examples
    --------
    >>> import gpu, transformers
    >>> from gpu import hf
    >>> make = lambda width: transformers.GPT2LMHeadModel(transformers.GPT2Config(
    ...     vocab_size=32, n_positions=8, n_embd=width, n_layer=1, n_head=2))
    >>> trainer = hf.AMiDTrainer(
    ...     model=make(16), teacher_model=make(24),
    ...     args=transformers.TrainingArguments("unused", use_cpu=True, report_to=[]),
    ...     criterion=gpu.presets.get("taid", t=0.4), schedule=hf.AMiDSchedule(lam=(0.4, 1.0)))
    >>> trainer.criterion.parameter
    ('t', 0.4)
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args: TrainingArguments | None = None,
        *,
        teacher_model: torch.nn.Module | None = None,
        criterion: Any = None,
        schedule: AMiDSchedule | None = None,
        ce_weight: float | None = None,
        fused: bool | None = None,
        amid_config: AMiDConfig | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        options = _resolve_options(criterion, schedule, ce_weight, fused, amid_config)
        if not isinstance(teacher_model, torch.nn.Module):
            raise TypeError(
                "AMiDTrainer needs teacher_model=, a torch.nn.Module (the teacher causal LM), "
                f"got {type(teacher_model).__name__}"
            )
        trainer_kwargs["callbacks"] = _with_schedule(
            trainer_kwargs.get("callbacks"), options.schedule
        )
        self.teacher_model = teacher_model
        super().__init__(model=model, args=args, **trainer_kwargs)
        self._amid_setup(options)
        self.teacher_model.eval()
        for p in self.teacher_model.parameters():
            p.requires_grad_(False)
