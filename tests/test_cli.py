"""What a user of ``amid-ref`` meets: help text, wrong invocations, output folders, progress.

Every subcommand's ``--help`` is plain text (no RST markup) and speaks of the project only;
usage errors print the subcommand's own usage and exit 2; errors of the options' values
(an unwritable or file ``--out``, a non-empty one without ``--force``) exit 2 with one
line on stderr and no traceback.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest

from amid_ref import _cli_util
from amid_ref.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]

# Words about how a text was made rather than about the project.
PROCESS_WORDS = re.compile(
    r"\bthe issue\b|\bissue's\b|\bissue \d+|\bthis session\b|\bthe session\b|"
    r"\bgpu session\b|\bdevice draw\b|\bthe draw\b|\bagents?\b|\bagents'|\bthe audit\b|"
    r"\bhelpers? (?:session|engineer)|\bnot measured in this\b",
    re.I,
)
RAW_RST = re.compile(r"``|:(?:mod|func|class|meth|data|attr|math|obj|exc):`|\.\. math::|::\n")


def _help(command: str | None, capsys) -> str:
    argv = ([command] if command else []) + ["--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.strip()
    return out


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_is_plain_text_about_the_project(command, capsys):
    text = _help(command, capsys)
    assert not RAW_RST.search(text), RAW_RST.search(text)
    assert not PROCESS_WORDS.search(text), PROCESS_WORDS.search(text)


def test_help_formatter_renders_rst():
    text = _cli_util.plain_text(
        "Uses :func:`~amid_ref.amid_loss` on ``x``, :math:`r^{(\\alpha,\\lambda)}`.\n\n"
        "Example::\n\n    amid-ref plot all\n\n.. math::\n\n    Z_\\alpha = \\sum_x m\n"
    )
    assert "amid_ref.amid_loss on x, r^(α,λ)." in text
    assert "Example:\n" in text and "Z_α = Σ_x m" in text
    assert not RAW_RST.search(text)


def test_plot_help_lists_each_figure_once(capsys):
    from amid_ref.plotting import FIGURES

    text = _help("plot", capsys)
    for name in FIGURES:
        assert len(re.findall(rf"\b{name}\b:", text)) == 1, name


def test_study_help_shows_the_defaults(capsys):
    text = " ".join(_help("study", capsys).split())
    for option in ("--steps", "--lr", "--batch-size", "--seeds", "--alphas", "--jobs"):
        assert re.search(rf"{option} \S+ .*?\(default: [^)]+\)", text), option
    assert "training steps per run (default: 200; --quick: 60)" in text


def test_docs_and_readme_speak_of_the_project():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pages += [ROOT / "notebooks" / "README.md", *sorted((ROOT / "notebooks").glob("*.py"))]
    found = []
    for page in pages:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if PROCESS_WORDS.search(line):
                found.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------- wrong invocations


def _one_line_error(capsys, prefix: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(prefix), err
    return err


def test_unknown_option_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mixture", "--p", "0.5,0.5", "--q", "0.5,0.5", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: amid-ref mixture"), err
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_plot_out_that_cannot_be_a_folder_exits_2(where, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile if where == "file" else afile / "sub"
    assert main(["plot", "normalizer", "--out", str(out)]) == 2
    _one_line_error(capsys, "amid-ref plot: error: --out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_plot_out_not_writable_exits_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["plot", "normalizer", "--out", str(locked)]) == 2
    finally:
        locked.chmod(0o700)
    _one_line_error(capsys, "amid-ref plot: error: --out")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_plot_out_in_proc_exits_2(capsys):
    assert main(["plot", "normalizer", "--out", "/proc/amid-ref-no-such-dir"]) == 2
    _one_line_error(capsys, "amid-ref plot: error: --out")


@pytest.mark.parametrize("command", ["study", "verify"])
def test_study_and_verify_share_the_out_rule(command, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    argv = [command, "--quick", "--out", str(out)]
    assert main(argv) == 2
    err = _one_line_error(capsys, f"amid-ref {command}: error: --out")
    assert "not empty" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main([command, "--quick", "--out", str(afile), "--force"]) == 2
    assert "not a folder" in _one_line_error(capsys, f"amid-ref {command}: error: --out")


def test_prepare_out_dir_rule(tmp_path):
    fresh = tmp_path / "a" / "b"
    assert _cli_util.prepare_out_dir(fresh, False) == fresh and fresh.is_dir()
    assert _cli_util.prepare_out_dir(fresh, False) == fresh  # empty: fine
    (fresh / "x").write_text("x")
    with pytest.raises(ValueError, match=r"not empty.*--force"):
        _cli_util.prepare_out_dir(fresh, False)
    assert _cli_util.prepare_out_dir(fresh, True) == fresh


# ------------------------------------------------------------------------------ progress


def test_plain_progress_lines_and_honest_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_cli_util.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    ui = _cli_util.Progress(sink=lines.append, every=0.0)
    assert not ui.live
    task = ui.task("[1/2] work", 5)
    clock[0] += 30.0  # the first item carries the warm-up
    task.update(advance=1)
    assert task.eta() is None and "eta –" in lines[-1]
    clock[0] += 1.0
    task.update(advance=1)
    assert task.eta() is None  # fewer than ETA_AFTER items
    clock[0] += 1.0
    task.update(advance=1)
    # pace since the first item: 2 s for 2 items; 2 left
    assert task.eta() == pytest.approx(2.0)
    assert lines[-1] == "[1/2] work: 3/5 0:32 eta 0:02"
    ui.finish(task, "[1/2] work: PASS in 33.0 s")
    assert lines[0] == "[1/2] work ..." and lines[-1] == "[1/2] work: PASS in 33.0 s"


def test_progress_is_plain_when_not_a_terminal():
    stream = io.StringIO()
    with _cli_util.Progress(stream) as ui:
        task = ui.task("step", 2)
        task.update(advance=2)
        ui.finish(task, "step: done")
    assert not ui.live
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\[\s+\d+\.\d s\] step \.\.\.", lines[0])
    assert lines[-1].endswith("step: done") and "\x1b[" not in stream.getvalue()


def test_progress_live_display_on_a_terminal():
    pytest.importorskip("rich")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with _cli_util.Progress(stream) as ui:
        task = ui.task("[1/1] step", 4)
        for _ in range(4):
            task.update(advance=1, note="item")
            time.sleep(0.01)
        ui.finish(task, "[1/1] step: PASS")
    assert ui.live
    assert "[1/1] step: PASS" in stream.getvalue()


def test_validation_sweep_reports_each_item():
    """The sweep step's display moves during the long loss sweep: one call per case and
    divergence, counting up to the announced total."""
    from dataclasses import replace

    from amid_ref import analysis

    plan = replace(
        analysis.SWEEP_PLANS["quick"],
        loss_cases=("random", "masked"),
        loss_alphas=(0.5,),
        loss_lams=(0.5,),
        temperatures=(1.0,),
        loss_divergences=analysis.SWEEP_PLANS["quick"].loss_divergences[:2],
    )
    calls: list[tuple[str, int, int]] = []
    (summary,) = analysis.validation_sweep(
        plan=plan, quantities=("loss",), on_item=lambda *c: calls.append(c), dps=30
    )
    assert summary.passed
    total = 2 * len(plan.loss_divergences)
    assert calls == [("loss", k, total) for k in range(total + 1)]
