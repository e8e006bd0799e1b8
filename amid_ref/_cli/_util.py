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
* :class:`ArgumentParser` is the parser of every subcommand: an argument that starts like
  a negative number (``-5,-1``, ``-inf,inf``, ``-0.1``) is a value, so list options take
  negative numbers as the docs print them (``--alphas -5,-1``). :func:`float_list` and
  :func:`int_list` are the types of the list options.
* :func:`staged_output` writes a command's files into a private folder inside ``--out``
  and moves them into place only when the command has finished: an interrupted run leaves
  ``--out`` as it found it, so the same command can be run again at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from amid_ref._cli._text import latex_to_text

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


# ---------------------------------------------------------------------------- arguments

# A value that starts like a negative number: a number (digits, a decimal point, an
# exponent), inf, infinity or nan after the minus sign, possibly the first item of a
# comma-separated list. argparse's own pattern (-5, -0.5) misses lists and infinities and
# would read "--alphas -5,-1" as an option with no value.
NEGATIVE_NUMBER = re.compile(
    r"^-(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)(?:,.*)?$", re.IGNORECASE
)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose options take values that start with a minus sign
    when they look like numbers or lists of numbers (:data:`NEGATIVE_NUMBER`):
    ``--alphas -5,-1`` as well as ``--alphas=-5,-1``. Subparsers made by
    ``add_subparsers`` are of the same class. (No option of ``amid-ref`` looks like a
    negative number, which argparse requires for this reading.)"""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER


def _number_list(kind: type, text: str) -> tuple:
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    try:
        return tuple(kind(item) for item in items if item)
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    """Type of a list option: ``"-5,-1,0.5,inf"`` → ``(-5.0, -1.0, 0.5, inf)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If an item is not a number, or the list is empty (argparse reports it with the
        option's name and exits with code 2).
    """
    return _number_list(float, text)


def int_list(text: str) -> tuple[int, ...]:
    """Type of a list option of integers: ``"0,1,2"`` → ``(0, 1, 2)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If an item is not an integer, or the list is empty.
    """
    return _number_list(int, text)


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
        raise ValueError(
            f"{option} {str(out)!r}: cannot create the folder ({_why(exc)}); "
            f"choose a writable folder with {option} DIR"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"{option} {str(out)!r}: the folder is not writable; "
            f"choose a writable folder with {option} DIR"
        )
    return path


def prepare_out_dir(out: str | os.PathLike[str], force: bool, option: str = "--out") -> Path:
    """The rule of ``verify`` and ``study`` for their output folder: it must be missing or
    empty, unless ``force`` (then the files the command writes are overwritten and any
    others are left alone). The folder is created. What a run that was killed outright
    left behind (its staging folder, see :func:`staged_output`) does not count: such a
    folder reads as empty, so the run can simply be repeated.

    Raises
    ------
    ValueError
        If ``out`` is a file, a non-empty folder and ``force`` is false, not writable, or
        being written by another run of ``amid-ref`` that is still running.
    """
    path = Path(out)
    if path.is_dir():
        busy = [pid for pid in map(_staging_pid, path.iterdir()) if pid and _alive(pid)]
        if busy:
            raise ValueError(
                f"{option} {str(out)!r} is being written by another amid-ref run "
                f"(process {busy[0]}); wait for it or choose another folder"
            )
        others = [entry for entry in path.iterdir() if _staging_pid(entry) is None]
        if others and not force:
            raise ValueError(
                f"{option} {str(out)!r} exists and is not empty; choose another folder or "
                "pass --force to overwrite the files this command writes there"
            )
    return writable_dir(path, option)


#: Name prefix of the private folder in which a command writes its files (followed by its
#: process id): see :func:`staged_output`.
STAGING_PREFIX = ".amid-ref-incomplete-"


def _staging_pid(entry: Path) -> int | None:
    """The process id in the name of a staging folder, None for any other entry."""
    if not entry.name.startswith(STAGING_PREFIX) or not entry.is_dir():
        return None
    pid = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _move_into(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst``, replacing what has the same name (folders
    are merged)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _move_into(entry, target)
            entry.rmdir()
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


@contextlib.contextmanager
def staged_output(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a command's files into a private folder and move them into ``out`` at the end.

    Yields a new folder ``out/.amid-ref-incomplete-PID-XXXX`` for the command to write
    into. When the block finishes, its files are moved into ``out`` (replacing files of
    the same name) and the folder is removed; leftovers of earlier runs of amid-ref that
    were killed outright are removed too. When the block raises, Ctrl-C
    (``KeyboardInterrupt``) included, the folder is removed, and so is ``out`` itself if
    this call created it and it is empty: ``out`` is left as it was found, and the same
    command can be run again at once.
    """
    path = Path(out)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=path))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty
        raise
    _move_into(work, path)
    work.rmdir()
    for entry in path.iterdir():
        pid = _staging_pid(entry)
        if pid is not None and not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def stop_workers(pool) -> None:
    """Stop a ``concurrent.futures.ProcessPoolExecutor`` now: pending work is cancelled
    and the worker processes are terminated (``shutdown`` alone waits for the running
    work items, which can take minutes after a Ctrl-C)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, and the
    parent, not each worker, handles it (:func:`stop_workers`), so workers print no
    traceback of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Start worker processes in this block: they begin with Ctrl-C (SIGINT) blocked.

    A forked or spawned process inherits the signal mask of the thread that starts it, so
    a worker cannot be interrupted before its initializer (:func:`ignore_interrupts`) has
    run, which a spawned Python would otherwise report with a traceback of its own. Here
    the signal is only deferred: a Ctrl-C during the block is delivered when it ends (or
    at once through another thread), and the parent stops the workers
    (:func:`stop_workers`). Where signal masks do not exist, nothing changes.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


def _quiet_ctrl_echo(stream: TextIO) -> list | None:
    """Stop the terminal of ``stream`` from echoing control characters (``^C``) while a
    live display runs, and return the previous mode (None where there is no such
    terminal). The echoed ``^C`` would push the display down a line, and the display,
    redrawn from where it believes it is, would leave a stale copy of its lines."""
    try:
        import termios  # optional: POSIX only (no such terminal control on Windows)
    except ImportError:
        return None
    try:
        fd = stream.fileno()
        mode = termios.tcgetattr(fd)
        termios.tcsetattr(fd, termios.TCSANOW, [*mode[:3], mode[3] & ~termios.ECHOCTL, *mode[4:]])
    except (AttributeError, OSError, ValueError, termios.error):
        return None
    return mode


def _restore_tty(stream: TextIO, mode: list | None) -> None:
    if mode is None:
        return
    import termios  # optional: POSIX only (a mode was saved, so it is there)

    with contextlib.suppress(AttributeError, OSError, ValueError, termios.error):
        termios.tcsetattr(stream.fileno(), termios.TCSANOW, mode)


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
        self._tty_mode: list | None = None
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
            self._tty_mode = _quiet_ctrl_echo(self.stream)
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            # the display's last frame stays on the terminal: without the tasks still
            # running (after Ctrl-C or an error) it holds no stale bar
            with self._lock:
                for task_id in list(self._rich.task_ids):
                    self._rich.remove_task(task_id)
                self._rich.refresh()
            self._rich.stop()
            _restore_tty(self.stream, self._tty_mode)

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
