r"""The AMiD loss on vocabulary-sharded logits, exact to :func:`gpu.amid_loss` on the full rows.

Each rank of a process group holds the logits of one contiguous slice of the vocabulary
(Megatron-LM's vocab-parallel layout; a DTensor ``Shard(-1)``): shape (..., V_k) with
:math:`\sum_k V_k = V`. Softmax, the α-mixture's normalizer and every divergence are row
reductions, so the loss needs only a few per-row scalars exchanged, never an (N, V) tensor.
Everything elementwise (the log-softmaxes, :func:`gpu._mixture.log_alpha_mean_and_weight`, the
divergence kernels of :mod:`gpu._divergences`, the gradient) runs on the local slice.

Per chunk of rows, with the global row maxima :math:`M_s, M_t` known (one max all-reduce
for the whole batch, which also flags NaN/±inf rows):

1. sum all-reduce of :math:`(\sum_x e^{s'_x}, \sum_x e^{t'_x})`, :math:`s' = (s - M_s)/T`:
   the two log-normalizers, hence :math:`\ell_q, \ell_p` on the slice;
2. sum all-reduce of :math:`\sum_x m_x` (:math:`m \le \max(p, q) \le 1`, no shift needed):
   :math:`\log Z`. Where :math:`Z < e^{-40}` (float32; :math:`e^{-600}` in float64) the
   terms could underflow, and those chunks add a max all-reduce of :math:`\log m` and a
   sum all-reduce of :math:`\sum e^{\log m - \max}` (the all-reduced Z is bitwise the
   same on every rank, so every rank takes the same branch);
3. sum all-reduce of the divergence's partial sum (divergences that are sums of elementwise
   terms, :data:`gpu._divergences.SUM_OF_TERMS`) and of the three sums the gradient needs,
   :math:`C = \sum g_r`, :math:`B = \sum w r`, :math:`A = \sum (g_q + w g_r)`; the exact
   student gradient on the slice is then

   .. math::

       \frac{\partial D}{\partial s} = \frac1T\Big(g_q + w\odot(g_r - rC)
           - q\,(A - CB)\Big).

   Rényi of order ρ ≠ 1 is a log-sum-exp over the row: its kernel takes a
   :class:`gpu._divergences.RowReduce`, which here adds a max and a sum all-reduce (and one
   more sum all-reduce in its series regime :math:`|\rho - 1| < \tfrac12`).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from amid_ref._specs import Objective
from gpu._divergences import GPU_DIVERGENCES, RowReduce, is_sum_of_terms
from gpu._loss import (
    _BAD_STUDENT,
    _BAD_TEACHER,
    _EMPTY_SUPPORT,
    _FLAG_DTYPE,
    _INF_LOSS,
    _NAN_LOSS,
    _raise_for_flags,
    _reduce,
    _scale_by_upstream,
    _Spec,
    _valid_rows,
    default_chunk_size,
)
from gpu._mixture import NEG_INF, log_alpha_mean_and_weight
from gpu._validation import (
    ORDERS,
    REDUCTIONS,
    check_alpha,
    check_bool,
    check_chunk_size,
    check_float_tensor,
    check_ignore_index,
    check_lam,
    check_order,
    check_pair,
    check_reduction,
    check_temperature,
    compute_dtype,
    resolve_div_params,
)

__all__ = ["VocabParallelAMiDLoss", "vocab_parallel_amid_loss"]

#: Below these sums of m the unshifted Σ m may have lost terms to underflow (float32 normal
#: range ends at e^-87, float64 at e^-708; V ≤ e^15 terms): the chunk then shifts by the
#: global max of log m, as the unsharded logsumexp does.
_Z_SHIFT_BELOW = {torch.float32: math.exp(-40.0), torch.float64: math.exp(-600.0)}


def _dist():
    # optional: torch.distributed (absent from some torch builds) is imported when used
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "vocab_parallel_amid_loss needs an initialized torch.distributed process group "
            "(torch.distributed.init_process_group, e.g. under torchrun)"
        )
    return dist


class _ShardReduce(RowReduce):
    """Row reductions of one vocabulary slice, completed by all-reduces over the group."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.calls = 0
        self.elements = 0
        self._last_max: tuple[torch.Tensor, torch.Tensor] | None = None

    def all_reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        dist = _dist()
        x = x.contiguous()
        dist.all_reduce(
            x, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=self.group
        )
        self.calls += 1
        self.elements += x.numel()
        return x

    def max(self, x: torch.Tensor) -> torch.Tensor:
        if self._last_max is not None and self._last_max[0] is x:
            return self._last_max[1]
        return self.all_reduce(x.amax(-1), "max")

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(x.sum(-1), "sum")

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        top = self.max(x)
        self._last_max = (x, top)
        shift = top.masked_fill(top.isinf(), 0.0)  # as torch.logsumexp: ±inf rows unshifted
        return self.sum(torch.exp(x - shift.unsqueeze(-1))).log_().add_(shift)


def _chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    top: torch.Tensor,
    spec: Any,
    want_grad: bool,
    grad_scale: float,
    red: _ShardReduce,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Global loss per row, local gradient slice (written into ``out`` if given), row flags.

    ``top`` (n, 2) holds the global row maxima of the student and teacher logits (finite).
    """
    inv_t = 1.0 / spec.temperature
    cdt = spec.cdtype
    s = s.to(cdt) - top[:, :1]
    t = t.to(cdt) - top[:, 1:]
    if inv_t != 1.0:
        s.mul_(inv_t)
        t.mul_(inv_t)
    norm = red.all_reduce(torch.stack((s.exp().sum(-1), t.exp().sum(-1)), -1), "sum")
    lq = s.sub_(norm[:, :1].log())
    lp = t.sub_(norm[:, 1:].log())
    del s, t
    through_r = want_grad and not spec.detach_assistant
    lm, w = log_alpha_mean_and_weight(lp, lq, spec.alpha, spec.lam, want_weight=through_r)
    z = red.all_reduce(lm.exp().sum(-1), "sum")
    lz = z.log()
    low = z < _Z_SHIFT_BELOW[cdt]
    if bool(low.any()):  # z is the all-reduced sum: the same branch on every rank
        lz = torch.where(low, red.logsumexp(lm), lz)
    flags = (lz == NEG_INF).to(_FLAG_DTYPE) * _EMPTY_SUPPORT
    lz = lz.unsqueeze(-1)
    lr = lm - lz if (lm is lp or lm is lq) else lm.sub_(lz)
    del lm, lz
    dist = {"p": lp, "q": lq, "r": lr}
    first, second = spec.first, spec.second
    need = {"p": False, "q": want_grad, "r": through_r}
    kernel = GPU_DIVERGENCES[spec.divergence]
    summed = is_sum_of_terms(spec.divergence, spec.params)
    args = (dist[first], dist[second], spec.params, need[first], need[second])
    value, g_first, g_second = kernel(*args) if summed else kernel(*args, reduce=red)
    red._last_max = None  # drop the chunk's ω held for the max
    del args, dist, lp  # the teacher's log-probabilities are not needed for the gradient
    g = {"p": None, "q": None, "r": None}
    g[first], g[second] = g_first, g_second
    g_q, g_r, r = g["q"], None, None
    cols = [value] if summed else []
    terms = None
    if want_grad:
        if through_r:
            g_r = g["r"]
            r = torch.exp(lr)
            del lr
            cols += [g_r.sum(-1), (w * r).sum(-1)]
            terms = w * g_r
            if g_q is not None:
                terms.add_(g_q)
        elif g_q is not None:
            terms = g_q
        if terms is not None:
            cols.append(terms.sum(-1))
        del terms
    if cols:
        sums = red.all_reduce(torch.stack(cols, -1), "sum").unbind(-1)
        if summed:
            value, sums = sums[0], sums[1:]
    flags |= torch.isnan(value).to(_FLAG_DTYPE) * _NAN_LOSS
    if not want_grad:
        return value, None, flags
    flags |= torch.isinf(value).to(_FLAG_DTYPE) * _INF_LOSS
    if through_r:
        c_sum, b_sum, a_sum = (x.unsqueeze(-1) for x in sums)
        g_q_total = g_r.sub_(r.mul_(c_sum)).mul_(w)  # w ⊙ ∂D/∂log m
        if g_q is not None:
            g_q_total.add_(g_q)
        total = a_sum - c_sum * b_sum
        del r, w
    elif g_q is not None:
        g_q_total, total = g_q, sums[0].unsqueeze(-1)
    else:  # D(p‖r) or D(r‖p) with the assistant detached: no path to the student
        if out is not None:
            return value, out.zero_(), flags
        return value, torch.zeros_like(lq), flags
    grad = g_q_total.sub_(lq.exp_().mul_(total))
    if out is not None:
        return value, torch.mul(grad, grad_scale * inv_t, out=out), flags
    return value, grad.mul_(grad_scale * inv_t), flags


def _run(
    s2: torch.Tensor,
    t2: torch.Tensor,
    rows: torch.Tensor | None,
    spec: Any,
    want_grad: bool,
    grad_scale: float,
    leading: tuple[int, ...],
    red: _ShardReduce,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All chunks of this rank: per-row loss (N,) and the local gradient slice (N, V_k)."""
    n, _ = s2.shape
    row_loss = torch.zeros(n, dtype=spec.cdtype, device=s2.device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=s2.device)
    grad = None
    if want_grad:
        grad = torch.empty_like(s2) if rows is None else torch.zeros_like(s2)
    n_rows = n if rows is None else rows.numel()
    if n_rows == 0:
        return row_loss, grad
    step = spec.chunk_size
    # The global row maxima for the whole batch in one max all-reduce. A NaN or +inf entry
    # is sent as +inf and a row of only -inf stays -inf: a non-finite maximum flags the row.
    top = torch.empty(n_rows, 2, dtype=spec.cdtype, device=s2.device)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        sl = slice(start, stop) if rows is None else rows[start:stop]
        top[start:stop, 0] = s2[sl].amax(-1)
        top[start:stop, 1] = t2[sl].amax(-1)
    top = red.all_reduce(top.nan_to_num_(nan=math.inf, posinf=math.inf, neginf=NEG_INF), "max")
    bad = ~torch.isfinite(top)
    if bool(bad.any()):
        row_flags = (
            bad[:, 0].to(_FLAG_DTYPE) * _BAD_STUDENT | bad[:, 1].to(_FLAG_DTYPE) * _BAD_TEACHER
        )
        if rows is None:
            flags = row_flags
        else:
            flags.index_copy_(0, rows, row_flags)
        _raise_for_flags(flags, leading, spec)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        if rows is None:
            out = grad[start:stop] if grad is not None else None
            value, g, f = _chunk(
                s2[start:stop],
                t2[start:stop],
                top[start:stop],
                spec,
                want_grad,
                grad_scale,
                red,
                out,
            )
            row_loss[start:stop] = value
            flags[start:stop] = f
        else:
            idx = rows[start:stop]
            value, g, f = _chunk(
                s2[idx], t2[idx], top[start:stop], spec, want_grad, grad_scale, red
            )
            row_loss.index_copy_(0, idx, value)
            flags.index_copy_(0, idx, f)
            if grad is not None:
                grad.index_copy_(0, idx, g.to(grad.dtype))
        del value, g, f
    _raise_for_flags(flags, leading, spec)  # the flags come from all-reduced sums: every rank
    return row_loss, grad


class _VocabParallelFunction(torch.autograd.Function):
    """Chunked sharded forward that also produces the local gradient; backward scales it."""

    @staticmethod
    def forward(ctx, student, teacher, rows, spec, reduction, n_valid, leading, red):
        v = student.shape[-1]
        scale = 1.0 / n_valid if (reduction == "mean" and n_valid > 0) else 1.0
        row_loss, grad = _run(
            student.reshape(-1, v), teacher.reshape(-1, v), rows, spec, True, scale, leading, red
        )
        ctx.save_for_backward(student, teacher)
        ctx.rows, ctx.spec, ctx.reduction, ctx.scale = rows, spec, reduction, scale
        ctx.leading, ctx.red, ctx.grad_buffer = leading, red, grad
        return _reduce(row_loss, reduction, n_valid, leading)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad = ctx.grad_buffer
        ctx.grad_buffer = None  # hand the buffer to autograd (no copy)
        student, teacher = ctx.saved_tensors
        v = student.shape[-1]
        if grad is None:  # second backward (retain_graph=True): every rank recomputes
            _, grad = _run(
                student.reshape(-1, v),
                teacher.reshape(-1, v),
                ctx.rows,
                ctx.spec,
                True,
                ctx.scale,
                ctx.leading,
                ctx.red,
            )
        _scale_by_upstream(grad, grad_output, ctx.spec, ctx.reduction)
        return grad.view(student.shape), None, None, None, None, None, None, None


def _as_local(x: Any, name: str) -> tuple[torch.Tensor, Any]:
    """A plain tensor as is; a DTensor sharded on its last dim as (local shard, its group)."""
    try:  # optional: DTensor (torch.distributed.tensor) where this torch build has it
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:  # pragma: no cover - torch without DTensor
        return x, None
    if not isinstance(x, DTensor):
        return x, None
    mesh, placements = x.device_mesh, x.placements
    if mesh.ndim != 1 or len(placements) != 1 or not isinstance(placements[0], Shard):
        raise ValueError(
            f"{name} is a DTensor with placements {placements} on a {mesh.ndim}-D mesh; "
            "vocab_parallel_amid_loss takes a 1-D mesh with placement Shard(-1) (the vocabulary)"
        )
    if placements[0].dim not in (-1, x.ndim - 1):
        raise ValueError(
            f"{name} is a DTensor sharded on dim {placements[0].dim}; the vocabulary "
            f"(last dim, {x.ndim - 1}) must be the sharded one"
        )
    return x.to_local(), mesh.get_group()


#: The per-call values every rank must agree on, in the order of the first collective.
_FIELDS = (
    "argument error",
    "alpha",
    "lam",
    "temperature",
    "divergence",
    "div_params",
    "order",
    "reduction",
    "detach_assistant",
    "chunk_size",
    "leading shape",
    "labels (valid rows)",
    "dtype and gradient",
)


#: Bits of the valid-row mask per float64 of the agreement check (exact integers < 2^53).
_MASK_BITS = 52


def _packed_mask(rows: torch.Tensor, n: int) -> torch.Tensor:
    """The valid-row mask of ``n`` rows (``rows``: the valid ones) packed 52 bits to a
    float64, exactly: ⌈n/52⌉ numbers (158 for 8192 rows)."""
    mask = torch.zeros(n, dtype=torch.float64)
    mask[rows.cpu()] = 1.0
    mask = torch.cat((mask, mask.new_zeros(-n % _MASK_BITS))).view(-1, _MASK_BITS)
    return mask @ torch.pow(2.0, torch.arange(_MASK_BITS, dtype=torch.float64))


def _agree_on_rows(red: _ShardReduce, rows: torch.Tensor | None, n: int, device) -> None:
    """After :func:`_agree` (same leading shape and number of valid rows everywhere), one
    max all-reduce comparing the valid-row masks themselves, exactly: a key such as
    Σ (row + 1)² collides ({0, 4, 5} and {1, 2, 6} both give 67). Skipped, on every rank
    alike, when every row counts."""
    if rows is None:  # n_valid = n on every rank (agreed): all rows count everywhere
        return
    packed = _packed_mask(rows, n)
    got = red.all_reduce(torch.cat((packed, -packed)).to(device), "max").cpu()
    if not torch.equal(got[: packed.numel()], -got[packed.numel() :]):
        raise ValueError(
            "the ranks of the process group disagree on labels (valid rows) (every rank must "
            "pass the same arguments, leading shape and labels; only the vocabulary is sharded)"
        )


def _agree(
    red: _ShardReduce,
    rank: int,
    world: int,
    fields: dict[str, float],
    width: int,
    vocab_start: int | None,
    device: torch.device,
    error: Exception | None = None,
) -> tuple[list[int], list[int]]:
    """One max all-reduce checking that every rank passed the same call; returns the shard
    widths and starts (in rank order, or from ``vocab_start``). A rank whose arguments
    failed validation takes part with ``error`` set: then every rank raises."""
    names = list(_FIELDS)
    vals = torch.tensor([fields.get(k, 0.0) for k in names], dtype=torch.float64)
    slots = torch.zeros(2 * world, dtype=torch.float64)
    slots[rank] = width
    # start + 1, so that 0 means "not given" (and the other ranks' slots, filled by the max)
    slots[world + rank] = 0.0 if vocab_start is None else vocab_start + 1.0
    packed = torch.cat((vals, -vals, slots)).to(device)
    got = red.all_reduce(packed, "max").cpu()
    k = len(names)
    if got[0] != 0:  # "argument error": some rank rejected its arguments
        if error is not None:
            raise error
        raise ValueError(
            "another rank of the process group rejected its arguments (see its error); every "
            "rank raises so that none is left waiting in a collective"
        )
    for i, name in enumerate(names):
        if got[i] != -got[k + i]:
            raise ValueError(
                f"the ranks of the process group disagree on {name} (every rank must pass the "
                "same arguments, leading shape and labels; only the vocabulary is sharded)"
            )
    widths = [int(x) for x in got[2 * k : 2 * k + world]]
    starts_given = [int(x) - 1 for x in got[2 * k + world :]]
    if all(st < 0 for st in starts_given):
        starts = [sum(widths[:i]) for i in range(world)]
    elif any(st < 0 for st in starts_given):
        raise ValueError("vocab_start must be given on every rank or on none")
    else:
        starts = starts_given
        end = 0
        shards = list(zip(starts, widths, strict=True))
        for st, wd in sorted(shards):
            if st != end:
                raise ValueError(
                    f"the vocabulary shards (vocab_start, width) = {shards} "
                    "do not tile [0, V) without gaps or overlaps"
                )
            end = st + wd
    return widths, starts


def vocab_parallel_amid_loss(
    student_logits_shard: torch.Tensor,
    teacher_logits_shard: torch.Tensor,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    temperature: float = 1.0,
    detach_assistant: bool = False,
    chunk_size: int | None = None,
    group: Any = None,
    vocab_start: int | None = None,
) -> torch.Tensor:
    r"""The AMiD loss of :func:`gpu.amid_loss` on logits sharded along the vocabulary.

    .. math::

        \mathcal L = \operatorname{reduce}_{\text{rows}} D(\cdot\|\cdot),\quad
        r \propto m_\alpha(p, q;\lambda),\quad
        p = \mathrm{softmax}(t/T),\ q = \mathrm{softmax}(s/T),

    where each rank holds the columns ``[vocab_start, vocab_start + V_k)`` of ``s`` and
    ``t``. The loss (replicated: the same value on every rank) and the gradient of each
    rank's shard equal those of :func:`gpu.amid_loss` on the full rows, up to summation
    order; the reductions over the row go through ``torch.distributed.all_reduce``
    (module :mod:`gpu._vocab_parallel`), O(N) numbers, never an (N, V) tensor.

    Parameters
    ----------
    student_logits_shard, teacher_logits_shard : torch.Tensor, shape (..., V_k)
        This rank's slice of the student and teacher logits, same shape; V_k may differ
        between ranks (uneven shards; a shard may be entirely ``-inf`` on a row). A DTensor
        on a 1-D mesh with placement ``Shard(-1)`` is accepted too (its local shard and its
        mesh's group are used; ``group`` and ``vocab_start`` must then be left ``None``).
    alpha, lam, divergence, order, div_params, labels, ignore_index, reduction
        As in :func:`gpu.amid_loss` (same ranges, ``alpha`` incl. ±inf); every rank passes
        the same values and the same ``labels`` (checked, see Raises).
    temperature, detach_assistant
        As in :func:`gpu.amid_loss`.
    chunk_size : int, optional
        Rows per chunk on every rank; ``None`` picks :func:`gpu.default_chunk_size` of the
        *global* V, so each rank's scratch is 1/world of the unsharded loss's.
    group : torch.distributed.ProcessGroup, optional
        The tensor-parallel group over which the vocabulary is sharded (default: the world).
    vocab_start : int, optional
        Global index of this shard's first column; ``None`` on every rank means the shards
        follow the rank order. Used only to check that the shards tile the vocabulary.

    Returns
    -------
    torch.Tensor
        As :func:`gpu.amid_loss`: float32 (float64 for float64 inputs), 0-d for
        ``"mean"``/``"sum"``, shape (...) for ``"none"``; the same on every rank. Its
        gradient w.r.t. ``student_logits_shard`` is this rank's slice of the full gradient,
        in the student's dtype.

    Raises
    ------
    TypeError, ValueError
        The errors of :func:`gpu.amid_loss`, with the same messages, raised on *every*
        rank and naming the global row: a NaN on one rank's shard flags the row on all
        (the flags travel in the all-reduced maxima and sums, so no rank is left waiting in
        a collective). Also when the ranks disagree on the arguments, the leading shape,
        the labels' valid rows, the dtype or whether a gradient is needed, and on every
        rank when one rank's arguments fail validation (it joins the first collective with
        an error flag).

    Notes
    -----
    Collectives per forward+backward (the backward communicates nothing; its gradient is
    formed in the forward as in :func:`gpu.amid_loss`), with n = ⌈N_valid/chunk_size⌉:

    * 1 max all-reduce of 2·(12 + world) float64 (the arguments' agreement check), and,
      when ``labels`` leave rows out, 1 max all-reduce of 2·⌈N/52⌉ float64 (the valid-row
      masks compared exactly, 52 rows to a float64);
    * 1 max all-reduce of (N_valid, 2): the row maxima of s and t (skipped if N_valid = 0);
    * per chunk, 3 sum all-reduces: (rows, 2) normalizers, (rows,) Z, and (rows, k) with
      k = 4 (divergence partial sum, C, B, A; k = 2 with ``detach_assistant`` on a
      ``qr``/``rq`` order, 1 without gradient);
    * Rényi with ρ ≠ 1 adds per chunk a max and a sum all-reduce of (rows,) (and one more
      sum if :math:`|\rho - 1| < \tfrac12`) and drops its value from the k;
    * a chunk where some row's :math:`Z < e^{-40}` (float32; :math:`e^{-600}` float64, e.g.
      nearly disjoint p and q at α ≥ 1) adds a max and a sum all-reduce of (rows,).

    So 2 + 3n collectives and 9 numbers per row (36 bytes in float32) for the sum-type
    divergences; a second backward (``retain_graph=True``) repeats the forward's. Every rank
    must call the loss (and each backward) the same number of times with the same rows.

    Examples
    --------
    Under ``torchrun --nproc-per-node 2`` (gloo or nccl)::

        import torch, torch.distributed as dist, gpu
        dist.init_process_group("gloo")
        k, w = dist.get_rank(), dist.get_world_size()
        V = 50257
        lo, hi = k * -(-V // w), min(V, (k + 1) * -(-V // w))
        s = student_logits[..., lo:hi]  # this rank's lm_head output
        loss = gpu.vocab_parallel_amid_loss(s, teacher_logits[..., lo:hi], -5.0, 0.1)
        loss.backward()
    """
    try:
        call = _checked_call(
            student_logits_shard,
            teacher_logits_shard,
            alpha,
            lam,
            divergence,
            order,
            div_params,
            labels,
            ignore_index,
            reduction,
            temperature,
            detach_assistant,
            chunk_size,
            group,
            vocab_start,
        )
    except (TypeError, ValueError) as exc:
        # optional: torch.distributed, as in _dist
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        _agree(
            _ShardReduce(group),
            dist.get_rank(group=group),
            dist.get_world_size(group=group),
            {"argument error": 1.0},
            0,
            None,
            device,
            exc,
        )
        raise  # pragma: no cover - _agree raises
    return _apply(*call)


def _checked_call(
    student_logits_shard,
    teacher_logits_shard,
    alpha,
    lam,
    divergence,
    order,
    div_params,
    labels,
    ignore_index,
    reduction,
    temperature,
    detach_assistant,
    chunk_size,
    group,
    vocab_start,
):
    """Validated arguments (raises TypeError/ValueError before any collective)."""
    student_logits_shard, mesh_group = _as_local(student_logits_shard, "student_logits_shard")
    teacher_logits_shard, mesh_group_t = _as_local(teacher_logits_shard, "teacher_logits_shard")
    if mesh_group is not None or mesh_group_t is not None:
        if mesh_group is None or mesh_group_t is None:
            raise TypeError(
                "student and teacher logits must both be DTensors or both plain tensors"
            )
        if group is not None or vocab_start is not None:
            raise ValueError("group and vocab_start are taken from the DTensor; leave them None")
        group = mesh_group
    check_float_tensor(student_logits_shard, "student_logits_shard")
    check_float_tensor(teacher_logits_shard, "teacher_logits_shard")
    check_pair(
        student_logits_shard, teacher_logits_shard, "student_logits_shard", "teacher_logits_shard"
    )
    objective = Objective.of(
        alpha, lam, divergence, order, div_params, temperature, detach_assistant,
        implementation="gpu",
    )  # fmt: skip
    alpha, lam, params = objective.alpha, objective.lam, objective.params
    temperature = objective.temperature
    ignore_index = check_ignore_index(ignore_index)
    reduction = check_reduction(reduction)
    detach_assistant = objective.detach_assistant
    chunk_size = check_chunk_size(chunk_size)
    if vocab_start is not None and (
        isinstance(vocab_start, bool) or not isinstance(vocab_start, int) or vocab_start < 0
    ):
        raise TypeError(f"vocab_start must be a non-negative int or None, got {vocab_start!r}")
    leading = tuple(student_logits_shard.shape[:-1])
    device = student_logits_shard.device
    # The positions that count, by the rule of gpu.amid_loss (integer labels or a bool mask).
    rows, n_valid = _valid_rows(labels, leading, device, ignore_index, False)
    cdtype = compute_dtype(student_logits_shard.dtype, teacher_logits_shard.dtype)
    want_grad = torch.is_grad_enabled() and student_logits_shard.requires_grad
    spec = _Spec(objective=objective, cdtype=cdtype, chunk_size=chunk_size or 0)
    fields = {
        "alpha": alpha,
        "lam": lam,
        "temperature": temperature,
        "divergence": float(list(GPU_DIVERGENCES).index(divergence)),
        "div_params": float(zlib.crc32(repr(sorted(params.items())).encode())),
        "order": float(list(ORDERS).index(order)),
        "reduction": float(REDUCTIONS.index(reduction)),
        "detach_assistant": float(detach_assistant),
        "chunk_size": float(chunk_size or 0),
        "leading shape": float(zlib.crc32(repr(leading).encode())),
        "labels (valid rows)": float(n_valid),
        "dtype and gradient": float(cdtype == torch.float64) + 2.0 * want_grad,
    }
    student = student_logits_shard
    return (
        student,
        teacher_logits_shard,
        rows,
        spec,
        reduction,
        n_valid,
        leading,
        want_grad,
        fields,
        group,
        vocab_start,
    )


def _apply(
    student_logits_shard,
    teacher_logits_shard,
    rows,
    spec,
    reduction,
    n_valid,
    leading,
    want_grad,
    fields,
    group,
    vocab_start,
):
    dist = _dist()
    red = _ShardReduce(group)
    device = student_logits_shard.device
    rank = dist.get_rank(group=group)
    world = dist.get_world_size(group=group)
    widths, _ = _agree(
        red, rank, world, fields, student_logits_shard.shape[-1], vocab_start, device
    )
    _agree_on_rows(red, rows, math.prod(leading), device)
    if not spec.chunk_size:
        spec = dataclasses.replace(spec, chunk_size=default_chunk_size(sum(widths), device))
    teacher = teacher_logits_shard.detach()
    if want_grad:
        return _VocabParallelFunction.apply(
            student_logits_shard, teacher, rows, spec, reduction, n_valid, leading, red
        )
    with torch.no_grad():
        v = student_logits_shard.shape[-1]
        row_loss, _ = _run(
            student_logits_shard.reshape(-1, v),
            teacher.reshape(-1, v),
            rows,
            spec,
            False,
            1.0,
            leading,
            red,
        )
        return _reduce(row_loss, reduction, n_valid, leading)


class VocabParallelAMiDLoss(torch.nn.Module):
    r"""Module form of :func:`vocab_parallel_amid_loss` (the vocabulary-sharded AMiD loss).

    .. math::

        \mathcal L = \operatorname{reduce}_{\text{valid positions}}
            D\big(\cdot\,\|\,\cdot\big)\ \text{over}\ \{p, q_\theta, r^{(\alpha,\lambda)}\},
        \quad \text{logits sharded over the vocabulary}

    Parameters
    ----------
    alpha, lam, divergence, order, div_params, temperature, ignore_index, reduction
        As in :func:`vocab_parallel_amid_loss`.
    detach_assistant, chunk_size, group
        As in :func:`vocab_parallel_amid_loss`; ``alpha`` and ``lam`` may be changed between
        steps (the same on every rank).

    Examples
    --------
    >>> import gpu
    >>> gpu.VocabParallelAMiDLoss(alpha=-5.0, lam=0.1)
    VocabParallelAMiDLoss(alpha=-5.0, lam=0.1, divergence='kl', order='pr', reduction='mean')
    """

    def __init__(
        self,
        alpha: float,
        lam: float,
        divergence: str = "kl",
        order: str = "pr",
        div_params: Mapping[str, Any] | None = None,
        temperature: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        detach_assistant: bool = False,
        chunk_size: int | None = None,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.lam = check_lam(lam)
        self.divergence = divergence
        self.order = order
        self.div_params = dict(resolve_div_params(divergence, div_params))
        check_order(order)
        self.temperature = check_temperature(temperature)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.detach_assistant = check_bool(detach_assistant, "detach_assistant")
        self.chunk_size = check_chunk_size(chunk_size)
        self.group = group

    def forward(
        self,
        student_logits_shard: torch.Tensor,
        teacher_logits_shard: torch.Tensor,
        labels: torch.Tensor | None = None,
        vocab_start: int | None = None,
    ) -> torch.Tensor:
        return vocab_parallel_amid_loss(
            student_logits_shard,
            teacher_logits_shard,
            self.alpha,
            self.lam,
            divergence=self.divergence,
            order=self.order,
            div_params=self.div_params,
            labels=labels,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            temperature=self.temperature,
            detach_assistant=self.detach_assistant,
            chunk_size=self.chunk_size,
            group=self.group,
            vocab_start=vocab_start,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, lam={self.lam}, divergence={self.divergence!r}, "
            f"order={self.order!r}, reduction={self.reduction!r}"
        )
