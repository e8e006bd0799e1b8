"""The numerical steps of ``amid-ref verify``: the validation sweep, the limit convergence,
the optimality check and the figures.

Each step fills a :class:`StepResult` (verdict, one-line summary, failures, worst case and
the blocks of its section of the report, a :class:`amid_ref._cli._document.Document`);
:mod:`amid_ref.verify` runs them (with the symbolic claims) and renders the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from amid_ref import analysis, plotting
from amid_ref._cli._document import status_word
from amid_ref._cli._util import Progress, Task

__all__ = ["StepResult"]

_status = status_word


@dataclass
class StepResult:
    """Outcome of one step of ``verify``.

    Attributes
    ----------
    name : str
        Short name (``claims``, ``sweep``, ``limits``, ``optimality``, ``figures``).
    title : str
        Heading in the report.
    passed : bool
        Whether every check of the step passed.
    seconds : float
        Wall time.
    summary : str
        One line for the summary table and the progress output.
    failures : list of str
        What failed (empty when passed).
    worst : str
        The worst case of the step (also when it passed).
    blocks : list
        Report blocks of the step's section.
    """

    name: str
    title: str
    passed: bool = False
    seconds: float = 0.0
    summary: str = ""
    failures: list[str] = field(default_factory=list)
    worst: str = ""
    blocks: list = field(default_factory=list)


def _g(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


def _step_sweep(step: StepResult, quick: bool, ui: Progress, task: Task | None = None) -> None:
    def on_item(quantity: str, done: int, total: int) -> None:
        if task is not None:
            task.update(done=done, total=total, note=f"sweep {quantity}")

    summaries = analysis.validation_sweep(
        quick=quick, progress=lambda m: ui.log(f"    {m}"), on_item=on_item
    )
    step.passed = all(s.passed for s in summaries)
    total = sum(s.n_checks for s in summaries)
    failed = sum(s.n_failed for s in summaries)
    oracle = sum(s.n_oracle_errors for s in summaries)
    step.summary = f"{total} comparisons, {failed} failed, {oracle} oracle errors"
    worst = max(summaries, key=lambda s: s.worst_ratio)
    step.worst = f"{worst.quantity}: error {_g(worst.worst_ratio)} × bound at {worst.worst_case}"
    for s in summaries:
        step.failures += [f"{s.quantity}: {f}" for f in s.failures]
    plan = analysis.SWEEP_PLANS["quick" if quick else "full"]
    step.blocks.append(
        (
            "p",
            "Every value of `amid_ref` (float64) is compared with the mpmath oracle "
            "`amid_ref.precise` (50 digits) with the bound |got − want| ≤ atol + rtol·scale "
            "of `amid_ref.tolerances` (scale = max(1, |want|) for the log-domain mixture). "
            "The error column is the worst error/bound ratio: below 1 passes. Infinities "
            "must agree exactly; a combination both sides reject as undefined (Z = 0) "
            "counts as agreement. Skipped combinations are documented limitations, listed "
            "below the table with their reason.",
        )
    )
    alphas = ", ".join(analysis._fmt_alpha(a) for a in plan.alphas)
    lams = ", ".join(analysis._fmt_lam(lam) for lam in plan.lams)
    step.blocks.append(
        (
            "list",
            [
                f"cases: {', '.join(plan.cases)} (see `amid_ref.analysis.sweep_cases`)",
                f"α grid (mixtures): {alphas}",
                f"λ grid (mixtures): {lams}",
                f"loss: {len(plan.loss_divergences)} divergence settings × 4 orders × α in "
                f"{{{', '.join(analysis._fmt_alpha(a) for a in plan.loss_alphas)}}} × λ in "
                f"{{{', '.join(analysis._fmt_lam(x) for x in plan.loss_lams)}}}",
                f"gradient: {len(plan.grad_divergences)} divergence settings × 4 orders × α "
                f"in {{{', '.join(analysis._fmt_alpha(a) for a in plan.grad_alphas)}}}, "
                "against the oracle's numerical derivative of its loss",
            ],
        )
    )
    rows = [
        [
            s.quantity,
            _status(s.passed),
            s.n_checks,
            s.n_failed,
            s.n_oracle_errors,
            s.n_undefined,
            s.n_skipped,
            f"rtol={s.tolerance.rtol:g}, atol={s.tolerance.atol:g}",
            _g(s.worst_ratio),
            s.worst_case,
            f"{s.seconds:.1f}",
        ]
        for s in summaries
    ]
    step.blocks.append(
        (
            "table",
            ["quantity", "status", "checks", "failed", "oracle errors", "undefined (agreed)",
             "skipped", "tolerance", "worst error/bound", "worst case", "seconds"],
            rows,
        )
    )  # fmt: skip
    reasons = sorted({r for s in summaries for r in s.skip_reasons})
    if reasons:
        step.blocks.append(("p", "Skipped (documented limitations):"))
        step.blocks.append(("list", reasons))
    for s in summaries:
        if s.failures:
            step.blocks.append(
                ("details", f"{s.quantity}: first {len(s.failures)} failures", [
                    ("pre", "\n".join(s.failures))
                ])
            )  # fmt: skip


def _step_limits(step: StepResult, quick: bool, ui: Progress, out_dir: Path, task=None):
    series = analysis.limit_convergence(n_points=13 if quick else 19)
    step.passed = all(s.passed for s in series)
    bad = [s for s in series if not s.passed]
    step.failures = [f"{s.label}: {s.note}" for s in bad]
    finite = [s for s in series if math.isfinite(s.limit_alpha)]
    worst_dev = max(finite, key=lambda s: abs(s.order - 1.0) if math.isfinite(s.order) else 9)
    step.summary = (
        f"{len(series)} series; order at α = ±1 in "
        f"[{min(s.order for s in finite):.3f}, {max(s.order for s in finite):.3f}]"
    )
    step.worst = step.failures[0] if bad else f"{worst_dev.label}: order {worst_dev.order:.4f}"
    rows = [
        [
            s.label,
            s.distance_label,
            _g(float(s.distances.min())) + " … " + _g(float(s.distances.max())),
            _g(float(s.errors.max())),
            f"{s.order:.3f}" if math.isfinite(s.order) else "–",
            "1" if s.expected_order else "exponential",
            _status(s.passed),
            s.note,
        ]
        for s in series
    ]
    step.blocks.append(
        (
            "p",
            "Error max_x |log r^(α,λ)(x) − log r^(α*,λ)(x)| of `amid_ref.log_alpha_mixture` "
            "against its value at the limit α*, as a function of the distance; the order is "
            "the least-squares slope on a log-log scale over the points above the float64 "
            "floor (1e3·eps). Expected: order 1 at α = ±1 (the mixture is analytic in α). "
            "Near ±∞ we observe order 1 in 1/|α| for λ ≠ ½ (the factor λ^(1/β) of the "
            "larger argument differs between tokens) and exponential convergence for "
            "λ = ½, where that factor is common to all tokens and cancels in the "
            "normalization; the remaining error is ≈ C·exp(−κ|β|)/|β| with "
            "κ = min_x |log p(x) − log q(x)|, β = (1 − α)/2.",
        )
    )
    step.blocks.append(
        (
            "table",
            ["series", "distance", "range", "max error", "order", "expected", "status", "note"],
            rows,
        )
    )
    path = plotting.render("convergence", out_dir, series=series)
    step.blocks.append(("figure", path, "Limit convergence of r^(α,λ) (log-log)."))


def _step_optimality(step: StepResult, quick: bool, ui: Progress, task=None) -> None:
    n_div = 3 if quick else len(analysis.OPTIMALITY_DIVERGENCES)
    if task is not None:
        task.update(total=n_div, note="divergences")

    def progress(message: str) -> None:
        ui.log(f"    {message}")
        if task is not None:
            task.update(advance=1)

    cases = analysis.optimality_check(quick=quick, progress=progress)
    step.passed = all(c.passed for c in cases)
    bad = [c for c in cases if not c.passed]
    boundary = [c for c in cases if c.outcome == "boundary"]
    at_teacher = [c for c in cases if c.outcome == "teacher"]
    worst = max(at_teacher, key=lambda c: c.distance, default=None)
    step.summary = (
        f"{len(cases)} minimizations: {len(at_teacher)} reached q = p, "
        f"{len(boundary)} boundary infima (restart near p converged), {len(bad)} failed"
    )
    step.failures = [
        f"{c.label}: outcome {c.outcome}, TV(q*, p) = {c.distance:.3g}, loss {c.loss:.3g}, "
        f"restart TV {_g(c.restart_distance)}"
        for c in bad
    ]
    step.worst = (
        step.failures[0]
        if bad
        else (f"{worst.label}: TV(q*, p) = {worst.distance:.3g}" if worst else "")
    )
    step.blocks.append(
        (
            "p",
            "Theorem 3.4: for λ ∈ (0, 1) and any divergence, r = p ⇔ q = p (and r = q ⇔ "
            "q = p), so the minimizer of D(p, r) or D(q, r) over the student is the "
            "teacher. Each AMiD loss is minimized over the student logits (V = 6) by "
            "L-BFGS-B with `amid_ref.amid_grad` as the jacobian, from a random start, and "
            "the minimizer q* is compared with p by total variation "
            "(pass: TV ≤ 1e-6; the loss is quadratic at its minimum, so ~1e-8 is the "
            "resolution).",
        )
    )
    if boundary:
        step.blocks.append(
            (
                "p",
                f"**Finding: boundary infima.** {len(boundary)} runs, all with α ≥ 1 and "
                "orders `qr`/`rq`, ended at a student concentrated on a subset S of the "
                "tokens and equal to p conditioned on S, with loss ≈ 0. For α ≥ 1 the "
                "mixture keeps only the intersection of the supports, so such a student "
                "makes r = q exactly in the limit: D(q‖r) and D(r‖q) tend to 0 at every "
                "face of the simplex, not only at q = p. This does not contradict Theorem "
                "3.4, which concerns strictly positive students (softmax outputs), but "
                "the loss does not separate p from the boundary, and a student that "
                "drifts towards a face sees a vanishing loss. Restarted near p, every "
                "such run converged to p (q = p remains a strict local minimizer). "
                "Orders `pr`/`rp` and all α < 1 always reached q = p.",
            )
        )
    groups: dict[tuple[str, str], list] = {}
    for c in cases:
        key = (analysis._div_label(c.divergence, c.div_params), c.order)
        groups.setdefault(key, []).append(c)
    rows = []
    for (div, order), group in groups.items():
        teach = [c for c in group if c.outcome == "teacher"]
        rows.append(
            [
                div,
                order,
                len(group),
                len(teach),
                sum(c.outcome == "boundary" for c in group),
                _g(max((c.distance for c in teach), default=float("nan"))),
                _g(max((c.restart_distance for c in group if c.outcome == "boundary"),
                       default=float("nan"))),
                _status(all(c.passed for c in group)),
            ]
        )  # fmt: skip
    step.blocks.append(
        (
            "table",
            ["divergence", "order", "runs", "reached p", "boundary", "worst TV(q*, p)",
             "worst restart TV", "status"],
            rows,
        )
    )  # fmt: skip
    detail = [
        [c.label, c.outcome, _g(c.start_distance), _g(c.distance), _g(c.loss), c.support,
         _g(c.restart_distance), c.n_iter, _status(c.passed)]
        for c in cases
    ]  # fmt: skip
    step.blocks.append(
        (
            "details",
            f"all {len(cases)} minimizations",
            [
                (
                    "table",
                    ["case", "outcome", "start TV", "TV(q*, p)", "loss", "|supp q*|",
                     "restart TV", "iterations", "status"],
                    detail,
                )
            ],
        )
    )  # fmt: skip


def _step_figures(step: StepResult, quick: bool, ui: Progress, out_dir: Path, task=None):
    captions = {
        "paths": "Interpolation paths λ ↦ r^(α,λ) on the 3-outcome simplex.",
        "bars": "r^(α,λ) over a 6-token vocabulary at λ = ½.",
        "normalizer": "Z_α as a function of λ.",
        "weight": "Gradient weight w(x) of Proposition 3.5 against log(p/q).",
        "landscape": "Loss along a line of student logits through q = p (Theorem 3.4).",
        "modes": "Unimodal student fitted to a bimodal teacher by AMiD for several α.",
    }
    alphas = (-5.0, -1.0, 0.0, 1.0, 5.0) if quick else (-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0)
    if task is not None:
        task.update(total=len(captions) + 1, note="mode-covering fits")
    fits = analysis.mode_covering_study(alphas, lam=0.1)
    if task is not None:
        task.update(advance=1)
    written = []
    for name, caption in captions.items():
        start = time.perf_counter()
        kwargs = {"fits": fits} if name == "modes" else {}
        path = plotting.render(name, out_dir, **kwargs)
        written.append(path)
        ui.log(f"    figure {path.name} ({time.perf_counter() - start:.1f} s)")
        if task is not None:
            task.update(advance=1, note=path.name)
        step.blocks.append(("figure", path, caption))
    step.passed = all(p.stat().st_size > 10_000 for p in written)
    step.summary = f"{len(written)} figures written (the convergence figure: limits step)"
    step.worst = ""
    rows = [
        [
            _g(f.alpha),
            f"{f.mean:.2f}",
            f"{f.std:.2f}",
            " / ".join(f"{m:.3f}" for m in f.mode_mass),
            " / ".join(f"{m:.3f}" for m in f.teacher_mode_mass),
            _g(f.forward_kl),
            _g(f.reverse_kl),
        ]
        for f in fits
    ]
    step.blocks.append(("h", 2, "Mode covering (informational)"))
    step.blocks.append(
        (
            "p",
            "A discretized Gaussian student (mean, log-std) fitted to a bimodal teacher "
            "(modes at 14 and 42, weights 0.65/0.35) by minimizing D_KL(p‖r^(α,0.1)) "
            "(`amid_ref.analysis.mode_covering_study`). The paper's claim: larger α is "
            "more mode-covering. See notebook 3 for the discussion.",
        )
    )
    step.blocks.append(
        (
            "table",
            ["α", "μ", "σ", "student mass (mode 1 / mode 2)", "teacher mass", "KL(p‖q)",
             "KL(q‖p)"],
            rows,
        )
    )  # fmt: skip
