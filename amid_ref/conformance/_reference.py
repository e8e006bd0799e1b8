"""Reference values of a case from ``amid_ref`` (float64), and the tolerances that apply."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

import amid_ref
from amid_ref._battery._compare import PROPOSED_TOLERANCES, tolerance_for
from amid_ref._loss import grad_of, loss_of
from amid_ref._specs import Objective, order_arguments
from amid_ref.conformance._cases import Case

__all__ = ["PROPOSED_TOLERANCES", "ReferenceInputs", "reduce_grad", "reduce_rows", "tolerance_for"]


def reduce_rows(rows: np.ndarray, mask: np.ndarray | None, reduction: str) -> np.ndarray:
    """Per-row losses reduced as the implementation is declared to reduce them.

    Ignored rows (``mask`` False) are 0 in ``"none"`` output and excluded from ``"sum"`` and
    ``"mean"``; the mean over zero rows is 0 (never 0/0). ``"batchmean"`` is torch's
    ``kl_div`` reduction: the sum divided by the size of the first dimension (for (B, T, V)
    inputs, by B), or, with labels, the mean over the kept rows (TRL's convention).
    """
    rows = np.asarray(rows, dtype=np.float64)
    if mask is not None:
        rows = np.where(mask, rows, 0.0)
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return np.asarray(total)
    n = int(mask.sum()) if mask is not None else rows.size
    if reduction == "batchmean" and mask is None:
        n = rows.shape[0] if rows.ndim else 1
    return np.asarray(total / n if n > 0 else 0.0)


def reduce_grad(
    grad_rows: np.ndarray,
    mask: np.ndarray | None,
    reduction: str,
    upstream: np.ndarray | None,
) -> np.ndarray:
    """Gradient of the reduced loss w.r.t. the student logits from per-row gradients.

    ``"none"`` output is back-propagated with ``upstream`` (shape = leading dims; None = 1).
    """
    g = np.asarray(grad_rows, dtype=np.float64)
    lead = g.shape[:-1]
    w = np.ones(lead) if mask is None else mask.astype(np.float64)
    if reduction == "none":
        if upstream is not None:
            w = w * np.asarray(upstream, dtype=np.float64).reshape(lead)
    elif reduction in ("mean", "batchmean"):
        n = int(mask.sum()) if mask is not None else int(np.prod(lead))
        if reduction == "batchmean" and mask is None:
            n = lead[0] if lead else 1
        w = w / n if n > 0 else w * 0.0
    return g * w[..., None]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = x - np.where(np.isfinite(top), top, 0.0)
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


@dataclass
class ReferenceInputs:
    """A case's rounded inputs and the reference evaluated on them (with overrides).

    ``s``, ``t`` are the student-side and teacher-side arrays exactly as the implementation
    received them (logits for a loss, log-probabilities for a mixture), as float64.
    """

    case: Case
    s: np.ndarray
    t: np.ndarray
    normalized: bool = True
    detach_assistant: bool = False
    temperature_squared: bool = False

    def params(self, **overrides: Any) -> dict[str, Any]:
        c = self.case
        p = {
            "alpha": float(c.alpha),
            "lam": float(c.lam),
            "divergence": c.divergence,
            "order": c.order,
            "div_params": dict(c.div_params),
            "temperature": float(c.temperature),
            "s": self.s,
            "t": self.t,
        }
        p.update(overrides)
        return p

    def rows(self, grad: bool = False, **overrides: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Reference per-row loss (or log-mixture) and, if asked, per-row gradient."""

        p = self.params(**overrides)
        if self.case.kind == "mixture":
            # log r = log m − log Z on the inputs exactly as passed. Log-probabilities rounded
            # to bf16/fp16 are normalized only to ~1e-3, which log_alpha_mixture (rightly)
            # rejects as input; the mixture of those measures is still well defined.
            log_m = np.asarray(
                amid_ref.log_alpha_mean(p["t"], p["s"], p["alpha"], p["lam"]), dtype=np.float64
            )
            if not self.normalized:
                return log_m, None
            log_z = logsumexp(log_m, axis=-1, keepdims=True)
            if not np.all(np.isfinite(log_z)):
                raise ValueError("the mixture is empty (Z = 0) on some row: r is undefined")
            return log_m - log_z, None
        # A preset is a weighted sum of AMiD losses over its terms' orders; a loss or a
        # divergence case (λ = 0, order pr / rp) is the one term (order, 1).
        terms: tuple[tuple[str, float], ...] = ((p["order"], 1.0),)
        detach = self.detach_assistant
        if self.case.kind == "preset":
            rec = self.case.preset_record()
            terms = p.get("terms", rec.terms)
            detach = detach or rec.detach_assistant
        detach = overrides.get("detach_assistant", detach)
        scale = p["temperature"] ** 2 if self.temperature_squared else 1.0
        loss = 0.0
        g = 0.0 if grad else None
        for order, weight in terms:
            if weight == 0.0:
                continue
            objective = Objective.of(
                p["alpha"],
                p["lam"],
                p["divergence"],
                order,
                p["div_params"] or None,
                p["temperature"],
                detach,
            )
            loss = loss + weight * np.asarray(loss_of(objective, p["s"], p["t"]))
            if grad:
                g = g + weight * np.asarray(grad_of(objective, p["s"], p["t"]))
        loss = np.asarray(loss, dtype=np.float64) * scale
        if not loss.shape and np.ndim(p["s"]) > 1:  # every weight 0: a zero loss per row
            loss = np.zeros(np.shape(p["s"])[:-1])
        if grad:
            g = np.broadcast_to(np.asarray(g, dtype=np.float64) * scale, np.shape(p["s"])).copy()
        return loss, g

    def log_pq(self, temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(log_p, log_q)`` in float64: log-softmax of the tempered logits (loss cases) or
        the inputs themselves (mixture cases)."""
        if self.case.kind == "mixture":
            return self.t, self.s
        temp = self.case.temperature if temperature is None else temperature
        return _log_softmax(self.t / temp), _log_softmax(self.s / temp)

    def loss_from_log_m(self, log_m: np.ndarray) -> np.ndarray:
        """Per-row loss (or log r for a mixture) when the mixture is ``exp(log_m)/Z``.

        Used to evaluate known-wrong mixture formulas through the reference divergences.
        """

        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            top = np.max(log_m, axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            log_z = np.log(np.sum(np.exp(log_m - top), axis=-1, keepdims=True)) + top
            log_r = log_m - log_z
        if self.case.kind == "mixture":
            return log_r if self.normalized else log_m
        log_p, log_q = self.log_pq()
        x, y = order_arguments(self.case.order, log_p, log_q, log_r)
        return _safe_divergence(
            amid_ref.divergence, x, y, self.case.divergence, self.case.div_params
        )


def _safe_divergence(div, x, y, name, params) -> np.ndarray:
    """``amid_ref.divergence`` on log inputs; NaN per row where it rejects the input."""
    out = np.empty(x.shape[:-1])
    flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    flat = out.reshape(-1)
    for i in range(flat_x.shape[0]):
        bad = np.isnan(flat_x[i]).any() or np.isnan(flat_y[i]).any()
        if bad or not np.isfinite(flat_x[i]).any() or not np.isfinite(flat_y[i]).any():
            flat[i] = math.nan
            continue
        try:
            flat[i] = float(div(flat_x[i], flat_y[i], name, log_input=True, **params))
        except (ValueError, FloatingPointError):
            flat[i] = math.nan
    return out
