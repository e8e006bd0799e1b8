r"""The batched AMiD loss: a chunked ``torch.autograd.Function`` with a closed-form gradient.

Memory model. The logits of shape (B, T, V) are viewed as N = B·T rows and processed
``chunk_size`` rows at a time. For each chunk the forward pass computes, in float32 (float64
for float64 inputs), the log-softmaxes, the log α-mixture, the per-row divergence and —
when the student needs a gradient — the gradient with respect to the student logits, by
the chain rule below. Only two things outlive a chunk: the per-row loss (N numbers) and the
gradient, written into one (N, V) buffer in the *student's* dtype. Peak extra memory is
therefore that buffer plus O(chunk_size·V) scratch (per CPU chunk worker, see
:func:`_for_each_chunk`), instead of the dozen (N, V) float32 tensors that autograd keeps
for the textbook implementation. The backward pass scales the
stored buffer by the upstream gradient in place and hands it to autograd (no copy). A
second backward through the same graph (``retain_graph=True``) recomputes the gradient
from the saved logits.

Gradient (MATH.md, Proposition 3.5 and its analogues). With ℓ_p, ℓ_q, ℓ_r the
log-probabilities, :math:`g_A = \partial D/\partial \log A` from the divergence kernel
(:mod:`gpu._divergences`) and :math:`w = \partial\log m/\partial\log q` (:mod:`gpu._mixture`):

.. math::

    \frac{\partial D}{\partial \log m} = g_r - r\textstyle\sum_x g_{r,x},\qquad
    g_q = [\text{direct } g_q] + w\odot\frac{\partial D}{\partial \log m},\qquad
    \frac{\partial D}{\partial s} = \frac1T\Big(g_q - q\textstyle\sum_x g_{q,x}\Big).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from amid_ref._specs import Objective
from amid_ref._validation import temperature_overflow_message
from gpu._autograd import _refuse_double_backward
from gpu._divergences import GPU_DIVERGENCES, GPU_PAIR, GRAD_SUM
from gpu._elementwise import expm1
from gpu._mixture import _BETA_CLAMP, INF, NEG_INF, log_alpha_mean_and_weight
from gpu._validation import (
    check_alpha,
    check_bool,
    check_chunk_size,
    check_float_tensor,
    check_ignore_index,
    check_labels,
    check_lam,
    check_pair,
    check_reduction,
    check_temperature_scaling,
    compute_dtype,
)

__all__ = ["AMiDLoss", "amid_loss", "default_chunk_size"]

# Row flags raised at the end of the forward pass (one device sync for the whole batch).
_BAD_STUDENT = 1
_BAD_TEACHER = 2
_EMPTY_SUPPORT = 4
_INF_LOSS = 8
_NAN_LOSS = 16
_TEMPERATURE_STUDENT = 32
_TEMPERATURE_TEACHER = 64
_NAN_GRAD = 128
_INF_GRAD = 256
#: Row flags need 9 bits.
_FLAG_DTYPE = torch.int16

#: Elements (rows × V) per chunk on CPU: 8 MB of float32 per scratch tensor. Large enough
#: to amortize eager torch's per-op overhead and its OpenMP parallel regions (each chunk
#: issues ~130 of them), small enough that the scratch (measured peak: ~10 such tensors)
#: stays far below the (N, V) buffers. Measured in docs/gpu.md.
_CPU_CHUNK_ELEMENTS = 1 << 21
#: On CUDA, larger chunks amortize kernel launches: 32 MB of float32 per scratch tensor.
_CUDA_CHUNK_ELEMENTS = 1 << 23


def default_chunk_size(vocab_size: int, device: torch.device | str = "cpu") -> int:
    """Rows per chunk chosen from V: ``max(1, E // V)`` with E = 2^21 on CPU, 2^23 on CUDA."""
    elements = _CUDA_CHUNK_ELEMENTS if torch.device(device).type == "cuda" else _CPU_CHUNK_ELEMENTS
    return max(1, elements // int(vocab_size))


@dataclass(frozen=True)
class _Spec:
    """The validated :class:`~amid_ref._specs.Objective` plus the gpu-only fields.

    The objective's fields are readable here under their own names (``spec.alpha``,
    ``spec.params``, ``spec.first``, ...), which is what the chunk kernels use.
    """

    objective: Objective
    cdtype: torch.dtype
    chunk_size: int

    alpha = property(lambda self: self.objective.alpha)
    lam = property(lambda self: self.objective.lam)
    divergence = property(lambda self: self.objective.divergence)
    params = property(lambda self: self.objective.params)
    first = property(lambda self: self.objective.first)
    second = property(lambda self: self.objective.second)
    temperature = property(lambda self: self.objective.temperature)
    detach_assistant = property(lambda self: self.objective.detach_assistant)


def _log_ratio_to_mixture(
    lm: torch.Tensor, l_ref: torch.Tensor, u: torch.Tensor, lse_m: torch.Tensor
) -> torch.Tensor:
    r"""``log(r/ŝ)`` for the reference ``s = exp(l_ref)`` normalized to ``ŝ``, from
    ``u = log m − log s``: ``u − log1p(Σ ŝ·expm1(u))`` while that argument is in [−½, ½]
    (exact to a few ulps of itself), ``u − (logsumexp(lm) − log Σ s)`` otherwise
    (``lse_m`` = logsumexp(lm), the caller's). Twin of
    :func:`amid_ref._mixture._log_ratio_to_mixture`."""
    s = torch.exp(l_ref)
    terms = torch.where(u <= 1.0, expm1(u.clamp(max=1.0)).mul_(s), torch.exp(lm) - s)
    terms = terms.nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
    total = s.sum(-1, keepdim=True)
    frac = terms.sum(-1, keepdim=True) / total
    direct = lse_m - torch.log(total)
    log_z = torch.where(frac.abs() <= 0.5, torch.log1p(frac.clamp(-0.5, 0.5)), direct)
    return u - log_z


def _normalizer_gradient(spec, lq, lr, w, u_q, log_z) -> torch.Tensor:
    r"""``K = r ⊙ w − q Σ r ⊙ w`` (∂ log Z/∂ s up to 1/T), exact to a few ulps of itself:
    :math:`K = \frac{1-\lambda}{Z}\,P_q(q \odot \operatorname{expm1}((1-\beta)u))`,
    u = log m − log q (the part of r ⊙ w proportional to q cancels analytically); at
    α = ±inf, :math:`P_q(r \odot w - q)`. Twin of :func:`amid_ref._loss._normalizer_gradient`.
    """
    if spec.lam == 1.0:  # w = 0: r does not depend on the student
        return torch.zeros_like(lq)
    if math.isinf(spec.alpha):
        h = torch.exp(lr).mul_(w).sub_(torch.exp(lq))
        return _project_(
            h.masked_fill_(lq == NEG_INF, 0.0).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF), lq
        )
    beta = max(-_BETA_CLAMP, min(_BETA_CLAMP, (1.0 - spec.alpha) / 2.0))  # as the mixture
    # h = (1−λ)/Z · q · expm1(x), x = (1−β)u, formed in the log domain (1/Z overflows where
    # Z is tiny): log c = log((1−λ) q / Z); for x > 1, e^(x + log c) − e^(log c).
    log_scale = math.log1p(-spec.lam) - log_z
    log_c = lq + log_scale
    x = u_q * (1.0 - beta)
    small = x <= 1.0
    h = torch.where(
        small,
        expm1(x.clamp(max=1.0)) * torch.exp(log_c),
        torch.exp(x + log_c) - torch.exp(log_c),
    )
    # Rows where (1−λ)/Z would overflow the dtype: h = r ⊙ w itself (it differs from the
    # form above by a multiple of q, which the projection removes; |r ⊙ w| ≤ 1).
    safe = 80.0 if lq.dtype != torch.float64 else 700.0
    h = torch.where(log_scale > safe, torch.exp(x + log_c), h)
    h = h.masked_fill_(lq == NEG_INF, 0.0).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
    return _project_(h, lq)


def _project_(g: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    r"""In place: :math:`g_j - w_j\sum_x g_x` (``w = exp(log_w)``), without cancellation.

    For the row's largest weight :math:`w_k` (≈ 1 for a near one-hot distribution) the
    difference is formed as :math:`g_k(1 - w_k) - w_k\sum_{x\ne k} g_x` with
    :math:`1 - w_k = -\operatorname{expm1}(\log w_k)`; the other entries have
    :math:`w_j \le \tfrac12` and do not cancel. Twin of :func:`amid_ref._loss._project`.
    """
    k = log_w.argmax(-1, keepdim=True)
    g_k = g.gather(-1, k)
    lw_k = log_w.gather(-1, k)
    others = g.scatter_(-1, k, 0.0).sum(-1, keepdim=True)
    dominant = g_k * expm1(lw_k).neg_() - torch.exp(lw_k) * others
    out = g.sub_(torch.exp(log_w).mul_(others + g_k))
    return out.scatter_(-1, k, dominant)


def _scale_(x: torch.Tensor, inv_t: float) -> torch.Tensor:
    """In place: the row-shifted logits ``x`` (maximum 0) times 1/T; returns a row
    flag (1 where a finite entry left the dtype's range and became ``-inf``: the support
    would change, :func:`amid_ref._validation.temperature_overflow_message`). A factor
    beyond the dtype's range (T = 1e-300 in float32) keeps the maxima at 0 (not 0·inf)."""
    masked = (x == NEG_INF).sum(-1)
    if inv_t <= torch.finfo(x.dtype).max:
        x.mul_(inv_t)
    else:
        top = x == 0.0
        x.mul_(INF).masked_fill_(top, 0.0)
    return ((x == NEG_INF).sum(-1) != masked).to(_FLAG_DTYPE)


def _log_sum_exp_shifted(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp(x, -1)`` (keepdim) of rows whose maximum is 0 (or NaN: bad rows), as
    ``log1p`` of the other entries' sum :math:`S_o` (one occurrence of the maximum left
    out, ties counted): ``x − log1p(S_o)`` keeps the largest entry's log-probability exact
    where ``log(1 + S_o)`` rounds it to 0 (S_o < eps, a confident row), and with it
    ``1 − q_k``, which the gradient's projection needs there. Twin of
    :func:`amid_ref._special.log_normalize`."""
    top = x == 0.0
    others = torch.exp(x).masked_fill_(top, 0.0).sum(-1, keepdim=True)
    return others.add_(top.sum(-1, keepdim=True).sub_(1)).log1p_()


def _log_normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x − logsumexp(x), logsumexp(x))`` along the last dim (keepdim), the normalized
    entries formed as ``(x − M) − log1p(S_o)`` (:func:`_log_sum_exp_shifted`) so that the
    largest one stays exact; rows of only ``-inf`` give ``-inf`` sums. The first is a new
    tensor (``x`` is left as it is)."""
    top = x.amax(-1, keepdim=True)
    shifted = x - top.masked_fill(top == NEG_INF, 0.0)
    corr = _log_sum_exp_shifted(shifted)
    return shifted.sub_(corr), corr.add_(top)


def _chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    spec: _Spec,
    want_grad: bool,
    grad_scale: float,
    out: torch.Tensor | None = None,
    branchless: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Loss per row, gradient w.r.t. the student logits (compute dtype) and row flags.

    When ``out`` is given the scaled gradient is written into it (cast to its dtype) and
    ``out`` is returned in place of a new tensor. ``branchless=True`` (the compiled
    kernel) takes no branch on tensor values: terms that are zero for a chunk are formed
    anyway, with the same results.
    """
    inv_t = 1.0 / spec.temperature
    s = s.to(spec.cdtype)
    t = t.to(spec.cdtype)
    # Shift by the row maximum before scaling: scaling logits with a large common offset
    # first rounds them at ulp(offset/T) (2e-3 relative in fp32 at offset 2e4, T = 0.3).
    s = s - s.amax(-1, keepdim=True)
    t = t - t.amax(-1, keepdim=True)
    lost = None
    if inv_t != 1.0:
        lost = _scale_(s, inv_t) * _TEMPERATURE_STUDENT | _scale_(t, inv_t) * _TEMPERATURE_TEACHER
    # log q = x − logsumexp(x), not torch.log_softmax: measured on CPU in float32 at
    # V = 128256 on rows N(0, 2) − 1.1·log(rank), log_softmax is off by up to 3e-5 in log q
    # where this form is off by 1e-6 (gpu.accuracy.kernel_accuracy measures both).
    # Each row's maximum is 0 here, so logsumexp is log Σ exp (what torch.logsumexp forms
    # after subtracting that 0: the same numbers, two passes fewer).
    lq = s.sub_(_log_sum_exp_shifted(s))
    lp = t.sub_(_log_sum_exp_shifted(t))
    del s, t
    # A row with a NaN or +inf logit, or with only -inf logits, has an all-NaN log-softmax:
    # one column is enough to flag it (no extra pass over the logits).
    flags = torch.isnan(lq[..., 0]).to(_FLAG_DTYPE) * _BAD_STUDENT
    if lost is not None:
        flags |= lost
    flags |= torch.isnan(lp[..., 0]).to(_FLAG_DTYPE) * _BAD_TEACHER
    through_r = want_grad and not spec.detach_assistant
    first, second = spec.first, spec.second
    uses_r = "r" in (first, second)
    ratios: list | None = [] if uses_r else None
    # D(r‖q) and D(q‖r) of the divergences whose two gradients are powers of r/q: their
    # sum is formed in closed form where w > ½ (below), which needs w̄ = 1 − w exactly.
    paired = through_r and "q" in (first, second) and spec.divergence in GRAD_SUM
    weight_bar: list | None = [] if paired else None
    lm, w = log_alpha_mean_and_weight(
        lp, lq, spec.alpha, spec.lam, want_weight=through_r, ratios=ratios, weight_bar=weight_bar
    )
    lr, lz = _log_normalize(lm)
    flags |= (lz[..., 0] == NEG_INF).to(_FLAG_DTYPE) * _EMPTY_SUPPORT
    log_ratio = None
    if uses_r:  # log(first/second) from the mixture's own ratio to p or q
        other = second if first == "r" else first
        l_ref, u = (lp, ratios[0]) if other == "p" else (lq, ratios[1])
        log_ratio = _log_ratio_to_mixture(lm, l_ref, u, lz)
        if first != "r":
            log_ratio.neg_()
    u_q = ratios[1] if through_r else None  # log m − log q, for ∂ log Z/∂ s below
    del ratios
    log_z = lz
    del lm, lz
    dist = {"p": lp, "q": lq, "r": lr}
    need = {"p": False, "q": want_grad, "r": through_r}
    kernel = GPU_DIVERGENCES[spec.divergence]
    args = (dist[first], dist[second], spec.params, need[first], need[second], log_ratio)
    pair = None
    if paired:
        value, g_first, g_second, g_sum = kernel(*args, want_sum=True)
        # g_q + w·g_r in closed form (its terms, powers of r/q, may cancel): D.pair
        weights = (w, *weight_bar)
        direct = "a" if first == "q" else "b"
        pair = GPU_PAIR[spec.divergence](*args[:3], log_ratio, weights, direct,
                                         g_first, g_second, g_sum)  # fmt: skip
        del weights, weight_bar, g_sum
    else:
        value, g_first, g_second = kernel(*args)
    del log_ratio, args
    flags |= torch.isnan(value).to(_FLAG_DTYPE) * _NAN_LOSS
    if not want_grad:
        return value, None, flags
    flags |= torch.isinf(value).to(_FLAG_DTYPE) * _INF_LOSS
    g = {"p": None, "q": None, "r": None}
    g[first], g[second] = g_first, g_second
    g_q = g["q"]
    through_z = None
    if through_r:
        # Entries with w = 0 (zeros of q or of m) reach the student only through log Z:
        # P_q(w ⊙ P_r(g_A)) = −(Σ g_A)·K, K = P_q(r ⊙ w), formed exactly so that their
        # (possibly huge, ~1/(a_(a_+b_))) terms cancel analytically (amid_ref._loss).
        g_r = g["r"]
        silent = w == 0
        # Compiled: no data-dependent branch (a graph break); the term is 0 when no entry
        # is silent (g_silent = 0; the where keeps a non-finite K from turning it NaN).
        if branchless or bool(silent.any()):
            g_silent = torch.where(silent, g_r, 0.0).sum(-1, keepdim=True)
            g_r = g_r.masked_fill_(silent, 0.0)
            k_z = _normalizer_gradient(spec, lq, lr, w, u_q, log_z)
            through_z = torch.where(g_silent != 0, k_z.mul_(g_silent), 0.0)
            del k_z
        if pair is not None:
            # g_q + w·P_r(g_r) = pair − w·(g_r − P_r(g_r)), pair = g_q + w·g_r in closed
            # form (twin of amid_ref._loss.grad_of)
            g_logm = _project_(g_r.clone(), lr)
            g_q = pair.sub_(g_r.sub_(g_logm).mul_(w))
            del pair
        else:
            g_logm = _project_(g_r, lr)  # ∂D/∂log m
            g_logm.mul_(w)
            g_q = g_logm if g_q is None else g_q.add_(g_logm)
        del g_logm, w, g_r, u_q
    if g_q is None:  # D(p‖r) or D(r‖p) with the assistant detached: no path to the student
        if out is not None:
            return value, out.zero_(), flags
        return value, torch.zeros_like(lq), flags
    grad = _project_(g_q, lq)
    if through_z is not None:
        grad.sub_(through_z)
        del through_z
    if out is not None:  # scale and cast in one pass, straight into the gradient buffer
        grad = torch.mul(grad, grad_scale * inv_t, out=out)
    else:
        grad = grad.mul_(grad_scale * inv_t)
    return value, grad, flags | _grad_flags(grad)


def _grad_flags(g: torch.Tensor) -> torch.Tensor:
    """Row flags of a finished gradient chunk: ``_NAN_GRAD`` (a kernel bug) or
    ``_INF_GRAD`` (an entry beyond the range of the gradient's dtype, e.g. float16)."""
    bad = ~torch.isfinite(g).all(-1)
    flags = torch.zeros(bad.shape, dtype=_FLAG_DTYPE, device=g.device)
    if bool(bad.any()):  # rare: tell NaN from overflow
        flags |= torch.isnan(g).any(-1).to(_FLAG_DTYPE) * _NAN_GRAD
        flags |= (bad & ~torch.isnan(g).any(-1)).to(_FLAG_DTYPE) * _INF_GRAD
    return flags


def _build_spec(
    cdtype: torch.dtype,
    vocab: int,
    device: torch.device,
    alpha: Any,
    lam: Any,
    divergence: Any,
    order: Any,
    div_params: Any,
    temperature: Any,
    detach_assistant: Any,
    chunk_size: Any,
) -> _Spec:
    """Validate the objective's arguments (naming the bad one) and build the chunk spec."""
    objective = Objective.of(
        alpha, lam, divergence, order, div_params, temperature, detach_assistant,
        implementation="gpu",
    )  # fmt: skip
    chunk_size = check_chunk_size(chunk_size)
    return _Spec(
        objective=objective,
        cdtype=cdtype,
        chunk_size=chunk_size or default_chunk_size(vocab, device),
    )


def _valid_rows(
    labels: torch.Tensor | None,
    leading: tuple[int, ...],
    device: torch.device,
    ignore_index: int | None,
    shift_labels: bool,
) -> tuple[torch.Tensor | None, int]:
    """Flat indices of the positions that count (``None``: all of them) and their number.

    ``labels`` holds integers (a position counts unless its label is ``ignore_index``; with
    ``ignore_index=None`` every position counts) or bools (True: the position counts). With
    ``shift_labels`` the mask of position t is that of label t + 1 along the last leading
    axis (Hugging Face causal-LM labels: the logits at t predict token t + 1), and the last
    position never counts.
    """
    shift_labels = check_bool(shift_labels, "shift_labels")
    n_total = math.prod(leading)
    if labels is None:
        if shift_labels:
            raise ValueError(
                "shift_labels=True needs labels (the mask of position t is that of label t+1)"
            )
        return None, n_total
    labels = check_labels(labels, torch.Size(leading), device)
    if labels.dtype == torch.bool:
        valid = labels
    elif ignore_index is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    else:
        check_ignore_index(ignore_index, labels.dtype)  # a value no label can equal masks nothing
        valid = labels != ignore_index
    if shift_labels:
        if valid.dim() == 0:
            raise ValueError("shift_labels=True needs labels with a sequence axis, got a scalar")
        valid = torch.cat([valid[..., 1:], torch.zeros_like(valid[..., :1])], dim=-1)
    valid = valid.reshape(-1)
    n_valid = int(valid.sum())
    if n_valid == n_total:
        return None, n_total
    return torch.nonzero(valid).flatten(), n_valid


def _rows_to_index(rows: list[int], leading: tuple[int, ...]) -> list[tuple[int, ...]]:
    out = []
    for r in rows:
        idx = []
        for n in reversed(leading):
            idx.append(r % n)
            r //= n
        out.append(tuple(reversed(idx)))
    return out


def _raise_for_flags(flags: torch.Tensor, leading: tuple[int, ...], spec: _Spec) -> None:
    """One device sync; raises a ValueError naming the offending rows, if any."""
    if not bool(flags.any()):
        return
    flags = flags.cpu()

    def rows(bit: int) -> list[tuple[int, ...]] | None:
        hit = torch.nonzero(flags & bit).flatten().tolist()
        return _rows_to_index(hit[:5], leading) if hit else None

    for bit, name in (
        (_TEMPERATURE_STUDENT, "student_logits"),
        (_TEMPERATURE_TEACHER, "teacher_logits"),
    ):
        if (bad := rows(bit)) is not None:
            raise ValueError(
                temperature_overflow_message(
                    name, spec.temperature, f"row(s) {bad}", str(spec.cdtype).removeprefix("torch.")
                )
            )
    if (bad := rows(_BAD_STUDENT)) is not None:
        raise ValueError(
            f"student_logits has NaN, +inf, or only -inf entries in row(s) {bad} (leading "
            "index); every row needs finite logits (-inf marks masked tokens)"
        )
    if (bad := rows(_BAD_TEACHER)) is not None:
        raise ValueError(
            f"teacher_logits has NaN, +inf, or only -inf entries in row(s) {bad} (leading "
            "index); every row needs finite logits (-inf marks masked tokens)"
        )
    if (bad := rows(_EMPTY_SUPPORT)) is not None:
        raise ValueError(
            f"the assistant r is undefined on row(s) {bad}: alpha={spec.alpha} ≥ 1 keeps only "
            "the intersection of the teacher's and student's supports (-inf logits), and it "
            "is empty (Z = 0)"
        )
    if (bad := rows(_INF_LOSS)) is not None:
        raise ValueError(
            spec.objective.inf_loss_message(
                f"row(s) {bad}", str(spec.cdtype).removeprefix("torch.")
            )
        )
    if (bad := rows(_NAN_LOSS)) is not None:  # pragma: no cover - kernel bug guard
        raise FloatingPointError(f"gpu.amid_loss produced NaN on row(s) {bad}; please report")
    if (bad := rows(_INF_GRAD)) is not None:
        raise ValueError(
            f"the gradient with respect to student_logits exceeds the range of its dtype on "
            f"row(s) {bad} (a finite loss whose gradient entries are larger than the dtype's "
            "largest number, e.g. chi2 or an AB/Amari divergence on a confident float16 "
            "student); pass float32 or float64 student logits"
        )
    if (bad := rows(_NAN_GRAD)) is not None:  # pragma: no cover - kernel bug guard
        raise FloatingPointError(
            f"gpu.amid_loss produced a NaN gradient on row(s) {bad}; please report this input"
        )


def _run(
    s2: torch.Tensor,
    t2: torch.Tensor,
    rows: torch.Tensor | None,
    spec: _Spec,
    want_grad: bool,
    grad_scale: float,
    leading: tuple[int, ...],
    kernel=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All chunks: per-row loss (N,) in the compute dtype and the gradient (N, V) buffer."""
    kernel = kernel or _chunk
    n, _ = s2.shape
    row_loss = torch.zeros(n, dtype=spec.cdtype, device=s2.device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=s2.device)
    grad = None
    if want_grad:
        grad = torch.empty_like(s2) if rows is None else torch.zeros_like(s2)
    n_rows = n if rows is None else rows.numel()

    def body(start: int, stop: int) -> None:
        if rows is None:
            out = grad[start:stop] if grad is not None else None
            value, g, f = kernel(s2[start:stop], t2[start:stop], spec, want_grad, grad_scale, out)
            row_loss[start:stop] = value
            flags[start:stop] = f
        else:
            idx = rows[start:stop]
            value, g, f = kernel(s2[idx], t2[idx], spec, want_grad, grad_scale)
            row_loss.index_copy_(0, idx, value)
            flags.index_copy_(0, idx, f)
            if grad is not None:
                grad.index_copy_(0, idx, g.to(grad.dtype))

    _for_each_chunk(n_rows, spec.chunk_size, s2.device, body, parallel=kernel is _chunk)
    _raise_for_flags(flags, leading, spec)
    return row_loss, grad


def _chunk_workers(device: torch.device, n_rows: int) -> int:
    """Threads that process chunks side by side: torch's intra-op thread count on CPU."""
    if device.type != "cpu" or n_rows < 2:
        return 1
    return max(1, min(torch.get_num_threads(), n_rows))


def _for_each_chunk(n_rows, step, device, body, parallel=True):
    r"""Call ``body(start, stop)`` for every chunk of rows.

    On CPU with more than one torch thread the chunks are shared among that many worker
    threads, each running its chunks with *one* intra-op thread (``torch.set_num_threads``
    is per thread), instead of running every one of a chunk's ~130 elementwise ops and
    reductions as its own OpenMP parallel region over all threads. A parallel region
    waits for its slowest thread, so on a loaded machine every region could wait a
    scheduler time slice for a descheduled thread; one region per *chunk* (the worker)
    waits for nothing (docs/gpu.md, *Threads*). Chunks write disjoint rows of shared
    outputs. Costs one chunk of scratch per worker; fewer rows than workers × ``step``
    are split evenly among the workers.

    ``body`` may return a callable, the chunk's *commit*: an accumulation into an output
    shared by all chunks (the fused loss's weight gradient). Commits run one at a time and
    in chunk order, whatever the number of workers, so the accumulated sums are formed in
    the same order as by one worker (one shared accumulator, not one per worker: the
    weight gradient is the largest buffer of the fused loss). A worker whose chunk is
    ready before its turn waits holding that chunk's scratch; the others go on.
    """
    workers = _chunk_workers(device, n_rows) if parallel else 1
    if workers > 1:  # at least one chunk per worker (rows are independent: same results)
        step = max(1, min(step, -(-n_rows // workers)))
    starts = list(range(0, n_rows, step))
    workers = max(1, min(workers, len(starts)))
    if workers == 1:
        for start in starts:
            commit = body(start, min(start + step, n_rows))
            if commit is not None:
                commit()
        return

    turn = threading.Condition()
    state = {"next": 0, "failed": False}

    def work(w: int) -> None:
        torch.set_num_threads(1)  # this worker thread only
        try:
            with torch.no_grad():  # grad mode is per thread; workers start with it on
                for i in range(w, len(starts), workers):
                    start = starts[i]
                    commit = body(start, min(start + step, n_rows))
                    with turn:
                        turn.wait_for(lambda i=i: state["next"] == i or state["failed"])
                        if state["failed"]:
                            return
                        if commit is not None:
                            commit()
                        state["next"] = i + 1
                        turn.notify_all()
        except BaseException:
            with turn:  # release the workers waiting for this one's turn
                state["failed"] = True
                turn.notify_all()
            raise

    before = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, w) for w in range(workers)]
            for future in futures:
                future.result()  # re-raises a worker's exception here
    finally:
        if torch.get_num_threads() != before:  # a build whose thread count is global
            torch.set_num_threads(before)


#: Compiled kernels by backend; ``None`` records a backend whose compilation failed.
_COMPILED: dict[str, Any] = {}


def _compiled_kernel(backend: str):
    """``_chunk`` through ``torch.compile`` (same signature), or ``None`` if unavailable.

    The compiled function is ``_chunk`` with ``grad_scale = 1``; the scale (which changes
    with the number of valid rows) and the cast into the gradient buffer are applied
    after it, so that one compiled graph serves every batch.
    """
    if backend in _COMPILED:
        return _COMPILED[backend]
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        _COMPILED[backend] = None
        return None
    try:
        core = compile_fn(lambda s, t, spec, want_grad: _chunk(s, t, spec, want_grad, 1.0,
                                                                 branchless=True),
                          backend=backend, dynamic=None)  # fmt: skip
    except Exception as exc:  # e.g. an unknown backend name
        _warn_compile_failed(backend, exc)
        _COMPILED[backend] = None
        return None

    working = [True]
    objectives: set[str] = set()

    def kernel(s, t, spec, want_grad, grad_scale, out=None):
        if not working[0]:
            return _chunk(s, t, spec, want_grad, grad_scale, out)
        key = repr(spec.objective)
        if key not in objectives:
            objectives.add(key)
            # Each objective costs one graph per gradient mode and up to two per chunk-shape
            # class (static, then dynamic): half the limit is where eager fallback can begin.
            if len(objectives) == max(1, _recompile_limit() // 2):
                _warn_recompile_limit(backend, len(objectives))
        try:
            value, g, flags = core(s, t, spec, want_grad)
        except Exception as exc:  # compiler missing or failing: fall back, once, loudly
            working[0] = False
            _COMPILED[backend] = None
            _warn_compile_failed(backend, exc)
            return _chunk(s, t, spec, want_grad, grad_scale, out)
        if g is not None:
            g = torch.mul(g, grad_scale, out=out) if out is not None else g.mul_(grad_scale)
            flags = flags | _grad_flags(g)
        return value, g, flags

    _COMPILED[backend] = kernel
    return kernel


def _recompile_limit() -> int:
    """torch._dynamo's recompile limit per code object (8 by default in torch 2.x)."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    for name in ("recompile_limit", "cache_size_limit"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 8


def _warn_recompile_limit(backend: str, n: int) -> None:
    warnings.warn(
        f"torch.compile(backend={backend!r}) has compiled the AMiD chunk kernel for {n} "
        "objectives: the graph is specialized on alpha, lam, divergence, order, parameters "
        "and temperature, each new one compiles again, and once torch's recompile limit "
        f"({_recompile_limit()} graphs, which chunk shapes and gradient modes also count) "
        "is reached new ones run the kernel eagerly. With an alpha/lam schedule use "
        "compile=False.",
        RuntimeWarning,
        stacklevel=4,
    )


def _warn_compile_failed(backend: str, exc: BaseException) -> None:
    warnings.warn(
        f"torch.compile(backend={backend!r}) of the AMiD chunk kernel failed "
        f"({type(exc).__name__}: {str(exc)[:200]}); using the eager kernel",
        RuntimeWarning,
        stacklevel=3,
    )


def _select_kernel(compile: Any):
    """The per-chunk kernel for the ``compile`` argument: False, True or a backend name."""
    if compile is False or compile is None:
        return _chunk
    if compile is True:
        backend = "inductor"
    elif isinstance(compile, str):
        backend = compile
    else:
        raise TypeError(f"compile must be a bool or a torch.compile backend name, got {compile!r}")
    kernel = _compiled_kernel(backend)
    return _chunk if kernel is None else kernel


def _reduce(row_loss: torch.Tensor, reduction: str, n_valid: int, leading) -> torch.Tensor:
    if reduction == "none":
        return row_loss.reshape(leading)
    total = row_loss.sum()
    if reduction == "sum":
        return total
    return total / n_valid if n_valid > 0 else total * 0.0


def _scale_by_upstream(grad: torch.Tensor, grad_output: torch.Tensor, spec, reduction: str):
    """In place: the stored gradient rows times the upstream gradient (one number per row
    for ``reduction="none"``, chunk by chunk so no (N, V) temporary forms; a scalar else)."""
    if reduction == "none":
        go = grad_output.reshape(-1, 1).to(spec.cdtype)
        step = spec.chunk_size
        for start in range(0, grad.shape[0], step):
            block = grad[start : start + step]
            block.copy_(block.to(spec.cdtype).mul_(go[start : start + step]))
    elif bool(grad_output != 1):
        grad.mul_(grad_output.to(spec.cdtype))


class _AMiDFunction(torch.autograd.Function):
    """Chunked forward that also produces the gradient; backward scales and hands it over."""

    @staticmethod
    def forward(
        ctx, student, teacher, rows, spec, reduction, n_valid, leading, factor=1.0, kernel=None
    ):
        v = student.shape[-1]
        s2 = student.reshape(-1, v)
        t2 = teacher.reshape(-1, v)
        scale = factor / n_valid if (reduction == "mean" and n_valid > 0) else factor
        row_loss, grad = _run(s2, t2, rows, spec, True, scale, leading, kernel)
        if factor != 1.0:
            row_loss.mul_(factor)
        ctx.save_for_backward(student, teacher)
        ctx.rows = rows
        ctx.spec = spec
        ctx.reduction = reduction
        ctx.scale = scale
        ctx.leading = leading
        ctx.kernel = kernel
        ctx.grad_buffer = grad
        return _reduce(row_loss, reduction, n_valid, leading)

    @staticmethod
    @_refuse_double_backward
    def backward(ctx, grad_output):
        grad = ctx.grad_buffer
        ctx.grad_buffer = None  # hand the buffer to autograd (no copy)
        student, teacher = ctx.saved_tensors
        v = student.shape[-1]
        if grad is None:  # second backward (retain_graph=True): recompute from the logits
            _, grad = _run(
                student.reshape(-1, v),
                teacher.reshape(-1, v),
                ctx.rows,
                ctx.spec,
                True,
                ctx.scale,
                ctx.leading,
                ctx.kernel,
            )
        _scale_by_upstream(grad, grad_output, ctx.spec, ctx.reduction)
        return grad.view(student.shape), None, None, None, None, None, None, None, None


def amid_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    detach_assistant: bool = False,
    chunk_size: int | None = None,
    *,
    shift_labels: bool = False,
    temperature_scaling: str | None = None,
    compile: bool | str = False,
) -> torch.Tensor:
    r"""Batched AMiD distillation loss with a memory-efficient closed-form gradient.

    Torch convention for ``labels``: ``labels[..., t]`` masks the logits at position t, as
    in ``torch.nn.CrossEntropyLoss`` (``shift_labels=False``, the default). Hugging Face
    causal-LM labels are *unshifted* (``labels[:, t]`` is token t, predicted at position
    t − 1): pass ``shift_labels=True`` with them, or use :func:`gpu.hf.amid_compute_loss`,
    whose entry points default to them. Nothing is inferred from the shapes, which are the
    same in both conventions.

    .. math::

        p = \mathrm{softmax}(t/T),\quad q = \mathrm{softmax}(s/T),\quad
        r \propto m_\alpha(p, q;\lambda) = \big(\lambda p^\beta + (1-\lambda)q^\beta\big)^{1/\beta},
        \ \beta=\tfrac{1-\alpha}{2},

    and per position the loss :math:`D(p\|r)`, :math:`D(q\|r)`, :math:`D(r\|p)` or
    :math:`D(r\|q)` (``order`` ``"pr"``, ``"qr"``, ``"rp"``, ``"rq"``). Torch twin of
    :func:`amid_ref.amid_loss` (student first, as in torch losses), with its gradient
    :func:`amid_ref.amid_grad` computed in closed form chunk by chunk.

    Parameters
    ----------
    student_logits : torch.Tensor, shape (..., V)
        Student logits, any floating dtype (bf16, fp16, fp32, fp64); the only input that
        receives a gradient. ``-inf`` entries are masked tokens (probability exactly 0).
    teacher_logits : torch.Tensor, shape (..., V)
        Teacher logits, same shape (same V: a clear error otherwise), any floating dtype.
        Never receives a gradient.
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Teacher weight of the assistant in ``[0, 1]`` (λ = 1 gives r = p, λ = 0 gives r = q).
    divergence : str
        A name of :data:`gpu.DIVERGENCES` (names and ``div_params`` as in
        :func:`amid_ref.divergence`, checked by the same contract, :mod:`amid_ref._specs`).
    order : {"pr", "qr", "rp", "rq"}
        Argument order; p is the teacher.
    div_params : mapping, optional
        Divergence parameters.
    temperature : float
        Softmax temperature T > 0 applied to both logits (no T² factor unless
        ``temperature_scaling="T2"``).
    labels : torch.Tensor of int or bool, shape (...), optional
        Integer labels: positions with ``labels == ignore_index`` contribute nothing (loss
        0, gradient 0). Bool mask: True marks the positions that count.
    ignore_index : int or None
        The ignored label value; ``None`` ignores no value.
    reduction : {"mean", "batchmean", "sum", "none"}
        ``"mean"`` divides the sum by the number of valid positions (0 if there is none);
        ``"batchmean"`` is the same (per valid *token*, as TRL's distillation losses; torch's
        ``kl_div(..., "batchmean")`` divides by ``input.size(0)``, which is the same number
        when the logits are passed flattened to (B·T, V) without masking, and the batch size
        B, not the token count, for (B, T, V) input); ``"sum"`` sums them (divide by the
        trainer's ``num_items_in_batch`` under gradient accumulation); ``"none"`` returns the
        per-position loss of shape (...).
    detach_assistant : bool
        Treat r as a constant (TAID, DistiLLM-2): the gradient flows only through a direct
        occurrence of q (orders ``qr``, ``rq``).
    chunk_size : int, optional
        Rows per chunk; ``None`` picks :func:`default_chunk_size` from V and the device.
        The result does not depend on it beyond summation order.
    shift_labels : bool
        False (default): ``labels[..., t]`` masks the logits at position t (the convention
        of ``torch.nn.CrossEntropyLoss``; labels already aligned with the logits, e.g. from
        ``logits[:, :-1]`` and ``labels[:, 1:]``). True: ``labels`` are unshifted Hugging
        Face causal-LM labels of the same (B, T) shape as the logits; position t counts iff
        label t + 1 does, the last position never counts (as ``transformers``'
        ``ForCausalLMLoss``). The default keeps the mask where the caller put it; nothing
        is inferred from the shapes, which are the same in both conventions.
    temperature_scaling : {None, "T2"}
        ``"T2"`` multiplies the loss and its gradient by T² (Hinton et al. 2015: keeps
        the gradient's magnitude independent of T); ``None`` (default) leaves it as is.
    compile : bool or str
        ``True``: run the per-chunk kernel through ``torch.compile`` (inductor; a string
        names another backend), which fuses its ~130 elementwise ops and reductions into a
        few loops on CPU and CUDA. The first call compiles (tens of seconds on CPU). If
        compilation fails (no compiler, unsupported backend) a ``RuntimeWarning`` says so
        and the eager kernel is used; results agree with the eager kernel within the
        ``"gpu"`` tolerance rows (tested with inductor, near p = q). The graph is
        specialized on the objective: each new α or λ compiles again (seconds), and after
        torch's recompile limit (8 graphs) the kernel runs eagerly (a ``RuntimeWarning``
        says so from half the limit in objectives); keep ``compile=False`` with a
        per-step α/λ schedule (docs/gpu.md, *Compiled per-chunk kernel*).

    Returns
    -------
    torch.Tensor
        float32 (float64 for float64 inputs): 0-d for ``"mean"``/``"sum"``, shape (...) for
        ``"none"``. Its gradient w.r.t. ``student_logits`` has the student's dtype.

    Raises
    ------
    TypeError, ValueError
        On bad arguments (naming the parameter), NaN or ``+inf`` logits, a row of only
        ``-inf``, an empty assistant support (α ≥ 1 and disjoint supports), or a ``+inf``
        loss when a gradient is required. Value checks run inside the chunked pass and are
        raised at its end, naming the rows.

    Notes
    -----
    Arithmetic in float32 at least (float64 for float64 inputs), uniformly accurate in α
    (see :mod:`gpu._mixture`); tolerances against :mod:`amid_ref` are the ``"gpu"`` rows of
    :mod:`amid_ref.tolerances`. Peak extra memory is one (N, V) gradient buffer in the
    student dtype plus O(chunk_size·V) scratch (module docstring). Theorem 3.4: for
    0 < λ < 1 the loss vanishes iff q = p; Proposition 3.5 gives the gradient through r.

    References
    ----------
    Theorem 3.4 (optimality) and Proposition 3.5 (the gradient through r).

    See Also
    --------
    amid_ref.amid_loss, amid_ref.amid_grad : the float64 reference it is held to.
    amid_ref.precise.amid_loss : the mpmath oracle behind the reference.

    Examples
    --------
    >>> import torch, gpu
    >>> t = torch.tensor([[2.0, 0.5, -1.0]])
    >>> s = torch.zeros(1, 3, requires_grad=True)
    >>> loss = gpu.amid_loss(s, t, alpha=-5.0, lam=0.1)
    >>> loss.backward()
    >>> s.grad.shape
    torch.Size([1, 3])
    """
    check_float_tensor(student_logits, "student_logits")
    check_float_tensor(teacher_logits, "teacher_logits")
    check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    leading = tuple(student_logits.shape[:-1])
    v = student_logits.shape[-1]
    device = student_logits.device
    spec = _build_spec(
        compute_dtype(student_logits.dtype, teacher_logits.dtype),
        v,
        device,
        alpha,
        lam,
        divergence,
        order,
        div_params,
        temperature,
        detach_assistant,
        chunk_size,
    )
    ignore_index = check_ignore_index(ignore_index)
    reduction = check_reduction(reduction)
    factor = check_temperature_scaling(temperature_scaling, spec.temperature)
    rows, n_valid = _valid_rows(labels, leading, device, ignore_index, shift_labels)
    kernel = _select_kernel(compile)
    teacher = teacher_logits.detach()
    if torch.is_grad_enabled() and student_logits.requires_grad:
        return _AMiDFunction.apply(
            student_logits, teacher, rows, spec, reduction, n_valid, leading, factor, kernel
        )
    with torch.no_grad():
        s2, t2 = student_logits.reshape(-1, v), teacher.reshape(-1, v)
        row_loss, _ = _run(s2, t2, rows, spec, False, 1.0, leading, kernel)
        if factor != 1.0:
            row_loss.mul_(factor)
        return _reduce(row_loss, reduction, n_valid, leading)


#: The module's scalars kept as buffers (in ``state_dict``), with their checks.
_MODULE_SCALARS = {"alpha": check_alpha, "lam": check_lam}


class AMiDLoss(torch.nn.Module):
    r"""Module form of :func:`amid_loss` for training loops.

    .. math::

        \mathcal L = \operatorname{reduce}_{\text{valid positions}}
            D\big(\cdot\,\|\,\cdot\big)\ \text{over}\ \{p, q_\theta, r^{(\alpha,\lambda)}\}

    Parameters
    ----------
    alpha : float
        Path parameter, any real or ``±inf``. Reads and assigns as a plain float (validated
        on assignment) and may change between steps; stored as a float64 buffer, so
        ``state_dict()`` holds its current value and a checkpoint restores a schedule.
    lam : float
        Teacher weight of the assistant in ``[0, 1]``. Like ``alpha``: a float attribute
        kept in a float64 buffer (TAID schedules λ).
    divergence : str
        As in :func:`amid_loss`.
    order : {"pr", "qr", "rp", "rq"}
        As in :func:`amid_loss`.
    div_params : mapping, optional
        As in :func:`amid_loss`.
    temperature : float
        As in :func:`amid_loss`.
    ignore_index : int
        As in :func:`amid_loss`.
    reduction : {"mean", "batchmean", "sum", "none"}
        As in :func:`amid_loss`.
    detach_assistant : bool
        As in :func:`amid_loss`.
    chunk_size : int, optional
        As in :func:`amid_loss`.
    shift_labels : bool
        As in :func:`amid_loss`.
    temperature_scaling : {None, "T2"}
        As in :func:`amid_loss`.
    compile : bool or str
        As in :func:`amid_loss`.

    See Also
    --------
    amid_loss : the functional form.
    amid_ref.presets : the prior methods as AMiD settings.

    Examples
    --------
    >>> import torch, gpu
    >>> crit = gpu.AMiDLoss(alpha=0.0, lam=0.1)
    >>> s = torch.randn(2, 3, 11, requires_grad=True)
    >>> t = torch.randn(2, 3, 11)
    >>> crit.lam = 0.2  # e.g. a schedule
    >>> sorted(crit.state_dict())
    ['alpha', 'lam']
    >>> crit(s, t, labels=torch.tensor([[1, 2, -100], [4, -100, -100]])).ndim
    0
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
    ) -> None:
        super().__init__()
        objective = Objective.of(
            alpha, lam, divergence, order, div_params, temperature, detach_assistant,
            implementation="gpu",
        )  # fmt: skip
        # Buffers stay float64 and on the CPU for exact Python floats: ``_apply`` (used by
        # ``.to``, ``.cuda``, ``.half``) is overridden below to leave them alone.
        self.register_buffer("alpha", torch.tensor(objective.alpha, dtype=torch.float64))
        self.register_buffer("lam", torch.tensor(objective.lam, dtype=torch.float64))
        self.divergence = objective.divergence
        self.order = objective.order
        self.div_params = dict(objective.params)
        self.temperature = objective.temperature
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.detach_assistant = objective.detach_assistant
        self.chunk_size = check_chunk_size(chunk_size)
        self.shift_labels = check_bool(shift_labels, "shift_labels")
        self.temperature_scaling = temperature_scaling
        check_temperature_scaling(temperature_scaling, self.temperature)
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be a bool or a backend name, got {compile!r}")
        self.compile = compile

    def __getattr__(self, name: str) -> Any:
        if name in _MODULE_SCALARS and name in self.__dict__.get("_buffers", {}):
            return float(self._buffers[name])
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _MODULE_SCALARS and name in self.__dict__.get("_buffers", {}):
            self._buffers[name].fill_(_MODULE_SCALARS[name](value))
            return
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        saved = {k: self._buffers[k] for k in _MODULE_SCALARS}
        out = super()._apply(fn, recurse)
        self._buffers.update(saved)
        return out

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return amid_loss(student_logits, teacher_logits, labels=labels, **self._loss_kwargs())

    def _loss_kwargs(self) -> dict[str, Any]:
        """The configuration as keyword arguments of :func:`amid_loss` (and of
        :func:`gpu.amid_fused_linear_loss`, whose module keeps an ``AMiDLoss`` as its
        configuration)."""
        return {
            "alpha": self.alpha,
            "lam": self.lam,
            "divergence": self.divergence,
            "order": self.order,
            "div_params": self.div_params,
            "temperature": self.temperature,
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "detach_assistant": self.detach_assistant,
            "chunk_size": self.chunk_size,
            "shift_labels": self.shift_labels,
            "temperature_scaling": self.temperature_scaling,
            "compile": self.compile,
        }

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, lam={self.lam}, divergence={self.divergence!r}, "
            f"order={self.order!r}, reduction={self.reduction!r}"
        )
