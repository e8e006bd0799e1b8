r"""The AMiD loss on vocabulary-sharded logits, exact to :func:`gpu.amid_loss` on the full rows.

Each rank of a process group holds the logits of one contiguous slice of the vocabulary
(Megatron-LM's vocab-parallel layout; a DTensor ``Shard(-1)``): shape (..., V_k) with
:math:`\sum_k V_k = V`. Softmax, the α-mixture's normalizer and every divergence are row
reductions, so the loss needs only a few per-row scalars exchanged, never an (N, V) tensor.
Everything elementwise (the log-softmaxes, :func:`gpu._mixture.log_alpha_mean_and_weight`, the
divergence kernels of :mod:`gpu._divergences`, the gradient) runs on the local slice.

The kernel is the engine's torch kernel itself (:func:`gpu._torch_kernel.chunk`, with the
same numerics as :func:`gpu.amid_loss`: the exact log-softmax, the pivoted mixture, the
dominant-entry projections, the closed-form pairs), run with a reducer (:class:`_ShardReduce`)
that completes each of its row reductions by a collective over the group: the row maxima
(max all-reduce), the sums (one sum all-reduce per group of sums: the log-normalizers'
"other entries" and ties, the mixture's normalizer and log-ratio sums, the divergence's
partial sum, the gradient's sums), and each projection's dominant entry (the first global
occurrence of the row's largest weight: a max and a min all-reduce, then its value and the
others' sum). The chunks run one after the other, in the same order on every rank.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from amid_ref.contract import Objective
from gpu._divergences import GPU_DIVERGENCES
from gpu._engine import (
    _reduce,
    _run,
    _scale_by_upstream,
    _Spec,
    _valid_rows,
    default_chunk_size,
)
from gpu._flags import _INF_GRAD, _NAN_GRAD
from gpu._loss import _ObjectiveModule
from gpu._mixture import NEG_INF
from gpu._teachers import Teaching, teaching_fields
from gpu._torch_kernel import LocalReduce
from gpu._validation import (
    ORDERS,
    REDUCTIONS,
    check_chunk_size,
    check_float_tensor,
    check_ignore_index,
    check_pair,
    check_reduction,
    compute_dtype,
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


class _ShardReduce(LocalReduce):
    """The row reductions of :func:`gpu._torch_kernel.chunk` on one slice of the vocabulary,
    each completed by a collective over the group (so the kernel's chunks run one after the
    other, in the same order on every rank). ``start`` is this slice's first vocabulary id
    (the global order of the ids decides the first occurrence of a row's maximum)."""

    local = False

    def __init__(self, group: Any) -> None:
        self.group = group
        self.start = 0
        self.calls = 0
        self.elements = 0
        self._known_max: list[tuple[torch.Tensor, torch.Tensor]] = []

    def note_max(self, x: torch.Tensor, top: torch.Tensor, index=None) -> None:
        self._known_max = [*self._known_max[-1:], (x, top)]  # the chunk's log q and log r

    def row_maxima(self, *xs: torch.Tensor) -> list[tuple[torch.Tensor, None]]:
        return [(top.unsqueeze(-1), None) for top in self.maxes(*xs)]

    def others(self, *pairs) -> tuple[torch.Tensor, ...]:
        # which rank holds the first maximum is not known here: the entries below the
        # maximum and the ties at it are summed over the shards (one collective for all),
        # S_o = Σ_{x<0} e^x + (ties − 1)
        parts = []
        for x, _ in pairs:
            top = x == 0.0
            parts += [
                torch.exp(x).masked_fill_(top, 0.0).sum(-1, keepdim=True),
                top.sum(-1, keepdim=True, dtype=x.dtype),
            ]
        sums = self.complete(*parts)
        return tuple(o.add_(t.sub_(1)) for o, t in zip(sums[::2], sums[1::2], strict=True))

    def all_reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        dist = _dist()
        x = x.contiguous()
        ops = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}
        dist.all_reduce(x, op=ops[op], group=self.group)
        self.calls += 1
        self.elements += x.numel()
        return x

    def max(self, x: torch.Tensor) -> torch.Tensor:
        # A NaN entry is sent as +inf (the row is then flagged on every rank).
        local = x.amax(-1).nan_to_num_(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        return self.all_reduce(local, "max")

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(x.sum(-1), "sum")

    def complete(self, *partials: torch.Tensor) -> tuple[torch.Tensor, ...]:
        local = torch.cat(partials, -1)
        return tuple(self.all_reduce(local, "sum").split(1, -1))

    def sums(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dtype = next((x.dtype for x in xs if x.is_floating_point()), torch.float64)
        return self.complete(*(x.sum(-1, keepdim=True, dtype=dtype) for x in xs))

    def row_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(x.clone(), "sum")

    def any(self, mask: torch.Tensor) -> bool:
        hit = torch.tensor([float(bool(mask.any()))], device=mask.device)
        return bool(self.all_reduce(hit, "max")[0] > 0)

    def flags(self, f: torch.Tensor) -> torch.Tensor:
        # Every flag but the gradient's comes from all-reduced quantities (the same on every
        # rank); the gradient's two bits are local: one max all-reduce of them as bytes.
        bits = torch.tensor([_NAN_GRAD, _INF_GRAD], device=f.device, dtype=f.dtype)
        hit = self.all_reduce(((f.unsqueeze(-1) & bits) != 0).to(torch.uint8), "max")
        return f | (hit.to(f.dtype) * bits).sum(-1).to(f.dtype)

    def maxes(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        local = torch.stack([x.amax(-1) for x in xs], -1)
        local = local.nan_to_num_(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        return tuple(self.all_reduce(local, "max").unbind(-1))

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        top = self.max(x)
        shift = top.masked_fill(top.isinf(), 0.0)  # as torch.logsumexp: ±inf rows unshifted
        return self.sum(torch.exp(x - shift.unsqueeze(-1))).log_().add_(shift)

    def project_(self, g: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
        """:meth:`gpu._torch_kernel.LocalReduce.project_` over the shards: the dominant entry is the
        first occurrence (in global ids) of the row's largest weight, on one rank."""
        v = g.shape[-1]
        known = [top for x, top in self._known_max if x is log_w]
        top = known[0] if known else self.max(log_w).unsqueeze(-1)
        # global ids as float32 where exact (V < 2^24), else float64
        id_dtype = torch.float32 if self.start + v < 2**24 else torch.float64
        ids = torch.arange(self.start, self.start + v, device=g.device, dtype=id_dtype)
        first = torch.where(log_w == top, ids, math.inf).amin(-1)
        k = self.all_reduce(first, "min").unsqueeze(-1)
        is_k = ids == k
        g_k, others = self.sums(torch.where(is_k, g, 0.0), torch.where(is_k, 0.0, g))
        top = top.masked_fill(top.isnan(), NEG_INF)
        dominant = g_k * torch.expm1(top).neg_() - torch.exp(top) * others
        out = g.sub_(torch.exp(log_w).mul_(others + g_k))
        return torch.where(is_k, dominant, out)


class _VocabParallelFunction(torch.autograd.Function):
    """Chunked sharded forward that also produces the local gradient; backward scales it."""

    @staticmethod
    def forward(ctx, student, teacher, rows, spec, reduction, n_valid, leading, red):
        v = student.shape[-1]
        scale = 1.0 / n_valid if (reduction == "mean" and n_valid > 0) else 1.0
        row_loss, grad = _run(
            student.reshape(-1, v), teacher.reshape(-1, v), rows, spec, True, scale, leading,
            red=red,
        )  # fmt: skip
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
                red=ctx.red,
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
    *,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap: Any = None,
    logit_scale: Any = None,
    temperature_applies_to: str = "both",
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
    leftover, vocab_alignment : str
        As in :func:`gpu.amid_loss`; the shards are of a dense teacher of the student's
        vocabulary, so ``leftover`` has nothing to act on and the alignment nothing to align
        (shards of different widths are refused).
    softcap, logit_scale : float or pair, optional
        As in :func:`gpu.amid_loss`: applied to each shard elementwise (the transform needs
        no other rank's columns), its derivative through autograd.
    temperature_applies_to : {"both", "student"}
        As in :func:`gpu.amid_loss`.

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
    * per chunk of rows, the kernel's reductions: 15 collectives of (rows,)–(rows, 2)
      numbers for KL(p‖r) with a gradient (6 max, 7 sum, 2 min), 17 with a temperature
      ≠ 1 (its overflow check), 18 for Rényi (counted by ``gpu._vocab_parallel``'s
      reducer, ``calls``); each a few numbers per row.

    So about 1 + 15n small collectives: latency rather than bandwidth; a second backward
    (``retain_graph=True``) repeats the forward's. Every rank must call the loss (and each
    backward) the same number of times with the same rows.

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
            teaching_fields(
                leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
            ),
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
    teaching,
):
    """Validated arguments (raises TypeError/ValueError before any collective); the logit
    transforms and a student-only temperature applied to the shards."""
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
        implementation="gpu", **teaching,
    )  # fmt: skip
    student_logits_shard, teacher_logits_shard, objective = _transformed(
        student_logits_shard, teacher_logits_shard, objective
    )
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
        "teacher form": float(zlib.crc32(repr(Teaching.of(objective)).encode())),
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


def _transformed(s: torch.Tensor, t: torch.Tensor, objective):
    """The shards after the objective's logit transforms (scale, then cap; elementwise,
    differentiable for the student) and, with ``temperature_applies_to="student"``, the
    student's shard divided by T and the objective's T set to 1; ``-inf`` stays ``-inf``."""
    (scale_s, scale_t), (cap_s, cap_t) = objective.logit_scale, objective.softcap

    def transform(x, scale, cap):
        z = x * scale if scale != 1.0 else x
        if cap is not None:
            z = torch.where(x == NEG_INF, x, cap * torch.tanh(z / cap))
        return z

    s = transform(s, scale_s, cap_s)
    t = transform(t.detach(), scale_t, cap_t)
    if objective.temperature_applies_to == "student":
        if objective.temperature != 1.0:
            s = s / objective.temperature
        objective = dataclasses.replace(objective, temperature=1.0, temperature_applies_to="both")
    return s, t, objective


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
    widths, starts = _agree(
        red, rank, world, fields, student_logits_shard.shape[-1], vocab_start, device
    )
    red.start = starts[rank]
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
            red=red,
        )
        return _reduce(row_loss, reduction, n_valid, leading)


class VocabParallelAMiDLoss(_ObjectiveModule):
    r"""Module form of :func:`vocab_parallel_amid_loss` (the vocabulary-sharded AMiD loss).

    .. math::

        \mathcal L = \operatorname{reduce}_{\text{valid positions}}
            D\big(\cdot\,\|\,\cdot\big)\ \text{over}\ \{p, q_\theta, r^{(\alpha,\lambda)}\},
        \quad \text{logits sharded over the vocabulary}

    The module holds one validated :class:`amid_ref.contract.Objective` (``objective``) and
    its own options (``ignore_index``, ``reduction``, ``chunk_size``, ``group``):
    :meth:`from_objective` and the objective's fields as attributes (read, and assigned with
    validation) behave as in :class:`gpu.AMiDLoss`. It keeps no buffers (an empty
    ``state_dict``).

    Parameters
    ----------
    alpha, lam, divergence, order, div_params, temperature, ignore_index, reduction
        As in :func:`vocab_parallel_amid_loss`.
    detach_assistant, chunk_size, group
        As in :func:`vocab_parallel_amid_loss`; ``alpha`` and ``lam`` may be changed between
        steps (the same on every rank).
    leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`vocab_parallel_amid_loss`.

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
        *,
        leftover: str = "bucket",
        vocab_alignment: str = "error",
        softcap: Any = None,
        logit_scale: Any = None,
        temperature_applies_to: str = "both",
    ) -> None:
        super().__init__()
        self._hold(
            Objective.of(
                alpha, lam, divergence, order, div_params, temperature, detach_assistant,
                leftover=leftover, vocab_alignment=vocab_alignment, softcap=softcap,
                logit_scale=logit_scale, temperature_applies_to=temperature_applies_to,
                implementation="gpu",
            )
        )  # fmt: skip
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
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
            labels=labels,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            group=self.group,
            vocab_start=vocab_start,
            **self.objective.keywords(),
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, lam={self.lam}, divergence={self.divergence!r}, "
            f"order={self.order!r}, reduction={self.reduction!r}"
        )
