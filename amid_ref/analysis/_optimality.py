"""Theorem 3.4 by direct minimization over the student logits, and the loss along a line."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import amid_ref
from amid_ref._specs import SPECS, Objective
from amid_ref.analysis._common import (
    _fmt_alpha,
    _fmt_lam,
    _log_softmax,
)


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
    from scipy.optimize import minimize  # heavy: only the minimizations need it

    t = np.asarray(teacher_logits, dtype=np.float64)
    objective = Objective.of(alpha, lam, divergence, order, div_params)  # validated once
    kwargs = {
        "alpha": objective.alpha,
        "lam": objective.lam,
        "divergence": objective.divergence,
        "order": objective.order,
        "div_params": dict(objective.params),
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
OPTIMALITY_DIVERGENCES: tuple[tuple[str, dict], ...] = tuple(
    (spec.name, params) for spec in SPECS.values() for params in spec.cases_for("optimality")
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
    t = np.asarray(teacher_logits, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    students = t[None, :] + ts[:, None] * d[None, :]
    teachers = np.broadcast_to(t, students.shape)
    return np.asarray(
        amid_ref.amid_loss(students, teachers, alpha, lam, divergence, order, div_params),
        dtype=np.float64,
    )
