"""Loading a user's target named on the command line: ``MODULE:FUNCTION`` or ``MODULE:PEER``.

Used by ``amid-ref conform`` (:func:`amid_ref.conformance.load_target`) and by
:func:`amid_ref.conformance.get_peer` for a user's :class:`~amid_ref.conformance.Peer` record.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["load_object"]


def load_object(spec: str) -> Any:
    """Resolve ``MODULE:ATTRIBUTE`` (or ``path/to/file.py:ATTRIBUTE``) to the object it names.

    ``ATTRIBUTE`` may be dotted (``module:Class.method``). The current directory is put on
    ``sys.path`` first, as ``python -m`` does, so a local ``my_loss.py`` is found.
    """
    if ":" not in spec:
        raise ValueError(f"target: expected MODULE:FUNCTION, got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"target: expected MODULE:FUNCTION, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"target: no such file {module_name!r}")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[path.stem] = module
        mod_spec.loader.exec_module(module)
    else:
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"target: cannot import module {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"target: {module_name!r} has no attribute {attr!r}") from None
    return obj
