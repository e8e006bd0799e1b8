"""The training recipes of docs/training.md run as printed, and the comparison script of
docs/choosing.md runs (at a tiny size here; its full run is the page's measurement)."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

#: A python block directly after this marker is executed by the tests.
MARKER = "<!-- recipe -->"


def recipes(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return re.findall(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


N_RECIPES = 9


def test_training_page_has_the_recipes():
    blocks = recipes(DOCS / "training.md")
    assert len(blocks) == N_RECIPES
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    assert text.count("(tested)") == len(blocks)


# The TRL recipe: trl.experimental warns on import that it is experimental. Every other
# warning (FutureWarnings included) fails the recipe.
@pytest.mark.filterwarnings("ignore:You are importing from 'trl.experimental'")
@pytest.mark.parametrize("index", range(N_RECIPES))
def test_training_recipe_runs(index, offline, capsys):
    code = recipes(DOCS / "training.md")[index]
    exec(compile(code, f"docs/training.md recipe {index + 1}", "exec"), {"__name__": "recipe"})
    assert capsys.readouterr().out.strip()  # every recipe prints its result


def test_choosing_comparison_script_runs(offline):
    module = runpy.run_path(str(DOCS / "recipes" / "compare_tiny_gpt2.py"), run_name="recipe")
    rows = module["main"](["--steps", "2", "--seeds", "0", "--train", "16", "--heldout", "4",
                           "--vocab", "64", "--seq", "8"])  # fmt: skip
    assert {r["setting"] for r in rows} == set(module["SETTINGS"])
    assert all(r["kl"] > 0 and r["nll"] > 0 for r in rows)
    assert os.path.exists(DOCS / "choosing.md")
    assert "python docs/recipes/compare_tiny_gpt2.py" in (DOCS / "choosing.md").read_text("utf-8")


def test_four_method_comparison_runs(offline, capsys):
    """docs/recipes/compare_methods.py at a tiny size: KD, TAID with its t schedule, GKD's
    JSD and AMiD train at equal budget, and each logs its own parameters."""
    module = runpy.run_path(str(DOCS / "recipes" / "compare_methods.py"), run_name="recipe")
    rows = module["main"](["--steps", "4", "--seeds", "0", "--train", "16", "--heldout", "4",
                           "--vocab", "64", "--seq", "8"])  # fmt: skip
    assert [r["setting"] for r in rows] == list(module["SETTINGS"])
    assert all(r["kl"] > 0 and r["nll"] > 0 for r in rows)
    logs = {r["setting"]: r["last_log"] for r in rows}
    assert logs["KD"]["amid/lam"] == 0.0
    taid = logs["TAID (t: 0.4 → 1)"]
    assert taid["amid/t"] == pytest.approx(0.4 + 0.6 * 3 / 4)  # step 3 of 4
    assert logs["GKD-JSD (β = 0.5)"]["amid/beta"] == 0.5
    assert logs["AMiD (α = −5, λ = 0.1)"]["amid/alpha"] == -5.0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(rows)
    for page in ("training.md", "choosing.md"):
        assert "docs/recipes/compare_methods.py" in (DOCS / page).read_text("utf-8"), page
