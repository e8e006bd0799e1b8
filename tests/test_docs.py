"""The documentation builds in strict mode, offline, and says what the code does.

``mkdocs build --strict`` runs in a subprocess into a temporary folder, with every
non-loopback network connection refused (a ``sitecustomize`` on ``PYTHONPATH``): the build
must not download anything (MathJax is copied into the site from the installed
``django-static-mathjax`` package). The notebooks are executed by the build in a kernel of
this interpreter (a kernelspec written to a temporary ``JUPYTER_PATH``). The generated pages
are then checked against the code they are generated from, and opened from disk in headless
Chromium with every non-``file://`` request refused, as a reader sees them: every formula
must have a box with an area and a glyph for each of its characters, no TeX may be left as
text, no display may be wider than the content column, the figures must load and the
navigation links must land on pages. One screenshot per page is kept to look at: the
whole page in ``AMID_DOCS_SCREENSHOTS`` if that is set, else the first screen of it under
pytest's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("mkdocs")


def _load_hooks():
    spec = importlib.util.spec_from_file_location("amid_ref_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- fast checks -------------------------------------------------------------------------


def test_nav_lists_every_page_and_notebook():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.(?:md|py))\s*$", text, re.M))
    # the site's own pages; docs/figures/ holds generated material included by other pages
    pages = {
        p.relative_to(DOCS).as_posix()
        for folder in (DOCS, DOCS / "api", DOCS / "notebooks")
        for p in folder.glob("*.md")
    }
    assert pages <= nav, f"pages missing from the nav: {sorted(pages - nav)}"
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")}
    assert len(notebooks) == 4 and notebooks <= nav
    for page in ("gpu.md", "conformance.md", "study.md"):
        assert page in nav


def test_claim_ids_cited_in_the_docs_exist():
    proofs_check = pytest.importorskip("proofs_check")
    cited = set()
    for page in DOCS.rglob("*.md"):
        cited |= set(re.findall(r"claim: ([a-z0-9_]+(?:\.[a-z0-9_]+)+)", page.read_text("utf-8")))
    assert len(cited) >= 30
    unknown = cited - set(proofs_check.CLAIMS)
    assert not unknown, f"claim ids cited in docs/ but not in proofs_check.CLAIMS: {unknown}"
    maths = (DOCS / "mathematics.md").read_text("utf-8")
    uncited = [c for c in proofs_check.CLAIMS if f"claim: {c}`" not in maths]
    assert not uncited, f"claims the mathematics page does not cite: {uncited}"


def test_tolerance_table_is_generated_from_the_code():
    from amid_ref.tolerances import TOLERANCES

    table = _load_hooks().tolerance_table()
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(TOLERANCES)
    for row, ((suite, quantity, dtype), tol) in zip(rows, TOLERANCES.items(), strict=True):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert cells[:3] == [f"`{suite}`", f"`{quantity}`", f"`{dtype}`"]
        assert float(cells[3]) == tol.rtol and float(cells[4]) == tol.atol
        assert ("max(1" in cells[5]) == tol.log_scaled
    assert "<!-- generated: tolerance-table -->" in (DOCS / "tolerances.md").read_text("utf-8")


def test_precise_api_page_lists_every_public_name():
    import amid_ref.precise

    text = (DOCS / "api" / "precise.md").read_text(encoding="utf-8")
    members = re.search(r"^\s*members: \[(.*)\]$", text, re.M)
    assert members, "docs/api/precise.md names its members (members: [...])"
    listed = [m.strip() for m in members.group(1).split(",")]
    assert sorted(listed) == sorted(amid_ref.precise.__all__)


def test_docstring_markup_is_rendered():
    hooks = _load_hooks()
    html = (
        "<p>The :math:<code>\\log r</code> of :func:<code>amid_ref.f</code>.</p>\n"
        "<p>.. math::</p>\n<pre><code>r = m / Z\n</code></pre>"
    )
    out = hooks.render_rst_roles(html)
    assert '<span class="arithmatex">\\(\\log r\\)</span>' in out
    assert '<div class="arithmatex">\\[r = m / Z\n\\]</div>' in out
    assert ":func:" not in out and "<code>amid_ref.f</code>" in out
    linked = hooks.link_claims(
        'see [claim: mean.idempotent] and <autoref identifier="claim: mean.symmetry" '
        "optional>claim: mean.homogeneous</autoref>",
        "api/amid_ref.html",
    )
    for claim in ("mean.idempotent", "mean.homogeneous", "mean.symmetry"):
        assert f'href="../claims.html#{claim}"' in linked
    assert "autoref" not in linked


def test_docstring_displays_stack_their_equations():
    """A docstring's ``.. math::`` line of several equations (``,\\quad``-separated) is one
    equation per line on the site; separators inside a group stay."""
    hooks = _load_hooks()
    stacked = hooks.stack_equations(r"a = 1,\quad b = 2,\qquad c = 3")
    assert stacked == "\\begin{gathered}\na = 1, \\\\\nb = 2, \\\\\nc = 3\n\\end{gathered}"
    for one_line in (
        r"a \quad\text{e.g.}\quad b",  # no comma: one statement
        r"\left(a,\quad b\right)",
        r"f_{a,\quad b}",
        r"\begin{cases} a,\quad b \end{cases}",
    ):
        assert hooks.stack_equations(one_line) == one_line
    # escaped braces are not groups
    assert hooks.stack_equations(r"\{a,\quad b\}").count("\\\\") == 1
    html = "<p>.. math::</p>\n<pre><code>x = 1,\\quad y = 2\n</code></pre>"
    assert "\\begin{gathered}" in hooks.render_rst_roles(html)


def test_site_reads_offline_and_from_disk():
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml uses !!python/name tags in some setups; unknown tags load as None here
    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    assert config["use_directory_urls"] is False
    remote = [s for s in config.get("extra_javascript", []) + config.get("extra_css", [])
              if "://" in str(s)]  # fmt: skip
    assert not remote, f"the site loads scripts from the network: {remote}"
    hooks = _load_hooks()
    served = dict(hooks.mathjax_files())
    assert f"{hooks.MATHJAX_DEST}/tex-chtml.js" in served
    assert any(uri.endswith(".woff") for uri in served), "MathJax fonts are not served"
    assert all(path.is_file() for path in served.values())


# Pages about the internals, which name private modules on purpose.
_INTERNALS_PAGES = {"contributing.md", "gpu.md", "conformance.md"}


def test_pages_cite_what_the_repository_ships_and_public_names():
    """The mathematics is cited as the docs' mathematics page (the repository ships no
    MATH.md), in the README, the pages and the claims' sources; the pages for users name
    public modules only (no ``gpu._divergences``, ``amid_ref._specs``)."""
    proofs_check = pytest.importorskip("proofs_check")
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "MATH.md" not in text, page
        if (page.parent == DOCS and page.name not in _INTERNALS_PAGES) or page.name == "README.md":
            private = re.findall(r"\b(?:amid_ref|gpu|proofs_check)(?:\.\w+)*\._[a-z]\w*", text)
            assert not private, f"{page.relative_to(ROOT)}: {private}"
    for claim_id, claim in proofs_check.CLAIMS.items():
        assert "MATH.md" not in str(getattr(claim, "source", "")), claim_id


# --- the commands the pages print --------------------------------------------------------

# Entry points whose arguments the pages print, by how the page invokes them.
_ENTRY_POINTS = {
    "amid-ref": "amid_ref.cli",
    "python -m amid_ref": "amid_ref.cli",
    "python -m proofs_check": "proofs_check.__main__",
    "python -m gpu.bench": "gpu.bench",
    "python -m gpu.bench_vocab_parallel": "gpu.bench_vocab_parallel",
    "python -m gpu.accuracy": "gpu.accuracy",
    "python -m gpu.device_check": "gpu.device_check",
    "python -m amid_ref.conformance.audit_page": "amid_ref.conformance.audit_page",
}
# Files a walkthrough has the reader write first (docs/conformance.md).
_READERS_FILES = {"repro.py", "test_my_losses.py", "test_property.py"}
_ENV = re.compile(r"^[A-Z_]+=\S*$")


def _doc_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command of a shell block (bash, console: ``$ ``
    lines, or a block without language) and every inline code span that starts with
    ``amid-ref`` or ``python -m``, in the README and the docs; ``&&`` chains are split."""
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), ROOT / "notebooks" / "README.md"]
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(ROOT).as_posix()
        lines = []
        for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            if block.group(1) not in ("", "bash", "console", "sh", "shell"):
                continue
            for line in block.group(2).replace("\\\n", " ").splitlines():  # continued lines
                if block.group(1) == "console" and not line.startswith("$ "):
                    continue  # the command's output
                lines.append(line.removeprefix("$ "))
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        # an inline span with arguments; `amid-ref mixture` alone names a command
        lines += re.findall(r"`((?:amid-ref [^`\s]+|python -m) [^`]*)`", prose)
        for line in lines:
            for part in line.split("&&"):
                part = part.split(" # ", 1)[0].strip()
                if part.startswith(("amid-ref", "python", ".venv/", "HYPOTHESIS", "torchrun")):
                    found.append((where, part))
    return found


def _argv(command: str) -> tuple[str, list[str]]:
    """The entry point and the arguments of ``command`` (environment assignments and a
    ``.venv/bin/`` prefix dropped; in a synopsis the optional parts, ``[--out DIR]``, are
    taken and of alternatives, ``NAME|all``, the last one)."""
    import shlex

    words = [w for w in shlex.split(command) if not _ENV.match(w)]
    words = [w.removeprefix(".venv/bin/") for w in words]
    # a synopsis: optional parts in brackets are taken, of alternatives A|B the last one
    words = [w.removeprefix("[").removesuffix("]").split("|")[-1] for w in words]
    if words[0] == "python3":
        words[0] = "python"
    for prefix in sorted(_ENTRY_POINTS, key=len, reverse=True):
        n = len(prefix.split())
        if words[:n] == prefix.split():
            return prefix, words[n:]
    return " ".join(words[:3]), words[2:] if words[:2] == ["python", "-m"] else words[1:]


class _Parsed(Exception):
    def __init__(self, namespace, extra):
        super().__init__("parsed")
        self.namespace, self.extra = namespace, extra


def test_every_command_in_the_docs_parses_as_printed(monkeypatch):
    """Each ``amid-ref …`` / ``python -m …`` command of the README and the docs is given to
    its own entry point (``main(argv)``), stopped right after argparse has read it: every
    option must exist and take the value printed (negative numbers included). Other
    commands must name files that exist (test files, recipes) or belong to the reader."""
    import argparse
    import importlib

    original = argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_known_args(self, args=None, namespace=None):
        depth[0] += 1
        try:
            result = original(self, args, namespace)
        finally:
            depth[0] -= 1
        if depth[0] == 0:  # the outermost parse: the command is read, run nothing
            raise _Parsed(*result)
        return result

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    commands = _doc_commands()
    assert len(commands) > 60
    parsed = 0
    for where, command in commands:
        entry, argv = _argv(command)
        if entry in _ENTRY_POINTS:
            if entry.startswith("python -m gpu"):
                pytest.importorskip("torch")
            main = importlib.import_module(_ENTRY_POINTS[entry]).main
            with pytest.raises((_Parsed, SystemExit)) as parsed_info:
                main(argv)
            if isinstance(parsed_info.value, SystemExit):  # --help: printed, exit code 0
                assert parsed_info.value.code == 0 and "--help" in argv, f"{where}: {command}"
            else:
                extra = parsed_info.value.extra
                assert not extra, f"{where}: {command}: unrecognized {extra}"
            parsed += 1
        elif entry.startswith("python -m pytest") or entry == "python -m jupytext":
            for word in argv:
                if word.endswith(".py") and word not in _READERS_FILES:
                    assert (ROOT / word.split("::")[0]).is_file(), f"{where}: {command}"
        elif entry.startswith("python") and argv and argv[0].endswith(".py"):
            assert argv[0] in _READERS_FILES or (ROOT / argv[0]).is_file(), f"{where}: {command}"
    assert parsed > 50


def test_the_quick_commands_in_the_docs_run_as_printed(tmp_path, monkeypatch, capsys):
    """The commands that take a second run for real, in a fresh folder, and succeed:
    every ``amid-ref mixture`` the pages print (one with negative α)."""
    from amid_ref.cli import main

    monkeypatch.chdir(tmp_path)
    ran = 0
    for where, command in _doc_commands():
        entry, argv = _argv(command)
        if entry in ("amid-ref", "python -m amid_ref") and argv[0] == "mixture":
            assert main(argv) == 0, f"{where}: {command}\n{capsys.readouterr().err}"
            ran += 1
    assert ran >= 3
    assert re.search(r"^\s+-5\s+0\.\d+", capsys.readouterr().out, re.M)  # a row at α = -5


# --- the build ---------------------------------------------------------------------------

_NO_NETWORK = textwrap.dedent(
    """
    import os, socket

    _LOG = os.environ["AMID_DOCS_NET_LOG"]
    _LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}
    _connect = socket.socket.connect

    def _refuse(what):
        with open(_LOG, "a") as log:
            log.write(repr(what) + "\\n")
        raise OSError(f"network access during the docs build: {what!r}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
            _refuse(address)
        return _connect(self, address)

    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL and host is not None:
            _refuse(host)
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo
    """
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from ipykernel import kernelspec

    tmp = tmp_path_factory.mktemp("docs")
    guard = tmp / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_NO_NETWORK)
    kernelspec.install(prefix=str(tmp / "jupyter"), kernel_name="python3")
    net_log = tmp / "network.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")]),
        "JUPYTER_PATH": str(tmp / "jupyter" / "share" / "jupyter"),
        "AMID_DOCS_NET_LOG": str(net_log),
        "NO_MKDOCS_2_WARNING": "1",
        "MPLBACKEND": "Agg",
    }
    out = tmp / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    # code that builds pages is not published; the notebooks' sources and the recipes are
    code = {p.relative_to(out).as_posix() for p in out.rglob("*.py")}
    assert all(c.startswith(("notebooks/", "recipes/")) for c in code), code
    assert not net_log.exists(), f"the build tried to reach the network: {net_log.read_text()}"
    assert not (ROOT / ".cache").exists(), "the build left a cache folder in the working tree"
    return out


def _page(site: Path, name: str) -> str:
    return (site / f"{name}.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_build_renders_math_and_generated_tables(site):
    from amid_ref.tolerances import TOLERANCES

    maths = _page(site, "mathematics")
    assert maths.count('class="arithmatex"') > 20
    tolerances = _page(site, "tolerances")
    assert "generated: tolerance-table" not in tolerances
    for (suite, quantity, dtype), tol in TOLERANCES.items():
        row = re.search(
            rf"<td><code>{suite}</code></td>\s*<td><code>{quantity}</code></td>\s*"
            rf"<td><code>{dtype}</code></td>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>",
            tolerances,
        )
        assert row, (suite, quantity, dtype)
        assert float(row.group(1)) == tol.rtol and float(row.group(2)) == tol.atol


@pytest.mark.slow
def test_build_lists_every_claim(site):
    proofs_check = pytest.importorskip("proofs_check")
    claims = _page(site, "claims")
    for claim_id in proofs_check.CLAIMS:
        assert f'id="{claim_id}"' in claims, claim_id


@pytest.mark.slow
def test_build_api_pages_have_no_raw_rst(site):
    api = _page(site, "api/amid_ref")
    assert "amid_ref.amid_loss" in api and "amid_ref.log_alpha_mixture" in api
    for page in (site / "api").rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert ":math:" not in html and ".. math::" not in html, page
    assert 'class="claim" href="../claims.html#' in api


@pytest.mark.slow
def test_build_executes_and_renders_the_notebooks(site):
    for name in ("01_interpolation_paths", "02_limit_cases", "03_mode_covering", "04_ground_truth"):
        html = _page(site, f"notebooks/{name}")
        assert "data:image/png;base64," in html, name
        assert "Traceback" not in html, name


# --- the built site in a browser -----------------------------------------------------------

_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The narrowest desktop layout of the theme: navigation, content and table of contents side
# by side leave the content column 688 px wide (a display that fits here fits every wider
# window; phones scroll long displays sideways, see docs/stylesheets/extra.css).
_VIEWPORT = {"width": 1280, "height": 900}
# pages that must show typeset maths (every other page is checked too: each arithmatex
# element of the build must have become MathJax output)
_MATH_PAGES = (
    "index",
    "mathematics",
    "edge-cases",
    "claims",
    "sharded",
    "api/amid_ref",
    "api/gpu",
    "api/precise",
    "notebooks/01_interpolation_paths",
    "notebooks/02_limit_cases",
    "notebooks/03_mode_covering",
    "notebooks/04_ground_truth",
)
_FIGURE_PAGES = ("study", "notebooks/01_interpolation_paths", "notebooks/03_mode_covering")

# What a reader sees, measured in the page. A formula is visible when its box has an area and
# each of its characters (mjx-c) gets its glyph from MathJax's CHTML style sheet (a
# ::before rule; "none" is the computed content of a character without one, and U+2061, the
# invisible function application, has an empty rule of its own). TeX delimiters left in the
# prose mean a formula was never typeset. A display overflows when its content is wider
# than its box (it would be cut at the column edge or need a scroll bar) or reaches past the
# content column.
_PAGE_STATE = r"""() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const article = document.querySelector("article");
  const prose = article.cloneNode(true);
  prose.querySelectorAll("pre, code, mjx-container, script").forEach((e) => e.remove());
  const text = prose.textContent;
  const column = article.getBoundingClientRect();
  const tex = new Map();
  for (const item of (MathJax.startup.document.math || [])) {
    if (item.typesetRoot) tex.set(item.typesetRoot, String(item.math).trim().slice(0, 120));
  }
  const source = (c) => tex.get(c) || c.textContent.slice(0, 120);
  const containers = Array.from(document.querySelectorAll("mjx-container"));
  // a copy in a part of the layout that is not displayed (the table of contents that the
  // theme repeats in the navigation for narrow windows) has no box to check
  const empty = containers.filter((c) => c.checkVisibility()).filter((c) => {
    const box = c.getBoundingClientRect();
    return !(box.width > 0 && box.height > 0);
  });
  const chars = Array.from(document.querySelectorAll("mjx-container mjx-c"));
  const noGlyph = chars.filter((c) => {
    const content = getComputedStyle(c, "::before").content;
    return content === "none" || content === "normal";
  });
  const overflowing = Array.from(document.querySelectorAll('mjx-container[display="true"]'))
    .filter((c) => {
      const math = c.querySelector("mjx-math");
      const box = math ? math.getBoundingClientRect() : c.getBoundingClientRect();
      const parent = c.parentElement;
      return c.scrollWidth > c.clientWidth + 1
        || (parent && parent.scrollWidth > parent.clientWidth + 1)
        || box.right > column.right + 1 || box.left < column.left - 1;
    });
  const delimiters = [];
  for (const d of ["$$", "\\[", "\\]", "\\(", "\\)", "\\begin{"]) {
    if (text.includes(d)) delimiters.push(d);
  }
  const dollar = text.match(/\$[^$\n]*[\\^_{}][^$\n]*\$/);
  if (dollar) delimiters.push(dollar[0].slice(0, 60));
  return {
    math: containers.length,
    sources: document.querySelectorAll(".arithmatex").length,
    mathErrors: document.querySelectorAll("mjx-merror").length,
    empty: empty.map(source),
    chars: chars.length,
    noGlyph: noGlyph.length,
    noGlyphExample: noGlyph.slice(0, 3).map((c) => c.className),
    rawTex: delimiters,
    overflowing: overflowing.map(source),
    images: Array.from(article.querySelectorAll("img")).map((i) => [
      i.getAttribute("src").slice(0, 80), i.complete && i.naturalWidth > 0]),
    nav: Array.from(document.querySelectorAll("a.md-nav__link[href]")).map((a) => a.href),
    links: Array.from(article.querySelectorAll("a[href]")).map((a) => a.href)
      .filter((h) => h.startsWith("file://")),
  };
}"""


#: Whether the browser test's screenshots show whole pages (``AMID_DOCS_SCREENSHOTS`` set:
#: someone will look at them) or their first screen (about 0.15 s a page instead of up to
#: 5 s for the longest pages; 40 s for the site, measured with one Chromium on 2 cores).
_FULL_PAGE_SHOTS = bool(os.environ.get("AMID_DOCS_SCREENSHOTS"))


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the browser test keeps one screenshot per page: ``AMID_DOCS_SCREENSHOTS`` if
    set (created if missing; whole pages), else a folder under pytest's temporary
    directory (the first screen of each page)."""
    chosen = os.environ.get("AMID_DOCS_SCREENSHOTS")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = os.environ.get("AMID_CHROMIUM") or next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
    )
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
        except Exception as exc:  # no system Chromium and no Playwright browser
            pytest.skip(f"no Chromium to open the site with: {exc}".splitlines()[0])
        context = browser.new_context(viewport=_VIEWPORT)
        refused: list[str] = []

        def offline(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()

        def open_page(path: Path, screenshot: Path | None = None) -> dict:
            page.goto(path.as_uri())
            page.wait_for_function("() => window.MathJax && MathJax.startup", timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")
            page.wait_for_load_state("load")
            page.evaluate("() => document.fonts.ready.then(() => true)")
            state = page.evaluate(_PAGE_STATE)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=_FULL_PAGE_SHOTS)
            return state

        yield open_page, refused
        browser.close()


@pytest.mark.slow
def test_site_renders_maths_offline_from_disk(site, browser, screenshots):
    """Every page, opened from disk with the network refused, shows each formula: a box
    with an area, glyphs for its characters, no TeX left as text, no display wider than
    the column. One screenshot per page is kept (see the ``screenshots`` fixture)."""
    open_page, refused = browser
    pages = sorted(p.relative_to(site).with_suffix("").as_posix() for p in site.rglob("*.html"))
    pages.remove("404")  # served by a web server at any URL; its links are root-relative
    assert set(_MATH_PAGES) <= set(pages)
    problems = []
    for name in pages:
        state = open_page(site / f"{name}.html", screenshots / f"{name.replace('/', '__')}.png")
        if state["math"] < state["sources"]:
            problems.append(f"{name}: {state['sources'] - state['math']} formulas left untypeset")
        if name in _MATH_PAGES and not state["math"]:
            problems.append(f"{name}: no maths typeset")
        if state["mathErrors"]:
            problems.append(f"{name}: {state['mathErrors']} TeX errors")
        if state["empty"]:
            problems.append(
                f"{name}: {len(state['empty'])} of {state['math']} formulas have an empty box, "
                f"e.g. {state['empty'][0]!r}"
            )
        if state["noGlyph"]:
            problems.append(
                f"{name}: {state['noGlyph']} of {state['chars']} characters of the maths have "
                f"no glyph CSS, e.g. {state['noGlyphExample']}"
            )
        if state["rawTex"]:
            problems.append(f"{name}: raw TeX left in the text: {state['rawTex']}")
        for formula in state["overflowing"]:
            problems.append(f"{name}: display wider than the column: {formula!r}")
        for url in {u.split("#")[0] for u in state["links"]}:
            target = Path(unquote(url.removeprefix("file://")))
            if not target.is_file():
                problems.append(f"{name}: link to {url} is not a file")
    assert not problems, "\n".join(problems) + f"\n(screenshots in {screenshots})"
    assert not refused, f"the pages asked for the network: {refused[:5]}"
    assert len(list(screenshots.glob("*.png"))) == len(pages)


@pytest.mark.slow
def test_site_figures_load_and_navigation_lands_on_pages(site, browser):
    open_page, _ = browser
    for name in _FIGURE_PAGES:
        images = open_page(site / f"{name}.html")["images"]
        assert images, f"{name}: no figure"
        broken = [src for src, ok in images if not ok]
        assert not broken, f"{name}: figures that did not load: {broken}"
    nav = open_page(site / "index.html")["nav"]
    targets = {url.split("#")[0] for url in nav}
    assert len(targets) >= 20, targets
    for url in targets:
        assert url.startswith("file://") and url.endswith(".html"), url
        path = Path(unquote(url.removeprefix("file://")))
        assert path.is_file(), f"navigation link to {url} is not a page"
    state = open_page(site / "notebooks" / "index.html")
    assert {u.split("#")[0] for u in state["nav"]} == targets, "the nav differs between pages"
