"""Command-line interface: ``amid-ref`` and ``python -m amid_ref``.

Subcommands live in their own modules, each exposing ``configure_parser(parser)`` and
``run(args) -> int``. The registry below is the one place that names them; a module that
is not importable (an optional extra not installed) is reported when its subcommand is
used, not at start-up. Every parser formats its help with
:class:`amid_ref._cli._util.HelpFormatter` (docstring RST rendered as plain text, defaults
shown), and every parser is :class:`amid_ref._cli._util.ArgumentParser`, whose options take
negative numbers and lists as the docs print them (``--alphas -5,-1``). Errors of usage and
of the options' values exit with code 2 and a one-line message; Ctrl-C exits with code 130
and one line.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import importlib
import signal
import sys
import threading

from amid_ref._cli._util import ArgumentParser, HelpFormatter
from amid_ref._version import __version__

# name -> (module, one-line help). One registry for the subcommands.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "mixture": (
        "amid_ref._cli._mixture_command",
        "print r^(α,λ), Z_α and divergences over an α grid",
    ),
    "verify": ("amid_ref.verify", "run every check and write a report with figures"),
    "plot": ("amid_ref.plotting", "render the figures (interpolation paths, limits, ...)"),
    "conform": ("amid_ref.conformance", "hold an external AMiD implementation to the reference"),
    "study": ("amid_ref.study", "distill a small student from a known teacher"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported and configured (the
    others appear in ``--help`` by name), so start-up stays fast and an optional extra
    that is missing only affects its own subcommand."""
    parser = ArgumentParser(
        prog="amid-ref",
        description="Reference implementation and validation suite for α-mixture knowledge "
        "distillation (AMiD).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"amid-ref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            p = sub.add_parser(name, help=help_text, formatter_class=HelpFormatter)
            p.set_defaults(_unavailable=f"{name} is unavailable: {exc} (install amid-ref[all])")
            continue
        p = sub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=HelpFormatter,
        )
        module.configure_parser(p)
        # one help format for every subcommand, also where configure_parser chose argparse's
        # RawDescriptionHelpFormatter (HelpFormatter keeps that layout)
        if not issubclass(p.formatter_class, HelpFormatter):
            p.formatter_class = HelpFormatter
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``amid-ref`` with ``argv`` (default: the command line); returns the exit code:
    0 success, 1 a check failed, 2 bad arguments, 130 interrupted (Ctrl-C, one line on
    stderr and no traceback)."""
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    interrupts = _Interrupts() if as_program else None
    try:
        with interrupts or contextlib.nullcontext():
            code = _main(argv, command)
            if interrupts is not None and interrupts.received:  # ended before its Ctrl-C did
                raise KeyboardInterrupt
            return code
    except KeyboardInterrupt:
        if as_program:  # the program ends here: a late SIGINT must not turn 130 into a kill
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _forget_interrupt_in_string_code()
        name = f"amid-ref {command}" if command in SUBCOMMANDS else "amid-ref"
        print(f"{name}: interrupted; its unfinished output was removed", file=sys.stderr)
        return 130


class _Interrupts:
    """Every Ctrl-C ends ``python -m amid_ref``, also one that is lost where it lands.

    CPython raises KeyboardInterrupt wherever the main thread is when SIGINT arrives, and
    there it can be lost:

    - inside a weakref callback or a finalizer (importlib's module-lock bookkeeping during
      an import) it is *unraisable*: CPython prints it as "Exception ignored" and goes on;
    - inside a dependency's bare ``except:`` it is swallowed: mpmath's ``from_float``
      (``try: math.frexp(x) except: ... return fnan``), which the precise oracle calls for
      every float it converts, loses about one Ctrl-C in twenty that arrive while it runs,
      and returns a NaN instead.

    While the program runs, SIGINT goes to :meth:`_on_sigint`, which records the Ctrl-C and
    raises KeyboardInterrupt as Python's own handler does, and ``sys.unraisablehook`` goes
    to this object. From the first Ctrl-C on, a thread delivers it again to the main thread
    every ``REPEAT_S`` seconds (``_thread.interrupt_main``); a repeat raises
    KeyboardInterrupt only where the main thread is not already handling one, so the
    cleanup that a KeyboardInterrupt runs on its way out (``finally`` blocks, ``__exit__``)
    is never cut short by a repeat, and a lost one is raised again within ``REPEAT_S``. A
    command that returns first ends as interrupted too (:func:`main`). Other unraisable
    exceptions go to the previous hook. Where SIGINT is ignored (a program started in the
    background), nothing changes.
    """

    REPEAT_S = 0.05

    def __init__(self) -> None:
        self.received = False
        self.previous_hook = sys.unraisablehook
        self.previous_handler = None
        self._repeat = False  # the next SIGINT is a repeat from the thread, not a Ctrl-C
        self._done = threading.Event()
        self._lock = threading.RLock()  # the handler may run while __exit__ holds it
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Interrupts:
        sys.unraisablehook = self
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, kind, *_) -> None:
        with self._lock:
            self._done.set()
        if self._thread is not None:
            self._thread.join()  # no repeat is sent after this
        sys.unraisablehook = self.previous_hook
        # after a Ctrl-C the handler stays: a repeat sent just before the join may still be
        # pending, and main ignores SIGINT from here on
        if self.previous_handler is not None and self._thread is None:
            signal.signal(signal.SIGINT, self.previous_handler)
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.received = False  # handled: the command ends as interrupted

    def _on_sigint(self, signum, frame) -> None:
        repeat, self._repeat = self._repeat, False
        if repeat and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            return  # the Ctrl-C is on its way out: let its cleanup run
        self._record()
        signal.default_int_handler(signum, frame)

    def __call__(self, unraisable) -> None:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.previous_hook(unraisable)
            return
        self._record()

    def _record(self) -> None:
        self.received = True
        with self._lock:  # the unraisable hook may run in any thread
            if self._thread is None and not self._done.is_set():
                self._thread = threading.Thread(target=self._repeat_until_done, daemon=True)
                self._thread.start()

    def _repeat_until_done(self) -> None:
        while not self._done.wait(self.REPEAT_S):
            self._repeat = True
            _thread.interrupt_main()


def _forget_interrupt_in_string_code() -> None:
    """Let ``python -m amid_ref`` exit with 130 after a Ctrl-C it handled.

    CPython (3.11, 3.12) marks a KeyboardInterrupt that leaves code run from a *string*
    (``exec``/``eval`` of source text: ``dataclasses`` and ``namedtuple`` build their
    methods so, during the imports of torch and SymPy) as unhandled, even when a caller
    catches it; under ``-m``, ``Py_RunMain`` then ends the process with SIGINT (exit code
    −2) instead of the code it was given. Every string evaluation clears that mark when it
    starts, so one empty one, run after the interrupt was caught, clears it."""
    exec("pass", {})


def _main(argv: list[str], command: str | None) -> int:
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, with its own usage line
        sub = parser._subparsers._group_actions[0].choices.get(getattr(args, "command", None))
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "_unavailable", None):
        print(f"amid-ref {args._unavailable}", file=sys.stderr)
        return 2
    if not hasattr(args, "_run"):  # no subcommand given
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError) as exc:
        print(f"amid-ref {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency of this command (a lighter install)
        missing = exc.name or str(exc)
        print(
            f"amid-ref {args.command}: error: it needs {missing}, which is not installed "
            "(pip install 'amid-ref[all]', or the extra that provides it; see the README)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:  # a path the options name cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"amid-ref {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
