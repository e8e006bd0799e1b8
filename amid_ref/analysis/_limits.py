"""Limit convergence: distance of the assistant to its limits at α = ±1 and α → ±∞."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import amid_ref
from amid_ref.analysis._common import (
    EPS,
    EXAMPLE_STUDENT_LOGITS,
    EXAMPLE_TEACHER_LOGITS,
    _log_softmax,
)


@dataclass(frozen=True)
class ConvergenceSeries:
    """Distance of :math:`r^{(\\alpha,\\lambda)}` to one limit, approached from one side.

    Attributes
    ----------
    limit_alpha : float
        The limit: ``1.0``, ``-1.0``, ``inf`` or ``-inf``.
    side : str
        ``"below"`` (α < limit) or ``"above"`` (α > limit).
    lam : float
        The teacher weight λ.
    distance_label : str
        What the distance measures: ``"|α − 1|"``, ``"|α + 1|"`` or ``"1/|α|"``.
    alphas, distances, errors : ndarray, shape (n,)
        The α values, their distances to the limit, and the error
        ``max_x |log r^(α)(x) − log r^(limit)(x)|`` (a relative error of r).
    fit : ndarray of bool, shape (n,)
        The points used for the fits (error above the float64 floor, distance ≤ 1e-2 for
        the power law).
    order : float
        Fitted slope of ``log error`` against ``log distance`` (NaN under 3 points).
    expected_order : float or None
        1 at α = ±1; at ±∞, 1 for λ ≠ ½ and ``None`` for λ = ½ (exponential decay).
    decay_rate, expected_decay_rate : float
        Only for the exponential case (α → ±∞, λ = ½; NaN otherwise): the fitted κ in
        ``error ≈ C·exp(−κ|β|)/|β|`` with β = (1−α)/2, and its prediction
        ``min_x |log p(x) − log q(x)|``.
    passed : bool
        Whether the observed behaviour is the expected one.
    note : str
        One sentence on what was observed.
    """

    limit_alpha: float
    side: str
    lam: float
    distance_label: str
    alphas: np.ndarray
    distances: np.ndarray
    errors: np.ndarray
    fit: np.ndarray
    order: float
    expected_order: float | None
    decay_rate: float
    expected_decay_rate: float
    passed: bool
    note: str

    @property
    def label(self) -> str:
        """Legend text, e.g. ``"α → 1 from below, λ = 0.3"``."""
        lim = {1.0: "1", -1.0: "−1", math.inf: "+∞", -math.inf: "−∞"}[self.limit_alpha]
        side = "" if math.isinf(self.limit_alpha) else f" from {self.side}"
        return f"α → {lim}{side}, λ = {self.lam:g}"


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3:
        return math.nan
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def limit_convergence(
    teacher_logits=None,
    student_logits=None,
    lams: Sequence[float] = (0.3, 0.5),
    *,
    n_points: int = 19,
    floor: float = 1e3 * EPS,
) -> list[ConvergenceSeries]:
    r"""Convergence of :math:`r^{(\alpha,\lambda)}` to its limits at α = ±1 and α → ±∞.

    For each λ, each limit α* ∈ {1, −1} approached from below and from above, and
    α* = ±∞, the error

    .. math::

        e(\alpha) = \max_x \big|\log r^{(\alpha,\lambda)}(x)
                    - \log r^{(\alpha^*,\lambda)}(x)\big|

    is computed with :func:`amid_ref.log_alpha_mixture` for distances ``|α − α*|`` in
    ``logspace(-10, -1)`` (α* = ±1) or ``1/|α|`` in ``logspace(-8, -1)`` (α* = ±∞). The
    order is the least-squares slope of ``log e`` against ``log distance`` over the points
    with ``e > floor`` (above float64 rounding) and distance ``≤ 1e-2``.

    What to expect. At α = ±1 the mixture is analytic in α: order 1 (pass if
    ``|order − 1| ≤ 0.1``). At α → ±∞, with β = (1−α)/2 and ``w`` the weight of the larger
    (α → −∞) or smaller (α → +∞) argument, the mean is ``m ≈ max(a, b)·w^{1/β}`` up to
    ``exp(−|β|·|log(a/b)|)/|β|``. For λ ≠ ½ the factor ``w^{1/β}`` differs between
    entries, so ``e = O(1/|α|)``: order 1 (pass if ``|order − 1| ≤ 0.1``). For λ = ½ it
    is common to all entries and cancels in the normalization, leaving an exponential decay
    ``e ≈ C·exp(−κ|β|)/|β|`` with ``κ = min_x |log p(x) − log q(x)|``: the series passes
    if the error reaches the float64 floor and the fitted κ is within 25% of that.

    Parameters
    ----------
    teacher_logits, student_logits : array_like, shape (V,), optional
        Finite logits (default: a fixed 6-token example pair with ``p ≠ q`` everywhere).
    lams : sequence of float
        Teacher weights, each in (0, 1).
    n_points : int
        Points per series (at least 5).
    floor : float
        Errors at or below this are rounding, not truncation; they are left out of fits.

    Returns
    -------
    list of ConvergenceSeries
        Six series per λ: α → 1 (below, above), α → −1 (below, above), α → +∞, α → −∞.
    """

    if n_points < 5:
        raise ValueError(f"n_points must be at least 5, got {n_points}")
    t = EXAMPLE_TEACHER_LOGITS if teacher_logits is None else teacher_logits
    s = EXAMPLE_STUDENT_LOGITS if student_logits is None else student_logits
    lp, lq = _log_softmax(t), _log_softmax(s)
    if not (np.isfinite(lp).all() and np.isfinite(lq).all()):
        raise ValueError("limit_convergence needs finite logits (full support)")
    kappa = float(np.min(np.abs(lp - lq)))
    out: list[ConvergenceSeries] = []
    for lam in lams:
        if not 0.0 < lam < 1.0:
            raise ValueError(f"lams must lie in (0, 1), got {lam!r}")
        for limit, side in (
            (1.0, "below"),
            (1.0, "above"),
            (-1.0, "below"),
            (-1.0, "above"),
            (math.inf, "below"),
            (-math.inf, "above"),
        ):
            ref = amid_ref.log_alpha_mixture(lp, lq, limit, lam)
            if math.isfinite(limit):
                distances = np.logspace(-10, -1, n_points)
                alphas = limit - distances if side == "below" else limit + distances
                label = "|α − 1|" if limit > 0 else "|α + 1|"
            else:
                distances = np.logspace(-8, -1, n_points)
                alphas = math.copysign(1.0, limit) / distances
                label = "1/|α|"
            errors = np.array(
                [
                    float(np.max(np.abs(amid_ref.log_alpha_mixture(lp, lq, a, lam) - ref)))
                    for a in alphas
                ]
            )
            above = errors > floor
            fit = above & (distances <= 1e-2)
            order = _slope(np.log(distances[fit]), np.log(errors[fit])) if fit.any() else math.nan
            decay_rate = expected_rate = math.nan
            exponential = math.isinf(limit) and lam == 0.5
            if not exponential:
                expected: float | None = 1.0
                passed = bool(np.isfinite(order) and abs(order - 1.0) <= 0.1)
                note = f"observed order {order:.3f} (expected 1)"
            else:
                expected = None
                fit = above & (errors < 1e-2)
                betas = np.abs((1.0 - alphas) / 2.0)
                if fit.sum() >= 2:
                    x, y = betas[fit], np.log(errors[fit] * betas[fit])
                    decay_rate = -float(np.polyfit(x, y, 1)[0])
                expected_rate = kappa
                reached = bool(errors[np.argmin(distances)] <= floor)
                passed = reached and abs(decay_rate - kappa) <= 0.25 * kappa
                first = np.abs(alphas[~above]).min() if (~above).any() else math.nan
                note = (
                    "exponential, faster than any power: the factor λ^(1/β) is common to all "
                    f"entries and cancels in r; fitted κ = {decay_rate:.3f} vs predicted "
                    f"min|log p − log q| = {kappa:.3f}; at the float64 floor from "
                    f"|α| ≈ {first:.3g}"
                )
            out.append(
                ConvergenceSeries(
                    limit_alpha=limit,
                    side=side,
                    lam=float(lam),
                    distance_label=label,
                    alphas=alphas,
                    distances=distances,
                    errors=errors,
                    fit=fit,
                    order=order,
                    expected_order=expected,
                    decay_rate=decay_rate,
                    expected_decay_rate=expected_rate,
                    passed=passed,
                    note=note,
                )
            )
    return out
