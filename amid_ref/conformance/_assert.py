"""``assert_conforms``: the battery as one assertion inside a test suite (a function's or a
published peer's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from amid_ref.conformance._peers import PEERS, Peer, conform_peer
from amid_ref.conformance._runner import Report, conform

__all__ = ["assert_conforms"]


def assert_conforms(
    fn: Callable | str, kind: str | None = None, *, allow: Iterable[str] = (), **options: Any
) -> Report:
    """Assert that ``fn`` passes the conformance battery; for use inside a user's pytest.

    Takes the options of :func:`conform` (the families to run, ``tolerances=`` rows,
    ``dtype``, ``grad``, ...) and raises ``AssertionError`` carrying the text report
    (per-family results, worst case with its seed and parameters, diagnosis) when a case
    fails that ``allow`` does not cover, or when no case ran. Returns the :class:`Report`
    otherwise.

    ``fn`` may also be a :class:`~amid_ref.conformance.Peer` or a peer's name (its mapped
    battery, :func:`~amid_ref.conformance.conform_peer`); its documented differences
    (``by_design_modes``) are then allowed unless ``allow`` is given.

    Parameters
    ----------
    allow : iterable of str
        Failure modes (:data:`~amid_ref.conformance.FAILURE_MODES` ids) accepted: a failing
        case whose first diagnosis is one of them does not fail the assertion (a documented
        difference, e.g. ``jsd_endpoint_kl`` for TRL's JSD).

    Examples
    --------
    >>> import amid_ref
    >>> from amid_ref.conformance import assert_conforms
    >>> report = assert_conforms(amid_ref.amid_loss, dtype="float64", families=["shapes"])
    >>> report.passed
    True
    """
    __tracebackhide__ = True  # pytest: show the caller's frame and the report, not this one
    allowed = set(allow)
    if isinstance(fn, Peer) or (isinstance(fn, str) and fn in PEERS):
        rec = fn if isinstance(fn, Peer) else PEERS[fn]
        allowed = allowed or set(rec.by_design_modes)
        report = conform_peer(rec, kind=kind, **options)
    else:
        report = conform(fn, kind or "loss", **options)
    unexplained = [r for r in report.failures if not (r.diagnoses and r.diagnoses[0].id in allowed)]
    if report.nothing_checked or unexplained:
        head = "implementation does not conform to amid_ref"
        if report.nothing_checked:
            head = "nothing was checked (every case skipped)"
        elif allowed:
            head += f" ({len(unexplained)} failing case(s) not allowed by {sorted(allowed)})"
        raise AssertionError(head + "\n" + report.text())
    return report
