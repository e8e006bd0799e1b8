"""MkDocs hooks of the amid-ref documentation (registered in ``mkdocs.yml``).

* The notebooks live in ``notebooks/`` at the repository root (jupytext percent-format
  ``.py`` files, the only committed form); :func:`on_files` adds them to the site under
  ``notebooks/`` so that mkdocs-jupyter executes and renders them.
* Generated tables: a page containing ``<!-- generated: tolerance-table -->`` gets the
  table of :data:`amid_ref.tolerances.TOLERANCES`, one with
  ``<!-- generated: claims-table -->`` the claim registry :data:`proofs_check.CLAIMS`.
  The source of truth stays in the code; the page cannot drift from it.
* MathJax is served by the site itself: :func:`on_files` adds the MathJax 3 build of the
  ``django-static-mathjax`` package (installed by the ``docs`` extra; no Django needed)
  under ``javascripts/vendor/mathjax/``, so the maths renders with no network.
* The API pages render the numpydoc/RST markup of the docstrings that Markdown leaves
  as text: ``:math:`…``` and ``.. math::`` blocks become MathJax, ``:func:`…``` and
  friends plain code. A block stating several equations on one line (``,\\quad``
  between them) is stacked one equation per line, to fit the content column.

Nothing here downloads anything.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# The parts of MathJax's es5 build that the pages use: the combined TeX-to-CHTML
# component, its web fonts, the TeX extensions it autoloads and the menu/accessibility
# modules it loads on demand.
MATHJAX_DEST = "javascripts/vendor/mathjax"
MATHJAX_PARTS = (
    "tex-chtml.js",
    "output/chtml/fonts/woff-v2",
    "input/tex/extensions",
    "a11y",
    "ui",
)


def mathjax_dir() -> Path:
    """The ``es5`` folder of the MathJax build shipped by ``django-static-mathjax``."""
    try:
        import mathjax
    except ImportError:
        raise RuntimeError(
            "the docs need the MathJax build of the 'django-static-mathjax' package: "
            "pip install 'amid-ref[docs]'"
        ) from None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"no MathJax build in {es5} (reinstall django-static-mathjax)")
    return es5


def mathjax_files() -> list[tuple[str, Path]]:
    """``(site path, source file)`` of every MathJax file the site serves."""
    es5 = mathjax_dir()
    out = []
    for part in MATHJAX_PARTS:
        src = es5 / part
        paths = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        out += [(f"{MATHJAX_DEST}/{p.relative_to(es5).as_posix()}", p) for p in paths]
    return out


TOLERANCE_MARKER = "<!-- generated: tolerance-table -->"
CLAIMS_MARKER = "<!-- generated: claims-table -->"


@event_priority(100)  # before mkdocs-jupyter turns notebook files into pages
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        files.append(
            File(
                f"notebooks/{path.name}",
                str(ROOT),
                config["site_dir"],
                config["use_directory_urls"],
            )
        )
    for uri, path in mathjax_files():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def tolerance_table() -> str:
    """The tolerance table as Markdown, generated from ``amid_ref.tolerances.TOLERANCES``."""
    from amid_ref.tolerances import TOLERANCES

    lines = [
        "| suite | quantity | dtype | rtol | atol | scale | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for (suite, quantity, dtype), tol in TOLERANCES.items():
        scale = "max(1, \\|want\\|)" if tol.log_scaled else "\\|want\\|"
        lines.append(
            f"| `{suite}` | `{quantity}` | `{dtype}` | {tol.rtol:g} | {tol.atol:g} | {scale} "
            f"| {_cell(tol.reason)} |"
        )
    return "\n".join(lines)


def claims_table() -> str:
    """The claim registry as Markdown, generated from ``proofs_check.CLAIMS``."""
    import proofs_check

    lines = ["| claim | statement | scope | source |", "|---|---|---|---|"]
    for claim_id, claim in proofs_check.CLAIMS.items():
        # statements are LaTeX: typeset them, with the norm bars that would split a table
        # cell written as \Vert / \vert
        statement = " ".join(str(getattr(claim, "statement", "")).split())
        statement = statement.replace("\\|", "\\Vert ").replace("|", "\\vert ")
        source = getattr(claim, "source", "")
        scope = getattr(claim, "scope", "")
        cases = getattr(claim, "cases", "")
        scope_text = f"{scope}: {cases}" if cases else scope
        anchor = f'<a id="{claim_id}"></a>'  # target of the [claim: id] links of the API pages
        lines.append(
            f"| {anchor}`{claim_id}` | ${statement}$ | {_cell(scope_text)} | {_cell(source)} |"
        )
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if TOLERANCE_MARKER in markdown:
        markdown = markdown.replace(TOLERANCE_MARKER, tolerance_table())
    if CLAIMS_MARKER in markdown:
        markdown = markdown.replace(CLAIMS_MARKER, claims_table())
    return markdown


_ROLE = re.compile(r":(?:func|data|mod|class|meth|attr|obj|exc|py:\w+):(<code>)")
_INLINE_MATH = re.compile(r":math:<code>(.*?)</code>", re.S)
_BLOCK_MATH = re.compile(
    r"<p>\.\. math::</p>\s*(?:<div[^>]*>)?<pre>(?:<span></span>)?"
    r"<code>(.*?)</code></pre>(?:</div>)?",
    re.S,
)


# Two adjacent "[claim: a][claim: b]" of a docstring read as a Markdown reference link, which
# mkdocstrings hands to autorefs as a cross-reference to "claim: b": turn it back into text.
_AUTOREF_CLAIM = re.compile(
    r'<autoref (?=[^>]*identifier="claim: ([^"]+)")[^>]*>(.*?)</autoref>', re.S
)
_CLAIM = re.compile(r"\[claim: ([A-Za-z0-9_.]+)\]")


def link_claims(html: str, page_url: str, directory_urls: bool = False) -> str:
    """Make each ``[claim: id]`` of a docstring a link to the claim's row on the claims page
    (``page_url``: the page's URL relative to the site root, as MkDocs gives it)."""
    html = _AUTOREF_CLAIM.sub(lambda m: f"[{m.group(2)}][claim: {m.group(1)}]", html)
    base = "../" * page_url.count("/") + ("claims/" if directory_urls else "claims.html")
    return _CLAIM.sub(
        lambda m: f'<a class="claim" href="{base}#{m.group(1)}">[claim: {m.group(1)}]</a>', html
    )


# A docstring's ``.. math::`` block often states several equations on one line, separated by
# ",\quad" (read in a terminal, where a line is as wide as the text). On the site such a line
# is wider than the content column; it is stacked instead, one equation per line.
_SEPARATOR = re.compile(r",\s*\\q?quad(?![A-Za-z])\s*")
_OPENERS = re.compile(r"\\left(?![A-Za-z])|\\begin\{[^}]*\}|\{")
_CLOSERS = re.compile(r"\\right(?![A-Za-z])|\\end\{[^}]*\}|\}")


def stack_equations(tex: str) -> str:
    """``tex`` with its top-level ``,\\quad`` / ``,\\qquad`` separators turned into line
    breaks of a ``gathered`` environment (unchanged when there are none). Separators inside
    braces, ``\\left … \\right`` or an environment stay where they are."""
    parts, start, depth, pos = [], 0, 0, 0
    while pos < len(tex):
        if tex[pos] == "\\" and tex[pos + 1 : pos + 2] in ("{", "}", "\\"):
            pos += 2  # an escaped brace or a line break is not a group
            continue
        if m := _OPENERS.match(tex, pos):
            depth += 1
            pos = m.end()
        elif m := _CLOSERS.match(tex, pos):
            depth -= 1
            pos = m.end()
        elif depth == 0 and (m := _SEPARATOR.match(tex, pos)):
            parts.append(tex[start:pos] + ",")
            start = pos = m.end()
        else:
            pos += 1
    if not parts:
        return tex
    parts.append(tex[start:])
    lines = " \\\\\n".join(part.strip() for part in parts)
    return f"\\begin{{gathered}}\n{lines}\n\\end{{gathered}}"


def render_rst_roles(html: str) -> str:
    """Turn the RST markup that Markdown leaves in docstrings into MathJax and code."""
    html = _BLOCK_MATH.sub(
        lambda m: f'<div class="arithmatex">\\[{stack_equations(m.group(1))}\\]</div>', html
    )
    html = _INLINE_MATH.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html)
    return _ROLE.sub(r"\1", html)


def on_page_content(html, page, config, files):
    if page.file.src_uri.startswith("api/"):
        return link_claims(render_rst_roles(html), page.url, config["use_directory_urls"])
    return html
