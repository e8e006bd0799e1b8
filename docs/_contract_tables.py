"""Documentation tables generated from the divergence contract (:mod:`amid_ref._specs`).

The divergence table of ``docs/mathematics.md`` sits between the markers
``<!-- contract: divergence-table -->`` and ``<!-- /contract: divergence-table -->`` and is
this module's :func:`divergence_table`, verbatim; ``tests/test_registry.py`` fails when the
page and the records differ. After adding or changing a record, regenerate the page with::

    python docs/_contract_tables.py --write

Nothing here downloads anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATHEMATICS = ROOT / "docs" / "mathematics.md"
BEGIN = "<!-- contract: divergence-table -->"
END = "<!-- /contract: divergence-table -->"


# $…$ maths and `code` spans of a text keep their characters; elsewhere * and _ are text
# (a_* is a parameter's name, not the start of an emphasis).
_PROTECTED = re.compile(r"(\$[^$]*\$|`[^`]*`)")


def _cell(text: str) -> str:
    parts = _PROTECTED.split(" ".join(str(text).split()))
    for k in range(0, len(parts), 2):
        parts[k] = parts[k].replace("*", "\\*").replace("_", "\\_")
    return "".join(parts).replace("|", "\\|")


def _math(latex: str) -> str:
    # Inside a table cell a bare | splits the row: the norm bars become \Vert / \vert.
    return "$" + " ".join(latex.split()).replace("\\|", "\\Vert ").replace("|", "\\vert ") + "$"


def _params(spec) -> str:
    out = []
    for p in spec.params:
        default = "required" if p.required else f"default {p.default!r}"
        domain = f", in ${p.domain}$" if p.kind == "real" and p.domain != r"\mathbb{R}" else ""
        meaning = f" ({_cell(p.meaning)})" if p.meaning else ""
        out.append(f"`{p.name}`{meaning}: {default}{domain}")
    return "; ".join(out)


def _offered(spec) -> str:
    from amid_ref.contract import IMPLEMENTATIONS

    missing = [f"not in `{impl}`: {_cell(spec.not_offered[impl])}" for impl in spec.not_offered]
    offered = [f"`{impl}`" for impl in IMPLEMENTATIONS if spec.offered_by(impl)]
    return ", ".join(offered) + ("; " + "; ".join(missing) if missing else "")


def divergence_table() -> str:
    """The divergence table as Markdown: one row per record of the contract."""
    from amid_ref.contract import SPECS

    lines = [
        "| name | definition | parameters | $+\\infty$ where | limits | claims | implementations |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in SPECS.values():
        limits = "; ".join(_math(statement) for statement, _ in spec.limits)
        ids = dict.fromkeys([*(c for _, c in spec.limits if c), *spec.claims])
        claims = ", ".join(f"`claim: {c}`" for c in ids)
        lines.append(
            f"| `{spec.name}` | {_math(spec.formula)}: {_cell(spec.words)} | {_params(spec)} "
            f"| {_cell(spec.infinite)} | {limits} | {claims} | {_offered(spec)} |"
        )
    return "\n".join(lines)


def generated_block() -> str:
    return f"{BEGIN}\n{divergence_table()}\n{END}"


def page_block(text: str) -> str | None:
    """The generated block as it stands in a page, or None if the page has no markers."""
    start = text.find(BEGIN)
    stop = text.find(END)
    if start < 0 or stop < 0:
        return None
    return text[start : stop + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/mathematics.md")
    args = parser.parse_args(argv)
    text = MATHEMATICS.read_text(encoding="utf-8")
    block = page_block(text)
    if block is None:
        print(f"{MATHEMATICS}: markers {BEGIN} ... {END} not found", file=sys.stderr)
        return 2
    if not args.write:
        print(generated_block())
        return 0 if block == generated_block() else 1
    MATHEMATICS.write_text(text.replace(block, generated_block()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
