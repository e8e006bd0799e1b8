"""``python -m proofs_check [--json] [--only PATTERN] [--negative-controls] [--details]``.

Runs the claims and prints a table (id, statement, source, status, seconds), one row as each
claim finishes, or with ``--json`` a JSON list of objects with keys ``id``, ``statement``,
``source``, ``status``, ``seconds``. The exit code is 0 when every selected claim holds
(``proved`` or ``proved-for-cases``), 1 when one failed or errored, 2 when ``--only``
selects nothing. ``--negative-controls`` runs the deliberately false claims instead; then
the exit code is 0 when every one of them is reported ``failed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

__all__ = ["main"]

_COLUMNS = (("id", 40), ("statement", 58), ("source", 34), ("status", 16), ("seconds", 7))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(values: Sequence[str], widths: Sequence[int]) -> str:
    cells = (_cut(v, w).ljust(w) for v, w in zip(values, widths, strict=True))
    return "  ".join(cells).rstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proofs_check",
        description="Verify the AMiD claims symbolically (SymPy) and against amid_ref.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.add_argument(
        "--only", metavar="PATTERN", help="run the claims whose id matches (glob or substring)"
    )
    parser.add_argument(
        "--negative-controls",
        action="store_true",
        help="run the deliberately false claims; succeed when all of them fail",
    )
    parser.add_argument(
        "--details", action="store_true", help="print what each check showed under the table"
    )
    return parser


def main(argv: Sequence[str] | None = None, registry: Mapping | None = None) -> int:
    """Entry point; ``registry`` overrides the claims to run (for tests)."""
    args = build_parser().parse_args(argv)
    import proofs_check  # sympy: optional (the proofs extra); --help works without it

    negative = args.negative_controls
    if registry is None:
        registry = proofs_check.NEGATIVE_CONTROLS if negative else proofs_check.CLAIMS
    selected = proofs_check.select(registry, args.only)
    if not selected:
        print(f"no claim id matches {args.only!r}", file=sys.stderr)
        return 2

    progress = None
    if not args.json:
        widths = [w for _, w in _COLUMNS]
        widths[0] = max(len(c.id) for c in selected)  # ids are never cut
        print(_row([name for name, _ in _COLUMNS], widths))
        print(_row(["-" * w for w in widths], widths))

        def progress(r):
            cells = [r.id, r.statement, r.source, r.status, f"{r.seconds:.2f}"]
            print(_row(cells, widths), flush=True)

    results = proofs_check.run_claims(args.only, progress, registry=registry)
    if negative:
        bad = [r for r in results if r.status != proofs_check.FAILED]
    else:
        bad = [r for r in results if not r.ok]

    if args.json:
        print(json.dumps([r.as_dict() for r in results], ensure_ascii=False, indent=1))
    else:
        total = sum(r.seconds for r in results)
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        print(f"\n{len(results)} claims in {total:.1f} s: {summary}")
        shown = results if args.details else bad
        for r in shown:
            print(f"\n{r.id} [{r.status}]\n  {r.detail}")
    if bad:
        what = "did not fail" if negative else "did not hold"
        print(f"{len(bad)} claim(s) {what}: {', '.join(r.id for r in bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
