""":class:`AMiDTrainer`, a ``transformers.Trainer`` distilling with AMiD (imports transformers)."""

from __future__ import annotations

import functools
from typing import Any

import torch

# transformers: optional (the hf extra); this module is imported on first use of AMiDTrainer
from transformers import Trainer, TrainingArguments

from gpu.hf._compute import check_topk_columns, collate_topk
from gpu.hf._config import AMiDConfig
from gpu.hf._mixin import AMiDTrainerMixin, _resolve_options, _with_schedule
from gpu.hf._schedule import AMiDSchedule

__all__ = ["AMiDTrainer"]


class AMiDTrainer(AMiDTrainerMixin, Trainer):
    r"""``transformers.Trainer`` distilling a teacher into ``model`` with AMiD.

    The teacher is exactly one of ``teacher_model`` (a causal LM run on every batch) and
    ``teacher_topk_columns`` (a cached or served teacher: the dataset's rows carry its
    top-k ids and log-probabilities per position, padded across a batch by
    :func:`gpu.hf.collate_topk`, the default ``data_collator`` then; no teacher model is
    held in memory). The top-k is passed to the loss as ``teacher_topk`` (fused and
    unfused paths), with the criterion's ``leftover`` policy (MATH.md, *Sparse
    teachers*), or :class:`gpu.hf.AMiDConfig`'s.

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
    teacher_model : torch.nn.Module, optional
        The teacher, a causal LM with the student's vocabulary (or another size with
        ``vocab_alignment``). Exactly one of ``teacher_model`` and
        ``teacher_topk_columns``.
    teacher_topk_columns : True or (str, str), optional
        A cached or served teacher in the dataset: ``True`` for the columns
        :data:`gpu.hf.TOPK_COLUMNS` (``teacher_topk_indices``, ``teacher_topk_logprobs``),
        or the pair of names (indices, log-probabilities). Per example (T, k) ids and
        log-probabilities of the teacher's *full* distribution, for every position of
        ``input_ids``; k may differ between examples. The columns are kept by
        ``remove_unused_columns``.
    vocab_alignment : {"error", "pad", "truncate"}, optional
        Overrides the criterion's: teacher and student vocabularies of different sizes
        (one padded, e.g. 50304 and 50257); a top-k teacher's ids beyond the student's
        vocabulary are dropped by ``"truncate"`` (refused where they carry probability)
        and refused otherwise.
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
        The objective as a config (criterion, schedule, CE weight, fused path, the
        teacher-side ``leftover``, ``vocab_alignment``, ``temperature_applies_to``), in
        place of the arguments above.
    **trainer_kwargs
        The other arguments of ``transformers.Trainer`` (``train_dataset``,
        ``eval_dataset``, ``data_collator``, ``processing_class``, ``callbacks``, ...).
        With ``teacher_topk_columns`` and no ``data_collator``, the collator is
        :func:`gpu.hf.collate_topk` (the padding id from ``processing_class`` or the
        model's config, else 0).

    Raises
    ------
    TypeError, ValueError
        Neither or both of ``teacher_model`` and ``teacher_topk_columns``, or a bad
        argument, naming it.

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
        teacher_topk_columns: bool | tuple[str, str] | None = None,
        criterion: Any = None,
        schedule: AMiDSchedule | None = None,
        ce_weight: float | None = None,
        fused: bool | None = None,
        vocab_alignment: str | None = None,
        amid_config: AMiDConfig | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        options = _resolve_options(criterion, schedule, ce_weight, fused, amid_config,
                                   vocab_alignment)  # fmt: skip
        if teacher_model is None and teacher_topk_columns is None:
            raise TypeError(
                "AMiDTrainer needs a teacher: teacher_model= (a torch.nn.Module, the teacher "
                "causal LM) or teacher_topk_columns= (True, or the names of the dataset's "
                "top-k columns of a cached or served teacher); got neither"
            )
        if teacher_model is not None and teacher_topk_columns is not None:
            raise ValueError(
                "AMiDTrainer takes exactly one teacher: teacher_model= or "
                "teacher_topk_columns=, got both"
            )
        if teacher_model is not None and not isinstance(teacher_model, torch.nn.Module):
            raise TypeError(
                "teacher_model must be a torch.nn.Module (the teacher causal LM), got "
                f"{type(teacher_model).__name__} (a cached or served teacher: "
                "teacher_topk_columns=)"
            )
        columns = None
        if teacher_topk_columns is not None:
            columns = check_topk_columns(teacher_topk_columns)
            if trainer_kwargs.get("data_collator") is None:
                pad = _pad_token_id(trainer_kwargs.get("processing_class"), model)
                trainer_kwargs["data_collator"] = functools.partial(
                    collate_topk, pad_token_id=pad, columns=columns
                )
        trainer_kwargs["callbacks"] = _with_schedule(
            trainer_kwargs.get("callbacks"), options.schedule
        )
        self.teacher_model = teacher_model
        self.teacher_topk_columns = columns
        super().__init__(model=model, args=args, **trainer_kwargs)
        self._amid_setup(options)
        if self.teacher_model is not None:
            self.teacher_model.eval()
            for p in self.teacher_model.parameters():
                p.requires_grad_(False)

    def _set_signature_columns_if_needed(self) -> None:
        # remove_unused_columns keeps the columns the model's forward takes: the top-k
        # columns of a sparse teacher are read by the loss, and kept too.
        super()._set_signature_columns_if_needed()
        if self.teacher_topk_columns is not None:
            extra = [c for c in self.teacher_topk_columns if c not in self._signature_columns]
            self._signature_columns = [*self._signature_columns, *extra]


def _pad_token_id(processing_class: Any, model: Any) -> int:
    """The padding id for :func:`gpu.hf.collate_topk`: the tokenizer's, else the model
    config's, else 0 (padded positions are masked by ``attention_mask`` either way)."""
    for owner in (processing_class, getattr(model, "config", None)):
        value = getattr(owner, "pad_token_id", None)
        if isinstance(value, int):
            return value
    return 0
