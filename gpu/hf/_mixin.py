"""``compute_loss`` and logging of AMiD distillation for ``transformers.Trainer`` subclasses,
and TRL's ``GKDTrainer`` with its loss replaced (:func:`amid_gkd_trainer`)."""

from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from amid_ref.contract import check_vocab_alignment
from gpu.hf._compute import amid_compute_loss
from gpu.hf._config import AMiDConfig
from gpu.hf._criterion import (
    HF_IGNORE_INDEX,
    as_criterion,
    check_ce_weight,
    check_fused,
    default_criterion,
    parameter_of,
    settings_of,
)
from gpu.hf._schedule import AMiDSchedule

__all__ = ["AMiDTrainerMixin", "amid_gkd_trainer"]

#: Keys that :meth:`AMiDTrainerMixin.log` adds to every training log (``amid/<name>`` for a
#: preset's own parameter, ``amid/ce`` only when the cross-entropy term is on).
LOG_KEYS = ("amid/alpha", "amid/lam", "amid/kd", "amid/ce")


@dataclass
class _Options:
    criterion: torch.nn.Module
    schedule: AMiDSchedule | None
    ce_weight: float
    fused: bool | None
    #: teacher-side settings that override the criterion's (``amid_compute_loss`` keywords)
    teaching: dict[str, str] = field(default_factory=dict)


def _resolve_options(criterion, schedule, ce_weight, fused, amid_config,
                     vocab_alignment=None) -> _Options:  # fmt: skip
    """Check the AMiD arguments of a trainer (before the trainer itself is built)."""
    teaching: dict[str, str] = {}
    if amid_config is not None:
        if not isinstance(amid_config, AMiDConfig):
            raise TypeError(
                f"amid_config must be a gpu.hf.AMiDConfig, got {type(amid_config).__name__}"
            )
        named = {"criterion": criterion, "schedule": schedule, "ce_weight": ce_weight,
                 "fused": fused, "vocab_alignment": vocab_alignment}  # fmt: skip
        given = [name for name, value in named.items() if value is not None]
        if given:
            raise TypeError(
                f"give the objective either through amid_config= or through {', '.join(given)}=, "
                "not both"
            )
        criterion = amid_config.build_criterion()
        schedule = amid_config.build_schedule()
        ce_weight, fused = amid_config.ce_weight, amid_config.fused
        teaching = amid_config.teaching()
    elif vocab_alignment is not None:
        teaching = {"vocab_alignment": check_vocab_alignment(vocab_alignment)}
    criterion = default_criterion() if criterion is None else as_criterion(criterion)
    settings = settings_of(criterion)
    if settings.ignore_index != HF_IGNORE_INDEX:
        raise ValueError(
            f"the criterion's ignore_index={settings.ignore_index!r} cannot be honoured in a "
            f"Hugging Face trainer: the Trainer counts num_items_in_batch over labels != "
            f"{HF_IGNORE_INDEX} (as its collators and models mark positions without a target); "
            f"use ignore_index={HF_IGNORE_INDEX}"
        )
    if settings.reduction == "none":
        raise ValueError(
            "the criterion's reduction='none' cannot be honoured in a trainer, which needs one "
            "number per batch; use 'mean' (per counted token of the optimizer step) or 'sum'"
        )
    if schedule is not None and not isinstance(schedule, AMiDSchedule):
        raise TypeError(f"schedule must be a gpu.hf.AMiDSchedule or None, got {schedule!r}")
    ce_weight = 0.0 if ce_weight is None else check_ce_weight(ce_weight)
    return _Options(criterion, schedule, ce_weight, check_fused(fused), teaching)


def _with_schedule(callbacks, schedule):
    if schedule is None:
        return callbacks
    return [*(callbacks or []), schedule]


class AMiDTrainerMixin:
    """``compute_loss`` and logging of AMiD distillation for a ``transformers.Trainer`` subclass.

    The subclass builds its options with ``_resolve_options`` before calling the trainer's
    ``__init__`` (so that bad arguments fail first, naming the parameter) and calls
    ``_amid_setup`` after it; :class:`gpu.hf.AMiDTrainer` and :func:`amid_gkd_trainer` do.

    Normalization. The loss of a micro-batch is its sum over counted positions divided by
    ``num_items_in_batch``, the Trainer's count over every micro-batch of the optimizer
    step, and declared scaled for gradient accumulation (``loss_is_scaled_for_ga``); the
    tests check that accumulation 2 gives the gradient of accumulation 1 on the same tokens.
    With several processes the loss is multiplied by their number when
    ``average_tokens_across_devices`` is on, as ``Trainer.compute_loss`` does: tested with
    two gloo processes of two rows each, whose step gradient equals one process's on the
    four rows. A criterion with ``reduction="sum"`` is not divided (the step's gradient is
    that of the sum over its tokens).

    Logging. Every training log (``Trainer.log`` with a ``"loss"``, into
    ``state.log_history``) gets ``amid/alpha`` and ``amid/lam`` (the values of the last
    batch, after the schedule), ``amid/<name>`` for a preset's own parameter (``amid/t``
    for TAID, ``amid/beta`` for GKD), and ``amid/kd`` and (with ``ce_weight`` > 0)
    ``amid/ce``: the distillation and cross-entropy terms per counted token, summed over
    every micro-batch since the previous log and divided by their token count, so that
    ``loss == amid/kd + ce_weight * amid/ce`` at ``logging_steps=1``.
    ``self.last_loss_info`` keeps the :func:`gpu.hf.amid_compute_loss` info of the last
    micro-batch.
    """

    def _amid_setup(self, options: _Options) -> None:
        self.criterion = options.criterion
        self.ce_weight = options.ce_weight
        self.fused = options.fused
        self.teaching = dict(options.teaching)
        if not hasattr(self, "teacher_topk_columns"):
            self.teacher_topk_columns = None
        self.last_loss_info: dict[str, Any] | None = None
        self._amid_window = {"kd": 0.0, "ce": 0.0, "tokens": 0, "batches": 0, "ce_batches": 0}
        # The Trainer computes num_items_in_batch (over every accumulation micro-batch) only
        # for losses that take it; this loss does, counted as the criterion counts.
        self.model_accepts_loss_kwargs = True
        if hasattr(self, "_loss_shifts_labels"):
            self._loss_shifts_labels = settings_of(self.criterion).shift_labels

    def _amid_schedule(self) -> AMiDSchedule | None:
        for cb in self.callback_handler.callbacks:  # restored callbacks replace the objects
            if isinstance(cb, AMiDSchedule):
                return cb
        return None

    def _amid_check_count(self, num_items_in_batch, info) -> None:
        """With one micro-batch per step on one process the Trainer's count is this batch's:
        a difference means it counts by another rule than the criterion."""
        args = self.args
        if (
            num_items_in_batch is None
            or args.gradient_accumulation_steps != 1
            or args.world_size != 1
            or args.n_gpu > 1
        ):
            return
        if (
            float(info["divisor"]) != float(info["n_tokens"])
            and settings_of(self.criterion).reduction != "sum"
        ):
            raise RuntimeError(
                f"the Trainer's num_items_in_batch ({info['divisor']:g}) differs from the "
                f"{info['n_tokens']} positions that the criterion counts in the same batch "
                f"(shift_labels={settings_of(self.criterion).shift_labels}, ignore_index="
                f"{HF_IGNORE_INDEX}): the Trainer counts by another rule, and the loss would be "
                "normalized wrongly"
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The AMiD loss of one micro-batch (:func:`gpu.hf.amid_compute_loss`), normalized
        for gradient accumulation and several processes (class docstring).

        Parameters
        ----------
        model : torch.nn.Module
            The student (possibly wrapped by the Trainer).
        inputs : dict
            The collated batch: ``input_ids``, ``attention_mask``, ``labels`` (and a
            sparse teacher's top-k columns).
        return_outputs : bool
            Also return ``{"loss": loss}`` (no logits: the fused path never forms them).
        num_items_in_batch : int or tensor, optional
            The Trainer's count of counted positions over the optimizer step.

        Returns
        -------
        torch.Tensor or (torch.Tensor, dict)
            The loss, and the outputs when ``return_outputs``.
        """
        schedule = self._amid_schedule()
        if schedule is not None:
            schedule.apply(self.criterion)
        teacher = self.teacher_model
        if (
            teacher is not None
            and next(teacher.parameters()).device != next(model.parameters()).device
        ):
            teacher.to(next(model.parameters()).device)
        loss, info = amid_compute_loss(
            model, teacher, inputs, self.criterion, num_items_in_batch=num_items_in_batch,
            ce_weight=self.ce_weight, fused=self.fused,
            teacher_topk_columns=self.teacher_topk_columns, **self.teaching,
        )  # fmt: skip
        if model.training:
            self._amid_check_count(num_items_in_batch, info)
        processes = self.accelerator.num_processes
        if settings_of(self.criterion).reduction == "sum":
            # A sum over the step's tokens: the Trainer must not divide by the accumulation
            # steps, and DDP's average over processes is undone.
            self.loss_is_scaled_for_ga = True
            if processes > 1:
                loss = loss * processes
        else:
            # Normalized by the whole step's token count: the Trainer must not divide again.
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            across = getattr(self.args, "average_tokens_across_devices", False)
            if num_items_in_batch is not None and across:
                # num_items_in_batch then counts every process's tokens, and DDP averages the
                # gradients over processes: scale back, as Trainer.compute_loss does.
                loss = loss * processes
        self.last_loss_info = info
        if model.training:
            window = self._amid_window
            window["kd"] += info["kd_sum"]
            window["tokens"] += info["n_tokens"]
            window["batches"] += 1
            if info["ce_sum"] is not None:
                window["ce"] += info["ce_sum"]
                window["ce_batches"] += 1
        # Trainer.prediction_step reads the non-loss entries of a dict as logits: none here
        # (the fused path never forms them), so evaluation reports eval_loss only.
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    def _amid_metrics(self) -> dict[str, float]:
        window = self._amid_window
        sums = [window["kd"], window["ce"], float(window["tokens"])]
        if self.args.world_size > 1:
            reduced = self.accelerator.reduce(
                torch.tensor(sums, dtype=torch.float64, device=self.args.device), "sum"
            )
            sums = [float(x) for x in reduced.cpu()]
        kd, ce, tokens = sums
        out = {"amid/alpha": float(self.criterion.alpha), "amid/lam": float(self.criterion.lam)}
        parameter = parameter_of(self.criterion)
        if parameter is not None:
            out[f"amid/{parameter[0]}"] = float(parameter[1])
        if tokens > 0:
            out["amid/kd"] = kd / tokens
            if window["ce_batches"]:
                out["amid/ce"] = ce / tokens
        self._amid_window = {"kd": 0.0, "ce": 0.0, "tokens": 0, "batches": 0, "ce_batches": 0}
        return out

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """``Trainer.log`` with the AMiD values added to training logs (class docstring).

        Parameters
        ----------
        logs : dict
            The values to log.
        *args, **kwargs
            Passed to the trainer's ``log`` (``start_time``).
        """
        if "loss" in logs and self._amid_window["batches"]:
            logs = {**logs, **self._amid_metrics()}
        return super().log(logs, *args, **kwargs)


@contextmanager
def _generation_mode(model, checkpointing_kwargs):
    """The model with activation checkpointing off for ``generate`` (back on afterwards),
    through transformers' current names where it has them."""
    if hasattr(type(model), "is_activation_checkpointing"):
        names = ("is_activation_checkpointing", "activation_checkpointing_disable",
                 "activation_checkpointing_enable")  # fmt: skip
    else:  # transformers releases before the rename
        names = ("is_gradient_checkpointing", "gradient_checkpointing_disable",
                 "gradient_checkpointing_enable")  # fmt: skip
    on = bool(getattr(model, names[0], False))
    if on:
        getattr(model, names[1])()
    try:
        yield model
    finally:
        if on:
            getattr(model, names[2])(checkpointing_kwargs)


def amid_gkd_trainer():
    """TRL's ``GKDTrainer`` with its generalized-JSD loss replaced by AMiD.

    Returns a subclass of ``trl.experimental.gkd.GKDTrainer`` (TRL ≥ 1.0, where GKD is an
    experimental API that may change between TRL releases; on-policy generation with
    probability ``lmbda``, sequence-level KD, its ChatML collator) whose ``compute_loss``
    is :meth:`AMiDTrainerMixin.compute_loss`. Construct it as a ``GKDTrainer``
    (``model``, ``teacher_model``, ``args=GKDConfig(...)``, ``train_dataset``,
    ``processing_class``, ...) with the keyword arguments of :class:`gpu.hf.AMiDTrainer`:
    ``criterion=`` (default ``AMiDLoss(alpha=0.0, lam=0.1, shift_labels=True)``; a preset
    such as ``gpu.presets.get("gkd_jsd", beta=0.5)`` reproduces GKD's own loss),
    ``schedule=``, ``ce_weight=``, ``fused=`` or ``amid_config=``. GKD's labels are
    Hugging Face's unshifted labels: a criterion with ``shift_labels=False`` is refused at
    the first batch.

    Generation. With probability ``lmbda`` (or always with ``seq_kd``) a micro-batch is
    replaced by completions generated by the student (the teacher), as in ``GKDTrainer``;
    here activation checkpointing is switched off around ``generate`` through
    transformers' current ``activation_checkpointing_*`` API (TRL 1.16 reads the deprecated
    ``is_gradient_checkpointing``, a ``FutureWarning`` on every generated batch). Under
    DeepSpeed, TRL's own generation step runs (it gathers ZeRO-3 parameters).

    Normalization of generated batches: GKD replaces a micro-batch's tokens and labels
    *after* the Trainer counted ``num_items_in_batch`` over the collated labels, so that
    count is not the generated batch's. Such a micro-batch is normalized by its own number
    of generated target tokens and divided by the accumulation steps by the Trainer (the
    mean of micro-batch means); a micro-batch kept as collated uses ``num_items_in_batch``.

    Returns
    -------
    type
        The ``AMiDGKDTrainer`` class.
    """

    with warnings.catch_warnings():
        # GKDTrainer lives in trl.experimental, which warns on import (stated above instead)
        warnings.simplefilter("ignore")
        # trl: optional (the hf extra)
        from trl.experimental.gkd import GKDTrainer

    class AMiDGKDTrainer(AMiDTrainerMixin, GKDTrainer):
        """``trl.experimental.gkd.GKDTrainer`` distilling with AMiD (see
        :func:`gpu.hf.amid_gkd_trainer`)."""

        def __init__(
            self,
            model=None,
            teacher_model=None,
            args=None,
            *,
            criterion=None,
            schedule: AMiDSchedule | None = None,
            ce_weight: float | None = None,
            fused: bool | None = None,
            amid_config: AMiDConfig | None = None,
            **gkd_kwargs,
        ):
            options = _resolve_options(criterion, schedule, ce_weight, fused, amid_config)
            if teacher_model is None:
                raise TypeError("AMiDGKDTrainer needs teacher_model= (a model or a model name)")
            gkd_kwargs["callbacks"] = _with_schedule(gkd_kwargs.get("callbacks"), options.schedule)
            super().__init__(model=model, teacher_model=teacher_model, args=args, **gkd_kwargs)
            self._amid_setup(options)
            self._amid_generated = None

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self.is_deepspeed_enabled:
                self._amid_generated = None  # decided in compute_loss from the labels
                self._collated_labels = inputs.get("labels")
                return super().training_step(model, inputs, num_items_in_batch)
            # GKDTrainer.training_step, with the generation switched through current names
            source = None
            if random.random() <= self.lmbda:
                source = model
            elif self.seq_kd:
                source = self.teacher_model
            if source is not None:
                unwrapped = self.accelerator.unwrap_model(source)
                kwargs = getattr(self.args, "activation_checkpointing_kwargs", None)
                if kwargs is None:
                    kwargs = getattr(self.args, "gradient_checkpointing_kwargs", None)
                with _generation_mode(unwrapped, kwargs):
                    ids, mask, labels = self.generate_on_policy_outputs(
                        unwrapped, inputs, self.generation_config
                    )
                inputs = {**inputs, "input_ids": ids, "attention_mask": mask, "labels": labels}
            self._amid_generated = source is not None
            # the trainers above GKDTrainer (SFTTrainer's activation offloading, Trainer)
            return super(GKDTrainer, self).training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            generated = self._amid_generated
            if generated is None:  # TRL's own step ran: generated iff the labels were replaced
                collated = getattr(self, "_collated_labels", None)
                generated = collated is not None and inputs.get("labels") is not collated
            if generated and model.training:
                num_items_in_batch = None  # generated labels: counted over this batch
            return AMiDTrainerMixin.compute_loss(
                self, model, inputs, return_outputs, num_items_in_batch
            )

    return AMiDGKDTrainer
