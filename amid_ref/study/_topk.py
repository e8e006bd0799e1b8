"""How much does a top-k (sparse) teacher lose? Distill the known teacher densely and from
its top-k under each leftover policy, and score the students exactly on held-out contexts.

The teacher, the student, the training loop and the held-out metrics are the study's own
(:func:`~amid_ref.study.make_teacher`, :func:`~amid_ref.study.train_student`,
:class:`~amid_ref.study.HeldOutEvaluator`); only the loss changes: for a top-k run each
batch's teacher log-probabilities are cut to their k largest entries and given to
:class:`gpu.AMiDLoss` as ``teacher_topk=(indices, logprobs)`` with ``leftover=policy``
(docs/mathematics.md, "Sparse teachers"). Every run of one method shares the seed, hence the
student's initialisation and the batch order: the comparison is paired.

Outputs (``amid-ref study --topk K1,K2,...``): ``topk.csv`` (one row per run),
``topk.md`` (the table) and ``figures/topk.png``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from amid_ref._cli._util import staged_output
from amid_ref._specs import LEFTOVER_POLICIES
from amid_ref.study._records import Method, StudyConfig
from amid_ref.study._teacher import SyntheticTeacher, make_teacher
from amid_ref.study._train import amid_method, train_student

__all__ = [
    "TOPK_COLUMNS",
    "TOPK_METHODS",
    "TopKRun",
    "run_topk",
    "sparse_loss_class",
    "topk_markdown",
    "topk_metrics",
    "write_topk",
]

#: The methods of the top-k comparison: plain KD (KL(p‖q): α = 1, λ = 0, so r = q) and AMiD
#: at the α and λ the AMiD paper reports best (α = −5, λ = 0.1, KL(p‖r)).
TOPK_METHODS: tuple[Method, ...] = (
    amid_method(1.0, 0.0, "kl", "pr", label="KD (KL(p‖q))"),
    amid_method(-5.0, 0.1, "kl", "pr", label="AMiD α=-5 λ=0.1 pr"),
)

#: Columns of ``topk.csv``, in order.
TOPK_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "k",
    "leftover",
    "forward_kl",
    "reverse_kl",
    "argmax_agreement",
    "student_entropy",
    "student_mass_off_topk",
    "teacher_mass_off_topk",
    "skipped_steps",
    "seconds",
)


@dataclass(frozen=True)
class TopKRun:
    """One run of the comparison: ``k`` is ``None`` for the dense teacher (and then
    ``leftover`` is ``"dense"``)."""

    method: Method
    seed: int
    k: int | None
    leftover: str


def sparse_loss_class(k: int, leftover: str):
    """A stand-in for :class:`gpu.AMiDLoss` that sees the teacher through its top-k.

    The returned class takes :class:`gpu.AMiDLoss`'s constructor arguments; called with
    ``(student_logits, teacher_log_probs)`` of shape (N, V) it keeps the ``k`` largest
    teacher log-probabilities of each row (``torch.topk``) and returns
    ``AMiDLoss(..., leftover=leftover)(student_logits, teacher_topk=(ids, logprobs))``.
    Setting ``lam`` on it sets the wrapped loss's λ (the study's λ schedules).
    """
    # gpu, torch: optional (the gpu extra)
    import gpu

    if leftover not in LEFTOVER_POLICIES:
        raise ValueError(f"leftover must be one of {LEFTOVER_POLICIES}, got {leftover!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")

    class SparseTeacherLoss:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            object.__setattr__(self, "inner", gpu.AMiDLoss(*args, leftover=leftover, **kwargs))

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self.inner, name, value)

        def __call__(self, student_logits, teacher_log_probs):
            values, ids = teacher_log_probs.topk(k, dim=-1)
            return self.inner(student_logits, teacher_topk=(ids, values))

    SparseTeacherLoss.__name__ = f"SparseTeacherLoss_k{k}_{leftover}"
    return SparseTeacherLoss


def topk_metrics(teacher_log_probs: np.ndarray, k: int | None):
    """The comparison's metrics beyond :func:`~amid_ref.study.exact_metrics`, as a function
    of the student's held-out logits (N, V).

    .. math::

        \\text{argmax agreement} = \\tfrac1N \\sum_n [\\arg\\max_v q_{nv} = \\arg\\max_v p_{nv}],
        \\qquad
        q(V \\setminus S_n) = \\sum_{v \\notin S_n} q_{nv}, \\quad
        \\varepsilon_n = \\sum_{v \\notin S_n} p_{nv},

    with ``S_n`` the teacher's top-k ids of context n (empty complement for the dense
    teacher, ``k = None``). ``bucket`` aims at q(V∖S) = ε, ``renormalize`` at 0.
    """
    lp = np.asarray(teacher_log_probs, dtype=np.float64)
    top_teacher = np.argmax(lp, axis=1)
    if k is None or k >= lp.shape[1]:
        off = np.zeros(lp.shape, dtype=bool)
    else:
        keep = np.argpartition(-lp, k - 1, axis=1)[:, :k]
        off = np.ones(lp.shape, dtype=bool)
        np.put_along_axis(off, keep, False, axis=1)
    eps = float(np.where(off, np.exp(lp), 0.0).sum(axis=1).mean())

    def metrics(student_logits: np.ndarray) -> dict[str, float]:
        s = np.asarray(student_logits, dtype=np.float64)
        z = s - s.max(axis=1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(axis=1, keepdims=True)
        return {
            "argmax_agreement": float(np.mean(np.argmax(s, axis=1) == top_teacher)),
            "student_mass_off_topk": float(np.where(off, q, 0.0).sum(axis=1).mean()),
            "teacher_mass_off_topk": eps,
        }

    return metrics


def _runs(
    ks: Sequence[int], leftovers: Sequence[str], methods: Sequence[Method], seeds
) -> list[TopKRun]:
    runs = []
    for method in methods:
        for seed in seeds:
            runs.append(TopKRun(method, seed, None, "dense"))
            for k in ks:
                runs.extend(TopKRun(method, seed, k, policy) for policy in leftovers)
    return runs


def run_topk(
    config: StudyConfig,
    ks: Sequence[int] = (8, 64, 512),
    leftovers: Sequence[str] = LEFTOVER_POLICIES,
    methods: Sequence[Method] = TOPK_METHODS,
    *,
    teacher: SyntheticTeacher | None = None,
    progress: TextIO | None = sys.stderr,
) -> list[dict[str, Any]]:
    """Distill ``config``'s teacher with the dense teacher and with its top-k.

    For each method and seed of ``config``: one dense run, then one run per ``k`` and
    leftover policy, all with ``config.train`` (same steps, batches and initialisation).

    Parameters
    ----------
    config : StudyConfig
        Teacher, training settings, seeds and threads (e.g. :func:`quick_config`).
    ks : sequence of int
        Top-k sizes, each in [1, V].
    leftovers : sequence of str
        Leftover policies (subset of ``amid_ref.LEFTOVER_POLICIES``).
    methods : sequence of Method
        Objectives (default :data:`TOPK_METHODS`).
    teacher : SyntheticTeacher, optional
        Built from ``config`` if not given.
    progress : text stream or None
        One line per finished run (``None``: silent).

    Returns
    -------
    list of dict
        One row per run with the keys of :data:`TOPK_COLUMNS`; ``k`` is the vocabulary
        size and ``leftover`` is ``"dense"`` for the dense runs.
    """
    # torch: optional (the gpu extra)
    import torch

    vocab = config.teacher.vocab_size
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
            raise ValueError(f"--topk: every k must be an int in [1, V={vocab}], got {k!r}")
    for policy in leftovers:
        if policy not in LEFTOVER_POLICIES:
            raise ValueError(
                f"--leftovers: each must be one of {','.join(LEFTOVER_POLICIES)}, got {policy!r}"
            )
    if teacher is None:
        teacher = make_teacher(config.teacher, config.teacher_seed)
    runs = _runs(ks, leftovers, methods, config.seeds)
    if progress is not None:
        print(
            f"amid-ref study --topk: {len(runs)} runs, {config.train.steps} steps each, "
            f"V={vocab}, k={','.join(map(str, ks))}",
            file=progress,
            flush=True,
        )
    extras = {k: topk_metrics(teacher.test_log_probs, k) for k in (None, *ks)}
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    rows = []
    try:
        torch.set_num_threads(config.threads)
        torch.use_deterministic_algorithms(True)
        for run in runs:
            loss_class = None if run.k is None else sparse_loss_class(run.k, run.leftover)
            start = time.perf_counter()
            result = train_student(
                teacher,
                run.method,
                config.train,
                run.seed,
                loss_class=loss_class,
                extra_metrics=extras[run.k],
            )
            row = {
                "method": run.method.label,
                "seed": run.seed,
                "k": vocab if run.k is None else run.k,
                "leftover": run.leftover,
                **{name: result.final[name] for name in TOPK_COLUMNS[4:10]},
                "skipped_steps": result.stability["skipped_steps"],
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            if progress is not None:
                print(
                    f"  {row['method']} s{row['seed']} k={row['k']} {row['leftover']}: "
                    f"KL(p‖q) {row['forward_kl']:.4f} argmax {row['argmax_agreement']:.3f} "
                    f"q(V∖S) {row['student_mass_off_topk']:.4f} "
                    f"(ε {row['teacher_mass_off_topk']:.4f}) [{row['seconds']:.1f} s]",
                    file=progress,
                    flush=True,
                )
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
    return rows


def _mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds, keyed by (method, k, leftover), in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["k"], row["leftover"]), []).append(row)
    out = []
    for (method, k, leftover), group in groups.items():
        mean = {"method": method, "k": k, "leftover": leftover, "seeds": len(group)}
        for name in TOPK_COLUMNS[4:11]:
            mean[name] = float(np.mean([g[name] for g in group]))
        out.append(mean)
    return out


def topk_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (means over seeds), dense run first per method."""
    lines = [
        "| method | k | leftover | KL(p‖q) held-out | Δ vs dense | argmax agreement "
        "| q(V∖S) | ε = p(V∖S) | H(q) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    means = _mean_rows(rows)
    dense = {m["method"]: m for m in means if m["leftover"] == "dense"}
    for m in means:
        base = dense.get(m["method"])
        delta = "" if base is None else f"{m['forward_kl'] - base['forward_kl']:+.4f}"
        lines.append(
            f"| {m['method']} | {m['k']} | {m['leftover']} | {m['forward_kl']:.4f} | {delta} "
            f"| {m['argmax_agreement']:.3f} | {m['student_mass_off_topk']:.4f} "
            f"| {m['teacher_mass_off_topk']:.4f} | {m['student_entropy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    # matplotlib: optional (the plot extra)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = _mean_rows(rows)
    methods = list(dict.fromkeys(m["method"] for m in means))
    policies = list(dict.fromkeys(m["leftover"] for m in means if m["leftover"] != "dense"))
    panels = (
        ("forward_kl", "held-out KL(p‖q) [nats]"),
        ("argmax_agreement", "argmax agreement"),
        ("student_mass_off_topk", "student mass off the top-k"),
    )
    fig = Figure(figsize=(4.0 * len(panels), 3.2 * len(methods)))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.9, wspace=0.3, hspace=0.5)
    axes = fig.subplots(len(methods), len(panels), squeeze=False)
    markers = dict(zip(policies, "os^vD", strict=False))
    for i, method in enumerate(methods):
        mine = [m for m in means if m["method"] == method]
        dense = next((m for m in mine if m["leftover"] == "dense"), None)
        for j, (name, label) in enumerate(panels):
            ax = axes[i][j]
            for policy in policies:
                pts = sorted((m["k"], m[name]) for m in mine if m["leftover"] == policy)
                if pts:
                    ks, ys = zip(*pts, strict=True)
                    ax.plot(ks, ys, marker=markers[policy], label=policy)
            if name == "student_mass_off_topk":
                pts = sorted({(m["k"], m["teacher_mass_off_topk"]) for m in mine if m["k"]})
                ks, ys = zip(*pts, strict=True)
                ax.plot(ks, ys, color="gray", ls=":", label="teacher ε")
            elif dense is not None:
                ax.axhline(dense[name], color="black", ls="--", lw=1, label="dense")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k")
            ax.set_title(f"{method}\n{label}", fontsize=9)
            if name == "forward_kl" and any(
                m[name] > 4 * max(dense[name] if dense else 0, 1e-3) for m in mine
            ):
                ax.set_yscale("log")
            if (i == 0 and j == len(panels) - 1) or (i == 0 and j == 0):
                ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def write_topk(rows: list[dict[str, Any]], out_dir, *, plots: bool = True) -> Path:
    """Write ``topk.csv``, ``topk.md`` and (with ``plots``) ``figures/topk.png`` into
    ``out_dir`` (staged aside and moved into place at the end)."""
    out = Path(out_dir)
    with staged_output(out) as work:
        lines = [",".join(TOPK_COLUMNS)]
        for row in rows:
            cells = []
            for name in TOPK_COLUMNS:
                value = row[name]
                cell = repr(value) if isinstance(value, float) else str(value)
                if "," in cell or '"' in cell:
                    cell = '"' + cell.replace('"', '""') + '"'
                cells.append(cell)
            lines.append(",".join(cells))
        (work / "topk.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (work / "topk.md").write_text(topk_markdown(rows), encoding="utf-8")
        if plots:
            (work / "figures").mkdir(exist_ok=True)
            _plot(rows, work / "figures" / "topk.png")
    return out
