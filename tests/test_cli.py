"""What a user of ``amid-ref`` meets: help text, wrong invocations, output folders, progress.

Every subcommand's ``--help`` is plain text (no RST markup) and speaks of the project only;
usage errors print the subcommand's own usage and exit 2; errors of the options' values
(an unwritable or file ``--out``, a non-empty one without ``--force``) exit 2 with one
line on stderr and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import time
from pathlib import Path

import pytest

from amid_ref._cli import _util as _cli_util
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
    # public names only: a reader cannot use amid_ref._cli._verify_steps
    private = re.findall(r"\b(?:amid_ref|gpu|proofs_check)(?:\.\w+)*\._[a-z]\w*", text)
    assert not private, private


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


# ------------------------------------------------------- list options and negative numbers

_PQ = ["--p", "0.7,0.2,0.1", "--q", "0.1,0.3,0.6"]


def _parse(argv: list[str]):
    from amid_ref.cli import build_parser

    return build_parser(argv[0]).parse_args(argv)


# Every list option of every subcommand, with a value as the docs print it (a space after
# the option, a minus sign first) and what it must parse to.
LIST_OPTIONS = [
    (["mixture", *_PQ, "--alphas", "-5,-1"], "alphas", (-5.0, -1.0)),
    (["mixture", "--p", "-0.1,0.6,0.5", "--q", "0.1,0.3,0.6"], "p", (-0.1, 0.6, 0.5)),
    (["mixture", "--p", "0.7,0.2,0.1", "--q", "-1,1,1"], "q", (-1.0, 1.0, 1.0)),
    (["study", "--quick", "--alphas", "-5,-1"], "alphas", (-5.0, -1.0)),
    (["study", "--quick", "--alphas", "-inf,inf"], "alphas", (-math.inf, math.inf)),
    (["study", "--quick", "--lams", "-0.1,0.5"], "lams", (-0.1, 0.5)),
    (["study", "--quick", "--seeds", "-1,2"], "seeds", (-1, 2)),
    (["conform", "m:f", "--alpha-range", "-10,10"], "alpha_range", "-10,10"),
    (["conform", "m:f", "--alpha-range", "-inf,inf"], "alpha_range", "-inf,inf"),
    (["conform", "m:f", "--lam-range", "-0.1,0.5"], "lam_range", "-0.1,0.5"),
]


@pytest.mark.parametrize(
    "argv,dest,want", LIST_OPTIONS, ids=[f"{a[0]}-{d}-{a[-1]}" for a, d, _ in LIST_OPTIONS]
)
def test_list_options_take_negative_numbers_as_the_docs_print_them(argv, dest, want):
    assert getattr(_parse(argv), dest) == want
    # the other spelling says the same
    joined = [*argv[:-2], f"{argv[-2]}={argv[-1]}"]
    assert getattr(_parse(joined), dest) == want


def test_every_option_that_takes_a_value_takes_a_negative_one(capsys):
    """No option of any subcommand reads '-1,-2' as a missing value: argparse either takes
    it or refuses it for what it is (an invalid choice or number), never with 'expected
    one argument'."""
    import argparse

    from amid_ref.cli import build_parser

    checked = 0
    for command in SUBCOMMANDS:
        parser = build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
                continue
            with pytest.raises(SystemExit):  # the value is consumed, then --help exits
                sub.parse_args([action.option_strings[-1], "-1,-2", "--help"])
            err = capsys.readouterr().err
            assert "expected one argument" not in err, (command, action.option_strings)
            checked += 1
    assert checked >= 30


def test_list_option_errors_name_the_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mixture", *_PQ, "--alphas", "-5,x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --alphas: expected comma-separated numbers, got '-5,x'" in err
    assert main(["study", "--quick", "--seeds", "-1,2"]) == 2
    assert "--seeds must be >= 0" in _one_line_error(capsys, "amid-ref study: error:")
    assert main(["study", "--quick", "--lams", "-0.1,0.5"]) == 2
    assert "λ must lie in [0, 1]" in _one_line_error(capsys, "amid-ref study: error:")
    assert main(["conform", "m:f", "--alpha-range", "-10"]) == 2
    assert "--alpha-range" in _one_line_error(capsys, "amid-ref conform: error:")


def test_study_takes_the_negative_alphas_into_its_configuration():
    from amid_ref.study import config_from_args

    cfg = config_from_args(_parse(["study", "--quick", "--alphas", "-5,-1", "--seeds", "0"]))
    assert cfg.alphas == (-5.0, -1.0) and cfg.seeds == (0,)


def test_mixture_prints_negative_alphas(capsys):
    assert main(["mixture", *_PQ, "--alphas", "-5,-1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["alpha"] for row in rows] == [-5.0, -1.0]
    # α = -1 is the arithmetic mixture: r = λp + (1-λ)q, Z = 1
    assert rows[1]["r"] == pytest.approx([0.4, 0.25, 0.35], abs=1e-15)
    assert rows[1]["Z"] == pytest.approx(1.0, abs=1e-15)


def test_mixture_shows_undefined_rows_and_the_others(capsys):
    """Disjoint supports: α ≥ 1 keeps only their (empty) intersection, so those rows are
    undefined, with the reason; α < 1 rows are printed."""
    argv = ["mixture", "--p", "1,0,0", "--q", "0,0.5,0.5"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    undefined = [line.split()[0] for line in lines if "undefined:" in line]
    assert undefined == ["1", "3", "5", "+∞"]
    assert all("intersection of the supports" in line for line in lines if "undefined" in line)
    arithmetic = next(line for line in lines if line.split()[0] == "-1")
    assert arithmetic.split()[1:5] == ["0.500000", "0.250000", "0.250000", "1.000000"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sum("undefined" in row for row in rows) == 4 and len(rows) == 10
    # a bad input is still refused as a whole
    assert main(["mixture", "--p", "1,0,0", "--q", "0,0.5,0.6"]) == 2
    assert "q" in _one_line_error(capsys, "amid-ref mixture: error:")


# ------------------------------------------------------------- output folders and Ctrl-C


def test_staged_output_leaves_the_folder_as_it_was_when_interrupted(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), _cli_util.staged_output(out) as work:
        (work / "figure.png").write_bytes(b"half")
        raise KeyboardInterrupt
    assert not out.exists()  # created by the call, removed again
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), _cli_util.staged_output(out) as work:
        (work / "report.md").write_text("half")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    with _cli_util.staged_output(out) as work:
        (work / "figures").mkdir()
        (work / "figures" / "a.png").write_bytes(b"png")
        (work / "keep.txt").write_text("new")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "figures",
        "figures/a.png",
        "keep.txt",
    ]
    assert (out / "keep.txt").read_text() == "new"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_a_killed_runs_leftovers_do_not_block_the_rerun(tmp_path):
    """A run killed outright (no chance to clean up) leaves its staging folder: the folder
    still counts as empty for the next run, which removes the leftovers when it ends. A
    staging folder of a run that is still running makes the folder busy."""
    out = tmp_path / "out"
    leftover = out / f"{_cli_util.STAGING_PREFIX}{_dead_pid()}-abc"
    leftover.mkdir(parents=True)
    (leftover / "convergence.png").write_bytes(b"half")
    assert _cli_util.prepare_out_dir(out, False) == out
    with _cli_util.staged_output(out) as work:
        (work / "report.md").write_text("done")
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    busy = out / f"{_cli_util.STAGING_PREFIX}{os.getpid()}-xyz"
    busy.mkdir()
    with pytest.raises(ValueError, match="being written by another amid-ref run"):
        _cli_util.prepare_out_dir(out, True)


def test_study_outputs_are_written_aside_then_moved(tmp_path, monkeypatch):
    """An interrupted write of the study's outputs (the figures come last) leaves the
    folder as it was."""
    pytest.importorskip("torch")
    from amid_ref.study import _sweep

    def interrupted(study, folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "metric_vs_alpha.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(_sweep, "plot_all", interrupted)
    study = _sweep.StudyResult(config=_sweep.quick_config(), runs=[], seconds=0.0)
    out = tmp_path / "study"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _sweep.write_outputs(study, out)
    assert list(out.iterdir()) == []


def test_verify_in_a_read_only_directory_says_to_use_out(tmp_path, monkeypatch, capsys):
    import errno

    from amid_ref import verify

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(verify.Path, "mkdir", read_only)
    assert main(["verify", "--quick"]) == 2
    err = _one_line_error(capsys, "amid-ref verify: error: cannot create the report folder")
    assert "Read-only file system" in err and "--out DIR" in err
    monkeypatch.undo()
    monkeypatch.setattr(_cli_util.Path, "mkdir", read_only)
    assert main(["study", "--quick", "--out", str(tmp_path / "s")]) == 2
    err = _one_line_error(capsys, "amid-ref study: error: --out")
    assert "Read-only file system" in err and "--out DIR" in err


def _sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of the commands these tests interrupt: SIGINT at its default action
    and unblocked, as a command typed in a terminal starts. A process started in the
    background of a non-interactive shell (``pytest ... &``, and so its xdist workers)
    ignores SIGINT, and a child inherits that: its Python would then never raise
    KeyboardInterrupt, whatever the command does."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _Command:
    """``python -m amid_ref ARGV`` in a subprocess of its own process group, its output
    going to files that can be read while it runs."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        import subprocess
        import sys

        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}
        self.out_file, self.err_file = cwd / "stdout.txt", cwd / "stderr.txt"
        with open(self.out_file, "w") as out, open(self.err_file, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "amid_ref", *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # a process group: Ctrl-C reaches its workers too
                preexec_fn=_sigint_as_in_a_terminal,
            )

    @property
    def err(self) -> str:
        return self.err_file.read_text()

    def workers(self) -> list[int]:
        """Process ids of its worker processes (multiprocessing's spawned children; not
        its resource tracker, which ends by itself after its parent), from /proc."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):  # ended meanwhile
                continue
            if ppid == self.proc.pid and b"spawn_main" in cmdline:
                found.append(int(proc.name))
        return found

    def ctrl_c_when(self, ready, *, timeout: float = 120.0, kill: bool = False) -> str:
        """Send what Ctrl-C sends (SIGINT to the process group) once ``ready()`` holds,
        wait for the end and return what it printed on stderr."""
        import signal

        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"the command ended first:\n{self.err}"
            assert time.monotonic() < deadline, f"the command never got there:\n{self.err}"
            time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except BaseException:  # it did not stop: leave nothing running behind the test
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        return self.err


def _staging(out: Path) -> list[Path]:
    return list(out.glob(f"{_cli_util.STAGING_PREFIX}*")) if out.is_dir() else []


def _assert_interrupted(command: _Command, err: str, name: str) -> None:
    assert command.proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"amid-ref {name}: interrupted; its unfinished output was removed"
    ), err


def _run_cli_with(tmp_path: Path, body: str, command: str):
    """``python -m`` of a module whose ``amid_ref.cli._main`` is ``body`` (the source of
    ``def _main(argv, command)``), ``main`` run as the program runs it; the finished
    process."""
    import subprocess
    import sys

    (tmp_path / "patched_cli.py").write_text(
        f"import sys, time, weakref\nfrom amid_ref import cli\n{body}"
        "cli._main = _main\nsys.exit(cli.main())\n"
    )
    path = os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "patched_cli", command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_sigint_as_in_a_terminal,
    )


#: The rest of a patched ``_main`` that would run for 10 s and then succeed.
_RUNS_10_S = (
    "    end = time.monotonic() + 10\n"
    "    while time.monotonic() < end:\n"
    "        time.sleep(0.01)\n"
    "    return 0\n"
)


def _assert_ends_interrupted(tmp_path: Path, body: str, command: str, within: float = 8.0):
    """``python -m`` of a patched ``_main`` (``body``) ends as interrupted: exit code 130,
    the one line on stderr and nothing else, within ``within`` seconds."""
    start = time.monotonic()
    done = _run_cli_with(tmp_path, body, command)
    assert done.returncode == 130, done.stderr
    assert done.stderr == f"amid-ref {command}: interrupted; its unfinished output was removed\n"
    assert time.monotonic() - start < within


def test_interrupt_inside_string_code_still_exits_130(tmp_path):
    """A Ctrl-C that leaves code run from a string (``exec`` of source text, as dataclasses
    build their methods while torch and SymPy import) and is handled by ``main`` ends
    ``python -m`` with 130: CPython would otherwise end it with SIGINT (exit code −2)."""
    body = "def _main(argv, command):\n    exec('raise KeyboardInterrupt', {})\n"
    _assert_ends_interrupted(tmp_path, body, "verify", within=120.0)


def test_interrupt_lost_in_a_callback_still_ends_the_command(tmp_path):
    """A Ctrl-C that lands in a weakref callback (as in importlib's bookkeeping during an
    import) cannot be raised there; CPython would print it as "Exception ignored" and the
    command would run on. ``python -m`` raises it again in the main thread: 130 and the one
    line, long before the command's 10 s."""
    body = (
        "class Held:\n"
        "    pass\n"
        "def interrupt(_):\n"
        "    raise KeyboardInterrupt\n"
        "def _main(argv, command):\n"
        "    held = Held()\n"
        "    ref = weakref.ref(held, interrupt)\n"
        "    del held\n"
    ) + _RUNS_10_S
    _assert_ends_interrupted(tmp_path, body, "study")


def test_interrupt_swallowed_by_a_bare_except_still_ends_the_command(tmp_path):
    """A Ctrl-C caught by a dependency's bare ``except:`` (mpmath's ``from_float`` catches
    one so while the precise oracle runs, and returns NaN) is delivered again: 130 and the
    one line, long before the command's 10 s."""
    body = (
        "import os, signal\n"
        "def _main(argv, command):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "    except:  # noqa: E722 (the bare except under test)\n"
        "        pass\n"
    ) + _RUNS_10_S
    _assert_ends_interrupted(tmp_path, body, "verify")


def test_interrupt_cleanup_runs_to_its_end(tmp_path):
    """The cleanup that a Ctrl-C runs on its way out (a ``finally`` block, here 0.5 s long)
    is not cut short by the repeated deliveries that catch a lost Ctrl-C."""
    body = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "def _main(argv, command):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "    finally:\n"
        "        end = time.monotonic() + 0.5\n"
        "        while time.monotonic() < end:\n"
        "            time.sleep(0.01)\n"
        "        Path('cleaned').write_text('yes')\n"
        "    return 0\n"
    )
    _assert_ends_interrupted(tmp_path, body, "plot")
    assert (tmp_path / "cleaned").read_text() == "yes"


@pytest.mark.slow
def test_interrupted_verify_can_be_rerun_at_once(tmp_path):
    """Ctrl-C once the first figure is written (the claims run in a second process then):
    one line, exit code 130, and --out as it was; the same command then runs, also after
    a run that was killed outright."""
    out = tmp_path / "report"
    argv = ["verify", "--quick", "--out", str(out)]
    command = _Command(argv, tmp_path)
    err = command.ctrl_c_when(lambda: any(any(p.glob("*.png")) for p in _staging(out)))
    _assert_interrupted(command, err, "verify")
    assert not out.exists()
    # the rerun gets past the --out rule; killed outright, it leaves its staging folder
    command = _Command(argv, tmp_path)
    command.ctrl_c_when(lambda: bool(_staging(out)), kill=True)
    assert command.proc.returncode == -9 and _staging(out)
    # which does not block the next run either
    command = _Command(argv, tmp_path)
    err = command.ctrl_c_when(lambda: len(_staging(out)) == 2)
    _assert_interrupted(command, err, "verify")
    assert len(_staging(out)) == 1  # the killed run's


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_interrupted_study_stops_its_worker_processes(tmp_path):
    """Ctrl-C while two worker processes train: one line, exit code 130 at once (the runs
    would take minutes), no worker left running and no traceback from any of them."""
    pytest.importorskip("torch")
    out = tmp_path / "study"
    argv = ["study", "--steps", "100000", "--experiments", "alpha", "--alphas", "-1,0",
            "--seeds", "0", "--vocab-size", "64", "--jobs", "2", "--threads", "1",
            "--no-plots", "--out", str(out)]  # fmt: skip
    command = _Command(argv, tmp_path)
    workers: list[int] = []

    def training() -> bool:
        workers[:] = command.workers()
        return "runs ..." in command.err and len(workers) >= 2

    err = command.ctrl_c_when(training)
    _assert_interrupted(command, err, "study")
    assert not out.exists()
    for pid in workers:  # gone, or a zombie: stopped; a live worker is a failure
        with contextlib.suppress(FileNotFoundError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            assert state == "Z", f"worker {pid} still running ({state})"


@pytest.mark.slow
def test_interrupted_plot_keeps_only_finished_figures(tmp_path):
    from PIL import Image

    out = tmp_path / "figures"
    command = _Command(["plot", "all", "--out", str(out)], tmp_path)
    err = command.ctrl_c_when(lambda: out.is_dir() and any(out.glob("*.png")))
    _assert_interrupted(command, err, "plot")
    assert not _staging(out)
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.verify()  # a complete file


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_live_display_hides_ctrl_c_echo_and_leaves_no_bar(monkeypatch):
    """On a terminal the echoed ^C would push the live display down a line and leave a
    stale copy of its bars: echo of control characters is off while it runs, restored
    after; tasks still running when the display ends (Ctrl-C, an error) are removed."""
    pytest.importorskip("rich")
    import termios

    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w", encoding="utf-8")
    try:
        before = termios.tcgetattr(follower)[3]
        assert before & termios.ECHOCTL  # a new terminal echoes ^C
        with pytest.raises(KeyboardInterrupt), _cli_util.Progress(stream) as ui:
            assert ui.live
            assert not termios.tcgetattr(follower)[3] & termios.ECHOCTL
            ui.task("[4/5] Figures", 7).update(advance=5)
            raise KeyboardInterrupt
        assert termios.tcgetattr(follower)[3] == before
        assert list(ui._rich.task_ids) == []
    finally:
        stream.close()
        os.close(leader)


def test_a_missing_optional_dependency_is_one_line(tmp_path, monkeypatch, capsys):
    """A lighter install (README: install profiles) lacks matplotlib: verify says which
    package it needs, exit code 2, and leaves no folder behind."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    out = tmp_path / "report"
    assert main(["verify", "--quick", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "amid-ref verify: error: it needs matplotlib")
    assert "amid-ref[all]" in err
    assert not out.exists()
