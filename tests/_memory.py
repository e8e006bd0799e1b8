"""Memory in the test suite: the bytes of the tensors a call creates, while they live, on
the CPU, where torch keeps no allocation statistics (``torch.cuda.max_memory_allocated``
has no CPU counterpart in torch 2.13)."""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LiveBytes"]


class LiveBytes(TorchDispatchMode):
    """The storages that torch ops create inside the ``with`` block, counted while they
    live: :attr:`live` bytes now, :attr:`peak` the most at any time, and :attr:`seen` the
    (shape, dtype) of every op's tensor outputs.

    A storage is counted once, when an op returns a tensor whose storage none of the op's
    tensor arguments held (a view or an in-place op creates none), and uncounted when its
    last tensor goes (torch keeps a storage's Python object while the storage lives, so a
    finalizer on it fires when the memory is freed). Storages made before the block (the
    inputs) are never counted: ``peak`` is the block's extra memory, as
    ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats`` minus the
    allocation before is on CUDA. Inside :meth:`paused` nothing is counted or recorded:
    a stand-in for a kernel whose temporaries a GPU would not allocate (its output is
    then counted with :meth:`count`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: list[tuple[tuple[int, ...], torch.dtype]] = []
        self._counted: dict[int, weakref.finalize] = {}
        self._paused = 0

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._counted.pop(key, None)

    def count(self, x: torch.Tensor) -> None:
        """Count ``x``'s storage from now on (once), if it is not counted already."""
        storage = x.untyped_storage()
        key = id(storage)
        if key in self._counted or storage.nbytes() == 0:
            return
        self._counted[key] = weakref.finalize(storage, self._freed, key, storage.nbytes())
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)

    @contextlib.contextmanager
    def paused(self):
        """Nothing that ops create inside is counted or recorded."""
        self._paused += 1
        try:
            yield self
        finally:
            self._paused -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._paused:
            return out
        held = {id(a.untyped_storage()) for a in tree_leaves((args, kwargs or {}))
                if isinstance(a, torch.Tensor)}  # fmt: skip
        for x in out if isinstance(out, tuple | list) else (out,):
            if isinstance(x, torch.Tensor):
                self.seen.append((tuple(x.shape), x.dtype))
                if id(x.untyped_storage()) not in held:
                    self.count(x)
        return out
