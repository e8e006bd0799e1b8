"""Exact held-out metrics of a student against the known teacher (float64 NumPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["METRIC_NAMES", "HeldOutEvaluator", "exact_metrics"]

#: Names of the metrics returned by :func:`exact_metrics`, in a fixed order.
METRIC_NAMES: tuple[str, ...] = (
    "forward_kl",
    "reverse_kl",
    "topk_teacher_mass",
    "teacher_modes",
    "modes_covered",
    "mode_coverage",
    "student_entropy",
    "teacher_entropy",
    "mass_off_support",
)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def exact_metrics(
    teacher_log_probs: np.ndarray,
    student_logits: np.ndarray,
    *,
    top_k: int = 10,
    mode_mass: float = 0.05,
    cover_mass: float = 0.01,
) -> dict[str, float]:
    """Exact distribution-level metrics of a student, averaged over contexts.

    With teacher ``p`` and student ``q = softmax(s)`` per context (row):

    .. math::

        \\mathrm{KL}(p\\|q) = \\sum_v p_v \\log\\frac{p_v}{q_v}, \\quad
        \\mathrm{KL}(q\\|p) = \\sum_v q_v \\log\\frac{q_v}{p_v}, \\quad
        H(q) = -\\sum_v q_v \\log q_v,

        \\text{top-}k\\text{ teacher mass} = \\sum_{v \\in \\operatorname{top}_k(q)} p_v, \\qquad
        \\text{modes} = \\{v : p_v \\ge m\\}, \\quad
        \\text{covered} = \\{v \\in \\text{modes} : q_v \\ge c\\}.

    Parameters
    ----------
    teacher_log_probs : numpy.ndarray
        Exact teacher log-probabilities, shape (N, V); ``-inf`` marks exact zeros.
    student_logits : numpy.ndarray
        Student logits, shape (N, V), any float dtype (evaluated in float64).
    top_k : int
        ``k`` of the top-k teacher-mass metric (tokens ranked by the student).
    mode_mass : float
        ``m``: a token is a teacher mode where ``p_v >= m``.
    cover_mass : float
        ``c``: a mode is covered where the student gives it ``q_v >= c``.

    Returns
    -------
    dict
        ``forward_kl``, ``reverse_kl`` (``inf`` when the student puts mass on an exact
        teacher zero), ``topk_teacher_mass``, ``teacher_modes`` and ``modes_covered``
        (mean counts per context), ``mode_coverage`` (covered / modes, pooled over
        contexts; ``nan`` if the teacher has no modes), ``student_entropy``,
        ``teacher_entropy`` and ``mass_off_support`` (student mass where ``p = 0``).
        All are means over the N contexts, in nats where applicable.
    """
    evaluator = HeldOutEvaluator(
        teacher_log_probs, top_k=top_k, mode_mass=mode_mass, cover_mass=cover_mass
    )
    return evaluator(student_logits)


class HeldOutEvaluator:
    """:func:`exact_metrics` against a fixed teacher, with the teacher-side work cached.

    Parameters are those of :func:`exact_metrics`; calling the evaluator with student
    logits of shape (N, V) returns the same dict.
    """

    def __init__(
        self,
        teacher_log_probs: np.ndarray,
        *,
        top_k: int = 10,
        mode_mass: float = 0.05,
        cover_mass: float = 0.01,
    ) -> None:
        lp = np.asarray(teacher_log_probs, dtype=np.float64)
        if lp.ndim != 2:
            raise ValueError(f"teacher_log_probs must have shape (N, V), got {lp.shape}")
        if not 1 <= top_k <= lp.shape[1]:
            raise ValueError(f"top_k must be in [1, V={lp.shape[1]}], got {top_k}")
        if not (0 < cover_mass <= 1 and 0 < mode_mass <= 1):
            raise ValueError(
                f"mode_mass and cover_mass must lie in (0, 1], got {mode_mass}, {cover_mass}"
            )
        self.shape = lp.shape
        self.top_k = top_k
        self.cover_mass = cover_mass
        self.zero = np.isneginf(lp)
        self.log_p = np.where(self.zero, 0.0, lp)  # finite stand-in; p = 0 there
        self.p = np.exp(lp)
        self.modes = self.p >= mode_mass
        self.n_modes = int(self.modes.sum())
        self.teacher_entropy = float(-(self.p * self.log_p).sum(axis=1).mean())

    def __call__(self, student_logits: np.ndarray) -> dict[str, float]:
        s = np.asarray(student_logits, dtype=np.float64)
        if s.shape != self.shape:
            raise ValueError(f"student_logits must have shape {self.shape}, got {s.shape}")
        if not np.all(np.isfinite(s)):
            return dict.fromkeys(METRIC_NAMES, float("nan"))
        lq = _log_softmax(s)
        q = np.exp(lq)
        p = self.p
        forward = (p * (self.log_p - lq)).sum(axis=1)
        off_support = np.where(self.zero, q, 0.0).sum(axis=1)
        reverse = (q * (lq - self.log_p)).sum(axis=1)
        reverse = np.where(off_support > 0, np.inf, reverse)
        student_entropy = -(q * lq).sum(axis=1)
        top = np.argpartition(-lq, self.top_k - 1, axis=1)[:, : self.top_k]
        topk_mass = np.take_along_axis(p, top, axis=1).sum(axis=1)
        covered = self.modes & (q >= self.cover_mass)
        n_modes = self.n_modes
        return {
            "forward_kl": float(forward.mean()),
            "reverse_kl": float(reverse.mean()),
            "topk_teacher_mass": float(topk_mass.mean()),
            "teacher_modes": float(self.modes.sum(axis=1).mean()),
            "modes_covered": float(covered.sum(axis=1).mean()),
            "mode_coverage": float(covered.sum() / n_modes) if n_modes else float("nan"),
            "student_entropy": float(student_entropy.mean()),
            "teacher_entropy": self.teacher_entropy,
            "mass_off_support": float(off_support.mean()),
        }
