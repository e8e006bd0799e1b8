"""Conformance of published implementations (peers), the divergence and preset kinds, and the
diagnoses of the defects real code has.

Every built-in peer runs (skipped only when its package is absent). Each diagnosis has a
deliberately wrong implementation here with exactly that defect (one has two at once);
everything else is delegated to ``gpu`` (shown to conform by tests/test_conformance.py), so
a failure can only come from the defect. More than 90% of each mutant's failing cases must
be diagnosed, none with another mode; a correct implementation of every kind passes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from amid_ref import presets
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref._specs import SPECS, order_arguments
from amid_ref.conformance import Case, battery, conform
from amid_ref.conformance._cases import PRESET_PARAM_GRIDS
from amid_ref.conformance._peers import PEERS, conform_peer, peer_table

torch = pytest.importorskip("torch")
gpu = pytest.importorskip("gpu")
F = torch.nn.functional


def assert_diagnosed(report, expected: set[str], *, at_least: float = 0.9):
    """More than ``at_least`` of the failures diagnosed within ``expected``, none outside."""
    failures = report.failures
    assert failures, report.text()
    primary = [r.diagnoses[0].id if r.diagnoses else None for r in failures]
    wrong = [
        (r.case.id, i) for r, i in zip(failures, primary, strict=True) if i and i not in expected
    ]
    assert not wrong, wrong
    right = sum(i in expected for i in primary)
    assert right > at_least * len(failures), (right, len(failures), report.text())
    return primary


# --------------------------------------------------------------------------------------
# Correct implementations of the divergence and preset kinds pass
# --------------------------------------------------------------------------------------


def plain_divergence(
    student_logits,
    teacher_logits,
    divergence="kl",
    direction="pq",
    temperature=1.0,
    labels=None,
    ignore_index=-100,
    reduction="none",
    **params,
):
    """D(p‖q) (direction pq) or D(q‖p) (qp) of any divergence, by gpu.amid_loss at λ = 0."""
    order = {"pq": "pr", "qp": "rp"}[direction]
    return gpu.amid_loss(
        student_logits, teacher_logits, -1.0, 0.0, divergence=divergence, order=order,
        div_params=params or None, temperature=temperature, labels=labels,
        ignore_index=ignore_index, reduction=reduction,
    )  # fmt: skip


def preset_implementation(name):
    """The prior method ``name`` in torch (gpu.amid_loss over the preset's terms)."""

    def loss(student_logits, teacher_logits, temperature=1.0, labels=None, ignore_index=-100,
             reduction="none", **params):  # fmt: skip
        if name == "abkd" and params:
            params = {"div_params": {**presets.PRESETS["abkd"].div_params, **params}}
        rec = presets.get(name, **params)
        total = 0.0
        for order, weight in rec.terms:
            if weight:
                total = total + weight * gpu.amid_loss(
                    student_logits, teacher_logits, rec.alpha, rec.lam, divergence=rec.divergence,
                    order=order, div_params=dict(rec.div_params) or None, temperature=temperature,
                    labels=labels, ignore_index=ignore_index, reduction=reduction,
                    detach_assistant=rec.detach_assistant,
                )  # fmt: skip
        return total if torch.is_tensor(total) else torch.zeros(student_logits.shape[:-1])

    loss.__qualname__ = f"preset_{name}"
    return loss


def test_a_correct_divergence_passes_for_every_divergence_and_direction():
    report = conform(plain_divergence, "divergence", dtype="float32")
    assert report.passed, report.text()
    ran = {(r.case.divergence, r.case.order) for r in report.results if r.status == "pass"}
    offered = {name for name, spec in SPECS.items() if spec.offered_by("gpu")}
    assert {d for d, _ in ran} == offered
    assert {o for _, o in ran} == {"pr", "rp"}
    assert {r.case.family for r in report.results if r.status == "pass"} >= {
        "param_grid",
        "extreme_logits",
        "masking",
    }


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_a_correct_preset_passes(name):
    fn = preset_implementation(name)
    report = conform(fn, preset=name, dtype="float32", grad=name in ("gkd_jsd", "taid"))
    assert report.passed, report.text()
    assert report.settings["kind"] == "preset"
    grid = PRESET_PARAM_GRIDS[name]
    assert sum(r.case.family == "param_grid" for r in report.results) == 2 * len(grid)


def test_preset_parameters_fixed_by_set():
    fn = preset_implementation("gkd_jsd")
    report = conform(fn, preset="gkd_jsd", kwargs={"beta": 0.1}, families=["shapes", "one_hot"])
    assert report.passed, report.text()
    assert {r.case.preset_params["beta"] for r in report.results} == {0.1}


# --------------------------------------------------------------------------------------
# The built-in peers
# --------------------------------------------------------------------------------------

_EXPECTED = {
    "trl-gjsd": {"jsd_endpoint_kl", "kl_div_nan_at_neg_inf"},
    "liger-jsd": {"jsd_endpoint_kl", "kl_div_nan_at_neg_inf"},
    "liger-fused-jsd": {"jsd_endpoint_kl", "kl_div_nan_at_neg_inf"},
    "torch-kl-forward": {"kl_div_nan_at_neg_inf"},
    "torch-kl-forward-log-target": {"kl_div_nan_at_neg_inf"},
    "torch-kl-reverse": {"kl_div_nan_at_neg_inf", "nan_grad_at_neg_inf"},
    "torch-kl-reverse-log-target": {"kl_div_nan_at_neg_inf"},
    # the value is the cross-entropy (KL + H(p)); the gradient is KL's
    "torchtune-forward-kl": {"cross_entropy_for_kl"},
    "torchtune-forward-kl-chunked": {"cross_entropy_for_kl"},
    "torchtune-symmetric-kl": {"cross_entropy_for_kl"},
    # NaN gradients behind masked_fill; one fp32 gradient entry 1 % off (undiagnosed)
    "torchtune-reverse-kl": {"nan_grad_at_neg_inf", None},
    "trl-distillation": {"jsd_endpoint_kl", "logit_offset_rounding"},
    "modelopt-logits-kd": {"kl_div_nan_at_neg_inf"},
    "liger-triton-jsd": {"jsd_endpoint_kl", "kl_div_nan_at_neg_inf"},
    "liger-triton-kldiv": {"kl_div_nan_at_neg_inf"},
    "liger-triton-tvd": {"mask_divide_by_zero"},
}

_MODULES = {
    "trl": "trl",
    "liger-kernel": "liger_kernel",
    "torch": "torch",
    "torchtune": "torchtune",
    "nvidia-modelopt": "modelopt",
}


def _require(peer):
    # find_spec, not importorskip: ModelOpt warns at import (filterwarnings = error); the
    # peer's loader imports it with its warnings silenced.
    if importlib.util.find_spec(_MODULES[peer.distribution]) is None:
        pytest.skip(f"{peer.distribution} is not installed")


@pytest.mark.parametrize("name", [n for n, p in PEERS.items() if p.runtime == "torch"])
def test_every_peer_runs_its_mapped_battery_with_diagnoses(name):
    peer = PEERS[name]
    _require(peer)
    report = conform_peer(name)
    assert report.settings["peer"]["version"] == peer.version()
    assert report.settings["grad"] == "on"
    assert report.seconds < 60
    assert report.counts["pass"] > 5
    expected = _EXPECTED[name] - {None}
    at_least = 0.6 if None in _EXPECTED[name] else 0.99
    primary = assert_diagnosed(report, expected, at_least=at_least)
    assert set(primary) - {None} == expected
    for r in report.results:
        c = r.case
        finite = not any(np.isneginf(x).any() for x in c.arrays("float32"))
        if c.family == "param_grid" and c.divergence == "js" and finite and r.status != "skip":
            endpoint = c.div_params["beta"] in (0.0, 1.0)
            assert (r.status == "fail") == endpoint, (c.id, r.status)
    skips = " ".join(
        r.reason
        for r in report.results
        if r.status == "skip" and not r.reason.startswith("reference rejects")
    )
    assert "divergence" not in skips and "order" not in skips  # mapped, not skipped


_TRITON_SCRIPT = """
import json
from amid_ref.conformance import conform_peer
out = {}
for name, dtype, families in (
    ("liger-triton-jsd", "float32", None),
    ("liger-triton-kldiv", "float32", None),
    ("liger-triton-tvd", "float32", None),
    ("liger-triton-jsd", "bf16", ["param_grid", "one_hot", "shapes"]),
    ("liger-triton-tvd", "bf16", ["shapes"]),
):
    r = conform_peer(name, dtype=dtype, families=families)
    out[name + "/" + dtype] = {
        "runtime": r.settings["peer"]["runtime"], "counts": dict(r.counts),
        "primary": [f.diagnoses[0].id if f.diagnoses else None for f in r.failures],
        "skips": sorted({x.reason for x in r.results if x.status == "skip"}),
    }
print(json.dumps(out))
"""


def test_the_triton_peers_run_under_the_interpreter():
    """liger-kernel's Triton kernels, in a fresh process (TRITON_INTERPRET must be set
    before the kernels are defined); on a machine without CUDA, under the interpreter."""
    _require(PEERS["liger-triton-jsd"])
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("liger-triton-jsd", "liger-triton-kldiv", "liger-triton-tvd"):
        run = out[name + "/float32"]
        assert run["counts"]["pass"] > 20, run
        assert run["primary"] and set(run["primary"]) == _EXPECTED[name], run
    jsd = out["liger-triton-jsd/bf16"]
    allowed = {"jsd_endpoint_kl", "low_precision_probabilities", "input_dtype_arithmetic",
               "kl_div_nan_at_neg_inf"}  # fmt: skip
    assert sum(p in allowed for p in jsd["primary"]) >= 0.9 * len(jsd["primary"]), jsd
    assert None not in set(jsd["primary"]) - allowed
    tvd = out["liger-triton-tvd/bf16"]
    import torch

    if not torch.cuda.is_available():  # the interpreter's bf16 arithmetic: not run, said so
        assert tvd["counts"].get("pass", 0) == 0 and tvd["counts"].get("fail", 0) == 0
        assert any("raw 16-bit patterns" in x for x in tvd["skips"]), tvd


def test_trl_in_bf16_is_diagnosed_as_bf16_arithmetic():
    pytest.importorskip("trl")
    report = conform_peer("trl-gjsd", dtype="bf16")
    expected = {
        "jsd_endpoint_kl",
        "kl_div_nan_at_neg_inf",
        "input_dtype_arithmetic",
        "params_rounded_to_dtype",
    }
    primary = assert_diagnosed(report, expected, at_least=0.95)
    assert max(set(primary), key=primary.count) == "input_dtype_arithmetic"


def test_cli_peer_list_and_run(capsys):
    from amid_ref.cli import main

    assert main(["conform", "--peer", "list"]) == 0
    out = capsys.readouterr().out
    for name in PEERS:
        assert name in out
    assert peer_table().splitlines()[0] in out
    code = main(["conform", "--peer", "torch-kl-forward-log-target", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["settings"]["peer"]["name"] == "torch-kl-forward-log-target"
    assert data["diagnoses"] == {"kl_div_nan_at_neg_inf": data["counts"]["fail"]}
    assert main(["conform"]) == 2
    assert "--peer" in capsys.readouterr().err


def test_user_peer_record_and_ten_line_adapter(tmp_path, monkeypatch, capsys):
    """The documented protocol: a user adapter of a well-known signature in ≤ 10 lines."""
    from amid_ref.cli import main

    adapter = (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "def kd(student_logits, teacher_logits, temperature=1.0):\n"
        "    log_q = F.log_softmax(student_logits / temperature, -1)\n"
        "    log_p = F.log_softmax(teacher_logits / temperature, -1)\n"
        "    kl = torch.where(torch.isneginf(log_p), 0.0, log_p.exp() * (log_p - log_q))\n"
        "    return kl.sum(-1) * temperature**2\n"
    )
    assert len(adapter.splitlines()) <= 10
    (tmp_path / "my_kd.py").write_text(adapter)
    monkeypatch.chdir(tmp_path)
    argv = ["conform", "my_kd:kd", "--kind", "divergence", "--divergences", "kl"]
    argv += ["--orders", "pq", "--temperature-squared", "--families", "param_grid,temperature"]
    assert main(argv) == 0, capsys.readouterr().out
    assert "RESULT: PASS" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Mutants: one defect each (the last has two)
# --------------------------------------------------------------------------------------


def _kl_rows(x, y):
    return torch.where(torch.isneginf(x), 0.0, x.exp() * (x - y)).sum(-1)


def _pair(student_logits, teacher_logits, alpha, lam, order="pr"):
    lp = torch.log_softmax(teacher_logits.double(), dim=-1)
    lq = torch.log_softmax(student_logits.double(), dim=-1)
    lr = gpu.log_alpha_mixture(lp, lq, alpha, lam)
    return order_arguments(order, lp, lq, lr)


def loss_naive_at_infinite_alpha(student_logits, teacher_logits, alpha, lam, order="pr"):
    """Defect: the finite-α mixture formula also used at α = ±∞ (β = ∓∞: NaN)."""
    if not math.isinf(alpha):
        return gpu.amid_loss(student_logits, teacher_logits, alpha, lam, order=order,
                             reduction="none")  # fmt: skip
    lp = torch.log_softmax(teacher_logits.double(), dim=-1)
    lq = torch.log_softmax(student_logits.double(), dim=-1)
    log_m = naive_log_alpha_mean(lp, lq, alpha, lam, logaddexp=torch.logaddexp)
    lr = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
    x, y = order_arguments(order, lp, lq, lr)
    return _kl_rows(x, y)


def dropping(side):
    def loss(student_logits, teacher_logits, alpha, lam, order="pr"):
        """Defect: the KL sum leaves out the entries where one side's logit is −inf."""
        x, y = _pair(student_logits, teacher_logits, alpha, lam, order)
        keep = torch.isfinite(teacher_logits if side == "teacher" else student_logits)
        terms = torch.where(torch.isneginf(x), 0.0, x.exp() * (x - y))
        return torch.where(keep, terms, 0.0).sum(-1)

    return loss


def loss_masked_fill_after(student_logits, teacher_logits, alpha, lam):
    """Defect: the mixture's NaN at 0 + 0 masked_fill-ed after the fact: the value is right,
    the backward of logaddexp(−inf, −inf) is NaN (α < 1, 0 < λ < 1 declared)."""
    lp = torch.log_softmax(teacher_logits.double(), -1)
    lq = torch.log_softmax(student_logits.double(), -1)
    log_m = naive_log_alpha_mean(lp, lq, alpha, lam, logaddexp=torch.logaddexp)
    log_m = log_m.masked_fill(torch.isnan(log_m), -math.inf)
    log_r = log_m - torch.logsumexp(log_m, -1, keepdim=True)
    return torch.where(torch.isneginf(lp), 0.0, lp.exp() * (lp - log_r)).sum(-1)


def loss_kl_div_log_target(student_logits, teacher_logits, alpha, lam, order="pr"):
    """Defect: KL(x‖y) as F.kl_div(y, x, log_target=True), NaN where x has −inf."""
    x, y = _pair(student_logits, teacher_logits, alpha, lam, order)
    return F.kl_div(y, x, reduction="none", log_target=True).sum(-1)


def loss_ab_params_fixed(student_logits, teacher_logits, alpha, lam, divergence="kl",
                         order="pr", div_params=None):  # fmt: skip
    """Defect: the AB parameters fixed at (0.2, 0.7) whatever is asked."""
    if divergence == "ab":
        div_params = {"alpha": 0.2, "beta": 0.7}
    return gpu.amid_loss(student_logits, teacher_logits, alpha, lam, divergence=divergence,
                         order=order, div_params=div_params, reduction="none")  # fmt: skip


def loss_cross_entropy(student_logits, teacher_logits, alpha, lam):
    """Defect (by design in some code): −Σ p·log r = KL(p‖r) + H(p)."""
    lp = torch.log_softmax(teacher_logits.double(), dim=-1)
    kl = gpu.amid_loss(student_logits, teacher_logits, alpha, lam, reduction="none")
    return kl - torch.where(torch.isneginf(lp), 0.0, lp.exp() * lp).sum(-1)


def loss_in_input_dtype(student_logits, teacher_logits, alpha, lam):
    """Defect: everything in the input dtype (bf16), at every α (no upcast)."""
    lp, lq = F.log_softmax(teacher_logits, -1), F.log_softmax(student_logits, -1)
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


def loss_geometric_in_bf16(student_logits, teacher_logits, alpha, lam):
    """Defect: α ≥ 1 collapsed to the geometric mixture, computed in the input dtype."""
    return loss_in_input_dtype(student_logits, teacher_logits, min(alpha, 1.0), lam)


def jsd_with_kl_endpoints(student_logits, teacher_logits, beta=0.5, reduction="none"):
    """Defect (TRL's documented choice): KL(p‖q) at β = 0 and KL(q‖p) at β = 1."""
    if beta in (0.0, 1.0):
        order = "pr" if beta == 0 else "rp"
        return gpu.amid_loss(student_logits, teacher_logits, -1.0, 0.0, order=order,
                             reduction=reduction)  # fmt: skip
    return gpu.amid_loss(student_logits, teacher_logits, -1.0, 0.0, divergence="js",
                         div_params={"beta": beta}, reduction=reduction)  # fmt: skip


def loss_geometric_and_ab_fixed(student_logits, teacher_logits, alpha, lam, divergence="kl",
                                order="pr", div_params=None):  # fmt: skip
    """Two defects: the α ≥ 1 geometric collapse and the AB parameters fixed at (0.2, 0.7)."""
    alpha = 1.0 if alpha >= 1 else alpha
    return loss_ab_params_fixed(student_logits, teacher_logits, alpha, lam, divergence, order,
                                div_params)  # fmt: skip


def loss_constant_zero(student_logits, teacher_logits, alpha, lam):
    """Correct where D(p‖p) = 0 (λ = 1, order pr): a constant without grad_fn."""
    return torch.zeros(student_logits.shape[:-1])


MUTANTS = [
    # (id, fn, conform options, expected primary diagnoses)
    (
        "infinite_alpha",
        loss_naive_at_infinite_alpha,
        {"families": ["alpha_grid", "lambda_edges", "one_hot"]},
        {"infinite_alpha_nan"},
    ),
    (
        "drop_teacher_neg_inf",
        dropping("teacher"),
        {"families": ["extreme_logits", "one_hot"]},
        {"neg_inf_dropped"},
    ),
    (
        "drop_student_neg_inf",
        dropping("student"),
        {"families": ["extreme_logits", "one_hot"]},
        {"neg_inf_dropped"},
    ),
    (
        "nan_grad",
        loss_masked_fill_after,
        {
            "families": ["extreme_logits", "one_hot", "alpha_grid"],
            "grad": True,
            "alpha_range": (-10.0, 0.9),
            "lam_range": (0.05, 0.95),
        },
        {"nan_grad_at_neg_inf"},
    ),
    (
        "kl_div_log_target",
        loss_kl_div_log_target,
        {"families": ["extreme_logits", "one_hot"]},
        {"kl_div_nan_at_neg_inf"},
    ),
    (
        "ab_params_fixed",
        loss_ab_params_fixed,
        {"families": ["divergences"], "divergences": ("ab",)},
        {"divergence_params_ignored"},
    ),
    (
        "cross_entropy",
        loss_cross_entropy,
        {"families": ["alpha_grid", "lambda_edges"]},
        {"cross_entropy_for_kl"},
    ),
    (
        "input_dtype_bf16",
        loss_in_input_dtype,
        {
            "cases": [
                c
                for c in battery("loss", families=["alpha_grid", "shapes"])
                if c.alpha in (-math.inf, -3.0, 0.5, 3.0, 5.0) and c.lam != 0.1
            ],
            "dtype": "bf16",
        },
        {"input_dtype_arithmetic", "low_precision_logaddexp"},
    ),
    (
        "jsd_endpoints",
        jsd_with_kl_endpoints,
        {
            "kind": "divergence",
            "families": ["param_grid"],
            "divergences": ("js",),
            "orders": ("pr",),
        },
        {"jsd_endpoint_kl"},
    ),
    (
        "two_defects",
        loss_geometric_and_ab_fixed,
        {"families": ["divergences"], "divergences": ("ab",)},
        {
            "geometric_collapse+divergence_params_ignored",
            "divergence_params_ignored+geometric_collapse",
            "geometric_collapse",
            "divergence_params_ignored",
        },
    ),
]


@pytest.mark.parametrize(
    ("fn", "options", "expected"), [m[1:] for m in MUTANTS], ids=[m[0] for m in MUTANTS]
)
def test_mutant_of_a_real_defect_is_diagnosed(fn, options, expected):
    options = dict(options)
    kind = options.pop("kind", "loss")
    report = conform(fn, kind, **options)
    assert not report.passed
    assert_diagnosed(report, expected)
    if fn is loss_geometric_and_ab_fixed:  # the pair, where both defects act (α = 3)
        pairs = [r for r in report.failures if r.diagnoses and "+" in r.diagnoses[0].id]
        assert pairs and all(r.case.alpha > 1 for r in pairs)


def test_cross_entropy_peer_passes_on_gradients_only():
    report = conform(loss_cross_entropy, families=["alpha_grid"], grad=True, compare="grad")
    assert report.passed, report.text()
    assert report.settings["grad"].startswith("on (gradient only")


def test_geometric_collapse_in_bf16_is_not_taken_for_bf16_noise():
    cases = [c for c in battery("loss", families=["alpha_grid"]) if 3 <= c.alpha < 100]
    report = conform(loss_geometric_in_bf16, dtype="bf16", cases=cases)
    primary = assert_diagnosed(report, {"geometric_collapse"}, at_least=0.9)
    assert "low_precision_logaddexp" not in primary
    assert all("bfloat16" in r.diagnoses[0].message for r in report.failures if r.diagnoses)


def test_a_constant_loss_has_gradient_zero():
    cases = [
        c for c in battery("loss", families=["lambda_edges"]) if c.lam == 1 and c.order == "pr"
    ]
    report = conform(loss_constant_zero, grad=True, cases=cases)
    assert report.passed, report.text()
    assert all("no grad_fn" in r.reason for r in report.results if r.status == "pass")


def test_an_output_of_zero_is_not_lambda_on_student():
    report = conform(loss_constant_zero, families=["lambda_edges"])
    assert not report.passed
    assert "lambda_on_student" not in report.all_diagnoses()


def test_student_masked_inputs_are_in_the_battery():
    cases = [c for c in battery("loss") if c.inputs == "student_masked"]
    assert cases
    s, t = cases[0].arrays("float32")
    assert np.isneginf(s).any() and not np.isneginf(t).any()
    assert np.isfinite(s).any(axis=-1).all()
    assert any(c.inputs == "student_masked" for c in battery("divergence"))


def test_reproducer_line_rebuilds_every_printed_case():
    """Also for cases outside the battery (a retargeted grid, a preset's)."""
    retargeted = [
        Case("mine", "divergence", divergence="js", div_params={"beta": 0.25}, inputs="masked"),
        Case("mine", alpha=math.inf, lam=0.7, inputs="teacher_masked", shape=(2, 3, 9)),
        *battery("preset", preset="taid", families=["param_grid"])[:2],
    ]
    report = conform(lambda student_logits, teacher_logits, *a, **k: student_logits.sum(-1) * 0 + 7,
                     cases=retargeted, convention="student_first", reduction="none")  # fmt: skip
    text = report.text()
    lines = [ln.split("reproduce", 1)[1].strip() for ln in text.splitlines() if "reproduce" in ln]
    assert lines
    for r in report.results:
        ns: dict = {}
        exec(r.case.reproducer("float32"), ns)
        want = r.case.arrays("float32")
        np.testing.assert_array_equal(ns["s"], want[0])
        np.testing.assert_array_equal(ns["t"], want[1])


def test_conform_keywords_mirror_the_cli():
    report = conform(
        gpu.amid_loss,
        families=["alpha_grid", "divergences"],
        alpha_range=(-10.0, 10.0),
        divergences="kl,js",
        orders=("pr",),
    )
    assert report.passed, report.text()
    ran = [r.case for r in report.results if r.status == "pass"]
    assert all(abs(c.alpha) <= 10 and c.divergence in ("kl", "js") and c.order == "pr" for c in ran)
    old = conform(gpu.amid_loss, families=["shapes"], support={"max_vocab": 40})
    assert old.counts["skip"] > 0 and old.passed


def test_the_peers_page_is_generated_from_the_json_reports():
    from amid_ref.conformance import audit_page

    reports = sorted(audit_page.REPORTS.glob("*.json"))
    assert {json.loads(p.read_text())["settings"]["peer"]["name"] for p in reports} == set(PEERS)
    assert audit_page.build_page() == audit_page.PAGE.read_text(encoding="utf-8")
    text = audit_page.PAGE.read_text(encoding="utf-8")
    by_design = sum(bool(p.by_design) for p in PEERS.values())  # TRL's JSDs, liger's JSDs
    assert by_design == 5
    assert text.count("**Differs from the reference by design.**") == by_design
    for name in PEERS:
        assert f"$ amid-ref conform --peer {name} --dtype float32 --json" in text


def test_the_mapping_page_is_generated_from_the_records():
    """docs/mapping.md: one row per Peer record, with its parameters, AMiD setting,
    temperature, reduction, label shift and masking as the record states them, and the
    endpoint and bf16 behaviour as the reports measured them."""
    from amid_ref.conformance import audit_page

    text = audit_page.MAPPING.read_text(encoding="utf-8")
    assert audit_page.build_mapping_page() == text
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| [`")}
    assert list(rows) == list(PEERS)
    for name, peer in PEERS.items():
        row = rows[name]
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert peer.amid and peer.amid.replace("|", "\\|") == cells[3]
        for param, meaning in peer.params:
            assert f"`{param}`: {meaning}".replace("|", "\\|") in cells[2]
        assert cells[4] == ("T² applied" if peer.support.temperature_squared else
                            "no T" if peer.support.temperature is False else "no T²")  # fmt: skip
        assert cells[5] == audit_page._REDUCTION_WORDS[peer.reduction]
        assert cells[6] == peer.label_shift and cells[7] == peer.masking
        report = json.loads((audit_page.REPORTS / f"{name}.float32.json").read_text())
        for mode in report["diagnoses"]:
            if mode in peer.by_design_modes:  # an endpoint difference, measured and named
                assert f"`{mode}`" in cells[8] and "(by design)" in cells[8]
    assert "[docs/mapping.md](docs/mapping.md)" in (audit_page.ROOT / "README.md").read_text()


def test_a_jsd_peer_maps_to_the_gkd_preset_too():
    pytest.importorskip("liger_kernel")
    report = conform_peer("liger-jsd", kind="preset")
    assert report.settings["preset"] == "gkd_jsd"
    assert_diagnosed(report, _EXPECTED["liger-jsd"], at_least=0.99)
    endpoints = {
        r.case.preset_params["beta"] for r in report.failures if r.case.inputs == "realistic"
    }
    assert endpoints == {0.0, 1.0}
    assert "by design" in report.text()


def test_a_user_peer_record(tmp_path, monkeypatch, capsys):
    from amid_ref.cli import main

    (tmp_path / "my_peers.py").write_text(
        "import torch\n"
        "from amid_ref.conformance import Peer, Support\n"
        "def load():\n"
        "    def rkd(student_logits, teacher_logits, temperature=1.0):\n"
        "        lq = torch.log_softmax(student_logits / temperature, -1)\n"
        "        lp = torch.log_softmax(teacher_logits / temperature, -1)\n"
        "        kl = torch.where(torch.isneginf(lq), 0.0, lq.exp() * (lq - lp))\n"
        "        return kl.sum(-1).mean()\n"
        "    return rkd\n"
        "RKD = Peer('my-rkd', 'reverse KD', 'torch', 'my_peers.load', load, 'kl', 'rp',\n"
        "           preset='rkl', reduction='mean', support=Support(ignore_index=False))\n"
    )
    monkeypatch.chdir(tmp_path)
    code = main(["conform", "--peer", "my_peers:RKD", "--families", "param_grid,shapes,one_hot"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mapped to kl D(q‖p)" in out and "RESULT: PASS" in out
