"""Triton in the test suite: whether its interpreter runs the kernels, a counter of a
kernel's launches, and the interpreter with its language patched once per launch.

Under ``TRITON_INTERPRET=1`` a launch (``GridExecutor.__call__``) replaces the builtins of
``triton.language`` with their numpy forms and restores them when the grid is done. Each
call of a ``@triton.jit`` device function inside the kernel (``InterpretedFunction.__call__``)
patches the language again, although it is already patched: ``inspect.getmembers`` over the
language's modules, about 1.2 ms a call. The kernels of :mod:`gpu._triton_kernel` make about
25 such calls a launch (0.46 of 1.63 s for three JS checks of tests/test_triton_kernel.py's
grid under cProfile, triton 3.9.0; about 8 % of that file's time without the profiler).

:func:`patch_language_once` makes a call inside a launch skip the patching where the
modules the function sees are already patched; the launch still patches and restores as
before, so the kernels run the same numpy code. It applies only where the interpreter has
the structure it relies on (both callers call ``_patch_lang`` by its module-global name),
and leaves triton as it is otherwise. Tests only: the library never changes triton.
"""

from __future__ import annotations

import inspect
import os

__all__ = ["Launches", "NoLaunch", "interpreted", "patch_language_once"]


def interpreted() -> bool:
    """Whether triton's interpreter runs the kernels (``TRITON_INTERPRET`` set and not 0:
    tests/conftest.py sets it where there is no CUDA)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class Launches:
    """A Triton kernel whose launches (``kernel[grid](...)``) are counted, and their grids
    and keyword arguments (constexprs, warps) kept in :attr:`calls`: put in place of a
    kernel (e.g. ``gpu._triton_kernel._normalizer_pass``, the first pass) to tell that the
    Triton kernel ran, not a fallback, and how it was launched."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.count = 0
        self.calls: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid):
        self.count += 1

        def launch(*args, **kwargs):
            self.calls.append((tuple(grid), kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


class NoLaunch:
    """A Triton kernel whose launches do nothing: put in place of every pass
    (:data:`gpu._triton_kernel.PASSES`) to count the memory that the kernel's wrapper
    allocates (on CUDA a launch allocates none), its numbers left to the other tests."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def patch_language_once() -> bool:
    """Install the once-per-launch patching in this process where the interpreter runs;
    True where it was installed (now or before), False where the interpreter does not run
    or triton or its interpreter's structure is not there."""
    if not interpreted():
        return False
    try:
        import triton.language as tl
        from triton.runtime import interpreter as it
    except ImportError:
        return False
    if getattr(it, "_patched_once", False):
        return True
    try:
        callers = (it.GridExecutor.__call__, it.InterpretedFunction.__call__)
        if not all("_patch_lang(self.fn)" in inspect.getsource(f) for f in callers):
            return False
        original = it._patch_lang
    except (AttributeError, OSError, TypeError):
        return False
    patched: set[int] = set()  # ids of the language modules patched by the running launch

    class _Unchanged:
        def restore(self) -> None:
            pass

    class _Launch:
        """The launch's own scope: restoring it also ends the launch."""

        def __init__(self, scope) -> None:
            self.scope = scope

        def restore(self) -> None:
            try:
                self.scope.restore()
            finally:
                patched.clear()

    def patch_lang(fn):
        langs = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        if patched and langs <= patched:
            return _Unchanged()
        outer = not patched
        scope = original(fn)
        patched.update(langs)
        return _Launch(scope) if outer else scope

    it._patch_lang = patch_lang
    it._patched_once = True
    return True
