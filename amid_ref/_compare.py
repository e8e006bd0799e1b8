"""The comparison of every battery: which tolerance applies, and whether a result is within it.

One place for the verdicts that the validation sweep (amid_ref against :mod:`amid_ref.precise`),
the gpu tests (:mod:`gpu` against amid_ref in float64) and the conformance battery (an
external implementation against amid_ref) reach:

* :func:`tolerance_for` looks a quantity and dtype up in :mod:`amid_ref.tolerances`;
* :func:`passes` is the verdict of :func:`amid_ref.tolerances.assert_within` as a bool;
* :func:`fails` and :func:`agrees` are the elementwise forms the failure-mode matching uses
  (an output that agrees with a known-wrong formula, entry by entry).
"""

from __future__ import annotations

import numpy as np

from amid_ref.tolerances import TOLERANCES, Tolerance, assert_within, tolerance

__all__ = ["PROPOSED_TOLERANCES", "agrees", "bound", "fails", "passes", "tolerance_for"]

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
