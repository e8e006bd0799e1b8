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

One module per study (``_limits``, ``_optimality``, ``_mode_covering``, ``_sweep``), all
re-exported here. SciPy's ``optimize`` and the mpmath oracle are imported inside the functions
that need them (heavy, and only those studies use them), so importing this package (as the
CLI does) stays cheap.
"""

from __future__ import annotations

from amid_ref._battery._compare import error_ratio as _error_ratio  # noqa: F401 (the tests' name)
from amid_ref.analysis._common import (
    EPS as EPS,
)
from amid_ref.analysis._common import (
    EXAMPLE_STUDENT_LOGITS as EXAMPLE_STUDENT_LOGITS,
)
from amid_ref.analysis._common import (
    EXAMPLE_TEACHER_LOGITS as EXAMPLE_TEACHER_LOGITS,
)
from amid_ref.analysis._common import (
    _fmt_alpha as _fmt_alpha,
)
from amid_ref.analysis._common import (
    _fmt_lam as _fmt_lam,
)
from amid_ref.analysis._common import (
    _log_softmax as _log_softmax,
)
from amid_ref.analysis._limits import ConvergenceSeries, limit_convergence
from amid_ref.analysis._mode_covering import (
    MODE_GRID as MODE_GRID,
)
from amid_ref.analysis._mode_covering import (
    StudentFit,
    bimodal_teacher_logits,
    discretized_gaussian_logits,
    fit_unimodal_student,
    mode_covering_study,
)
from amid_ref.analysis._optimality import (
    OPTIMALITY_DIVERGENCES as OPTIMALITY_DIVERGENCES,
)
from amid_ref.analysis._optimality import (
    OptimalityCase,
    loss_along_line,
    minimize_student,
    optimality_check,
)
from amid_ref.analysis._sweep import (
    SWEEP_ALPHAS_FULL as SWEEP_ALPHAS_FULL,
)
from amid_ref.analysis._sweep import (
    SWEEP_ALPHAS_QUICK as SWEEP_ALPHAS_QUICK,
)
from amid_ref.analysis._sweep import (
    SWEEP_DIVERGENCES as SWEEP_DIVERGENCES,
)
from amid_ref.analysis._sweep import (
    SWEEP_LAMS_FULL as SWEEP_LAMS_FULL,
)
from amid_ref.analysis._sweep import (
    SWEEP_LAMS_QUICK as SWEEP_LAMS_QUICK,
)
from amid_ref.analysis._sweep import (
    SWEEP_PLANS as SWEEP_PLANS,
)
from amid_ref.analysis._sweep import (
    SWEEP_QUANTITIES as SWEEP_QUANTITIES,
)
from amid_ref.analysis._sweep import (
    SWEEP_REFUSALS,
    SWEEP_SKIPS,
    Comparison,
    Skipped,
    SweepCase,
    SweepPlan,
    SweepSummary,
    compare,
    run_quantity,
    sweep_cases,
    sweep_comparisons,
    validation_sweep,
)
from amid_ref.analysis._sweep import (
    UNDEFINED as UNDEFINED,
)
from amid_ref.analysis._sweep import (
    _div_label as _div_label,
)
from amid_ref.analysis._sweep import (
    _oracle_to_float as _oracle_to_float,
)

__all__ = [
    "SWEEP_REFUSALS",
    "SWEEP_SKIPS",
    "Comparison",
    "ConvergenceSeries",
    "OptimalityCase",
    "Skipped",
    "StudentFit",
    "SweepCase",
    "SweepPlan",
    "SweepSummary",
    "bimodal_teacher_logits",
    "compare",
    "discretized_gaussian_logits",
    "fit_unimodal_student",
    "limit_convergence",
    "loss_along_line",
    "minimize_student",
    "mode_covering_study",
    "optimality_check",
    "run_quantity",
    "sweep_cases",
    "sweep_comparisons",
    "validation_sweep",
]
