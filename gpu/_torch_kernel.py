r"""The torch backend of the AMiD engine: one chunk of rows in eager torch.

:func:`chunk` computes, for a chunk of rows, in float32 (float64 for float64 inputs), the
log-softmaxes, the log α-mixture, the per-row divergence and -- when the student needs a
gradient -- the gradient with respect to the student logits by the chain rule below. It is
the CPU path, the fallback of the Triton kernel, and the reference that kernel is written
against: every numerical form here has a float64 twin in :mod:`amid_ref` (named at each
function) and a streaming twin in :mod:`gpu._triton_kernel`.

Every row reduction goes through a reducer (``red``, :class:`LocalReduce` for
whole rows), so that :mod:`gpu._vocab_parallel` runs this same kernel on one slice of the
vocabulary, completing each reduction across the shards.

Gradient (Proposition 3.5 and its analogues). With ℓ_p, ℓ_q, ℓ_r the log-probabilities,
:math:`g_A = \partial D/\partial \log A` from the divergence kernel (:mod:`gpu._divergences`)
and :math:`w = \partial\log m/\partial\log q` (:mod:`gpu._mixture`):

.. math::

    \frac{\partial D}{\partial \log m} = g_r - r\textstyle\sum_x g_{r,x},\qquad
    g_q = [\text{direct } g_q] + w\odot\frac{\partial D}{\partial \log m},\qquad
    \frac{\partial D}{\partial s} = \frac1T\Big(g_q - q\textstyle\sum_x g_{q,x}\Big),

each projection :math:`g - w\sum g` formed with its dominant-entry form
(:meth:`LocalReduce.project_`); where the divergence's two gradients are powers of
r/q (χ², Amari, AB), :math:`g_q + w\,g_r` in closed form (:data:`gpu._divergences.GPU_PAIR`);
entries with w = 0 reach the student only through log Z (:func:`_normalizer_gradient`).
"""

from __future__ import annotations

import functools
import math

import torch

from gpu._divergences import GPU_DIVERGENCES, GPU_PAIR, GRAD_SUM, SUM_OF_TERMS, RowReduce
from gpu._elementwise import (
    any_,
    compiling,
    exp_of,
    expm1,
    known_exps,
    masked_fill_,
    note_exp,
    surely_above,
    where,
)
from gpu._flags import (
    _BAD_STUDENT,
    _BAD_TEACHER,
    _EMPTY_SUPPORT,
    _FLAG_DTYPE,
    _INF_GRAD,
    _INF_LOSS,
    _NAN_GRAD,
    _NAN_LOSS,
    _TEMPERATURE_STUDENT,
    _TEMPERATURE_TEACHER,
)
from gpu._mixture import _BETA_CLAMP, INF, NEG_INF, log_alpha_mean_and_weight

__all__ = ["LOCAL", "PAIR_LAM_MIN", "LocalReduce", "chunk", "small_lambda_pair"]


#: Entries per block of :func:`_max_and_index`'s first reduction.
_MAX_BLOCK = 256


def _max_and_index(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.max(x, -1, keepdim=True)``: the row maxima and the first index of each (a
    NaN counting as the maximum, as there). On eager CPU in two stages: the maxima of
    blocks of :data:`_MAX_BLOCK` entries (a vectorized ``amax``), then the first block that
    holds the row's maximum and the first index of it in that block. The values and
    indices are those of ``torch.max``, whose index-tracking loop is not vectorized on CPU
    (torch 2.13, float32, one thread: 250 µs against 76 µs for the two stages on 8 × 32000,
    1.0 ms against 0.14 ms on 8 × 128256)."""
    v = x.shape[-1]
    main = v - v % _MAX_BLOCK
    if x.device.type != "cpu" or compiling() or main == 0 or x.stride(-1) != 1:
        return tuple(torch.max(x, -1, keepdim=True))
    blocks = x[..., :main].unflatten(-1, (main // _MAX_BLOCK, _MAX_BLOCK)).amax(-1)
    if main < v:
        blocks = torch.cat([blocks, x[..., main:].amax(-1, keepdim=True)], -1)
    top, b = torch.max(blocks, -1, keepdim=True)
    start = b.mul_(_MAX_BLOCK)
    # the block's columns (the last block's clamped to V − 1: repeats after its entries)
    cols = (start + torch.arange(_MAX_BLOCK, device=x.device)).clamp_(max=v - 1)
    return top, start.add_(x.gather(-1, cols).argmax(-1, keepdim=True))


class LocalReduce(RowReduce):
    """The row reductions of a kernel over whole rows (the last dimension).

    Every reduction of :func:`gpu._torch_kernel.chunk` goes through one of these methods,
    so that :mod:`gpu._vocab_parallel` can run the same kernel on one slice of the
    vocabulary with a reducer that completes each reduction across the shards.
    """

    #: Whether the rows are whole (chunks may then run on parallel CPU workers).
    local = True

    def complete(self, *partials: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Complete per-row partial sums (keepdim, over this slice of the row): here they
        are whole."""
        return partials

    def sums(self, *xs: torch.Tensor, later: bool = False) -> tuple[torch.Tensor, ...]:
        """Row sums over the last dim, keepdim (booleans counted), one per argument.

        ``later=True``: the caller reads them only after the next reduction of the same kind
        or :meth:`flush` (a sharded reducer then sends them with that reduction's
        collective); here they are complete at once."""
        return tuple(x.sum(-1, keepdim=True, dtype=None if x.is_floating_point() else torch.int64)
                     for x in xs)  # fmt: skip

    def flush(self) -> None:
        """Complete the reductions asked for with ``later=True``: here there are none."""

    def prefetch_any(self, mask: torch.Tensor) -> None:
        """Announce a later :meth:`any` of ``mask`` (a sharded reducer sends it with the next
        collective); here nothing to do."""

    def settle(self):
        """Late row flags of the chunks run so far (a sharded reducer sends the gradient's
        flag bits once per pass, :func:`gpu._engine._run`): here none."""
        return None

    def note_max(self, x: torch.Tensor, top: torch.Tensor, index=None) -> None:
        """Record ``top`` (keepdim) as the row maxima of ``x`` and ``index`` (keepdim, from
        :meth:`row_maxima`) as where they are, known exactly by the caller:
        :meth:`project_` then spares their search (a collective when sharded)."""
        # the last two: the chunk's log q and log r (both projections read theirs)
        self._noted = [*getattr(self, "_noted", ())[-1:], (x, top, index)]

    def _known(self, x: torch.Tensor):
        for noted in getattr(self, "_noted", ()):
            if noted[0] is x:
                return noted
        return None

    def maxes(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Row maxima over the last dim (shape (...)), one per argument."""
        return tuple(x.amax(-1) for x in xs)

    def row_maxima(self, *xs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(max, index)`` per row (keepdim) for each argument; ``index`` is the position of
        the first maximum in this slice (``None`` where the reducer cannot tell it: sharded)."""
        return [_max_and_index(x) for x in xs]

    def others(self, *pairs, keep: list | None = None) -> tuple[torch.Tensor, ...]:
        r"""For each ``(x, index)``, ``x`` row-shifted (maximum 0) and ``index`` from
        :meth:`row_maxima`: :math:`S_o = \sum_{j \ne k} e^{x_j}` (keepdim), every entry
        but that one occurrence of the maximum (ties counted), formed without the 1 of
        the maximum (which would round S_o < eps away): ``e^x`` with that entry set to 0.
        ``keep`` (a list): each ``e^x`` is appended to it (the maximum's entry 1 again), for
        :func:`gpu._elementwise.note_exp` (a sharded reducer leaves it empty)."""
        sums = []
        for x, k in pairs:
            e = torch.exp(x)
            sums.append(e.scatter_(-1, k, 0.0).sum(-1, keepdim=True))
            if keep is not None:
                keep.append(e.scatter_(-1, k, 1.0))
        return tuple(sums)

    def row_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Complete a per-row partial sum (shape (n,)): here it is already whole. A sharded
        reducer completes it with its next sum or :meth:`flush` (read it after either)."""
        return x

    def any(self, mask: torch.Tensor) -> bool:
        return any_(mask)

    def flags(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def projects_(self, *pairs) -> tuple[torch.Tensor, ...]:
        """:meth:`project_` of each ``(g, log_w)`` (independent projections: a sharded reducer
        completes their sums in one collective)."""
        return tuple(self.project_(g, log_w) for g, log_w in pairs)

    def project_(self, g: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
        r"""In place: :math:`g_j - w_j\sum_x g_x` (``w = exp(log_w)``), without cancellation.

        For the row's largest weight :math:`w_k` (≈ 1 for a near one-hot distribution) the
        difference is formed as :math:`g_k(1 - w_k) - w_k\sum_{x\ne k} g_x` with
        :math:`1 - w_k = -\operatorname{expm1}(\log w_k)` (exact: the log-softmax keeps the
        largest entry exact); the other entries have :math:`w_j \le \tfrac12` and do not
        cancel. Twin of :func:`amid_ref._loss._project`.
        """
        known = self._known(log_w)
        if known is not None and known[2] is not None:
            _, lw_k, k = known
        else:
            lw_k, k = _max_and_index(log_w)
        g_k = g.gather(-1, k)
        others = g.scatter_(-1, k, 0.0).sum(-1, keepdim=True)
        dominant = g_k * torch.expm1(lw_k).neg_() - torch.exp(lw_k) * others
        out = g.sub_(exp_of(log_w, others + g_k))
        return out.scatter_(-1, k, dominant)


#: The reducer of whole rows.
LOCAL = LocalReduce()


def _log_ratio_to_mixture(
    lm: torch.Tensor,
    l_ref: torch.Tensor,
    u: torch.Tensor,
    lse_m: torch.Tensor,
    red: LocalReduce = LOCAL,
    sums: tuple[torch.Tensor, torch.Tensor] | None = None,
    negate: bool = False,
) -> torch.Tensor:
    r"""``log(r/ŝ)`` for the reference ``s = exp(l_ref)`` normalized to ``ŝ``, from
    ``u = log m − log s``: ``u − log1p(Σ ŝ·expm1(u))`` while that argument is in [−½, ½]
    (exact to a few ulps of itself), ``u − (logsumexp(lm) − log Σ s)`` otherwise
    (``lse_m`` = logsumexp(lm), the caller's; ``sums``, when given, those of
    :func:`_log_ratio_sums`); ``log(ŝ/r)`` with ``negate``. Twin of
    :func:`amid_ref._mixture._log_ratio_to_mixture`."""
    total, terms_sum = _log_ratio_sums(lm, l_ref, u, red) if sums is None else sums
    frac = terms_sum / total
    direct = lse_m - torch.log(total)
    log_z = where(frac.abs() <= 0.5, torch.log1p(frac.clamp(-0.5, 0.5)), direct)
    return log_z - u if negate else u - log_z


#: The product form s·expm1(u) of :func:`_log_ratio_sums` holds while e^u and s are normal
#: numbers of the dtype: (largest u, smallest log s) for float32 and float64.
_PRODUCT_RANGE = {torch.float32: (80.0, -87.0), torch.float64: (700.0, -708.0)}


def _log_ratio_sums(lm, l_ref, u, red: LocalReduce = LOCAL, later: bool = False):
    """``(Σ s, Σ ŝ·expm1(u))`` of :func:`_log_ratio_to_mixture` (neither needs log Z: with
    ``later=True`` a sharded reducer sends them with the log-normalizer's sum).

    Each term is ``s·expm1(u)`` while e^u and s are normal numbers (u ≤ 80 and log s ≥ −87
    in float32): u is formed directly, so the product is exact to a few ulps of itself,
    where ``e^(log m) − s`` would carry the rounding of log m (an ulp of |log m|, relative
    to the term). Elsewhere (a zero of s, u = ±inf, s subnormal) ``e^(log m) − s``.
    :func:`amid_ref._mixture._log_ratio_to_mixture` takes the product form for u ≤ 1 only:
    in float64 the ulp of |log m| that its difference carries stays far below the
    reference's tolerance."""
    top, low = _PRODUCT_RANGE.get(u.dtype, _PRODUCT_RANGE[torch.float32])
    s = exp_of(l_ref)
    # eager CPU: two reductions tell that every entry takes the product form (no mask formed)
    eager_cpu = u.device.type == "cpu" and not compiling() and u.numel() > 0
    if eager_cpu and bool((u.amax() <= top) & (l_ref.amin() >= low)):
        terms = expm1(u).mul_(s)  # (finite: u ≤ top, no NaN, which amax propagates)
    else:
        terms = expm1(u.clamp(max=top)).mul_(s)
        terms = where((u <= top) & (l_ref >= low), terms, torch.exp(lm) - s)
        terms = terms.nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
    return red.sums(s, terms, later=later)


#: The lift of :func:`_normalizer_gradient`'s fallback sum Σ e^(log(r ⊙ w) + B): r ⊙ w ≤ 1,
#: so its terms stay below e^B (no overflow), and the sum underflows only where
#: S = Σ r ⊙ w < e^−B times the dtype's least number (then K ≈ −S·q is 0 to the dtype).
_LIFT = {torch.float32: 60.0, torch.float64: 600.0}


def _normalizer_gradient(spec, lq, lr, w, u_q, log_z, red: LocalReduce = LOCAL):
    r"""K with :math:`P_q(K)` = ``r ⊙ w − q Σ r ⊙ w`` (∂ log Z/∂ s up to 1/T; ``None``
    where λ = 1: K = 0), projected by the caller with the rest of the gradient. For finite
    α, :math:`K_j = S\,q_j\operatorname{expm1}(x_j - L) = r_j w_j - q_j S`, exact to a
    few ulps of itself, with :math:`x = (1-\beta)u`, u = log m − log q,
    :math:`L = \log\sum_x q_x e^{x_x}` and :math:`S = \sum_x r_x w_x = e^{L}(1-\lambda)/Z`.
    L is ``log1p(Σ q·expm1(x))`` where that sum is at least −½ (0 at α = −1: K = 0
    exactly), else log Σ e^(log(r ⊙ w) + B) − B − log((1−λ)/Z) (:data:`_LIFT`; B costs
    S ulp(B) relative, 4e-6 in float32: the two sums are plain sums, one collective when
    sharded). At α = ±inf (r ⊙ w = w ⊙ q/Z), :math:`K_j = w_j r_j \bar A - (1-w_j) q_j S`
    with the positive sums :math:`S = \sum_x w_x r_x`, :math:`\bar A = \sum_x (1-w_x) q_x`
    (``r ⊙ w − q``, projected, cancelled where Σ g_r is large). Twin of
    :func:`amid_ref._loss._normalizer_gradient`.

    Returns a function that forms K once its row sums are complete: its sums are asked
    ``later`` (:meth:`LocalReduce.sums`), so call it after the reducer's next sum or
    :meth:`LocalReduce.flush` (a sharded reducer sends them with that collective). For
    finite α, given a list, it appends the rows (keepdim) whose L took the ``log1p`` form.
    """
    objective = spec.objective
    if objective.lam == 1.0:  # w = 0: r does not depend on the student
        return None
    q_none = torch.isneginf(lq)
    if math.isinf(objective.alpha):
        # r ⊙ w = w ⊙ q/Z (m = q wherever w > 0): K = w r Ā − (1 − w) q S, S = Σ w r and
        # Ā = Σ (1 − w) q sums of positive terms (r ⊙ w − q, projected, cancelled)
        eq, er = exp_of(lq), exp_of(lr)
        er.mul_(w)
        held, left = red.sums(er, (1.0 - w).mul_(eq), later=True)

        def finish_inf() -> torch.Tensor:
            k = er.mul_(left).sub_((1.0 - w).mul_(eq).mul_(held))
            return masked_fill_(k, q_none, 0.0).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)

        return finish_inf
    beta = max(-_BETA_CLAMP, min(_BETA_CLAMP, (1.0 - objective.alpha) / 2.0))  # as the mixture
    x = masked_fill_(u_q * (1.0 - beta), q_none, 0.0)
    # q·expm1(x), and for x > 1 in the log domain (e^(x + log q) = r ⊙ w·Z/(1−λ))
    eq = exp_of(lq)
    terms = where(x <= 1.0, expm1(x.clamp(max=1.0)) * eq, torch.exp(x + lq) - eq)
    terms = masked_fill_(terms, q_none, 0.0).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
    log_c = math.log1p(-objective.lam) - log_z  # log((1−λ)/Z), per row
    lift = _LIFT.get(lq.dtype, _LIFT[torch.float32])
    lifted = masked_fill_(torch.exp(x + lq + (log_c + lift)), q_none, 0.0).nan_to_num_(nan=0.0)
    total, lifted = red.sums(terms, lifted, later=True)
    del terms

    def finish(near: list | None = None) -> torch.Tensor:
        near_rows = total >= -0.5
        if near is not None:  # the rows whose L takes the log1p form (keepdim)
            near.append(near_rows)
        log_e = where(near_rows, torch.log1p(total.clamp(min=-0.5)),
                      torch.log(lifted) - lift - log_c)  # fmt: skip
        log_s = log_c + log_e  # log S (≤ 0)
        y = x - log_e
        scale = torch.exp(log_s + lq)
        k = where(y <= 1.0, expm1(y.clamp(max=1.0)) * scale, torch.exp(y + log_s + lq) - scale)
        return masked_fill_(k, q_none, 0.0).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)

    return finish


def _scale_(s: torch.Tensor, t: torch.Tensor, inv_t: float, red: LocalReduce = LOCAL):
    """In place: the row-shifted logits ``s``, ``t`` (maximum 0) times 1/T; returns the
    numbers of entries of each row that left the dtype's range and became ``-inf`` (sums
    asked ``later``: read them after the next sum), for :func:`_scale_flags`. A factor
    beyond the dtype's range (T = 1e-300 in float32) keeps the maxima at 0 (not 0·inf)."""
    before = LOCAL.sums(torch.isneginf(s), torch.isneginf(t))
    for x in (s, t):
        if inv_t <= torch.finfo(x.dtype).max:
            x.mul_(inv_t)
        else:
            top = x == 0.0
            x.mul_(INF).masked_fill_(top, 0.0)
    after = LOCAL.sums(torch.isneginf(s), torch.isneginf(t))
    return red.sums(after[0] - before[0], after[1] - before[1], later=True)


def _scale_flags(lost) -> torch.Tensor:
    """The row flags ``_TEMPERATURE_STUDENT`` / ``_TEACHER`` where a finite entry left the
    dtype's range and became ``-inf`` (``lost`` from :func:`_scale_`: the support would
    change, :func:`amid_ref._validation.temperature_overflow_message`)."""
    lost_s = (lost[0] != 0)[..., 0].to(_FLAG_DTYPE) * _TEMPERATURE_STUDENT
    return lost_s | (lost[1] != 0)[..., 0].to(_FLAG_DTYPE) * _TEMPERATURE_TEACHER


def _log_normalizer(x: torch.Tensor, red: LocalReduce = LOCAL, maxima=None):
    """``(shifted, log_z, corr, index, e)`` along the last dim (keepdim): ``shifted =
    x − shift`` (a new tensor) with ``shift`` the row maximum M (0 for rows of only
    ``-inf``), ``log_z = logsumexp(x) = shift + corr`` with ``corr = log1p(S_o)``
    (:meth:`LocalReduce.others`), where the maximum is (``index``), so that
    ``shifted − corr`` keeps the largest entry exact (:func:`_normalize_`), and
    ``e = e^shifted`` where the reducer keeps it (whole rows; else ``None``). ``maxima``:
    ``(top, index)`` of :meth:`LocalReduce.row_maxima` when the caller has them."""
    ((top, index),) = red.row_maxima(x) if maxima is None else (maxima,)
    shift = top.masked_fill(torch.isneginf(top), 0.0)
    shifted = x - shift
    keep: list = []
    (others,) = red.others((shifted, index), keep=keep)
    corr = others.log1p_().masked_fill_(torch.isneginf(top), NEG_INF)
    return shifted, shift + corr, corr, index, keep[0] if keep else None


def _normalize_(shifted, corr, index, red: LocalReduce = LOCAL, e=None):
    """``shifted − corr`` in place (the row maximum noted for the reducer: ``−corr``
    exactly, at ``index``; and its exponential, ``e ⊙ e^(−corr)``, where ``e`` is given)."""
    out = shifted.sub_(corr)
    red.note_max(out, corr.neg(), index)
    if e is not None:
        note_exp(out, e, torch.exp(-corr))
    return out


def _chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    spec,
    want_grad: bool,
    grad_scale: float,
    out: torch.Tensor | None = None,
    branchless: bool = False,
    red: LocalReduce = LOCAL,
    out_lo: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Loss per row, gradient w.r.t. the student logits (compute dtype) and row flags.

    When ``out`` is given the scaled gradient is written into it (cast to its dtype) and
    ``out`` is returned in place of a new tensor; ``out`` may be ``s`` itself (the logits
    are read before the gradient is written). ``out_lo`` (with ``out``, same dtype) receives
    the rounding residual ``grad − out``, also cast: ``out + out_lo`` carries the gradient
    to twice the dtype's precision (the fused loss's ``G·W`` needs it; ``out_lo`` may be
    ``t`` itself). ``branchless=True`` (the compiled
    kernel) takes no branch on tensor values: terms that are zero for a chunk are formed
    anyway, with the same results, and the gradient's row flags (:func:`_grad_flags`, which
    branches) are left to the caller. ``red`` completes the row reductions (whole rows by
    default; the vocabulary-parallel loss passes one that all-reduces over the shards).
    Eager on whole rows, q, p and r are formed from the exponentials of their
    log-normalizers' sums (:func:`gpu._elementwise.known_exps`), not by ``exp`` passes.
    """
    if red is LOCAL:  # a reducer of its own: it notes this chunk's row maxima
        red = LocalReduce()
    objective = spec.objective
    inv_t = 1.0 / objective.temperature
    s = s.to(spec.cdtype)
    t = t.to(spec.cdtype)
    # Shift by the row maximum before scaling: scaling logits with a large common offset
    # first rounds them at ulp(offset/T) (2e-3 relative in fp32 at offset 2e4, T = 0.3).
    (top_s, k_s), (top_t, k_t) = red.row_maxima(s, t)
    s = s - top_s
    t = t - top_t
    lost = None
    if inv_t != 1.0:
        lost = _scale_(s, t, inv_t, red)
    # Not torch.log_softmax: measured on CPU in float32 at V = 128256 on rows N(0, 2) −
    # 1.1·log(rank), log_softmax is off by up to 3e-5 in log q where this form is off by
    # 1e-6 (gpu.accuracy.kernel_accuracy measures both).
    # log q = (s − M) − log1p(S_o), S_o the other entries' sum (LocalReduce.others): the
    # largest entry's log-probability stays exact where log(1 + S_o) would round it to 0
    # (a confident row, S_o < eps), and with it 1 − q_k, which the gradient's projection
    # multiplies by terms up to 1e14 there. Twin of amid_ref._special.log_normalize.
    # On whole rows e^(s − M) is kept: q = e^(s − M)·e^(−log1p(S_o)) without an exp pass
    # (gpu._elementwise.known_exps), and p likewise.
    kept: list = []
    corr_s, corr_t = (o.log1p_() for o in red.others((s, k_s), (t, k_t), keep=kept))
    if lost is not None:  # complete now (sent with the sum above when sharded)
        lost = _scale_flags(lost)
    # the row maximum of log q noted, exactly, and where (log p's is not: the reducer keeps
    # the last two noted, log q's and log r's)
    lq = _normalize_(s, corr_s, k_s, red, kept[0] if kept else None)
    lp = t.sub_(corr_t)
    if kept:
        note_exp(lp, kept[1], torch.exp(-corr_t))
    del kept
    del s, t
    # A row with a NaN or +inf logit, or with only -inf logits, has a row maximum that is
    # not finite (torch.max propagates NaN; a sharded reducer sends NaN as +inf).
    flags = (~torch.isfinite(top_s[..., 0])).to(_FLAG_DTYPE) * _BAD_STUDENT
    flags |= (~torch.isfinite(top_t[..., 0])).to(_FLAG_DTYPE) * _BAD_TEACHER
    if lost is not None:
        flags |= lost
    through_r = want_grad and not objective.detach_assistant
    first, second = objective.first, objective.second
    uses_r = "r" in (first, second)
    ratios: list | None = [] if uses_r else None
    # D(r‖q) and D(q‖r) of the divergences whose two gradients are powers of r/q: their
    # sum is formed in closed form where w > ½ (below), which needs w̄ = 1 − w exactly.
    paired = through_r and "q" in (first, second) and objective.divergence in GRAD_SUM
    weight_bar: list | None = [] if paired else None
    lm, w = log_alpha_mean_and_weight(
        lp, lq, objective.alpha, objective.lam,
        want_weight=through_r, ratios=ratios, weight_bar=weight_bar,
    )  # fmt: skip
    if through_r and not branchless and not red.local:
        red.prefetch_any(w == 0)  # sent with the row maxima of log m
    (maxima_m,) = red.row_maxima(lm)
    log_ratio = None
    if uses_r:  # log(first/second) from the mixture's own ratio to p or q
        other = second if first == "r" else first
        l_ref, u = (lp, ratios[0]) if other == "p" else (lq, ratios[1])
        # its sums need no log Z: sent with the log-normalizer's (one collective)
        ratio_sums = _log_ratio_sums(lm, l_ref, u, red, later=True)
    # (log m − M, log Z, log1p(S_o)); log Z = −inf: the assistant's support is empty
    shifted, lz, corr, k_m, e_m = _log_normalizer(lm, red, maxima_m)
    flags |= (lz[..., 0] == NEG_INF).to(_FLAG_DTYPE) * _EMPTY_SUPPORT
    if uses_r:
        log_ratio = _log_ratio_to_mixture(lm, l_ref, u, lz, red, ratio_sums,
                                          negate=first != "r")  # fmt: skip
        del ratio_sums
    u_q = ratios[1] if through_r else None  # log m − log q, for ∂ log Z/∂ s below
    del ratios
    # log r = (log m − M) − log1p(S_o): the largest entry exact
    lr = _normalize_(shifted, corr, k_m, red, e_m)
    log_z = lz
    del lm, lz, shifted, corr, e_m
    dist = {"p": lp, "q": lq, "r": lr}
    need = {"p": False, "q": want_grad, "r": through_r}
    kernel = GPU_DIVERGENCES[objective.divergence]
    args = (dist[first], dist[second], objective.params, need[first], need[second], log_ratio)
    extra = {} if objective.divergence in SUM_OF_TERMS else {"reduce": red}  # Rényi reduces itself
    pair = None
    if paired:
        value, g_first, g_second, g_sum = kernel(*args, want_sum=True)
        # g_q + w·g_r in closed form (its terms, powers of r/q, may cancel): D.pair
        weights = (w, *weight_bar)
        direct = "a" if first == "q" else "b"
        pair = GPU_PAIR[objective.divergence](*args[:3], log_ratio, weights, direct,
                                              g_first, g_second, g_sum)  # fmt: skip
        del weights, weight_bar, g_sum
    else:
        value, g_first, g_second = kernel(*args, **extra)
    if objective.divergence in SUM_OF_TERMS:  # a partial sum over this slice of the vocabulary
        value = red.row_sum(value)  # sharded: completed with the next sum (read after flush)
    del log_ratio, args
    if not want_grad:
        red.flush()
        return value, None, flags | torch.isnan(value).to(_FLAG_DTYPE) * _NAN_LOSS
    g = {"p": None, "q": None, "r": None}
    g[first], g[second] = g_first, g_second
    g_q = g["q"]
    through_z = None
    if through_r:
        g_r = g["r"]
        if math.isinf(objective.alpha) and 0.0 < objective.lam < 1.0:  # (else r is q or p)
            g_q, through_z = _through_r_exact(spec, g_q, pair, g_r, w, lq, lr, u_q, log_z, red)
        elif small_lambda_pair(objective):  # (pair is the closed form)
            g_q, through_z = _through_r_paired(spec, pair, g_r, w, lq, lr, u_q, log_z, red,
                                               branchless)  # fmt: skip
        elif pair is not None:
            g_q, through_z = _through_r(spec, None, g_r, w, lq, lr, u_q, log_z, red, branchless,
                                        pair=pair)  # fmt: skip
        else:
            g_q, through_z = _through_r(spec, g_q, g_r, w, lq, lr, u_q, log_z, red, branchless)
        del w, g_r, u_q, pair
        if through_z is not None:  # P_q(g_q) − Σ g_A·P_q(K), as one projection
            g_q = g_q.sub_(through_z)
            del through_z
    if g_q is None:  # D(p‖r) or D(r‖p) with the assistant detached: no path to the student
        red.flush()
        flags |= torch.isnan(value).to(_FLAG_DTYPE) * _NAN_LOSS
        flags |= torch.isinf(value).to(_FLAG_DTYPE) * _INF_LOSS
        if out is not None:
            if out_lo is not None:
                out_lo.zero_()
            return value, out.zero_(), flags
        return value, torch.zeros_like(lq), flags
    grad = red.project_(g_q, lq)
    red.flush()  # the loss's partial sum, when sharded, went with a sum above
    flags |= torch.isnan(value).to(_FLAG_DTYPE) * _NAN_LOSS
    flags |= torch.isinf(value).to(_FLAG_DTYPE) * _INF_LOSS
    if out is not None and out_lo is not None:
        grad = grad.mul_(grad_scale * inv_t)
        out.copy_(grad)
        out_lo.copy_(grad.sub_(out.to(grad.dtype)))
        grad = out
    elif out is not None:  # scale and cast in one pass, straight into the gradient buffer
        grad = torch.mul(grad, grad_scale * inv_t, out=out)
    else:
        grad = grad.mul_(grad_scale * inv_t)
    if branchless:  # the compiled kernel's caller flags the gradient once it is scaled
        return value, grad, red.flags(flags)
    return value, grad, red.flags(flags | _grad_flags(grad))


#: λ below which the closed-form pairs take :func:`_through_r_paired`'s near-row form. The
#: projected form keeps ε/λ of its term w ⊙ r·Σ g_r on the rows where r ⊙ w is near a
#: multiple of q (λ ≈ 0): ≤ 1.2e-4 of it in float32 from here on, within the gpu rows; below,
#: up to 5e10× the float32 bound at λ = 1e-15 (AB(−1.6, −2.9) D(q‖r), rows 1e-2 apart).
#: The Triton kernel takes the same form below it (its passes' H_MODE 3).
PAIR_LAM_MIN = 1e-3


def small_lambda_pair(objective) -> bool:
    """Whether ``objective`` takes the closed-form pair's near-row form
    (:func:`_through_r_paired`; the Triton kernel's H_MODE 3): D(q‖r) or D(r‖q) of a
    divergence with a closed-form pair (the AB family and χ²), the assistant live, at
    0 < λ < :data:`PAIR_LAM_MIN`, finite α (at α = ±inf :func:`_through_r_exact`)."""
    return (
        0.0 < objective.lam < PAIR_LAM_MIN
        and not math.isinf(objective.alpha)
        and not objective.detach_assistant
        and {objective.first, objective.second} == {"q", "r"}
        and objective.divergence in GRAD_SUM
    )


def _through_r_exact(spec, g_q, pair, g_r, w, lq, lr, u_q, log_z, red):
    r"""``(g_q + w ⊙ g_r − (Σ g_r)·K, None)`` of :func:`chunk` at α = ±inf, where K
    (:func:`_normalizer_gradient`) is exact on every row: P_q of it is g_q + w·P_r(g_r),
    whose projected form cancelled (``pair`` in place of g_q + w ⊙ g_r where given). At
    α = −inf, AB(−1.6, −2.9) D(p‖r) on logits ±100 (Σ g_r = 1e170) was 8× its whole
    gradient off in float64. Twin of :func:`amid_ref._loss.grad_of` and of the Triton
    kernel's ``_student_direction`` at α = ±inf; Σ g_r and K's two sums in one collective
    when sharded."""
    (g_sum,) = red.sums(g_r, later=True)
    finish = _normalizer_gradient(spec, lq, lr, w, u_q, log_z, red)
    if pair is not None:
        direct = pair
    else:  # w ⊙ g_r, 0 where w = 0 (g_r may be infinite there)
        w_g = where(w == 0, 0.0, w * g_r)
        direct = w_g if g_q is None else g_q.add_(w_g)
    red.flush()
    return direct.sub_(where(g_sum != 0, finish().mul_(g_sum), 0.0)), None


def _through_r_paired(spec, pair, g_r, w, lq, lr, u_q, log_z, red, branchless):
    r"""``(g_q + w·P_r(g_r), through_z)`` of :func:`chunk` from the closed-form pair
    g_q + w·g_r (D(q‖r) and D(r‖q) of the AB family and χ²): ``pair − w ⊙ r·Σ g_r``, the
    silent entries' term apart (:func:`_through_r`), except on the rows where r ⊙ w is near
    a multiple of q (K's L in its ``log1p`` form: λ ≈ 0 gives r ≈ q and w ≈ 1). There
    P_q(w ⊙ r·Σ g_r) cancels (at λ = 1e-15 it keeps ε/λ of itself, 2.5e6× the float64 bound
    on AB(−1.6, −2.9) D(q‖r) on rows 1e-5 apart), so those rows take
    ``pair − (Σ g_r)·K`` (the same after P_q), K's entries exact to a few ulps. Elsewhere
    (p and q apart) the projected form stays: near a one-hot r its dominant entry is
    exact, where (Σ g_r)·K and the pair would cancel. Twin of
    :func:`amid_ref._loss.grad_of`. Σ g_r and K's two row sums go with P_r's sums."""
    (g_sum,) = red.sums(g_r, later=True)
    finish = _normalizer_gradient(spec, lq, lr, w, u_q, log_z, red)  # (λ < 1: not None)
    near: list = []
    formed: list = []

    def k_once() -> torch.Tensor:  # K formed once (the silent entries' term reads it too)
        if not formed:
            formed.append(finish(near))
        return formed[0]

    g_q, through_z = _through_r(spec, None, g_r, w, lq, lr, u_q, log_z, red, branchless,
                                pair=pair, k_fn=k_once)  # fmt: skip
    red.flush()  # (its sums went with _through_r's projection when sharded)
    k_all = k_once()
    near = near[0]
    if not branchless and not any_(near):
        return g_q, through_z
    own = pair.sub_(where(g_sum != 0, k_all * g_sum, 0.0))
    g_q = where(near, own, g_q)
    if through_z is not None:  # on the near rows Σ g_r·K holds the silent entries too
        through_z = where(near, 0.0, through_z)
    return g_q, through_z


def _through_r(spec, g_q, g_r, w, lq, lr, u_q, log_z, red, branchless, pair=None, k_fn=None):
    """``(g_q + w·P_r(g_r), through_z)`` of :func:`chunk` for a divergence whose gradients
    are formed apart: entries with w = 0 (zeros of q or of m) reach the student only
    through log Z, P_q(w ⊙ P_r(g_A)) = −(Σ g_A)·K with K = P_q(r ⊙ w) formed exactly, so
    that their (possibly huge, ~1/(a_(a_+b_))) terms cancel analytically (amid_ref._loss);
    ``through_z`` is that term (``None`` where no entry is silent), for the caller to
    subtract before the projection P_q. With ``pair`` (g_q + w·g_r in closed form, not
    written), ``pair − w·(g_r − P_r(g_r))`` in its place; ``k_fn``, K's function when the
    caller has asked for it already (:func:`_normalizer_gradient`, not written to)."""
    # Whole rows on eager CPU: a reduction tells that no entry is silent (no mask formed)
    none_silent = red.local and not branchless and surely_above(w, 0.0)
    silent = None if none_silent else w == 0
    # Compiled: no data-dependent branch (a graph break); the term is 0 when no entry is
    # silent (g_silent = 0; the where keeps a non-finite K from turning it NaN). Σ g_r over
    # them and K's two row sums go with P_r's sums (one collective when sharded), K formed
    # after it
    k_z = g_silent = through_z = None
    if not none_silent and (branchless or red.any(silent)):
        (g_silent,) = red.sums(where(silent, g_r, 0.0), later=True)
        g_r = masked_fill_(g_r, silent, 0.0)
        k_z = k_fn if k_fn is not None else _normalizer_gradient(spec, lq, lr, w, u_q, log_z, red)
    (g_logm,) = red.projects_((g_r.clone() if pair is not None else g_r, lr))
    if g_silent is not None:
        red.flush()
        k_z = torch.zeros_like(lq) if k_z is None else k_z()
        through_z = where(g_silent != 0, k_z * g_silent, 0.0)
    if pair is not None:  # pair − w·(g_r − P_r(g_r)) = g_q + w·P_r(g_r)
        return pair - g_r.sub_(g_logm).mul_(w), through_z
    g_logm.mul_(w)
    return (g_logm if g_q is None else g_q.add_(g_logm)), through_z


@functools.wraps(_chunk)
def chunk(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    # _chunk with the exponentials it forms for its log-normalizers reused
    # (gpu._elementwise.known_exps; eager only)
    if compiling():
        return _chunk(*args, **kwargs)
    with known_exps():
        return _chunk(*args, **kwargs)


#: The engine may share this kernel's chunks among CPU worker threads.
chunk.parallel_chunks = True


def _grad_flags(g: torch.Tensor) -> torch.Tensor:
    """Row flags of a finished gradient chunk: ``_NAN_GRAD`` (a kernel bug) or
    ``_INF_GRAD`` (an entry beyond the range of the gradient's dtype, e.g. float16)."""
    # A row sum is NaN or ±inf when an entry is (or, rarely, when finite entries overflow
    # it): one reduction; the rows it suspects are then looked at entry by entry.
    suspect = ~torch.isfinite(
        g.sum(-1, dtype=torch.float64 if g.dtype == torch.float64 else torch.float32)
    )
    flags = torch.zeros(suspect.shape, dtype=_FLAG_DTYPE, device=g.device)
    bad = suspect & ~torch.isfinite(g).all(-1) if bool(suspect.any()) else suspect
    if bool(bad.any()):  # rare: tell NaN from overflow
        flags |= torch.isnan(g).any(-1).to(_FLAG_DTYPE) * _NAN_GRAD
        flags |= (bad & ~torch.isnan(g).any(-1)).to(_FLAG_DTYPE) * _INF_GRAD
    return flags
