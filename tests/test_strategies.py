"""Tests of amid_ref.strategies: the domains behind the conformance battery.

The generators must produce what their docstrings promise (one-hot rows, double underflow,
padded −inf, bf16-representable values, ...), reproducibly from a seed; the Hypothesis
strategies must stay in the domain the reference accepts; and a property-based run of the
battery's case strategy must pass the real implementations (``gpu`` against ``amid_ref``).
"""

from __future__ import annotations

import doctest
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import amid_ref
from amid_ref import strategies as S
from amid_ref.conformance import Case, check_case, round_to_dtype

# --------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------


def test_grids_hold_the_special_values():
    assert {-math.inf, math.inf, 1 - 1e-6, 1 + 1e-6, -1 - 1e-6, -1 + 1e-6, 3.0} <= set(S.ALPHA_GRID)
    assert all(0 < abs(a - 1) <= 1.0001e-2 for a in S.ALPHA_NEAR_ONE)
    assert {0.0, 1.0, 1e-15, 1 - 1e-15} <= set(S.LAMBDA_GRID)
    assert all(0.0 <= x <= 1.0 for x in S.LAMBDA_GRID)
    assert min(S.SMALL_VOCABS) == 2 and max(S.BIG_VOCABS) == 151936
    assert {-1.0, 1.0} <= set(S.AMARI_GAMMAS) and 1.0 in S.RENYI_ORDERS
    lines = {(a == 0, b == 0, a + b == 0) for a, b in S.AB_PARAMS}
    assert {(True, False, False), (False, True, False), (False, False, True)} <= lines
    names = {n for n, _ in S.DIVERGENCE_PARAM_GRID}
    assert names == set(amid_ref.DIVERGENCES) - {"f"}


@pytest.mark.parametrize(("name", "params"), S.DIVERGENCE_PARAM_GRID)
def test_every_grid_divergence_is_accepted_by_the_reference(name, params):
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
    value = amid_ref.divergence(p, q, name, **params)
    assert np.isfinite(value) and value >= -1e-12
    assert amid_ref.divergence(p, p, name, **params) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", S.LOGIT_KINDS)
def test_logits_pair_is_valid_and_reproducible(kind):
    shape = (3, 5, 40)
    s, t = S.logits_pair(kind, shape, seed=7)
    assert s.shape == t.shape == shape and s.dtype == t.dtype == np.float64
    for x in (s, t):
        assert not np.isnan(x).any() and not np.isposinf(x).any()
        assert np.isfinite(x).any(axis=-1).all()
    s2, t2 = S.logits_pair(kind, shape, seed=7)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(t, t2)
    s3, _ = S.logits_pair(kind, shape, seed=8)
    assert not np.array_equal(s, s3)


def _log_softmax(x):
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return x - top - np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))


def test_logits_kinds_have_their_documented_shape():
    shape = (4, 64)
    s, t = S.logits_pair("one_hot", shape, 0)
    assert (np.isfinite(t).sum(axis=-1) == 1).all() and np.isfinite(s).all()
    s, t = S.logits_pair("masked", shape, 0)
    np.testing.assert_array_equal(np.isneginf(s), np.isneginf(t))
    assert np.isneginf(t[:, -16:]).all()
    s, t = S.logits_pair("teacher_masked", shape, 0)
    assert np.isfinite(s).all() and np.isneginf(t).any()
    s, t = S.logits_pair("underflow", shape, 0)
    both = (_log_softmax(s) < -745) & (_log_softmax(t) < -745)  # exp underflows in float64
    assert both.any(axis=-1).all()
    s, t = S.logits_pair("extreme", shape, 0)
    assert np.ptp(t, axis=-1).min() > 5000
    s, t = S.logits_pair("huge_offset", shape, 0)
    assert s.min() > 1e4 and t.min() > 1e4
    s, t = S.logits_pair("equal", shape, 0)
    np.testing.assert_array_equal(s, t)
    s, t = S.logits_pair("near_one_hot", shape, 0)
    assert (np.sort(_log_softmax(t), axis=-1)[:, -2] < -50).all()
    s, t = S.logits_pair("bf16_grid", shape, 0)
    np.testing.assert_array_equal(round_to_dtype(t, "bfloat16"), t)
    s, t = S.logits_pair("fp16_grid", shape, 0)
    np.testing.assert_array_equal(round_to_dtype(s, "float16"), s)
    s, t = S.logits_pair("disjoint_peaks", shape, 0)
    assert (np.argmax(s, axis=-1) != np.argmax(t, axis=-1)).all()


def test_logits_pair_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        S.logits_pair("gaussian", (2, 4), 0)
    with pytest.raises(ValueError, match="shape"):
        S.logits_pair("realistic", (2, 1), 0)


# --------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------


@given(S.alphas())
def test_alphas_are_valid(alpha):
    assert isinstance(alpha, float) and not math.isnan(alpha)


@given(S.alphas(allow_infinity=False, max_abs=100.0))
def test_alphas_respect_their_bounds(alpha):
    assert math.isfinite(alpha) and abs(alpha) <= 100.0


@given(S.lambdas())
def test_lambdas_are_in_the_unit_interval(lam):
    assert 0.0 <= lam <= 1.0


@given(S.lambdas(allow_endpoints=False))
def test_lambdas_without_endpoints(lam):
    assert 0.0 < lam < 1.0


@given(S.divergence_specs(), st.integers(0, 2**31 - 1))
def test_divergence_specs_are_accepted_by_the_reference(spec, seed):
    name, params = spec
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    value = amid_ref.divergence(p, q, name, **params)
    assert np.isfinite(value) and value >= -1e-9


# Found by divergence_specs (a_*λ underflowed and warned); fixed, kept as a regression test.
@pytest.mark.parametrize(
    "params",
    [
        {"alpha": 1.1125369292536007e-308, "beta": 0.0},
        {"alpha": 0.0, "beta": 1.1125369292536007e-308},
    ],
)
def test_ab_divergence_next_to_a_special_line(params):
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    on_line = {k: (0.0 if v < 1e-300 else v) for k, v in params.items()}
    value = amid_ref.divergence(p, q, "ab", **params)
    assert value == pytest.approx(amid_ref.divergence(p, q, "ab", **on_line), rel=1e-12)


@given(S.shapes(big_vocab=True))
def test_shapes(shape):
    assert 1 <= len(shape) <= 3 and shape[-1] >= 2 and all(n >= 1 for n in shape)


@given(S.logits_rows())
def test_logits_rows_keep_a_live_entry(x):
    assert not np.isnan(x).any() and not np.isposinf(x).any()
    assert np.isfinite(x).any(axis=-1).all()


@given(S.logits_pairs())
def test_logits_pairs(pair):
    s, t = pair
    assert s.shape == t.shape and s.shape[-1] >= 2


def test_strategies_need_hypothesis_only_when_called():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import amid_ref.strategies as S, amid_ref.conformance\n"
        "S.logits_pair('realistic', (2, 5), 0)\n"
        "try:\n"
        "    S.alphas()\n"
        "except ImportError as e:\n"
        "    assert 'hypothesis' in str(e)\n"
        "else:\n"
        "    raise SystemExit('alphas() worked without hypothesis')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docstring_examples():
    import amid_ref.conformance._assert as assert_module
    import amid_ref.conformance._cases as cases

    for module in (S, cases, assert_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --------------------------------------------------------------------------------------
# Property-based conformance: drawn cases against the real implementations
# --------------------------------------------------------------------------------------

gpu = pytest.importorskip("gpu")


def _outside_gpu_fp32_contract(case) -> str | None:
    """Drawn cases the fp32 gpu loss is known not to meet, each with its reason.

    Two gpu defects this search found (temperature applied before the row max; Rényi
    dropping underflowed terms) are fixed and pinned by the regression tests below; what
    remains is fp32-inherent, not a defect.
    """
    ab = case.div_params
    if case.divergence == "ab" and case.inputs == "extreme" and ab.get("beta", 0) < 0:
        return (
            "AB with b_ < 0 sums unweighted log-ratios over all V entries: fp32 log-probs of "
            "size 1e4 move it by ~eps*1e4*sqrt(V) (inherent to fp32, not a defect)"
        )
    return None


@settings(max_examples=15, derandomize=True)
@given(S.loss_cases())
def test_gpu_loss_conforms_on_drawn_cases(case):
    assume(_outside_gpu_fp32_contract(case) is None)
    result = check_case(gpu.amid_loss, case, dtype="float32")
    assert result.status in ("pass", "skip"), (case.describe(), result.reason, result.value_stats)


@settings(derandomize=True)
@given(S.mixture_cases())
def test_gpu_mixture_conforms_on_drawn_cases(case):
    result = check_case(gpu.log_alpha_mixture, case, dtype="float32")
    assert result.status in ("pass", "skip"), (case.describe(), result.reason, result.value_stats)


@settings(derandomize=True)
@given(S.logits_rows(shape=S.shapes(max_vocab=32)), S.alphas(), S.lambdas())
def test_explicit_cases_from_drawn_rows(student, alpha, lam):
    teacher = np.roll(student, 1, axis=-1)
    case = Case("drawn", alpha=alpha, lam=lam, student_logits=student, teacher_logits=teacher)
    result = check_case(gpu.amid_loss, case, dtype="float32")
    assert result.status in ("pass", "skip"), (case.describe(), result.reason, result.value_stats)


def test_gpu_temperature_with_offset():
    from amid_ref.conformance import conform

    report = conform(gpu.amid_loss, "loss", full=True, families=["temperature"])
    assert report.passed, report.text()


def test_gpu_renyi_small_order_with_underflowing_probabilities():
    case = Case(
        "pinned",
        alpha=-1.000000000001,
        lam=0.0,
        divergence="renyi",
        div_params={"order": 0.05},
        inputs="extreme",
        shape=(3,),
        seed=5940,
    )
    result = check_case(gpu.amid_loss, case, dtype="float64")
    assert result.status == "pass", (result.value_stats, result.reason)
