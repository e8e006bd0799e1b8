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
that completes its row reductions by collectives over the group, one per step of the
kernel's data dependencies: a reduction not read at once (``later=True``, the loss's partial
sum, the silent-entry flag, two independent projections) waits in a queue and travels with
the next all-reduce of its kind. The row maxima (max all-reduce) also tell each shard
whether it holds the row's maximum, the dominant entry of the log-normalizer and of the
projections (its first global occurrence: ties across shards are counted, one number per
chunk, and resolved by one more collective only where they occur); the sums carry the
log-normalizers' other entries, the mixture's normalizer with the log-ratio sums, the
projections' dominant value and others' sum with the divergence's partial sum; the
gradient's flag bits go once per pass. The chunks run one after the other, in the same
order on every rank.

A sparse teacher (``teacher_topk``, global ids, replicated) is never densified to (N, V):
with ``leftover="bucket"`` (:func:`_sparse_kernel`) each rank gathers its student logits at
the ids of its shard and its off-id log-sum-exp part, O(k) numbers per row are all-reduced,
the (k+1)-category pair of :func:`gpu._teachers._sparse_chunk` is formed alike on every
rank, and each rank writes the gradient of its own columns; ``renormalize`` and ``uniform``
densify the teacher on the shard, one chunk at a time.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping
from typing import Any

import torch

from amid_ref.contract import check_teacher_source
from gpu._divergences import GPU_DIVERGENCES
from gpu._engine import (
    _reduce,
    _run,
    _Spec,
    _triton_usable,
    _valid_rows,
    _warn_once,
    check_backend,
    default_chunk_size,
)
from gpu._flags import _BAD_STUDENT, _FLAG_DTYPE, _INF_GRAD, _NAN_GRAD
from gpu._loss import _AMiDFunction, _objective_of, _ObjectiveModule
from gpu._mixture import NEG_INF
from gpu._teachers import Teaching, check_topk
from gpu._torch_kernel import LocalReduce, _grad_flags
from gpu._torch_kernel import chunk as torch_chunk
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


@dataclasses.dataclass
class _Holder:
    """Where a row's maximum is, on one shard (from :meth:`_ShardReduce.row_maxima`):
    ``index`` the first local occurrence, ``here`` whether this shard holds the global
    maximum (finite), ``finite`` whether the global maximum is; ``mine`` (set by
    :meth:`_ShardReduce.others`) whether this shard holds its first global occurrence."""

    index: torch.Tensor
    here: torch.Tensor
    finite: torch.Tensor
    mine: torch.Tensor | None = None


class _ShardReduce(LocalReduce):
    """The row reductions of :func:`gpu._torch_kernel.chunk` on one slice of the vocabulary,
    each completed by a collective over the group (so the kernel's chunks run one after the
    other, in the same order on every rank). ``start`` is this slice's first vocabulary id
    and ``order`` its place among the shards by start (the global order of the ids decides
    the first occurrence of a row's maximum).

    Reductions asked for ``later`` (and :meth:`row_sum`, :meth:`prefetch_any`) wait in a
    queue and travel with the next collective of their kind (a single flat all-reduce),
    or with :meth:`flush`; the gradient's flag bits wait for :meth:`settle`, once per pass.
    """

    local = False

    def __init__(self, group: Any) -> None:
        self.group = group
        self.start = 0
        self.world = 1
        self.order = 0
        #: The dtype of global vocabulary ids in a collective (min all-reduce of the first
        #: maxima: gpu._triton_kernel._carried_to_top, :meth:`_project_start`): float32,
        #: exact, wherever every id is below 2^24; set once the shards are agreed, the same
        #: on every rank.
        self.ids = torch.float64
        self.calls = 0
        self.elements = 0
        self._known_max: list[tuple[torch.Tensor, torch.Tensor, Any]] = []
        self._queue: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"sum": [], "max": []}
        self._any: list[torch.Tensor] = []
        self._grad_bits: list[torch.Tensor] = []

    def note_max(self, x: torch.Tensor, top: torch.Tensor, index=None) -> None:
        self._known_max = [*self._known_max[-1:], (x, top, index)]  # the chunk's log q and log r

    def _later(self, local: torch.Tensor, op: str) -> torch.Tensor:
        """A tensor of ``local``'s shape, filled in place with its all-reduce once the next
        collective of ``op`` (or :meth:`flush`) has run."""
        out = torch.empty_like(local)
        self._queue[op].append((local, out))
        return out

    def flush(self, *ops: str) -> None:
        for op in ops or tuple(self._queue):
            if items := self._queue[op]:
                self.all_reduce(items[0][0].new_empty(0), op)

    def all_reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        dist = _dist()
        x = x.contiguous()
        shape = x.shape
        items = self._queue.get(op, []) if x.is_floating_point() else []
        if items:  # the queued reductions of this kind travel with this one
            self._queue[op] = []
            x = torch.cat([x.reshape(-1), *(q.reshape(-1).to(x.dtype) for q, _ in items)])
        ops = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}
        dist.all_reduce(x, op=ops[op], group=self.group)
        self.calls += 1
        self.elements += x.numel()
        if not items:
            return x
        sizes = [x.numel() - sum(q.numel() for q, _ in items)] + [q.numel() for q, _ in items]
        head, *parts = x.split(sizes)
        for (_, out), part in zip(items, parts, strict=True):
            out.copy_(part.view(out.shape))
        return head.view(shape)

    def row_maxima(self, *xs: torch.Tensor) -> list[tuple[torch.Tensor, _Holder]]:
        # A NaN entry is sent as +inf (the row is then flagged on every rank).
        local = [torch.max(x, -1, keepdim=True) for x in xs]
        packed = torch.cat([top for top, _ in local], -1)
        packed = packed.nan_to_num(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        tops = self.all_reduce(packed.reshape(-1), "max").view(packed.shape).split(1, -1)
        out = []
        for (mine, index), top in zip(local, tops, strict=True):
            finite = torch.isfinite(top)
            out.append((top, _Holder(index, (mine == top) & finite, finite)))
        return out

    def others(self, *pairs, keep: list | None = None) -> tuple[torch.Tensor, ...]:
        # ``keep`` stays empty: the exponentials of a shard are not a whole row's (its
        # maximum may be another shard's), so they are not reused (LocalReduce.others).
        # S_o = Σ_{j≠k} e^{x_j}, k the first global occurrence of the maximum: a shard that
        # holds the maximum leaves out its own first occurrence (as LocalReduce.others).
        # When one shard only holds it on every row (counted: one number per chunk, sent
        # with the sums) that is k; otherwise (ties across shards, rare) one more collective
        # finds the first holder in vocabulary order, and the others' left-out ones count 1.
        parts = []
        holders = []
        for x, holder in pairs:
            e = torch.exp(x)
            if isinstance(holder, _Holder):
                kept = torch.where(holder.here, 0.0, e.gather(-1, holder.index))
                e.scatter_(-1, holder.index, kept)
                holders.append(holder)
            parts.append(e.sum(-1, keepdim=True))
        if holders:
            count = sum(h.here.sum() for h in holders).to(parts[0].dtype).reshape(1)
            finite = sum(int(h.finite.sum()) for h in holders)
            counted = self._later(count, "sum")
        sums = self.complete(*parts)
        if holders and int(counted[0]) != finite:  # the same on every rank
            self._first_holders(holders, sums)
        else:
            for h in holders:
                h.mine = h.here
        return sums

    def _first_holders(self, holders: list[_Holder], sums) -> None:
        """Ties of the maximum across shards: the first holder (by start) of each row keeps
        its occurrence as k; the others' left-out occurrences (e^0 = 1) join S_o."""
        world = self.world
        cols = -(-world // 62)
        n, device = holders[0].here.shape[0], holders[0].here.device
        bits = torch.zeros(n, len(holders) * cols, dtype=torch.int64, device=device)
        for i, h in enumerate(holders):
            bits[:, i * cols + self.order // 62] = h.here[:, 0].to(torch.int64) << (self.order % 62)
        got = self.all_reduce(bits, "sum")
        for i, (h, total) in enumerate(zip(holders, sums, strict=True)):
            word = got[:, i * cols : (i + 1) * cols]
            held = torch.stack([(word >> j) & 1 for j in range(62)], -1).flatten(1)[:, :world]
            first = torch.where(held.any(-1), held.float().argmax(-1), -1)
            h.mine = h.here & (first == self.order).unsqueeze(-1)
            total.add_((held.sum(-1, keepdim=True) - 1).clamp_(min=0).to(total.dtype))

    def max(self, x: torch.Tensor) -> torch.Tensor:
        # A NaN entry is sent as +inf (the row is then flagged on every rank).
        local = x.amax(-1).nan_to_num_(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        return self.all_reduce(local, "max")

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(x.sum(-1), "sum")

    def complete(self, *partials: torch.Tensor) -> tuple[torch.Tensor, ...]:
        local = torch.cat(partials, -1)
        return tuple(self.all_reduce(local, "sum").view(local.shape).split(1, -1))

    def sums(self, *xs: torch.Tensor, later: bool = False) -> tuple[torch.Tensor, ...]:
        dtype = next((x.dtype for x in xs if x.is_floating_point()), torch.float64)
        partials = [x.sum(-1, keepdim=True, dtype=dtype) for x in xs]
        if later:
            return tuple(self._later(p, "sum") for p in partials)
        return self.complete(*partials)

    def row_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self._later(x.clone(), "sum")

    def prefetch_any(self, mask: torch.Tensor) -> None:
        self._any.append(self._later(mask.any().reshape(1).to(torch.float32), "max"))

    def any(self, mask: torch.Tensor) -> bool:
        if self._any:  # announced (prefetch_any): it went with a collective already
            self.flush("max")
            return bool(self._any.pop(0)[0] > 0)
        hit = torch.tensor([float(bool(mask.any()))], device=mask.device)
        return bool(self.all_reduce(hit, "max")[0] > 0)

    def flags(self, f: torch.Tensor) -> torch.Tensor:
        # Every flag but the gradient's comes from all-reduced quantities (the same on every
        # rank); the gradient's two bits are local: kept for settle (once per pass).
        bits = torch.tensor([_NAN_GRAD, _INF_GRAD], device=f.device, dtype=f.dtype)
        self._grad_bits.append(((f.unsqueeze(-1) & bits) != 0).to(torch.uint8))
        return f

    def settle(self):
        """The gradient's flag bits of every chunk of the pass, the same on every rank: one
        max all-reduce of two numbers per chunk, and, only where one is set (an error is
        then raised), one of the bits of every row. Returns the chunks' flags or None."""
        pending, self._grad_bits = self._grad_bits, []
        if not pending:
            return None
        anywhere = torch.stack([b.amax(0) if b.numel() else b.new_zeros(2) for b in pending])
        if not bool(self.all_reduce(anywhere, "max").any()):
            return None
        got = self.all_reduce(torch.cat(pending), "max").split([len(b) for b in pending])
        bits = torch.tensor([_NAN_GRAD, _INF_GRAD], dtype=_FLAG_DTYPE)
        return [(b.to(_FLAG_DTYPE) * bits.to(b.device)).sum(-1).to(_FLAG_DTYPE) for b in got]

    def maxes(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        local = torch.stack([x.amax(-1) for x in xs], -1)
        local = local.nan_to_num_(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        return tuple(self.all_reduce(local, "max").unbind(-1))

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        top = self.max(x)
        shift = top.masked_fill(top.isinf(), 0.0)  # as torch.logsumexp: ±inf rows unshifted
        return self.sum(torch.exp(x - shift.unsqueeze(-1))).log_().add_(shift)

    def projects_(self, *pairs) -> tuple[torch.Tensor, ...]:
        """:meth:`project_` of each pair, their sums in one collective."""
        pending = [self._project_start(g, log_w) for g, log_w in pairs]
        sums = self.complete(*(s for p in pending for s in p[2]))
        return tuple(
            self._project_finish(g, log_w, is_k, top, *sums[2 * i : 2 * i + 2])
            for i, (g, log_w, _, is_k, top) in enumerate(pending)
        )

    def project_(self, g: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
        """:meth:`gpu._torch_kernel.LocalReduce.project_` over the shards: the dominant entry is the
        first occurrence (in global ids) of the row's largest weight, on one rank."""
        return self.projects_((g, log_w))[0]

    def _project_start(self, g, log_w):
        known = [(top, h) for x, top, h in self._known_max if x is log_w]
        if known and isinstance(known[0][1], _Holder) and known[0][1].mine is not None:
            top, h = known[0]
            is_k = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, h.index, h.mine)
        else:  # not noted: the first global occurrence by a max and a min all-reduce
            v = g.shape[-1]
            top = known[0][0] if known else self.max(log_w).unsqueeze(-1)
            # global ids in the dtype the ranks agreed on (self.ids: float32 where exact)
            ids = torch.arange(self.start, self.start + v, device=g.device, dtype=self.ids)
            first = torch.where(log_w == top, ids, math.inf).amin(-1)
            k = self.all_reduce(first, "min").unsqueeze(-1)
            is_k = ids == k
        partial = (
            torch.where(is_k, g, 0.0).sum(-1, keepdim=True),
            torch.where(is_k, 0.0, g).sum(-1, keepdim=True),
        )
        return g, log_w, partial, is_k, top

    @staticmethod
    def _project_finish(g, log_w, is_k, top, g_k, others):
        top = top.masked_fill(top.isnan(), NEG_INF)
        dominant = g_k * torch.expm1(top).neg_() - torch.exp(top) * others
        out = g.sub_(torch.exp(log_w).mul_(others + g_k))
        return torch.where(is_k, dominant, out)


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
    "teacher form",
    "teacher_topk",
    "leading shape",
    "labels (valid rows)",
    "dtype and gradient",
    "kernel (backend)",
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
    width: tuple[int, int],
    vocab_start: int | None,
    device: torch.device,
    error: Exception | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """One max all-reduce checking that every rank passed the same call; returns the
    student's shard widths and starts (in rank order, or from ``vocab_start``) and the
    teacher's shard widths (``width``: this rank's student and teacher widths). A rank
    whose arguments failed validation takes part with ``error`` set: then every rank
    raises."""
    names = list(_FIELDS)
    vals = torch.tensor([fields.get(k, 0.0) for k in names], dtype=torch.float64)
    slots = torch.zeros(3 * world, dtype=torch.float64)
    slots[rank], slots[2 * world + rank] = width
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
    starts_given = [int(x) - 1 for x in got[2 * k + world : 2 * k + 2 * world]]
    widths_t = [int(x) for x in got[2 * k + 2 * world :]]
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
    return widths, starts, widths_t


def vocab_parallel_amid_loss(
    student_logits_shard: torch.Tensor,
    teacher_logits_shard: torch.Tensor | None,
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
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap: Any = None,
    logit_scale: Any = None,
    temperature_applies_to: str = "both",
    backend: str = "auto",
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
        ``teacher_logits_shard`` is ``None`` with ``teacher_topk``.
    alpha, lam, divergence, order, div_params, labels, ignore_index, reduction
        As in :func:`gpu.amid_loss` (same ranges, ``alpha`` incl. ±inf); every rank passes
        the same values and the same ``labels`` (checked, see Raises).
    temperature, detach_assistant
        As in :func:`gpu.amid_loss`.
    chunk_size : int, optional
        Rows per chunk on every rank; ``None`` picks :func:`gpu.default_chunk_size` of the
        *global* V with its ``wide`` rule (each chunk costs collectives), so each rank's
        scratch is 1/world of what the unsharded loss would take at that chunk.
    group : torch.distributed.ProcessGroup, optional
        The tensor-parallel group over which the vocabulary is sharded (default: the world).
    vocab_start : int, optional
        Global index of this shard's first column; ``None`` on every rank means the shards
        follow the rank order. Used only to check that the shards tile the vocabulary.
    teacher_topk : pair of torch.Tensor, optional
        A sparse teacher ``(indices, logprobs)`` of shape (..., k) as in
        :func:`gpu.amid_loss`, with *global* vocabulary ids, the same (replicated) on every
        rank (checked: a hash of it joins the first collective). Never densified to
        (N, V): each rank gathers its student logits at the ids of its shard (see Notes).
    leftover : {"bucket", "renormalize", "uniform"}
        As in :func:`gpu.amid_loss`, for ``teacher_topk``.
    vocab_alignment : {"error", "pad", "truncate"}
        As in :func:`gpu.amid_loss` for ``teacher_topk`` (``"truncate"`` drops the ids ≥ the
        student's global V). Dense teacher shards must hold the student's columns: shards
        of other widths are refused on every rank whatever the alignment (the columns of
        two vocabularies of different sizes sharded over the same ranks do not line up;
        docs/sharded.md).
    softcap, logit_scale : float or pair, optional
        As in :func:`gpu.amid_loss`: applied to each shard elementwise (the transform needs
        no other rank's columns), its derivative through autograd.
    temperature_applies_to : {"both", "student"}
        As in :func:`gpu.amid_loss`.
    backend : {"auto", "torch", "triton"}
        The per-chunk kernel, as in :func:`gpu.amid_loss`: ``"triton"`` runs the Triton
        passes on the local columns and combines their row statistics over the group
        between passes (:func:`gpu._triton_kernel.shard_chunk`); ``"auto"`` picks it for
        CUDA tensors when triton imports. Where it cannot run, a ``RuntimeWarning`` says so
        once and the torch kernel is used; the ranks must end up with the same kernel
        (checked). A sparse teacher (``teacher_topk``) runs the torch kernel.

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
        the labels' valid rows, the sparse teacher, the dtype or whether a gradient is
        needed, and on every rank when one rank's arguments fail validation (it joins the
        first collective with an error flag). A sparse teacher's structure is checked
        before the first collective, its values (ids out of range, duplicates, the mass,
        k > V, ...) on every rank once the shards' widths, and with them V, are agreed.

    Notes
    -----
    Collectives per forward+backward (the backward communicates nothing; its gradient is
    formed in the forward as in :func:`gpu.amid_loss`), with n = ⌈N_valid/chunk_size⌉:

    * 1 max all-reduce of 2·16 + 3·world float64 (the arguments' agreement check), and,
      when ``labels`` leave rows out, 1 max all-reduce of 2·⌈N/52⌉ float64 (the valid-row
      masks compared exactly, 52 rows to a float64);
    * per chunk of rows, one collective per step of the kernel's data dependencies: with
      the Triton kernel 8 with a gradient (3 for pass a, 3 for pass b, 1 each for passes
      c and c2; Rényi 2 more, the loss alone 7: :func:`gpu._triton_kernel.shard_chunk`);
      with the torch kernel, for KL(p‖r) with a gradient 6 (2 max, 4 sum: the row maxima
      of s and t; their log-normalizers; the row maxima of log m; its normalizer with the
      log-ratio's sums; P_r's sums with the loss's partial sum; P_q's sums), 13 numbers
      per row in all (52 bytes in float32; 15 with a temperature ≠ 1, 16 where q has
      zeros) and 3 per chunk; Rényi adds its log-sum-exp's max and sum (counted by
      ``gpu._vocab_parallel``'s reducer, ``calls``; docs/sharded.md);
    * once per pass, 1 max all-reduce of the gradient's two flag bits per chunk (and, only
      when one is set, of every row's, for the error).

    So 2 + 6n small collectives with the torch kernel (2 + 8n with Triton): latency
    rather than bandwidth (53.5 bytes per row for
    KL(p‖r) at N = 256, V = 50257 in float32 on 2 ranks over gloo, measured by
    ``python -m gpu.bench_vocab_parallel``); a second backward (``retain_graph=True``)
    repeats the forward's. Every rank must call the loss (and each
    backward) the same number of times with the same rows.

    With ``teacher_topk`` and ``leftover="bucket"``, 2 collectives per chunk: a max
    all-reduce of k + 2 numbers per row (the student's logits at the k ids, ``-inf`` from
    the ranks that do not hold them; the maximum of the logits off the ids; the row's
    maximum, for the bad-row check) and a sum all-reduce of 1 (the off-id mass), with the
    gradient's flag bits once per pass as above; the (k+1)-category pair is then formed
    alike on every rank, O(k) per row, and each rank writes its own columns' gradient. With
    ``"renormalize"`` or ``"uniform"`` the teacher is densified on the shard for the chunk
    ((chunk, V_k), never (N, V)) and the collectives are the dense ones.

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
    arguments = dict(locals())  # the call's arguments by name, before any other local
    try:
        call = _checked_call(
            student_logits_shard=student_logits_shard,
            teacher_logits_shard=teacher_logits_shard,
            teacher_topk=teacher_topk,
            arguments=arguments,
            labels=labels,
            ignore_index=ignore_index,
            reduction=reduction,
            chunk_size=chunk_size,
            group=group,
            vocab_start=vocab_start,
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
            (0, 0),
            None,
            device,
            exc,
        )
        raise  # pragma: no cover - _agree raises
    return _apply(call)


@dataclasses.dataclass
class _Call:
    """A validated call, before any collective: the shards (transformed), the sparse
    teacher as given (checked against the global V once the shards' widths are agreed)."""

    student: torch.Tensor
    teacher: torch.Tensor | None
    teacher_topk: Any
    topk_spec: Any
    rows: torch.Tensor | None
    spec: _Spec
    reduction: str
    n_valid: int
    leading: tuple[int, ...]
    want_grad: bool
    fields: dict[str, float]
    group: Any
    vocab_start: int | None
    triton: bool = False


def _topk_fingerprint(teacher_topk, leading, device, spec) -> float:
    """A hash of the sparse teacher (its ids, the bits of its log-probabilities and its
    shape), an integer below 2^52 exact in float64: the ranks compare it in the first
    collective (the teacher is replicated), so a change of one id or of one log-probability
    by one ulp on one rank is found. A pair that cannot be hashed (not two tensors of one
    shape (..., k) on the student's device) is refused here, by
    :func:`gpu._teachers.check_topk`'s structural checks; its checks of the values (some
    name V) run on every rank once the shards' widths are agreed."""
    if not _hashable_topk(teacher_topk, leading, device):
        check_topk(teacher_topk, leading, _NO_VOCAB_LIMIT, device, spec)
        raise AssertionError("check_topk accepted a pair it cannot hash")  # pragma: no cover
    indices, logprobs = teacher_topk
    ids = indices.detach().reshape(-1).to(torch.int64)
    bits = logprobs.detach().reshape(-1).to(torch.float64).contiguous().view(torch.int64)
    # odd weights below 2^16 times 16-bit limbs: every product below 2^32, no overflow
    weight = (2 * torch.arange(ids.numel(), device=ids.device, dtype=torch.int64) + 1) % 2**16
    sums = torch.stack(
        [((x >> (16 * j)) & 0xFFFF).mul_(weight).sum() for x in (ids, bits) for j in range(4)]
    ).tolist()
    value = zlib.crc32(repr(tuple(indices.shape)).encode())
    for s in sums:
        value = (value * 1_000_003 + s) % _HASH_MODULUS
    return float(value)


#: The modulus of :func:`_topk_fingerprint` (a prime below 2^52: every value exact in float64).
_HASH_MODULUS = 4503599627370449


#: The vocabulary size passed to :func:`gpu._teachers.check_topk` where only its structural
#: checks can fail (they come before those that read V).
_NO_VOCAB_LIMIT = 2**62


def _hashable_topk(teacher_topk, leading, device) -> bool:
    """Whether ``teacher_topk`` passes :func:`gpu._teachers.check_topk`'s structural checks:
    a pair of an integer and a floating-point tensor of one shape (*leading, k) on
    ``device``."""
    if not (isinstance(teacher_topk, tuple | list) and len(teacher_topk) == 2):
        return False
    indices, logprobs = teacher_topk
    if not (isinstance(indices, torch.Tensor) and isinstance(logprobs, torch.Tensor)):
        return False
    integer = not (indices.is_floating_point() or indices.is_complex())
    return (
        integer
        and indices.dtype != torch.bool
        and logprobs.is_floating_point()
        and indices.shape == logprobs.shape
        and tuple(indices.shape[:-1]) == tuple(leading)
        and indices.device == device == logprobs.device
    )


def _checked_call(
    *,
    student_logits_shard,
    teacher_logits_shard,
    teacher_topk,
    arguments,
    labels,
    ignore_index,
    reduction,
    chunk_size,
    group,
    vocab_start,
) -> _Call:
    """Validated arguments (raises TypeError/ValueError before any collective); the logit
    transforms and a student-only temperature applied to the shards. ``arguments``: the
    call's, by name (the objective is built from them)."""
    check_teacher_source(teacher_logits_shard, teacher_topk)
    student_logits_shard, mesh_group = _as_local(student_logits_shard, "student_logits_shard")
    mesh_group_t = None
    if teacher_topk is None:
        teacher_logits_shard, mesh_group_t = _as_local(teacher_logits_shard, "teacher_logits_shard")
    if mesh_group is not None or mesh_group_t is not None:
        if teacher_topk is None and (mesh_group is None or mesh_group_t is None):
            raise TypeError(
                "student and teacher logits must both be DTensors or both plain tensors"
            )
        if group is not None or vocab_start is not None:
            raise ValueError("group and vocab_start are taken from the DTensor; leave them None")
        group = mesh_group
    check_float_tensor(student_logits_shard, "student_logits_shard")
    if teacher_topk is None:
        check_float_tensor(teacher_logits_shard, "teacher_logits_shard")
        # the widths may differ (compared over the shards once they are agreed)
        check_pair(
            student_logits_shard[..., :0],
            teacher_logits_shard[..., :0],
            "student_logits_shard",
            "teacher_logits_shard",
            vocab=False,
        )
    objective = _objective_of(arguments)
    leading = tuple(student_logits_shard.shape[:-1])
    device = student_logits_shard.device
    topk_spec = None
    topk_print = 0.0
    if teacher_topk is not None:
        # the checks of gpu.amid_loss read the objective as given (temperature, transforms)
        topk_spec = _Spec(
            objective=objective, cdtype=torch.float64, chunk_size=0, teaching=Teaching.of(objective)
        )
        topk_print = _topk_fingerprint(teacher_topk, leading, device, topk_spec)
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
    # The positions that count, by the rule of gpu.amid_loss (integer labels or a bool mask).
    rows, n_valid = _valid_rows(labels, leading, device, ignore_index, False)
    triton = teacher_topk is None and _shard_triton(check_backend(arguments["backend"]), device)
    teacher_dtype = teacher_logits_shard.dtype if teacher_topk is None else teacher_topk[1].dtype
    cdtype = compute_dtype(student_logits_shard.dtype, teacher_dtype)
    want_grad = torch.is_grad_enabled() and student_logits_shard.requires_grad
    spec = _Spec(objective=objective, cdtype=cdtype, chunk_size=chunk_size or 0)
    fields = {
        "alpha": alpha,
        "lam": lam,
        "temperature": temperature,
        "divergence": float(list(GPU_DIVERGENCES).index(objective.divergence)),
        "div_params": float(zlib.crc32(repr(sorted(params.items())).encode())),
        "order": float(list(ORDERS).index(objective.order)),
        "reduction": float(REDUCTIONS.index(reduction)),
        "detach_assistant": float(detach_assistant),
        "chunk_size": float(chunk_size or 0),
        "teacher form": float(zlib.crc32(repr(Teaching.of(objective)).encode())),
        "teacher_topk": topk_print,
        "leading shape": float(zlib.crc32(repr(leading).encode())),
        "labels (valid rows)": float(n_valid),
        "dtype and gradient": float(cdtype == torch.float64) + 2.0 * want_grad,
        "kernel (backend)": float(triton),
    }
    return _Call(
        student=student_logits_shard,
        teacher=teacher_logits_shard,
        teacher_topk=teacher_topk,
        topk_spec=topk_spec,
        rows=rows,
        spec=spec,
        reduction=reduction,
        n_valid=n_valid,
        leading=leading,
        want_grad=want_grad,
        fields=fields,
        group=group,
        vocab_start=vocab_start,
        triton=triton,
    )


def _shard_triton(backend: str, device: torch.device) -> bool:
    """Whether the sharded loss runs the Triton kernel (:func:`gpu._engine._select_kernel`'s
    rule: ``"auto"`` on CUDA where it can, ``"triton"`` where it can, else one warning)."""
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return False
    why = _triton_usable(device)
    if why is None:
        try:  # optional: the triton package
            from gpu._triton_kernel import launch_shapes
        except ImportError as exc:
            why = f"the Triton AMiD kernel does not import ({exc})"
        else:  # a malformed AMID_TRITON_LAUNCH: an argument error, raised on every rank
            launch_shapes()
    if why is not None and backend == "triton":
        _warn_once(f"backend='triton': {why}; using the torch kernel")
    return why is None


def _transformed(s: torch.Tensor, t: torch.Tensor | None, objective):
    """The shards after the objective's logit transforms (scale, then cap; elementwise,
    differentiable for the student) and, with ``temperature_applies_to="student"``, the
    student's shard divided by T and the objective's T set to 1; ``±inf`` and NaN stay
    what they are (so that the kernel still flags a bad row). ``t`` is ``None`` for a
    sparse teacher (its log-probabilities are used as given)."""
    (scale_s, scale_t), (cap_s, cap_t) = objective.logit_scale, objective.softcap

    def transform(x, scale, cap):
        z = x * scale if scale != 1.0 else x
        if cap is not None:
            z = torch.where(torch.isinf(x), x, cap * torch.tanh(z / cap))
        return z

    s = transform(s, scale_s, cap_s)
    if t is not None:
        t = transform(t.detach(), scale_t, cap_t)
    if objective.temperature_applies_to == "student":
        if objective.temperature != 1.0:
            s = s / objective.temperature
        objective = dataclasses.replace(objective, temperature=1.0, temperature_applies_to="both")
    return s, t, objective


def _apply(call: _Call):
    dist = _dist()
    group, student = call.group, call.student
    red = _ShardReduce(group)
    device = student.device
    rank = dist.get_rank(group=group)
    world = dist.get_world_size(group=group)
    width_t = student.shape[-1] if call.teacher is None else call.teacher.shape[-1]
    widths, starts, widths_t = _agree(
        red,
        rank,
        world,
        call.fields,
        (student.shape[-1], width_t),
        call.vocab_start,
        device,
    )
    red.start = starts[rank]
    red.world = world
    red.order = sorted(range(world), key=lambda k: (starts[k], k)).index(rank)
    _agree_on_rows(red, call.rows, math.prod(call.leading), device)
    vocab = sum(widths)  # the shards tile [0, V)
    red.ids = torch.float32 if vocab <= 1 << 24 else torch.float64
    if widths_t != widths:  # the same on every rank: raised everywhere
        raise ValueError(dense_width_message(vocab, sum(widths_t), widths, widths_t))
    spec = call.spec
    if not spec.chunk_size and call.triton:  # its scratch: (chunk, V_k) float32 buffers
        rows_per_chunk = default_chunk_size(-(-vocab // world), device, "triton", wide=True)
        spec = dataclasses.replace(spec, chunk_size=rows_per_chunk)
    elif not spec.chunk_size:
        spec = dataclasses.replace(spec, chunk_size=default_chunk_size(vocab, device, wide=True))
    v = student.shape[-1]
    if call.teacher_topk is not None:
        # replicated and agreed: the checks against the global V raise on every rank alike
        teacher = check_topk(call.teacher_topk, call.leading, vocab, device, call.topk_spec)
        kernel = _sparse_kernel(call.topk_spec.teaching.leftover, vocab)
    else:
        teacher = call.teacher.detach().reshape(-1, v)
        kernel = torch_chunk
        if call.triton:  # optional: triton (checked importable by _shard_triton)
            from gpu._triton_kernel import shard_chunk as kernel
    if call.want_grad:  # the logits loss's autograd function, with the shard group's sums
        return _AMiDFunction.apply(
            student, teacher, call.rows, spec, call.reduction, call.n_valid, call.leading,
            1.0, kernel, red,
        )  # fmt: skip
    with torch.no_grad():
        row_loss, _ = _run(
            student.reshape(-1, v), teacher, call.rows, spec, False, 1.0, call.leading,
            kernel, red=red,
        )  # fmt: skip
        return _reduce(row_loss, call.reduction, call.n_valid, call.leading)


def dense_width_message(v_s: int, v_t: int, widths, widths_t) -> str:
    """The error for dense teacher shards whose widths differ from the student's."""
    return (
        f"vocabulary sizes differ: the student's shards have widths {widths} (V = {v_s}), "
        f"the teacher's {widths_t} (V = {v_t}); vocab_parallel_amid_loss takes dense "
        "teacher shards of the student's columns, so vocab_alignment does not apply to "
        "them (the columns of two vocabularies sharded over the same ranks do not line up: "
        "aligning them would move O(V) logits per row between ranks). Give each rank the "
        "teacher's logits at its student columns (ids beyond the teacher's vocabulary as "
        "-inf, as vocab_alignment='pad' does; ids beyond the student's dropped, as "
        "'truncate' does), or a sparse teacher_topk with vocab_alignment='truncate'"
    )


def _sparse_kernel(leftover: str, vocab: int):
    r"""The chunk kernel for a sparse teacher (:class:`gpu._teachers.SparseTeacher` of
    global ids, replicated) against this rank's shard of the student's logits ``z``
    (transformed; shape (n, V_k), columns ``[red.start, red.start + V_k)``).

    ``bucket``: the (k+1)-category pair of :func:`gpu._teachers._sparse_chunk`, its student
    side completed over the shards: one max all-reduce of (n, k+2) numbers (the student's
    logits at the k ids, ``-inf`` on the ranks that do not hold them; the local maximum of
    the logits off S; the local maximum of the row, NaN sent as ``+inf``) and one sum
    all-reduce of (n,) (the off-S sum of :math:`e^{z - \max}`). Every rank then runs the
    kernel on the same (n, k+1) pair (O(k) per row, no collective) and writes the gradient
    of its own columns: ids of S get theirs, ids off S :math:`g_\star\,q_j/\hat q_\star`;
    the gradient's two flag bits wait for :meth:`_ShardReduce.settle`. ``renormalize``
    and ``uniform``: the teacher is densified on the shard for the chunk only ((n, V_k), ``-inf`` or
    :math:`\log(\varepsilon/(V-k))` off S) and the sharded dense kernel runs on it.
    """

    def kernel(s, t, spec, want_grad, grad_scale, out=None, red=None):
        z = s.to(spec.cdtype)
        n, v = z.shape
        lo = red.start
        idx = t.indices
        lp = t.logprobs.to(z.dtype)
        valid = idx >= 0
        here = valid & (idx >= lo) & (idx < lo + v)
        col = torch.where(here, idx - lo, v)  # ids of other shards and padding: the sink
        if leftover != "bucket":
            if leftover == "renormalize":
                fill = torch.full_like(lp[:, :1], NEG_INF)
            else:  # uniform: ε/(V − k) off S, k the slots that are not padding
                k = valid.sum(-1, keepdim=True)
                spread = torch.log((vocab - k).to(z.dtype))
                fill = torch.where(k < vocab, t.log_leftover.to(z.dtype) - spread, NEG_INF)
            dense = fill.expand(n, v + 1).clone().scatter_(-1, col, lp)[:, :v]
            return torch_chunk(z, dense, spec, want_grad, grad_scale, out, red=red)
        padded = torch.cat([z, z.new_full((n, 1), NEG_INF)], -1)
        # NaN is sent as +inf (the row is then flagged on every rank); ±inf stay themselves
        # (nan_to_num's default would turn −inf, a padded slot or an empty row, into the
        # lowest finite number)
        nan_inf = dict(nan=math.inf, posinf=math.inf, neginf=NEG_INF)
        z_s = padded.gather(-1, col).nan_to_num_(**nan_inf)
        off = padded.scatter_(-1, col, NEG_INF)  # z off S (n, V_k + 1)
        top_off = off.amax(-1, keepdim=True).nan_to_num_(**nan_inf)
        top = z.amax(-1, keepdim=True).nan_to_num_(**nan_inf) if v else top_off
        got = red.all_reduce(torch.cat([z_s, top_off, top], -1), "max")
        z_s, top_off, top = got[:, :-2], got[:, -2:-1], got[:, -1]
        shift = top_off.masked_fill(top_off.isinf(), 0.0)  # as torch.logsumexp
        lse_off = red.all_reduce(torch.exp(off - shift).sum(-1), "sum").log_().unsqueeze(-1)
        lse_off.add_(shift)
        coarse_s = torch.cat([z_s, lse_off], -1)
        # ε after the mass rule (check_topk); with k = V and ε kept, ★ is empty (q̂_★ = 0)
        log_eps = t.log_leftover.to(z.dtype)
        coarse_t = torch.cat([lp, log_eps], -1)
        value, g_c, flags = torch_chunk(coarse_s, coarse_t, spec, want_grad, grad_scale)
        flags = flags | (~torch.isfinite(top)).to(_FLAG_DTYPE) * _BAD_STUDENT
        if not want_grad:
            return value, None, flags
        g_c = g_c.to(z.dtype)
        # ids off S: g_★ · q_j / q̂_★ = g_★ · exp(z_j − lse_off); no ids off S: 0
        share = off.sub_(lse_off.masked_fill(lse_off == NEG_INF, 0.0)).exp_()
        share.mul_(g_c[:, -1:])
        share.scatter_(-1, col, g_c[:, :-1])
        g = share[:, :v]
        if out is not None:
            g = out.copy_(g)
        return value, g, red.flags(flags | _grad_flags(g))

    return kernel


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
    leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to, backend
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
        backend: str = "auto",
    ) -> None:
        super().__init__()
        objective = _objective_of(locals())
        self._hold(objective)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)
        self.group = group
        self.backend = check_backend(backend)

    def forward(
        self,
        student_logits_shard: torch.Tensor,
        teacher_logits_shard: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        vocab_start: int | None = None,
        *,
        teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
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
            teacher_topk=teacher_topk,
            backend=self.backend,
            **self.objective.keywords(),
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, lam={self.lam}, divergence={self.divergence!r}, "
            f"order={self.order!r}, reduction={self.reduction!r}"
        )
