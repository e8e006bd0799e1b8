r"""The fused lm_head + AMiD loss: hidden states in, loss and parameter gradients out.

``amid_fused_linear_loss`` never forms the (N, V) logits. It walks the N = B·T rows
``chunk_size`` at a time; for each chunk it forms the student logits
:math:`s = hW^\top + b` (in the weight's dtype, as :func:`torch.nn.functional.linear`
would) and the teacher logits (under ``no_grad``, or a slice of precomputed teacher
logits), then calls the *same* per-chunk kernel as :func:`gpu.amid_loss`
(:func:`gpu._torch_kernel.chunk`: loss per row and :math:`G = \partial L/\partial s` in closed
form), and accumulates

.. math::

    \frac{\partial L}{\partial h} = G\,W,\qquad
    \frac{\partial L}{\partial W} = \sum_{\text{chunks}} G^\top h,\qquad
    \frac{\partial L}{\partial b} = \sum_{\text{chunks}} \textstyle\sum_{\text{rows}} G,

in the compute dtype (float32, float64 for float64 inputs). Peak extra memory is the
float32 weight gradient (V·H) plus the hidden-state gradient (N·H) plus O(chunk_size·V)
scratch, independent of N·V. For bf16/fp16 weights the product :math:`G W` is taken in the
weight's dtype as two matmuls of ``G``'s rounded part and its residual (see
:func:`_times_weight`), so no float32 copy of W is ever made.

With the Triton kernel (bf16/fp32 weights, a dense teacher of the same vocabulary, no
teacher-side transform, a weight gradient wanted, a reduction other than ``"none"``) the
weight and bias gradients are formed instead by a two-phase, vocabulary-tiled backward
(:func:`_vocab_tiled_run`): row chunks over V for the loss, the row statistics and
:math:`\partial L/\partial h`, then vocabulary tiles over all rows for
:math:`\partial L/\partial W_{\text{tile}} = G_{\text{tile}}^\top h`, written once in the
weight's dtype. No float32 V·H buffer: the extra memory is the weight gradient in its own
dtype, the hidden-state gradient and O(tile) scratch (docs/gpu.md, *The fused lm_head
loss*).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from gpu._autograd import _refuse_double_backward
from gpu._engine import (
    _FLAG_DTYPE,
    _build_spec,
    _for_each_chunk,
    _raise_for_flags,
    _reduce,
    _select_kernel,
    _valid_rows,
    _warn_once,
)
from gpu._loss import AMiDLoss, _ObjectiveModule
from gpu._teachers import check_topk, check_vocab_alignment, teaching_fields, teaching_kernel
from gpu._torch_kernel import chunk as torch_chunk
from gpu._validation import (
    check_float_tensor,
    check_ignore_index,
    check_reduction,
    check_temperature_scaling,
    compute_dtype,
)

__all__ = ["AMiDFusedLinearLoss", "amid_fused_linear_loss"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


#: Elements per chunk of the fused loss with the Triton kernel on CUDA (2^25: 256 rows at
#: V = 128256, the rows liger-kernel's fused losses take at H = 4096): the chunk's student
#: and teacher logits and the gradient's bf16 residual, 3·2 bytes per element, and the
#: Triton kernel's float32 G between its passes c2 and d, 4 bytes: 320 MiB in bfloat16; the
#: torch kernel keeps :func:`gpu.default_chunk_size`, its float32 temporaries
#: being ~10 of those.
_TRITON_FUSED_CHUNK_ELEMENTS = 2**25


#: Elements of one vocabulary tile's logits in the second phase of the two-phase backward
#: (:func:`_vocab_tiled_run`): 2^25, a tile of 4096 columns over 8192 rows. Its scratch is
#: the tile's student and teacher logits (2 bytes each in bfloat16, the gradient and its
#: rounding residual written over them) and the tile's float32 weight-gradient
#: accumulator (T·H·4 bytes): 192 MiB at N = 8192, H = 4096 in bfloat16. Each of its
#: GEMMs is then (8192 × 4096 × 4096), large enough to run at the tensor cores' rate.
_VOCAB_TILE_ELEMENTS = 2**25

#: Tile widths are multiples of this many columns (the GEMMs' tile; the last tile of V
#: takes the rest).
_VOCAB_TILE_QUANTUM = 256


def _teacher_tile_source(teacher_hidden, teacher_weight, teacher_bias, teacher_logits):
    """A function (rows, columns) -> a fresh contiguous tensor of the teacher logits of those
    rows and columns (no grad): the two-phase path's teacher, dense and given as hidden
    states + weight or as logits."""
    if teacher_logits is not None:
        t2 = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
        return lambda idx, cols: t2[idx][:, cols].clone(memory_format=torch.contiguous_format)
    th2 = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    tw = teacher_weight.detach()
    tb = None if teacher_bias is None else teacher_bias.detach()
    return lambda idx, cols: F.linear(th2[idx], tw[cols], None if tb is None else tb[cols])


#: Whether the fused loss takes the two-phase backward where it applies
#: (:func:`_vocab_tiled_applies`). ``False`` sends those losses down the row-chunk path
#: instead: two GEMMs fewer (the logits are not formed again), a float32 V×H weight-gradient
#: accumulator more (docs/gpu.md, *Two-phase, vocabulary-tiled backward*). For measuring
#: the two side by side: the benchmark's ``fused_rows`` implementation sets it.
TWO_PHASE = True


def _vocab_tiled_applies(kernel, spec, weight, teacher_args) -> bool:
    """Whether the two-phase, vocabulary-tiled backward (:func:`_vocab_tiled_run`) computes
    this loss: :data:`TWO_PHASE` is set, the Triton kernel computes the spec itself
    (:func:`gpu._triton_kernel.runs_in_triton`), the weight is bfloat16 or float32 (float16:
    its range, see :func:`_times_weight`), and the teacher is dense, of the student's
    vocabulary, with no teacher-side transform and the temperature on both sides (these run
    in the wrapper of :func:`gpu._teachers.teaching_kernel` on whole rows)."""
    if not TWO_PHASE or getattr(kernel, "backend", None) != "triton":
        return False
    from gpu._triton_kernel import runs_in_triton  # optional: triton (the triton extra)

    _, teacher_weight, _, teacher_logits, topk = teacher_args
    if topk is not None:
        return False
    t_ref = teacher_weight if teacher_logits is None else teacher_logits
    teaching = spec.teaching
    return (
        weight.dtype in (torch.bfloat16, torch.float32)
        and t_ref.dtype in (torch.bfloat16, torch.float32, torch.float16)
        and t_ref.shape[-1 if teacher_logits is not None else 0] == weight.shape[0]
        and not teaching.transforms
        and teaching.temperature_applies_to == "both"
        and runs_in_triton(spec, weight.dtype)
    )


def _vocab_tile(n_rows: int, vocab: int) -> int:
    """Columns per vocabulary tile: :data:`_VOCAB_TILE_ELEMENTS` over the rows, a multiple
    of :data:`_VOCAB_TILE_QUANTUM`, at least one quantum, at most V."""
    tile = _VOCAB_TILE_ELEMENTS // max(n_rows, 1)
    tile = max(_VOCAB_TILE_QUANTUM, tile - tile % _VOCAB_TILE_QUANTUM)
    return min(tile, vocab)


def _teacher_source(teacher_hidden, teacher_weight, teacher_bias, teacher_logits, topk=None):
    """A function rows -> teacher logits of those rows (no grad; a
    :class:`gpu._teachers.SparseTeacher` for a sparse teacher), and the teacher dtype."""
    if topk is not None:
        return (lambda idx: topk[idx]), topk.dtype
    if teacher_logits is not None:
        t2 = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
        return (lambda idx: t2[idx]), t2.dtype
    th2 = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    tw = teacher_weight.detach()
    tb = None if teacher_bias is None else teacher_bias.detach()
    return (lambda idx: F.linear(th2[idx], tw, tb)), tw.dtype


def _times_weight(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``g @ weight`` for a float32/64 ``g``, without a float32 copy of a bf16/fp16 weight.

    ``G`` sums to ~0 along V (a projected gradient), so ``G·W`` cancels: rounding G once
    to bf16 would leave an error of 2⁻⁹·Σ|G||W|, far above the result's own rounding.
    G is split as ``G_hi + G_lo`` (both in the weight dtype, ``G_lo`` the rounding
    residual), two matmuls in the weight dtype: what is left is 2⁻¹⁸·Σ|G||W| plus the
    rounding of the two products to the weight dtype (≤ 2 ulps of the result, which is
    returned in that dtype anyway; measured by ``python -m gpu.device_check``).
    """
    if weight.dtype not in _LOW_PRECISION:
        return g @ weight.to(g.dtype)
    # Rows scaled by a power of two to max |G| = 1 first: fp16 overflows at 65504 (χ²
    # gradients exceed it) and both dtypes lose the residual to underflow on tiny rows.
    peak = g.abs().amax(-1, keepdim=True)
    scale = torch.exp2(torch.ceil(torch.log2(peak))).masked_fill_(peak == 0, 1.0)
    g = g / scale
    hi = g.to(weight.dtype)
    lo = (g - hi.to(g.dtype)).to(weight.dtype)
    return (hi @ weight).to(g.dtype).add_((lo @ weight).to(g.dtype)).mul_(scale)


#: Whether this torch's CUDA products with a float32 output from bf16/fp16 operands
#: (``out_dtype``: ``"mm"`` for ``torch.mm``, ``"addmm"`` for ``torch.addmm`` into a float32
#: addend) worked when first tried; absent until then. Recorded by the fused benchmark.
OUT_DTYPE_PRODUCTS: dict[str, bool] = {}


def _tensor_cores(a: torch.Tensor) -> bool:
    """Whether to try the ``out_dtype`` products (CUDA: tensor cores, float32 accumulation)."""
    return a.is_cuda


def _out_dtype_product(name: str, fn) -> torch.Tensor | None:
    """``fn()``, or ``None`` where this torch has no such ``out_dtype`` product (remembered:
    one failed try per process); an out-of-memory is raised, not taken for that."""
    if OUT_DTYPE_PRODUCTS.get(name, True):
        try:
            out = fn()
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError):  # an older torch (no overload, or other checks)
            OUT_DTYPE_PRODUCTS[name] = False
        else:
            OUT_DTYPE_PRODUCTS[name] = True
            return out
    return None


def _mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a @ b`` in ``dtype``: for bf16 operands on CUDA one tensor-core product with a
    float32 output (``out_dtype``), else the product in the operands' dtype, cast (the
    callers round the result to the operands' dtype anyway)."""
    if a.dtype != dtype and _tensor_cores(a):
        out = _out_dtype_product("mm", lambda: torch.mm(a, b, out_dtype=dtype))
        if out is not None:
            return out
    return (a @ b).to(dtype) if a.dtype == b.dtype else a.to(dtype) @ b.to(dtype)


def _addmm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` accumulated in ``acc``'s dtype (float32): for bf16 operands on
    CUDA one tensor-core product into the float32 accumulator (``torch.addmm`` with
    ``out_dtype``; torch versions whose ``addmm.dtype`` wants the addend in the operands'
    dtype take ``torch.mm`` with ``out_dtype`` and an add). Without either, the operands
    are converted and the product runs in float32, many times slower on a GPU: a
    ``RuntimeWarning`` says so once."""
    if a.dtype != acc.dtype and _tensor_cores(a):
        fused = _out_dtype_product(
            "addmm", lambda: torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
        )
        if fused is not None:
            return
        product = _out_dtype_product("mm", lambda: torch.mm(a, b, out_dtype=acc.dtype))
        if product is not None:
            acc.add_(product)
            return
        _warn_once(
            f"this torch ({torch.__version__}) has no {a.dtype} product with a float32 "
            "output on CUDA (torch.mm / torch.addmm with out_dtype): the fused loss's "
            "weight gradient runs its GEMMs in float32, many times slower"
        )
    acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


def _fused_run(
    h2, weight, bias, teacher, rows, spec, leading, need, grad_scale, row_weights, kernel=None
):
    """All chunks: per-row loss (N,) and the gradients asked for in ``need`` = (h, W, b).

    ``grad_scale`` multiplies every gradient; ``row_weights`` (N,), when given, multiplies
    row i's contribution (the upstream gradient of ``reduction="none"``). The W and b
    gradients are one accumulator each, added to by every chunk in chunk order (the
    chunk's *commit*, :func:`gpu._engine._for_each_chunk`), whatever the number of CPU
    chunk workers: extra memory is one V·H buffer, and the sums do not depend on the
    thread count's scheduling.
    """
    kernel = kernel or torch_chunk
    n = h2.shape[0]
    v, hdim = weight.shape
    cdt = spec.cdtype
    device = h2.device
    row_loss = torch.zeros(n, dtype=cdt, device=device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=device)
    need_h, need_w, need_b = need
    want = need_h or need_w or need_b
    gh = torch.zeros_like(h2) if need_h else None
    # The kernel writes ∂L/∂s into the logits buffer (no float32 (chunk, V) copy) unless
    # per-row upstream weights follow or the weight is float16 (its range: the gradient
    # is then formed in float32 and split, _times_weight). The weight gradient is
    # accumulated in float32: accumulated in bfloat16 over the chunks, it lost 7 of its 8
    # bits where the chunks' contributions cancel (tests/test_gpu_fused.py).
    in_place = want and row_weights is None and weight.dtype != torch.float16
    gw = torch.zeros(v, hdim, dtype=cdt, device=device) if need_w else None
    gb = torch.zeros(v, dtype=cdt, device=device) if need_b else None
    n_rows = n if rows is None else rows.numel()

    def body(start, stop):
        idx = slice(start, stop) if rows is None else rows[start:stop]
        hs = h2[idx]
        logits = F.linear(hs, weight, bias)
        lo = None
        if in_place:
            # ∂L/∂s written into the chunk's logits buffer; for bf16 its rounding residual
            # into a second buffer (G·W cancels: G sums to ~0 along V)
            if weight.dtype == torch.bfloat16:
                lo = torch.empty_like(logits)
            value, g, f = kernel(logits, teacher(idx), spec, want, grad_scale, logits, out_lo=lo)
        else:
            value, g, f = kernel(logits, teacher(idx), spec, want, grad_scale)
        row_loss[idx] = value
        flags[idx] = f
        if not want:
            return None
        if row_weights is not None:
            g.mul_(row_weights[idx].to(cdt).unsqueeze(-1))
        if need_h:
            if lo is not None:  # G·W as two products in the weight dtype, summed in float32
                gh[idx] = _mm(g, weight, cdt).add_(_mm(lo, weight, cdt)).to(gh.dtype)
            else:
                gh[idx] = _times_weight(g, weight).to(gh.dtype)
        if not (need_w or need_b):
            return None

        def commit():
            if need_w:
                _addmm_(gw, g.T, hs)
                if lo is not None:
                    _addmm_(gw, lo.T, hs)
            if need_b:
                gb.add_(g.sum(0, dtype=cdt))
                if lo is not None:
                    gb.add_(lo.sum(0, dtype=cdt))

        return commit

    _for_each_chunk(
        n_rows, spec.chunk_size, device, body, parallel=getattr(kernel, "parallel_chunks", False),
        row_elements=v,
    )  # fmt: skip
    _raise_for_flags(flags, leading, spec)
    return row_loss, gh, gw, gb


def _vocab_tiled_run(h2, weight, bias, teacher_args, rows, spec, leading, need, grad_scale,
                     kernel):  # fmt: skip
    r"""The two-phase backward: the per-row loss (N,), ∂L/∂h, and a function ``finish(factor)``
    returning (∂L/∂W, ∂L/∂b) scaled by ``factor`` (``None`` when the Triton kernel fell back
    to torch on the first chunk: the caller runs :func:`_fused_run` instead).

    Phase 1, row chunks over all V: the student and teacher logits, the Triton passes (their
    row statistics kept, 84 bytes a row), the loss, and ∂L/∂h_c = G_c W (G written over the
    logits, its bfloat16 rounding residual apart; both products in the weight dtype, summed
    in float32). Phase 2 (``finish``), vocabulary tiles of all N rows: the tile's student
    and teacher logits again, G of the tile from the saved row statistics
    (:func:`gpu._triton_kernel.gradient_tile`), then ∂L/∂W_tile = G_tileᵀ h accumulated in
    float32 by GEMM over the tile's rows and written once in the weight dtype, and ∂L/∂b
    likewise. Extra memory: ∂L/∂W in the weight dtype, ∂L/∂h, and O(tile) scratch; no
    float32 V×H buffer.
    """
    n = h2.shape[0]
    v, hdim = weight.shape
    cdt = spec.cdtype
    device = h2.device
    need_h, need_w, need_b = need
    n_rows = n if rows is None else rows.numel()
    row_loss = torch.zeros(n, dtype=cdt, device=device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=device)
    gh = torch.zeros_like(h2) if need_h else None
    stats = idx = launch = None
    zero = n_rows == 0
    low = weight.dtype == torch.bfloat16
    teacher = _teacher_tile_source(*teacher_args[:4])
    every = slice(None)
    for start in range(0, n_rows, spec.chunk_size):  # phase 1
        stop = min(start + spec.chunk_size, n_rows)
        sel = slice(start, stop) if rows is None else rows[start:stop]
        logits = F.linear(h2[sel], weight, bias)
        lo = torch.empty_like(logits) if low else None
        saved: dict = {}
        value, g, f = kernel(
            logits, teacher(sel, every), spec, True, grad_scale, logits, out_lo=lo, saved=saved
        )
        if not saved:  # the kernel fell back to torch (it warned)
            return row_loss, gh, None
        row_loss[sel] = value
        flags[sel] = f
        if stats is None:
            stats = torch.empty(saved["stats"].shape[0], n_rows, dtype=torch.float32, device=device)
            idx = torch.empty(saved["idx"].shape[0], n_rows, dtype=torch.int32, device=device)
        stats[:, start:stop] = saved["stats"]
        idx[:, start:stop] = saved["idx"]
        launch, zero = saved["launch"], saved["zero"]
        if need_h:
            gh_c = _mm(g, weight, cdt)
            if lo is not None:
                gh_c.add_(_mm(lo, weight, cdt))
            gh[sel] = gh_c.to(gh.dtype)
            del gh_c
        del logits, lo, g  # freed before the next chunk's logits are formed
    _raise_for_flags(flags, leading, spec)

    def finish(factor: float):
        from gpu._triton_kernel import gradient_tile  # optional: triton (the triton extra)

        gw = torch.zeros_like(weight) if need_w else None
        gb = torch.zeros_like(bias) if need_b else None
        if zero or not (need_w or need_b):
            return gw, gb
        tile = _vocab_tile(n_rows, v)
        block = max(1, _VOCAB_TILE_ELEMENTS // tile)  # rows per GEMM of a tile
        tile_flags = torch.zeros(n_rows, dtype=_FLAG_DTYPE, device=device)
        acc = torch.empty(tile, hdim, dtype=cdt, device=device) if need_w else None
        acc_b = torch.empty(tile, dtype=cdt, device=device) if need_b else None
        for c0 in range(0, v, tile):  # phase 2
            c1 = min(c0 + tile, v)
            cols = slice(c0, c1)
            w_t = weight[cols]
            b_t = None if bias is None else bias[cols]
            a_w = None if acc is None else acc[: c1 - c0].zero_()
            a_b = None if acc_b is None else acc_b[: c1 - c0].zero_()
            for r0 in range(0, n_rows, block):
                r1 = min(r0 + block, n_rows)
                sel = slice(r0, r1) if rows is None else rows[r0:r1]
                hs = h2[sel]
                s_t = F.linear(hs, w_t, b_t)
                t_t = teacher(sel, cols)
                lo = None
                if low:
                    lo = t_t if t_t.dtype == weight.dtype else torch.empty_like(s_t)
                st_r, idx_r = stats[:, r0:r1].contiguous(), idx[:, r0:r1].contiguous()
                scale = grad_scale * factor
                gradient_tile(s_t, t_t, st_r, idx_r, launch, c0, scale, s_t, lo, tile_flags[r0:r1])
                if a_w is not None:
                    _addmm_(a_w, s_t.T, hs)
                    if lo is not None:
                        _addmm_(a_w, lo.T, hs)
                if a_b is not None:
                    a_b.add_(s_t.sum(0, dtype=cdt))
                    if lo is not None:
                        a_b.add_(lo.sum(0, dtype=cdt))
                # freed before the next block's logits are formed (else two blocks coexist)
                del s_t, t_t, lo
            if a_w is not None:
                gw[cols] = a_w
            if a_b is not None:
                gb[cols] = a_b
        if rows is None:
            flags.bitwise_or_(tile_flags)
        else:
            flags[rows] |= tile_flags
        _raise_for_flags(flags, leading, spec)
        return gw, gb

    return row_loss, gh, finish


class _FusedFunction(torch.autograd.Function):
    """Chunked forward that also forms the parameter gradients; backward scales them (the
    two-phase path forms the weight and bias gradients in backward, scaled there)."""

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, teacher_args, rows, spec, reduction, n_valid, lead, k, kernel,
        tiled,
    ):  # fmt: skip
        h2 = hidden.reshape(-1, hidden.shape[-1])
        need = tuple(ctx.needs_input_grad[:3])
        scale = k / n_valid if (reduction == "mean" and n_valid > 0) else k
        # With reduction="none" the per-row upstream weights are only known in backward.
        now = need if reduction != "none" else (False, False, False)
        ctx.save_for_backward(hidden, weight, bias)
        ctx.teacher_args = teacher_args
        ctx.rows, ctx.spec, ctx.reduction, ctx.scale, ctx.lead = rows, spec, reduction, scale, lead
        ctx.kernel, ctx.tiled = kernel, tiled
        row_loss, grads = _FusedFunction._run(ctx, h2, weight, bias, now, None)
        if k != 1.0:
            row_loss.mul_(k)
        ctx.grads = grads if reduction != "none" else None
        return _reduce(row_loss, reduction, n_valid, lead)

    @staticmethod
    def _run(ctx, h2, weight, bias, need, row_weights):
        """(row loss, (∂h, ∂W, ∂b, finish)): the two-phase path where it applies (``finish``
        forms ∂W, ∂b), else the row-chunk path (``finish`` None)."""
        if ctx.tiled is not None and row_weights is None and need[1]:
            row_loss, gh, finish = _vocab_tiled_run(
                h2, weight, bias, ctx.teacher_args, ctx.rows, ctx.spec, ctx.lead, need,
                ctx.scale, ctx.tiled,
            )  # fmt: skip
            if finish is not None:
                return row_loss, (gh, None, None, finish)
        teacher, _ = _teacher_source(*ctx.teacher_args)
        row_loss, gh, gw, gb = _fused_run(
            h2, weight, bias, teacher, ctx.rows, ctx.spec, ctx.lead, need, ctx.scale,
            row_weights, ctx.kernel,
        )  # fmt: skip
        return row_loss, (gh, gw, gb, None)

    @staticmethod
    @_refuse_double_backward
    def backward(ctx, grad_output):
        hidden, weight, bias = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:3])
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # reduction="none", or a second backward (retain_graph=True)
            h2 = hidden.reshape(-1, hidden.shape[-1])
            weights = grad_output.reshape(-1) if ctx.reduction == "none" else None
            _, grads = _FusedFunction._run(ctx, h2, weight, bias, need, weights)
            factor = 1.0 if ctx.reduction == "none" else grad_output
        else:
            factor = grad_output
        gh, gw, gb, finish = grads
        scaled = (False, False, False)
        if finish is not None:  # phase 2 of the two-phase path, with the upstream factor
            gw, gb = finish(float(factor))
            scaled = (False, True, True)
        out = []
        for g, x, done in zip((gh, gw, gb), (hidden, weight, bias), scaled, strict=True):
            if g is None:
                out.append(None)
                continue
            if not done and isinstance(factor, torch.Tensor) and bool(factor != 1):
                g = g.to(torch.promote_types(g.dtype, torch.float32)).mul_(factor)
            out.append(g.to(x.dtype).view(x.shape))
        return (*out, None, None, None, None, None, None, None, None, None)


def _check_matrix(w, name, vocab=None):
    check_float_tensor(w, name)
    if w.dim() != 2:
        raise ValueError(f"{name} must have shape (V, H), got {tuple(w.shape)}")
    if vocab is not None and w.shape[0] != vocab:
        raise ValueError(
            f"vocabulary sizes differ: student_weight has V = {vocab}, {name} has "
            f"V = {w.shape[0]}; teacher and student must share one vocabulary"
        )


def _check_bias(b, name, w, wname):
    if b is None:
        return
    check_float_tensor(b, name)
    if b.shape != (w.shape[0],):
        raise ValueError(f"{name} must have shape (V,) = ({w.shape[0]},), got {tuple(b.shape)}")
    if b.dtype != w.dtype or b.device != w.device:
        raise ValueError(f"{name} must have the dtype and device of {wname}")


def _check_hidden(h, name, w, wname, leading=None):
    check_float_tensor(h, name)
    if h.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{name} has hidden size H = {h.shape[-1]} but {wname} has shape "
            f"{tuple(w.shape)} (V, H)"
        )
    if h.dtype != w.dtype:
        raise TypeError(f"{name} has dtype {h.dtype} but {wname} has {w.dtype}; cast one")
    if h.device != w.device:
        raise ValueError(f"{name} is on {h.device} but {wname} is on {w.device}")
    if leading is not None and tuple(h.shape[:-1]) != leading:
        raise ValueError(
            f"{name} has leading shape {tuple(h.shape[:-1])}, the student {leading}; "
            "one row per position in both"
        )


def amid_fused_linear_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None,
    teacher_weight: torch.Tensor | None,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    shift_labels: bool = False,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    temperature: float = 1.0,
    temperature_scaling: str | None = None,
    detach_assistant: bool = False,
    chunk_size: int | None = None,
    compile: bool | str = False,
    backend: str = "auto",
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap: float | tuple[float | None, float | None] | None = None,
    logit_scale: float | tuple[float, float] | None = None,
    temperature_applies_to: str = "both",
) -> torch.Tensor:
    r"""AMiD loss of the lm_head outputs, without materializing the (N, V) logits.

    Equals ``gpu.amid_loss(F.linear(student_hidden, student_weight, student_bias),
    F.linear(teacher_hidden, teacher_weight, teacher_bias), ...)`` with every other
    argument the same, and differentiates it with respect to ``student_hidden``,
    ``student_weight`` and ``student_bias`` (whichever require grad):

    .. math::

        L = \operatorname{reduce}_i D\big(\cdot\|\cdot\big)\big(p_i, q_i, r_i\big),\quad
        q_i = \mathrm{softmax}\big((h_iW^\top + b)/T\big),\quad
        \frac{\partial L}{\partial W} = \sum_i G_i^\top h_i,\ \
        \frac{\partial L}{\partial h_i} = G_i W,

    with :math:`G_i = \partial L/\partial s_i` the closed-form logit gradient of
    :func:`gpu.amid_loss` (mathematics page, Proposition 3.5), formed chunk by chunk.

    Parameters
    ----------
    student_hidden : torch.Tensor, shape (..., H)
        The student's last hidden states (before the lm_head), any float dtype.
    student_weight : torch.Tensor, shape (V, H)
        The student's lm_head weight, the dtype of ``student_hidden``.
    teacher_hidden : torch.Tensor, shape (..., H_t), or None
        The teacher's last hidden states, one row per student row; ``None`` when
        ``teacher_logits`` is given. Never receives a gradient.
    teacher_weight : torch.Tensor, shape (V, H_t), or None
        The teacher's lm_head weight (same V as the student).
    alpha, lam, divergence, order, div_params
        As in :func:`gpu.amid_loss`.
    student_bias, teacher_bias : torch.Tensor, shape (V,), optional
        lm_head biases.
    teacher_logits : torch.Tensor, shape (..., V), optional
        Precomputed teacher logits *or log-probabilities* (a teacher run elsewhere or
        cached) in place of ``teacher_hidden``/``teacher_weight``: the loss depends on
        them through ``log_softmax``, which is the identity on log-probabilities.
    labels, shift_labels, ignore_index
        Which positions count, as in :func:`gpu.amid_loss` (integer labels or a bool
        mask; ``shift_labels=True`` for unshifted Hugging Face causal-LM labels).
    reduction : {"mean", "batchmean", "sum", "none"}
        As in :func:`gpu.amid_loss`. With ``"none"`` the gradients are formed in the
        backward pass (a second chunked pass), since they depend on the upstream weights.
    temperature, temperature_scaling, detach_assistant
        As in :func:`gpu.amid_loss`.
    chunk_size : int, optional
        Rows per chunk; ``None``: :func:`gpu.default_chunk_size` of V and the device, its
        ``wide`` rule (2^21 elements on CPU: each chunk reads the whole weight).
    compile : bool or str
        Compile the per-chunk loss kernel with ``torch.compile``, as in
        :func:`gpu.amid_loss` (clean fallback with a ``RuntimeWarning``).
    backend : {"auto", "torch", "triton"}
        The per-chunk loss kernel, as in :func:`gpu.amid_loss`.
    teacher_topk, leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`gpu.amid_loss`: a sparse teacher needs no teacher hidden states or
        weight; a teacher lm_head of another V is aligned per chunk (its rows sliced or
        the logits padded with −inf), never forming full logits.

    Returns
    -------
    torch.Tensor
        float32 (float64 when an input is float64): 0-d, or shape (...) for ``"none"``.
        The gradients have the dtypes of their inputs; they are accumulated in float32
        (float64) and cast once.

    Raises
    ------
    TypeError, ValueError
        The error contract of :func:`gpu.amid_loss` (bad arguments name the parameter;
        NaN/``+inf`` logits, empty supports and ``+inf`` losses name the rows), plus shape,
        dtype and device mismatches between hidden states, weights and biases, and a
        teacher given both as hidden states and as logits (or neither).

    Notes
    -----
    Memory: the float32 (float64) weight gradient V·H, the hidden-state gradient, and
    O(chunk_size·V) scratch; neither the logits nor their gradient exist at full size.
    With the Triton kernel the weight gradient is formed vocabulary tile by tile in the
    weight's dtype (no float32 V·H buffer) where the two-phase backward applies (module
    docstring); it recomputes both models' logits once more (six GEMMs of N·V·H, not four).
    The backward is differentiable once (``create_graph=True`` raises ``RuntimeError``).

    Examples
    --------
    >>> import torch, gpu
    >>> h = torch.randn(2, 5, 8, requires_grad=True)
    >>> w = torch.randn(40, 8, requires_grad=True)
    >>> th, tw = torch.randn(2, 5, 12), torch.randn(40, 12)
    >>> labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
    >>> loss = gpu.amid_fused_linear_loss(h, w, th, tw, alpha=0.0, lam=0.1,
    ...                                   labels=labels, shift_labels=True)
    >>> loss.backward()
    >>> h.grad.shape, w.grad.shape
    (torch.Size([2, 5, 8]), torch.Size([40, 8]))
    """
    _check_matrix(student_weight, "student_weight")
    _check_hidden(student_hidden, "student_hidden", student_weight, "student_weight")
    _check_bias(student_bias, "student_bias", student_weight, "student_weight")
    leading = tuple(student_hidden.shape[:-1])
    vocab = student_weight.shape[0]
    device = student_hidden.device
    has_hidden = teacher_hidden is not None or teacher_weight is not None
    given = int(has_hidden) + int(teacher_logits is not None) + int(teacher_topk is not None)
    if given != 1:
        raise ValueError(
            "give the teacher either as teacher_hidden and teacher_weight, as "
            "teacher_logits (logits or log-probabilities), or as teacher_topk=(indices, "
            "logprobs), not both or neither"
        )
    if teacher_topk is not None:
        if not (isinstance(teacher_topk, tuple | list) and len(teacher_topk) == 2):
            raise TypeError("teacher_topk must be a pair (indices, logprobs) of tensors")
        teacher_dtype = getattr(teacher_topk[1], "dtype", student_weight.dtype)
    elif teacher_logits is not None:
        check_float_tensor(teacher_logits, "teacher_logits")
        if tuple(teacher_logits.shape[:-1]) != leading:
            raise ValueError(
                f"teacher_logits must have shape {(*leading, vocab)} (the student's leading "
                f"shape and V), got {tuple(teacher_logits.shape)}"
            )
        if teacher_logits.device != device:
            raise ValueError(f"teacher_logits is on {teacher_logits.device}, the student {device}")
        teacher_dtype = teacher_logits.dtype
    else:
        if teacher_hidden is None or teacher_weight is None:
            raise ValueError("teacher_hidden and teacher_weight must be given together")
        _check_matrix(teacher_weight, "teacher_weight")
        _check_hidden(teacher_hidden, "teacher_hidden", teacher_weight, "teacher_weight", leading)
        _check_bias(teacher_bias, "teacher_bias", teacher_weight, "teacher_weight")
        if teacher_weight.device != device:
            raise ValueError(f"teacher_weight is on {teacher_weight.device}, the student {device}")
        teacher_dtype = teacher_weight.dtype
    spec = _build_spec(
        compute_dtype(student_weight.dtype, teacher_dtype),
        vocab,
        device,
        alpha,
        lam,
        divergence,
        order,
        div_params,
        temperature,
        detach_assistant,
        chunk_size,
        **teaching_fields(leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to),
    )
    topk = None
    if teacher_topk is not None:
        topk = check_topk(teacher_topk, leading, vocab, device, spec)
    else:  # teacher logits of V_t columns: the lm_head's rows, or the given logits'
        v_t = teacher_weight.shape[0] if teacher_logits is None else teacher_logits.shape[-1]
        name_t = "teacher_weight" if teacher_logits is None else "teacher_logits"
        check_vocab_alignment(vocab, v_t, spec, "student_weight", name_t)
    ignore_index = check_ignore_index(ignore_index)
    reduction = check_reduction(reduction)
    k = check_temperature_scaling(temperature_scaling, spec.objective.temperature)
    rows, n_valid = _valid_rows(labels, leading, device, ignore_index, shift_labels)
    kernel = _select_kernel(compile, backend, device)
    if chunk_size is None and getattr(kernel, "backend", None) == "triton":
        spec = dataclasses.replace(spec, chunk_size=max(1, _TRITON_FUSED_CHUNK_ELEMENTS // vocab))
    teacher_args = (teacher_hidden, teacher_weight, teacher_bias, teacher_logits, topk)
    # the two-phase backward's kernel (the Triton one, unwrapped), where that path applies
    tiled = kernel if _vocab_tiled_applies(kernel, spec, student_weight, teacher_args) else None
    kernel = teaching_kernel(kernel, spec)
    differentiable = [x for x in (student_hidden, student_weight, student_bias) if x is not None]
    if torch.is_grad_enabled() and any(x.requires_grad for x in differentiable):
        return _FusedFunction.apply(
            student_hidden,
            student_weight,
            student_bias,
            teacher_args,
            rows,
            spec,
            reduction,
            n_valid,
            leading,
            k,
            kernel,
            tiled,
        )
    with torch.no_grad():
        teacher, _ = _teacher_source(*teacher_args)
        h2 = student_hidden.reshape(-1, student_hidden.shape[-1])
        none = (False, False, False)
        row_loss, *_ = _fused_run(
            h2, student_weight, student_bias, teacher, rows, spec, leading, none, 1.0, None, kernel
        )
        if k != 1.0:
            row_loss.mul_(k)
        return _reduce(row_loss, reduction, n_valid, leading)


class AMiDFusedLinearLoss(_ObjectiveModule):
    r"""Module form of :func:`amid_fused_linear_loss` (the fused lm_head + AMiD loss).

    .. math::

        L\big(h W^\top + b,\ h_t W_t^\top + b_t\big) = \operatorname{reduce}_i
            D(\cdot\|\cdot)(p_i, q_i, r_i^{(\alpha,\lambda)})

    Its configuration is a :class:`gpu.AMiDLoss` (``config``), which holds the objective and
    the options: ``objective``, :meth:`from_objective` and the objective's fields as
    attributes (read, and assigned with validation) behave as in :class:`gpu.AMiDLoss`.

    Parameters
    ----------
    alpha : float
        Path parameter; a float64 buffer (in ``state_dict``) read and assigned as a
        float, as in :class:`gpu.AMiDLoss`.
    lam : float
        Teacher weight in ``[0, 1]``; a float64 buffer like ``alpha``.
    divergence : str
        As in :func:`amid_fused_linear_loss`.
    order : {"pr", "qr", "rp", "rq"}
        As in :func:`amid_fused_linear_loss`.
    div_params : mapping, optional
        As in :func:`amid_fused_linear_loss`.
    temperature : float
        As in :func:`amid_fused_linear_loss`.
    ignore_index : int or None
        As in :func:`amid_fused_linear_loss`.
    reduction : {"mean", "batchmean", "sum", "none"}
        As in :func:`amid_fused_linear_loss`.
    detach_assistant : bool
        As in :func:`amid_fused_linear_loss`.
    chunk_size : int, optional
        As in :func:`amid_fused_linear_loss`.
    shift_labels : bool
        As in :func:`amid_fused_linear_loss`.
    temperature_scaling : {None, "T2"}
        As in :func:`amid_fused_linear_loss`.
    compile : bool or str
        As in :func:`amid_fused_linear_loss`.
    backend : {"auto", "torch", "triton"}
        As in :func:`amid_fused_linear_loss`.
    leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`gpu.amid_loss` (the teacher-side configuration).

    Examples
    --------
    >>> import torch, gpu
    >>> crit = gpu.AMiDFusedLinearLoss(alpha=0.0, lam=0.1, shift_labels=True)
    >>> h, w = torch.randn(2, 4, 8, requires_grad=True), torch.randn(30, 8)
    >>> th, tw = torch.randn(2, 4, 6), torch.randn(30, 6)
    >>> crit(h, w, th, tw, labels=torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100]])).ndim
    0
    >>> crit.lam = 0.3  # e.g. a schedule
    >>> sorted(crit.state_dict()), crit.objective.lam
    (['config.alpha', 'config.lam'], 0.3)
    """

    def __init__(
        self,
        alpha: float,
        lam: float,
        divergence: str = "kl",
        order: str = "pr",
        div_params: Mapping[str, Any] | None = None,
        temperature: float = 1.0,
        ignore_index: int | None = -100,
        reduction: str = "mean",
        detach_assistant: bool = False,
        chunk_size: int | None = None,
        *,
        shift_labels: bool = False,
        temperature_scaling: str | None = None,
        compile: bool | str = False,
        backend: str = "auto",
        leftover: str = "bucket",
        vocab_alignment: str = "error",
        softcap: float | tuple[float | None, float | None] | None = None,
        logit_scale: float | tuple[float, float] | None = None,
        temperature_applies_to: str = "both",
    ) -> None:
        super().__init__()
        # The configuration and its checks are those of AMiDLoss (one place).
        self.config = AMiDLoss(
            alpha, lam, divergence, order, div_params, temperature, ignore_index, reduction,
            detach_assistant, chunk_size, shift_labels=shift_labels,
            temperature_scaling=temperature_scaling, compile=compile, backend=backend,
            leftover=leftover, vocab_alignment=vocab_alignment, softcap=softcap,
            logit_scale=logit_scale, temperature_applies_to=temperature_applies_to,
        )  # fmt: skip

    # The objective is held by the configuration (its α and λ are ``config.alpha`` and
    # ``config.lam`` in ``state_dict``); the module reads and assigns it there.
    def _held(self):
        config = self.__dict__.get("_modules", {}).get("config")
        return None if config is None else config.objective

    def _hold(self, objective) -> None:
        self._modules["config"]._hold(objective)

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return amid_fused_linear_loss(
            student_hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            student_bias=student_bias,
            teacher_bias=teacher_bias,
            teacher_logits=teacher_logits,
            teacher_topk=teacher_topk,
            labels=labels,
            **self.config._loss_kwargs(),
        )
