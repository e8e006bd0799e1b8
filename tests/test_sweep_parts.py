"""The parts of amid_ref.analysis.validation_sweep, each on its own: the comparison plan of a
quantity (lazy, in a fixed order), the comparison of one pair, and the summary of a run."""

from __future__ import annotations

import numpy as np
import pytest

from amid_ref import analysis
from amid_ref.analysis import UNDEFINED, Comparison, Skipped, compare, sweep_comparisons
from amid_ref.tolerances import tolerance

TINY = analysis.SweepPlan(
    cases=("random", "masked"),
    alphas=(-3.0, 1.0),
    lams=(0.0, 0.3),
    loss_cases=("random", "wide-span"),
    loss_alphas=(-3.0,),
    loss_lams=(0.3,),
    loss_divergences=(("kl", {}), analysis.SWEEP_DIVERGENCES[-1]),
    temperatures=(1.0,),
    grad_cases=("equal",),
    grad_alphas=(-np.inf, -3.0),
    grad_lams=(0.3,),
    grad_divergences=(("kl", {}),),
)


def _summary(quantity="loss"):
    return analysis.SweepSummary(quantity, tolerance("reference", quantity, "float64"))


def test_the_plan_of_a_quantity_is_lazy_and_ordered():
    items = list(sweep_comparisons("log_mixture", TINY))
    assert all(isinstance(c, Comparison) for c in items)
    assert [c.what for c in items][:2] == ["case=random α=-3 λ=0", "case=random α=-3 λ=0.3"]
    assert len(items) == 2 * 2 * 2


def test_the_plan_carries_skips_with_their_reasons():
    items = list(sweep_comparisons("loss", TINY))
    skipped = [c for c in items if isinstance(c, Skipped)]
    assert [s.reason for s in skipped] == [analysis.SWEEP_SKIPS["f", "wide-span"]]
    assert sum(isinstance(c, Comparison) for c in items) == 3 * 4  # kl ×2 cases, f ×1; 4 orders


def test_the_gradient_plan_leaves_out_ties_at_infinite_alpha():
    items = list(sweep_comparisons("grad", TINY))
    assert UNDEFINED not in items  # the "equal" case has finite losses
    assert len(items) == 4  # α = -inf skipped at the ties of "equal"; α = -3 × 4 orders


def test_compare_records_agreement_disagreement_and_errors():
    summary = _summary()
    compare(summary, Comparison("same", lambda: 1.0, lambda: 1.0))
    assert summary.passed and summary.n_checks == 1 and summary.worst_ratio == 0
    compare(summary, Comparison("off", lambda: 1.0 + 1e-6, lambda: 1.0))
    assert not summary.passed and "off" in summary.failures[0]

    def refuse():
        raise ValueError("Z = 0")

    both = _summary()
    compare(both, Comparison("undefined", refuse, refuse))
    assert both.passed and both.n_undefined == 1

    def crash():
        raise ZeroDivisionError("oracle bug")

    oracle = _summary()
    compare(oracle, Comparison("oracle", lambda: 1.0, crash))
    assert oracle.n_oracle_errors == 1 and "oracle error" in oracle.failures[0]


def test_run_quantity_matches_validation_sweep():
    (whole,) = analysis.validation_sweep(plan=TINY, quantities=("mixture",))
    part = analysis.run_quantity("mixture", TINY)
    assert (part.n_checks, part.n_failed, part.n_undefined) == (
        whole.n_checks,
        whole.n_failed,
        whole.n_undefined,
    )
    assert part.passed


def test_unknown_quantity():
    with pytest.raises(ValueError, match="unknown sweep quantities"):
        analysis.validation_sweep(plan=TINY, quantities=("nope",))
