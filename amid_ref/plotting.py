"""Render the figures of amid-ref (matplotlib, Agg backend).

Every figure takes its numbers from :mod:`amid_ref` or :mod:`amid_ref.analysis` and draws
them; no formula of the paper is evaluated here. Figures are built as
:class:`matplotlib.figure.Figure` objects without ``pyplot``, so rendering never touches a
GUI backend or pyplot's global state.

Figures (``amid-ref plot NAME|all [--out DIR]``):

* ``paths``: interpolation paths λ ∈ [0, 1] of the α-mixture on the probability simplex
  (ternary plot) for α ∈ {−∞, −3, −1, 0, 1, 3, +∞}.
* ``bars``: :math:`r^{(\\alpha,\\lambda)}` over a small vocabulary for several α at λ = ½.
* ``normalizer``: :math:`Z_\\alpha` as a function of λ for several α.
* ``weight``: the gradient weight w of Proposition 3.5 against log(p/q).
* ``convergence``: the limit-convergence study on log-log axes.
* ``landscape``: the loss along a line of student logits through q = p (Theorem 3.4).
* ``modes``: a unimodal student fitted to a bimodal teacher for several α.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

import amid_ref
from amid_ref import analysis
from amid_ref._cli._util import staged_output, writable_dir

__all__ = [
    "FIGURES",
    "convergence_figure",
    "figure_to_png",
    "landscape_figure",
    "mixture_bars_figure",
    "modes_figure",
    "normalizer_figure",
    "paths_figure",
    "render",
    "weight_figure",
]

#: α values of the interpolation-path figure.
PATH_ALPHAS: tuple[float, ...] = (-math.inf, -3.0, -1.0, 0.0, 1.0, 3.0, math.inf)
#: A 3-outcome teacher and student for the ternary plot.
SIMPLEX_TEACHER = np.array([0.7, 0.2, 0.1])
SIMPLEX_STUDENT = np.array([0.1, 0.3, 0.6])

_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12.5,
    "axes.labelsize": 11.5,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
}


def _alpha_label(alpha: float) -> str:
    if math.isinf(alpha):
        return "α = +∞" if alpha > 0 else "α = −∞"
    return f"α = {alpha:g}".replace("-", "−")


def _alpha_colors(alphas: Sequence[float]):
    """One colour per α in the given order (dark blue → yellow), all visible on white."""
    # matplotlib: optional (the plot extra)
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    n = max(len(alphas) - 1, 1)
    return [cmap(0.88 * i / n) for i in range(len(alphas))]


def _alpha_styles(alphas: Sequence[float]) -> list[dict]:
    """Line styles for curves of neighbouring α that must be told apart: hues spread over
    the whole spectrum in α order (turbo colormap), alternating solid and dashed lines."""
    # matplotlib: optional (the plot extra)
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    n = max(len(alphas) - 1, 1)
    return [
        {"color": cmap(0.06 + 0.88 * i / n), "ls": "-" if i % 2 == 0 else (0, (5, 1.6))}
        for i in range(len(alphas))
    ]


def _new_figure(width: float, height: float, ncols: int = 1):
    # matplotlib: optional (the plot extra)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, np.atleast_1d(axes)


@contextlib.contextmanager
def _style():
    # matplotlib: optional (the plot extra)
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def _log_softmax(logits) -> np.ndarray:
    return log_softmax(np.asarray(logits, dtype=np.float64))


# ----------------------------------------------------------------------------------------


def _ternary_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric → Cartesian: vertex k of the simplex at the k-th corner of an
    equilateral triangle (token 1 bottom left, token 2 bottom right, token 3 top)."""
    pts = np.atleast_2d(points)
    return pts[:, 1] + 0.5 * pts[:, 2], (math.sqrt(3.0) / 2.0) * pts[:, 2]


def paths_figure(
    p: np.ndarray | None = None,
    q: np.ndarray | None = None,
    alphas: Sequence[float] = PATH_ALPHAS,
    n_lam: int = 101,
):
    """Interpolation paths ``λ ↦ r^(α,λ)`` on the 3-outcome simplex (ternary plot).

    Parameters
    ----------
    p, q : array_like, shape (3,), optional
        Teacher and student (default :data:`SIMPLEX_TEACHER`, :data:`SIMPLEX_STUDENT`).
    alphas : sequence of float
        Path parameters; at α = ±∞ the mixture is the same point for every λ ∈ (0, 1)
        (normalized max/min), drawn as a single marker.
    n_lam : int
        Points per path.

    Returns
    -------
    matplotlib.figure.Figure
    """

    p = SIMPLEX_TEACHER if p is None else np.asarray(p, dtype=np.float64)
    q = SIMPLEX_STUDENT if q is None else np.asarray(q, dtype=np.float64)
    lams = np.linspace(0.0, 1.0, n_lam)
    with _style():
        # the square simplex plot with the legend below it: as wide as the plot, no empty band
        fig, (ax,) = _new_figure(7.4, 8.0)
        corners = np.eye(3)
        cx, cy = _ternary_xy(np.vstack([corners, corners[:1]]))
        ax.plot(cx, cy, color="0.3", lw=1.2)
        for k, (x, y) in enumerate(zip(cx[:3], cy[:3], strict=True)):
            ax.annotate(
                f"token {k + 1}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 8) if k == 2 else (-12 if k == 0 else 12, -14),
                ha="center",
                fontsize=10.5,
            )
        for alpha, color in zip(alphas, _alpha_colors(alphas), strict=True):
            if math.isinf(alpha):
                r = amid_ref.alpha_mixture(p, q, alpha, 0.5)
                x, y = _ternary_xy(r)
                ax.plot(
                    x,
                    y,
                    marker="X",
                    ms=11,
                    ls="none",
                    color=color,
                    mec="k",
                    label=f"{_alpha_label(alpha)} ({'min' if alpha > 0 else 'max'}; "
                    "same point for all 0<λ<1)",
                )
                continue
            path = np.array([amid_ref.alpha_mixture(p, q, alpha, lam) for lam in lams])
            x, y = _ternary_xy(path)
            ax.plot(x, y, color=color, lw=2.0, label=_alpha_label(alpha))
            mid = len(lams) // 2
            ax.plot(x[mid], y[mid], "o", color=color, ms=4)
        for dist, name, marker in ((p, "teacher p (λ = 1)", "s"), (q, "student q (λ = 0)", "D")):
            x, y = _ternary_xy(dist)
            ax.plot(x, y, marker=marker, ms=10, ls="none", color="k", label=name, zorder=5)
        ax.set_aspect("equal")
        ax.set_xlim(-0.08, 1.08)
        ax.set_ylim(-0.1, 0.95)
        ax.set_xlabel("barycentric x = r(token 2) + r(token 3)/2")
        ax.set_ylabel("barycentric y = (√3/2)·r(token 3)")
        ax.set_title("α-mixture paths r^(α,λ), λ from 0 (student) to 1 (teacher); dot: λ = ½")
        # a figure legend in its own row of the layout: never clipped at the edge
        fig.legend(
            *ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, framealpha=0.9
        )
    return fig


def mixture_bars_figure(
    teacher_logits=None,
    student_logits=None,
    alphas: Sequence[float] = (-math.inf, -3.0, -1.0, 1.0, 3.0, math.inf),
    lam: float = 0.5,
):
    """Bars of ``r^(α,λ)`` over a 6-token vocabulary for several α, with p and q.

    Parameters
    ----------
    teacher_logits, student_logits : array_like, shape (V,), optional
        Default: :data:`amid_ref.analysis.EXAMPLE_TEACHER_LOGITS` / ``..._STUDENT_...``.
    alphas : sequence of float
        Path parameters.
    lam : float
        Teacher weight.

    Returns
    -------
    matplotlib.figure.Figure
    """

    t = analysis.EXAMPLE_TEACHER_LOGITS if teacher_logits is None else teacher_logits
    s = analysis.EXAMPLE_STUDENT_LOGITS if student_logits is None else student_logits
    p, q = np.exp(_log_softmax(t)), np.exp(_log_softmax(s))
    v = p.size
    with _style():
        fig, (ax,) = _new_figure(9.0, 4.8)
        width = 0.8 / len(alphas)
        xs = np.arange(v)
        for i, (alpha, color) in enumerate(zip(alphas, _alpha_colors(alphas), strict=True)):
            r = amid_ref.alpha_mixture(p, q, alpha, lam)
            ax.bar(xs - 0.4 + (i + 0.5) * width, r, width, color=color, label=_alpha_label(alpha))
        ax.step(
            np.r_[xs - 0.5, v - 0.5],
            np.r_[p, p[-1]],
            where="post",
            color="k",
            lw=1.8,
            label="teacher p",
        )
        ax.step(
            np.r_[xs - 0.5, v - 0.5],
            np.r_[q, q[-1]],
            where="post",
            color="k",
            lw=1.5,
            ls="--",
            label="student q",
        )
        ax.set_xticks(xs, [f"token {i + 1}" for i in xs])
        ax.set_xlabel("vocabulary")
        ax.set_ylabel("probability")
        ax.set_title(f"α-mixture r^(α,λ) at λ = {lam:g}: α < 1 spreads mass, α > 1 concentrates")
        ax.legend(ncols=2)
    return fig


def normalizer_figure(
    p: np.ndarray | None = None,
    q: np.ndarray | None = None,
    alphas: Sequence[float] = (-math.inf, -5.0, -3.0, -1.0, 0.0, 1.0, 3.0, math.inf),
    n_lam: int = 201,
):
    """``Z_α`` as a function of λ for several α (``Z ≥ 1`` for α < −1, ``≤ 1`` for α > −1).

    Parameters
    ----------
    p, q : array_like, shape (V,), optional
        Teacher and student (default: the softmax of the example logits).
    alphas : sequence of float
        Path parameters; at α = ±∞ the curve is drawn on 0 < λ < 1 only (Z jumps to 1
        at the endpoints, where the mixture is q or p).
    n_lam : int
        Points per curve.

    Returns
    -------
    matplotlib.figure.Figure
    """

    if p is None:
        p = np.exp(_log_softmax(analysis.EXAMPLE_TEACHER_LOGITS))
    if q is None:
        q = np.exp(_log_softmax(analysis.EXAMPLE_STUDENT_LOGITS))
    lams = np.linspace(0.0, 1.0, n_lam)
    with _style():
        fig, (ax,) = _new_figure(10.0, 5.0)
        for alpha, color in zip(alphas, _alpha_colors(alphas), strict=True):
            grid = lams[1:-1] if math.isinf(alpha) else lams
            z = [amid_ref.alpha_mixture_normalizer(p, q, alpha, lam) for lam in grid]
            label = _alpha_label(alpha) + (" (0 < λ < 1)" if math.isinf(alpha) else "")
            ax.plot(
                grid, z, color=color, lw=2.0, ls="--" if math.isinf(alpha) else "-", label=label
            )
        ax.set_xlabel("λ (teacher weight)")
        ax.set_ylabel("Z_α = Σ_x m_α(p(x), q(x); λ)")
        ax.set_title("Normalizer of the α-mixture: Z = 1 at α = −1 and at λ ∈ {0, 1}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def weight_figure(
    alphas: Sequence[float] = (-math.inf, -5.0, -3.0, -1.0, 1.0, 3.0, 5.0, math.inf),
    lams: Sequence[float] = (0.1, 0.5),
    log_ratio_range: tuple[float, float] = (-6.0, 6.0),
):
    """The gradient weight ``w(x)`` of Proposition 3.5 against ``log(p(x)/q(x))``.

    Parameters
    ----------
    alphas : sequence of float
        Path parameters.
    lams : sequence of float
        One panel per teacher weight.
    log_ratio_range : (float, float)
        Range of ``log(p/q)``.

    Returns
    -------
    matplotlib.figure.Figure
    """

    d = np.linspace(*log_ratio_range, 481)
    with _style():
        fig, axes = _new_figure(5.0 * len(lams) + 1.3, 4.6, ncols=len(lams))
        for ax, lam in zip(axes, lams, strict=True):
            for alpha, style in zip(alphas, _alpha_styles(alphas), strict=True):
                w = amid_ref.alpha_mixture_weight(d, np.zeros_like(d), alpha, lam)
                ax.plot(d, w, lw=2.0, label=_alpha_label(alpha), **style)
            ax.axvline(0.0, color="0.5", lw=0.8)
            ax.set_xlabel("log(p(x)/q(x))  (> 0: student underestimates)")
            ax.set_ylabel("gradient weight w(x)")
            ax.set_title(f"Prop. 3.5 weight, λ = {lam:g}")
            ax.set_ylim(-0.03, 1.03)
        # one legend for both panels, beside them: it covers no curve
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", handlelength=2.6)
        fig.suptitle("Larger α weights tokens with p > q more: mode covering", fontsize=12.5)
    return fig


def convergence_figure(series=None):
    """The limit-convergence study (:func:`amid_ref.analysis.limit_convergence`) on log-log
    axes: error of ``r^(α,λ)`` against the distance to α = ±1 (left) and ±∞ (right).

    Parameters
    ----------
    series : list of ConvergenceSeries, optional
        Precomputed results (default: computed with the default arguments).

    Returns
    -------
    matplotlib.figure.Figure
    """

    if series is None:
        series = analysis.limit_convergence()
    with _style():
        fig, (left, right) = _new_figure(12.0, 4.9, ncols=2)
        markers = {"below": "v", "above": "^"}
        finite = [s for s in series if math.isfinite(s.limit_alpha)]
        infinite = [s for s in series if not math.isfinite(s.limit_alpha)]
        for ax, group in ((left, finite), (right, infinite)):
            colors = _alpha_colors(group)
            for s, color in zip(group, colors, strict=True):
                shown = s.errors > 0
                label = s.label + (
                    f": order {s.order:.2f}" if np.isfinite(s.order) else ": exponential"
                )
                ax.loglog(
                    s.distances[shown],
                    s.errors[shown],
                    marker=markers[s.side],
                    ms=4,
                    lw=1.4,
                    color=color,
                    label=label,
                )
            ax.set_ylabel("max_x |log r^(α) − log r^(limit)|")
        if finite:
            h = finite[0].distances
            left.loglog(h, h, color="k", ls=":", lw=1.2, label="slope 1 (reference)")
        left.set_xlabel("distance |α − α*| to α* = ±1")
        left.set_title("α → ±1: first order from both sides")
        right.set_xlabel("1/|α|")
        right.set_title("α → ±∞: order 1 for λ ≠ ½, exponential for λ = ½")
        left.legend(fontsize=8.5)
        right.legend(fontsize=8.5)
    return fig


def landscape_figure(
    alphas: Sequence[float] = (-5.0, -1.0, 1.0, 3.0),
    lam: float = 0.1,
    specs: Sequence[tuple[str, str, dict]] = (
        ("kl", "pr", {}),
        ("ab", "rq", {"alpha": 0.2, "beta": 0.7}),
    ),
    ts=None,
    floor: float = 1e-9,
):
    """The loss along a line of student logits through ``q = p`` (Theorem 3.4).

    The line is ``s(t) = teacher_logits + t·d`` with a fixed direction d
    (:func:`amid_ref.analysis.loss_along_line`); the loss is 0 at t = 0. Log scale, so
    that the second panel shows the boundary infimum: for α ≥ 1 and the orders ``qr``/``rq``
    the loss also tends to 0 as the student collapses onto fewer tokens (t → −∞ here).

    Parameters
    ----------
    alphas : sequence of float
        Path parameters.
    lam : float
        Teacher weight.
    specs : sequence of (divergence, order, params)
        One panel per entry.
    ts : array_like, optional
        Positions on the line (default ``linspace(-4, 4, 321)``).
    floor : float
        Lower limit of the log-scaled loss axis.

    Returns
    -------
    matplotlib.figure.Figure
    """

    ts = np.linspace(-4.0, 4.0, 321) if ts is None else np.asarray(ts)
    t = analysis.EXAMPLE_TEACHER_LOGITS
    direction = analysis.EXAMPLE_STUDENT_LOGITS - analysis.EXAMPLE_TEACHER_LOGITS
    with _style():
        fig, axes = _new_figure(5.8 * len(specs), 4.8, ncols=len(specs))
        for ax, (div, order, params) in zip(axes, specs, strict=True):
            for alpha, color in zip(alphas, _alpha_colors(alphas), strict=True):
                loss = analysis.loss_along_line(t, direction, ts, alpha, lam, div, order, params)
                ax.semilogy(
                    ts, np.maximum(loss, floor), color=color, lw=2.0, label=_alpha_label(alpha)
                )
            ax.axvline(0.0, color="k", lw=0.8, ls=":", label="q = p (t = 0)")
            ax.set_ylim(bottom=floor)
            shown = ",".join(f"{k}={v:g}" for k, v in params.items())
            ax.set_xlabel("t   (student logits = teacher + t·d)")
            ax.set_ylabel(f"AMiD loss (clipped at {floor:g})")
            ax.set_title(f"{div}{f'({shown})' if shown else ''}, order {order}, λ = {lam:g}")
            ax.legend(loc="lower right")
        fig.suptitle(
            "Optimality (Thm 3.4): loss 0 at q = p; for α ≥ 1 in orders qr/rq it also "
            "tends to 0 as q collapses (t → −∞)",
            fontsize=12,
        )
    return fig


def modes_figure(
    fits=None, alphas: Sequence[float] = (-5.0, -1.0, -0.5, 1.0, 5.0), lam: float = 0.1
):
    """A unimodal student fitted to a bimodal teacher for several α
    (:func:`amid_ref.analysis.mode_covering_study`). Fits whose students coincide (to 1e-3
    of the teacher's peak) are drawn as one curve whose legend entry names all their α.

    Parameters
    ----------
    fits : list of StudentFit, optional
        Precomputed fits (default: computed for ``alphas`` and ``lam``, KL, order pr).
    alphas : sequence of float
        Used when ``fits`` is not given.
    lam : float
        Used when ``fits`` is not given.

    Returns
    -------
    matplotlib.figure.Figure
    """

    if fits is None:
        fits = analysis.mode_covering_study(alphas, lam)
    grid = analysis.MODE_GRID
    p = np.exp(_log_softmax(analysis.bimodal_teacher_logits(grid)))
    # fits whose students agree to within a pixel are drawn once, with all their α
    groups: list[list] = []
    for fit in fits:
        q = np.exp(fit.student_log_probs)
        for group in groups:
            if np.max(np.abs(np.exp(group[0].student_log_probs) - q)) <= 1e-3 * max(
                p.max(), 1e-300
            ):
                group.append(fit)
                break
        else:
            groups.append([fit])
    with _style():
        fig, (ax,) = _new_figure(9.0, 4.8)
        ax.bar(grid, p, width=0.9, color="0.8", label="teacher p (bimodal)")
        styles = _alpha_styles([g[0].alpha for g in groups])
        for i, (group, style) in enumerate(zip(groups, styles, strict=True)):
            first = group[0]
            names = ", ".join(_alpha_label(f.alpha).removeprefix("α = ") for f in group)
            same = " (identical fits)" if len(group) > 1 else ""
            ax.plot(
                grid,
                np.exp(first.student_log_probs),
                # later curves thinner: where two nearly coincide, both stay visible
                lw=max(3.6 - 0.55 * i, 1.4),
                label=f"α = {names}: μ = {first.mean:.1f}, σ = {first.std:.1f}{same}",
                **style,
            )
        ax.set_xlabel("token (position on a line)")
        ax.set_ylabel("probability")
        lam_text = ", ".join(sorted({f"{f.lam:g}" for f in fits}))
        ax.set_title(
            f"Gaussian student fitted by AMiD ({fits[0].divergence}, {fits[0].order}, "
            f"λ = {lam_text})"
        )
        ax.legend()
    return fig


#: name -> (builder, one-line description). One registry for the CLI, verify and tests.
FIGURES: dict[str, tuple[Callable, str]] = {
    "paths": (paths_figure, "interpolation paths on the probability simplex"),
    "bars": (mixture_bars_figure, "r^(α,λ) over a small vocabulary for several α"),
    "normalizer": (normalizer_figure, "Z_α as a function of λ"),
    "weight": (weight_figure, "gradient weight w(x) of Prop. 3.5 against log(p/q)"),
    "convergence": (convergence_figure, "limit-convergence study (log-log)"),
    "landscape": (landscape_figure, "loss along a line through q = p"),
    "modes": (modes_figure, "unimodal student fitted to a bimodal teacher"),
}


def figure_to_png(fig) -> bytes:
    """Encode a figure as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render(name: str, out_dir: str | Path, **kwargs) -> Path:
    """Build figure ``name`` (a key of :data:`FIGURES`) and write ``out_dir/NAME.png``.

    Parameters
    ----------
    name : str
        Figure name.
    out_dir : str or Path
        Folder (created if missing).
    **kwargs
        Passed to the builder (e.g. precomputed ``series=`` or ``fits=``).

    Returns
    -------
    Path
        The written file.
    """
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)} or 'all'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig = FIGURES[name][0](**kwargs)
    path.write_bytes(figure_to_png(fig))
    return path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``amid-ref plot``."""
    parser.add_argument("name", help="one of the figures listed above, or 'all'", metavar="NAME")
    parser.add_argument(
        "--out", default=".", help="folder for NAME.png (created if missing; default: .)"
    )


def run(args: argparse.Namespace) -> int:
    """Render the requested figure(s) and print the paths written."""

    names = list(FIGURES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in FIGURES:
        raise ValueError(f"unknown figure {args.name!r}; choose from {', '.join(FIGURES)} or all")
    out = writable_dir(args.out)
    # each figure is rendered aside and moved into place once complete: Ctrl-C leaves the
    # figures finished so far and no partial file
    with staged_output(out) as work:
        for name in names:
            start = time.perf_counter()
            path = out / render(name, work).name
            os.replace(work / path.name, path)
            print(path)
            print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
