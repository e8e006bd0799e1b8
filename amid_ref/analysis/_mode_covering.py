"""Mode covering: a unimodal student fitted to a bimodal teacher for several α."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

import amid_ref
from amid_ref.analysis._common import (
    _log_softmax,
)


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
    from scipy.optimize import minimize  # heavy: only the minimizations need it

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
