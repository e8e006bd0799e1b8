"""Triton's interpreter with its language patched once per launch, not once per call.

Under ``TRITON_INTERPRET=1`` a launch (``GridExecutor.__call__``) replaces the builtins of
``triton.language`` with their numpy forms and restores them when the grid is done. Each
call of a ``@triton.jit`` device function inside the kernel (``InterpretedFunction.__call__``)
patches the language again, although it is already patched: ``inspect.getmembers`` over the
language's modules, about 1.2 ms a call. The kernels of :mod:`gpu._triton_kernel` make about
25 such calls a launch, so this re-patching took 28 % of the interpreter's time (0.46 of
1.63 s for three JS checks of tests/test_triton_kernel.py's grid, triton 3.9.0, cProfile).

:func:`patch_language_once` makes a call inside a launch skip the patching where the
modules the function sees are already patched; the launch still patches and restores as
before, so the kernels run the same numpy code. It applies only where the interpreter has
the structure it relies on (both callers call ``_patch_lang`` by its module-global name),
and leaves triton as it is otherwise. Tests only: the library never changes triton.
"""

from __future__ import annotations

import inspect

__all__ = ["patch_language_once"]


def patch_language_once() -> bool:
    """Install the once-per-launch patching in this process; True where it was installed
    (now or before), False where triton or its interpreter's structure is not there."""
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
