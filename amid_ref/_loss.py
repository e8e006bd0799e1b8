"""The AMiD objective and its gradient with respect to the student logits (float64)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from amid_ref._divergences import get_divergence
from amid_ref._mixture import (
    _alpha_mixture_weights,
    _log_alpha_mean_ratios,
    _log_ratio_to_mixture,
)
from amid_ref._sparse import (
    SPARSE_EPS_ROUNDING,
    check_teacher_source,
    check_teacher_topk,
    leftover_needs_mass_message,
    log1p_tol,
    mass_above_one_message,
    sparse_transform_message,
    truncate_dropped_message,
    vocab_mismatch_message,
)
from amid_ref._special import log_normalize
from amid_ref._specs import ORDERS, Objective
from amid_ref._validation import (
    as_float_array,
    check_same_shape,
    check_vocabulary_axis,
    temperature_overflow_message,
)
from amid_ref.tolerances import SPARSE_MASS_TOL, VOCAB_TRUNCATE_MAX_DROPPED

__all__ = ["ORDERS", "Objective", "amid_grad", "amid_loss", "grad_of", "loss_of"]


def _check_logits(x, name: str) -> np.ndarray:
    """Checked float64 logits of shape (..., V), V ≥ 1; zero rows (shape (0, V), ...) pass
    and give empty results, as in :mod:`gpu`."""
    arr = as_float_array(x, name, allow_neg_inf=True, allow_empty=True)
    check_vocabulary_axis(arr.shape, name)
    dead = np.all(np.isneginf(arr), axis=-1)
    if dead.any():
        row = tuple(int(i) for i in np.argwhere(dead)[0]) if arr.ndim > 1 else ()
        raise ValueError(f"{name} has a row whose logits are all -inf (row {row}): no distribution")
    return arr


def _tempered(x: np.ndarray, temperature: float, name: str) -> np.ndarray:
    """(x − max)/T of checked logits (the argument of their log-softmax); offsets beyond
    float64 are refused (:func:`amid_ref._validation.temperature_overflow_message`)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = (x - x.max(axis=-1, keepdims=True)) / temperature
    lost = np.isfinite(x) & ~np.isfinite(y)
    if lost.any():
        row = tuple(int(i) for i in np.argwhere(lost)[0][:-1])
        raise ValueError(temperature_overflow_message(name, temperature, f"row {row}"))
    return y


def _transform(x: np.ndarray, scale: float, cap: float | None) -> tuple[np.ndarray, np.ndarray]:
    r"""Logit scale then softcap, :math:`z \mapsto c\tanh(\kappa z / c)`, and its derivative
    :math:`\kappa\,(1 - \tanh^2(\kappa z/c))`; ``-inf`` entries (masked tokens) stay ``-inf``
    with derivative 0."""
    masked = np.isneginf(x)
    with np.errstate(invalid="ignore"):
        y = x * scale if scale != 1.0 else x.copy()
        if cap is None:
            return y, np.where(masked, 0.0, scale)
        th = np.tanh(y / cap)
        out = np.where(masked, -np.inf, cap * th)
        # 1 − tanh² without cancellation where |tanh| → 1: 1/cosh² (4e^(−2|u|) for large |u|)
        u = np.abs(np.where(masked, 0.0, y / cap))
        sech2 = np.where(u < 20.0, 1.0 / np.cosh(np.minimum(u, 20.0)) ** 2, 4.0 * np.exp(-2 * u))
        return out, np.where(masked, 0.0, scale * sech2)


def _logsumexp(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """logsumexp along the last axis (keepdims) of the entries where ``mask``; −inf if none."""
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return log_normalize(x)[1]


class _Front:
    """The student and teacher log-probabilities the core sees, and the way back from the
    core's gradient (w.r.t. its student logits) to the caller's student logits."""

    def __init__(self, lq, lp, back):
        self.lq, self.lp, self.back = lq, lp, back


def _front(objective: Objective, student_logits, teacher_logits, teacher_topk) -> _Front:
    """Apply the teacher's form: logit transforms, temperature, vocabulary alignment and the
    sparse teacher's leftover policy (MATH.md), to the arguments of the core."""
    s = _check_logits(student_logits, "student_logits")
    check_teacher_source(teacher_logits, teacher_topk)
    (scale_s, scale_t), (cap_s, cap_t) = objective.logit_scale, objective.softcap
    temperature = objective.temperature
    s_x, ds = _transform(s, scale_s, cap_s)
    v_s = s.shape[-1]
    if teacher_topk is not None:
        objective.check_sparse_temperature()
        if cap_t is not None:
            raise ValueError(sparse_transform_message("softcap"))
        if scale_t != 1.0:
            raise ValueError(sparse_transform_message("logit_scale"))
        z = _tempered(s_x, temperature, "student_logits")
        sparse = check_teacher_topk(teacher_topk, s.shape, objective.vocab_alignment)
        lq = log_normalize(z)[0]
        lq_core, lp_core, to_dense = _sparse_pair(objective.leftover, sparse, lq)

        def back(g):
            return to_dense(g) * ds / temperature

        return _Front(lq_core, lp_core, back)
    t = _check_logits(teacher_logits, "teacher_logits")
    if s.shape[:-1] != t.shape[:-1]:
        check_same_shape(s, t, "student_logits", "teacher_logits")
    t_x, _ = _transform(t, scale_t, cap_t)
    t_temperature = temperature if objective.temperature_applies_to == "both" else 1.0
    z = _tempered(s_x, temperature, "student_logits")
    y = _tempered(t_x, t_temperature, "teacher_logits")
    v_t = t.shape[-1]
    shared = min(v_s, v_t)
    if v_s != v_t:
        if objective.vocab_alignment == "error":
            raise ValueError(vocab_mismatch_message(v_s, v_t))
        if objective.vocab_alignment == "pad":
            width = max(v_s, v_t)
            z = _pad_neg_inf(z, width)
            y = _pad_neg_inf(y, width)
        else:
            z = _truncate(z, shared, "student")
            y = _truncate(y, shared, "teacher")

    def back_dense(g):
        g = g[..., :v_s]
        if g.shape[-1] < v_s:  # truncated student: the cut ids do not reach the loss
            g = np.concatenate([g, np.zeros((*g.shape[:-1], v_s - g.shape[-1]))], axis=-1)
        return g * ds / temperature

    return _Front(z, y, back_dense)


def _pad_neg_inf(x: np.ndarray, width: int) -> np.ndarray:
    extra = width - x.shape[-1]
    if extra == 0:
        return x
    return np.concatenate([x, np.full((*x.shape[:-1], extra), -np.inf)], axis=-1)


def _truncate(x: np.ndarray, shared: int, side: str) -> np.ndarray:
    """The first ``shared`` entries of the (tempered) logits ``x``, after checking that the
    probability of the others is at most VOCAB_TRUNCATE_MAX_DROPPED."""
    if x.shape[-1] == shared:
        return x
    total = _logsumexp(x)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dropped = np.exp(_logsumexp(x[..., shared:]) - total)[..., 0]
    over = dropped > VOCAB_TRUNCATE_MAX_DROPPED
    if over.any():
        row = tuple(int(i) for i in np.argwhere(over)[0]) if over.ndim else ()
        raise ValueError(
            truncate_dropped_message(side, float(dropped[row]), row, VOCAB_TRUNCATE_MAX_DROPPED)
        )
    kept = x[..., :shared]
    if np.all(np.isneginf(kept), axis=-1).any():  # pragma: no cover - dropped mass would be 1
        raise ValueError(f"vocab_alignment='truncate' leaves a {side} row with no mass")
    return kept


def _sparse_mass(leftover: str, sparse) -> tuple[np.ndarray, np.ndarray]:
    """The kept log-probabilities after the mass rule of :mod:`amid_ref._sparse` and the
    leftover ε per row (shape (..., 1)), in float64."""
    lp = sparse.logprobs
    vocab = sparse.vocab
    if sparse.dropped.any():  # truncate: the ids beyond the student's vocabulary
        dropped = np.exp(_logsumexp(sparse.dropped_logprobs))
        over = dropped[..., 0] > VOCAB_TRUNCATE_MAX_DROPPED
        if over.any():
            row = tuple(int(i) for i in np.argwhere(over)[0])
            raise ValueError(
                truncate_dropped_message(
                    "teacher", float(dropped[..., 0][row]), row, VOCAB_TRUNCATE_MAX_DROPPED
                )
            )
        with np.errstate(invalid="ignore"):
            lp = lp - np.log1p(-dropped)
    lse = _logsumexp(lp)
    above = lse[..., 0] > log1p_tol()
    if above.any():
        row = tuple(int(i) for i in np.argwhere(above)[0])
        raise ValueError(mass_above_one_message(float(np.exp(lse[..., 0][row])), row))
    with np.errstate(invalid="ignore", over="ignore"):
        eps = -np.expm1(lse)
    full = (sparse.counts == vocab)[..., None]
    rounding = (eps <= SPARSE_EPS_ROUNDING) | (full & (eps <= SPARSE_MASS_TOL))
    rounding &= ~np.isneginf(lse)
    lp = np.where(rounding, lp - np.where(rounding, lse, 0.0), lp)
    eps = np.where(rounding, 0.0, eps)
    if leftover == "uniform":
        bad = full & (eps > 0)
        if bad.any():
            row = tuple(int(i) for i in np.argwhere(bad[..., 0])[0])
            raise ValueError(leftover_needs_mass_message("uniform", row, float(eps[row][0])))
    if leftover == "renormalize":
        bad = np.isneginf(lse[..., 0])
        if bad.any():
            row = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(leftover_needs_mass_message("renormalize", row))
    return lp, eps


def _sparse_pair(leftover: str, sparse, lq: np.ndarray):
    r"""The pair ``(log q̂, log p̂)`` of a leftover policy (MATH.md table) and the map from
    the core's gradient back to the dense student logits.

    ``bucket``: k + 1 categories (the k slots, padded ones −inf on both sides, then ★) with
    :math:`\log q_\star = \operatorname{logsumexp}_{j \notin S} \log q_j`; since q̂ is the
    softmax of the coarse logits :math:`(z_S, \operatorname{logsumexp}_{j\notin S} z_j)`,
    the gradient of an id off S is ★'s times :math:`q_j / q_\star`.
    ``renormalize``, ``uniform``: p̂ written densely over V, q̂ = q (the gradient is the core's).
    """
    lp, eps = _sparse_mass(leftover, sparse)
    idx, kept = sparse.indices, sparse.kept
    safe = np.where(kept, idx, 0)
    vocab = sparse.vocab
    with np.errstate(divide="ignore"):
        log_eps = np.log(eps)
    if leftover == "bucket":
        # slot by slot: padded slots point at id 0 and must not mark it
        on_s = np.zeros(lq.shape, dtype=bool)
        for pos in range(idx.shape[-1]):
            col = (
                np.take_along_axis(on_s, safe[..., pos : pos + 1], axis=-1)
                | kept[..., pos : pos + 1]
            )
            np.put_along_axis(on_s, safe[..., pos : pos + 1], col, axis=-1)
        lq_star = _logsumexp(lq, ~on_s)
        lq_s = np.where(kept, np.take_along_axis(lq, safe, axis=-1), -np.inf)
        lq_hat = np.concatenate([lq_s, lq_star], axis=-1)
        lp_hat = np.concatenate([lp, log_eps], axis=-1)

        def to_dense(g):
            with np.errstate(invalid="ignore", over="ignore"):
                share = np.where(np.isneginf(lq_star), 0.0, np.exp(lq - lq_star))
            out = np.where(on_s, 0.0, g[..., -1:] * share)
            contrib = np.where(kept, g[..., :-1], 0.0)
            for pos in range(idx.shape[-1]):
                col = np.take_along_axis(out, safe[..., pos : pos + 1], axis=-1)
                np.put_along_axis(
                    out, safe[..., pos : pos + 1], col + contrib[..., pos : pos + 1], axis=-1
                )
            return out

        return lq_hat, lp_hat, to_dense
    if leftover == "renormalize":
        base = np.full(lq.shape, -np.inf)
        lp = lp - _logsumexp(lp)
    else:
        n = sparse.counts[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = np.where(eps > 0, log_eps - np.log(np.maximum(vocab - n, 1)), -np.inf)
        base = np.broadcast_to(fill, lq.shape).copy()
    for pos in range(idx.shape[-1]):
        sl = slice(pos, pos + 1)
        cur = np.take_along_axis(base, safe[..., sl], axis=-1)
        np.put_along_axis(base, safe[..., sl], np.where(kept[..., sl], lp[..., sl], cur), axis=-1)
    return lq, base, lambda g: g


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What the loss and its gradient read, formed once by :func:`_prepare`.

    Attributes
    ----------
    p, q, r : ndarray, shape (..., V)
        log p, log q and log r (the teacher, the student and the assistant, normalized).
    log_ratio : ndarray, shape (..., V)
        log(first/second) of the objective's order, from the mixture's own log ratios.
    u_q : ndarray, shape (..., V)
        log m − log q (the unnormalized mixture over the student), formed directly.
    log_z : ndarray, shape (..., 1)
        log Z, the mixture's normalizer (r = m/Z).
    objective : Objective
        The validated objective (α, λ, divergence, order, parameters).
    kernel : Divergence
        The divergence's float64 kernels (:func:`amid_ref._divergences.get_divergence`).
    """

    p: np.ndarray
    q: np.ndarray
    r: np.ndarray
    log_ratio: np.ndarray
    u_q: np.ndarray
    log_z: np.ndarray
    objective: Objective
    kernel: Any

    @property
    def arguments(self) -> tuple[np.ndarray, np.ndarray]:
        """``(log first, log second)`` of ``D(first ‖ second)``."""
        return getattr(self, self.objective.first), getattr(self, self.objective.second)

    def value(self) -> np.ndarray:
        """The divergence per row, ``D(first ‖ second)``."""
        a, b = self.arguments
        return self.kernel.value(a, b, -1, self.objective.params, self.log_ratio)


def _prepare(lq: np.ndarray, lp: np.ndarray, objective: Objective) -> _Prepared:
    """The log-probabilities p, q and r under ``objective`` of the final student and teacher
    logits (after the logit transforms, the temperature and the teacher's form; see
    :func:`_front`), normalized here by :func:`amid_ref._special.log_normalize`."""
    alpha, lam = objective.alpha, objective.lam
    # log_softmax shifts by the row maximum first (done by _front, before the division by
    # T): entries near the maximum then carry an absolute error of a few ulps of |x − max|
    # (not of |x|, ~1e-12 for logits near ±1e4), so the row is normalized to O(eps) and
    # D(q‖q) is 0 to O(eps). Dividing logits with a large common offset by T first would
    # round them at ulp(offset/T).
    # The log-softmax keeps the largest entry exact too (log_normalize): 1 − q_k of a
    # confident student is what the gradient's projection needs on that entry.
    lq = log_normalize(lq)[0]
    lp = log_normalize(lp)[0]
    lm, u_p, u_q = _log_alpha_mean_ratios(lp, lq, alpha, lam)
    lr, log_z = log_normalize(lm)
    empty = np.isneginf(log_z[..., 0])
    if empty.any():
        raise ValueError(
            f"the assistant r is undefined on {int(empty.sum())} row(s): alpha={alpha} ≥ 1 keeps "
            "only the intersection of the teacher's and student's supports (-inf logits), "
            "and it is empty (Z = 0)"
        )
    # log(r/p) and log(r/q) from the mixture's own log ratios (not lr − lp, which carries an
    # ulp of |lp|): each divergence kernel gets log(first/second) from these.
    # The orders are D(p‖r), D(q‖r), D(r‖p), D(r‖q): log(first/second) is log(r/second) or
    # −log(r/first).
    first, second = objective.first, objective.second
    to_r = {"p": (lp, u_p), "q": (lq, u_q)}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if first == "r":
            log_ratio = _log_ratio_to_mixture(lm, *to_r[second], -1)
        else:
            log_ratio = -_log_ratio_to_mixture(lm, *to_r[first], -1)
    return _Prepared(
        p=lp,
        q=lq,
        r=lr,
        log_ratio=log_ratio,
        u_q=u_q,
        log_z=log_z,
        objective=objective,
        kernel=get_divergence(objective.divergence),
    )


def _project(g: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    r"""The tangent projection :math:`g_j - w_j \sum_x g_x` of a gradient in log space onto
    the simplex (``w = exp(log_w)`` normalized along the last axis), without cancellation.

    For the row's largest weight :math:`w_k` the difference :math:`g_k - w_k\sum_x g_x`
    cancels when :math:`w_k \approx 1` (a near one-hot distribution) and the terms are
    large; it is formed as
    :math:`g_k (1 - w_k) - w_k \sum_{x \ne k} g_x` with
    :math:`1 - w_k = -\operatorname{expm1}(\log w_k)`, both parts exact to a few ulps.
    The other entries have :math:`w_j \le \tfrac12` and do not cancel.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(log_w)
        total = np.sum(g, axis=-1, keepdims=True)
        out = g - w * total
        k = np.argmax(log_w, axis=-1)[..., None]
        g_k = np.take_along_axis(g, k, axis=-1)
        lw_k = np.take_along_axis(log_w, k, axis=-1)
        others = np.sum(np.where(np.arange(g.shape[-1]) == k, 0.0, g), axis=-1, keepdims=True)
        dominant = g_k * -np.expm1(lw_k) - np.exp(lw_k) * others
    np.put_along_axis(out, k, dominant, axis=-1)
    return out


def _normalizer_gradient(ctx: _Prepared, w: np.ndarray, *, with_near: bool = False):
    r"""A vector K whose projection :math:`P_q(K)` is ``∂ log Z/∂ s·T = r ⊙ w − q Σ r ⊙ w``
    (the caller projects it with the rest of the gradient, so that the gradient keeps its
    invariance Σ_j ∂/∂s_j = 0 whatever K's rounding).

    For finite α, :math:`r_x w_x = c\,q_x e^{x_x}` with :math:`c = (1-\lambda)/Z` and
    :math:`x = (1-\beta)u`, :math:`u = \log m - \log q` (formed directly by the mixture
    kernel). With :math:`L = \log\sum_x q_x e^{x_x}` and :math:`S = \sum_x r_x w_x = c\,e^L`,

    .. math::

        K_j = S\,q_j\,\operatorname{expm1}(x_j - L) = r_j w_j - q_j S,

    which sums to 0 (its projection is itself), each entry exact to a few ulps where
    r ⊙ w is near S·q (the expm1 of a small difference) and where it is far below
    (K_j = −S q_j). L is formed as
    :math:`\operatorname{log1p}(\sum_x q_x \operatorname{expm1}(x_x))` where that sum is at
    least −½ (exactly 0 at α = −1, where x ≡ 0 and K = 0: nothing of size ε·q is left to
    multiply Σ g_r, up to 1e18 near the AB-divergence's origin), and as
    :math:`\operatorname{logsumexp}(\log q + x)` below (the mixture's mass where w is small:
    α > 1 with p and q apart). The earlier form :math:`c\,(q \odot \operatorname{expm1}(x))`
    took c·q off r ⊙ w and left it to the projection, which cancelled it to ε·c: 2e6
    against entries of 1e-3 at α = 50, where Z = e^−60 and c = 5e25. At α = ±inf (w an
    indicator, ½ at ties, and m = q wherever w > 0, so r ⊙ w = w ⊙ q/Z):
    :math:`K_j = w_j r_j \bar A - (1 - w_j)\,q_j S` with :math:`S = \sum_x w_x r_x`
    and :math:`\bar A = \sum_x (1 - w_x) q_x = 1 - ZS`, sums of positive terms and
    products of numbers ≤ 1 (q/Z itself overflows where Z = e^−900), where ``r ⊙ w − q``
    (projected by the caller) cancelled: 8× the whole gradient of AB(−1.6, −2.9) D(p‖r)
    at α = −inf on a row of logits ±100, whose Σ g_r is 1e170.

    ``with_near=True`` returns ``(K, near)``, ``near`` (keepdim) true on the rows whose L
    took the ``log1p`` form (every row at α = ±inf).
    """
    lq = ctx.q
    alpha, lam = ctx.objective.alpha, ctx.objective.lam
    q_pos = ~np.isneginf(lq)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if np.isinf(alpha):
            q, r = np.exp(lq), np.exp(ctx.r)
            held = np.sum(w * r, axis=-1, keepdims=True)  # S = A/Z
            left = np.sum((1.0 - w) * q, axis=-1, keepdims=True)  # Ā = 1 − A
            k = np.where(q_pos, w * r * left - (1.0 - w) * q * held, 0.0)
            return (k, np.ones((*k.shape[:-1], 1), dtype=bool)) if with_near else k
        beta = (1.0 - alpha) / 2.0
        x = np.where(q_pos, (1.0 - beta) * ctx.u_q, 0.0)
        # q·expm1(x) in the log domain for x > 1 (e^(x + log q) = r ⊙ w / c, no overflow)
        terms = np.where(x <= 1.0, np.expm1(np.minimum(x, 1.0)) * np.exp(lq),
                         np.exp(x + lq) - np.exp(lq))  # fmt: skip
        total = np.sum(np.where(q_pos, terms, 0.0), axis=-1, keepdims=True)
        near = total >= -0.5
        log_e = np.where(near, np.log1p(np.maximum(total, -0.5)),
                         _logsumexp(x + lq, q_pos))  # fmt: skip
        log_s = np.log1p(-lam) - ctx.log_z + log_e  # log S, S = Σ r ⊙ w ≤ 1
        y = x - log_e
        k = np.where(y <= 1.0, np.expm1(np.minimum(y, 1.0)) * np.exp(log_s + lq),
                     np.exp(y + log_s + lq) - np.exp(log_s + lq))  # fmt: skip
        k = np.where(q_pos & ~np.isnan(k), k, 0.0)
    return (k, near) if with_near else k


def amid_loss(
    student_logits,
    teacher_logits,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    *,
    teacher_topk=None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap=None,
    logit_scale=None,
    temperature_applies_to: str = "both",
):
    r"""Per-row AMiD loss :math:`D(p\,\|\,r)`, :math:`D(q\,\|\,r)`, :math:`D(r\,\|\,p)` or
    :math:`D(r\,\|\,q)`.

    .. math::

        p = \mathrm{softmax}(t/T),\quad q = \mathrm{softmax}(s/T),\quad
        r = r^{(\alpha,\lambda)}(p, q) \propto m_\alpha(p, q; \lambda).

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float, shape (..., V)
        Logits; ``-inf`` entries are masked tokens (probability exactly 0). NaN, ``+inf``
        and rows of only ``-inf`` raise ``ValueError``. Same shape. The leading shape may
        hold no rows (e.g. (0, V)); V must be at least 1.
    alpha : float
        Path parameter of the assistant, any real or ``±inf``.
    lam : float
        Teacher weight of the assistant in ``[0, 1]``.
    divergence : str
        A name from :data:`amid_ref.DIVERGENCES`.
    order : {"pr", "qr", "rp", "rq"}
        D(p‖r), D(q‖r), D(r‖p), D(r‖q) with p the teacher.
    div_params : mapping, optional
        Parameters of the divergence (e.g. ``{"alpha": 0.2, "beta": 0.7}`` for ``"ab"``).
    temperature : float
        Softmax temperature T > 0 (applied to both logits unless
        ``temperature_applies_to="student"``).
    teacher_topk : pair of arrays, optional
        A sparse teacher ``(indices, logprobs)``, both of shape (..., k): integer ids in
        [0, V), distinct per row, and the teacher's log-probabilities of its full
        distribution at them (padded slots: index −1, logprob −inf). ``teacher_logits``
        must then be ``None``. The leftover mass is
        :math:`\varepsilon = -\operatorname{expm1}(\operatorname{logsumexp}\,\ell_S)`.
    leftover : {"bucket", "renormalize", "uniform"}
        What a sparse teacher's leftover becomes (MATH.md): one extra category ★ (teacher
        ε, student :math:`\sum_{j\notin S} q_j`), the teacher renormalized on S, or ε
        spread evenly over the V − k other ids.
    vocab_alignment : {"error", "pad", "truncate"}
        A dense teacher whose V differs from the student's: refused, the shorter side
        extended with −inf logits, or the longer side cut to the shared ids (refused when it
        drops more than :data:`amid_ref.tolerances.VOCAB_TRUNCATE_MAX_DROPPED`).
    softcap : float or pair, optional
        :math:`z \mapsto c\tanh(z/c)` with c > 0 for both, or ``(student_cap,
        teacher_cap)`` with ``None`` for none; −inf logits stay −inf.
    logit_scale : float or pair, optional
        :math:`z \mapsto \kappa z` (κ > 0), for both or ``(student_scale, teacher_scale)``.
        Order: scale, then cap, then temperature.
    temperature_applies_to : {"both", "student"}
        With ``teacher_topk`` a temperature ≠ 1 needs ``"student"`` (the log-probabilities
        are used as given).

    Returns
    -------
    ndarray or float
        Loss per row, shape ``(...)`` (a float for a single row, an empty array for no
        rows, as :func:`gpu.amid_loss` with ``reduction="none"``); ``+inf`` where the
        divergence is infinite (e.g. KL(p‖r) with α ≥ 1 and a teacher token the student
        masks).

    Raises
    ------
    ValueError
        On invalid input, naming the parameter; for logits of shape (..., 0),
        ``"student_logits has an empty vocabulary axis (V = 0)"`` (or ``teacher_logits``),
        the words of :func:`gpu.amid_loss`.
    TypeError
        On logits or parameters of the wrong type (integer or bool logits, ...).

    Notes
    -----
    Theorem 3.4: for 0 < λ < 1 and finite logits (p, q > 0) the loss vanishes iff q = p,
    for every divergence, α and order [claim: theorem_3_4.optimality]; for α ≥ 1 a token
    masked in the teacher but not in the student breaks the "only if" (r keeps only the
    intersection of the supports) [claim: theorem_3_4.full_support_needed]. The prior
    methods are special cases (:mod:`amid_ref.presets`).

    References
    ----------
    Theorem 3.4 (optimality); the prior methods as special cases (:mod:`amid_ref.presets`).

    See Also
    --------
    amid_ref.precise.amid_loss : the mpmath oracle it is held to.
    gpu.amid_loss : the chunked torch twin, held to this function in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import amid_loss
    >>> t = np.log([0.7, 0.2, 0.1])
    >>> abs(float(amid_loss(t, t, alpha=-5.0, lam=0.1))) < 1e-15
    True
    """
    objective = Objective.of(
        alpha,
        lam,
        divergence,
        order,
        div_params,
        temperature,
        leftover=leftover,
        vocab_alignment=vocab_alignment,
        softcap=softcap,
        logit_scale=logit_scale,
        temperature_applies_to=temperature_applies_to,
    )
    return loss_of(objective, student_logits, teacher_logits, teacher_topk=teacher_topk)


def loss_of(objective: Objective, student_logits, teacher_logits, *, teacher_topk=None):
    """:func:`amid_loss` of an already validated :class:`~amid_ref._specs.Objective`."""
    front = _front(objective, student_logits, teacher_logits, teacher_topk)
    out = np.asarray(_prepare(front.lq, front.lp, objective).value())
    if np.isnan(out).any():  # pragma: no cover - kernel bug guard, never silent
        raise FloatingPointError("amid_loss produced NaN; please report this input")
    return out[()] if out.ndim == 0 else out


def amid_grad(
    student_logits,
    teacher_logits,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    detach_assistant: bool = False,
    *,
    teacher_topk=None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap=None,
    logit_scale=None,
    temperature_applies_to: str = "both",
):
    r"""Gradient of the per-row AMiD loss with respect to the student logits.

    Chain rule in log space. With :math:`g_A = \partial D/\partial \log A` for the
    divergence's arguments,

    .. math::

        \frac{\partial D}{\partial \log m_y} = g_{r,y} - r_y \sum_x g_{r,x},\qquad
        \frac{\partial \log m_y}{\partial \log q_y} = w_y
            = \frac{(1-\lambda) q_y^\beta}{\lambda p_y^\beta + (1-\lambda) q_y^\beta},

    .. math::

        \frac{\partial D}{\partial s_j} = \frac1T\Big(g_{q,j} - q_j \sum_x g_{q,x}\Big),
        \qquad g_q = [\text{direct}] + w \odot \frac{\partial D}{\partial \log m}.

    For KL(p‖r) this is the closed form of Proposition 3.5,
    :math:`\partial_{s_j} = -g_j + q_j \sum_x g_x` with :math:`g = (p - r)\,w`
    [claim: prop_3_5.kl_gradient] [claim: prop_3_5.weight].

    Parameters
    ----------
    student_logits, teacher_logits, alpha, lam, divergence, order, div_params, temperature
        As in :func:`amid_loss`.
    teacher_topk, leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`amid_loss`. The transforms enter by their derivatives
        (:math:`\kappa` and :math:`1 - \tanh^2(\kappa z/c)`); with ``leftover="bucket"``
        the ids off S share ★'s gradient in proportion to :math:`q_j`.
    detach_assistant : bool
        Treat r as a constant (TAID, DistiLLM-2); AMiD itself does not detach.

    Returns
    -------
    ndarray
        ``∂ loss_row / ∂ student_logits``, shape ``(..., V)``; exactly 0 at ``-inf`` student
        logits; an empty array of that shape when the leading shape holds no rows.

    Raises
    ------
    ValueError
        On invalid input (as in :func:`amid_loss`, V = 0 included), or where the loss is
        ``+inf`` (its gradient is undefined).

    Notes
    -----
    At α = ±inf the mixture is a max/min and w is the indicator of the student being
    selected; at exact ties p(x) = q(x) the weight ½ (average of one-sided derivatives) is
    used. The divergence ``"f"`` needs its derivative as ``div_params["f_prime"]``.

    References
    ----------
    Proposition 3.5 (the gradient through the assistant r).

    See Also
    --------
    amid_ref.precise.amid_grad : the oracle (central differences of the mpmath loss).
    gpu.amid_loss : its backward pass is this closed form, chunked.
    """
    objective = Objective.of(
        alpha,
        lam,
        divergence,
        order,
        div_params,
        temperature,
        detach_assistant,
        leftover=leftover,
        vocab_alignment=vocab_alignment,
        softcap=softcap,
        logit_scale=logit_scale,
        temperature_applies_to=temperature_applies_to,
    )
    return grad_of(objective, student_logits, teacher_logits, teacher_topk=teacher_topk)


def grad_of(objective: Objective, student_logits, teacher_logits, *, teacher_topk=None):
    """:func:`amid_grad` of an already validated :class:`~amid_ref._specs.Objective`."""
    front = _front(objective, student_logits, teacher_logits, teacher_topk)
    ctx = _prepare(front.lq, front.lp, objective)
    rec, params = ctx.kernel, objective.params
    if rec.grad is None:  # pragma: no cover - every registered divergence has one
        raise ValueError(f"divergence {objective.divergence!r} has no gradient")
    first, second = objective.first, objective.second
    a, b = ctx.arguments
    value = ctx.value()
    if np.isinf(value).any():
        where = f"{int(np.isinf(value).sum())} row(s)"
        raise ValueError(objective.inf_loss_message(where))
    g_first, g_second = rec.grad(a, b, -1, params, ctx.log_ratio)
    grads = {"p": 0.0, "q": 0.0, "r": 0.0}
    grads[first] = grads[first] + g_first
    grads[second] = grads[second] + g_second
    g_q = np.zeros_like(ctx.q) + grads["q"]
    through_r = None
    if not objective.detach_assistant and "r" in (first, second):
        # Chain rule through r: P_q(w ⊙ P_r(g_r)), P the tangent projections. Where w = 0
        # (zeros of q, or of m) the entries of g_r may be huge (~1/(a_(a_+b_)), 1e18 near
        # the AB-divergence's origin) yet reach the student only through log Z:
        # P_q(w ⊙ P_r(g_A)) = −(Σ g_A)·K with K = P_q(r ⊙ w) = ∂ log Z/∂ s·T. That part is
        # formed from K computed exactly to a few ulps of itself (_normalizer_gradient), so
        # the huge terms cancel analytically instead of after rounding.
        g_r = np.zeros_like(ctx.r) + grads["r"]
        weights = _alpha_mixture_weights(ctx.p, ctx.q, objective.alpha, objective.lam)
        w = np.exp(weights[0])
        # w = 0 in float64 (log w below −745), not only where log w = −inf: there w·g_r is
        # below 1e-15 for any finite g_r, while g_r itself (1e22 where r is 1e-9 and the
        # AB-divergence's a_ = −3) would swamp P_r's sum and cancel every other entry to 0
        silent = w == 0.0
        g_r_kept = np.where(silent, 0.0, g_r)
        projected = _project(g_r_kept, ctx.r)
        if rec.pair is not None and "q" in (first, second):
            # D(r‖q) or D(q‖r): g_q + w·g_r may cancel (each a power of r/q, 1e7, their
            # weighted sum 1e-19): the divergence forms it in closed form (Divergence.pair),
            # the projection's part w·(g_r − P_r(g_r)) = w ⊙ r·Σ g_r apart.
            direct = "a" if first == "q" else "b"
            args = (a, b, params, ctx.log_ratio, weights, direct)
            with np.errstate(invalid="ignore"):
                direct = rec.pair(*args)
            g_q = direct - w * (g_r_kept - projected)
        else:
            direct = g_q + w * g_r_kept
            g_q = g_q + w * projected
        # On the rows where r ⊙ w is near a multiple of q (K's L in its log1p form; λ ≈ 0
        # gives r ≈ q and w ≈ 1; every row at α = ±inf, where r ⊙ w = w ⊙ q/Z),
        # P_q(w ⊙ r·Σ g_r) cancels: at λ = 1e-15 it keeps ε/λ of itself, 8 % of the whole
        # gradient of AB(−1.6, −2.9) D(q‖r) on rows 1e-5 apart; at α = −inf, 8× that of
        # its D(p‖r) on logits ±100 (Σ g_r = 1e170). There the direction takes
        # −(Σ g_r)·K instead (the same after P_q), K's entries exact:
        # P_q(g_q + w ⊙ g_r − (Σ g_r)·K). Elsewhere (p and q apart, K from its
        # log-sum-exp form) the projected form stays: near a one-hot r its dominant entry
        # is exact, where (Σ g_r)·K and the pair would cancel.
        k_all, near = _normalizer_gradient(ctx, w, with_near=True)
        if near.any():
            g_sum = np.sum(g_r, axis=-1, keepdims=True)
            with np.errstate(invalid="ignore"):
                g_q = np.where(near, direct - np.where(g_sum != 0.0, g_sum * k_all, 0.0), g_q)
            silent = silent & ~near
        if silent.any():
            g_silent = np.sum(np.where(silent, g_r, 0.0), axis=-1, keepdims=True)
            through_r = g_silent * k_all
    if through_r is not None:  # P_q(g_q) − Σ g_A·P_q(K), as one projection
        g_q = g_q - through_r
    grad = _project(g_q, ctx.q)
    grad = np.where(np.isneginf(ctx.q), 0.0, grad)
    grad = front.back(grad)
    if not np.isfinite(grad).all():  # pragma: no cover - kernel bug guard
        raise FloatingPointError("amid_grad produced a non-finite gradient; please report")
    return grad
