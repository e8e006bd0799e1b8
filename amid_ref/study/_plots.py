"""Figures of the study (matplotlib, Agg canvas; pyplot is never imported)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amid_ref.study._report import _alpha_curves, aggregate, answers

if TYPE_CHECKING:  # pragma: no cover
    from amid_ref.study._records import StudyResult

__all__ = ["plot_all"]

_METRIC_LABELS = {
    "forward_kl": "KL(p‖q) held-out [nats]",
    "reverse_kl": "KL(q‖p) held-out [nats]",
    "topk_teacher_mass": "teacher mass in student top-k",
    "student_entropy": "H(q) [nats]",
    "modes_covered": "teacher modes covered per context",
    "mode_coverage": "fraction of teacher modes covered",
}


def _figure(
    nrows: int,
    ncols: int,
    size: tuple[float, float],
    left: float = 0.8,
    top: float = 0.45,
    right: float = 0.15,
):
    """A figure with fixed margins (in inches): no layout engine, which is slow."""
    # matplotlib: optional (the plot extra)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=0.55 / height,
        top=1 - top / height,
        wspace=0.25 if left < 1.5 else 0.1,
        hspace=0.45 * 3.4 / max(height / nrows, 1.0),
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


def _log_y(ax, axis: str = "y") -> None:
    """Log axis with plain-number labels: at 1, 2, 3, 5 × 10^k, or at every integer
    multiple of 10^k when the data span less than ~0.7 decade (else only two or three
    labels would fall inside), or at 10^k alone over many decades. Call after plotting."""
    # matplotlib: optional (the plot extra)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    if span < 0.7:
        subs: tuple[float, ...] = tuple(float(k) for k in range(1, 10))
    elif span <= 2.5:
        subs = (1.0, 2.0, 3.0, 5.0)
    else:
        subs = (1.0,)
    target.set_major_locator(LogLocator(base=10.0, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _alpha_axis(ax) -> None:
    ax.set_xlabel("α")
    ax.axvline(-1.0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(1.0, color="0.85", lw=0.8, zorder=0)
    ax.grid(alpha=0.3)


def _plot_metric_vs_alpha(study: StudyResult, path: Path, names: tuple[str, ...], title: str):
    curves = _alpha_curves(study)
    if not curves:
        return None
    ncols = 2
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(nrows, ncols, (5.2 * ncols, 3.4 * nrows), top=0.8)
    for ax, name in zip(axes.flat, names, strict=False):
        for (divergence, order, lam), rows in sorted(curves.items()):
            rows = [r for r in rows if math.isfinite(r["alpha"])]
            x = np.array([r["alpha"] for r in rows])
            y = np.array([r[name] for r in rows])
            lo = np.array([r.get(name + "_min", r[name]) for r in rows])
            hi = np.array([r.get(name + "_max", r[name]) for r in rows])
            line = ax.plot(x, y, marker="o", ms=4, label=f"{divergence} {order} λ={lam:g}")[0]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        if name in ("forward_kl", "reverse_kl"):
            _log_y(ax)
        if name in ("student_entropy",):
            ax.axhline(rows[0]["teacher_entropy"], color="k", ls="--", lw=1, label="H(p) teacher")
        if name == "modes_covered":
            ax.axhline(rows[0]["teacher_modes"], color="k", ls="--", lw=1, label="teacher modes")
        ax.set_ylabel(_METRIC_LABELS[name])
        _alpha_axis(ax)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    # one legend above the panels (it covers no data), with the reference lines of all panels
    legend: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    height = 3.4 * nrows
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.3 / height),
        ncol=min(len(legend), 7),
        fontsize=7.5,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height)
    return _save(fig, path)


def _plot_training_curves(study: StudyResult, path: Path):
    alpha_runs = [
        (s, r)
        for s, r in study.select("alpha", "base")
        if s.method.divergence == "kl"
        and s.method.order == "pr"
        and s.seed == study.config.seeds[0]
    ]
    preset_runs = [(s, r) for s, r in study.select("presets") if s.seed == study.config.seeds[0]]
    panels = [p for p in (("α sweep: KL, pr", alpha_runs), ("presets", preset_runs)) if p[1]]
    if not panels:
        return None
    # the legends go in a right margin of their own: they cover no curve
    fig, axes = _figure(len(panels), 2, (12.2, 3.4 * len(panels)), right=1.95)
    for row, (title, runs) in enumerate(panels):
        for spec, result in runs:
            steps = [p["step"] for p in result.curve]
            label = (
                f"α={spec.method.alpha:g} λ={spec.method.lam:g}"
                if spec.experiment == "alpha"
                else spec.method.label
            )
            axes[row, 0].plot(steps, [p["forward_kl"] for p in result.curve], label=label)
            axes[row, 1].plot(steps, [p["student_entropy"] for p in result.curve], label=label)
        teacher_h = runs[0][1].final["teacher_entropy"]
        axes[row, 1].axhline(teacher_h, color="k", ls="--", lw=1, label="H(p)")
        _log_y(axes[row, 0])
        axes[row, 0].set_ylabel("KL(p‖q) held-out")
        axes[row, 1].set_ylabel("H(q)")
        for ax in axes[row]:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.set_title(f"{title} (seed {study.config.seeds[0]})", fontsize=9)
        axes[row, 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path)


def _plot_stability(study: StudyResult, path: Path):
    runs = study.select("stability")
    if not runs:
        return None
    teachers = list(dict.fromkeys(s.teacher for s, _ in runs))
    fig, axes = _figure(len(teachers), 2, (12.0, 3.2 * len(teachers) + 0.8), left=2.0)
    for row, teacher in enumerate(teachers):
        sub = [(s, r) for s, r in runs if s.teacher == teacher]
        labels = list(dict.fromkeys(s.method.label for s, _ in sub))
        stats = [aggregate([(s, r) for s, r in sub if s.method.label == lab]) for lab in labels]
        y = np.arange(len(labels))
        med = np.array([st["grad_norm_median"] for st in stats])
        mx = np.array([st["grad_norm_max"] for st in stats])
        ax = axes[row, 0]
        ax.barh(y - 0.2, np.nan_to_num(med, nan=0.0), height=0.4, label="median ‖g‖")
        ax.barh(y + 0.2, np.nan_to_num(mx, nan=0.0), height=0.4, label="max ‖g‖")
        for i, st in enumerate(stats):
            if st["skipped_steps"] > 0:
                ax.text(
                    0.98,
                    y[i],
                    f"{int(st['skipped_steps'])} non-finite steps",
                    transform=ax.get_yaxis_transform(),
                    ha="right",
                    va="center",
                    color="C3",
                    fontsize=7,
                )
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("gradient norm (student parameters)")
        ax.set_title(f"teacher: {teacher}", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[row, 1]
        fkl = np.array([st["forward_kl"] for st in stats])
        ax.barh(y, np.nan_to_num(fkl, nan=0.0, posinf=0.0), color="C2")
        ax.set_yticks(y, [""] * len(labels))
        ax.set_xlabel("final KL(p‖q) held-out")
        ax.set_title(f"teacher: {teacher}", fontsize=9)
        for ax in axes[row]:
            ax.invert_yaxis()
            ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _plot_presets(study: StudyResult, path: Path, computed: dict):
    rows = computed.get("q4")
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["forward_kl"])
    labels = [r["method"] for r in rows]
    y = np.arange(len(rows))
    fig, axes = _figure(1, 3, (14.0, 0.4 * len(rows) + 1.6), left=3.0)
    for ax, name in zip(axes[0], ("forward_kl", "reverse_kl", "modes_covered"), strict=True):
        vals = np.array([r[name] for r in rows])
        lo = vals - np.array([r.get(name + "_min", r[name]) for r in rows])
        hi = np.array([r.get(name + "_max", r[name]) for r in rows]) - vals
        amid = np.array([r["method"].startswith("AMiD") for r in rows])
        for mask, color in ((~amid, "C0"), (amid, "C1")):
            ax.errorbar(
                vals[mask],
                y[mask],
                xerr=np.vstack([lo[mask], hi[mask]]),
                fmt="o",
                color=color,
                capsize=3,
                ms=6,
            )
        if name in ("forward_kl", "reverse_kl"):
            _log_y(ax, "x")
        ax.set_xlabel(_METRIC_LABELS[name] + (" (log)" if "kl" in name else ""))
        ax.grid(alpha=0.3)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(y, labels if ax is axes[0, 0] else [""] * len(rows), fontsize=7)
    fig.suptitle(
        "equal budget: presets (blue) vs AMiD (orange); bars: range over seeds", fontsize=10
    )
    return _save(fig, path)


def plot_all(study: StudyResult, directory: str | os.PathLike[str]) -> list[Path]:
    """Render every figure of the study into ``directory``; returns the paths written.

    Files: ``metric_vs_alpha.png`` (final held-out metrics vs α per divergence/order),
    ``mode_coverage_vs_alpha.png``, ``training_curves.png``, ``stability.png`` and
    ``presets.png`` (each only when its experiment was run). Bands show the range over
    seeds.
    """

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    computed = answers(study)
    written = [
        _plot_metric_vs_alpha(
            study,
            out / "metric_vs_alpha.png",
            ("forward_kl", "reverse_kl", "topk_teacher_mass", "student_entropy"),
            "final held-out metrics vs α (band: range over seeds)",
        ),
        _plot_metric_vs_alpha(
            study,
            out / "mode_coverage_vs_alpha.png",
            ("modes_covered", "mode_coverage"),
            "mode coverage vs α",
        ),
        _plot_training_curves(study, out / "training_curves.png"),
        _plot_stability(study, out / "stability.png"),
        _plot_presets(study, out / "presets.png", computed),
    ]
    return [p for p in written if p is not None]
