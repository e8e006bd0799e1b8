"""What every ``amid-ref`` subcommand shares: help text, output folders, progress.

* :class:`HelpFormatter` renders the RST of docstrings and help strings (``literals``,
  ``:func:`roles```, ``:math:`…```, ``.. math::`` blocks) as plain text, so that no
  ``--help`` shows markup. :func:`amid_ref.cli.build_parser` gives it to every subcommand.
* :func:`prepare_out_dir` is the one rule for an ``--out`` folder that a command fills
  (``verify``, ``study``): missing or empty, or ``--force``. :func:`writable_dir` is the
  rule for a folder that only receives named files (``plot``). Both raise ``ValueError``
  with a one-line message, which the CLI turns into exit code 2.
* :class:`Progress` shows the steps of a long command: a live display with one line per
  running task (``rich``, from the ``progress`` extra) on a terminal, plain timestamped
  lines otherwise (CI logs, pipes, ``rich`` not installed). ETAs are shown only once a
  few items have finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from amid_ref._text import latex_to_text

# ---------------------------------------------------------------------------- help text

_ROLE = re.compile(r":(?:py:)?(?:func|data|mod|class|meth|attr|obj|exc|const|ref|term):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_MATH_BLOCK = re.compile(
    r"^([ \t]*)\.\. math::[ \t]*\n((?:[ \t]*\n)*)((?:\1[ \t]+\S.*\n?|[ \t]*\n)+)", re.M
)


def _tex(text: str) -> str:
    # a superscript group that is already in parentheses keeps one pair: r^(α,λ)
    return re.sub(r"\^\(\(([^()]*)\)\)", r"^(\1)", latex_to_text(text))


def plain_text(text: str | None) -> str | None:
    """``text`` with its RST markup rendered as plain text (for ``--help``)."""
    if not text:
        return text

    def block(m: re.Match) -> str:
        lines = [line.strip() for line in m.group(3).splitlines() if line.strip()]
        return "".join(f"{m.group(1)}    {_tex(line)}\n" for line in lines) + "\n"

    text = _MATH_BLOCK.sub(block, text)
    text = _MATH_ROLE.sub(lambda m: _tex(m.group(1)), text)
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return text.replace("::\n", ":\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of descriptions, renders their RST as plain text, and shows the
    default of every option that has one (unless its help already says it)."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain_text(action.help or "")
        if (
            "default" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


# ------------------------------------------------------------------------ output folders


def writable_dir(out: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create ``out`` if missing and check that files can be written in it.

    Raises
    ------
    ValueError
        If ``out`` is a file, cannot be created, or is not writable.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(out)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {str(out)!r}: cannot create the folder ({_why(exc)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(out)!r}: the folder is not writable")
    return path


def prepare_out_dir(out: str | os.PathLike[str], force: bool, option: str = "--out") -> Path:
    """The rule of ``verify`` and ``study`` for their output folder: it must be missing or
    empty, unless ``force`` (then the files the command writes are overwritten and any
    others are left alone). The folder is created.

    Raises
    ------
    ValueError
        If ``out`` is a file, a non-empty folder and ``force`` is false, or not writable.
    """
    path = Path(out)
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ValueError(
            f"{option} {str(out)!r} exists and is not empty; choose another folder or pass "
            "--force to overwrite the files this command writes there"
        )
    return writable_dir(path, option)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# ------------------------------------------------------------------------------ progress


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


#: Items that must have finished before an ETA is shown (the first ones include warm-up).
ETA_AFTER = 3


class Task:
    """One line of a :class:`Progress`: a title, ``done``/``total`` items and a note."""

    def __init__(self, progress: Progress, title: str, total: int | None) -> None:
        self._progress = progress
        self.title = title
        self.total = total
        self.done = 0
        self.note = ""
        self.start = time.monotonic()
        self._rich_id = None
        self._last_line = 0.0
        self._first = self.start  # when the first item finished

    def eta(self) -> float | None:
        """Seconds left at the pace of the items since the first one finished (the first
        item carries the warm-up); None before ``ETA_AFTER`` items have finished or when
        the total is unknown."""
        if self.total is None or self.done < max(2, min(ETA_AFTER, self.total)):
            return None
        pace = (time.monotonic() - self._first) / (self.done - 1)
        return pace * (self.total - self.done)

    def status(self) -> str:
        """``done/total``, elapsed time and ETA as text."""
        parts = []
        if self.total is not None:
            parts.append(f"{self.done}/{self.total}")
        parts.append(_clock(time.monotonic() - self.start))
        eta = self.eta()
        if self.total is not None and self.done < self.total:
            parts.append(f"eta {_clock(eta)}" if eta is not None else "eta –")
        return " ".join(parts)

    def update(
        self,
        *,
        done: int | None = None,
        advance: int = 0,
        total: int | None = None,
        note: str | None = None,
        title: str | None = None,
    ) -> None:
        """Change the counts, the note or the title; the display follows."""
        if total is not None:
            self.total = total
        if title is not None:
            self.title = title
        before = self.done
        if done is not None:
            if done == 0:
                self.start = time.monotonic()
            self.done = done
        self.done += advance
        if before == 0 and self.done > 0:
            self._first = time.monotonic()
        if note is not None:
            self.note = note
        self._progress._refresh(self)


class Progress:
    """Progress of a long command on ``stream`` (default stderr).

    On a terminal with ``rich`` installed, a live display keeps one line per running task
    (title, bar, done/total, elapsed, ETA, note) below the finished lines. Otherwise each
    change prints a plain line ``[  12.3 s] title: done/total elapsed eta M:SS note``, at
    most one every ``every`` seconds per task, plus every :meth:`log` line; with ``sink``
    the plain lines go, unstamped, to that callable instead. Safe to use from several
    threads.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        every: float = 10.0,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.sink = sink  # receives the plain lines, unstamped, instead of the stream
        self.t0 = time.monotonic()
        self.every = every
        self._lock = threading.RLock()
        if live is None:
            live = sink is None and bool(getattr(self.stream, "isatty", lambda: False)())
        self._rich = None
        if live:
            try:  # optional: rich (the progress extra) draws the live display
                import rich.console
                import rich.progress
            except ImportError:
                pass
            else:  # optional: rich, as above
                from rich.table import Column

                def fixed(width: int | None, **kw) -> Column:  # a layout that does not move
                    return Column(width=width, no_wrap=True, overflow="ellipsis", **kw)

                console = rich.console.Console(file=self.stream, highlight=False)
                self._rich = rich.progress.Progress(
                    rich.progress.TextColumn("{task.description}", table_column=fixed(34)),
                    rich.progress.BarColumn(bar_width=10, table_column=fixed(10)),
                    rich.progress.TextColumn("{task.fields[status]}", table_column=fixed(20)),
                    rich.progress.TextColumn(
                        "[dim]{task.fields[note]}", table_column=fixed(None, ratio=1)
                    ),
                    expand=True,
                    console=console,
                    transient=False,
                    refresh_per_second=4,
                )

    @property
    def live(self) -> bool:
        """Whether a live (terminal) display is used."""
        return self._rich is not None

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:6.1f} s]"

    def log(self, message: str) -> None:
        """Print one line (above the live display, or as a plain line)."""
        with self._lock:
            if self._rich is not None:
                self._rich.console.print(message, markup=False, highlight=False)
            elif self.sink is not None:
                self.sink(message)
            else:
                print(f"{self._stamp()} {message}", file=self.stream, flush=True)

    def task(self, title: str, total: int | None = None) -> Task:
        """Start a line of the display."""
        task = Task(self, title, total)
        with self._lock:
            if self._rich is not None:
                task._rich_id = self._rich.add_task(
                    title, total=total, status=task.status(), note=""
                )
            else:
                self.log(f"{title} ...")
                task._last_line = time.monotonic()
        return task

    def _refresh(self, task: Task, *, force: bool = False) -> None:
        with self._lock:
            if self._rich is not None:
                self._rich.update(
                    task._rich_id,
                    description=task.title,
                    total=task.total,
                    completed=task.done,
                    status=task.status(),
                    note=task.note,
                )
                return
            now = time.monotonic()
            # the end of a task is the caller's line (finish); here only the heartbeat
            if force or now - task._last_line >= self.every:
                task._last_line = now
                note = f" {task.note}" if task.note else ""
                self.log(f"{task.title}: {task.status()}{note}")

    def finish(self, task: Task, message: str) -> None:
        """End a task: its line becomes ``message`` (live) or ``message`` is printed."""
        with self._lock:
            if self._rich is not None:
                self._rich.remove_task(task._rich_id)
            self.log(message)

    @contextlib.contextmanager
    def ticking(self, task: Task, seconds: float = 1.0) -> Iterator[None]:
        """Keep ``task``'s elapsed time moving on the live display while a block runs
        that reports nothing (the plain mode prints nothing extra)."""
        if self._rich is None:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(seconds):
                self._refresh(task)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
