r"""The loss of one causal-LM batch for a student and a teacher (:func:`amid_compute_loss`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpu._fused import amid_fused_linear_loss
from gpu._loss import amid_loss
from gpu.hf._criterion import (
    as_criterion,
    check_ce_weight,
    check_fused,
    check_num_items_in_batch,
    parameter_of,
    settings_of,
    terms_of,
)

__all__ = ["amid_compute_loss", "lm_head_of"]


def lm_head_of(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output projection when the logits are exactly ``lm_head(last hidden)``.

    Returns ``None`` (use the logits path) when the model has no ``get_output_embeddings``
    returning a ``torch.nn.Linear``, or its config scales or soft-caps the logits
    (``logit_scale``, ``final_logit_softcapping``, ``logits_scaling``, ...).

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM (``transformers.PreTrainedModel`` or any module).

    Returns
    -------
    torch.nn.Linear or None
        The lm_head, or ``None``.
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
    """Σ −log q(y) over rows of ``hidden`` (n, H) with targets (n,), O(chunk·V) memory
    (checkpointed: the chunk's logits are formed again in the backward pass)."""

    total = hidden.new_zeros((), dtype=torch.float32)

    def piece(hs, ys):
        return F.cross_entropy(head(hs).float(), ys, reduction="sum")

    for start in range(0, hidden.shape[0], chunk_size):
        stop = start + chunk_size
        total = total + checkpoint(piece, hidden[start:stop], targets[start:stop],
                                   use_reentrant=False)  # fmt: skip
    return total


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def _check_inputs(inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``input_ids`` (B, T) of integers, optional ``attention_mask`` and ``labels`` of the
    same shape (integers)."""
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a mapping with 'input_ids' (and optional 'attention_mask', "
            f"'labels'), got {type(inputs).__name__}"
        )
    if "input_ids" not in inputs:
        raise ValueError(f"inputs has no 'input_ids' (keys: {sorted(inputs)})")
    ids = inputs["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"inputs['input_ids'] must be an integer tensor, got {_kind(ids)}")
    if ids.dim() != 2:
        raise ValueError(f"inputs['input_ids'] must have shape (B, T), got {tuple(ids.shape)}")
    out = [ids]
    for key in ("attention_mask", "labels"):
        value = inputs.get(key)
        if value is not None:
            if not isinstance(value, torch.Tensor) or value.is_floating_point():
                raise TypeError(f"inputs[{key!r}] must be an integer tensor, got {_kind(value)}")
            if value.shape != ids.shape:
                raise ValueError(
                    f"inputs[{key!r}] has shape {tuple(value.shape)}, input_ids has "
                    f"{tuple(ids.shape)}: they must match"
                )
        out.append(value)
    return out[0], out[1], out[2]


def _check_label_convention(input_ids, labels, valid, shift_labels: bool) -> None:
    """Refuse labels whose relation to ``input_ids`` contradicts ``shift_labels``.

    Only what cannot be a false alarm is refused. Hugging Face's unshifted labels equal
    ``input_ids`` at every counted position; labels shifted by the caller equal the *next*
    token, ``input_ids[:, t + 1]``, and nothing is counted in their last column (no next
    token is known there). When exactly one of the two relations holds, the convention of
    the labels is known and must be the criterion's; when both hold (repeated tokens) or
    neither (labels that are not the input tokens), nothing is said.
    """
    if not bool(valid.any()):
        return
    unshifted = bool(((labels == input_ids) | ~valid).all())
    shifted = not bool(valid[:, -1].any()) and bool(
        ((labels[:, :-1] == input_ids[:, 1:]) | ~valid[:, :-1]).all()
    )
    if shift_labels and shifted and not unshifted:
        raise ValueError(
            "labels look shifted already (labels[:, t] == input_ids[:, t+1] at every counted "
            "position, and the last column is ignored), but the criterion has "
            "shift_labels=True, which shifts them again (a double shift). Pass Hugging "
            "Face's unshifted labels (labels[:, t] is token t), or use a criterion with "
            "shift_labels=False for labels aligned with the logits."
        )
    if not shift_labels and unshifted and not shifted:
        raise ValueError(
            "labels equal input_ids at every counted position: these are Hugging Face's "
            "unshifted causal-LM labels (position t predicts labels[:, t+1]), but the "
            "criterion has shift_labels=False (labels aligned with the logits, the torch "
            "convention). Use a criterion with shift_labels=True, e.g. "
            "gpu.AMiDLoss(alpha, lam, shift_labels=True)."
        )


def _targets(input_ids, attention_mask, labels, settings) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, targets) aligned with the logits: position t counts iff ``mask[:, t]``, and
    its cross-entropy target is ``targets[:, t]`` (meaningful where it counts)."""
    ignore = settings.ignore_index
    if labels is None:
        # Every position predicts the next input token; a padded (unattended) token is no target.
        nxt = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else (
            attention_mask != 0
        )  # fmt: skip
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        mask[:, :-1] = nxt[:, 1:]
        targets = torch.zeros_like(input_ids)
        targets[:, :-1] = input_ids[:, 1:]
        return mask, targets
    if labels.dtype == torch.bool:
        raise TypeError(
            "inputs['labels'] must hold token ids with ignore_index for positions without a "
            "target (Hugging Face's labels), not a bool mask"
        )
    valid = labels != ignore if ignore is not None else torch.ones_like(labels, dtype=torch.bool)
    _check_label_convention(input_ids, labels, valid, settings.shift_labels)
    if not settings.shift_labels:
        return valid, labels
    # Position t predicts token t+1: the last position has no target.
    mask = torch.zeros_like(valid)
    mask[:, :-1] = valid[:, 1:]
    targets = torch.zeros_like(labels)
    targets[:, :-1] = labels[:, 1:]
    return mask, targets


def _check_targets(targets: torch.Tensor, vocab: int) -> None:
    if targets.numel() and bool(((targets < 0) | (targets >= vocab)).any()):
        bad = targets[(targets < 0) | (targets >= vocab)][:5].tolist()
        raise ValueError(
            f"labels hold token ids outside [0, {vocab}) at counted positions (e.g. {bad}); "
            "the cross-entropy term (ce_weight > 0) needs a token id wherever a position "
            "counts: is the criterion's ignore_index the labels' padding value?"
        )


def amid_compute_loss(
    model: torch.nn.Module,
    teacher_model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    criterion: Any,
    *,
    num_items_in_batch: torch.Tensor | float | None = None,
    ce_weight: float = 0.0,
    fused: bool | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    r"""AMiD loss of one causal-LM batch, normalized per counted token.

    .. math::

        L = \frac{1}{N}\sum_{(b,t)\in\mathcal V}\Big(\sum_k w_k\,
            D_{\text{order}_k}\big(p_{b,t}, q_{b,t}, r_{b,t}\big)
            + w_{\mathrm{CE}}\,\big(-\log q_{b,t}(y_{b,t+1})\big)\Big),

    :math:`\mathcal V` the positions whose target is not ignored (one term of weight 1 for
    an :class:`gpu.AMiDLoss`, the preset's terms for a preset), N = ``num_items_in_batch``
    when given (the trainer's count over every micro-batch of the optimizer step), else
    :math:`|\mathcal V|` of this batch.

    Labels follow the criterion. With ``shift_labels=True`` (presets passed as they are,
    :class:`gpu.hf.AMiDConfig`, the trainers' default criterion) ``inputs["labels"]`` are
    Hugging Face's *unshifted* labels: position t counts iff ``labels[:, t+1] !=
    ignore_index``, the last position never. With ``shift_labels=False`` (the torch
    convention, :class:`gpu.AMiDLoss`'s default) ``labels[:, t]`` is the target of
    position t. Labels that contradict the criterion's convention in a way that can be
    told from ``input_ids`` are refused (``ValueError``): unshifted labels equal
    ``input_ids`` at every counted position, labels already shifted equal
    ``input_ids[:, t+1]`` there. Without ``labels`` every position but the last counts,
    and a position whose next token is padding (``attention_mask == 0``) does not.

    Parameters
    ----------
    model : torch.nn.Module
        The student, a causal LM returning ``.logits`` (B, T, V).
    teacher_model : torch.nn.Module
        A causal LM with the student's vocabulary; put in eval mode and run under
        ``torch.no_grad``.
    inputs : mapping
        ``input_ids`` (B, T), optional ``attention_mask`` (B, T) and ``labels`` (B, T) of
        token ids, ``ignore_index`` where a position has no target.
    criterion : gpu.AMiDLoss, gpu.AMiDFusedLinearLoss, preset or gpu.presets.PresetLoss
        The objective: α, λ, divergence, order (or a preset's terms), temperature,
        ``temperature_scaling``, labels (``shift_labels``, ``ignore_index``). Its
        ``reduction`` is honoured: ``"mean"`` and ``"batchmean"`` divide by N, ``"sum"``
        does not (N = 1), and ``"none"`` is refused (one number per batch is returned).
    num_items_in_batch : int, float or tensor, optional
        N, a finite count ≥ 0 (0 only when this batch counts no position). Default: the
        count in this batch.
    ce_weight : float
        Weight (finite, ≥ 0) of the cross-entropy on the labels added to the
        distillation term.
    fused : bool, optional
        Use :func:`gpu.amid_fused_linear_loss` on the last hidden states and lm_head
        weights (no (B, T, V) logits). ``None``: when both models pass :func:`lm_head_of`.

    Returns
    -------
    (torch.Tensor, dict)
        The loss (0-d, float32 or float64) and ``{"n_tokens", "divisor", "kd_sum",
        "ce_sum", "fused", "alpha", "lam", "parameter"}``: the counted positions of this
        batch, N, the sums of the two terms over them (``ce_sum`` is ``None`` when
        ``ce_weight`` is 0), the path taken, the criterion's α and λ, and a preset's own
        parameter ``(name, value)`` or ``None``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it; for labels that contradict the criterion's
        ``shift_labels`` (above).
    """
    for value, name in ((model, "model"), (teacher_model, "teacher_model")):
        if not isinstance(value, torch.nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    criterion = as_criterion(criterion)
    ce_weight = check_ce_weight(ce_weight)
    fused = check_fused(fused)
    settings = settings_of(criterion)
    if settings.reduction == "none":
        raise ValueError(
            "the criterion's reduction='none' cannot be honoured here: a trainer needs one "
            "number per batch; use 'mean' (per counted token) or 'sum'"
        )
    input_ids, attention_mask, labels = _check_inputs(inputs)
    mask, targets = _targets(input_ids, attention_mask, labels, settings)
    n_tokens = int(mask.sum())
    if settings.reduction == "sum":
        divisor = 1.0
        if num_items_in_batch is not None:
            check_num_items_in_batch(num_items_in_batch, n_tokens)
    elif num_items_in_batch is None:
        divisor = float(n_tokens)
    else:
        divisor = check_num_items_in_batch(num_items_in_batch, n_tokens)

    s_head, t_head = lm_head_of(model), lm_head_of(teacher_model)
    if fused is None:
        fused = s_head is not None and t_head is not None
    if fused and (s_head is None or t_head is None):
        raise ValueError("fused=True needs both models to expose a plain nn.Linear lm_head")
    kwargs = settings._loss_kwargs()
    for key in ("order", "ignore_index", "shift_labels"):
        kwargs.pop(key)
    kwargs.update(labels=mask, reduction="sum")
    terms = terms_of(criterion)

    teacher_model.eval()
    ce_sum = None
    kd_sum = None
    if fused:
        with torch.no_grad():
            t_hidden = _last_hidden(teacher_model, input_ids, attention_mask)
        s_hidden = _last_hidden(model, input_ids, attention_mask)
        for order, weight in terms:
            term = weight * amid_fused_linear_loss(
                s_hidden, s_head.weight, t_hidden, t_head.weight, student_bias=s_head.bias,
                teacher_bias=t_head.bias, order=order, **kwargs,
            )  # fmt: skip
            kd_sum = term if kd_sum is None else kd_sum + term
        if ce_weight:
            _check_targets(targets[mask], s_head.weight.shape[0])
            chunk = settings.chunk_size or max(1, (1 << 21) // s_head.weight.shape[0])
            ce_sum = _chunked_cross_entropy(s_hidden[mask], s_head, targets[mask], chunk)
    else:
        with torch.no_grad():
            t_logits = teacher_model(input_ids=input_ids, attention_mask=attention_mask).logits
        s_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        for order, weight in terms:
            term = weight * amid_loss(s_logits, t_logits, order=order, **kwargs)
            kd_sum = term if kd_sum is None else kd_sum + term
        if ce_weight:
            _check_targets(targets[mask], s_logits.shape[-1])
            ce_sum = F.cross_entropy(s_logits[mask].float(), targets[mask], reduction="sum")
    total = kd_sum if ce_sum is None else kd_sum + ce_weight * ce_sum
    loss = total / divisor if divisor > 0 else total * 0.0
    info = {
        "n_tokens": n_tokens,
        "divisor": divisor,
        "kd_sum": float(kd_sum.detach()),
        "ce_sum": None if ce_sum is None else float(ce_sum.detach()),
        "fused": bool(fused),
        "alpha": float(criterion.alpha),
        "lam": float(criterion.lam),
        "parameter": parameter_of(criterion),
    }
    return loss, info
