"""Tests of ``amid-ref study``: the synthetic teacher, the exact metrics, the training loop
and the sweep runner (quick study end to end, determinism, sane metrics).

Oracles: the metrics are checked against SciPy's ``rel_entr``/``entropy`` and against
closed forms (uniform student: KL(p‖u) = log V − H(p)); the loss wiring of multi-term
presets against the float64 reference ``amid_ref.amid_loss``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from amid_ref import study  # noqa: E402
from amid_ref.cli import main  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

FIGURES = (
    "metric_vs_alpha.png",
    "mode_coverage_vs_alpha.png",
    "training_curves.png",
    "stability.png",
    "presets.png",
)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- teacher


def test_teacher_is_normalized_seeded_and_multimodal():
    cfg = study.TeacherConfig(vocab_size=512, n_train=64, n_test=32, n_components=2)
    a = study.make_teacher(cfg, seed=3)
    b = study.make_teacher(cfg, seed=3)
    c = study.make_teacher(cfg, seed=4)
    assert a.train_log_probs.shape == (64, 512)
    assert a.test_log_probs.shape == (32, 512)
    # normalized rows (exactly known distribution)
    from scipy.special import logsumexp

    np.testing.assert_allclose(logsumexp(a.test_log_probs, axis=1), 0.0, atol=1e-12)
    np.testing.assert_array_equal(a.test_log_probs, b.test_log_probs)
    assert not np.array_equal(a.test_log_probs, c.test_log_probs)
    # log_probs() recomputes the stored held-out distribution
    np.testing.assert_array_equal(a.log_probs(a.test_contexts), a.test_log_probs)
    p = np.exp(a.test_log_probs)
    assert (p >= 0.05).sum(axis=1).mean() >= 2.0, "conditionals should be multi-modal"
    assert (p < 1e-10).mean() > 0.05, "many probabilities should be near zero"
    # Zipf-like marginal: the 10% most frequent tokens carry most of the mass
    marginal = np.sort(p.mean(axis=0))[::-1]
    assert marginal[: 512 // 10].sum() > 0.5


def test_teacher_variants_share_contexts_and_sharpen():
    base_cfg = study.TeacherConfig(vocab_size=256, n_train=16, n_test=16)
    base = study.make_teacher(base_cfg, 0)
    cold = study.make_teacher(base_cfg.variant(temperature=0.25), 0)
    trunc = study.make_teacher(base_cfg.variant(top_k=7), 0)
    np.testing.assert_array_equal(base.test_contexts, cold.test_contexts)
    np.testing.assert_array_equal(base.test_contexts, trunc.test_contexts)
    # p_T ∝ p^(1/T): log-ratios between tokens scale by 1/T
    d_base = base.test_log_probs[:, 0] - base.test_log_probs[:, 1]
    d_cold = cold.test_log_probs[:, 0] - cold.test_log_probs[:, 1]
    np.testing.assert_allclose(d_cold, 4.0 * d_base, rtol=1e-9, atol=1e-9)
    assert (np.exp(cold.test_log_probs) < 1e-30).mean() > (
        np.exp(base.test_log_probs) < 1e-30
    ).mean()
    assert np.all(np.isfinite(trunc.test_log_probs).sum(axis=1) == 7)
    # truncation keeps the base teacher's top-7 tokens, renormalized
    keep = np.isfinite(trunc.test_log_probs)
    top7 = np.argsort(-base.test_log_probs, axis=1)[:, :7]
    assert np.all(np.take_along_axis(keep, top7, axis=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [("vocab_size", 1), ("n_train", 0), ("temperature", 0.0), ("top_k", 0), ("sharpness", -1.0)],
)
def test_teacher_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        study.TeacherConfig(**{field: value})


# --------------------------------------------------------------------------- metrics


def test_metrics_against_scipy_and_closed_forms():
    from scipy.special import rel_entr
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    n, v = 6, 50
    p = rng.dirichlet(np.full(v, 0.3), size=n)
    p = np.maximum(p, 1e-300)
    p /= p.sum(axis=1, keepdims=True)
    logits = rng.normal(size=(n, v)) * 2.0
    q = np.exp(logits - logits.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    m = study.exact_metrics(np.log(p), logits, top_k=5, mode_mass=0.05, cover_mass=0.01)
    assert m["forward_kl"] == pytest.approx(rel_entr(p, q).sum(axis=1).mean(), rel=1e-10)
    assert m["reverse_kl"] == pytest.approx(rel_entr(q, p).sum(axis=1).mean(), rel=1e-10)
    assert m["student_entropy"] == pytest.approx(entropy(q, axis=1).mean(), rel=1e-10)
    assert m["teacher_entropy"] == pytest.approx(entropy(p, axis=1).mean(), rel=1e-10)
    top = np.argsort(-q, axis=1)[:, :5]
    assert m["topk_teacher_mass"] == pytest.approx(
        np.take_along_axis(p, top, axis=1).sum(axis=1).mean(), rel=1e-12
    )
    modes = p >= 0.05
    assert m["teacher_modes"] == pytest.approx(modes.sum(axis=1).mean())
    assert m["modes_covered"] == pytest.approx((modes & (q >= 0.01)).sum(axis=1).mean())
    # uniform student: KL(p‖u) = log V − H(p), KL(u‖p) = −log V − mean log p
    u = study.exact_metrics(np.log(p), np.zeros((n, v)))
    assert u["forward_kl"] == pytest.approx(math.log(v) - entropy(p, axis=1).mean(), rel=1e-10)
    assert u["reverse_kl"] == pytest.approx(
        (-math.log(v) - np.log(p).mean(axis=1)).mean(), rel=1e-10
    )
    assert u["student_entropy"] == pytest.approx(math.log(v), rel=1e-12)
    # the teacher itself: zero divergences, every mode covered
    t = study.exact_metrics(np.log(p), np.log(p))
    assert abs(t["forward_kl"]) < 1e-12
    assert abs(t["reverse_kl"]) < 1e-12
    assert t["mode_coverage"] == 1.0


def test_metrics_with_exact_teacher_zeros():
    lp = np.array([[math.log(0.5), math.log(0.5), -math.inf, -math.inf]])
    logits = np.log(np.array([[0.4, 0.4, 0.1, 0.1]]))
    m = study.exact_metrics(lp, logits, top_k=2)
    assert m["forward_kl"] == pytest.approx(math.log(0.5 / 0.4))
    assert m["reverse_kl"] == math.inf
    assert m["mass_off_support"] == pytest.approx(0.2)
    assert m["topk_teacher_mass"] == pytest.approx(1.0)


def test_metrics_reject_bad_input():
    lp = np.log(np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="shape"):
        study.exact_metrics(lp, np.zeros((2, 5)), top_k=2)
    with pytest.raises(ValueError, match="top_k"):
        study.exact_metrics(lp, np.zeros((2, 4)), top_k=5)
    with pytest.raises(ValueError, match="cover_mass"):
        study.exact_metrics(lp, np.zeros((2, 4)), top_k=2, cover_mass=0.0)


# --------------------------------------------------------------------------- methods


def test_preset_methods_map_to_their_terms():
    gkd = study.preset_method("gkd_jsd")
    assert gkd.terms == (("pr", 0.5), ("qr", 0.5))
    assert gkd.alpha == -1.0
    assert gkd.lam == 0.5
    taid = study.preset_method("taid")
    assert taid.detach_assistant
    assert taid.order == "rq"
    assert taid.lam_at(0.0) == pytest.approx(0.4)
    assert taid.lam_at(1.0) == pytest.approx(1.0)
    assert taid.lam_at(0.5) == pytest.approx(0.7)
    abkd = study.preset_method("abkd")
    assert dict(abkd.div_params) == {"alpha": 0.2, "beta": 0.7}


@pytest.mark.parametrize(
    ("name", "progress", "lam"),
    [("gkd_jsd", 0.0, None), ("distillm_srkl", 0.3, None), ("taid", 0.5, 0.7)],
)
def test_build_loss_matches_reference_presets(name, progress, lam):
    """The torch training loss of a preset equals the float64 reference preset's mean."""
    import amid_ref
    from amid_ref import presets

    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 40)) * 2.0
    t = rng.normal(size=(5, 40)) * 3.0
    method = study.preset_method(name)
    got = study.build_loss(method)(
        torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), progress
    )
    preset = presets.get(name) if lam is None else presets.get(name, lam=lam)
    want = np.mean(preset.loss(s, t))
    if lam is not None:  # independent spelling of TAID at t = 0.7
        want_direct = np.mean(amid_ref.amid_loss(s, t, 1.0, 0.7, "kl", "rq"))
        assert_within(want, want_direct, tolerance("reference", "loss"), what="taid reference")
    assert_within(float(got), want, tolerance("gpu", "loss", "float64"), what=f"{name} loss")


def test_method_rejects_bad_values():
    with pytest.raises(ValueError, match="lam"):
        study.amid_method(0.0, 1.5)
    with pytest.raises(ValueError, match="order"):
        study.amid_method(0.0, 0.5, order="pq")
    with pytest.raises(ValueError, match="optimizer"):
        study.TrainConfig(optimizer="lbfgs")


# --------------------------------------------------------------------------- training

_TINY_TEACHER = study.TeacherConfig(vocab_size=128, n_train=64, n_test=32, n_components=2)
_TINY_TRAIN = study.TrainConfig(steps=6, batch_size=8, eval_every=3, student_rank=4)


def test_train_counts_and_skips_nonfinite_steps():
    teacher = study.make_teacher(_TINY_TEACHER, 0)
    calls = {"n": 0}

    class FlakyLoss(torch.nn.Module):
        """Forward KL, but +inf on every other call and a ValueError on the third."""

        def __init__(self, alpha, lam, **kwargs):
            super().__init__()
            self.alpha, self.lam = alpha, lam

        def forward(self, s, t):
            calls["n"] += 1
            if calls["n"] == 3:
                raise ValueError("the loss is +inf on row(s) [(0,)]")
            lq = torch.log_softmax(s, -1)
            loss = (t.exp() * (t - lq)).sum(-1).mean()
            return loss * math.inf if calls["n"] % 2 == 0 else loss

    result = study.train_student(
        teacher, study.amid_method(1.0, 0.0), _TINY_TRAIN, seed=0, loss_class=FlakyLoss
    )
    assert calls["n"] == 6
    assert result.stability["nonfinite_loss_steps"] == 4  # calls 2, 3, 4, 6
    assert result.stability["skipped_steps"] == 4
    assert "+inf" in result.loss_error
    assert [c["step"] for c in result.curve] == [0, 3, 6]


def test_truncated_teacher_reverse_kl_is_refused_not_nan():
    """RKL against exact teacher zeros: every step is skipped, the student is untouched."""
    teacher = study.make_teacher(_TINY_TEACHER.variant(top_k=5), 0)
    rkl = study.train_student(teacher, study.amid_method(1.0, 0.0, "kl", "rp"), _TINY_TRAIN, 0)
    assert rkl.stability["skipped_steps"] == _TINY_TRAIN.steps
    assert rkl.final["forward_kl"] == rkl.initial["forward_kl"]
    # the α-mixture assistant (α < 1 keeps supp r ⊇ supp p ∪ supp q) trains normally
    amid = study.train_student(teacher, study.amid_method(-5.0, 0.1, "kl", "pr"), _TINY_TRAIN, 0)
    assert amid.stability["skipped_steps"] == 0
    assert math.isfinite(amid.final["forward_kl"])


def _tiny_config(**changes):
    cfg = study.quick_config(
        teacher=_TINY_TEACHER.variant(vocab_size=256),
        train=replace(_TINY_TRAIN, steps=20, eval_every=10),
        experiments=("alpha",),
        alphas=(-5.0, 1.0),
        sweep_pairs=(("kl", "pr"),),
    )
    return replace(cfg, **changes)


def test_subrun_is_deterministic_and_seed_dependent(tmp_path):
    outs = []
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = _tiny_config(seeds=(seed,))
        study.run_study(cfg, tmp_path / name, progress=None, plots=False)
        outs.append(tmp_path / name)
    for fname in ("runs.csv", "curves.csv", "results.json", "summary.md"):
        assert (outs[0] / fname).read_bytes() == (outs[1] / fname).read_bytes(), fname
    assert (outs[0] / "runs.csv").read_bytes() != (outs[2] / "runs.csv").read_bytes()
    # torch state is restored after the study
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before


@pytest.mark.slow
def test_worker_processes_give_identical_results(tmp_path):
    """jobs=2 (spawned workers, one thread each) reproduces jobs=1 bit for bit."""
    cfg = _tiny_config()
    study.run_study(cfg, tmp_path / "one", progress=None, plots=False)
    study.run_study(replace(cfg, jobs=2), tmp_path / "two", progress=None, plots=False)
    assert (tmp_path / "one" / "runs.csv").read_bytes() == (
        tmp_path / "two" / "runs.csv"
    ).read_bytes()


def test_study_config_validation():
    with pytest.raises(ValueError, match="experiments"):
        study.quick_config(experiments=("alpha", "nonsense"))
    with pytest.raises(ValueError, match="stability_teachers"):
        study.quick_config(stability_teachers=("frozen",))
    with pytest.raises(ValueError, match="lams"):
        study.quick_config(lams=(1.5,))
    assert study.auto_lam("pr") == 0.1
    assert study.auto_lam("rq") == 0.9


def test_build_runs_expands_the_grid():
    cfg = study.quick_config(lams=(0.1, 0.5), seeds=(0, 1))
    runs = study.build_runs(cfg)
    alpha = [r for r in runs if r.experiment == "alpha"]
    # 2 (div, order) pairs × 2 λ × 3 α × 2 seeds
    assert len(alpha) == 2 * 2 * 3 * 2
    assert {r.method.lam for r in alpha} == {0.1, 0.5}
    assert len({r.run_id for r in runs}) == len(runs)


# --------------------------------------------------------------------------- quick study


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    rc = main(["study", "--quick", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_quick_study_writes_every_output(quick_out):
    for name in ("runs.csv", "curves.csv", "results.json", "summary.md", "timings.json"):
        assert (quick_out / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (quick_out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = _read_csv(quick_out / "runs.csv")
    assert len(rows) == len(study.build_runs(study.quick_config()))
    payload = json.loads((quick_out / "results.json").read_text(encoding="utf-8"))
    assert {"config", "runs", "answers"} <= set(payload)
    for key in ("q1", "q2", "q3", "q4"):
        assert payload["answers"][key], key
    summary = (quick_out / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Q1.", "## Q2.", "## Q3.", "## Q4."):
        assert heading in summary


def test_quick_study_metrics_are_sane(quick_out):
    rows = _read_csv(quick_out / "runs.csv")
    vocab = study.quick_config().teacher.vocab_size
    for row in rows:
        fkl = float(row["forward_kl"])
        assert 0.0 <= fkl < 100.0, row["run_id"]
        assert 0.0 <= float(row["topk_teacher_mass"]) <= 1.0 + 1e-12
        assert 0.0 <= float(row["student_entropy"]) <= math.log(vocab) + 1e-9
        assert float(row["modes_covered"]) <= float(row["teacher_modes"]) + 1e-12
        assert float(row["grad_norm_max"]) >= float(row["grad_norm_median"]) > 0.0
    # the plain forward-KL student gets closer to the teacher than the untrained one
    kd = [r for r in rows if r["method"] == "kd"]
    assert kd
    for row in kd:
        assert float(row["forward_kl"]) < float(row["initial_forward_kl"]) - 0.5
    # and a reverse-KL-type student is more concentrated than the forward-KL one
    by_label = {r["method"]: r for r in rows if r["experiment"] == "alpha"}
    fwd = by_label["amid[kl,pr,α=1,λ=0.1]"]
    rev = by_label["amid[kl,rp,α=1,λ=0.1]"]
    assert float(rev["student_entropy"]) < float(fwd["student_entropy"])
    curves = _read_csv(quick_out / "curves.csv")
    steps = study.quick_config().train.steps
    assert {int(c["step"]) for c in curves} >= {0, steps}


def test_replot_reproduces_the_summary_from_results_json(quick_out, tmp_path):
    """--replot reloads results.json (config, methods, runs) and re-renders the same summary."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(quick_out, copy, ignore=shutil.ignore_patterns("figures"))
    loaded = study.load_study(copy)
    assert loaded.config == study.quick_config()
    assert [s.run_id for s, _ in loaded.runs] == [
        s.run_id for s in study.build_runs(study.quick_config())
    ]
    assert main(["study", "--replot", str(copy), "--quiet"]) == 0
    assert (copy / "summary.md").read_bytes() == (quick_out / "summary.md").read_bytes()
    for name in FIGURES:
        assert (copy / "figures" / name).is_file(), name


def test_cli_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["study", "--quick", "--alphas", "a,b", "--out", str(tmp_path)])
    assert main(["study", "--quick", "--experiments", "bogus", "--out", str(tmp_path)]) == 2
    assert "experiments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lo", "hi", "at_least"), [(2.8, 8.5, 5), (2.8, 60.0, 5), (0.01, 100.0, 4)]
)
def test_log_axes_label_enough_ticks(lo, hi, at_least):
    """A log axis over less than a decade still gets a label every integer (3, 4, …, 8)."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from amid_ref.study._plots import _log_y

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [lo, hi])
    _log_y(ax)
    fig.canvas.draw()
    y0, y1 = ax.get_ylim()
    shown = [
        t.get_text()
        for t, v in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)
        if y0 <= v <= y1 and t.get_text()
    ]
    assert len(shown) >= at_least, shown
    assert len(shown) <= 12, shown


def test_summary_verdict_and_messages_in_full(quick_out):
    summary = (quick_out / "summary.md").read_text(encoding="utf-8")
    verdict = next(line for line in summary.splitlines() if line.startswith("Verdict:"))
    assert verdict.startswith(("Verdict: yes. ", "Verdict: no. "))
    assert "…" not in summary
