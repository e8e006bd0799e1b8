r"""The loss of one causal-LM batch for a student and a teacher (:func:`amid_compute_loss`)."""

from __future__ import annotations

import math
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

__all__ = ["TOPK_COLUMNS", "amid_compute_loss", "collate_topk", "lm_head_of", "teacher_topk_of"]


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


#: The default names of a sparse teacher's input columns (a cached or served top-k): the
#: teacher's top-k ids (integers) and their log-probabilities, shape (T, k) per example and
#: (B, T, k) per batch.
TOPK_COLUMNS = ("teacher_topk_indices", "teacher_topk_logprobs")


def check_topk_columns(columns: Any, name: str = "teacher_topk_columns") -> tuple[str, str]:
    """The names ``(indices column, logprobs column)`` of a sparse teacher: ``True`` for
    :data:`TOPK_COLUMNS`, or a pair of two different strings."""
    if columns is True:
        return TOPK_COLUMNS
    if (
        isinstance(columns, (tuple, list))
        and len(columns) == 2
        and all(isinstance(c, str) and c for c in columns)
        and columns[0] != columns[1]
    ):
        return (columns[0], columns[1])
    raise TypeError(
        f"{name} must be True (the columns {TOPK_COLUMNS}) or a pair of two different "
        f"column names (indices, logprobs), got {columns!r}"
    )


def _topk_of(inputs: Any, columns: tuple[str, str], required: bool):
    """``(indices, logprobs)`` from ``inputs``' top-k columns, or ``None`` when it has
    neither (an error when ``required``)."""
    present = [c for c in columns if isinstance(inputs, Mapping) and c in inputs]
    if not present and not required:
        return None
    if len(present) != 2:
        keys = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
        raise ValueError(
            f"a sparse teacher needs both inputs columns {columns} (teacher_topk_columns), "
            f"got {keys}: does the dataset carry them, and does the data_collator keep them "
            "(gpu.hf.collate_topk)?"
        )
    return inputs[columns[0]], inputs[columns[1]]


def _sparse_loss(model, s_head, input_ids, attention_mask, topk, terms, kwargs, fused,
                 ce_weight, mask, targets, settings, divisor, n_tokens, criterion):  # fmt: skip
    """The branch of :func:`amid_compute_loss` for a sparse teacher (no teacher model)."""
    kd_sum = ce_sum = None
    if fused:
        s_hidden = _last_hidden(model, input_ids, attention_mask)
        for order, weight in terms:
            term = weight * amid_fused_linear_loss(
                s_hidden, s_head.weight, None, None, student_bias=s_head.bias,
                teacher_topk=topk, order=order, **kwargs,
            )  # fmt: skip
            kd_sum = term if kd_sum is None else kd_sum + term
        if ce_weight:
            _check_targets(targets[mask], s_head.weight.shape[0])
            chunk = settings.chunk_size or max(1, (1 << 21) // s_head.weight.shape[0])
            ce_sum = _chunked_cross_entropy(s_hidden[mask], s_head, targets[mask], chunk)
    else:
        s_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        for order, weight in terms:
            term = weight * amid_loss(s_logits, None, teacher_topk=topk, order=order, **kwargs)
            kd_sum = term if kd_sum is None else kd_sum + term
        if ce_weight:
            _check_targets(targets[mask], s_logits.shape[-1])
            ce_sum = F.cross_entropy(s_logits[mask].float(), targets[mask], reduction="sum")
    return _loss_and_info(kd_sum, ce_sum, ce_weight, divisor, n_tokens, fused, criterion)


def collate_topk(
    features,
    pad_token_id: int = 0,
    ignore_index: int = -100,
    logprob_dtype=torch.float32,
    columns: tuple[str, str] = TOPK_COLUMNS,
):
    """Collate examples with a cached or served teacher's top-k into a batch.

    Each feature holds ``input_ids`` (T_i,), optional ``labels`` (T_i,), and the two
    top-k columns (T_i, k_i) (lists or tensors; by default ``teacher_topk_indices`` and
    ``teacher_topk_logprobs``, :data:`gpu.hf.TOPK_COLUMNS`): the teacher's top-k ids and
    log-probabilities of its *full* distribution at each position. Sequences are
    right-padded to the longest (``pad_token_id``, labels ``ignore_index``,
    ``attention_mask`` 0) and k to the largest with index −1 and log-probability
    ``-inf`` (slots every loss ignores), so rows of different k share one batch. The
    log-probabilities are stored as ``logprob_dtype`` (float32: 4 bytes a slot; their
    rounding is allowed for by the mass check). Other keys of the features are dropped.

    Parameters
    ----------
    features : sequence of mapping
        The examples.
    pad_token_id : int
        The id written where a sequence is padded (masked by ``attention_mask``).
    ignore_index : int
        The label of padded positions.
    logprob_dtype : torch.dtype
        The dtype of the log-probability column.
    columns : (str, str)
        The names of the indices and log-probabilities columns, in and out.

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask``, ``labels`` (B, T) and the two top-k columns
        (B, T, k), ready for :func:`amid_compute_loss` with ``teacher_model=None``.

    Examples
    --------
    >>> from gpu import hf
    >>> batch = hf.collate_topk([
    ...     {"input_ids": [5, 6], "teacher_topk_indices": [[1, 2], [3, 4]],
    ...      "teacher_topk_logprobs": [[-0.5, -1.5], [-0.1, -3.0]]},
    ...     {"input_ids": [7], "teacher_topk_indices": [[2]], "teacher_topk_logprobs": [[-0.2]]}])
    >>> batch["teacher_topk_indices"].shape, batch["teacher_topk_indices"][1].tolist()
    (torch.Size([2, 2, 2]), [[2, -1], [-1, -1]])
    """
    columns = check_topk_columns(columns, "columns")
    keep = ("input_ids", "labels", *columns)
    rows = [
        {k: torch.as_tensor(v, dtype=logprob_dtype if k == columns[1] else None)
         for k, v in f.items() if k in keep}
        for f in features
    ]  # fmt: skip
    for r in rows:
        missing = [c for c in ("input_ids", *columns) if c not in r]
        if missing:
            raise ValueError(
                f"collate_topk: a feature lacks {missing} (columns={columns}; it has {sorted(r)})"
            )
    t_max = max(int(r["input_ids"].shape[0]) for r in rows)
    k_max = max(int(r[columns[0]].shape[-1]) for r in rows)
    b = len(rows)
    ids = torch.full((b, t_max), pad_token_id, dtype=torch.long)
    att = torch.zeros((b, t_max), dtype=torch.long)
    labels = torch.full((b, t_max), ignore_index, dtype=torch.long)
    idx = torch.full((b, t_max, k_max), -1, dtype=torch.long)
    lp = torch.full((b, t_max, k_max), -math.inf, dtype=logprob_dtype)
    for i, r in enumerate(rows):
        n = r["input_ids"].shape[0]
        k = r[columns[0]].shape[-1]
        ids[i, :n] = r["input_ids"]
        att[i, :n] = 1
        labels[i, :n] = r["labels"] if "labels" in r else r["input_ids"]
        idx[i, :n, :k] = r[columns[0]]
        lp[i, :n, :k] = r[columns[1]]
    return {"input_ids": ids, "attention_mask": att, "labels": labels,
            columns[0]: idx, columns[1]: lp}  # fmt: skip


@torch.no_grad()
def teacher_topk_of(teacher_model, input_ids, k: int, attention_mask=None):
    """A teacher's top-k ``(indices, logprobs)`` of shape (B, T, k), computed once (to
    cache in a dataset column, or as a serving engine returns them)."""
    logits = teacher_model(input_ids=input_ids, attention_mask=attention_mask).logits
    lp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    values, indices = lp.topk(k, dim=-1)
    return indices, values


def amid_compute_loss(
    model: torch.nn.Module,
    teacher_model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    criterion: Any,
    *,
    num_items_in_batch: torch.Tensor | float | None = None,
    ce_weight: float = 0.0,
    fused: bool | None = None,
    vocab_alignment: str | None = None,
    leftover: str | None = None,
    temperature_applies_to: str | None = None,
    teacher_topk_columns: bool | tuple[str, str] | None = None,
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
    teacher_model : torch.nn.Module or None
        A causal LM (put in eval mode and run under ``torch.no_grad``) whose vocabulary is
        the student's, or another size with ``vocab_alignment``. ``None`` for a cached or
        served teacher: ``inputs`` then carries its top-k.
    inputs : mapping
        ``input_ids`` (B, T), optional ``attention_mask`` (B, T) and ``labels`` (B, T) of
        token ids, ``ignore_index`` where a position has no target. A sparse teacher: its
        top-k ids and log-probabilities of shape (B, T, k) in the columns named by
        ``teacher_topk_columns`` (slot −1 / ``-inf``: padding,
        :func:`gpu.hf.collate_topk`); the ``leftover`` policy applies.
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
        weights (no (B, T, V) logits). ``None``: when both models pass :func:`lm_head_of`
        (with a sparse teacher: when the student does).
    vocab_alignment : {"error", "pad", "truncate"}, optional
        Overrides the criterion's: how teacher and student vocabularies of different sizes
        (one padded, e.g. 50304 and 50257) are aligned (:func:`gpu.amid_loss`). With a
        sparse teacher, ``"truncate"`` drops its ids beyond the student's vocabulary
        (refused if they carry probability) and the other values refuse such ids.
    leftover : {"bucket", "renormalize", "uniform"}, optional
        Overrides the criterion's: what a sparse teacher's probability off its top-k
        becomes (MATH.md; :func:`gpu.amid_loss`).
    temperature_applies_to : {"both", "student"}, optional
        Overrides the criterion's; a sparse teacher with a temperature ≠ 1 needs
        ``"student"`` (its log-probabilities are used as given).
    teacher_topk_columns : True or (str, str), optional
        The names of the sparse teacher's columns in ``inputs``: ``True`` for
        :data:`gpu.hf.TOPK_COLUMNS` (``teacher_topk_indices``, ``teacher_topk_logprobs``),
        or a pair. Given, the columns are required (with ``teacher_model=None``);
        ``None``: a sparse teacher is read from the default columns when present.

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
    explicit = teacher_topk_columns is not None
    columns = check_topk_columns(teacher_topk_columns) if explicit else TOPK_COLUMNS
    if explicit and teacher_model is not None:
        raise ValueError(
            "give the teacher either as teacher_model or as teacher_topk_columns (a cached or "
            "served top-k in inputs), not both"
        )
    topk = _topk_of(inputs, columns, required=explicit)
    pairs = ((model, "model"),) if topk is not None and teacher_model is None else (
        (model, "model"), (teacher_model, "teacher_model"))  # fmt: skip
    for value, name in pairs:
        if not isinstance(value, torch.nn.Module):
            hint = (
                f" (or pass the teacher's top-k columns {columns} in inputs)"
                if name == "teacher_model"
                else ""
            )
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}{hint}")
    if topk is not None and teacher_model is not None:
        raise ValueError(
            f"give the teacher either as teacher_model or as inputs[{columns[0]!r}] and "
            f"inputs[{columns[1]!r}] (teacher_topk_columns), not both"
        )
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

    s_head = lm_head_of(model)
    t_head = None if teacher_model is None else lm_head_of(teacher_model)
    if fused is None:
        fused = s_head is not None and (t_head is not None or topk is not None)
    if fused and (s_head is None or (t_head is None and topk is None)):
        needs = "the student" if topk is not None else "both models"
        raise ValueError(f"fused=True needs {needs} to expose a plain nn.Linear lm_head")
    kwargs = settings._loss_kwargs()
    for key in ("order", "ignore_index", "shift_labels"):
        kwargs.pop(key)
    kwargs.update(labels=mask, reduction="sum")
    overrides = {"vocab_alignment": vocab_alignment, "leftover": leftover,
                 "temperature_applies_to": temperature_applies_to}  # fmt: skip
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    terms = terms_of(criterion)

    if topk is not None:
        return _sparse_loss(model, s_head, input_ids, attention_mask, topk, terms, kwargs,
                            fused, ce_weight, mask, targets, settings, divisor, n_tokens,
                            criterion)  # fmt: skip
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
    return _loss_and_info(kd_sum, ce_sum, ce_weight, divisor, n_tokens, fused, criterion)


def _loss_and_info(kd_sum, ce_sum, ce_weight, divisor, n_tokens, fused, criterion):
    """The loss (KD sum plus the weighted cross-entropy sum, over the divisor; 0 with the
    graph kept when nothing counts) and the values logged with it, for the dense and the
    top-k teacher alike."""
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
