"""The documentation builds in strict mode, offline, and says what the code does.

``mkdocs build --strict`` runs in a subprocess into a temporary folder, with every
non-loopback network connection refused (a ``sitecustomize`` on ``PYTHONPATH``): the build
must not download anything (MathJax is referenced for the reader's browser only). The
notebooks are executed by the build in a kernel of this interpreter (a kernelspec written to
a temporary ``JUPYTER_PATH``). The generated pages are then checked against the code they
are generated from.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

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
        "api/amid_ref/",
    )
    for claim in ("mean.idempotent", "mean.homogeneous", "mean.symmetry"):
        assert f'href="../../claims/#{claim}"' in linked
    assert "autoref" not in linked


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
    assert not net_log.exists(), f"the build tried to reach the network: {net_log.read_text()}"
    assert not (ROOT / ".cache").exists(), "the build left a cache folder in the working tree"
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


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
    for page in (site / "api").rglob("index.html"):
        html = page.read_text(encoding="utf-8")
        assert ":math:" not in html and ".. math::" not in html, page
    assert 'class="claim" href="../../claims/#' in api


@pytest.mark.slow
def test_build_executes_and_renders_the_notebooks(site):
    for name in ("01_interpolation_paths", "02_limit_cases", "03_mode_covering", "04_ground_truth"):
        html = _page(site, f"notebooks/{name}")
        assert "data:image/png;base64," in html, name
        assert "Traceback" not in html, name
