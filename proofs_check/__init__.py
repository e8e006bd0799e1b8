"""SymPy verification of the identities, limits and theorems behind AMiD.

Each :class:`Claim` in :data:`CLAIMS` is a statement of the mathematics page or of the AMiD
paper with a symbolic check (SymPy) and a numeric cross-check that evaluates the same statement with
:mod:`amid_ref` on concrete values, so that the symbolic truth and the implementation cannot
drift apart. ``amid_ref`` docstrings cite the claims as ``[claim: id]``.

A claim's status is ``"proved"`` (the statement for all parameters in its domain),
``"proved-for-cases"`` (for the documented family ``Claim.cases`` only, where SymPy cannot
decide the general case), ``"failed"`` or ``"error"``.

Usage::

    python -m proofs_check                  # table; exit code 1 if a claim fails
    python -m proofs_check --json           # JSON list of {id, statement, source, status, seconds}
    python -m proofs_check --only 'mean.*'  # glob or substring on the id

    >>> import proofs_check
    >>> results = proofs_check.run_claims("mean.special.harmonic")
    >>> [(r.id, r.status) for r in results]
    [('mean.special.harmonic', 'proved')]

:data:`NEGATIVE_CONTROLS` holds deliberately false claims that must come out ``"failed"``
(``run_claims(registry=NEGATIVE_CONTROLS)``).

SymPy is an optional dependency of amid-ref (extra ``proofs``); :mod:`amid_ref` never
imports it.
"""

from __future__ import annotations

try:
    import sympy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("proofs_check needs SymPy: pip install 'amid-ref[proofs]'") from exc

from proofs_check import (
    claims_divergences,
    claims_means,
    claims_presets,
    claims_sparse,
    claims_theorems,
    negative_controls,
)
from proofs_check._core import (
    DEFAULT_REGISTRY,
    ERROR,
    FAILED,
    PASSING,
    PROVED,
    PROVED_FOR_CASES,
    STATUSES,
    Claim,
    ClaimFailed,
    ClaimResult,
    make_registry,
    run_claim,
    run_claims,
    select,
)

__all__ = [
    "CLAIMS",
    "ERROR",
    "FAILED",
    "NEGATIVE_CONTROLS",
    "PASSING",
    "PROVED",
    "PROVED_FOR_CASES",
    "STATUSES",
    "Claim",
    "ClaimFailed",
    "ClaimResult",
    "run_claim",
    "run_claims",
    "select",
]

#: The claim registry, id -> :class:`Claim`, in presentation order.
CLAIMS: dict[str, Claim] = DEFAULT_REGISTRY
CLAIMS.update(
    make_registry(
        claims_means.CLAIMS,
        claims_theorems.CLAIMS,
        claims_divergences.CLAIMS,
        claims_presets.CLAIMS,
        claims_sparse.CLAIMS,
    )
)

#: Deliberately false claims; each must be reported ``"failed"``.
NEGATIVE_CONTROLS: dict[str, Claim] = make_registry(negative_controls.CLAIMS)
