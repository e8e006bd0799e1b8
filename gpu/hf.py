r"""AMiD distillation in the Hugging Face trainers (optional extra ``hf``: transformers, trl).

Three pieces, each usable alone:

* :func:`amid_compute_loss` -- the loss of one batch of causal-LM inputs for a student and a
  teacher model: the causal shift, the ``-100`` mask, the teacher in eval/no_grad, the fused
  lm_head path when both models expose their output embeddings, an optional cross-entropy
  mix, and the division by ``num_items_in_batch`` (the trainer's token count over all
  gradient-accumulation micro-batches);
* :class:`AMiDSchedule` -- a λ (and α) schedule as a ``TrainerCallback`` whose state is
  written into every checkpoint's ``trainer_state.json`` (``ExportableState``);
* :class:`AMiDTrainer` (a ``transformers.Trainer``) and :func:`amid_gkd_trainer` (TRL's
  ``GKDTrainer`` with its loss replaced), through the mixin :class:`AMiDTrainerMixin`.

The loss of a batch is

.. math::

    L = \frac{1}{N}\Big(\sum_{(b,t)\in\mathcal V} D\big(p_{b,t}, q_{b,t}, r_{b,t}\big)
        + w_{\mathrm{CE}}\sum_{(b,t)\in\mathcal V} -\log q_{b,t}(y_{b,t+1})\Big),\quad
    \mathcal V = \{(b, t) : y_{b,t+1} \ne -100\},

with N = ``num_items_in_batch`` when the trainer passes it (the count of valid positions
over every micro-batch of the optimizer step, so that gradient accumulation sums to the
same gradient as one large batch), else :math:`|\mathcal V|` of this batch.

Gradient accumulation. ``transformers.Trainer`` divides the returned loss by the number of
accumulation steps unless it was already normalized by ``num_items_in_batch``
(``loss_is_scaled_for_ga``). A loss that takes the *mean* over its own micro-batch and is
then declared scaled is counted twice; one that takes the mean and is divided again weighs
micro-batches equally instead of tokens. :class:`AMiDTrainer` sums over the micro-batch,
divides by ``num_items_in_batch`` and says so; the tests check that accumulation 2 gives the
gradient of accumulation 1 on the same tokens.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpu._fused import AMiDFusedLinearLoss, amid_fused_linear_loss
from gpu._loss import AMiDLoss, amid_loss
from gpu._validation import check_alpha, check_lam

__all__ = [
    "AMiDSchedule",
    "AMiDTrainer",  # noqa: F822  (built on first access, see __getattr__)
    "AMiDTrainerMixin",
    "amid_compute_loss",
    "amid_gkd_trainer",
    "lm_head_of",
]


def lm_head_of(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output projection when the logits are exactly ``lm_head(last hidden)``.

    Returns ``None`` (use the logits path) when the model has no ``get_output_embeddings``
    returning a ``torch.nn.Linear``, or its config scales or soft-caps the logits
    (``logit_scale``, ``final_logit_softcapping``, ``logits_scaling``, ...).
    """
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Linear):
        return None
    config = getattr(model, "config", None)
    for key in ("logit_scale", "final_logit_softcapping", "logits_scaling", "output_multiplier",
                "lm_head_multiplier"):  # fmt: skip
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0):
            return None
    return head


def _last_hidden(model: torch.nn.Module, input_ids, attention_mask) -> torch.Tensor:
    """The hidden states that the lm_head consumes, without computing the logits."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise TypeError(f"{type(model).__name__} exposes no base_model for the fused path")
    out = base(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _chunked_cross_entropy(hidden, head, targets, chunk_size) -> torch.Tensor:
    """Σ −log q(y) over valid targets from hidden states, O(chunk·V) memory (checkpointed)."""

    h2 = hidden.reshape(-1, hidden.shape[-1])
    y = targets.reshape(-1)
    total = h2.new_zeros((), dtype=torch.float32)

    def piece(hs, ys):
        return F.cross_entropy(head(hs).float(), ys, ignore_index=-100, reduction="sum")

    for start in range(0, h2.shape[0], chunk_size):
        stop = start + chunk_size
        total = total + checkpoint(piece, h2[start:stop], y[start:stop], use_reentrant=False)
    return total


def amid_compute_loss(
    model: torch.nn.Module,
    teacher_model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    criterion: AMiDLoss | AMiDFusedLinearLoss,
    *,
    num_items_in_batch: torch.Tensor | int | None = None,
    ce_weight: float = 0.0,
    fused: bool | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    r"""AMiD loss of one causal-LM batch, normalized per valid token (module docstring).

    Parameters
    ----------
    model, teacher_model : torch.nn.Module
        Causal LMs sharing one vocabulary. The teacher is put in eval mode and run under
        ``torch.no_grad``.
    inputs : dict
        ``input_ids`` (B, T), optional ``attention_mask`` (B, T) and ``labels`` (B, T):
        *unshifted* Hugging Face labels (``-100`` for positions without a target); the
        shift is done here (position t is trained iff ``labels[:, t+1] != -100``). Without
        ``labels`` every position but the last is trained (and padding, if any, through
        ``attention_mask``: a label is valid iff its token is attended).
    criterion : gpu.AMiDLoss or gpu.AMiDFusedLinearLoss
        The objective: α, λ, divergence, order, temperature, ... (its ``reduction``,
        ``ignore_index`` and ``shift_labels`` are not used: this function sums over the
        shifted ``-100`` mask and normalizes itself).
    num_items_in_batch : int or tensor, optional
        The number of valid positions in the whole optimizer step (what the trainer
        passes); the divisor N. Default: the count in this batch.
    ce_weight : float
        Weight of the cross-entropy on the labels added to the distillation term.
    fused : bool, optional
        Use :func:`gpu.amid_fused_linear_loss` on the last hidden states and lm_head
        weights (no (B, T, V) logits). ``None``: when both models pass :func:`lm_head_of`.

    Returns
    -------
    (torch.Tensor, dict)
        The loss (0-d float32) and ``{"n_tokens", "divisor", "kd_sum", "ce_sum", "fused"}``.
    """
    input_ids = inputs["input_ids"]
    attention_mask = inputs.get("attention_mask")
    labels = inputs.get("labels")
    if labels is None:
        labels = input_ids if attention_mask is None else input_ids.masked_fill(
            attention_mask == 0, -100
        )  # fmt: skip
    # position t predicts token t+1: the last position has no target
    targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
    mask = targets != -100
    n_tokens = int(mask.sum())
    divisor = float(num_items_in_batch) if num_items_in_batch is not None else float(n_tokens)
    cfg = criterion.config if isinstance(criterion, AMiDFusedLinearLoss) else criterion
    s_head, t_head = lm_head_of(model), lm_head_of(teacher_model)
    if fused is None:
        fused = s_head is not None and t_head is not None
    if fused and (s_head is None or t_head is None):
        raise ValueError("fused=True needs both models to expose a plain nn.Linear lm_head")
    common = dict(
        alpha=cfg.alpha,
        lam=cfg.lam,
        divergence=cfg.divergence,
        order=cfg.order,
        div_params=cfg.div_params,
        labels=mask,
        reduction="sum",
        temperature=cfg.temperature,
        temperature_scaling=cfg.temperature_scaling,
        detach_assistant=cfg.detach_assistant,
        chunk_size=cfg.chunk_size,
    )
    teacher_model.eval()
    ce_sum = None
    if fused:
        with torch.no_grad():
            t_hidden = _last_hidden(teacher_model, input_ids, attention_mask)
        s_hidden = _last_hidden(model, input_ids, attention_mask)
        kd_sum = amid_fused_linear_loss(
            s_hidden, s_head.weight, t_hidden, t_head.weight, student_bias=s_head.bias,
            teacher_bias=t_head.bias, **common,
        )  # fmt: skip
        if ce_weight:
            chunk = cfg.chunk_size or max(1, (1 << 21) // s_head.weight.shape[0])
            ce_sum = _chunked_cross_entropy(s_hidden, s_head, targets, chunk)
    else:
        with torch.no_grad():
            t_logits = teacher_model(input_ids=input_ids, attention_mask=attention_mask).logits
        s_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        kd_sum = amid_loss(s_logits, t_logits, **common)
        if ce_weight:
            ce_sum = F.cross_entropy(
                s_logits.reshape(-1, s_logits.shape[-1]).float(), targets.reshape(-1),
                ignore_index=-100, reduction="sum",
            )  # fmt: skip
    total = kd_sum if ce_sum is None else kd_sum + ce_weight * ce_sum
    loss = total / divisor if divisor > 0 else total * 0.0
    info = {
        "n_tokens": n_tokens,
        "divisor": divisor,
        "kd_sum": float(kd_sum.detach()),
        "ce_sum": None if ce_sum is None else float(ce_sum.detach()),
        "fused": bool(fused),
    }
    return loss, info


def _interpolate(start: float, end: float, frac: float, shape: str) -> float:
    if shape == "linear":
        w = frac
    elif shape == "cosine":
        w = 0.5 * (1.0 - math.cos(math.pi * frac))
    else:  # pragma: no cover - checked in __init__
        raise ValueError(shape)
    return start + (end - start) * w


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
    ``max_steps``); the same for α when ``alpha`` is given. As a ``TrainerCallback`` with
    ``ExportableState`` its arguments and current values are written into every
    checkpoint's ``trainer_state.json`` (``stateful_callbacks``) and restored on resume
    (``TrainingArguments(restore_callback_states_from_checkpoint=True)``); as the values are
    a function of ``global_step``, which every checkpoint stores, a resumed run continues
    the schedule exactly either way.

    Parameters
    ----------
    lam : (float, float)
        λ at step 0 and at step K (e.g. TAID: ``(0.0, 1.0)`` with ``gpu.presets`` "taid").
    alpha : (float, float), optional
        α at step 0 and at step K; ``None`` keeps the criterion's α.
    num_steps : int, optional
        K; ``None``: the trainer's ``max_steps``.
    shape : {"linear", "cosine"}
    """

    def __init__(
        self,
        lam: tuple[float, float] | list[float],
        alpha: tuple[float, float] | list[float] | None = None,
        num_steps: int | None = None,
        shape: str = "linear",
    ) -> None:

        self.lam = [check_lam(x) for x in lam]
        self.alpha = None if alpha is None else [check_alpha(x) for x in alpha]
        if len(self.lam) != 2 or (self.alpha is not None and len(self.alpha) != 2):
            raise ValueError("lam and alpha must be (start, end) pairs")
        if num_steps is not None and (not isinstance(num_steps, int) or num_steps <= 0):
            raise ValueError(f"num_steps must be a positive int or None, got {num_steps!r}")
        if shape not in ("linear", "cosine"):
            raise ValueError(f"unknown shape {shape!r}; expected 'linear' or 'cosine'")
        self.num_steps = num_steps
        self.shape = shape
        self.step = 0
        self.lam_value = self.lam[0]
        self.alpha_value = None if self.alpha is None else self.alpha[0]

    def values_at(self, step: int, max_steps: int | None = None) -> tuple[float, float | None]:
        """(λ, α) at optimizer step ``step`` (α is ``None`` when not scheduled)."""
        horizon = self.num_steps or max_steps or 1
        frac = min(1.0, max(0.0, step / horizon))
        lam = _interpolate(self.lam[0], self.lam[1], frac, self.shape)
        lam = min(1.0, max(0.0, lam))
        alpha = None
        if self.alpha is not None:
            alpha = _interpolate(self.alpha[0], self.alpha[1], frac, self.shape)
        return lam, alpha

    def apply(self, criterion) -> None:
        """Write the current values into an AMiD criterion."""
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


class AMiDTrainerMixin:
    """``compute_loss`` of AMiD distillation for a ``transformers.Trainer`` subclass.

    With several processes the loss is multiplied by their number when
    ``average_tokens_across_devices`` is on, as ``Trainer.compute_loss`` does: tested with
    two gloo processes of two rows each, whose step gradient equals one process's on the
    four rows (and differs without the token averaging across devices).

    Keyword arguments taken by ``__init__`` (the rest go to the trainer): ``teacher_model``
    (unless the base trainer sets ``self.teacher_model`` itself, as TRL's ``GKDTrainer``),
    ``criterion`` (a :class:`gpu.AMiDLoss` or :class:`gpu.AMiDFusedLinearLoss`; default
    ``AMiDLoss(alpha=0.0, lam=0.1)``, see docs/choosing.md), ``ce_weight`` (0.0),
    ``fused`` (None: automatic, see :func:`amid_compute_loss`) and ``schedule`` (an
    :class:`AMiDSchedule`, added to the callbacks). ``self.last_loss_info`` keeps the
    :func:`amid_compute_loss` info of the last batch.
    """

    def __init__(self, *args, criterion=None, ce_weight: float = 0.0, fused=None,
                 schedule: AMiDSchedule | None = None, teacher_model=None, **kwargs):  # fmt: skip
        if schedule is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), schedule]
        if teacher_model is not None:
            kwargs["teacher_model"] = teacher_model
        super().__init__(*args, **kwargs)
        self.criterion = criterion if criterion is not None else AMiDLoss(alpha=0.0, lam=0.1)
        self.ce_weight = float(ce_weight)
        self.fused = fused
        self.last_loss_info: dict[str, Any] | None = None
        # The Trainer computes num_items_in_batch (over every accumulation micro-batch) only
        # for losses that take it; this loss does, counted over the shifted labels.
        self.model_accepts_loss_kwargs = True
        if hasattr(self, "_loss_shifts_labels"):
            self._loss_shifts_labels = True

    def _amid_schedule(self) -> AMiDSchedule | None:
        for cb in self.callback_handler.callbacks:  # restored callbacks replace the objects
            if isinstance(cb, AMiDSchedule):
                return cb
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        schedule = self._amid_schedule()
        if schedule is not None:
            schedule.apply(self.criterion)
        teacher = self.teacher_model
        if next(teacher.parameters()).device != next(model.parameters()).device:
            teacher.to(next(model.parameters()).device)
        loss, info = amid_compute_loss(
            model, teacher, inputs, self.criterion, num_items_in_batch=num_items_in_batch,
            ce_weight=self.ce_weight, fused=self.fused,
        )  # fmt: skip
        # Normalized by the whole step's token count: the Trainer must not divide again.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        across = getattr(self.args, "average_tokens_across_devices", False)
        if num_items_in_batch is not None and across:
            # num_items_in_batch then counts every process's tokens, and DDP averages the
            # gradients over processes: scale back, as Trainer.compute_loss does.
            loss = loss * self.accelerator.num_processes
        self.last_loss_info = info
        # Trainer.prediction_step reads the non-loss entries of a dict as logits: none here
        # (the fused path never forms them), so evaluation reports eval_loss only.
        return (loss, {"loss": loss.detach()}) if return_outputs else loss


def _trainer_class():
    # transformers: optional (the hf extra)
    from transformers import Trainer

    class AMiDTrainer(AMiDTrainerMixin, Trainer):
        """``transformers.Trainer`` distilling ``teacher_model`` into ``model`` with AMiD.

        ``AMiDTrainer(model=student, teacher_model=teacher, args=TrainingArguments(...),
        train_dataset=..., criterion=gpu.AMiDLoss(...), schedule=AMiDSchedule(...))``; see
        :class:`AMiDTrainerMixin`.
        """

        def __init__(self, *args, teacher_model=None, **kwargs):
            if teacher_model is None:
                raise TypeError("AMiDTrainer needs teacher_model=")
            self.teacher_model = teacher_model
            super().__init__(*args, **kwargs)
            self.teacher_model.eval()
            for p in self.teacher_model.parameters():
                p.requires_grad_(False)

    return AMiDTrainer


def __getattr__(name: str):
    if name == "AMiDTrainer":  # built on first use: transformers is imported lazily
        cls = _trainer_class()
        globals()["AMiDTrainer"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def amid_gkd_trainer():
    """TRL's ``GKDTrainer`` with its generalized-JSD loss replaced by AMiD.

    Returns a subclass of ``trl.experimental.gkd.GKDTrainer`` (TRL ≥ 1.0, where GKD is an
    experimental API that may change between TRL releases; on-policy
    generation with probability ``lmbda``, sequence-level KD, its collator) whose
    ``compute_loss`` is :meth:`AMiDTrainerMixin.compute_loss`; pass ``criterion=``,
    ``ce_weight=``, ``fused=``, ``schedule=`` next to GKDTrainer's own arguments. The
    GKD setting itself is ``criterion=gpu.AMiDLoss(alpha=-1.0, lam=beta)`` with the two
    terms of ``gpu.presets.get("gkd_jsd", beta=beta)``; AMiD replaces it by one term.

    Normalization of generated batches: GKD replaces a micro-batch's tokens and labels by
    generated ones (with probability ``lmbda``, or always with ``seq_kd``) *after* the
    Trainer counted ``num_items_in_batch`` over the collated labels, so that count is not
    the generated batch's. Such a micro-batch is normalized by its own number of generated
    target tokens and divided by the accumulation steps by the Trainer (the mean of
    micro-batch means); a micro-batch kept as collated uses ``num_items_in_batch``.
    """

    with warnings.catch_warnings():
        # GKDTrainer lives in trl.experimental, which warns on import (stated above instead)
        warnings.simplefilter("ignore")
        # trl: optional (the hf extra)
        from trl.experimental.gkd import GKDTrainer

    class AMiDGKDTrainer(AMiDTrainerMixin, GKDTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self._collated_labels = inputs.get("labels")  # GKD may replace them below
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            collated = getattr(self, "_collated_labels", None)
            if collated is not None and inputs.get("labels") is not collated:
                num_items_in_batch = None  # generated labels: counted over this batch
            return AMiDTrainerMixin.compute_loss(
                self, model, inputs, return_outputs, num_items_in_batch
            )

    return AMiDGKDTrainer
