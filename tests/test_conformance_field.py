"""The failure modes of the distillation code people train with, and the checks of such code
as it is written.

Each failure mode of the field has a deliberately wrong loss here with exactly that defect,
everything else delegated to ``gpu`` (shown to conform by tests/test_conformance.py), so a
failure can only come from the defect: the battery must fail it, diagnose at least 90 % of
its failing cases with that mode and none with another (a misdiagnosis is a test failure).
Then: a preset checked on a function as published (DistiLLM's signature), parameter maps,
"nothing checked", and a library's own CI pattern on a peer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref._specs import order_arguments
from amid_ref.conformance import (
    FAILURE_MODES,
    Case,
    assert_conforms,
    battery,
    conform,
    labels_in,
)

torch = pytest.importorskip("torch")
gpu = pytest.importorskip("gpu")
F = torch.nn.functional


def assert_diagnosed(report, expected: set[str], *, at_least: float = 0.9):
    """At least ``at_least`` of the failures diagnosed within ``expected``, none outside."""
    failures = report.failures
    assert failures, report.text()
    primary = [r.diagnoses[0].id if r.diagnoses else None for r in failures]
    wrong = [(r.case.id, i) for r, i in zip(failures, primary, strict=True) if i not in expected]
    wrong = [w for w in wrong if w[1] is not None]
    assert not wrong, wrong
    right = sum(i in expected for i in primary)
    assert right >= at_least * len(failures), (right, len(failures), report.text())
    return primary


def _logs(student_logits, teacher_logits, temperature=1.0):
    lq = F.log_softmax(student_logits.double() / temperature, -1)
    lp = F.log_softmax(teacher_logits.double() / temperature, -1)
    return lp, lq


# --------------------------------------------------------------------------------------
# Wrong losses, one defect each
# --------------------------------------------------------------------------------------


def _ab_terms(x, y, a=0.2, b=0.7):
    """Per-entry AB terms, general formula (a_, b_, a_ + b_ all nonzero), float64."""
    px, py = x.exp(), y.exp()
    return -(px**a * py**b - a / (a + b) * px ** (a + b) - b / (a + b) * py ** (a + b)) / (a * b)


def ab_isinf_masked(student_logits, teacher_logits, alpha=0.2, beta=0.7):
    """AB-divergence D(p‖q) with the masked_fill(isinf(s) | isinf(t), 0) idiom."""
    lp, lq = _logs(student_logits, teacher_logits)
    terms = _ab_terms(lp, lq, alpha, beta)
    inf = torch.isinf(student_logits) | torch.isinf(teacher_logits)
    return torch.masked_fill(terms, inf, 0.0).sum(-1)


def tv_isinf_masked(student_logits, teacher_logits):
    """Total variation with the same idiom."""
    lp, lq = _logs(student_logits, teacher_logits)
    terms = 0.5 * (lp.exp() - lq.exp()).abs()
    inf = torch.isinf(student_logits) | torch.isinf(teacher_logits)
    return torch.masked_fill(terms, inf, 0.0).sum(-1)


def skew_kl_isinf_masked(student_logits, teacher_logits, alpha, lam):
    """An AMiD KL(p‖r) loss with the same idiom on its terms."""
    lp, lq = _logs(student_logits, teacher_logits)
    lr = gpu.log_alpha_mixture(lp, lq, alpha, lam)
    inf = torch.isinf(student_logits) | torch.isinf(teacher_logits)
    terms = torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lr))
    return torch.masked_fill(terms, inf, 0.0).sum(-1)


def logits_through_bf16(student_logits, teacher_logits, alpha, lam):
    """An lm_head GEMM with a bf16 output, cast to fp32: the logits rounded to bf16."""
    s, t = student_logits.bfloat16().float(), teacher_logits.bfloat16().float()
    return gpu.amid_loss(s, t, alpha, lam, reduction="none")


def student_padded_with_zero(student_logits, teacher_logits, alpha, lam, order="pr"):
    """A student with fewer ids than the teacher, padded with logit 0 (not −inf)."""
    finite = torch.isfinite(student_logits).all(dim=tuple(range(student_logits.ndim - 1)))
    v_student = int(finite.sum())  # the student's own vocabulary: the leading finite ids
    s = F.pad(student_logits[..., :v_student], (0, student_logits.shape[-1] - v_student), value=0.0)
    return gpu.amid_loss(s, teacher_logits, alpha, lam, order=order, reduction="none")


def jsd_beta_clamped(student_logits, teacher_logits, beta=0.5):
    """β clamped into [0.01, 0.99] (a guard against log 0 that moves the endpoints)."""
    beta = min(max(beta, 0.01), 0.99)
    return gpu.amid_loss(student_logits, teacher_logits, -1.0, 0.0, divergence="js",
                         div_params={"beta": beta}, reduction="none")  # fmt: skip


def jsd_bf16_teacher(student_logits, teacher_logits, beta=0.5):
    """The teacher's probabilities in bf16 (a bf16 teacher), the student's in fp32, mixed."""
    p = F.softmax(teacher_logits.bfloat16(), -1).float()
    q = F.softmax(student_logits.float(), -1)
    m = beta * p + (1 - beta) * q
    kl_p = torch.where(p > 0, p * (p.log() - m.log()), 0.0).sum(-1)
    kl_q = torch.where(q > 0, q * (q.log() - m.log()), 0.0).sum(-1)
    return beta * kl_p + (1 - beta) * kl_q


def kd_temperature_on_student(student_logits, teacher_logits, temperature=1.0):
    """T divides the student's logits only."""
    lq = F.log_softmax(student_logits / temperature, -1)
    lp = F.log_softmax(teacher_logits, -1)
    return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lq)).sum(-1)


def kd_without_t_squared(student_logits, teacher_logits, temperature=1.0):
    """Hinton KD declared with T², returned without it."""
    lp, lq = _logs(student_logits, teacher_logits, temperature)
    return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lq)).sum(-1)


def kd_t_squared_twice(student_logits, teacher_logits, temperature=1.0):
    """Hinton KD with T² applied twice (once in a helper, once by the caller)."""
    return kd_without_t_squared(student_logits, teacher_logits, temperature) * temperature**4


def loss_labels_shifted(student_logits, teacher_logits, alpha, lam, labels=None,
                        ignore_index=-100, reduction="mean"):  # fmt: skip
    """Labels already aligned with the logits shifted once more (labels[:, 1:])."""
    rows = gpu.amid_loss(student_logits, teacher_logits, alpha, lam, reduction="none")
    keep = torch.ones_like(rows, dtype=torch.bool) if labels is None else labels != ignore_index
    if labels is not None:
        keep = torch.cat([keep[..., 1:], torch.zeros_like(keep[..., :1])], dim=-1)
    rows = torch.where(keep, rows, 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / keep.sum().clamp(min=1)


def kd_divided_by_batch(student_logits, teacher_logits):
    """Declared a mean over the B·T positions, divided by the batch size B instead."""
    lp, lq = _logs(student_logits, teacher_logits)
    rows = torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lq)).sum(-1)
    return rows.sum() / (rows.shape[0] if rows.ndim else 1)


def amid_without_normalization(student_logits, teacher_logits, alpha, lam):
    """The α-mixture m used as r without dividing by Z (a forgotten renormalization)."""
    lp, lq = _logs(student_logits, teacher_logits)
    if alpha == 1:
        log_m = lam * lp + (1 - lam) * lq
    elif lam in (0, 1):
        log_m = lp if lam == 1 else lq
    else:
        log_m = naive_log_alpha_mean(lp, lq, alpha, lam, logaddexp=torch.logaddexp)
    return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - log_m)).sum(-1)


def amid_in_bf16_inside(student_logits, teacher_logits, alpha, lam):
    """An AMiD KL(p‖r) computed in bf16 whatever the inputs' dtype (an autocast region)."""
    lp = F.log_softmax(teacher_logits.bfloat16(), -1)
    lq = F.log_softmax(student_logits.bfloat16(), -1)
    if alpha == 1:
        lr = lam * lp + (1 - lam) * lq
    elif math.isinf(alpha):
        lr = torch.minimum(lp, lq) if alpha > 0 else torch.maximum(lp, lq)
    elif lam in (0, 1):
        lr = lp if lam == 1 else lq
    else:
        lr = naive_log_alpha_mean(lp, lq, alpha, lam, logaddexp=torch.logaddexp)
    lr = F.log_softmax(lr, -1)
    return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lr)).sum(-1)


def amid_sign_slip(student_logits, teacher_logits, alpha, lam):
    """β = (α − 1)/2 written for (1 − α)/2."""
    lp, lq = _logs(student_logits, teacher_logits)
    if alpha == 1 or lam in (0, 1) or math.isinf(alpha):
        return gpu.amid_loss(student_logits, teacher_logits, alpha, lam, reduction="none")
    # the slip β = (α − 1)/2 is the naive formula's β = (1 − α')/2 at α' = 2 − α
    log_m = naive_log_alpha_mean(lp, lq, 2.0 - alpha, lam, logaddexp=torch.logaddexp)
    lr = log_m - torch.logsumexp(log_m, -1, keepdim=True)
    x, y = order_arguments("pr", lp, lq, lr)
    return torch.where(torch.isneginf(x), 0.0, x.exp() * (x - y)).sum(-1)


def _padded_cases():
    """A teacher of V = 48 ids and a student of 40 (its last 8 ids padded with −inf)."""
    rng = np.random.default_rng(5)
    out = []
    for alpha in (-3.0, -1.0, 0.5):
        for order in ("rp", "qr"):
            s, t = rng.normal(scale=2.0, size=(2, 3, 48))
            s[..., 40:] = -np.inf
            out.append(Case("padding", alpha=alpha, lam=0.3, order=order,
                            student_logits=s, teacher_logits=t))  # fmt: skip
    return out


_KL_PR = {"divergences": ("kl",), "orders": ("pr",)}
_JS_PR = {"divergences": ("js",), "orders": ("pr",)}

FIELD_MUTANTS = [
    # (id, fn, conform options, expected primary diagnosis)
    ("ab_isinf", ab_isinf_masked,
     {"kind": "divergence", "divergences": ("ab",), "orders": ("pr",),
      "families": ["extreme_logits", "one_hot"]}, "neg_inf_dropped"),
    ("tv_isinf", tv_isinf_masked,
     {"kind": "divergence", "divergences": ("tv",), "orders": ("pr",),
      "families": ["extreme_logits", "one_hot"]}, "neg_inf_dropped"),
    ("skew_kl_isinf", skew_kl_isinf_masked, {"families": ["extreme_logits"]}, "neg_inf_dropped"),
    ("logits_bf16", logits_through_bf16, {"families": ["alpha_grid"]}, "logits_in_low_precision"),
    ("student_padded_zero", student_padded_with_zero, {"cases": _padded_cases()},
     "padded_logit_zero"),
    ("beta_clamped", jsd_beta_clamped,
     {"kind": "divergence", "families": ["param_grid"], **_JS_PR}, "beta_clamped"),
    ("bf16_teacher_jsd", jsd_bf16_teacher,
     {"kind": "divergence", "families": ["param_grid", "one_hot", "shapes"], **_JS_PR},
     "low_precision_probabilities"),
    ("temperature_student_only", kd_temperature_on_student,
     {"kind": "divergence", "families": ["temperature"], **_KL_PR}, "temperature_one_side"),
    ("t_squared_missing", kd_without_t_squared,
     {"kind": "divergence", "families": ["temperature"], "temperature_squared": True, **_KL_PR},
     "temperature"),
    ("t_squared_twice", kd_t_squared_twice,
     {"kind": "divergence", "families": ["temperature"], "temperature_squared": True, **_KL_PR},
     "temperature"),
    ("labels_shifted", loss_labels_shifted, {"families": ["masking"]}, "labels_shifted"),
    ("divided_by_batch", kd_divided_by_batch,
     {"kind": "divergence", "families": ["shapes", "param_grid"], "reduction": "mean",
      **_KL_PR}, "reduction_mismatch"),
    ("unnormalized_r", amid_without_normalization,
     {"families": ["alpha_grid", "lambda_edges"], "alpha_range": (-100.0, 100.0)},
     "unnormalized_assistant"),
    ("sign_slip", amid_sign_slip, {"families": ["alpha_grid"]}, "alpha_sign_slip"),
    ("bf16_inside_fp32", amid_in_bf16_inside,
     {"families": ["alpha_grid"], "alpha_range": (-100.0, 100.0)}, "low_precision_arithmetic"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fn", "options", "expected"),
    [m[1:] for m in FIELD_MUTANTS],
    ids=[m[0] for m in FIELD_MUTANTS],
)
def test_each_failure_mode_of_the_field_is_diagnosed(fn, options, expected):
    options = dict(options)
    kind = options.pop("kind", "loss")
    report = conform(fn, kind, **options)
    assert not report.passed
    assert_diagnosed(report, {expected})
    assert f"[{expected}" in report.text()


def test_bf16_inside_is_named_at_bf16_too():
    """Declared bf16, the cast inside still shows: the float32 inputs give the same error."""
    cases = [c for c in battery("loss", families=["alpha_grid"]) if abs(c.alpha) < 100]
    report = conform(amid_in_bf16_inside, dtype="bf16", cases=cases[::2])
    primary = assert_diagnosed(
        report, {"low_precision_arithmetic", "input_dtype_arithmetic", "low_precision_logaddexp"}
    )
    assert "low_precision_arithmetic" in primary


def test_every_mode_of_the_field_is_registered_with_a_test():
    ids = {m.id for m in FAILURE_MODES}
    tested = {m[-1] for m in FIELD_MUTANTS}
    assert tested <= ids
    new = {
        "logits_in_low_precision",
        "beta_clamped",
        "low_precision_probabilities",
        "temperature_one_side",
        "labels_shifted",
        "unnormalized_assistant",
        "alpha_sign_slip",
        "low_precision_arithmetic",
    }
    assert new <= tested


def test_a_bf16_teacher_in_an_fp32_mixture_is_named():
    """ms-swift's mixed-precision JSD: the diagnosis says which side was rounded, and how."""
    report = conform(jsd_bf16_teacher, "divergence", families=["param_grid"], **_JS_PR)
    assert report.failures
    for r in report.failures:
        assert "teacher logits and probabilities in bfloat16" in r.diagnoses[0].message
        assert "student" not in r.diagnoses[0].message.split(":")[0]


def test_the_shift_of_the_logits_offset_is_named(monkeypatch):
    """An error that a large common logit offset causes is named by its control (the same
    distributions with the row max subtracted pass)."""

    def offset_sensitive(student_logits, teacher_logits):
        # log-normalizer rounded at the offset's magnitude (no max subtracted first)
        lse_s = torch.logsumexp(student_logits.double(), -1, keepdim=True).float()
        lse_t = torch.logsumexp(teacher_logits.double(), -1, keepdim=True).float()
        lq, lp = (student_logits - lse_s).double(), (teacher_logits - lse_t).double()
        return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - lq)).sum(-1)

    cases = [c for c in battery("divergence", families=["extreme_logits"], **_KL_PR)
             if c.inputs == "huge_offset"]  # fmt: skip
    report = conform(offset_sensitive, "divergence", cases=cases)
    assert_diagnosed(report, {"logit_offset_rounding"}, at_least=1.0)


# --------------------------------------------------------------------------------------
# A preset checked on the function as published
# --------------------------------------------------------------------------------------


def skewed_reverse_kl(logits, teacher_logits, no_model_batch, lam=0.1):
    """DistiLLM's signature and conventions (written here): lam is the skew, the labels come
    in a dict, the isinf mask on both sides, the mean over kept tokens."""
    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float32)
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    mixed_probs = (1 - lam) * teacher_probs + lam * student_probs
    student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    mixed_logprobs = torch.log(mixed_probs)
    mask = (no_model_batch["label"] != -100).int()
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)
    prod = torch.masked_fill(student_probs * mixed_logprobs, inf_mask, 0)
    prod = prod - torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    x = torch.sum(prod, dim=-1).view(-1)
    return -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)


def srkl(student_logits, teacher_logits, lam=0.1):
    """A plain skew reverse KL with DistiLLM's lam = skew, no direction parameter."""
    lp, lq = _logs(student_logits, teacher_logits)
    if lam in (0.0, 1.0):
        lm = lp if lam == 0 else lq
    else:
        lm = torch.logaddexp(lp + math.log1p(-lam), lq + math.log(lam))
    return torch.where(torch.isneginf(lq), 0.0, lq.exp() * (lq - lm)).sum(-1)


def srkl_own_name(student_logits, teacher_logits, s=0.1):
    return srkl(student_logits, teacher_logits, s)


def test_preset_runs_on_a_plain_skew_reverse_kl_with_lam():
    report = conform(srkl, preset="distillm_srkl", families=["param_grid", "shapes"])
    assert report.passed, report.text()
    assert report.settings["param_map"] == {"skew": "lam"}
    assert not any("direction" in r.reason for r in report.results)


def test_parameter_names_are_mapped_and_unmapped_is_nothing_checked(capsys):
    from amid_ref.cli import main

    report = conform(srkl_own_name, preset="distillm_srkl", families=["shapes"])
    assert report.nothing_checked and not report.passed
    assert "--map skew=YOUR_NAME" in report.text() and "NOTHING CHECKED" in report.text()
    mapped = conform(srkl_own_name, preset="distillm_srkl", families=["shapes"],
                     param_map={"s": "skew"})  # fmt: skip
    assert mapped.passed, mapped.text()
    argv = ["conform", f"{__name__}:srkl_own_name", "--preset", "distillm_srkl",
            "--families", "shapes"]  # fmt: skip
    assert main(argv) == 3
    assert "--map skew=" in capsys.readouterr().out
    assert main([*argv, "--map", "skew=s"]) == 0
    with pytest.raises(ValueError, match="param_map"):
        conform(srkl_own_name, preset="distillm_srkl", param_map={"skew": "nope"})


def test_a_dict_of_labels_is_one_line():
    fn = labels_in(skewed_reverse_kl, "no_model_batch", "label")
    report = conform(fn, preset="distillm_srkl", families=["param_grid", "masking", "shapes"])
    assert report.settings["reduction"].startswith("mean")
    # the published code's own behaviour: every case passes but the all-ignored mean (0/0)
    assert report.diagnoses() == {"mask_divide_by_zero": 1}, report.text()
    assert sum(r.case.family == "masking" and r.status == "pass" for r in report.results) >= 2


# --------------------------------------------------------------------------------------
# A library's own CI: assert_conforms with families, tolerance rows and allowed modes
# --------------------------------------------------------------------------------------


def test_library_ci_pattern_on_a_peer():
    """TRL's JSD in its own test suite: a few families, the fp32 rows, its documented
    endpoints allowed; the F.kl_div NaN at masked logits is not allowed, and fails."""
    pytest.importorskip("trl")
    families = ["param_grid", "shapes"]
    rows = {"loss": "gpu/loss/float32", "grad": "gpu/grad/float32"}
    report = assert_conforms("trl-gjsd", families=families, tolerances=rows)
    assert report.counts["fail"] == 4  # β ∈ {0, 1}, documented: allowed
    assert report.tolerances["loss"]["row"] == "gpu/loss/float32"
    with pytest.raises(AssertionError, match="kl_div_nan_at_neg_inf"):
        assert_conforms("trl-gjsd", families=["extreme_logits"], tolerances=rows)
    with pytest.raises(ValueError, match="tolerances: no row"):
        conform(gpu.amid_loss, families=["shapes"], tolerances={"loss": "gpu/loss/int8"})
