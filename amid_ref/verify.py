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

The symbolic claims run in a second process, in parallel with the numerical steps; the
report is rendered the same way as the summary of ``amid-ref study``.

``DIR`` defaults to a fresh ``amid-verify-YYYYmmdd-HHMMSS`` folder in the current directory
(with a ``-2``, ``-3``, … suffix if that exists). An existing non-empty ``--out`` is an error
unless ``--force`` is given (then the report files in it are overwritten); ``amid-ref
study`` follows the same rule. The files are written into a private folder inside ``DIR``
and moved into place at the end: a run stopped with Ctrl-C (exit code 130) leaves ``DIR``
as it was, and the same command can be run again at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import math
import multiprocessing
import platform
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amid_ref._cli._document import Document, status_word
from amid_ref._cli._text import latex_to_text
from amid_ref._cli._util import (
    Progress,
    Task,
    ignore_interrupts,
    prepare_out_dir,
    staged_output,
    starting_workers,
    stop_workers,
)
from amid_ref._cli._verify_steps import (
    StepResult,
    _step_figures,
    _step_limits,
    _step_optimality,
    _step_sweep,
)

#: The command-line plumbing (``configure_parser``, ``run``) is reached by ``amid-ref``
#: through :data:`amid_ref.cli.SUBCOMMANDS`, not part of the public API.
__all__ = ["Document", "StepResult", "resolve_out_dir", "run_verify"]
_status = status_word


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


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------


def resolve_out_dir(out: str | None, force: bool, *, now: float | None = None) -> Path:
    """The output folder, created: ``out`` (must be empty or missing, unless ``force``:
    the rule of ``amid-ref study`` too) or a fresh ``amid-verify-YYYYmmdd-HHMMSS[-N]``
    folder in the current directory.

    Raises
    ------
    ValueError
        If ``out`` is a file, a non-empty folder and ``force`` is false, or not writable;
        if ``out`` is None and the current directory is not writable (the message says
        to choose a folder with ``--out``).
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        base = Path(f"amid-verify-{stamp}")
        path, n = base, 1
        while path.exists():
            n += 1
            path = Path(f"{base}-{n}")
        try:
            path.mkdir()
        except OSError as exc:
            raise ValueError(
                f"cannot create the report folder {str(path)!r} in the current directory "
                f"{str(Path.cwd())!r} ({exc.strerror or type(exc).__name__}); choose a "
                "writable folder with --out DIR"
            ) from None
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
        Output folder (created if missing). The files are written into a private folder
        inside it and moved into it when the run has finished: an interrupted run (Ctrl-C
        included) leaves ``out_dir`` as it was.
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
    # written into a private folder, moved into out_dir at the end (see staged_output)
    with staged_output(out_dir) as work:
        with ui:
            by_name = _run_steps(ui, table, steps, quick, work, parallel)
        results = [by_name[name] for name in steps]
        ok = all(s.passed for s in results)
        total = time.monotonic() - t0
        report = _build_report(results, ok, quick, total)
        (work / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (work / "report.html").write_text(report.to_html(), encoding="utf-8")
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
            with starting_workers():  # the worker is forked here
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
            stop_workers(pool)  # at once, also after Ctrl-C: no wait for a running claim
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
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),
        initializer=ignore_interrupts,  # Ctrl-C is handled here, which stops the worker
    )


def _build_report(results: list[StepResult], ok: bool, quick: bool, total: float) -> Document:
    report = Document("amid-ref verification report")
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
    existed = args.out is not None and Path(args.out).exists()
    out_dir = resolve_out_dir(args.out, args.force)
    try:
        ok, _ = run_verify(out_dir, quick=args.quick, parallel=True)
    except BaseException:
        if not existed:  # the folder made above, empty again: leave no trace
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    print(out_dir / "report.html")
    return 0 if ok else 1
