"""Shared helpers of the studies: the example distributions and label formatting."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_softmax

#: Float64 machine epsilon.
EPS = float(np.finfo(np.float64).eps)

#: Example teacher/student pair with full support used by the limit study and the figures.
EXAMPLE_TEACHER_LOGITS = np.array([2.0, 1.1, 0.3, -0.4, -1.5, 0.7])
EXAMPLE_STUDENT_LOGITS = np.array([-0.6, 0.9, 1.7, 0.2, -0.8, -1.9])


def _log_softmax(logits) -> np.ndarray:
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
