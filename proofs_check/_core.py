"""The claim record, its result, and the runner.

A :class:`Claim` pairs a *symbolic* check (SymPy) with a *numeric* cross-check that evaluates
the same statement with :mod:`amid_ref` on concrete values. Both are plain callables that
return a short description of what they showed and raise :class:`ClaimFailed` (or any
``AssertionError``, e.g. from :func:`amid_ref.tolerances.assert_within`) when the statement
is not established. Any other exception is an error of the check itself.

A claim's ``scope`` says what its symbolic check establishes when it passes:

* ``"proved"``: the statement for every value of its parameters in the stated domain;
* ``"proved-for-cases"``: the statement for the documented family ``cases`` only (a finite
  set of sizes or parameter values, or a restricted family), because SymPy cannot decide the
  general case. The record never claims more than that.
"""

from __future__ import annotations

import fnmatch
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "ERROR",
    "FAILED",
    "PASSING",
    "PROVED",
    "PROVED_FOR_CASES",
    "STATUSES",
    "Claim",
    "ClaimFailed",
    "ClaimResult",
    "make_registry",
    "run_claim",
    "run_claims",
    "select",
]

PROVED = "proved"
PROVED_FOR_CASES = "proved-for-cases"
FAILED = "failed"
ERROR = "error"
STATUSES: tuple[str, ...] = (PROVED, PROVED_FOR_CASES, FAILED, ERROR)
#: The statuses of a claim that holds.
PASSING: tuple[str, ...] = (PROVED, PROVED_FOR_CASES)

_ID_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


class ClaimFailed(AssertionError):
    """Raised by a check when it could not establish its statement (a "no", not a crash)."""


@dataclass(frozen=True)
class Claim:
    """One verified statement.

    Attributes
    ----------
    id : str
        Stable dotted id (``[a-z0-9_]`` segments), cited in ``amid_ref`` docstrings as
        ``[claim: id]``.
    statement : str
        One line of LaTeX.
    source : str
        Where the statement comes from (paper theorem/proposition, textbook fact).
    symbolic : callable () -> str
        The SymPy check; returns a description of what was shown.
    numeric : callable () -> str
        The cross-check with :mod:`amid_ref` on concrete values; returns a description.
    scope : {"proved", "proved-for-cases"}
        What the symbolic check establishes when it passes.
    cases : str
        For ``"proved-for-cases"``: the family of cases that was shown.
    backs : tuple of str
        The ``amid_ref`` functions whose behaviour the claim backs.
    """

    id: str
    statement: str
    source: str
    symbolic: Callable[[], str] = field(repr=False)
    numeric: Callable[[], str] = field(repr=False)
    scope: str = PROVED
    cases: str = ""
    backs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.id):
            raise ValueError(f"claim id {self.id!r} must be dotted lowercase [a-z0-9_] segments")
        if self.scope not in PASSING:
            raise ValueError(f"claim {self.id}: scope must be one of {PASSING}, got {self.scope!r}")
        if (self.scope == PROVED_FOR_CASES) != bool(self.cases):
            raise ValueError(
                f"claim {self.id}: 'cases' must describe the family exactly when the scope is "
                f"{PROVED_FOR_CASES!r}"
            )
        if "\n" in self.statement or not self.statement:
            raise ValueError(f"claim {self.id}: the statement must be one non-empty line")

    def run(self) -> ClaimResult:
        """Run the symbolic check, then the numeric cross-check; never raises."""
        return run_claim(self)


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of running one :class:`Claim`.

    ``status`` is the claim's scope (``"proved"`` or ``"proved-for-cases"``) when both checks
    pass, ``"failed"`` when one of them said no, ``"error"`` when one raised anything else.
    ``detail`` says what was shown, or what went wrong and in which stage.
    """

    id: str
    statement: str
    source: str
    status: str
    seconds: float
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the claim holds (status ``proved`` or ``proved-for-cases``)."""
        return self.status in PASSING

    def as_dict(self) -> dict[str, object]:
        """The JSON record of ``python -m proofs_check --json``."""
        return {
            "id": self.id,
            "statement": self.statement,
            "source": self.source,
            "status": self.status,
            "seconds": round(self.seconds, 4),
        }


def run_claim(claim: Claim) -> ClaimResult:
    """Run one claim (symbolic check, then numeric cross-check) and time it."""
    start = time.perf_counter()
    stage = "symbolic"
    parts: list[str] = []
    try:
        parts.append(f"symbolic: {claim.symbolic()}")
        stage = "numeric"
        parts.append(f"numeric: {claim.numeric()}")
    except AssertionError as exc:  # ClaimFailed, assert_within, plain asserts
        status = FAILED
        parts.append(f"{stage} check failed: {exc}")
    except Exception as exc:
        status = ERROR
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        parts.append(f"{stage} check raised {type(exc).__name__}: {exc}{where}")
    else:
        status = claim.scope
        if claim.scope == PROVED_FOR_CASES:
            parts.append(f"cases: {claim.cases}")
    seconds = time.perf_counter() - start
    return ClaimResult(claim.id, claim.statement, claim.source, status, seconds, "; ".join(parts))


def select(claims: Mapping[str, Claim], pattern: str | None) -> list[Claim]:
    """The claims whose id matches ``pattern``: a glob if it contains ``*?[``, otherwise a
    substring. ``None`` or ``""`` selects all."""
    if not pattern:
        return list(claims.values())
    if any(ch in pattern for ch in "*?["):
        return [c for i, c in claims.items() if fnmatch.fnmatchcase(i, pattern)]
    return [c for i, c in claims.items() if pattern in i]


#: The claim registry that :func:`run_claims` draws from by default; ``proofs_check`` fills
#: it once at import (it is :data:`proofs_check.CLAIMS`), so this module needs no import of
#: the package that imports it.
DEFAULT_REGISTRY: dict[str, Claim] = {}


def run_claims(
    pattern: str | None = None,
    progress: Callable[[ClaimResult], object] | None = None,
    *,
    registry: Mapping[str, Claim] | None = None,
) -> list[ClaimResult]:
    """Run the claims whose id matches ``pattern`` (all by default), in registry order.

    Parameters
    ----------
    pattern : str, optional
        Glob (``"mean.limit.*"``) or substring (``"theorem_3"``) on the claim id.
    progress : callable, optional
        Called with each :class:`ClaimResult` as soon as its claim has run.
    registry : mapping, optional
        The claims to draw from; default :data:`proofs_check.CLAIMS` (pass
        :data:`proofs_check.NEGATIVE_CONTROLS` to run the negative controls).

    Returns
    -------
    list of ClaimResult
    """
    if registry is None:
        registry = DEFAULT_REGISTRY
    results = []
    for claim in select(registry, pattern):
        result = run_claim(claim)
        if progress is not None:
            progress(result)
        results.append(result)
    return results


def make_registry(*groups: Iterable[Claim]) -> dict[str, Claim]:
    """Assemble claims into an id -> claim dict, refusing duplicate ids."""
    out: dict[str, Claim] = {}
    for group in groups:
        for claim in group:
            if claim.id in out:
                raise ValueError(f"duplicate claim id {claim.id!r}")
            out[claim.id] = claim
    return out
