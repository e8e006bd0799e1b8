"""The comparison of every battery: which tolerance applies, and whether a result is within it.

One place for the verdicts that the validation sweep (amid_ref against :mod:`amid_ref.precise`),
the gpu tests (:mod:`gpu` against amid_ref in float64) and the conformance battery (an
external implementation against amid_ref) reach:

* :func:`tolerance_for` looks a quantity and dtype up in :mod:`amid_ref.tolerances`;
* :func:`passes` is the verdict of :func:`amid_ref.tolerances.assert_within` as a bool;
* :func:`error_ratio` is the largest ``error / bound`` and where it is (for reports);
* :func:`fails` and :func:`agrees` are the elementwise forms the failure-mode matching uses
  (an output that agrees with a known-wrong formula, entry by entry);
* :class:`Summary` counts one group of checks: a quantity of the validation sweep
  (``analysis.SweepSummary``) or a family of the conformance battery (``Report.families()``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amid_ref.tolerances import TOLERANCES, Tolerance, assert_within, tolerance

__all__ = [
    "PROPOSED_TOLERANCES",
    "Summary",
    "agrees",
    "bound",
    "error_ratio",
    "fails",
    "passes",
    "tolerance_for",
]

#: Conformance rows not (yet) in :mod:`amid_ref.tolerances`. Used only while the table lacks
#: the key, and reported as "proposed" in the report header; the lead moves them there.
PROPOSED_TOLERANCES: dict[tuple[str, str, str], Tolerance] = {}


def tolerance_for(quantity: str, dtype: str) -> tuple[Tolerance, str]:
    """The tolerance for ``quantity`` (``loss``, ``grad``, ``log_mixture``) at ``dtype``.

    Looks up ``("conformance", quantity, dtype)`` in :mod:`amid_ref.tolerances`, then the
    ``("gpu", quantity, dtype)`` row (an implementation held to ``amid_ref`` float64, which
    is what a conformance check is), then :data:`PROPOSED_TOLERANCES`. Returns the tolerance
    and the key it came from.
    """
    for key in (("conformance", quantity, dtype), ("gpu", quantity, dtype)):
        if key in TOLERANCES:
            return TOLERANCES[key], "/".join(key)
    key = ("conformance", quantity, dtype)
    if key in PROPOSED_TOLERANCES:
        return PROPOSED_TOLERANCES[key], "/".join(key) + " (proposed)"
    return tolerance(*key), "/".join(key)  # raises the table's KeyError


def passes(got, want, tol: Tolerance) -> bool:
    r"""The verdict of :func:`amid_ref.tolerances.assert_within` as a bool.

    .. math:: |\mathrm{got} - \mathrm{want}| \le \mathrm{atol} + \mathrm{rtol}\,s

    elementwise, with :math:`s = |\mathrm{want}|` (:math:`\max(1, |\mathrm{want}|)` for a
    log-scaled tolerance), infinities equal and no NaN.
    """
    try:
        assert_within(got, want, tol)
    except AssertionError:
        return False
    return True


def bound(want: np.ndarray, tol: Tolerance) -> np.ndarray:
    """The elementwise bound ``atol + rtol · scale`` of :func:`passes` (non-finite: scale 0)."""
    scale = np.abs(np.where(np.isfinite(want), want, 0.0))
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    return tol.atol + tol.rtol * scale


def fails(x: np.ndarray, want: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Entries of ``x`` outside the tolerance of ``want`` (infinities must agree exactly)."""
    with np.errstate(invalid="ignore"):
        same = x == want
        err = np.where(same, 0.0, np.abs(x - want))
        err = np.where(np.isnan(err), np.inf, err)
        return err > bound(want, tol)


def agrees(
    got: np.ndarray, wrong: np.ndarray, tol: Tolerance, *, any_nonfinite: bool = False
) -> bool:
    """``got`` within ``tol`` of ``wrong``; non-finite entries must be the same (NaN with
    NaN, +inf with +inf), or merely both non-finite when ``any_nonfinite`` (modes whose
    symptom is "inf or NaN", which one evaluation order turns into the other)."""
    if got.shape != wrong.shape:
        return False
    nf_got, nf_wrong = ~np.isfinite(got), ~np.isfinite(wrong)
    if (nf_got != nf_wrong).any():
        return False
    if not any_nonfinite:
        same = (np.isnan(got) == np.isnan(wrong)) & (np.isnan(got) | (got == wrong))
        if not same[nf_got].all():
            return False
    fin = ~nf_got
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(got - wrong)[fin] <= bound(wrong, tol)[fin]))


def error_ratio(got, want, tol: Tolerance) -> tuple[float, tuple]:
    """Largest ``error / bound`` over the entries and where it is (for reporting; the verdict
    itself is :func:`passes`). Infinities must agree exactly (else the ratio is inf); NaN
    gives inf; a shape mismatch gives ``(inf, ())``."""
    got = np.atleast_1d(np.asarray(got, dtype=np.float64))
    want = np.atleast_1d(np.asarray(want, dtype=np.float64))
    if got.shape != want.shape:
        return math.inf, ()
    scale = np.abs(want)
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        limit = tol.atol + tol.rtol * np.where(np.isfinite(scale), scale, 0.0)
        err = np.abs(got - want)
        ratio = np.where(
            np.isinf(want) | np.isinf(got),
            np.where(got == want, 0.0, np.inf),
            np.where(err == 0.0, 0.0, err / limit),
        )
    ratio = np.where(np.isnan(ratio) | np.isnan(got), np.inf, ratio)
    i = tuple(np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    return float(ratio[i]), i


@dataclass
class Summary:
    """Outcome of one group of checks of a battery: one quantity of the validation sweep
    (:func:`amid_ref.analysis.validation_sweep`, as ``SweepSummary``) or one family of the
    conformance battery (:meth:`amid_ref.conformance.Report.families`).

    Attributes
    ----------
    name : str
        The group: the sweep's quantity (``log_mixture``, ``mixture``, ``divergence``,
        ``loss`` or ``grad``; also :attr:`quantity`) or the battery family.
    tolerance : amid_ref.tolerances.Tolerance, optional
        The bound applied (the sweep's ``("reference", quantity, "float64")`` row).
    n_checks : int
        Number of (input, parameters) combinations compared (skipped ones not included).
    n_failed : int
        Combinations outside the tolerance (:func:`passes` false), or where one side raised
        and the other did not.
    n_oracle_errors : int
        Combinations the oracle could not evaluate (kept apart: they are not failures of
        the implementation, but they are checks that did not run).
    n_undefined : int
        Combinations both sides rejected with ``ValueError`` (e.g. Z = 0 for α ≥ 1 and
        disjoint supports): agreement on an undefined value.
    n_skipped : int
        Combinations not compared (a documented limitation, or outside the declared
        support), with the reasons in ``skip_reasons``.
    worst_ratio : float
        Largest ``error / bound`` seen (≤ 1 means within tolerance; inf for an infinity or
        NaN mismatch); ``worst_case`` says where, ``worst`` holds the battery's record of it.
    max_abs_err, max_rel_err : float
        Largest absolute and relative errors seen.
    failures : list of str
        Up to 20 failure messages.
    diagnoses : collections.Counter
        How many failing checks each known failure mode was diagnosed on.
    seconds : float
        Wall time.
    """

    name: str
    tolerance: Any = None
    n_checks: int = 0
    n_failed: int = 0
    n_oracle_errors: int = 0
    n_undefined: int = 0
    n_skipped: int = 0
    worst_ratio: float = 0.0
    worst_case: str = ""
    worst: Any = None
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    failures: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    diagnoses: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def quantity(self) -> str:
        """The sweep's name for :attr:`name`."""
        return self.name

    @property
    def n_passed(self) -> int:
        """Checks that ran and agreed (``n_undefined`` included: agreement on undefined)."""
        return self.n_checks - self.n_failed - self.n_oracle_errors

    @property
    def passed(self) -> bool:
        """No failure, no oracle error, and at least one check ran."""
        return self.n_failed == 0 and self.n_oracle_errors == 0 and self.n_checks > 0

    @property
    def status(self) -> str:
        """``"FAIL"``, ``"pass"`` or ``"skip"`` (nothing ran)."""
        if self.n_failed or self.n_oracle_errors:
            return "FAIL"
        return "pass" if self.n_checks else "skip"

    def fail(self, message: str) -> None:
        """Count a failure and keep its message (the first 20)."""
        self.n_failed += 1
        if len(self.failures) < 20:
            self.failures.append(message)

    def skip(self, reason: str) -> None:
        """Count a skipped combination and keep its reason once."""
        self.n_skipped += 1
        if reason not in self.skip_reasons:
            self.skip_reasons.append(reason)
