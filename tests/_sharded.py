"""The worker pools and helpers of the vocabulary-parallel tests (tests/test_vocab_parallel.py,
tests/test_vocab_parallel_sparse.py): gloo process groups on 127.0.0.1 in worker processes,
the shardings, the logits, and the comparison of every rank's outcome with the unsharded
loss's (the same error, or the replicated loss and the gathered gradient within the
``"vocab_parallel"`` rows of :mod:`amid_ref.tolerances` in float64, the ``"gpu"`` rows
otherwise).

A test module's ``pools`` fixture (module scope) yields from :func:`_started_pools`: one pool
per world size (2 and 3) for the whole module, its workers forked from a server that has
imported that module (its jobs are found by name).
"""

from __future__ import annotations

import os
import queue
import socket
from datetime import timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from _triton import patch_language_once  # noqa: E402

from amid_ref._specs import SPECS  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

#: One parameter set per divergence the gpu package offers (the contract's representative
#: one), and Rényi away from its series branch as well.
DIVERGENCES = (
    *((name, spec.typical_params) for name, spec in SPECS.items() if spec.offered_by("gpu")),
    ("renyi", {"order": 2.0}),
)
#: Process-group timeout: a rank left waiting in a collective fails the test in seconds.
PG_TIMEOUT_S = 20
#: How long the test process waits for each rank's answer to a job, by default.
RESULT_TIMEOUT_S = 120


# --- the worker pool ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(rank: int, world: int, port: int, tasks, results) -> None:
    """Worker loop: one gloo group for the process's life, then ``(fn, args)`` jobs."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    patch_language_once()  # as in the test process (tests/conftest.py)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=PG_TIMEOUT_S),
    )
    while True:
        job = tasks.get()
        if job is None:
            break
        fn, args = job
        try:
            results.put(("ok", fn(rank, world, *args)))
        except Exception as exc:  # reported to the test process
            results.put(("raised", type(exc).__name__, str(exc)))
    dist.destroy_process_group()


class Pool:
    """``world`` worker processes sharing one process group; :meth:`run` runs a job on all."""

    def __init__(self, world: int, module: str = __name__) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("forkserver")
        # The server imports once what every worker needs (torch, DTensor, the oracle's
        # registry, this module and ``module``, the test module whose jobs run); each worker
        # is then a fork of it.
        ctx.set_forkserver_preload(
            ["torch", "torch.distributed.tensor", "amid_ref", "gpu", __name__, module]
        )
        port = _free_port()
        self.world = world
        self.tasks = [ctx.Queue() for _ in range(world)]
        self.results = [ctx.Queue() for _ in range(world)]
        self.procs = [
            ctx.Process(
                target=_serve, args=(k, world, port, self.tasks[k], self.results[k]), daemon=True
            )
            for k in range(world)
        ]
        for p in self.procs:
            p.start()

    def run(self, fn, *args, timeout: float = RESULT_TIMEOUT_S) -> list:
        for q in self.tasks:
            q.put((fn, args))
        out = []
        for k, q in enumerate(self.results):
            try:
                out.append(q.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"rank {k} gave no answer in {timeout} s") from None
        return out

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():  # pragma: no cover
                p.kill()


def _started_pools(module: str):
    """Worker pools of world sizes 2 and 3 for the test module ``module`` (its jobs run in
    them), yielded as {world: Pool} and closed afterwards: the body of each module's
    module-scoped ``pools`` fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; OpenMP regions only wait on a shared machine
    started = {w: Pool(w, module) for w in (2, 3)}
    yield started
    for p in started.values():
        p.close()
    torch.set_num_threads(threads)


# --- shardings, data, outcomes ----------------------------------------------------------------


def _bounds(vocab: int, world: int, widths=None) -> list[tuple[int, int]]:
    widths = widths or [vocab // world + (k < vocab % world) for k in range(world)]
    starts = np.cumsum([0, *widths])
    return [(int(starts[k]), int(starts[k + 1])) for k in range(world)]


def _backward(loss, upstream) -> None:
    if upstream is None:
        loss.sum().backward()
    else:
        loss.backward(torch.tensor(upstream, dtype=loss.dtype))


def _logits(seed: int, rows: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Student and teacher logits: peaked, long-tailed, close and wide rows in turn."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, (rows, vocab))
    t = rng.normal(0.0, 2.0, (rows, vocab))
    for i in range(rows):
        kind = i % 4
        if kind == 0:
            t[i, rng.integers(vocab)] += 12.0
            s[i, rng.integers(vocab)] += 6.0
        elif kind == 1:
            ranks = rng.permutation(vocab) + 1.0
            t[i] = -1.5 * np.log(ranks)
            s[i] = -1.1 * np.log(ranks) + rng.normal(0, 0.3, vocab)
        elif kind == 2:
            s[i] = t[i] + rng.normal(0.0, 0.05, vocab)
        else:
            s[i] *= 10.0
            t[i] *= 10.0
    return s, t


def _grad_within(got, want, tol, what, row_loss=None):
    """Row-scaled gradient check (test_gpu's); with ``row_loss`` the scale also covers the
    row's divergence value, which bounds the size of the sums A, C·B the gradient
    subtracts (χ²: Σ|g_q| ≈ 2χ², up to 1e13 on the wide rows)."""
    scale = np.maximum(1.0, np.max(np.abs(want), axis=-1, keepdims=True))
    if row_loss is not None:
        scale = np.maximum(scale, np.abs(np.asarray(row_loss))[..., None])
    assert_within(got / scale, want / scale, tol, what=what)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def _outcome(fn, s, c: dict):
    """``("ok", loss, gradient or None)`` of the loss ``fn()`` of the student logits ``s``
    (backward with the case's ``upstream``), or ``("raised", type, message)``."""
    try:
        loss = fn()
        if s.requires_grad:
            _backward(loss, c.get("upstream"))
            return ("ok", loss.detach().double().numpy(), s.grad.double().numpy())
        return ("ok", loss.detach().double().numpy(), None)
    except (ValueError, TypeError, FloatingPointError) as exc:
        return ("raised", type(exc).__name__, str(exc))


def _agreed(what: str, got: list, want: tuple, dtype: str, *, contains: bool = False):
    """Every rank's outcome (``got``) against the unsharded one (``want``): where that raised,
    every rank raised the same error (``contains``: with a message containing ``want[2]``)
    and ``None`` is returned; otherwise the loss, bitwise the same on every rank, within
    tolerance of the unsharded loss, and the gathered gradient (or ``None``) within its
    tolerance, both returned."""
    if want[0] == "raised":
        for k, g in enumerate(got):
            assert g[0] == "raised", f"{what}: rank {k} gave {g[:2]}, unsharded raised {want}"
            same = want[2] in g[2] if contains else g[1:] == want[1:]
            assert same, f"{what}: rank {k} raised {g}, unsharded {want}"
        return None
    for k, g in enumerate(got):
        assert g[0] == "ok", f"{what}: rank {k} raised {g}, the unsharded loss did not"
    losses = [g[1] for g in got]
    for k in range(1, len(got)):  # replicated: bitwise the same on every rank
        np.testing.assert_array_equal(losses[k], losses[0], err_msg=what)
    grad = None if want[2] is None else np.concatenate([g[2] for g in got], axis=-1)
    # float64: the vocab_parallel rows; other dtypes: the gpu rows (both vs unsharded)
    suite = "vocab_parallel" if dtype == "float64" else "gpu"
    assert_within(losses[0], want[1], tolerance(suite, "loss", dtype), what=what)
    if grad is not None:
        row_loss = want[1] if want[1].shape == want[2].shape[:-1] else None
        _grad_within(grad, want[2], tolerance(suite, "grad", dtype), what, row_loss)
    return losses[0], grad
