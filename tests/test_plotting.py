"""Every figure renders (Agg) to a non-trivial PNG with a title, axis labels, a legend and
readable fonts; ``amid-ref plot`` writes them."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib import image as mpimg
from matplotlib.text import Text

from amid_ref import analysis, plotting
from amid_ref.cli import main


@pytest.fixture(scope="module")
def built():
    """Each figure built once (the mode-covering fits take a few seconds)."""
    fits = analysis.mode_covering_study(alphas=(-5.0, 5.0), lam=0.1)
    kwargs = {"modes": {"fits": fits}}
    return {
        name: builder(**kwargs.get(name, {})) for name, (builder, _) in plotting.FIGURES.items()
    }


@pytest.mark.parametrize("name", list(plotting.FIGURES))
def test_figure_is_a_nontrivial_png(name, built, tmp_path):
    path = tmp_path / f"{name}.png"
    path.write_bytes(plotting.figure_to_png(built[name]))
    assert path.stat().st_size > 15_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert height >= 400 and width >= 600
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "blank image"
    # not one colour on a few pixels: drawn content covers a fair share of the image
    assert (rgb.mean(axis=-1) < 0.9).mean() > 0.02
    # no wide empty band between parts of the figure (say, a plot and its legend)
    blank = rgb.min(axis=-1) > 0.97
    for axis, size in ((0, width), (1, height)):
        assert _longest_inner_run(blank.all(axis=axis)) < 0.04 * size, f"{name}: empty band"


def _longest_inner_run(blank: np.ndarray) -> int:
    """The longest run of True between the first and the last False."""
    drawn = np.flatnonzero(~blank)
    longest = run = 0
    for empty in blank[drawn[0] : drawn[-1] + 1]:
        run = run + 1 if empty else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("name", list(plotting.FIGURES))
def test_figure_has_labels_title_legend_and_readable_fonts(name, built):
    fig = built[name]
    axes = fig.axes
    assert axes
    for ax in axes:
        assert ax.get_xlabel().strip(), f"{name}: missing x label"
        assert ax.get_ylabel().strip(), f"{name}: missing y label"
        assert ax.get_title().strip(), f"{name}: missing title"
    legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None] + fig.legends
    assert legends, f"{name}: no legend"
    for legend in legends:
        assert len(legend.get_texts()) >= 2
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()]
    assert min(sizes) >= 8.5, f"{name}: text smaller than 8.5 pt"


def _legend_texts(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + fig.legends
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def _legend_inside_an_axes(fig) -> bool:
    """Whether a legend box overlaps the drawing area of an axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + fig.legends
    boxes = [legend.get_window_extent(renderer) for legend in legends]
    return any(box.overlaps(ax.get_window_extent(renderer)) for box in boxes for ax in fig.axes)


def test_paths_marks_the_endpoints_and_every_alpha(built):
    labels = _legend_texts(built["paths"])
    assert any("teacher p" in x for x in labels) and any("student q" in x for x in labels)
    for alpha in ("−∞", "−3", "−1", "0", "1", "3", "+∞"):
        assert any(x.startswith(f"α = {alpha}") for x in labels), alpha


def test_paths_and_weight_legends_cover_no_curve(built):
    for name in ("paths", "weight"):
        assert not _legend_inside_an_axes(built[name]), name


def test_modes_draws_coinciding_fits_once_and_names_every_alpha():
    """Fits that coincide are one curve whose legend entry names all their α; every α of
    the fits appears in the legend, and no two drawn curves coincide."""
    from amid_ref import analysis

    fits = analysis.mode_covering_study((-5.0, -1.0, 1.0), lam=0.1)
    fig = plotting.modes_figure(fits)
    labels = _legend_texts(fig)
    for alpha in ("−5", "−1", "1"):
        assert any(re.search(rf"(= |, ){alpha}[,:]", x) for x in labels), (alpha, labels)
    curves = [line.get_ydata() for line in fig.axes[0].get_lines()]
    p_max = max(patch.get_height() for patch in fig.axes[0].patches)
    for i in range(len(curves)):
        for j in range(i):
            assert np.max(np.abs(curves[i] - curves[j])) > 1e-3 * p_max
    # α = −5 and −1 give the same one-mode student here: drawn once
    assert len(curves) == 2 and any("−5, −1" in x for x in labels)


def test_weight_figure_draws_the_library_weight(built):
    """The curves are amid_ref.alpha_mixture_weight, not a formula of the plotting module."""
    import amid_ref

    ax = built["weight"].axes[0]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "α = 3")
    x, y = line.get_data()
    want = amid_ref.alpha_mixture_weight(x, np.zeros_like(x), 3.0, 0.1)
    np.testing.assert_allclose(y, want, rtol=0, atol=0)
    assert y[0] < 0.1 < 0.9 < y[-1]  # larger α: more weight where p > q


def test_render_writes_file_and_rejects_unknown(tmp_path):
    path = plotting.render("bars", tmp_path / "sub")
    assert path == tmp_path / "sub" / "bars.png" and path.stat().st_size > 15_000
    with pytest.raises(ValueError, match="unknown figure"):
        plotting.render("nope", tmp_path)


def test_cli_plot(tmp_path, capsys):
    assert main(["plot", "normalizer", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "normalizer.png").exists()
    assert str(tmp_path / "normalizer.png") in capsys.readouterr().out
    assert main(["plot", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err
