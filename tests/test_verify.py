"""Tests of ``amid-ref verify`` and of the studies it runs (:mod:`amid_ref.analysis`).

The studies are checked for what they claim (orders of convergence, minimizers), and the
sweep machinery is checked by mutation: a deliberately broken implementation swapped in
for the real one must be reported as a failure, with its worst case.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import amid_ref
from amid_ref import analysis, verify
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref.cli import main
from amid_ref.tolerances import Tolerance

# --- output folder -----------------------------------------------------------------------


def test_default_out_dir_is_fresh_and_suffixed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    now = 1_800_000_000.0
    first = verify.resolve_out_dir(None, False, now=now)
    assert re.fullmatch(r"amid-verify-\d{8}-\d{6}", first.name)
    assert first.is_dir()  # created, so that a read-only directory is reported at once
    second = verify.resolve_out_dir(None, False, now=now)
    assert second.name == f"{first.name}-2" and second.is_dir()
    assert verify.resolve_out_dir(None, False, now=now).name == f"{first.name}-3"


def test_nonempty_out_is_refused_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"not empty.*--force"):
        verify.resolve_out_dir(str(out), False)
    assert verify.resolve_out_dir(str(out), True) == out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verify.resolve_out_dir(str(empty), False) == empty
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        verify.resolve_out_dir(str(afile), True)


def test_cli_refuses_nonempty_out_and_leaves_it_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("old report")
    assert main(["verify", "--quick", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "old report"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


# --- the report --------------------------------------------------------------------------


def test_report_renders_markdown_and_escaped_html(tmp_path):
    from matplotlib.figure import Figure

    from amid_ref.plotting import figure_to_png

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    png = tmp_path / "f.png"
    png.write_bytes(figure_to_png(fig))
    report = verify.Document("t <script>")
    report.h(1, "Section")
    report.p("a `code` and **bold** <b>x</b> PASS")
    report.table(["a|b", "c"], [[1, "FAIL"]])
    report.figure(png, "caption")
    md, page = report.to_markdown(), report.to_html()
    assert "| a\\|b | c |" in md and "![caption](f.png)" in md
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<code>code</code>" in page
    assert '<td class="FAIL">' in page
    assert "data:image/png;base64,iVBOR" in page


def _html_is_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page), "external resource"
    assert "data:image/png;base64," in page


def test_verify_steps_write_reports_and_figures(tmp_path):
    lines: list[str] = []
    ok, steps = verify.run_verify(tmp_path, quick=True, log=lines.append, steps=("limits",))
    assert ok and [s.name for s in steps] == ["limits"]
    assert (tmp_path / "report.md").stat().st_size > 1000
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    _html_is_self_contained(page)
    assert "α → 1 from below" in page  # mathematics readable as text, no LaTeX
    assert (tmp_path / "convergence.png").stat().st_size > 10_000
    # progress: a start line and an end line with the timing, per step
    assert any(line.startswith("[1/1] Limit convergence ...") for line in lines)
    assert any(re.search(r"Limit convergence: PASS in \d+\.\d s", line) for line in lines)


def test_a_failing_step_is_reported_with_its_worst_case(tmp_path, monkeypatch):
    real = analysis.limit_convergence

    def broken(*args, **kwargs):
        series = real(*args, **kwargs)
        bad = series[0]
        return [
            analysis.ConvergenceSeries(
                **{**bad.__dict__, "order": 0.5, "passed": False, "note": "order 0.500 (boom)"}
            ),
            *series[1:],
        ]

    monkeypatch.setattr(analysis, "limit_convergence", broken)
    ok, steps = verify.run_verify(tmp_path, quick=True, log=lambda m: None, steps=("limits",))
    assert not ok and not steps[0].passed
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## What failed" in md
    assert "Overall: FAIL" in md
    assert "order 0.500 (boom)" in md.split("## Summary")[0]


def test_a_crashing_step_fails_verify_and_run_returns_1(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(analysis, "optimality_check", crash)
    monkeypatch.setattr(
        verify,
        "run_verify",
        lambda out, quick, parallel, _real=verify.run_verify: _real(
            out, quick=quick, log=lambda m: None, steps=("optimality",), parallel=parallel
        ),
    )
    out = tmp_path / "v"
    assert main(["verify", "--out", str(out), "--quick"]) == 1
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "RuntimeError: simulated crash" in md
    assert "Traceback" in md


# --- limit convergence -------------------------------------------------------------------


@pytest.fixture(scope="module")
def convergence():
    return analysis.limit_convergence()


def test_first_order_convergence_at_plus_minus_one(convergence):
    finite = [s for s in convergence if math.isfinite(s.limit_alpha)]
    assert len(finite) == 8  # 2 limits × 2 sides × 2 λ
    for s in finite:
        assert s.passed, s.note
        assert abs(s.order - 1.0) < 0.02, s.label
        # the error itself is tiny at the smallest distance: no float64 plateau
        assert s.errors[0] < 1e-9, s.label


def test_infinite_limits_order_one_or_exponential(convergence):
    inf = [s for s in convergence if not math.isfinite(s.limit_alpha)]
    for s in inf:
        assert s.passed, s.note
        if s.lam == 0.5:
            assert s.expected_order is None
            assert abs(s.decay_rate - s.expected_decay_rate) < 0.1 * s.expected_decay_rate
            assert s.errors[np.argmin(s.distances)] < 1e-12
        else:
            assert abs(s.order - 1.0) < 0.05, s.label


def test_limit_convergence_rejects_bad_input():
    with pytest.raises(ValueError, match="lams"):
        analysis.limit_convergence(lams=(0.0,))
    with pytest.raises(ValueError, match="finite logits"):
        analysis.limit_convergence(np.array([0.0, -np.inf, 1.0]), np.zeros(3))


# --- optimality --------------------------------------------------------------------------


def _tv(a, b):
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


@pytest.mark.parametrize(
    ("divergence", "order", "alpha", "params"),
    [
        ("kl", "pr", -3.0, {}),
        ("ab", "rp", 0.0, {"alpha": 0.2, "beta": 0.7}),
        ("js", "qr", -1.0, {"beta": 0.5}),
    ],
)
def test_minimizer_is_the_teacher(divergence, order, alpha, params):
    rng = np.random.default_rng(3)
    teacher, start = rng.standard_normal(5), rng.standard_normal(5)
    res = analysis.minimize_student(teacher, start, alpha, 0.4, divergence, order, params)
    p = np.exp(teacher - np.logaddexp.reduce(teacher))
    q = np.exp(res.x - np.logaddexp.reduce(res.x))
    assert _tv(q, p) < 1e-6
    assert _tv(np.exp(start - np.logaddexp.reduce(start)), p) > 0.1


def test_boundary_infimum_for_alpha_at_least_one_in_order_rq():
    """The finding the report describes: for α ≥ 1 and order rq, a student collapsing onto a
    subset S of the tokens drives the loss to 0 although it is far from p."""
    teacher = np.array([1.0, 0.5, -0.2, 0.3])
    # the student equals p on S = {0, 1}, with logit −k elsewhere
    students = [teacher - np.array([0.0, 0.0, k, k]) for k in (5.0, 10.0, 20.0)]
    loss = [float(amid_ref.amid_loss(s, teacher, 3.0, 0.3, "kl", "rq")) for s in students]
    assert loss[0] > loss[1] > loss[2] and loss[2] < 1e-6
    # the same collapse is penalized for α < 1 (union support) and for order pr
    assert float(amid_ref.amid_loss(students[2], teacher, 0.0, 0.3, "kl", "rq")) > 1e-3
    assert float(amid_ref.amid_loss(students[2], teacher, 3.0, 0.3, "kl", "pr")) > 1e-3
    p = np.exp(teacher - np.logaddexp.reduce(teacher))
    # ... and p is still a strict local minimizer:
    res = analysis.minimize_student(teacher, teacher + 0.2, 3.0, 0.3, "kl", "rq")
    assert _tv(np.exp(res.x - np.logaddexp.reduce(res.x)), p) < 1e-6


@pytest.mark.slow
def test_optimality_check_quick_passes():
    cases = analysis.optimality_check(quick=True)
    assert len(cases) == 36
    assert all(c.passed for c in cases), [c.label for c in cases if not c.passed]
    assert {c.order for c in cases if c.outcome == "boundary"} <= {"qr", "rq"}
    assert all(c.alpha >= 1 for c in cases if c.outcome == "boundary")
    assert all(c.outcome == "teacher" for c in cases if c.order in ("pr", "rp"))


def test_loss_along_line_is_zero_only_at_the_teacher():
    t = analysis.EXAMPLE_TEACHER_LOGITS
    d = analysis.EXAMPLE_STUDENT_LOGITS - t
    ts = np.linspace(-1, 1, 21)
    loss = analysis.loss_along_line(t, d, ts, -3.0, 0.1, "kl", "pr")
    assert loss.shape == (21,)
    assert abs(loss[10]) < 1e-15
    assert (np.delete(loss, 10) > 1e-6).all()


# --- mode covering -----------------------------------------------------------------------


def test_bimodal_teacher_is_normalized_and_bimodal():
    lp = analysis.bimodal_teacher_logits(analysis.MODE_GRID)
    p = np.exp(lp)
    assert abs(p.sum() - 1.0) < 1e-12
    assert np.argmax(p[:28]) == 14 and 28 + np.argmax(p[28:]) == 42


def test_mode_covering_extremes():
    seeking, covering = analysis.mode_covering_study(alphas=(-5.0, 5.0), lam=0.1)
    # α = −5 settles on the major mode, α = 5 spreads over both
    assert seeking.covered == (True, False)
    assert covering.covered == (True, True)
    assert covering.std > 3 * seeking.std
    assert covering.forward_kl < seeking.forward_kl


# --- the validation sweep ----------------------------------------------------------------


def test_error_ratio_flags_infinity_and_nan_mismatches():
    tol = Tolerance(rtol=1e-10, atol=0.0, reason="test")
    assert analysis._error_ratio(np.array([1.0]), np.array([1.0 + 1e-11]), tol)[0] < 0.2
    assert analysis._error_ratio(np.array([1.0]), np.array([1.0 + 1e-9]), tol)[0] > 5
    assert analysis._error_ratio(np.array([np.inf]), np.array([np.inf]), tol)[0] == 0
    assert analysis._error_ratio(np.array([1.0]), np.array([np.inf]), tol)[0] == np.inf
    assert analysis._error_ratio(np.array([1.0]), np.array([np.nan]), tol)[0] == np.inf


_TINY_PLAN = analysis.SweepPlan(
    cases=("random", "masked"),
    alphas=(-3.0, 1.0 - 1e-9, 1.0, 1.0 + 1e-9, 3.0),
    lams=(0.0, 0.3, 1.0),
    loss_cases=("random",),
    loss_alphas=(-3.0, 1.0),
    loss_lams=(0.3,),
    loss_divergences=(("kl", {}),),
    temperatures=(1.0,),
    grad_cases=("random",),
    grad_alphas=(-3.0,),
    grad_lams=(0.3,),
    grad_divergences=(("kl", {}),),
)


def test_sweep_passes_on_the_reference_mixture():
    (summary,) = analysis.validation_sweep(plan=_TINY_PLAN, quantities=("log_mixture",))
    assert summary.n_checks == 2 * 5 * 3
    assert summary.passed, summary.failures
    assert 0 <= summary.worst_ratio < 1


def test_sweep_catches_a_naive_mixture_near_alpha_one(monkeypatch):
    """Mutation test: the textbook log-domain formula (1/β)·logaddexp(...) loses accuracy
    as α → 1; the sweep must report it, with the worst case near α = 1."""
    from scipy.special import logsumexp

    real = amid_ref.log_alpha_mixture

    def naive(log_p, log_q, alpha, lam, axis=-1):
        beta = (1.0 - alpha) / 2.0
        if not math.isfinite(alpha) or beta == 0.0 or lam in (0.0, 1.0):
            return real(log_p, log_q, alpha, lam, axis)
        lm = naive_log_alpha_mean(log_p, log_q, alpha, lam)
        return lm - logsumexp(lm, axis=axis, keepdims=True)

    monkeypatch.setattr(amid_ref, "log_alpha_mixture", naive)
    (summary,) = analysis.validation_sweep(plan=_TINY_PLAN, quantities=("log_mixture",))
    assert not summary.passed
    assert summary.n_failed >= 2
    assert summary.worst_ratio > 10
    assert "α=+1-1e-09" in summary.worst_case or "α=+1+1e-09" in summary.worst_case


def test_sweep_counts_agreed_undefined_and_rejects_unknown_quantities():
    plan = analysis.SweepPlan(**{**_TINY_PLAN.__dict__, "cases": ("one-hot",), "alphas": (3.0,)})
    (summary,) = analysis.validation_sweep(plan=plan, quantities=("mixture",))
    assert summary.passed and summary.n_checks == 3
    with pytest.raises(ValueError, match="unknown sweep quantities"):
        analysis.validation_sweep(plan=_TINY_PLAN, quantities=("nope",))


def test_sweep_cases_cover_the_extremes():
    cases = {c.name: c for c in analysis.sweep_cases()}
    assert {"masked", "one-hot", "wide-span", "equal"} <= set(cases)
    assert np.isneginf(cases["masked"].teacher_logits).any()
    span = cases["wide-span"].teacher_logits
    assert span.max() - span.min() >= 1e4
    alphas = analysis.SWEEP_ALPHAS_FULL
    assert math.inf in alphas and -math.inf in alphas
    for centre in (1.0, -1.0):
        assert any(0 < a - centre < 1e-6 for a in alphas)
        assert any(0 < centre - a < 1e-6 for a in alphas)


# --- the claims step and the wiring of all steps ----------------------------------------


class _FakeResult:
    def __init__(self, claim_id, status, detail=""):
        self.id, self.status, self.detail = claim_id, status, detail
        self.statement, self.source, self.seconds = f"statement of {claim_id}", "MATH.md", 0.01


def _fake_proofs_check(statuses, calls):
    import types

    def run_claims(pattern=None, progress=None):
        results = [
            _FakeResult(i, s, "counterexample x=2" if s == "failed" else "") for i, s in statuses
        ]
        for r in results:
            if progress is not None:
                progress(r)
        calls.append(progress is not None)
        return results

    module = types.ModuleType("proofs_check")
    module.run_claims = run_claims
    return module


def test_claims_step_reports_failed_claims_with_progress(tmp_path, monkeypatch):
    import sys

    calls: list[bool] = []
    fake = _fake_proofs_check(
        [("mean.idempotent", "proved"), ("theorem_3_4.optimality", "failed"),
         ("mean.symmetry", "proved-for-cases")],
        calls,
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "proofs_check", fake)
    lines: list[str] = []
    ok, (step,) = verify.run_verify(tmp_path, log=lines.append, steps=("claims",))
    assert calls == [True], "the progress callback was not passed"
    assert any("claim theorem_3_4.optimality: failed" in line for line in lines)
    assert not ok and not step.passed
    assert step.worst.startswith("claim theorem_3_4.optimality: failed: counterexample x=2")
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "counterexample x=2" in md.split("## Summary")[0]
    assert "mean.symmetry" in md and "proved-for-cases" in md


def _no_claims(t0):  # module level: the parallel worker is pickled by reference
    return []


def _one_claim(t0):
    return [verify._Claim("mean.idempotent", "m(a,a)=a", "MATH.md", "proved", 0.5, "")]


def test_verify_runs_every_step_by_default(tmp_path, monkeypatch):
    seen = []

    def fake_step(name):
        def body(step, *args):
            seen.append(name)
            step.passed, step.summary = True, f"{name} ok"

        return body

    for name in ("claims", "sweep", "limits", "optimality", "figures"):
        monkeypatch.setattr(verify, f"_step_{name}", fake_step(name))
    # `amid-ref verify` runs the claims in a forked process: give it nothing to do
    monkeypatch.setattr(verify, "_claims_worker", _no_claims)
    out = tmp_path / "v"
    assert main(["verify", "--quick", "--out", str(out)]) == 0
    assert sorted(seen) == sorted(["claims", "sweep", "limits", "optimality", "figures"])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Overall: PASS" in md and "What failed" not in md
    assert main(["verify", "--quick", "--out", str(out)]) == 2  # now non-empty
    assert main(["verify", "--quick", "--out", str(out), "--force"]) == 0


def test_parallel_claims_are_reported_first(tmp_path, monkeypatch):
    """Parallel mode collects the claims last but reports them first, with their results."""
    monkeypatch.setattr(verify, "_claims_worker", _one_claim)
    ok, steps = verify.run_verify(
        tmp_path, quick=True, log=lambda m: None, steps=("claims", "limits"), parallel=True
    )
    assert ok and [s.name for s in steps] == ["claims", "limits"]
    assert steps[0].seconds == 0.5 and "1 claims: 1 proved" in steps[0].summary
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.index("## Symbolic claims") < md.index("## Limit convergence")


def test_claim_statements_read_without_mathjax():
    text = verify.latex_to_text(
        r"\lim_{\alpha\to 1} m_\alpha(a,b;\lambda) = a^\lambda b^{1-\lambda}"
        r" \quad\text{(geometric)},\ D(p\|r) = \tfrac12\sum_x \frac{(a-b)^2}{b}"
    )
    assert text == "lim_(α→ 1) m_α(a,b;λ) = a^λ b^(1-λ) (geometric), D(p‖r) = ½Σ_x ((a-b)^2)/b"
    assert "\\" not in verify.latex_to_text(r"\mathbb{R} \ne \operatorname{supp} p \cup q")


def test_documented_refusals_are_skipped_with_their_reason_not_passed():
    plan = analysis.SweepPlan(
        **{
            **_TINY_PLAN.__dict__,
            "loss_cases": ("masked",),
            "loss_alphas": (1.0 - 1e-10,),
            "loss_lams": (0.1,),
            "loss_divergences": (analysis.SWEEP_DIVERGENCES[-1],),  # f with a user generator
        }
    )
    (summary,) = analysis.validation_sweep(plan=plan, quantities=("loss",))
    assert summary.n_skipped >= 1 and summary.n_failed == 0
    assert summary.n_checks + summary.n_skipped == 4
    assert any("float64 range" in r for r in summary.skip_reasons)
