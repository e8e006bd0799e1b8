"""The notebooks execute headless without errors, in a kernel of this interpreter.

The notebooks are committed as jupytext percent-format ``.py`` files only; the ``.ipynb``
is generated here in memory (and by the docs build), so they cannot rot. The kernel is a
kernelspec written to a temporary ``JUPYTER_PATH`` folder that runs ``sys.executable``: a
``python3`` kernel installed elsewhere on the machine (another virtualenv, a user-level
Jupyter) cannot be picked up by mistake.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))
KERNEL = "amid-ref-tests"
#: The whole set must stay fast (issue: ~90 s); each notebook gets this much at most.
CELL_TIMEOUT_S = 180
#: Tags that allow a ``def`` in a notebook cell: the user code under test (notebook 4), and
#: helpers that only format output. Anything else would be maths defined in a notebook.
ALLOWED_DEF_TAGS = {"user-code", "display-helper"}


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("jupyter")
    kernelspec.install(prefix=str(prefix), kernel_name=KERNEL)
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def test_there_are_four_paired_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert "format_name: percent" in text, path.name
        assert "# %% [markdown]" in text, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_maths(path):
    nb = jupytext.read(path)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = set(cell.metadata.get("tags", []))
        if re.search(r"^\s*(def|class)\s|lambda\b", cell.source, flags=re.M):
            assert tags & ALLOWED_DEF_TAGS, (
                f"{path.name}: a cell defines a function without a tag from "
                f"{sorted(ALLOWED_DEF_TAGS)}:\n{cell.source[:200]}"
            )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_name):
    nb = jupytext.read(path)
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure was displayed"
    assert seconds < 60, f"{path.name} took {seconds:.0f} s"
