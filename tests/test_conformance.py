"""Tests of the conformance battery (amid_ref.conformance).

The battery must pass the real implementations (``gpu.amid_loss`` in fp32 and bf16,
``gpu.log_alpha_mixture``, ``amid_ref`` itself) and flag a deliberately wrong implementation
of each known failure mode with the right diagnosis. The mutants below are written here, in
torch, each with exactly one defect; everything else is delegated to ``gpu`` (which the first
tests show to conform), so a failure can only come from the defect.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import amid_ref
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref._specs import order_arguments
from amid_ref.conformance import (
    FAILURE_MODES,
    FAMILIES,
    IGNORE_INDEX,
    Case,
    Support,
    assert_conforms,
    battery,
    check_case,
    conform,
    get_case,
    round_to_dtype,
)

torch = pytest.importorskip("torch")
gpu = pytest.importorskip("gpu")

# --------------------------------------------------------------------------------------
# A minimal KL-only AMiD loss with a pluggable α-mixture (the mixture mutants plug in here)
# --------------------------------------------------------------------------------------


def toy_kl_loss(mixture):
    """AMiD loss with KL only: student first, per-row / mean / sum, labels + ignore_index."""

    def loss(
        student_logits,
        teacher_logits,
        alpha,
        lam,
        order="pr",
        temperature=1.0,
        labels=None,
        ignore_index=-100,
        reduction="none",
    ):
        lp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
        lq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
        lr = mixture(lp, lq, alpha, lam)
        x, y = order_arguments(order, lp, lq, lr)
        rows = torch.where(torch.isneginf(x), 0.0, x.exp() * (x - y)).sum(-1)
        return _reduce(rows, labels, ignore_index, reduction)

    return loss


def _reduce(rows, labels, ignore_index, reduction):
    if labels is not None:
        keep = labels != ignore_index
        rows = torch.where(keep, rows, 0.0)
        n = keep.sum()
    else:
        n = rows.numel()
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / n if int(n) > 0 else rows.sum() * 0.0


def _normalize(log_m):
    return log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)


def correct_mixture(lp, lq, alpha, lam):
    return gpu.log_alpha_mixture(lp, lq, alpha, lam)


def mixture_geometric_collapse(lp, lq, alpha, lam):
    """Defect: every α ≥ 1 treated as the geometric mixture (α = 1)."""
    return gpu.log_alpha_mixture(lp, lq, 1.0 if alpha >= 1 else alpha, lam)


def mixture_lambda_on_student(lp, lq, alpha, lam):
    """Defect: arguments of the mixture swapped, so λ weights the student q."""
    return gpu.log_alpha_mixture(lq, lp, alpha, lam)


def mixture_probability_space(lp, lq, alpha, lam):
    """Defect: m = (λ p^β + (1−λ) q^β)^(1/β) in probability space, then logged."""
    p, q = lp.exp(), lq.exp()
    if alpha == 1:
        m = p**lam * q ** (1 - lam)
    elif math.isinf(alpha):
        m = torch.minimum(p, q) if alpha > 0 else torch.maximum(p, q)
    else:
        beta = (1 - alpha) / 2
        m = (lam * p**beta + (1 - lam) * q**beta) ** (1 / beta)
    return torch.log(m / m.sum(-1, keepdim=True))


def mixture_naive_logaddexp(dtype):
    """Defect: (1/β)·logaddexp(log λ + β lp, log(1−λ) + β lq) evaluated in ``dtype``."""

    def mixture(lp, lq, alpha, lam):
        beta = (1 - alpha) / 2
        if beta == 0 or math.isinf(alpha) or lam in (0, 1):
            return gpu.log_alpha_mixture(lp, lq, alpha, lam)
        log_m = naive_log_alpha_mean(
            lp.to(dtype), lq.to(dtype), alpha, lam, logaddexp=torch.logaddexp
        )
        return _normalize(log_m.float())

    return mixture


# --------------------------------------------------------------------------------------
# Loss-level mutants (delegating to gpu.amid_loss except for the defect)
# --------------------------------------------------------------------------------------


def loss_padded_zero(student_logits, teacher_logits, alpha, lam, **kw):
    """Defect: masked/padded vocabulary entries get logit 0 instead of -inf."""
    s = torch.nan_to_num(student_logits, neginf=0.0)
    t = torch.nan_to_num(teacher_logits, neginf=0.0)
    return gpu.amid_loss(s, t, alpha, lam, **kw)


def loss_mask_divides_by_zero(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    labels=None,
    ignore_index=-100,
    reduction="mean",
    **kw,
):
    """Defect: the mean over kept positions is sum(mask·loss)/sum(mask), 0/0 if none kept."""
    rows = gpu.amid_loss(student_logits, teacher_logits, alpha, lam, reduction="none", **kw)
    if labels is None:
        keep = torch.ones_like(rows)
    else:
        keep = (labels != ignore_index).to(rows.dtype)
    if reduction == "none":
        return rows * keep
    if reduction == "sum":
        return (rows * keep).sum()
    return (rows * keep).sum() / keep.sum()


def loss_amari_swapped(
    student_logits, teacher_logits, alpha, lam, divergence="kl", order="pr", div_params=None, **kw
):
    """Defect: the Amari limits γ = ±1 delegate to KL with the arguments the wrong way round."""
    gamma = (div_params or {}).get("alpha")
    if divergence == "amari" and gamma in (1.0, -1.0):
        flipped = {"pr": "rp", "rp": "pr", "qr": "rq", "rq": "qr"}
        # γ → −1 must give KL(a‖b) (same order); γ → +1 KL(b‖a) (flipped order). Swapped:
        order = flipped[order] if gamma == -1.0 else order
        return gpu.amid_loss(
            student_logits, teacher_logits, alpha, lam, divergence="kl", order=order, **kw
        )
    return gpu.amid_loss(
        student_logits,
        teacher_logits,
        alpha,
        lam,
        divergence=divergence,
        order=order,
        div_params=div_params,
        **kw,
    )


def _ab_pair(student_logits, teacher_logits, alpha, lam, order, temperature=1.0):
    lp = torch.log_softmax(teacher_logits.double() / temperature, dim=-1)
    lq = torch.log_softmax(student_logits.double() / temperature, dim=-1)
    lr = gpu.log_alpha_mixture(lp, lq, alpha, lam)
    return order_arguments(order, lp, lq, lr)


def loss_ab_one_over_a(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence="kl",
    order="pr",
    div_params=None,
    reduction="none",
    **kw,
):
    """Defect: AB special cases a_ = 0, b_ = 0, a_ + b_ = 0 use 1/a_ (1/b_) for 1/a_²."""
    if divergence == "ab":
        a, b = div_params["alpha"], div_params["beta"]
        lx, ly = _ab_pair(student_logits, teacher_logits, alpha, lam, order)
        x, y = lx.exp(), ly.exp()
        if a == 0 and b != 0:
            rows = (y**b * (b * (ly - lx)) - y**b + x**b).sum(-1) / b  # should be / b**2
        elif b == 0 and a != 0:
            rows = (x**a * (a * (lx - ly)) - x**a + y**a).sum(-1) / a  # should be / a**2
        elif a + b == 0 and a != 0:
            rows = (a * (ly - lx) + torch.exp(a * (lx - ly)) - 1).sum(-1) / a  # / a**2
        else:
            rows = None
        if rows is not None:
            return _reduce(rows, None, -100, reduction)
    return gpu.amid_loss(
        student_logits,
        teacher_logits,
        alpha,
        lam,
        divergence=divergence,
        order=order,
        div_params=div_params,
        reduction=reduction,
        **kw,
    )


def loss_ab_general_formula(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence="kl",
    order="pr",
    div_params=None,
    reduction="none",
    **kw,
):
    """Defect: AB off the special lines by the general formula in fp32 (cancels near them)."""
    if divergence == "ab":
        a, b = div_params["alpha"], div_params["beta"]
        if a != 0 and b != 0 and a + b != 0:
            lx, ly = _ab_pair(student_logits, teacher_logits, alpha, lam, order)
            x, y = lx.exp().float(), ly.exp().float()
            terms = x**a * y**b - a / (a + b) * x ** (a + b) - b / (a + b) * y ** (a + b)
            return _reduce(-terms.sum(-1) / (a * b), None, -100, reduction)
    return gpu.amid_loss(
        student_logits,
        teacher_logits,
        alpha,
        lam,
        divergence=divergence,
        order=order,
        div_params=div_params,
        reduction=reduction,
        **kw,
    )


def mixture_naive_logaddexp_bf16(lp, lq, alpha, lam):
    """Defect: the logaddexp/β formula evaluated in bfloat16."""
    return mixture_naive_logaddexp(torch.bfloat16)(lp, lq, alpha, lam)


def numpy_geometric_collapse(student_logits, teacher_logits, alpha, lam, **kw):
    """A NumPy implementation with the α ≥ 1 collapse (the numpy backend)."""
    return amid_ref.amid_loss(
        student_logits, teacher_logits, 1.0 if alpha >= 1 else alpha, lam, **kw
    )


def loss_detached_assistant(student_logits, teacher_logits, alpha, lam, **kw):
    """Defect (for AMiD): the assistant r detached from the graph (TAID-style gradient)."""
    return gpu.amid_loss(student_logits, teacher_logits, alpha, lam, detach_assistant=True, **kw)


def loss_teacher_first_sum(teacher_logits, student_logits, alpha, lam, divergence="kl", order="pr"):
    """Correct, but teacher first and summed over rows (auto-detection must find both)."""
    return gpu.amid_loss(
        student_logits,
        teacher_logits,
        alpha,
        lam,
        divergence=divergence,
        order=order,
        reduction="sum",
    )


def loss_scaled_before_max(student_logits, teacher_logits, alpha, lam, temperature=1.0, **kw):
    """Defect: logits multiplied by 1/T in fp32 before the row max is subtracted."""
    inv = 1.0 / temperature
    return gpu.amid_loss(student_logits * inv, teacher_logits * inv, alpha, lam, **kw)


def loss_scaled(student_logits, teacher_logits, alpha, lam, **kw):
    """An unrelated defect (loss x 1.1): no known failure mode may claim it."""
    return 1.1 * gpu.amid_loss(student_logits, teacher_logits, alpha, lam, **kw)


# --------------------------------------------------------------------------------------
# The battery itself
# --------------------------------------------------------------------------------------


def test_battery_covers_the_issue_domains():
    cases = battery("loss")
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    assert {c.family for c in cases} == set(FAMILIES) - {"param_grid"}
    alphas = {c.alpha for c in cases}
    for a in (-math.inf, math.inf, 1 - 1e-6, 1 + 1e-6, -1 - 1e-6, 3.0, 5.0):
        assert a in alphas
    lams = {c.lam for c in cases}
    for lam in (0.0, 1.0, 1e-15, 1 - 1e-15):
        assert lam in lams
    vocabs = {c.vocab for c in cases}
    assert 2 in vocabs and 151936 in vocabs
    assert sum(c.vocab == 151936 for c in cases) >= 2
    divs = {c.divergence for c in cases}
    assert divs == set(amid_ref.DIVERGENCES) - {"f"}
    assert {c.order for c in cases} == set(amid_ref.ORDERS)
    kinds = {c.inputs for c in cases}
    for k in ("one_hot", "masked", "underflow", "extreme", "bf16_grid", "fp16_grid"):
        assert k in kinds
    assert {c.mask for c in cases} >= {"some", "all", "none"}
    full = battery("loss", full=True)
    assert len(full) > len(cases) and {c.vocab for c in full} >= {32000, 50257, 128256, 151936}
    mix = battery("mixture")
    assert {c.kind for c in mix} == {"mixture"} and "divergences" not in {c.family for c in mix}


def test_cases_are_reproducible_from_their_id():
    case = battery("loss", families=["extreme_logits"])[5]
    again = get_case(case.id)
    s1, t1 = case.arrays("bfloat16")
    s2, t2 = again.arrays("bfloat16")
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(t1, t2)
    assert again.seed == case.seed and again.alpha == case.alpha
    with pytest.raises(KeyError, match="no battery case"):
        get_case("alpha_grid/nonexistent")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_round_to_dtype_matches_torch_conversion(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 30, 2000), [-np.inf, 0.0, 1e-40, 3e38, -65504.0]])
    want = torch.tensor(x).to(getattr(torch, dtype)).double().numpy()
    with np.errstate(over="ignore"):
        got = round_to_dtype(x, dtype)
    np.testing.assert_array_equal(got, want)


def test_case_validation_errors_name_the_parameter():
    with pytest.raises(ValueError, match="lam"):
        Case("x", lam=1.5)
    with pytest.raises(ValueError, match="kind"):
        Case("x", kind="grad")
    with pytest.raises(ValueError, match="dtype"):
        round_to_dtype(np.zeros(2), "int8")
    with pytest.raises(ValueError, match="families"):
        battery("loss", families=["nope"])


def test_failure_modes_cover_the_issue_list():
    ids = {m.id for m in FAILURE_MODES}
    assert ids >= {
        "geometric_collapse",
        "low_precision_logaddexp",
        "probability_space_mixture",
        "ab_special_case_scale",
        "ab_cancellation",
        "amari_limits_swapped",
        "padded_logit_zero",
        "mask_divide_by_zero",
        "lambda_on_student",
    }


# --------------------------------------------------------------------------------------
# Real implementations pass
# --------------------------------------------------------------------------------------


def test_gpu_amid_loss_conforms_fp32():
    report = conform(gpu.amid_loss, "loss", dtype="float32")
    assert report.passed, report.text()
    assert report.settings["convention"].startswith("student_first")
    assert report.settings["reduction"].startswith("none")
    counts = report.counts
    assert counts["pass"] > 700 and counts["fail"] == 0
    # only cases whose reference loss is +inf (disjoint supports) are skipped
    assert {r.reason for r in report.results if r.status == "skip"} <= {
        "reference loss is +inf here (disjoint supports)"
    }


def test_gpu_amid_loss_conforms_bf16():
    report = conform(gpu.amid_loss, "loss", dtype="bf16")
    assert report.passed, report.text()
    assert report.settings["dtype"] == "bfloat16"


def test_gpu_amid_loss_gradients_conform():
    report = conform(
        gpu.amid_loss,
        "loss",
        dtype="float32",
        grad=True,
        families=["alpha_grid", "lambda_edges", "masking", "shapes", "one_hot", "vocab"],
    )
    assert report.passed, report.text()
    assert report.settings["grad"] == "on"
    from amid_ref.conformance._runner import GRAD_TIE_NOTE

    checked = [r for r in report.results if r.status == "pass" and r.reason != GRAD_TIE_NOTE]
    assert all(r.grad_stats is not None for r in checked)
    assert len(checked) >= 0.95 * sum(r.status == "pass" for r in report.results)


def test_gpu_mixture_conforms():
    report = conform(gpu.log_alpha_mixture, "mixture", dtype="float32")
    assert report.passed, report.text()
    assert report.settings["convention"].startswith("teacher_first")


def test_amid_ref_conforms_to_itself():
    """The harness's own path for a NumPy float64 implementation: its adapter detects the
    backend and dtype and reports no failure for the reference itself (no false alarm).
    Not a check of amid_ref's numbers, which the harness takes as its reference: those are
    held to amid_ref.precise (tests/test_reference_accuracy.py)."""
    loss = conform(amid_ref.amid_loss, "loss", families=["alpha_grid", "divergences", "shapes"])
    assert loss.passed, loss.text()
    assert loss.settings["backend"].startswith("numpy") and loss.settings["dtype"] == "float64"
    mix = conform(amid_ref.log_alpha_mixture, "mixture")
    assert mix.passed, mix.text()


def test_the_mutants_base_loss_conforms():
    """The toy loss the mixture mutants plug into passes with the correct mixture."""
    report = conform(toy_kl_loss(correct_mixture), "loss", dtype="float32")
    assert report.passed, report.text()
    skipped = {r.reason for r in report.results if r.status == "skip"}
    assert "function has no 'divergence' parameter" in skipped


# --------------------------------------------------------------------------------------
# Every known failure mode is flagged, with the right diagnosis
# --------------------------------------------------------------------------------------

MUTANTS = [
    # (id, function, kind, options, expected diagnosis)
    (
        "geometric",
        toy_kl_loss(mixture_geometric_collapse),
        "loss",
        {"families": ["alpha_grid"]},
        "geometric_collapse",
    ),
    (
        "lambda_student",
        toy_kl_loss(mixture_lambda_on_student),
        "loss",
        {"families": ["lambda_edges"]},
        "lambda_on_student",
    ),
    (
        "probability_space",
        toy_kl_loss(mixture_probability_space),
        "loss",
        {"families": ["extreme_logits"]},
        "probability_space_mixture",
    ),
    (
        "logaddexp_bf16",
        toy_kl_loss(mixture_naive_logaddexp(torch.bfloat16)),
        "loss",
        {"families": ["low_precision"], "dtype": "bf16"},
        "low_precision_logaddexp",
    ),
    (
        "logaddexp_fp16",
        toy_kl_loss(mixture_naive_logaddexp(torch.float16)),
        "loss",
        {"families": ["low_precision"], "dtype": "fp16"},
        "low_precision_logaddexp",
    ),
    (
        "padded_zero",
        loss_padded_zero,
        "loss",
        {"families": ["extreme_logits", "one_hot"]},
        "padded_logit_zero",
    ),
    (
        "mask_0_over_0",
        loss_mask_divides_by_zero,
        "loss",
        {"families": ["masking"]},
        "mask_divide_by_zero",
    ),
    (
        "amari_swapped",
        loss_amari_swapped,
        "loss",
        {"families": ["divergences"], "support": {"divergences": ("amari",)}},
        "amari_limits_swapped",
    ),
    (
        "ab_one_over_a",
        loss_ab_one_over_a,
        "loss",
        {"families": ["divergences"], "support": {"divergences": ("ab",)}},
        "ab_special_case_scale",
    ),
    (
        "ab_general_formula",
        loss_ab_general_formula,
        "loss",
        {"families": ["divergences"], "support": {"divergences": ("ab",)}},
        "ab_cancellation",
    ),
    (
        "temperature_before_max",
        loss_scaled_before_max,
        "loss",
        {"families": ["temperature"], "full": True},
        "temperature_before_max",
    ),
    (
        "numpy_geometric",
        numpy_geometric_collapse,
        "loss",
        {"families": ["alpha_grid"]},
        "geometric_collapse",
    ),
    (
        "mixture_geometric",
        mixture_geometric_collapse,
        "mixture",
        {"families": ["alpha_grid"]},
        "geometric_collapse",
    ),
    (
        "mixture_lambda_student",
        mixture_lambda_on_student,
        "mixture",
        {"families": ["lambda_edges"]},
        "lambda_on_student",
    ),
    (
        "mixture_probability_space",
        mixture_probability_space,
        "mixture",
        {"families": ["extreme_logits"]},
        "probability_space_mixture",
    ),
    (
        "mixture_logaddexp_bf16",
        mixture_naive_logaddexp_bf16,
        "mixture",
        {"families": ["low_precision"], "dtype": "bf16"},
        "low_precision_logaddexp",
    ),
]


@pytest.mark.parametrize(
    ("fn", "kind", "options", "expected"),
    [m[1:] for m in MUTANTS],
    ids=[m[0] for m in MUTANTS],
)
def test_mutant_is_flagged_with_the_right_diagnosis(fn, kind, options, expected):
    report = conform(fn, kind, **options)
    assert not report.passed
    failures = report.failures
    assert failures, report.text()
    diagnosed = [r for r in failures if r.diagnoses]
    primary = report.diagnoses()
    # the expected diagnosis explains the failures: most of them, and nothing else competes
    assert primary.most_common(1)[0][0] == expected, primary
    assert primary[expected] >= 0.6 * len(failures), (primary, len(failures))
    # A mutant computing its mixture in bf16 also computes "in bf16 inside": true, generic.
    accepted = {expected} | ({"low_precision_arithmetic"} if "bf16" in str(options) else set())
    assert sum(primary[k] for k in accepted) >= 0.9 * len(diagnosed), primary
    # ... including the case the report shows for each failing family (or its best example)
    text = report.text()
    assert f"[{expected}" in text
    assert "RESULT: FAIL" in text


def test_bf16_logaddexp_mutant_errs_by_whole_nats_near_alpha_one():
    near_one = [c for c in battery("loss", families=["alpha_grid"]) if 0 < abs(c.alpha - 1) < 2e-6]
    report = conform(
        toy_kl_loss(mixture_naive_logaddexp(torch.bfloat16)), "loss", dtype="bf16", cases=near_one
    )
    assert len(report.failures) == len(near_one) == 6
    assert max(r.value_stats.abs_err for r in report.failures) >= 1.0
    assert any(d.id == "low_precision_logaddexp" for r in report.failures for d in r.diagnoses)


def test_probability_space_mutant_returns_nonfinite_where_both_underflow():
    report = conform(toy_kl_loss(mixture_probability_space), "loss", families=["extreme_logits"])
    # D(p‖r) needs log r where p and q underflow (the r-first orders skip r = 0 terms)
    underflow = [r for r in report.results if r.case.inputs == "underflow" and r.case.order == "pr"]
    assert underflow and all(r.status == "fail" for r in underflow)
    assert all(not math.isfinite(r.value_stats.got) for r in underflow)
    assert all(r.diagnoses[0].id == "probability_space_mixture" for r in underflow)


def test_geometric_mutant_fails_exactly_for_alpha_above_one():
    report = conform(toy_kl_loss(mixture_geometric_collapse), "loss", families=["alpha_grid"])
    failed = {r.case.alpha for r in report.failures}
    assert failed and min(failed) > 1.0 and 3.0 in failed
    passed = {r.case.alpha for r in report.results if r.status == "pass"}
    assert 1.0 in passed and -3.0 in passed


def test_detached_assistant_is_diagnosed_from_gradients_only():
    report = conform(loss_detached_assistant, "loss", grad=True, families=["alpha_grid"])
    assert not report.passed
    assert all(r.quantity == "grad" for r in report.failures)  # the loss itself is right
    assert report.diagnoses().most_common(1)[0][0] == "assistant_detach_mismatch"
    declared = conform(
        loss_detached_assistant,
        "loss",
        grad=True,
        families=["alpha_grid"],
        support={"detach_assistant": True},
    )
    assert declared.passed, declared.text()


def test_unrelated_defect_is_failed_but_not_misdiagnosed():
    report = conform(loss_scaled, "loss", families=["alpha_grid", "lambda_edges", "low_precision"])
    assert not report.passed
    assert sum(report.diagnoses().values()) <= 0.02 * len(report.failures), report.diagnoses()


def test_gradients_of_a_numpy_function_are_reported_as_unchecked():
    report = conform(amid_ref.amid_loss, "loss", grad=True, families=["shapes"])
    assert report.passed
    assert report.settings["grad"].startswith("requested, not checked")


# --------------------------------------------------------------------------------------
# Adapters: conventions, declarations, errors
# --------------------------------------------------------------------------------------


def test_teacher_first_and_summed_loss_is_auto_detected():
    report = conform(loss_teacher_first_sum, "loss", families=["alpha_grid", "one_hot"])
    assert report.passed, report.text()
    assert report.settings["convention"].startswith("teacher_first")
    assert report.settings["reduction"] == "sum (probed)"


def test_wrong_declared_convention_is_diagnosed():
    report = conform(
        loss_teacher_first_sum,
        "loss",
        convention="student_first",
        reduction="sum",
        families=["alpha_grid"],
    )
    assert not report.passed
    assert report.diagnoses().most_common(1)[0][0] == "roles_swapped"


def test_undeclared_cases_are_skipped_not_failed():
    support = Support(
        divergences=("kl", "js"),
        orders=("pr",),
        alpha_range=(-10.0, 10.0),
        neg_inf=False,
        max_vocab=5000,
    )
    report = conform(gpu.amid_loss, "loss", support=support)
    assert report.passed, report.text()
    ran = [r.case for r in report.results if r.status == "pass"]
    assert all(c.divergence in ("kl", "js") and c.order == "pr" for c in ran)
    assert all(abs(c.alpha) <= 10 and c.vocab <= 5000 for c in ran)
    reasons = " ".join(r.reason for r in report.results if r.status == "skip")
    for fragment in ("not declared", "alpha_range", "max_vocab", "-inf inputs"):
        assert fragment in reasons


def test_not_implemented_is_a_skip_and_exceptions_are_failures():
    def partial(student_logits, teacher_logits, alpha, lam):
        if math.isinf(alpha):
            raise NotImplementedError("alpha = inf")
        return gpu.amid_loss(student_logits, teacher_logits, alpha, lam, reduction="none")

    report = conform(partial, "loss", families=["alpha_grid"])
    assert report.passed, report.text()
    assert any("alpha = inf" in r.reason for r in report.results if r.status == "skip")

    def broken(student_logits, teacher_logits, alpha, lam):
        raise RuntimeError("kernel exploded")

    report = conform(
        broken, "loss", families=["shapes"], convention="student_first", reduction="none"
    )
    assert not report.passed
    assert all("RuntimeError: kernel exploded" in r.reason for r in report.failures)


def test_nothing_ran_is_not_a_pass():
    report = conform(gpu.amid_loss, "loss", families=["shapes"], support={"max_vocab": 1})
    assert not report.passed and report.counts["pass"] == 0
    assert "no case ran" in report.text()


def test_report_worst_case_reproduces_the_failure():
    report = conform(toy_kl_loss(mixture_geometric_collapse), "loss", families=["alpha_grid"])
    data = json.loads(report.to_json())
    worst = data["families"]["alpha_grid"]["worst"]
    case = get_case(worst["case"]["id"])
    assert worst["case"]["seed"] == case.seed
    s, t = case.arrays("float32")
    got = (
        toy_kl_loss(mixture_geometric_collapse)(
            torch.tensor(s, dtype=torch.float32),
            torch.tensor(t, dtype=torch.float32),
            case.alpha,
            case.lam,
        )
        .double()
        .numpy()
    )
    i = tuple(worst["value"]["index"])
    assert got[i] == pytest.approx(worst["value"]["got"], rel=1e-6)
    assert worst["diagnoses"][0]["id"] == "geometric_collapse"
    assert data["passed"] is False and data["counts"]["fail"] == len(data["failures"])


def test_assert_conforms_in_a_user_suite():
    report = assert_conforms(gpu.amid_loss, dtype="float32", families=["shapes", "masking"])
    assert report.passed
    with pytest.raises(AssertionError, match="geometric_collapse") as err:
        assert_conforms(toy_kl_loss(mixture_geometric_collapse), families=["alpha_grid"])
    assert "worst case" in str(err.value) and "seed=" in str(err.value)


def test_check_case_runs_a_single_user_case():
    rng = np.random.default_rng(3)
    case = Case(
        "mine",
        alpha=3.0,
        lam=0.25,
        student_logits=rng.normal(size=(2, 9)),
        teacher_logits=rng.normal(size=(2, 9)),
    )
    assert check_case(gpu.amid_loss, case).status == "pass"
    bad = check_case(toy_kl_loss(mixture_geometric_collapse), case)
    assert bad.status == "fail" and bad.diagnoses[0].id == "geometric_collapse"


def test_labels_use_the_pytorch_ignore_index():
    case = battery("loss", families=["masking"])[0]
    labels = case.labels()
    assert labels.shape == case.shape[:-1] and (labels == IGNORE_INDEX).any()


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def test_cli_passes_gpu_and_prints_the_report(capsys):
    from amid_ref.cli import main

    code = main(["conform", "gpu:amid_loss", "--kind", "loss", "--families", "shapes,masking"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "RESULT: PASS" in out and "masking" in out and "gpu/loss/float32" in out


def test_cli_json_and_failure_exit_code(tmp_path, monkeypatch, capsys):
    from amid_ref.cli import main

    (tmp_path / "my_loss.py").write_text(
        "import gpu\n"
        "def loss(student_logits, teacher_logits, alpha, lam):\n"
        "    a = 1.0 if alpha >= 1 else alpha  # the alpha >= 1 collapse\n"
        "    return gpu.amid_loss(student_logits, teacher_logits, a, lam, reduction='none')\n"
    )
    monkeypatch.chdir(tmp_path)
    code = main(["conform", "my_loss:loss", "--families", "alpha_grid", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["passed"] is False and data["diagnoses"] == {"geometric_collapse": 19}
    assert data["settings"]["backend"].startswith("torch")
    code = main(["conform", str(tmp_path / "my_loss.py") + ":loss", "--families", "shapes"])
    out = capsys.readouterr().out
    assert code == 1 and "[geometric_collapse]" in out and "RESULT: FAIL" in out


def test_cli_rejects_bad_targets(capsys):
    from amid_ref.cli import main

    assert main(["conform", "gpu"]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err
    assert main(["conform", "gpu:no_such_function"]) == 2
    assert "no attribute" in capsys.readouterr().err
    assert main(["conform", "gpu:amid_loss", "--alpha-range", "1"]) == 2
    assert "--alpha-range" in capsys.readouterr().err


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, amid_ref; before = set(sys.modules); import amid_ref.conformance, "
        "amid_ref.strategies; new = set(sys.modules) - before; "
        "bad = [m for m in new if m.split('.')[0] in ('torch', 'hypothesis')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
