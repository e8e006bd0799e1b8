"""A small document model rendered to Markdown and to self-contained HTML.

The reports of ``amid-ref verify`` (``report.md``, ``report.html``: figures embedded as
base64 PNG, no script) and the summary of ``amid-ref study`` (``summary.md``) are built as
a :class:`Document` of blocks (headings, paragraphs, lists, tables, preformatted text,
figures, collapsible sections) and rendered here.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Document", "status_word"]


def status_word(ok: bool) -> str:
    """``"PASS"`` or ``"FAIL"`` (the HTML rendering colours these words)."""
    return "PASS" if ok else "FAIL"


@dataclass
class Document:
    """A document as a list of blocks, rendered to Markdown (:meth:`to_markdown`) and to a
    self-contained HTML page (:meth:`to_html`): ``amid-ref verify``'s ``report.md`` /
    ``report.html`` and ``amid-ref study``'s ``summary.md``.

    Blocks: ``("h", level, text)``, ``("p", text)``, ``("list", items)``,
    ``("table", headers, rows)``, ``("pre", text)``, ``("figure", path, caption)``,
    ``("details", summary, blocks)``. Inline text may use ``code`` and **bold**.
    """

    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("list", list(items)))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", list(headers), [[str(c) for c in r] for r in rows]))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", Path(path), caption))

    def details(self, summary: str, blocks: list) -> None:
        self.blocks.append(("details", summary, blocks))

    # -- Markdown ------------------------------------------------------------------------

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        self._md_blocks(self.blocks, lines)
        return "\n".join(lines).rstrip() + "\n"

    @staticmethod
    def _md_cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    def _md_blocks(self, blocks, lines: list[str]) -> None:
        for block in blocks:
            kind = block[0]
            if kind == "h":
                lines += [f"{'#' * (block[1] + 1)} {block[2]}", ""]
            elif kind == "p":
                lines += [block[1], ""]
            elif kind == "list":
                lines += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                headers, rows = block[1], block[2]
                lines.append("| " + " | ".join(self._md_cell(h) for h in headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                lines += ["| " + " | ".join(self._md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif kind == "pre":
                lines += ["```text", block[1].rstrip(), "```", ""]
            elif kind == "figure":
                lines += [f"![{block[2]}]({block[1].name})", "", f"*{block[2]}*", ""]
            elif kind == "details":
                lines += [f"**{block[1]}**", ""]
                self._md_blocks(block[2], lines)

    # -- HTML ----------------------------------------------------------------------------

    _CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.PASS, span.PASS { color: #0a6b2a; font-weight: 600; }
td.FAIL, span.FAIL { color: #b00020; font-weight: 700; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 0.9em; background: #f6f6f6; }
pre { padding: .6em; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-style: italic; color: #444; }
details { margin: .5em 0 1em; } summary { cursor: pointer; font-weight: 600; }
"""

    @staticmethod
    def _inline(text: str) -> str:
        out = html.escape(text, quote=False)
        out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
        out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
        return re.sub(r"\b(PASS|FAIL)\b", r'<span class="\1">\1</span>', out)

    def to_html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{self._CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        self._html_blocks(self.blocks, parts)
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def _html_blocks(self, blocks, parts: list[str]) -> None:
        for block in blocks:
            kind = block[0]
            if kind == "h":
                level = min(block[1] + 1, 6)
                parts.append(f"<h{level}>{self._inline(block[2])}</h{level}>")
            elif kind == "p":
                parts.append(f"<p>{self._inline(block[1])}</p>")
            elif kind == "list":
                parts.append(
                    "<ul>" + "".join(f"<li>{self._inline(i)}</li>" for i in block[1]) + "</ul>"
                )
            elif kind == "table":
                head = "".join(f"<th>{self._inline(str(h))}</th>" for h in block[1])
                body = []
                for row in block[2]:
                    cells = []
                    for c in map(str, row):
                        cls = f' class="{c}"' if c in ("PASS", "FAIL") else ""
                        cells.append(f"<td{cls}>{self._inline(c)}</td>")
                    body.append("<tr>" + "".join(cells) + "</tr>")
                parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
            elif kind == "pre":
                parts.append(f"<pre>{html.escape(block[1])}</pre>")
            elif kind == "figure":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(block[2])}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{self._inline(block[2])}</figcaption></figure>"
                )
            elif kind == "details":
                parts.append(f"<details><summary>{self._inline(block[1])}</summary>")
                self._html_blocks(block[2], parts)
                parts.append("</details>")
