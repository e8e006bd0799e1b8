"""The AMiD objective and its gradient with respect to the student logits (float64)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from amid_ref._divergences import get_divergence
from amid_ref._mixture import (
    _alpha_mixture_weights,
    _log_alpha_mean_ratios,
    _log_ratio_to_mixture,
)
from amid_ref._special import _EXP_SAFE, log_normalize
from amid_ref._specs import ORDERS, Objective
from amid_ref._validation import (
    as_float_array,
    check_same_shape,
    temperature_overflow_message,
)

__all__ = ["ORDERS", "Objective", "amid_grad", "amid_loss", "grad_of", "loss_of"]


def _check_logits(x, name: str) -> np.ndarray:
    arr = as_float_array(x, name, allow_neg_inf=True)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a vocabulary axis (shape (..., V)), got a scalar")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} has an empty vocabulary (V = 0)")
    dead = np.all(np.isneginf(arr), axis=-1)
    if dead.any():
        row = tuple(int(i) for i in np.argwhere(dead)[0]) if arr.ndim > 1 else ()
        raise ValueError(f"{name} has a row whose logits are all -inf (row {row}): no distribution")
    return arr


def _scaled_log_softmax(x: np.ndarray, temperature: float, name: str) -> np.ndarray:
    """log softmax(x/T) of checked logits; offsets (x − max)/T beyond float64 are refused
    (:func:`amid_ref._validation.temperature_overflow_message`)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = (x - x.max(axis=-1, keepdims=True)) / temperature
    lost = np.isfinite(x) & ~np.isfinite(y)
    if lost.any():
        row = tuple(int(i) for i in np.argwhere(lost)[0][:-1])
        raise ValueError(temperature_overflow_message(name, temperature, f"row {row}"))
    return log_normalize(y)[0]


def _prepare(student_logits, teacher_logits, objective: Objective) -> dict[str, np.ndarray]:
    """The log-probabilities p, q and r of validated logits under ``objective``."""
    s = _check_logits(student_logits, "student_logits")
    t = _check_logits(teacher_logits, "teacher_logits")
    check_same_shape(s, t, "student_logits", "teacher_logits")
    alpha, lam, temperature = objective.alpha, objective.lam, objective.temperature
    # log_softmax shifts by the row maximum first: entries near the maximum then carry an
    # absolute error of a few ulps of |x − max| (not of |x|, ~1e-12 for logits near ±1e4),
    # so the row is normalized to O(eps) and D(q‖q) is 0 to O(eps).
    # The shift comes before the division by T: dividing logits with a large common offset
    # first would round them at ulp(offset/T).
    # The log-softmax keeps the largest entry exact too (log_normalize): 1 − q_k of a
    # confident student is what the gradient's projection needs on that entry.
    lq = _scaled_log_softmax(s, temperature, "student_logits")
    lp = _scaled_log_softmax(t, temperature, "teacher_logits")
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
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        r_over = {"p": _log_ratio_to_mixture(lm, lp, u_p, -1), "q": None}
        r_over["q"] = _log_ratio_to_mixture(lm, lq, u_q, -1)
    first, second = objective.first, objective.second
    log_ratio = r_over[second] if first == "r" else -r_over[first]  # log(first/second)
    return {
        "p": lp,
        "q": lq,
        "r": lr,
        "log_ratio": log_ratio,
        "u_q": u_q,
        "log_z": log_z,
        "alpha": alpha,
        "lam": lam,
        "rec": get_divergence(objective.divergence),
        "params": objective.params,
        "first": first,
        "second": second,
        "temperature": temperature,
    }


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


def _normalizer_gradient(ctx: dict, w: np.ndarray) -> np.ndarray:
    r"""``K_j = ∂ log Z/∂ s_j·T = r_j w_j − q_j Σ_x r_x w_x`` without cancellation.

    For finite α, :math:`r_x w_x / q_x = (1-\lambda)\,(m_x/q_x)^{1-\beta}/Z`, so with
    :math:`u = \log m - \log q` (formed directly by the mixture kernel) and
    :math:`f = \operatorname{expm1}((1-\beta)u)`,

    .. math::

        K = \frac{1-\lambda}{Z}\,\big(q \odot f - q \textstyle\sum_x q_x f_x\big),

    which is exact to a few ulps of itself: the part of :math:`r \odot w` proportional to
    q (all of it at α = −1, where K = 0) cancels analytically instead of leaving
    :math:`\epsilon\, q` (times Σ g_r, up to 1e18 near the AB-divergence's origin). At
    α = ±inf (w an indicator) ``h = r ⊙ w − q`` is projected directly.
    """
    lq = ctx["q"]
    q_pos = ~np.isneginf(lq)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if np.isinf(ctx["alpha"]):
            h = np.exp(ctx["r"]) * w - np.exp(lq)
            return _project(np.where(q_pos, h, 0.0), lq)
        beta = (1.0 - ctx["alpha"]) / 2.0
        # (1−λ)/Z · q · expm1(x), x = (1−β)u, in the log domain (1/Z overflows where Z is
        # tiny): log c = log((1−λ) q / Z); for x > 1, e^(x + log c) − e^(log c). Rows where
        # (1−λ)/Z itself overflows take h = r ⊙ w (a multiple of q apart, which the
        # projection removes; |r ⊙ w| ≤ 1).
        log_scale = np.log1p(-ctx["lam"]) - ctx["log_z"]
        log_c = lq + log_scale
        x = (1.0 - beta) * ctx["u_q"]
        h = np.where(
            x <= 1.0,
            np.expm1(np.minimum(x, 1.0)) * np.exp(log_c),
            np.exp(x + log_c) - np.exp(log_c),
        )
        h = np.where(log_scale > _EXP_SAFE, np.exp(x + log_c), h)
        return _project(np.where(q_pos & ~np.isnan(h), h, 0.0), lq)


def amid_loss(
    student_logits,
    teacher_logits,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
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
        and rows of only ``-inf`` raise ``ValueError``. Same shape.
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
        Softmax temperature T > 0 applied to both logits.

    Returns
    -------
    ndarray or float
        Loss per row, shape ``(...)`` (a float for a single row); ``+inf`` where the
        divergence is infinite (e.g. KL(p‖r) with α ≥ 1 and a teacher token the student
        masks).

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
    objective = Objective.of(alpha, lam, divergence, order, div_params, temperature)
    return loss_of(objective, student_logits, teacher_logits)


def loss_of(objective: Objective, student_logits, teacher_logits):
    """:func:`amid_loss` of an already validated :class:`~amid_ref._specs.Objective`."""
    ctx = _prepare(student_logits, teacher_logits, objective)
    rec = ctx["rec"]
    out = np.asarray(
        rec.value(ctx[ctx["first"]], ctx[ctx["second"]], -1, ctx["params"], ctx["log_ratio"])
    )
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
    detach_assistant : bool
        Treat r as a constant (TAID, DistiLLM-2); AMiD itself does not detach.

    Returns
    -------
    ndarray
        ``∂ loss_row / ∂ student_logits``, shape ``(..., V)``; exactly 0 at ``-inf`` student
        logits.

    Raises
    ------
    ValueError
        On invalid input, or where the loss is ``+inf`` (its gradient is undefined).

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
        alpha, lam, divergence, order, div_params, temperature, detach_assistant
    )
    return grad_of(objective, student_logits, teacher_logits)


def grad_of(objective: Objective, student_logits, teacher_logits):
    """:func:`amid_grad` of an already validated :class:`~amid_ref._specs.Objective`."""
    ctx = _prepare(student_logits, teacher_logits, objective)
    rec = get_divergence(objective.divergence)
    if rec.grad is None:  # pragma: no cover - every registered divergence has one
        raise ValueError(f"divergence {objective.divergence!r} has no gradient")
    first, second = ctx["first"], ctx["second"]
    value = rec.value(ctx[first], ctx[second], -1, ctx["params"], ctx["log_ratio"])
    if np.isinf(value).any():
        where = f"{int(np.isinf(value).sum())} row(s)"
        raise ValueError(objective.inf_loss_message(where))
    g_first, g_second = rec.grad(ctx[first], ctx[second], -1, ctx["params"], ctx["log_ratio"])
    grads = {"p": 0.0, "q": 0.0, "r": 0.0}
    grads[first] = grads[first] + g_first
    grads[second] = grads[second] + g_second
    g_q = np.zeros_like(ctx["q"]) + grads["q"]
    through_r = None
    if not objective.detach_assistant and "r" in (first, second):
        # Chain rule through r: P_q(w ⊙ P_r(g_r)), P the tangent projections. Where w = 0
        # (zeros of q, or of m) the entries of g_r may be huge (~1/(a_(a_+b_)), 1e18 near
        # the AB-divergence's origin) yet reach the student only through log Z:
        # P_q(w ⊙ P_r(g_A)) = −(Σ g_A)·K with K = P_q(r ⊙ w) = ∂ log Z/∂ s·T. That part is
        # formed from K computed exactly to a few ulps of itself (_normalizer_gradient), so
        # the huge terms cancel analytically instead of after rounding.
        g_r = np.zeros_like(ctx["r"]) + grads["r"]
        weights = _alpha_mixture_weights(ctx["p"], ctx["q"], ctx["alpha"], ctx["lam"])
        w = np.exp(weights[0])
        silent = np.isneginf(weights[0])
        g_r_kept = np.where(silent, 0.0, g_r)
        projected = _project(g_r_kept, ctx["r"])
        if rec.pair is not None and "q" in (first, second):
            # D(r‖q) or D(q‖r): g_q + w·g_r may cancel (each a power of r/q, 1e7, their
            # weighted sum 1e-19): the divergence forms it in closed form (Divergence.pair),
            # the projection's part w·(g_r − P_r(g_r)) apart.
            direct = "a" if first == "q" else "b"
            args = (ctx[first], ctx[second], ctx["params"], ctx["log_ratio"], weights, direct)
            with np.errstate(invalid="ignore"):
                g_q = rec.pair(*args) - w * (g_r_kept - projected)
        else:
            g_q = g_q + w * projected
        if silent.any():
            g_silent = np.sum(np.where(silent, g_r, 0.0), axis=-1, keepdims=True)
            through_r = g_silent * _normalizer_gradient(ctx, w)
    grad = _project(g_q, ctx["q"])
    if through_r is not None:
        grad = grad - through_r
    grad = grad / ctx["temperature"]
    grad = np.where(np.isneginf(ctx["q"]), 0.0, grad)
    if not np.isfinite(grad).all():  # pragma: no cover - kernel bug guard
        raise FloatingPointError("amid_grad produced a non-finite gradient; please report")
    return grad
