"""Numerical studies of the reference: limits, optimality, mode covering, oracle sweep.

The functions here compute *data*; :mod:`amid_ref.verify` turns it into the report,
:mod:`amid_ref.plotting` into figures, and the notebooks into a narrative. They define no
formula of the paper themselves: every mixture, divergence, loss and gradient comes from
:mod:`amid_ref` (float64) or from the mpmath oracle :mod:`amid_ref.precise`, every bound
from :mod:`amid_ref.tolerances`. What is defined here is the *experiment*: the grids, the
example distributions, the student families and the optimizer settings.

Studies
-------
* :func:`limit_convergence`: distance of :math:`r^{(\\alpha,\\lambda)}` to its limits at
  α = ±1 and α → ±∞, with the observed order of convergence (slope on a log-log scale).
* :func:`optimality_check`: Theorem 3.4 by direct minimization over student logits
  (L-BFGS with :func:`amid_ref.amid_grad` as the jacobian).
* :func:`loss_along_line`: the loss on a line of student logits through ``q = p``.
* :func:`mode_covering_study`: a unimodal student fitted to a bimodal teacher for several α.
* :func:`validation_sweep`: :mod:`amid_ref` against :mod:`amid_ref.precise` on grids of α
  (including ±∞ and points approaching ±1 from both sides), λ and extreme logits.

SciPy's ``optimize`` and the oracle are imported inside the functions that need them, so
importing this module (as the CLI does) stays cheap.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SWEEP_REFUSALS",
    "SWEEP_SKIPS",
    "ConvergenceSeries",
    "OptimalityCase",
    "StudentFit",
    "SweepCase",
    "SweepPlan",
    "SweepSummary",
    "bimodal_teacher_logits",
    "discretized_gaussian_logits",
    "fit_unimodal_student",
    "limit_convergence",
    "loss_along_line",
    "minimize_student",
    "mode_covering_study",
    "optimality_check",
    "sweep_cases",
    "validation_sweep",
]

#: Float64 machine epsilon.
EPS = float(np.finfo(np.float64).eps)

#: Example teacher/student pair with full support used by the limit study and the figures.
EXAMPLE_TEACHER_LOGITS = np.array([2.0, 1.1, 0.3, -0.4, -1.5, 0.7])
EXAMPLE_STUDENT_LOGITS = np.array([-0.6, 0.9, 1.7, 0.2, -0.8, -1.9])


def _log_softmax(logits) -> np.ndarray:
    from scipy.special import log_softmax

    with np.errstate(invalid="ignore"):
        return log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def _fmt_alpha(alpha: float) -> str:
    """Short, exact-enough text for α values such as 1 − 1e-10 or −inf."""
    if math.isinf(alpha):
        return "+inf" if alpha > 0 else "-inf"
    for centre in (1.0, -1.0):
        delta = alpha - centre
        if delta != 0.0 and abs(delta) < 1e-2:
            sign = "+" if delta > 0 else "-"
            return f"{centre:+g}{sign}{abs(delta):.0e}"
    return f"{alpha:g}"


def _fmt_lam(lam: float) -> str:
    if 0.0 < 1.0 - lam < 1e-3:
        return f"1-{1.0 - lam:.0e}"
    return f"{lam:g}"


# ----------------------------------------------------------------------------------------
# Limit convergence
# ----------------------------------------------------------------------------------------


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
    from amid_ref import log_alpha_mixture

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
            ref = log_alpha_mixture(lp, lq, limit, lam)
            if math.isfinite(limit):
                distances = np.logspace(-10, -1, n_points)
                alphas = limit - distances if side == "below" else limit + distances
                label = "|α − 1|" if limit > 0 else "|α + 1|"
            else:
                distances = np.logspace(-8, -1, n_points)
                alphas = math.copysign(1.0, limit) / distances
                label = "1/|α|"
            errors = np.array(
                [float(np.max(np.abs(log_alpha_mixture(lp, lq, a, lam) - ref))) for a in alphas]
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


# ----------------------------------------------------------------------------------------
# Optimality (Theorem 3.4) by direct minimization
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimalityCase:
    """One direct minimization of an AMiD loss over the student logits.

    Attributes
    ----------
    divergence, order : str
        The divergence name and the argument order (``pr``, ``qr``, ``rp``, ``rq``).
    div_params : dict
        Divergence parameters.
    alpha, lam : float
        The mixture parameters, λ ∈ (0, 1).
    start_distance, distance : float
        Total variation ``½Σ|q − p|`` between teacher and student at the random start and
        at the minimizer found from it.
    max_abs : float
        ``max_x |q*(x) − p(x)|`` at that minimizer.
    loss : float
        The loss there.
    n_iter : int
        L-BFGS iterations.
    outcome : str
        ``"teacher"`` (the minimizer is p), ``"boundary"`` (the student collapsed onto a
        subset S of the tokens and equals p conditioned on S: the loss tends to 0 there
        too, see :func:`optimality_check`) or ``"other"`` (neither: a failure).
    support : int
        Number of tokens where the minimizer has mass above 1e-6.
    restart_distance : float
        For a ``"boundary"`` outcome, TV(q*, p) after restarting near p (NaN otherwise).
    passed : bool
        ``outcome == "teacher"``, or a boundary outcome whose restart near p converges to p.
    """

    divergence: str
    div_params: dict
    order: str
    alpha: float
    lam: float
    start_distance: float
    distance: float
    max_abs: float
    loss: float
    n_iter: int
    outcome: str
    support: int
    restart_distance: float
    passed: bool

    @property
    def label(self) -> str:
        params = ",".join(f"{k}={v:g}" for k, v in self.div_params.items())
        div = f"{self.divergence}({params})" if params else self.divergence
        return f"{div}/{self.order} α={_fmt_alpha(self.alpha)} λ={_fmt_lam(self.lam)}"


def minimize_student(
    teacher_logits,
    student_logits,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    *,
    gtol: float = 1e-12,
    maxiter: int = 2000,
):
    r"""Minimize an AMiD loss over the student logits with L-BFGS-B.

    .. math::

        s^\star = \arg\min_s \; \mathrm{AMiD}(s, t) \quad\text{e.g.}\quad
        D\big(p \,\|\, r^{(\alpha,\lambda)}(p, \operatorname{softmax}(s))\big)

    with :func:`amid_ref.amid_loss` as the objective and :func:`amid_ref.amid_grad` as its
    jacobian.

    Parameters
    ----------
    teacher_logits, student_logits : array_like, shape (V,)
        Teacher logits and the starting student logits.
    alpha, lam, divergence, order, div_params
        As in :func:`amid_ref.amid_loss`.
    gtol, maxiter : float, int
        L-BFGS-B stopping rules (the function tolerance is 0, so it stops on the gradient,
        on the iteration cap, or when the line search can make no more progress).

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x`` holds the minimizing logits, shape (V,).
    """
    from scipy.optimize import minimize

    import amid_ref

    t = np.asarray(teacher_logits, dtype=np.float64)
    kwargs = {
        "alpha": alpha,
        "lam": lam,
        "divergence": divergence,
        "order": order,
        "div_params": div_params,
    }

    def fun(s):
        return float(amid_ref.amid_loss(s, t, **kwargs))

    def jac(s):
        return np.asarray(amid_ref.amid_grad(s, t, **kwargs), dtype=np.float64)

    return minimize(
        fun,
        np.asarray(student_logits, dtype=np.float64),
        jac=jac,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxiter": maxiter, "maxcor": 20},
    )


#: (divergence, params) pairs of the optimality check; TV is left out because L-BFGS needs
#: a smooth objective and TV has a kink at its minimum.
OPTIMALITY_DIVERGENCES: tuple[tuple[str, dict], ...] = (
    ("kl", {}),
    ("js", {"beta": 0.5}),
    ("hellinger", {}),
    ("chi2", {}),
    ("amari", {"alpha": 0.5}),
    ("renyi", {"order": 2.0}),
    ("ab", {"alpha": 0.2, "beta": 0.7}),
)


def optimality_check(
    quick: bool = False,
    *,
    seed: int = 0,
    vocab: int = 6,
    tol: float = 1e-6,
    progress: Callable[[str], None] | None = None,
) -> list[OptimalityCase]:
    r"""Theorem 3.4 by direct minimization: the minimizer of the loss is ``q = p``.

    For each divergence in :data:`OPTIMALITY_DIVERGENCES` (quick: kl, js, ab), each
    order, several finite α (at α = ±∞ the loss is not differentiable at ``q = p``) and
    λ ∈ (0, 1), the AMiD loss is minimized over the student logits from a random start
    (:func:`minimize_student`) and the minimizer is compared with the teacher:

    .. math::

        \mathrm{TV}(q^\star, p) = \tfrac12 \sum_x |q^\star(x) - p(x)| \le \mathrm{tol}.

    The loss is quadratic around its minimum, so the objective alone resolves the
    minimizer only to ``~sqrt(eps) ≈ 1e-8``; ``tol = 1e-6`` leaves room for the slow
    directions (the curvature scales like ``(1−λ)²``).

    Boundary infima. For α ≥ 1 the mixture lives on the intersection of the supports, so
    a student concentrated on a subset S of the tokens gives ``r`` on S only; if the student
    equals p conditioned on S then ``r = q`` exactly. Orders ``qr`` and ``rq`` (which
    compare r with the student) then have loss → 0 as the student collapses onto S, for
    every nonempty S: the infimum 0 is attained at ``q = p`` (Theorem 3.4, strictly
    positive students) but also approached at the boundary of the simplex. Such a run is
    classified ``"boundary"`` and the minimization is restarted near p (logits
    ``t + 0.3·noise``); the case passes if that restart converges to p, i.e. ``q = p``
    is still a strict local minimizer.

    Parameters
    ----------
    quick : bool
        Three divergences (kl, js, ab), α ∈ {−3, 1, 3}, λ = 0.3 instead of seven,
        α ∈ {−5, −1, 0, 1, 3}, λ ∈ {0.1, 0.9}.
    seed : int
        Seed of the random teacher and starting student logits.
    vocab : int
        Vocabulary size V.
    tol : float
        Threshold on the total variation between minimizer and target.
    progress : callable, optional
        Called with a short text after each divergence.

    Returns
    -------
    list of OptimalityCase
    """
    import amid_ref

    rng = np.random.default_rng(seed)
    teacher = 1.5 * rng.standard_normal(vocab)
    lp = _log_softmax(teacher)
    p = np.exp(lp)
    if quick:
        divergences = tuple(d for d in OPTIMALITY_DIVERGENCES if d[0] in ("kl", "js", "ab"))
        alphas: tuple[float, ...] = (-3.0, 1.0, 3.0)
        lams: tuple[float, ...] = (0.3,)
    else:
        divergences = OPTIMALITY_DIVERGENCES
        alphas = (-5.0, -1.0, 0.0, 1.0, 3.0)
        lams = (0.1, 0.9)

    def tv(q):
        return float(amid_ref.divergence(q, p, "tv"))

    out: list[OptimalityCase] = []
    for name, params in divergences:
        start = time.perf_counter()
        for order in amid_ref.ORDERS:
            for alpha in alphas:
                for lam in lams:
                    s0 = 1.5 * rng.standard_normal(vocab)
                    res = minimize_student(teacher, s0, alpha, lam, name, order, params)
                    q_star = np.exp(_log_softmax(res.x))
                    dist = tv(q_star)
                    on = q_star > 1e-6
                    restart = math.nan
                    if dist <= tol:
                        outcome = "teacher"
                    else:
                        conditioned = np.where(on, p, 0.0) / p[on].sum()
                        at_boundary = (
                            not on.all()
                            and float(amid_ref.divergence(q_star, conditioned, "tv")) <= 1e-3
                        )
                        outcome = "boundary" if at_boundary else "other"
                        if at_boundary:
                            near = teacher + 0.3 * rng.standard_normal(vocab)
                            res2 = minimize_student(teacher, near, alpha, lam, name, order, params)
                            restart = tv(np.exp(_log_softmax(res2.x)))
                    out.append(
                        OptimalityCase(
                            divergence=name,
                            div_params=dict(params),
                            order=order,
                            alpha=alpha,
                            lam=lam,
                            start_distance=tv(np.exp(_log_softmax(s0))),
                            distance=dist,
                            max_abs=float(np.max(np.abs(q_star - p))),
                            loss=float(res.fun),
                            n_iter=int(res.nit),
                            outcome=outcome,
                            support=int(on.sum()),
                            restart_distance=restart,
                            passed=outcome == "teacher"
                            or (outcome == "boundary" and restart <= tol),
                        )
                    )
        if progress is not None:
            mine = [c for c in out if c.divergence == name]
            n_b = sum(c.outcome == "boundary" for c in mine)
            n_fail = sum(not c.passed for c in mine)
            progress(
                f"optimality {name}: {len(mine)} minimizations, {n_b} boundary infima, "
                f"{n_fail} failed ({time.perf_counter() - start:.1f} s)"
            )
    return out


def loss_along_line(
    teacher_logits,
    direction,
    ts,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
) -> np.ndarray:
    r"""The AMiD loss on the line of student logits ``s(t) = teacher_logits + t·direction``.

    .. math::

        L(t) = \mathrm{AMiD}\big(s(t), \text{teacher\_logits}\big),

    so ``t = 0`` is ``q = p``, where Theorem 3.4 puts the minimum (``L(0) = 0``).

    Parameters
    ----------
    teacher_logits, direction : array_like, shape (V,)
        A point and a direction in logit space (``direction`` not constant, or the line is
        a single distribution).
    ts : array_like, shape (n,)
        Positions on the line.
    alpha, lam, divergence, order, div_params
        As in :func:`amid_ref.amid_loss`.

    Returns
    -------
    ndarray, shape (n,)
        The loss at each position (one batched call of :func:`amid_ref.amid_loss`).
    """
    import amid_ref

    t = np.asarray(teacher_logits, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    students = t[None, :] + ts[:, None] * d[None, :]
    teachers = np.broadcast_to(t, students.shape)
    return np.asarray(
        amid_ref.amid_loss(students, teachers, alpha, lam, divergence, order, div_params),
        dtype=np.float64,
    )


# ----------------------------------------------------------------------------------------
# Mode covering: a unimodal student fitted to a bimodal teacher
# ----------------------------------------------------------------------------------------


def discretized_gaussian_logits(grid, mean: float, log_std: float) -> np.ndarray:
    r"""Logits of a Gaussian discretized on ``grid``: :math:`s_x = -(x-\mu)^2 / (2\sigma^2)`.

    Parameters
    ----------
    grid : array_like, shape (V,)
        Token positions on a line.
    mean, log_std : float
        μ and log σ.

    Returns
    -------
    ndarray, shape (V,)
        Logits (unnormalized; the softmax of them is the student distribution).
    """
    x = np.asarray(grid, dtype=np.float64)
    return -0.5 * ((x - mean) * np.exp(-log_std)) ** 2


def bimodal_teacher_logits(
    grid,
    modes: Sequence[tuple[float, float, float]] = ((14.0, 2.5, 0.65), (42.0, 3.5, 0.35)),
) -> np.ndarray:
    r"""Log-probabilities of a mixture of discretized Gaussians on ``grid``.

    .. math::

        p(x) \propto \sum_k w_k \, \mathrm{softmax}\big(-(x-\mu_k)^2/(2\sigma_k^2)\big)_x

    Parameters
    ----------
    grid : array_like, shape (V,)
        Token positions.
    modes : sequence of (mean, std, weight)
        One triple per mode; weights are normalized.

    Returns
    -------
    ndarray, shape (V,)
        Normalized log-probabilities (usable as teacher logits).
    """
    from scipy.special import logsumexp

    x = np.asarray(grid, dtype=np.float64)
    w = np.array([m[2] for m in modes], dtype=np.float64)
    if (w <= 0).any():
        raise ValueError("mode weights must be positive")
    comps = [
        np.log(wk / w.sum()) + _log_softmax(discretized_gaussian_logits(x, mu, math.log(sd)))
        for (mu, sd, _), wk in zip(modes, w, strict=True)
    ]
    return logsumexp(np.stack(comps), axis=0)


@dataclass(frozen=True)
class StudentFit:
    """A discretized-Gaussian student fitted to a teacher by minimizing an AMiD loss.

    Attributes
    ----------
    alpha, lam : float
        Mixture parameters of the loss.
    divergence, order : str
        Divergence and order of the loss.
    mean, std : float
        Fitted μ and σ of the student.
    loss : float
        The loss at the fit.
    student_log_probs : ndarray, shape (V,)
        log q of the fitted student.
    mode_mass : tuple of float
        Student mass in each teacher mode's region (the grid split at the midpoints
        between consecutive modes).
    teacher_mode_mass : tuple of float
        Teacher mass in the same regions.
    forward_kl, reverse_kl : float
        KL(p‖q) (large when a mode is missed) and KL(q‖p) (large when mass is put
        between modes).
    """

    alpha: float
    lam: float
    divergence: str
    order: str
    mean: float
    std: float
    loss: float
    student_log_probs: np.ndarray
    mode_mass: tuple[float, ...]
    teacher_mode_mass: tuple[float, ...]
    forward_kl: float
    reverse_kl: float

    @property
    def covered(self) -> tuple[bool, ...]:
        """Mode k counts as covered when the student puts at least half the teacher's mass
        of that region on it."""
        return tuple(
            q >= 0.5 * p for q, p in zip(self.mode_mass, self.teacher_mode_mass, strict=True)
        )


def fit_unimodal_student(
    grid,
    teacher_logits,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    *,
    mode_centres: Sequence[float] = (14.0, 42.0),
    starts: Iterable[tuple[float, float]] | None = None,
) -> StudentFit:
    r"""Fit a discretized Gaussian student (μ, log σ) to a teacher by minimizing AMiD.

    .. math::

        (\mu^\star, \sigma^\star) = \arg\min_{\mu,\sigma}
        \mathrm{AMiD}\big(s_{\mu,\sigma}, t\big),\qquad s_{\mu,\sigma}(x) = -(x-\mu)^2/(2\sigma^2)

    L-BFGS-B over (μ, log σ), with the gradient from :func:`amid_ref.amid_grad` by the chain
    rule, from several starts (one on each mode, one between them, narrow and wide); the
    best local minimum is kept, because mode-seeking losses have one local minimum per mode.

    Parameters
    ----------
    grid : array_like, shape (V,)
        Token positions.
    teacher_logits : array_like, shape (V,)
        Teacher logits (e.g. :func:`bimodal_teacher_logits`).
    alpha, lam, divergence, order, div_params
        As in :func:`amid_ref.amid_loss`.
    mode_centres : sequence of float
        Teacher mode positions, used for the starts and to split the grid into regions.
    starts : iterable of (mean, log_std), optional
        Starting points (default: derived from ``mode_centres``).

    Returns
    -------
    StudentFit
    """
    from scipy.optimize import minimize

    import amid_ref

    x = np.asarray(grid, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    centres = sorted(float(c) for c in mode_centres)
    kwargs = {
        "alpha": alpha,
        "lam": lam,
        "divergence": divergence,
        "order": order,
        "div_params": div_params,
    }
    if starts is None:
        spread = math.log(max(1.0, (centres[-1] - centres[0]) / 2.0))
        mids = [*centres, 0.5 * (centres[0] + centres[-1])]
        starts = [(m, ls) for m in mids for ls in (math.log(2.0), spread)]

    def fun(theta):
        mean, log_std = theta
        s = discretized_gaussian_logits(x, mean, log_std)
        loss = float(amid_ref.amid_loss(s, t, **kwargs))
        g = np.asarray(amid_ref.amid_grad(s, t, **kwargs), dtype=np.float64)
        z = (x - mean) * np.exp(-log_std)
        # ds/dμ = z/σ, ds/dlogσ = z²
        return loss, np.array([float(g @ (z * np.exp(-log_std))), float(g @ z**2)])

    best = None
    for mean0, log_std0 in starts:
        res = minimize(
            fun,
            np.array([mean0, log_std0]),
            jac=True,
            method="L-BFGS-B",
            bounds=[(x.min(), x.max()), (math.log(0.3), math.log(x.max() - x.min()))],
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    mean, log_std = (float(v) for v in best.x)
    lq = _log_softmax(discretized_gaussian_logits(x, mean, log_std))
    lp = _log_softmax(t)
    cuts = [0.5 * (a + b) for a, b in itertools.pairwise(centres)]
    region = np.searchsorted(np.asarray(cuts), x)
    q, p = np.exp(lq), np.exp(lp)
    return StudentFit(
        alpha=float(alpha),
        lam=float(lam),
        divergence=divergence,
        order=order,
        mean=mean,
        std=math.exp(log_std),
        loss=float(best.fun),
        student_log_probs=lq,
        mode_mass=tuple(float(q[region == k].sum()) for k in range(len(centres))),
        teacher_mode_mass=tuple(float(p[region == k].sum()) for k in range(len(centres))),
        forward_kl=float(amid_ref.divergence(p, q, "kl")),
        reverse_kl=float(amid_ref.divergence(q, p, "kl")),
    )


#: The vocabulary of the mode-covering study: 56 tokens on a line.
MODE_GRID = np.arange(56, dtype=np.float64)


def mode_covering_study(
    alphas: Sequence[float] = (-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0),
    lam: float = 0.1,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
) -> list[StudentFit]:
    """Fit the unimodal student to the default bimodal teacher for each α.

    Teacher: :func:`bimodal_teacher_logits` on :data:`MODE_GRID` (modes at 14 and 42,
    weights 0.65 and 0.35). The paper's claim under test: larger α is more mode-covering
    (wider student, more mass on the minor mode, smaller KL(p‖q)).

    Returns
    -------
    list of StudentFit
        One per α, in the order given.
    """
    teacher = bimodal_teacher_logits(MODE_GRID)
    return [
        fit_unimodal_student(MODE_GRID, teacher, a, lam, divergence, order, div_params)
        for a in alphas
    ]


# ----------------------------------------------------------------------------------------
# Validation sweep: amid_ref (float64) against amid_ref.precise (mpmath)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepCase:
    """A teacher/student pair of logits of the validation sweep.

    Attributes
    ----------
    name : str
        Short identifier used in the report.
    teacher_logits, student_logits : ndarray, shape (V,)
        Logits; ``-inf`` marks a masked token (probability exactly 0).
    description : str
        What the case exercises.
    """

    name: str
    teacher_logits: np.ndarray
    student_logits: np.ndarray
    description: str


def sweep_cases(seed: int = 20260101) -> list[SweepCase]:
    """The logit pairs of the validation sweep (V = 6).

    Random logits; a peaked teacher; logits spanning 1e4 (probabilities below the float64
    range, exact only in the log domain); masked (−inf) tokens in teacher, student and
    both; a one-hot teacher; a shift of the logits by 1e4 (must not matter); ``q = p``
    exactly and to within 1e-7 (the optimum of Theorem 3.4, where losses vanish).
    """
    rng = np.random.default_rng(seed)
    ninf = -np.inf
    t_rand = 2.0 * rng.standard_normal(6)
    s_rand = 2.0 * rng.standard_normal(6)
    return [
        SweepCase("random", t_rand, s_rand, "standard normal logits ×2"),
        SweepCase(
            "peaked",
            np.array([9.0, 0.5, -1.0, -2.0, 0.0, -3.0]),
            2.0 * rng.standard_normal(6),
            "teacher with 99.9% of its mass on one token",
        ),
        SweepCase(
            "wide-span",
            np.array([0.0, -30.0, -700.0, -800.0, -5000.0, -1.0e4]),
            np.array([-1.0e4, -5.0, 0.0, -750.0, -2.0, -40.0]),
            "logits spanning 1e4: probabilities underflow to 0 outside the log domain",
        ),
        SweepCase(
            "masked",
            np.array([1.0, ninf, 0.3, -0.5, ninf, 2.0]),
            np.array([0.2, 1.5, ninf, -1.0, ninf, 0.7]),
            "−inf logits: token 1 masked for the teacher, 2 for the student, 4 for both",
        ),
        SweepCase(
            "one-hot",
            np.array([0.0, ninf, ninf, ninf, ninf, ninf]),
            2.0 * rng.standard_normal(6),
            "one-hot teacher",
        ),
        SweepCase(
            "shifted",
            t_rand + 1.0e4,
            s_rand - 1.0e4,
            "the random case with logits shifted by ±1e4",
        ),
        SweepCase("equal", t_rand.copy(), t_rand.copy(), "q = p exactly"),
        SweepCase(
            "near-equal",
            t_rand.copy(),
            t_rand + 1e-7 * rng.standard_normal(6),
            "q = p to within 1e-7 in the logits",
        ),
    ]


#: The sweep's α grid: ±inf, huge |α|, the special values, and points approaching ±1
#: from both sides (1e-3 down to 1e-12).
SWEEP_ALPHAS_FULL: tuple[float, ...] = (
    -math.inf, -1e6, -50.0, -5.0, -3.0,
    -1.0 - 1e-3, -1.0 - 1e-8, -1.0, -1.0 + 1e-8, -1.0 + 1e-3,
    -0.5, 0.0, 0.5,
    1.0 - 1e-3, 1.0 - 1e-8, 1.0 - 1e-12, 1.0, 1.0 + 1e-12, 1.0 + 1e-8, 1.0 + 1e-3,
    2.0, 3.0, 5.0, 50.0, 1e6, math.inf,
)  # fmt: skip
SWEEP_ALPHAS_QUICK: tuple[float, ...] = (
    -math.inf, -50.0, -3.0, -1.0 - 1e-8, -1.0, -1.0 + 1e-8, 0.0,
    1.0 - 1e-10, 1.0, 1.0 + 1e-10, 3.0, 50.0, math.inf,
)  # fmt: skip
#: λ grid: the endpoints, 1e-15 from them, and interior points.
SWEEP_LAMS_FULL: tuple[float, ...] = (0.0, 1e-15, 0.1, 0.5, 0.9, 1.0 - 1e-15, 1.0)
SWEEP_LAMS_QUICK: tuple[float, ...] = (0.0, 1e-15, 0.5, 1.0 - 1e-15, 1.0)


def _pearson_generator(u):
    """f(u) = (u − 1)², the generator of Pearson's χ²; plain operators only, so it runs on
    float64 arrays and on mpmath numbers alike."""
    return (u - 1) ** 2


def _pearson_generator_prime(u):
    return 2 * (u - 1)


#: (name, params) pairs of the divergence part of the sweep: every divergence, with
#: parameters at and near their limits (Amari γ → ±1, Rényi ρ → 1, AB a_ → 0, a_ + b_ = 0).
SWEEP_DIVERGENCES: tuple[tuple[str, dict], ...] = (
    ("kl", {}),
    ("js", {"beta": 0.5}),
    ("js", {"beta": 0.1}),
    ("tv", {}),
    ("hellinger", {}),
    ("chi2", {}),
    ("amari", {"alpha": 0.5}),
    ("amari", {"alpha": -1.0 + 1e-9}),
    ("amari", {"alpha": 1.0 - 1e-9}),
    ("amari", {"alpha": 3.0}),
    ("renyi", {"order": 0.5}),
    ("renyi", {"order": 1.0 + 1e-9}),
    ("renyi", {"order": 2.0}),
    ("ab", {"alpha": 0.2, "beta": 0.7}),
    ("ab", {"alpha": 1.0, "beta": 0.0}),
    ("ab", {"alpha": 1e-9, "beta": 0.7}),
    ("ab", {"alpha": 0.5, "beta": -0.5}),
    ("f", {"f": _pearson_generator, "f_prime": _pearson_generator_prime}),
)


#: Combinations the sweep does not compare, each with the documented reason (a skip is data,
#: reported with its reason, never silent): (divergence name, case name) -> reason.
SWEEP_SKIPS: dict[tuple[str, str], str] = {
    ("f", "wide-span"): (
        "a user generator f is evaluated in float64 at u = a/b; on the wide-span case u "
        "reaches e^470 and beyond, where f(u) overflows and amid_ref refuses log ratios "
        "> 709 by design (ValueError: use a named divergence, which works in the log "
        "domain), while the oracle evaluates f at 50 digits"
    ),
}


#: Documented refusals: an amid_ref ValueError whose message contains the key is the
#: library declining, by design, an input it cannot evaluate in float64 (the oracle, at 50
#: digits, can). Counted as skipped with the reason, never as a pass; any other ValueError
#: where the oracle gives a value is a failure.
SWEEP_REFUSALS: dict[str, str] = {
    "exceeds the float64 range": (
        "divergence 'f' with a user generator: amid_ref refuses ratios a/b beyond the float64 "
        "range (log ratio > 709), which occur for α within ~1e-6 of 1 with masked tokens "
        "(r has mass λ^(1/β)·a ≈ e^(-1e10) there) and for logits spanning 1e4"
    ),
}


@dataclass
class SweepSummary:
    """Outcome of one quantity of the validation sweep.

    Attributes
    ----------
    quantity : str
        ``log_mixture``, ``mixture``, ``divergence``, ``loss`` or ``grad``: the key of the
        tolerance ``("reference", quantity, "float64")``.
    tolerance : amid_ref.tolerances.Tolerance
        The bound applied.
    n_checks : int
        Number of (input, parameters) combinations compared.
    n_failed : int
        Combinations where :func:`amid_ref.tolerances.assert_within` failed, or where one
        side raised and the other did not.
    n_oracle_errors : int
        Combinations the oracle could not evaluate (kept apart: they are not failures of
        ``amid_ref``, but they are checks that did not run).
    n_undefined : int
        Combinations both sides rejected with ``ValueError`` (e.g. Z = 0 for α ≥ 1 and
        disjoint supports): agreement on an undefined value.
    n_skipped : int
        Combinations not compared because of a documented limitation
        (:data:`SWEEP_SKIPS`, :data:`SWEEP_REFUSALS`), with the reasons in
        ``skip_reasons``.
    worst_ratio : float
        Largest ``error / bound`` seen (≤ 1 means within tolerance; inf for an
        infinity or NaN mismatch).
    worst_case : str
        The combination where it occurred, with got and want.
    failures : list of str
        Up to 20 failure messages.
    seconds : float
        Wall time.
    """

    quantity: str
    tolerance: object
    n_checks: int = 0
    n_failed: int = 0
    n_oracle_errors: int = 0
    n_undefined: int = 0
    n_skipped: int = 0
    worst_ratio: float = 0.0
    worst_case: str = ""
    failures: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.n_failed == 0 and self.n_oracle_errors == 0 and self.n_checks > 0

    def _fail(self, message: str) -> None:
        self.n_failed += 1
        if len(self.failures) < 20:
            self.failures.append(message)

    def _skip(self, reason: str) -> None:
        self.n_skipped += 1
        if reason not in self.skip_reasons:
            self.skip_reasons.append(reason)


def _oracle_to_float(x) -> np.ndarray:
    """Round the oracle's mpf output to float64 with ``float(mpf)`` (round to nearest).

    Used instead of ``precise.to_float`` because the sweep produces values such as
    ``exp(-4.6e10)``, whose exact conversion is needlessly expensive; ``float`` gives 0.0.
    """
    arr = np.asarray(x, dtype=object)
    return np.array([float(v) for v in arr.flat], dtype=np.float64).reshape(arr.shape)


def _error_ratio(got: np.ndarray, want: np.ndarray, tol) -> tuple[float, tuple]:
    """Largest error/bound over the entries and where it is (for reporting; the verdict
    itself comes from :func:`amid_ref.tolerances.assert_within`)."""
    got = np.atleast_1d(np.asarray(got, dtype=np.float64))
    want = np.atleast_1d(np.asarray(want, dtype=np.float64))
    if got.shape != want.shape:
        return math.inf, ()
    scale = np.abs(want)
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        bound = tol.atol + tol.rtol * np.where(np.isfinite(scale), scale, 0.0)
        err = np.abs(got - want)
        ratio = np.where(
            np.isinf(want) | np.isinf(got),
            np.where(got == want, 0.0, np.inf),
            np.where(err == 0.0, 0.0, err / bound),
        )
    ratio = np.where(np.isnan(ratio) | np.isnan(got), np.inf, ratio)
    i = tuple(np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    return float(ratio[i]), i


@dataclass(frozen=True)
class SweepPlan:
    """The grids of one run of :func:`validation_sweep` (see :data:`SWEEP_PLANS`)."""

    cases: tuple[str, ...]
    alphas: tuple[float, ...]
    lams: tuple[float, ...]
    loss_cases: tuple[str, ...]
    loss_alphas: tuple[float, ...]
    loss_lams: tuple[float, ...]
    loss_divergences: tuple[tuple[str, dict], ...]
    temperatures: tuple[float, ...]
    grad_cases: tuple[str, ...]
    grad_alphas: tuple[float, ...]
    grad_lams: tuple[float, ...]
    grad_divergences: tuple[tuple[str, dict], ...]


def _divs(*names_params: tuple[str, dict]) -> tuple[tuple[str, dict], ...]:
    for item in names_params:
        if item not in SWEEP_DIVERGENCES:
            raise KeyError(item)
    return tuple(names_params)


_CORE_DIVERGENCES = _divs(
    ("kl", {}),
    ("js", {"beta": 0.5}),
    ("chi2", {}),
    ("amari", {"alpha": 0.5}),
    ("renyi", {"order": 0.5}),
    ("ab", {"alpha": 0.2, "beta": 0.7}),
)

#: ``"quick"`` (about 15 s on one core) and ``"full"`` (about 4 minutes) grids. The oracle
#: costs ~5 ms per mixture or loss and ~60 ms per gradient (V = 6), which sets the sizes.
SWEEP_PLANS: dict[str, SweepPlan] = {
    "quick": SweepPlan(
        cases=("random", "wide-span", "masked", "one-hot", "equal"),
        alphas=SWEEP_ALPHAS_QUICK,
        lams=SWEEP_LAMS_QUICK,
        loss_cases=("random", "wide-span", "masked", "one-hot"),
        loss_alphas=(-math.inf, -3.0, 1.0 - 1e-10, 1.0, 3.0, math.inf),
        loss_lams=(0.3,),
        loss_divergences=_CORE_DIVERGENCES,
        temperatures=(1.0,),
        grad_cases=("random", "masked"),
        grad_alphas=(-3.0, 1.0 - 1e-10, 1.0),
        grad_lams=(0.3,),
        grad_divergences=_divs(
            ("kl", {}),
            ("js", {"beta": 0.5}),
            ("amari", {"alpha": 0.5}),
            ("ab", {"alpha": 0.2, "beta": 0.7}),
        ),
    ),
    "full": SweepPlan(
        cases=tuple(c.name for c in sweep_cases()),
        alphas=SWEEP_ALPHAS_FULL,
        lams=SWEEP_LAMS_FULL,
        loss_cases=tuple(c.name for c in sweep_cases()),
        loss_alphas=(-math.inf, -5.0, -1.0 - 1e-8, -1.0, 0.0, 1.0 - 1e-10, 1.0, 3.0, math.inf),
        loss_lams=(0.0, 0.1, 0.9),
        loss_divergences=SWEEP_DIVERGENCES,
        temperatures=(1.0, 2.0),
        grad_cases=("random", "masked", "peaked", "near-equal"),
        grad_alphas=(-math.inf, -5.0, -1.0, 0.0, 1.0 - 1e-10, 1.0, 3.0),
        grad_lams=(0.1, 0.9),
        grad_divergences=(*_CORE_DIVERGENCES, ("hellinger", {}), SWEEP_DIVERGENCES[-1]),
    ),
}


def _div_label(name: str, params: dict) -> str:
    shown = ",".join(f"{k}={v:g}" for k, v in params.items() if not callable(v))
    return f"{name}({shown})" if shown else name


def validation_sweep(
    quick: bool = False,
    *,
    dps: int = 50,
    progress: Callable[[str], None] | None = None,
    plan: SweepPlan | None = None,
    quantities: Sequence[str] = ("log_mixture", "mixture", "divergence", "loss", "grad"),
    on_item: Callable[[str, int, int], None] | None = None,
) -> list[SweepSummary]:
    r"""Compare :mod:`amid_ref` with the mpmath oracle :mod:`amid_ref.precise` on grids.

    Every comparison uses the tolerance ``("reference", quantity, "float64")`` of
    :mod:`amid_ref.tolerances`:

    .. math::

        |\text{got} - \text{want}| \le \text{atol} + \text{rtol}\cdot\text{scale}

    (``scale = max(1, |want|)`` for the log-domain mixture entries), with infinities
    required to agree exactly. Grids (:data:`SWEEP_PLANS`): the logit pairs of
    :func:`sweep_cases` (extreme, masked, one-hot, equal); α in :data:`SWEEP_ALPHAS_FULL`
    (±inf, ±1e6, and ±1 approached from both sides down to 1e-12) and λ in
    :data:`SWEEP_LAMS_FULL` (0, 1e-15, …, 1 − 1e-15, 1) for the mixtures; every divergence
    with parameters at and near their limits (:data:`SWEEP_DIVERGENCES`) in the probability
    and the log domain; divergences × the four orders × α × λ (× temperature) for the loss,
    and a sub-grid for the gradient (the oracle differentiates its loss numerically, an
    identity independent of Proposition 3.5). Gradients are compared only where both
    losses are finite.

    A combination both sides reject with ``ValueError`` (Z = 0) counts as agreement
    (``n_undefined``); an exception of the oracle other than ``ValueError`` is kept apart
    (``n_oracle_errors``).

    Parameters
    ----------
    quick : bool
        The ``"quick"`` plan instead of ``"full"``.
    dps : int
        Decimal digits of the oracle.
    progress : callable, optional
        Called with a one-line summary after each quantity.
    plan : SweepPlan, optional
        Custom grids (overrides ``quick``).
    quantities : sequence of str
        Which parts to run.
    on_item : callable, optional
        Called as ``on_item(quantity, done, total)`` at the start of each quantity
        (``done = 0``) and after each of its items (a logit case; a case and divergence
        for the loss and the gradient), for a progress display.

    Returns
    -------
    list of SweepSummary
        One per quantity, in the order given.
    """
    import amid_ref
    from amid_ref import precise
    from amid_ref.tolerances import assert_within, tolerance

    if plan is None:
        plan = SWEEP_PLANS["quick" if quick else "full"]
    by_name = {c.name: c for c in sweep_cases()}
    logs = {
        name: (_log_softmax(c.teacher_logits), _log_softmax(c.student_logits))
        for name, c in by_name.items()
    }

    def compare(summary: SweepSummary, what: str, ours: Callable, oracle: Callable, select=None):
        """Run both sides; record agreement, disagreement or an oracle error."""
        summary.n_checks += 1
        want_exc = got_exc = None
        try:
            want = _oracle_to_float(oracle())
        except ValueError as exc:
            want_exc = exc
        except Exception as exc:  # the oracle's own failure: kept apart
            summary.n_oracle_errors += 1
            if len(summary.failures) < 20:
                summary.failures.append(f"oracle error at {what}: {type(exc).__name__}: {exc}")
            return
        try:
            got = np.asarray(ours(), dtype=np.float64)
        except ValueError as exc:
            got_exc = exc
        except Exception as exc:
            summary._fail(f"{what}: amid_ref raised {type(exc).__name__}: {exc}")
            return
        if want_exc is not None and got_exc is not None:
            summary.n_undefined += 1
            return
        if got_exc is not None:
            refusal = next(
                (reason for phrase, reason in SWEEP_REFUSALS.items() if phrase in str(got_exc)),
                None,
            )
            if refusal is not None:
                summary.n_checks -= 1
                summary._skip(refusal)
                return
            summary._fail(f"{what}: amid_ref raised ValueError ({got_exc}); the oracle did not")
            return
        if want_exc is not None:
            summary._fail(f"{what}: the oracle raised ValueError ({want_exc}); amid_ref gave {got}")
            return
        if select is not None:
            mask = select(want)
            got, want = got[mask], want[mask]
        ratio, idx = _error_ratio(got, want, summary.tolerance)
        if ratio >= summary.worst_ratio and idx:
            g, w = np.atleast_1d(got)[idx], np.atleast_1d(want)[idx]
            entry = f", entry {idx[0]}" if np.ndim(got) else ""
            summary.worst_ratio = ratio
            summary.worst_case = f"{what}{entry}: got {float(g)!r}, want {float(w)!r}"
        message = None
        try:
            with np.errstate(invalid="ignore"):  # inf - inf inside the comparison
                assert_within(got, want, summary.tolerance, what=what)
        except AssertionError as exc:
            message = str(exc)
        if message is None and ratio > 1.0:  # e.g. NaN from the oracle
            message = f"{what}: error/bound = {ratio:.3g} (got {got!r}, want {want!r})"
        if message is not None:
            summary._fail(message)

    def run(quantity: str, body: Callable[[SweepSummary], None]) -> SweepSummary:
        summary = SweepSummary(quantity, tolerance("reference", quantity, "float64"))
        start = time.perf_counter()
        body(summary)
        summary.seconds = time.perf_counter() - start
        if progress is not None:
            progress(
                f"sweep {quantity}: {summary.n_checks} checks, {summary.n_failed} failed, "
                f"{summary.n_oracle_errors} oracle errors, worst error = "
                f"{summary.worst_ratio:.3g} × bound ({summary.seconds:.1f} s)"
            )
        return summary

    def ticker(quantity: str, total: int) -> Callable[[], None]:
        done = 0
        if on_item is not None:
            on_item(quantity, 0, total)

        def tick() -> None:
            nonlocal done
            done += 1
            if on_item is not None:
                on_item(quantity, done, total)

        return tick

    def tag(case, alpha, lam, extra=""):
        return f"case={case} α={_fmt_alpha(alpha)} λ={_fmt_lam(lam)}{extra}"

    def log_mixture(summary):
        tick = ticker("log_mixture", len(plan.cases))
        for name in plan.cases:
            lp, lq = logs[name]
            for alpha in plan.alphas:
                for lam in plan.lams:
                    compare(
                        summary,
                        tag(name, alpha, lam),
                        lambda lp=lp, lq=lq, a=alpha, l=lam: amid_ref.log_alpha_mixture(
                            lp, lq, a, l
                        ),
                        lambda lp=lp, lq=lq, a=alpha, l=lam: precise.log_alpha_mixture(
                            lp, lq, a, l, dps=dps
                        ),
                    )
            tick()

    def mixture(summary):
        tick = ticker("mixture", len(plan.cases))
        for name in plan.cases:
            p, q = (np.exp(x) for x in logs[name])
            for alpha in plan.alphas:
                for lam in plan.lams:
                    compare(
                        summary,
                        tag(name, alpha, lam),
                        lambda p=p, q=q, a=alpha, l=lam: amid_ref.alpha_mixture(p, q, a, l),
                        lambda p=p, q=q, a=alpha, l=lam: precise.alpha_mixture(p, q, a, l, dps=dps),
                        # the table applies this bound above 1e-300 (subnormals below)
                        select=lambda w: (w >= 1e-300) | (w == 0.0),
                    )
            tick()

    def divergences(summary):
        tick = ticker("divergence", len(plan.cases))
        for name in plan.cases:
            lp, lq = logs[name]
            for a_name, b_name, la, lb in (("p", "q", lp, lq), ("q", "p", lq, lp)):
                for div, params in SWEEP_DIVERGENCES:
                    if (div, name) in SWEEP_SKIPS:
                        summary._skip(SWEEP_SKIPS[div, name])
                        continue
                    for log_input in (False, True):
                        a, b = (la, lb) if log_input else (np.exp(la), np.exp(lb))
                        domain = " log_input" if log_input else ""
                        compare(
                            summary,
                            f"case={name} {_div_label(div, params)}({a_name}‖{b_name}){domain}",
                            lambda a=a, b=b, d=div, pr=params, li=log_input: amid_ref.divergence(
                                a, b, d, log_input=li, **pr
                            ),
                            lambda a=a, b=b, d=div, pr=params, li=log_input: precise.divergence(
                                a, b, d, log_input=li, dps=dps, **pr
                            ),
                        )
            tick()

    def loss(summary):
        tick = ticker("loss", len(plan.loss_cases) * len(plan.loss_divergences))
        for name in plan.loss_cases:
            c = by_name[name]
            for div, params in plan.loss_divergences:
                if (div, name) in SWEEP_SKIPS:
                    summary._skip(SWEEP_SKIPS[div, name])
                    tick()
                    continue
                for order in amid_ref.ORDERS:
                    for alpha in plan.loss_alphas:
                        for lam in plan.loss_lams:
                            for temp in plan.temperatures:
                                kw = {
                                    "divergence": div,
                                    "order": order,
                                    "div_params": params,
                                    "temperature": temp,
                                }
                                extra = f" {_div_label(div, params)}/{order} T={temp:g}"
                                compare(
                                    summary,
                                    tag(name, alpha, lam, extra),
                                    lambda c=c, a=alpha, l=lam, kw=kw: amid_ref.amid_loss(
                                        c.student_logits, c.teacher_logits, a, l, **kw
                                    ),
                                    lambda c=c, a=alpha, l=lam, kw=kw: precise.amid_loss(
                                        c.student_logits, c.teacher_logits, a, l, dps=dps, **kw
                                    ),
                                )
                tick()

    def grad(summary):
        tick = ticker("grad", len(plan.grad_cases) * len(plan.grad_divergences))
        for name in plan.grad_cases:
            c = by_name[name]
            for div, params in plan.grad_divergences:
                if (div, name) in SWEEP_SKIPS:
                    summary._skip(SWEEP_SKIPS[div, name])
                    tick()
                    continue
                for order in amid_ref.ORDERS:
                    for alpha in plan.grad_alphas:
                        if math.isinf(alpha) and name in ("equal", "near-equal"):
                            continue  # max/min switch branches at ties: no derivative
                        for lam in plan.grad_lams:
                            kw = {"divergence": div, "order": order, "div_params": params}
                            args = (c.student_logits, c.teacher_logits, alpha, lam)
                            try:
                                finite = np.isfinite(amid_ref.amid_loss(*args, **kw)) and bool(
                                    np.isfinite(
                                        _oracle_to_float(precise.amid_loss(*args, dps=dps, **kw))
                                    )
                                )
                            except ValueError:
                                finite = False  # undefined loss: reported by the loss sweep
                            if not finite:
                                summary.n_undefined += 1
                                continue  # no gradient of an infinite loss
                            compare(
                                summary,
                                tag(name, alpha, lam, f" {_div_label(div, params)}/{order}"),
                                lambda args=args, kw=kw: amid_ref.amid_grad(*args, **kw),
                                lambda args=args, kw=kw: precise.amid_grad(*args, dps=dps, **kw),
                            )
                tick()

    bodies = {
        "log_mixture": log_mixture,
        "mixture": mixture,
        "divergence": divergences,
        "loss": loss,
        "grad": grad,
    }
    unknown = [q for q in quantities if q not in bodies]
    if unknown:
        raise ValueError(f"unknown sweep quantities {unknown}; choose from {list(bodies)}")
    return [run(q, bodies[q]) for q in quantities]
