"""Distill a small student from a known synthetic teacher with AMiD and measure the claims.

A seeded mixture-of-softmaxes teacher over a vocabulary of a few thousand tokens (its
distribution known exactly, with Zipf-like marginals, multi-modal conditionals and many
near-zero probabilities) is distilled into a rank-limited softmax student with
``gpu.AMiDLoss`` (any divergence, order, α, λ) and with the prior methods' presets. The
student is scored exactly on held-out contexts: forward/reverse KL, teacher mass in the
student's top-k, teacher modes covered, entropy, and training stability (non-finite steps,
gradient norms). Three experiments answer four questions: the α sweep (does α control
mode covering with the divergence fixed? which α is best per divergence and order?),
stability under near-zero teacher probabilities, and presets vs AMiD at equal budget.
Outputs: runs.csv, curves.csv, results.json, summary.md, timings.json, figures/*.png;
``--replot DIR`` re-renders a finished study's summary and figures without training.
``--topk K1,K2,...`` runs the top-k comparison instead (dense teacher vs its top-k under
each leftover policy): topk.csv, topk.md, figures/topk.png.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import replace
from pathlib import Path

from amid_ref._cli._util import float_list, int_list, prepare_out_dir
from amid_ref._specs import LEFTOVER_POLICIES, ORDERS
from amid_ref.study._metrics import METRIC_NAMES, HeldOutEvaluator, exact_metrics
from amid_ref.study._sweep import (
    DEFAULT_DIV_PARAMS,
    EXPERIMENTS,
    RunSpec,
    StudyConfig,
    StudyResult,
    auto_lam,
    build_runs,
    default_config,
    load_study,
    quick_config,
    replot,
    run_rows,
    run_study,
    write_outputs,
)
from amid_ref.study._teacher import SyntheticTeacher, TeacherConfig, make_teacher
from amid_ref.study._topk import (
    TOPK_COLUMNS,
    TOPK_METHODS,
    TopKRun,
    run_topk,
    sparse_loss_class,
    topk_markdown,
    topk_metrics,
    write_topk,
)
from amid_ref.study._train import (
    Method,
    RunResult,
    TrainConfig,
    amid_method,
    build_loss,
    make_student,
    preset_method,
    train_student,
)

__all__ = [
    "DEFAULT_DIV_PARAMS",
    "EXPERIMENTS",
    "METRIC_NAMES",
    "TOPK_COLUMNS",
    "TOPK_METHODS",
    "HeldOutEvaluator",
    "Method",
    "RunResult",
    "RunSpec",
    "StudyConfig",
    "StudyResult",
    "SyntheticTeacher",
    "TeacherConfig",
    "TopKRun",
    "TrainConfig",
    "amid_method",
    "auto_lam",
    "build_loss",
    "build_runs",
    "default_config",
    "exact_metrics",
    "load_study",
    "make_student",
    "make_teacher",
    "preset_method",
    "quick_config",
    "replot",
    "run_rows",
    "run_study",
    "run_topk",
    "sparse_loss_class",
    "topk_markdown",
    "topk_metrics",
    "train_student",
    "write_outputs",
    "write_topk",
]


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _both(get) -> str:
    """``default: X`` or ``default: X; --quick: Y`` for one setting of the two configs."""

    def text(value) -> str:
        if value is None:
            return "none"
        if isinstance(value, tuple):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    full, quick = text(get(default_config())), text(get(quick_config()))
    return f"default: {full}" + ("" if quick == full else f"; --quick: {quick}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``study`` options to ``parser``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small configuration (about a minute); used by the tests",
    )
    parser.add_argument(
        "--out",
        default="amid_study",
        help="output folder (default: %(default)s); it must be missing or empty unless "
        "--force is given",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an existing non-empty --out folder (its study files are overwritten)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"teacher seed; run seeds start here ({_both(lambda c: c.teacher_seed)})",
    )
    parser.add_argument(
        "--seeds", type=int_list, default=None, help=f"run seeds ({_both(lambda c: c.seeds)})"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per run ({_both(lambda c: c.train.steps)})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"contexts per step ({_both(lambda c: c.train.batch_size)})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate, cosine schedule ({_both(lambda c: c.train.lr)})",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default=None,
        help=f"optimiser ({_both(lambda c: c.train.optimizer)})",
    )
    parser.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        help=f"clip the gradient norm ({_both(lambda c: c.train.grad_clip)})",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"teacher vocabulary size ({_both(lambda c: c.teacher.vocab_size)})",
    )
    parser.add_argument(
        "--alphas",
        type=float_list,
        default=None,
        help=f"α grid, inf allowed ({_both(lambda c: c.alphas)})",
    )
    parser.add_argument(
        "--lams",
        type=float_list,
        default=None,
        help="λ grid (default: 0.1 for pr/rp, 0.9 for qr/rq)",
    )
    parser.add_argument(
        "--divergences",
        type=_names,
        default=None,
        help="divergences of the α sweep, e.g. kl,ab,js (default: kl in every order and ab "
        "in pr; --quick: kl in pr and rp)",
    )
    parser.add_argument(
        "--orders",
        type=_names,
        default=None,
        help="orders of the α sweep, a subset of pr,qr,rp,rq (default: all four with "
        "--divergences)",
    )
    parser.add_argument(
        "--experiments",
        type=_names,
        default=None,
        help=f"subset of {','.join(EXPERIMENTS)} ({_both(lambda c: c.experiments)})",
    )
    parser.add_argument(
        "--presets",
        type=_names,
        default=None,
        help=f"preset names to compare ({_both(lambda c: c.presets)})",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help=f"worker processes ({_both(lambda c: c.jobs)})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads per worker ({_both(lambda c: c.threads)})",
    )
    parser.add_argument(
        "--topk",
        type=int_list,
        default=None,
        metavar="K1,K2,...",
        help="run the top-k comparison instead of the study: the dense teacher and its top-k "
        "for each k under each leftover policy (KD and AMiD α=-5 λ=0.1; the teacher, "
        "steps and seeds of the configuration); writes topk.csv, topk.md, figures/topk.png",
    )
    parser.add_argument(
        "--leftovers",
        type=_names,
        default=None,
        help=f"leftover policies of --topk (default: {','.join(LEFTOVER_POLICIES)})",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument(
        "--replot",
        metavar="DIR",
        default=None,
        help="re-render DIR/summary.md and DIR/figures from DIR/results.json (no training)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """Build the :class:`StudyConfig` that the command-line options describe."""
    cfg = quick_config() if args.quick else default_config()
    train_changes = {
        name: value
        for name, value in (
            ("steps", args.steps),
            ("batch_size", args.batch_size),
            ("lr", args.lr),
            ("optimizer", args.optimizer),
            ("grad_clip", args.grad_clip),
        )
        if value is not None
    }
    if train_changes:
        cfg = replace(cfg, train=replace(cfg.train, **train_changes))
    if args.vocab_size is not None:
        cfg = replace(cfg, teacher=cfg.teacher.variant(vocab_size=args.vocab_size))
    if args.seed is not None:
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        cfg = replace(
            cfg,
            teacher_seed=args.seed,
            seeds=tuple(args.seed + i for i in range(len(cfg.seeds))),
        )
    changes: dict = {}
    if args.seeds is not None:
        if any(seed < 0 for seed in args.seeds):
            raise ValueError(f"--seeds must be >= 0, got {','.join(map(str, args.seeds))}")
        changes["seeds"] = args.seeds
    if args.alphas is not None:
        changes["alphas"] = args.alphas
    if args.lams is not None:
        changes["lams"] = args.lams
    if args.divergences is not None or args.orders is not None:
        changes["divergences"] = args.divergences or ("kl",)
        changes["orders"] = args.orders or tuple(ORDERS)
        changes["sweep_pairs"] = None
    if args.experiments is not None:
        changes["experiments"] = args.experiments
    if args.presets is not None:
        changes["presets"] = args.presets
    if args.jobs is not None:
        changes["jobs"] = args.jobs
    if args.threads is not None:
        changes["threads"] = args.threads
    return replace(cfg, **changes) if changes else cfg


def run(args: argparse.Namespace) -> int:
    """Run the study described by ``args`` and write its outputs; returns the exit code."""
    if args.replot is not None:
        replot(args.replot, plots=not args.no_plots)
        if not args.quiet:
            print(f"amid-ref study: re-rendered {args.replot}", file=sys.stderr)
        return 0

    cfg = config_from_args(args)
    if args.leftovers is not None and args.topk is None:
        raise ValueError("--leftovers needs --topk")
    existed = Path(args.out).exists()
    prepare_out_dir(args.out, args.force)
    progress = None if args.quiet else sys.stderr
    try:
        if args.topk is not None:
            start = time.perf_counter()
            rows = run_topk(cfg, args.topk, args.leftovers or LEFTOVER_POLICIES, progress=progress)
            write_topk(rows, args.out, plots=not args.no_plots)
            if not args.quiet:
                print(
                    f"amid-ref study --topk: {len(rows)} runs in "
                    f"{time.perf_counter() - start:.1f} s; outputs in {args.out}",
                    file=sys.stderr,
                )
            return 0
        study = run_study(cfg, args.out, progress=progress, plots=not args.no_plots)
    except BaseException:  # Ctrl-C included: the outputs are written only at the end
        if not existed:  # the folder made above, empty again: leave no trace
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()
        raise
    if not args.quiet:
        print(
            f"amid-ref study: {len(study.runs)} runs in {study.seconds:.1f} s; "
            f"outputs in {args.out}",
            file=sys.stderr,
        )
    return 0
