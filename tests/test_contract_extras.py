"""The contract's explicit counter-check (the naive log-domain formula fails near α = 1
where ours does not), the CLI, doctests and lint."""

from __future__ import annotations

import doctest
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from amid_ref import log_alpha_mixture, precise
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref.cli import main
from amid_ref.tolerances import assert_within, tolerance

ROOT = Path(__file__).resolve().parents[1]


def naive_log_alpha_mixture(lp, lq, alpha, lam):
    """The textbook form (1/β)·logaddexp(log λ + β log p, log(1−λ) + β log q)."""
    lm = naive_log_alpha_mean(lp, lq, alpha, lam)
    return lm - logsumexp(lm)


@pytest.mark.parametrize("alpha", [1 - 1e-12, 1 - 1e-9, 1 + 1e-9])
def test_naive_formula_fails_near_one_and_ours_does_not(alpha):
    rng = np.random.default_rng(11)
    lp = log_softmax(rng.normal(scale=4, size=50))
    lq = log_softmax(rng.normal(scale=4, size=50))
    want = precise.to_float(precise.log_alpha_mixture(lp, lq, alpha, 0.3))
    tol = tolerance("reference", "log_mixture")
    assert_within(log_alpha_mixture(lp, lq, alpha, 0.3), want, tol)
    with pytest.raises(AssertionError, match="exceeds bound"):
        assert_within(naive_log_alpha_mixture(lp, lq, alpha, 0.3), want, tol)


def test_cli_version_and_mixture(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "amid-ref" in capsys.readouterr().out
    assert (
        main(["mixture", "--p", "0.7,0.2,0.1", "--q", "0.1,0.3,0.6", "--lam", "0.5", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    alphas = [row["alpha"] for row in out["rows"]]
    assert alphas[0] == -np.inf and alphas[-1] == np.inf
    harmonic = next(row for row in out["rows"] if row["alpha"] == 3.0)
    m = 1 / (0.5 / np.array([0.7, 0.2, 0.1]) + 0.5 / np.array([0.1, 0.3, 0.6]))
    np.testing.assert_allclose(harmonic["r"], m / m.sum(), rtol=1e-13)
    np.testing.assert_allclose(harmonic["Z"], m.sum(), rtol=1e-13)
    maximum = out["rows"][0]
    np.testing.assert_allclose(maximum["r"], np.array([0.7, 0.3, 0.6]) / 1.6, rtol=1e-14)


def test_cli_table_and_bad_input(capsys):
    assert main(["mixture", "--p", "0.7,0.2,0.1", "--q", "0.1,0.3,0.6"]) == 0
    table = capsys.readouterr().out
    assert "+∞" in table and "-∞" in table and "Z_α" in table
    assert main(["mixture", "--p", "0.7,0.2,0.1", "--q", "0.1,0.3,0.7"]) == 2
    assert "q is not normalized" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's error, with the usage line
        main(["mixture", "--p", "0.7,x", "--q", "0.1,0.9"])
    assert exit_info.value.code == 2
    assert "argument --p: expected comma-separated numbers" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "amid_ref", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("amid-ref ")


CORE_MODULES = [
    "amid_ref._mixture",
    "amid_ref._divergences",
    "amid_ref._loss",
    "amid_ref._specs",
    "amid_ref._battery._known_wrong",
    "amid_ref.precise._common",
    "amid_ref.precise._mixture",
    "amid_ref.precise._divergences",
    "amid_ref.precise._loss",
    "amid_ref.presets",
    "amid_ref.tolerances",
]
#: The torch twins' modules (skipped without torch).
GPU_MODULES = ["gpu._mixture", "gpu._divergences", "gpu._loss"]


@pytest.mark.parametrize("module", CORE_MODULES + GPU_MODULES)
def test_docstring_examples_run(module):
    if module.startswith("gpu."):
        pytest.importorskip("torch")
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0 or module == "amid_ref.tolerances"  # no Examples section there


def test_public_functions_have_numpydoc_sections():
    import amid_ref

    for name in (
        "alpha_mean",
        "log_alpha_mean",
        "alpha_mixture",
        "log_alpha_mixture",
        "alpha_mixture_normalizer",
        "alpha_mixture_weight",
        "divergence",
        "amid_loss",
        "amid_grad",
    ):
        doc = getattr(amid_ref, name).__doc__
        assert doc and ".. math::" in doc, name
        assert "Parameters\n    ----------" in doc and "Returns\n    -------" in doc, name


def test_ruff_lint_and_format_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install amid-ref[test])")
    check = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([ruff, "format", "--check", str(ROOT)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
