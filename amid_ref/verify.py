"""Run every check of amid-ref and write a report with figures.

``amid-ref verify [--out DIR] [--quick] [--force]`` runs, in order:

1. every :mod:`proofs_check` claim (SymPy proofs of identities, limits and theorems);
2. the numerical validation sweep of :mod:`amid_ref` against the mpmath oracle
   :mod:`amid_ref.precise`, with the bounds of :mod:`amid_ref.tolerances`;
3. the limit-convergence study (α → ±1 and α → ±∞, with the observed order);
4. the optimality check of Theorem 3.4 by direct minimization over student logits;
5. the figures (and the mode-covering study they include);

and writes ``DIR/report.md``, ``DIR/report.html`` (self-contained: figures embedded as
base64 PNG, mathematics in Unicode, no script) and ``DIR/*.png``. Progress goes to stderr:
on a terminal a live display with one line per running step (count, elapsed time, ETA),
otherwise plain timestamped lines; each step ends with a line giving its result and timing.
The exit code is 0 when everything passed, 1 otherwise;
the report starts with what failed and its worst case.

``DIR`` defaults to a fresh ``amid-verify-YYYYmmdd-HHMMSS`` folder in the current directory
(with a ``-2``, ``-3``, … suffix if that exists). An existing non-empty ``--out`` is an error
unless ``--force`` is given (then the report files in it are overwritten); ``amid-ref
study`` follows the same rule.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib
import inspect
import math
import multiprocessing
import platform
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from amid_ref import analysis, plotting
from amid_ref._cli_util import Progress, Task, prepare_out_dir
from amid_ref._text import latex_to_text

__all__ = ["Report", "StepResult", "configure_parser", "resolve_out_dir", "run", "run_verify"]


# ----------------------------------------------------------------------------------------
# A tiny document model rendered to Markdown and to self-contained HTML
# ----------------------------------------------------------------------------------------


@dataclass
class Report:
    """A report as a list of blocks, rendered to Markdown (:meth:`to_markdown`) and to a
    self-contained HTML page (:meth:`to_html`).

    Blocks: ``("h", level, text)``, ``("p", text)``, ``("list", items)``,
    ``("table", headers, rows)``, ``("pre", text)``, ``("figure", path, caption)``,
    ``("details", summary, blocks)``. Inline text may use ``code`` and **bold**.
    """

    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("list", list(items)))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", list(headers), [[str(c) for c in r] for r in rows]))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", Path(path), caption))

    def details(self, summary: str, blocks: list) -> None:
        self.blocks.append(("details", summary, blocks))

    # -- Markdown ------------------------------------------------------------------------

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        self._md_blocks(self.blocks, lines)
        return "\n".join(lines).rstrip() + "\n"

    @staticmethod
    def _md_cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    def _md_blocks(self, blocks, lines: list[str]) -> None:
        for block in blocks:
            kind = block[0]
            if kind == "h":
                lines += [f"{'#' * (block[1] + 1)} {block[2]}", ""]
            elif kind == "p":
                lines += [block[1], ""]
            elif kind == "list":
                lines += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                headers, rows = block[1], block[2]
                lines.append("| " + " | ".join(self._md_cell(h) for h in headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                lines += ["| " + " | ".join(self._md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif kind == "pre":
                lines += ["```text", block[1].rstrip(), "```", ""]
            elif kind == "figure":
                lines += [f"![{block[2]}]({block[1].name})", "", f"*{block[2]}*", ""]
            elif kind == "details":
                lines += [f"**{block[1]}**", ""]
                self._md_blocks(block[2], lines)

    # -- HTML ----------------------------------------------------------------------------

    _CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.PASS, span.PASS { color: #0a6b2a; font-weight: 600; }
td.FAIL, span.FAIL { color: #b00020; font-weight: 700; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 0.9em; background: #f6f6f6; }
pre { padding: .6em; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-style: italic; color: #444; }
details { margin: .5em 0 1em; } summary { cursor: pointer; font-weight: 600; }
"""

    @staticmethod
    def _inline(text: str) -> str:
        out = html.escape(text, quote=False)
        out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
        out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
        return re.sub(r"\b(PASS|FAIL)\b", r'<span class="\1">\1</span>', out)

    def to_html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{self._CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        self._html_blocks(self.blocks, parts)
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def _html_blocks(self, blocks, parts: list[str]) -> None:
        for block in blocks:
            kind = block[0]
            if kind == "h":
                level = min(block[1] + 1, 6)
                parts.append(f"<h{level}>{self._inline(block[2])}</h{level}>")
            elif kind == "p":
                parts.append(f"<p>{self._inline(block[1])}</p>")
            elif kind == "list":
                parts.append(
                    "<ul>" + "".join(f"<li>{self._inline(i)}</li>" for i in block[1]) + "</ul>"
                )
            elif kind == "table":
                head = "".join(f"<th>{self._inline(str(h))}</th>" for h in block[1])
                body = []
                for row in block[2]:
                    cells = []
                    for c in map(str, row):
                        cls = f' class="{c}"' if c in ("PASS", "FAIL") else ""
                        cells.append(f"<td{cls}>{self._inline(c)}</td>")
                    body.append("<tr>" + "".join(cells) + "</tr>")
                parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
            elif kind == "pre":
                parts.append(f"<pre>{html.escape(block[1])}</pre>")
            elif kind == "figure":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(block[2])}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{self._inline(block[2])}</figcaption></figure>"
                )
            elif kind == "details":
                parts.append(f"<details><summary>{self._inline(block[1])}</summary>")
                self._html_blocks(block[2], parts)
                parts.append("</details>")


# ----------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------


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


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _g(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


@dataclass(frozen=True)
class _Claim:
    """A plain copy of a ``proofs_check.ClaimResult`` (picklable across processes)."""

    id: str
    statement: str
    source: str
    status: str
    seconds: float
    detail: str


def _claim_note(res) -> str:
    seconds = getattr(res, "seconds", float("nan"))
    return f"claim {res.id}: {res.status} ({seconds:.1f} s)"


def _run_claims(on_result: Callable[[object], None]) -> list[_Claim]:
    """Run every ``proofs_check`` claim, passing each result to ``on_result`` as it comes."""

    # proofs_check: optional (needs sympy, the proofs extra)
    import proofs_check

    def progress(*args, **kwargs) -> None:
        res = args[0] if args else next(iter(kwargs.values()), None)
        if res is not None:
            on_result(res)

    kwargs = {}
    if "progress" in inspect.signature(proofs_check.run_claims).parameters:
        kwargs["progress"] = progress
    return [
        _Claim(
            str(r.id),
            str(getattr(r, "statement", "")),
            str(getattr(r, "source", "")),
            str(r.status),
            float(getattr(r, "seconds", math.nan)),
            str(getattr(r, "detail", "")),
        )
        for r in proofs_check.run_claims(**kwargs)
    ]


# Results of the claims process, inherited through fork (a queue cannot be pickled).
_CLAIMS_QUEUE = None


def _claims_worker(t0: float) -> list[_Claim]:
    """Entry point of the claims process in parallel mode: each result goes back to the
    parent through ``_CLAIMS_QUEUE`` (the parent owns the display)."""

    def send(res) -> None:
        if _CLAIMS_QUEUE is not None:
            _CLAIMS_QUEUE.put((str(res.id), str(res.status), _claim_note(res)))

    return _run_claims(send)


def _claims_total() -> int | None:
    try:
        # proofs_check: optional (needs sympy, the proofs extra)
        import proofs_check

        return len(proofs_check.CLAIMS)
    except (ImportError, AttributeError, TypeError):
        return None


def _on_claim(ui: Progress, task: Task | None, claim_id: str, status: str, note: str) -> None:
    """One claim result on the display: the count moves; a claim that is not proved is
    also printed as a line of its own."""
    if status not in ("proved", "proved-for-cases"):
        ui.log(f"    {note}")
    if task is not None:
        task.update(advance=1, note=note)


def _step_claims(
    step: StepResult,
    quick: bool,
    ui: Progress,
    results: list[_Claim] | None = None,
    task: Task | None = None,
) -> None:
    if results is None:
        results = _run_claims(
            lambda r: _on_claim(ui, task, str(r.id), str(r.status), _claim_note(r))
        )
    else:  # computed in the parallel process: its own time, not the wait for it
        step.seconds = sum(r.seconds for r in results if math.isfinite(r.seconds))
    bad = [r for r in results if r.status not in ("proved", "proved-for-cases")]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    step.passed = bool(results) and not bad
    step.summary = f"{len(results)} claims: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    step.failures = [f"claim {r.id}: {r.status}: {r.detail}" for r in bad]
    slowest = max(results, key=lambda r: r.seconds, default=None)
    step.worst = (
        step.failures[0]
        if bad
        else (f"slowest claim {slowest.id} ({slowest.seconds:.1f} s)" if slowest else "")
    )
    rows = [
        [r.id, _status(r.status in ("proved", "proved-for-cases")) + f" ({r.status})",
         f"{r.seconds:.2f}", latex_to_text(r.statement), r.source]
        for r in results
    ]  # fmt: skip
    step.blocks.append(
        (
            "p",
            "Each claim is a symbolic (SymPy) proof of an identity, limit or theorem, or, "
            "where a closed proof is out of reach, a proof for a finite set of cases "
            "(`proved-for-cases`). Run them alone with `python -m proofs_check`.",
        )
    )
    step.blocks.append(("table", ["claim", "status", "seconds", "statement", "source"], rows))
    for r in bad:
        step.blocks.append(("pre", f"{r.id}: {r.status}\n{r.detail}"))


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


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------


def resolve_out_dir(out: str | None, force: bool, *, now: float | None = None) -> Path:
    """The output folder: ``out`` (must be empty or missing, unless ``force``: the rule
    of :func:`amid_ref._cli_util.prepare_out_dir`, shared with ``amid-ref study``; the
    folder is created) or a fresh ``amid-verify-YYYYmmdd-HHMMSS[-N]`` folder in the
    current directory.

    Raises
    ------
    ValueError
        If ``out`` is a file, a non-empty folder and ``force`` is false, or not writable.
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        base = Path(f"amid-verify-{stamp}")
        path, n = base, 1
        while path.exists():
            n += 1
            path = Path(f"{base}-{n}")
        return path
    return prepare_out_dir(out, force)


def _environment() -> list[list[str]]:
    rows = [["python", platform.python_version()], ["platform", platform.platform()]]
    for name in ("amid_ref", "numpy", "scipy", "mpmath", "sympy", "matplotlib"):
        try:
            mod = importlib.import_module(name)
            rows.append([name, getattr(mod, "__version__", "?")])
        except ImportError:
            rows.append([name, "not installed"])
    return rows


def run_verify(
    out_dir: Path,
    *,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    steps: tuple[str, ...] = ("claims", "sweep", "limits", "optimality", "figures"),
    parallel: bool = False,
) -> tuple[bool, list[StepResult]]:
    """Run the checks, write ``report.md``, ``report.html`` and the figures to ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Output folder (created if missing).
    quick : bool
        Smaller grids (under 2 minutes on 2 cores).
    log : callable, optional
        Receives the progress as plain lines. Default: stderr, as a live display on a
        terminal (one line per running step, with its count and ETA) and as timestamped
        lines otherwise.
    steps : tuple of str
        Which steps to run (all by default; tests run subsets).
    parallel : bool
        Run the symbolic claims (SymPy, single-threaded) in a forked process while the
        numerical steps run here: on 2 cores this halves the wall time. The claims process
        sends each result back to this one, which shows it on the claims step's line.
        Falls back to sequential where ``fork`` is unavailable.

    Returns
    -------
    (bool, list of StepResult)
        Whether everything passed, and the per-step results.
    """
    # matplotlib: optional (the plot extra)
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.monotonic()
    ui = Progress(sink=log) if log is not None else Progress(sys.stderr)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = {
        "claims": ("Symbolic claims (proofs_check)", _step_claims),
        "sweep": ("Numerical validation sweep", _step_sweep),
        "limits": ("Limit convergence", _step_limits),
        "optimality": ("Optimality (Theorem 3.4)", _step_optimality),
        "figures": ("Figures", _step_figures),
    }
    unknown = [s for s in steps if s not in table]
    if unknown:
        raise ValueError(f"unknown verify step(s) {unknown}; choose from {list(table)}")
    with ui:
        by_name = _run_steps(ui, table, steps, quick, out_dir, parallel)
    results = [by_name[name] for name in steps]
    ok = all(s.passed for s in results)
    total = time.monotonic() - t0
    report = _build_report(results, ok, quick, total)
    (out_dir / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(report.to_html(), encoding="utf-8")
    ui.log(f"{_status(ok)}: report written to {out_dir / 'report.html'} ({total:.1f} s in total)")
    return ok, results


def _run_steps(ui: Progress, table: dict, steps: tuple[str, ...], quick, out_dir, parallel):
    """Run the steps in order, the claims possibly in a parallel process; the steps are
    numbered in the order they finish (in parallel mode the claims come last)."""
    global _CLAIMS_QUEUE

    claims_future = pool = drain = None
    if parallel and "claims" in steps:
        pool = _fork_pool()
    order = list(steps)
    if pool is not None:
        order = [n for n in steps if n != "claims"] + ["claims"]
    number = {name: f"[{k}/{len(order)}]" for k, name in enumerate(order, 1)}
    tasks: dict[str, Task] = {}
    if pool is not None:
        _CLAIMS_QUEUE = multiprocessing.get_context("fork").SimpleQueue()
        tasks["claims"] = ui.task(f"{number['claims']} Symbolic claims (parallel)", _claims_total())
        with warnings.catch_warnings():
            # Python ≥ 3.12 warns about fork() in a process with threads (BLAS pools);
            # the child only runs SymPy and returns plain data.
            warnings.simplefilter("ignore", DeprecationWarning)
            claims_future = pool.submit(_claims_worker, 0.0)
        drain = threading.Thread(
            target=_drain_claims, args=(ui, tasks["claims"], claims_future), daemon=True
        )
        drain.start()
    by_name: dict[str, StepResult] = {}
    try:
        for name in order:
            title, body = table[name]
            step = StepResult(name, title)
            task = tasks.get(name) or ui.task(f"{number[name]} {title}", None)
            start = time.monotonic()
            try:
                with ui.ticking(task):
                    if name == "claims":
                        results = None
                        if claims_future is not None:
                            results = claims_future.result()
                            drain.join()
                        body(step, quick, ui, results, task)
                    elif name in ("limits", "figures"):
                        body(step, quick, ui, out_dir, task)
                    else:
                        body(step, quick, ui, task)
            except Exception as exc:  # a crash is a failure of the step, reported in full
                step.passed = False
                step.summary = f"crashed: {type(exc).__name__}: {exc}"
                step.failures.append(step.summary)
                step.worst = step.summary
                step.blocks.append(("pre", traceback.format_exc()))
            step.seconds = step.seconds or time.monotonic() - start
            by_name[name] = step
            ui.finish(
                task,
                f"{number[name]} {title}: {_status(step.passed)} in {step.seconds:.1f} s"
                f" — {step.summary}",
            )
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            _CLAIMS_QUEUE = None
    return by_name


def _drain_claims(ui: Progress, task: Task, future) -> None:
    """Show the results the claims process sends, until it has finished."""
    queue = _CLAIMS_QUEUE
    while True:
        done = future.done()
        while not queue.empty():
            _on_claim(ui, task, *queue.get())
        if done:
            return
        time.sleep(0.2)


def _fork_pool():
    """A one-worker process pool using ``fork`` (no re-import of ``__main__``), or None."""

    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))


def _build_report(results: list[StepResult], ok: bool, quick: bool, total: float) -> Report:
    report = Report("amid-ref verification report")
    mode = "quick" if quick else "full"
    report.p(
        f"**Overall: {_status(ok)}** — {mode} run, {total:.1f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Command: `amid-ref verify"
        f"{' --quick' if quick else ''}`."
    )
    failed = [s for s in results if not s.passed]
    if failed:
        report.h(1, "What failed")
        for s in failed:
            report.p(f"**{s.title}** — {s.summary}. Worst case: {s.worst}")
            if s.failures:
                shown = s.failures[:10]
                more = len(s.failures) - len(shown)
                report.items(
                    shown + ([f"… and {more} more (see the section below)"] if more else [])
                )
    report.h(1, "Summary")
    report.table(
        ["step", "status", "seconds", "summary", "worst case"],
        [[s.title, _status(s.passed), f"{s.seconds:.1f}", s.summary, s.worst] for s in results],
    )
    for s in results:
        report.h(1, f"{s.title}: {_status(s.passed)}")
        report.blocks.extend(s.blocks)
    report.h(1, "Environment")
    report.table(["component", "version"], _environment())
    return report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``amid-ref verify``."""
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: a fresh amid-verify-YYYYmmdd-HHMMSS in the current "
        "directory); an existing non-empty folder needs --force",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller grids: under 2 minutes on 2 cores"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into an existing non-empty --out folder"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``amid-ref verify``: 0 if everything passed, 1 otherwise."""
    out_dir = resolve_out_dir(args.out, args.force)
    ok, _ = run_verify(out_dir, quick=args.quick, parallel=True)
    print(out_dir / "report.html")
    return 0 if ok else 1
