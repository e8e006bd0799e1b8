r"""Sparse (top-k) teachers, vocabulary alignment and logit transforms, per chunk of rows.

MATH.md, *Sparse teachers, vocabulary alignment, logit transforms*; the float64 twin is
:mod:`amid_ref` (``teacher_topk``, ``leftover``, ``vocab_alignment``, ``softcap``,
``logit_scale``, ``temperature_applies_to``). Everything here wraps the engine's per-chunk
kernel (:func:`teaching_kernel`): the wrapper has the kernel's signature
``kernel(s, t, spec, want_grad, grad_scale, out=None, out_lo=None)``, so the three
front-ends (logits, fused lm_head, vocabulary-parallel) and every backend run it
unchanged. With the default configuration (dense teacher of the student's V, no transform)
the kernel is used as it is.

Per chunk of n rows (V the student's vocabulary, k the teacher's slots):

* **Logit transforms.** :math:`z = c\tanh(\kappa s/c)` (scale, then cap), then the
  temperature; ``-inf`` (a masked token) stays ``-inf``. The kernel's gradient with
  respect to z is multiplied by :math:`\kappa(1-\tanh^2(\kappa s/c))`. One (n, V) scratch.
* **Vocabulary alignment** (dense teacher of V_t ≠ V): ``pad`` extends the chunk of the
  side with fewer ids with ``-inf`` columns (probability exactly 0), ``truncate`` cuts the
  chunk of the side with more ids to the shared ones (the dropped probability is checked
  against :data:`amid_ref.tolerances.VOCAB_TRUNCATE_MAX_DROPPED`, a row flag). The fused
  loss computes each chunk's logits from the whole lm_head and aligns that chunk: no
  (N, V) logits ever form.
* **Sparse teacher** ``(indices, logprobs)`` of shape (N, k), slot −1 / −inf = padding;
  its log-probabilities are used as given (the temperature divides the student only).
  Never an (N, V) teacher tensor:

  - ``bucket``: the objective on the (k+1)-category coarse-grained pair, O(k) per row:
    the student's logits at the ids and the log-sum-exp of its logits *off* S (one pass
    over the chunk; log q̂_★ is never formed as 1 − Σq), the teacher's ℓ_S and
    log ε, ε = −expm1(logsumexp ℓ_S) after :mod:`amid_ref._sparse`'s mass rule (ε ≤
    ``SPARSE_EPS_ROUNDING``, or ≤ ``SPARSE_MASS_TOL`` with k = V, is rounding: ε = 0),
    formed once per row in float64 by :func:`check_topk` as amid_ref forms it. The
    kernel runs on these (n, k+1) tensors; the gradient is chained back: ids in S get
    theirs, ids off S get :math:`g_\star\,q_j/\hat q_\star`, written in one pass.
  - ``renormalize`` and ``uniform``: the teacher is densified for the chunk only,
    (n, V) in the compute dtype (``-inf`` off S, or log(ε/(V−k)) off S), and the dense
    kernel runs on it. This costs one (chunk, V) tensor and the dense kernel's O(V) work
    per row; it never forms (N, V).

Bad input of a sparse teacher is refused before any arithmetic (:func:`check_topk`, one
O(N·k) pass and one device sync); a truncation that drops too much is raised at the end of
the pass with the other row flags.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from amid_ref import tolerances
from amid_ref.contract import (
    SPARSE_EPS_ROUNDING,
    check_teacher_source,
    leftover_needs_mass_message,
    log1p_tol,
    mass_above_one_message,
    sparse_transform_message,
    truncate_dropped_message,
)
from gpu._flags import (
    _BAD_STUDENT,
    _BAD_TEACHER,
    _FLAG_DTYPE,
    _TEMPERATURE_STUDENT,
    _TRUNCATED_STUDENT,
    _TRUNCATED_TEACHER,
)
from gpu._torch_kernel import _grad_flags
from gpu._validation import check_float_tensor

__all__ = ["SparseTeacher", "Teaching", "teaching_kernel"]

NEG_INF = -math.inf


class SparseTeacher:
    """A sparse teacher's ``(indices, logprobs)`` flattened to (N, k), with its leftover
    ``log_leftover`` = log ε (N, 1) in float64 after :mod:`amid_ref._sparse`'s mass rule;
    rows index all three.

    The engine slices the teacher by rows (``t[start:stop]``, ``t[rows]``): this is that
    object for a top-k teacher.
    """

    def __init__(
        self, indices: torch.Tensor, logprobs: torch.Tensor, log_leftover: torch.Tensor
    ) -> None:
        self.indices = indices
        self.logprobs = logprobs
        self.log_leftover = log_leftover

    @property
    def shape(self) -> torch.Size:
        return self.logprobs.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.logprobs.dtype

    @property
    def device(self) -> torch.device:
        return self.logprobs.device

    def __getitem__(self, rows) -> SparseTeacher:
        return SparseTeacher(self.indices[rows], self.logprobs[rows], self.log_leftover[rows])


@dataclasses.dataclass(frozen=True)
class Teaching:
    """The teacher-side configuration of an objective (its normalized fields)."""

    leftover: str = "bucket"
    vocab_alignment: str = "error"
    softcap: tuple[float | None, float | None] = (None, None)
    logit_scale: tuple[float, float] = (1.0, 1.0)
    temperature_applies_to: str = "both"

    @classmethod
    def of(cls, objective: Any) -> Teaching:
        """The teacher-side fields of an :class:`amid_ref._specs.Objective` (validated there)."""
        return cls(**{f.name: getattr(objective, f.name) for f in dataclasses.fields(cls)})

    @property
    def transforms(self) -> bool:
        return self.softcap != (None, None) or self.logit_scale != (1.0, 1.0)


def _transform(x: torch.Tensor, scale: float, cap: float | None, want_derivative: bool):
    """``(z, dz/dx)`` for z = cap·tanh(scale·x/cap) (``cap`` None: z = scale·x), in x's dtype
    (a new tensor); ``-inf`` stays ``-inf`` with derivative 0. The derivative is ``None``
    when it is the constant ``scale``."""
    z = x * scale if scale != 1.0 else x.clone()
    if cap is None:
        return z, None
    masked = z == NEG_INF
    th = torch.tanh(z.div_(cap))
    z = (th * cap).masked_fill_(masked, NEG_INF)
    if not want_derivative:
        return z, None
    return z, th.square_().neg_().add_(1.0).mul_(scale).masked_fill_(masked, 0.0)


def _bad_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows with a NaN or +inf entry or only ``-inf`` ones (the kernel's rule, read before
    a transform could hide it)."""
    return ~torch.isfinite(x.amax(-1))


def _tempered_(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """In place: ``(z − max)/T`` per row; returns the rows where a finite entry left the
    dtype's range (the kernel's ``_TEMPERATURE_STUDENT`` rule)."""
    top = z.amax(-1, keepdim=True)
    z.sub_(top.masked_fill(~torch.isfinite(top), 0.0))
    finite = torch.isfinite(z)
    z.div_(temperature)
    return (finite & ~torch.isfinite(z)).any(-1)


def _logsumexp_as_reference(x: torch.Tensor) -> torch.Tensor:
    r"""logsumexp over the last axis as :func:`amid_ref._special.log_normalize` forms it:
    :math:`M + \operatorname{log1p}(S_o)`, M the row's maximum and S_o the sum of
    :math:`e^{x - M}` over the other entries (one occurrence of the maximum left out), so
    that ε = −expm1 of it is exact to a few ulps of ε itself, not of 1; ``-inf`` for a row
    of ``-inf`` only."""
    top = x.amax(-1, keepdim=True)
    empty = torch.isneginf(top)
    e = torch.exp(x - top.masked_fill(empty, 0.0))
    e.scatter_(-1, x.argmax(-1, keepdim=True), 0.0)
    lse = top + torch.log1p(e.sum(-1, keepdim=True))
    return lse.masked_fill_(empty, NEG_INF).squeeze(-1)


def _with_sink(x: torch.Tensor, fill: float | torch.Tensor) -> torch.Tensor:
    """``x`` with one more column (the sink of padded slots), holding ``fill``."""
    n = x.shape[0]
    sink = x.new_empty(n, 1)
    sink.copy_(fill if isinstance(fill, torch.Tensor) else torch.full_like(sink, fill))
    return torch.cat([x, sink], dim=-1)


def _sparse_chunk(kernel, z, teacher: SparseTeacher, spec, inner, leftover, want_grad, grad_scale):
    """Loss per row, ∂L/∂z (n, V) and flags for the student's chunk logits z (tempered,
    transformed; compute dtype) against a sparse teacher."""
    v = z.shape[-1]
    idx = teacher.indices
    lp = teacher.logprobs.to(z.dtype)
    valid = idx >= 0
    sink_idx = torch.where(valid, idx, v)  # padded slots write into the sink column V
    if leftover == "bucket":
        off = _with_sink(z, NEG_INF).scatter_(-1, sink_idx, NEG_INF)  # z off S (n, V+1)
        lse_off = torch.logsumexp(off, -1, keepdim=True)
        z_s = z.gather(-1, idx.clamp(min=0)).masked_fill_(~valid, NEG_INF)
        coarse_s = torch.cat([z_s, lse_off], dim=-1)
        # ε after the mass rule (check_topk); with k = V and ε kept, ★ is empty (q̂_★ = 0)
        log_eps = teacher.log_leftover.to(z.dtype)
        coarse_t = torch.cat([lp, log_eps], dim=-1)
        value, g_c, flags = kernel(coarse_s, coarse_t, inner, want_grad, grad_scale)
        if not want_grad:
            return value, None, flags
        g_c = g_c.to(z.dtype)
        # ids off S: g_★ · q_j / q̂_★ = g_★ · exp(z_j − lse_off); no ids off S: 0
        share = off.sub_(lse_off.masked_fill(lse_off == NEG_INF, 0.0)).exp_()
        share.mul_(g_c[:, -1:])
        share.scatter_(-1, sink_idx, g_c[:, :-1])
        return value, share[:, :v], flags
    if leftover == "renormalize":
        fill: float | torch.Tensor = NEG_INF
    else:  # uniform: ε/(V − k) off S (k counts the slots that are not padding)
        k = valid.sum(-1, keepdim=True)
        spread = torch.log((v - k).to(z.dtype))
        fill = torch.where(k < v, teacher.log_leftover.to(z.dtype) - spread, NEG_INF)
    dense = torch.empty_like(z)
    dense.copy_(fill if isinstance(fill, torch.Tensor) else torch.full_like(z[:, :1], fill))
    dense = _with_sink(dense, NEG_INF).scatter_(-1, sink_idx, lp)[:, :v]
    return kernel(z, dense, inner, want_grad, grad_scale)


def _truncated_mass(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Probability of softmax(x) beyond the first ``keep`` columns, per row."""
    lse_all = torch.logsumexp(x, -1)
    return torch.exp(torch.logsumexp(x[:, keep:], -1) - lse_all)


def teaching_kernel(kernel, spec):
    """``kernel`` wrapped for the teacher-side configuration of ``spec`` (see the module
    docstring); for a dense teacher of the student's vocabulary and no transform the
    wrapper calls ``kernel`` as it is (checked per chunk)."""
    teaching = spec.teaching
    temperature = spec.objective.temperature
    # The wrapper applies the temperature itself when it does not divide both sides.
    own_temperature = teaching.temperature_applies_to == "student"
    inner_objective = spec.objective
    if hasattr(inner_objective, "temperature_applies_to"):
        inner_objective = dataclasses.replace(inner_objective, temperature_applies_to="both")
    inner_student_t = dataclasses.replace(
        spec, objective=dataclasses.replace(inner_objective, temperature=1.0), teaching=Teaching()
    )
    inner_both = dataclasses.replace(spec, objective=inner_objective, teaching=Teaching())
    (scale_s, scale_t), (cap_s, cap_t) = teaching.logit_scale, teaching.softcap

    def wrapped(s, t, _spec, want_grad, grad_scale, out=None, out_lo=None):
        sparse = isinstance(t, SparseTeacher)
        if (
            not sparse
            and not teaching.transforms
            and not own_temperature
            and (t.shape[-1] == s.shape[-1])
        ):
            return kernel(s, t, _spec, want_grad, grad_scale, out, out_lo=out_lo)
        cdt = spec.cdtype
        v_s = s.shape[-1]
        flags = _bad_rows(s).to(_FLAG_DTYPE) * _BAD_STUDENT
        z, dz = _transform(s.to(cdt), scale_s, cap_s, want_grad)
        mine = sparse or own_temperature  # the temperature divides the student only
        if mine and temperature != 1.0:
            flags |= _tempered_(z, temperature).to(_FLAG_DTYPE) * _TEMPERATURE_STUDENT
        inner = inner_student_t if mine else inner_both
        if sparse:
            value, g, f = _sparse_chunk(
                kernel, z, t, spec, inner, teaching.leftover, want_grad, grad_scale
            )
        else:
            flags |= _bad_rows(t).to(_FLAG_DTYPE) * _BAD_TEACHER
            tz, _ = _transform(t.to(cdt), scale_t, cap_t, False)
            v_t = tz.shape[-1]
            if v_t > v_s and teaching.vocab_alignment == "pad":
                z = torch.cat([z, z.new_full((z.shape[0], v_t - v_s), NEG_INF)], -1)
            elif v_s > v_t and teaching.vocab_alignment == "pad":
                tz = torch.cat([tz, tz.new_full((tz.shape[0], v_s - v_t), NEG_INF)], -1)
            elif v_t != v_s:  # truncate (the other values were refused before the pass)
                VOCAB_TRUNCATE_MAX_DROPPED = tolerances.VOCAB_TRUNCATE_MAX_DROPPED
                keep = min(v_s, v_t)
                big, bit = (tz, _TRUNCATED_TEACHER) if v_t > v_s else (z, _TRUNCATED_STUDENT)
                t_big = (
                    1.0 if (big is z and mine) or (big is tz and own_temperature) else (temperature)
                )
                dropped = _truncated_mass(big / t_big if t_big != 1.0 else big, keep)
                flags |= (dropped > VOCAB_TRUNCATE_MAX_DROPPED).to(_FLAG_DTYPE) * bit
                z, tz = z[:, :keep], tz[:, :keep]
            value, g, f = kernel(z, tz, inner, want_grad, grad_scale)
        flags |= f
        if not want_grad:
            return value, None, flags
        g = g.to(cdt)
        if g.shape[-1] > v_s:  # the student's padding columns
            g = g[:, :v_s]
        elif g.shape[-1] < v_s:  # truncated student: its dropped ids get no gradient
            g = torch.cat([g, g.new_zeros(g.shape[0], v_s - g.shape[-1])], -1)
        if dz is not None:
            g = g * dz
        elif scale_s != 1.0:
            g = g * scale_s
        if mine and temperature != 1.0:
            g = g / temperature
        if out is not None:
            out.copy_(g)
            if out_lo is not None:
                out_lo.copy_(g - out.to(g.dtype))
            g = out
        return value, g, flags | _grad_flags(g)

    wrapped.parallel_chunks = getattr(kernel, "parallel_chunks", False)
    if hasattr(kernel, "backend"):
        wrapped.backend = kernel.backend
    return wrapped


def check_topk(teacher_topk: Any, leading: tuple[int, ...], vocab: int, device, spec):
    """``teacher_topk`` validated and flattened to a :class:`SparseTeacher` of (N, k).

    The errors of :mod:`amid_ref` (bad-input table): types, shapes, indices out of range or
    duplicated in a row, NaN or ``+inf`` log-probabilities, a padded slot (−1) whose
    log-probability is not ``-inf``, k > V, a mass above 1 beyond
    :data:`amid_ref.tolerances.SPARSE_MASS_TOL`, ``uniform`` with k = V and ε > 0, and a
    temperature ≠ 1 that would divide the teacher too. One O(N·k) pass, one device sync.
    """
    SPARSE_MASS_TOL = tolerances.SPARSE_MASS_TOL
    # The log-probabilities are used as given: no teacher-side transform applies (amid_ref).
    if spec.teaching.softcap[1] is not None:
        raise ValueError(sparse_transform_message("softcap"))
    if spec.teaching.logit_scale[1] != 1.0:
        raise ValueError(sparse_transform_message("logit_scale"))
    if not (isinstance(teacher_topk, tuple | list) and len(teacher_topk) == 2):
        raise TypeError(
            "teacher_topk must be a pair (indices, logprobs) of tensors of shape (..., k), "
            f"got {type(teacher_topk).__name__}"
        )
    indices, logprobs = teacher_topk
    if (
        not isinstance(indices, torch.Tensor)
        or indices.is_floating_point()
        or (indices.is_complex() or indices.dtype == torch.bool)
    ):
        raise TypeError("teacher_topk indices must be an integer tensor of shape (..., k)")
    if not isinstance(logprobs, torch.Tensor) or not logprobs.is_floating_point():
        raise TypeError("teacher_topk logprobs must be a floating-point tensor of shape (..., k)")
    if indices.shape != logprobs.shape or tuple(indices.shape[:-1]) != tuple(leading):
        raise ValueError(
            f"teacher_topk indices {tuple(indices.shape)} and logprobs "
            f"{tuple(logprobs.shape)} must both have shape {(*leading, 'k')} (the student's "
            "leading shape)"
        )
    if indices.device != device or logprobs.device != device:
        raise ValueError(f"teacher_topk is on {logprobs.device}, the student on {device}")
    k = indices.shape[-1] if indices.dim() else 0
    if k == 0:  # (zero rows with k ≥ 1 pass: an empty loss)
        raise ValueError("teacher_topk logprobs is empty")
    if k > vocab:
        raise ValueError(
            f"teacher_topk: k = {k} ids per row exceeds the vocabulary V = {vocab} of "
            "student_logits"
        )
    idx = indices.detach().reshape(-1, k).to(torch.int64)
    lp = logprobs.detach().reshape(-1, k)
    temperature = spec.objective.temperature
    if temperature != 1.0 and spec.teaching.temperature_applies_to == "both":
        raise ValueError(
            f"temperature={temperature} with teacher_topk: a sparse teacher's "
            "log-probabilities are used as given; pass temperature_applies_to='student' to "
            "divide the student's logits only (or give tempered log-probabilities)"
        )

    def row_of(flat_mask):  # the first offending row, as amid_ref names it (leading index)
        r = int(flat_mask.nonzero()[0, 0])
        return tuple(int(i) for i in np.unravel_index(r, leading)) if leading else ()

    if bool((torch.isnan(lp) | (lp == math.inf)).any()):
        raise ValueError("teacher_topk logprobs has NaN or +inf entries")
    pad = idx == -1
    if bool((pad & (lp != NEG_INF)).any()):
        raise ValueError(
            "teacher_topk: a padded slot (index -1) must have logprob -inf, got a finite one"
        )
    if bool((idx < -1).any()):
        raise ValueError(
            f"teacher_topk: index {int(idx[idx < -1][0])} out of range [0, V = {vocab}) "
            "(-1 marks a padded slot)"
        )
    beyond = idx >= vocab
    truncate = spec.teaching.vocab_alignment == "truncate"
    if bool(beyond.any()) and not truncate:
        raise ValueError(
            f"teacher_topk: index {int(idx[beyond][0])} out of range [0, V = {vocab}) of "
            "student_logits (vocab_alignment='truncate' drops the ids beyond the student's)"
        )
    ordered = torch.where(pad, -1 - torch.arange(k, device=idx.device), idx).sort(-1).values
    same = ordered[:, 1:] == ordered[:, :-1]
    if k > 1 and bool(same.any()):
        r, c = (int(i) for i in same.nonzero()[0])
        raise ValueError(
            f"teacher_topk: duplicate index {int(ordered[r, c])} in row {r} "
            "(the ids of a row must be distinct)"
        )
    lp64 = lp.to(torch.float64)
    if bool(beyond.any()):  # truncate: the ids beyond the student's vocabulary are dropped
        limit = tolerances.VOCAB_TRUNCATE_MAX_DROPPED
        dropped = torch.where(beyond, lp64, NEG_INF).logsumexp(-1).exp()
        if bool((dropped > limit).any()):
            r = row_of(dropped > limit)
            value = float(dropped.reshape(*leading)[r]) if leading else float(dropped[0])
            raise ValueError(truncate_dropped_message("teacher", value, r, limit))
        lp64 = torch.where(beyond, NEG_INF, lp64 - torch.log1p(-dropped)[:, None])
        idx = torch.where(beyond, -1, idx)
        pad = idx == -1
        lp = lp64.to(lp.dtype)
    # The mass may exceed 1 by SPARSE_MASS_TOL plus the rounding of the given log-probs to
    # their dtype: |Δp_i| ≤ p_i·|ℓ_i|·eps/2 (nothing in float64, amid_ref's own dtype, so
    # that float64 input meets amid_ref's comparisons exactly; ~1e-2 in bfloat16). The test
    # is amid_ref's, on the log-sum-exp in float64: lse > log1p(SPARSE_MASS_TOL), the same
    # float64 threshold (a test of expm1(lse) can differ from it within an ulp).
    lse = _logsumexp_as_reference(lp64)
    allowed = torch.full_like(lse, SPARSE_MASS_TOL)
    limit = torch.full_like(lse, log1p_tol())
    if lp.dtype != torch.float64:
        p_abs_l = torch.where(pad, 0.0, torch.exp(lp64) * lp64.abs()).sum(-1)
        allowed += 0.5 * torch.finfo(lp.dtype).eps * p_abs_l
        limit = torch.log1p(allowed)
    above = lse > limit
    if bool(above.any()):
        r = row_of(above)
        raise ValueError(
            mass_above_one_message(
                float(lse.exp()[int(np.ravel_multi_index(r, leading)) if leading else 0]), r
            )
        )
    # The mass rule of amid_ref._sparse, on the same float64 ε = −expm1(logsumexp ℓ_S): at
    # or below SPARSE_EPS_ROUNDING (or SPARSE_MASS_TOL when every id is kept) ε is rounding
    # of the sum: the row is renormalized and ε = 0 (a sum above 1 that passed lands here).
    # Log-probs in a narrower dtype than float64 widen the second threshold by their
    # rounding, as above (a top-V teacher in bfloat16 sums to 1 within ~1e-2 only).
    eps = -torch.expm1(lse)
    full = (~pad).sum(-1) == vocab
    rounding = ((eps <= SPARSE_EPS_ROUNDING) | (full & (eps <= allowed))) & (lse != NEG_INF)
    if bool(rounding.any()):
        lp64 = torch.where(rounding[:, None], lp64 - lse[:, None], lp64)
        lp = lp64.to(lp.dtype)
    eps = torch.where(rounding, 0.0, eps)
    if spec.teaching.leftover == "uniform":
        bad = full & (eps > 0.0)
        if bool(bad.any()):
            r = row_of(bad)
            value = float(eps[int(np.ravel_multi_index(r, leading)) if leading else 0])
            raise ValueError(leftover_needs_mass_message("uniform", r, value))
    if spec.teaching.leftover == "renormalize":
        bad = lse == NEG_INF
        if bool(bad.any()):
            raise ValueError(leftover_needs_mass_message("renormalize", row_of(bad)))
    return SparseTeacher(idx, lp, torch.log(eps)[:, None])


def vocab_mismatch_message(name_s: str, v_s: int, name_t: str, v_t: int) -> str:
    """The error for teacher and student vocabularies of different sizes under
    ``vocab_alignment="error"``: it names the parameter and its two remedies."""
    return (
        f"vocabulary sizes differ: {name_s} has V = {v_s}, {name_t} has V = {v_t}; pass "
        "vocab_alignment='pad' (the side with fewer ids gets -inf logits: probability "
        "exactly 0) or vocab_alignment='truncate' (the side with more ids is cut to the "
        "shared ids and renormalized; refused if the dropped ids carry probability), for "
        "one vocabulary padded to a larger size"
    )


def check_vocab_alignment(v_s: int, v_t: int, spec, name_s="student_logits",
                          name_t="teacher_logits") -> None:  # fmt: skip
    """Refuse V_t ≠ V_s under ``vocab_alignment="error"`` (the default)."""
    if v_s != v_t and spec.teaching.vocab_alignment == "error":
        raise ValueError(vocab_mismatch_message(name_s, v_s, name_t, v_t))


def prepare_teacher(student: torch.Tensor, teacher_logits, teacher_topk, spec):
    """The teacher flattened to rows: an (N, V_t) tensor (no grad) or a
    :class:`SparseTeacher`, after the checks every front-end shares."""
    leading = tuple(student.shape[:-1])
    check_teacher_source(teacher_logits, teacher_topk)
    if teacher_topk is not None:
        return check_topk(teacher_topk, leading, student.shape[-1], student.device, spec)
    check_float_tensor(teacher_logits, "teacher_logits")
    if tuple(teacher_logits.shape[:-1]) != leading:
        raise ValueError(
            f"shape mismatch: student_logits has shape {tuple(student.shape)}, teacher_logits "
            f"has {tuple(teacher_logits.shape)}"
        )
    if teacher_logits.device != student.device:
        raise ValueError(
            f"student_logits is on {student.device} but teacher_logits is on "
            f"{teacher_logits.device}"
        )
    check_vocab_alignment(student.shape[-1], teacher_logits.shape[-1], spec)
    return teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])


def teaching_fields(leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to):
    """The teacher-side keyword arguments of :meth:`amid_ref._specs.Objective.of`."""
    return {
        "leftover": leftover,
        "vocab_alignment": vocab_alignment,
        "softcap": softcap,
        "logit_scale": logit_scale,
        "temperature_applies_to": temperature_applies_to,
    }
