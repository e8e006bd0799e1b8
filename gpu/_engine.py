r"""The engine of the chunked AMiD losses: what every front-end and every backend shares.

Three front-ends run through it: :func:`gpu.amid_loss` (logits), :func:`gpu.amid_fused_linear_loss`
(lm_head inputs) and :func:`gpu.vocab_parallel_amid_loss` (logits sharded along the vocabulary).
The engine holds

* the spec (:class:`_Spec`: the validated :class:`~amid_ref.contract.Objective`, the compute
  dtype, the chunk size and the teacher-side work) and its validation (:func:`_build_spec`
  from keyword arguments, :func:`_spec_of` from an objective);
* the label rule (:func:`_valid_rows`): which positions count;
* the chunking (:func:`_run`, :func:`_for_each_chunk`): N = B·T rows ``chunk_size`` at a
  time, on CPU shared among worker threads;
* the row flags raised at the end of a pass (:func:`_raise_for_flags`), one device sync
  for the whole batch, the same words from every backend;
* the reduction and the upstream scaling (:func:`_reduce`, :func:`_scale_by_upstream`);
* the row reductions a kernel uses (:class:`gpu._torch_kernel.LocalReduce`; the
  vocabulary-parallel loss substitutes one that all-reduces over the shards of a row);
* the kernel selection (:func:`_select_kernel`): ``backend="auto" | "torch" | "triton"``
  and ``compile``.

Backends. A *kernel* maps a chunk of rows to ``(loss per row, ∂loss/∂student logits, row
flags)``: ``kernel(s, t, spec, want_grad, grad_scale, out=None)``.

* ``"torch"`` -- :func:`gpu._torch_kernel.chunk`, eager torch (optionally through
  ``torch.compile``): the CPU path, the fallback, and the reference the Triton kernel is
  written against. Its row reductions go through a reducer, so the sharded loss runs it too.
* ``"triton"`` -- :func:`gpu._triton_kernel.triton_chunk`: one program per row streaming over
  V in tiles, fp32 in registers; the default on CUDA when triton imports. Where triton is
  missing, or a kernel fails to compile or run, the engine says so once (``RuntimeWarning``)
  and uses the torch kernel.

Memory model. Only two things outlive a chunk: the per-row loss (N numbers) and the
gradient, written into one (N, V) buffer in the *student's* dtype. Peak extra memory is
therefore that buffer plus the chunk's scratch (per CPU chunk worker, see
:func:`_for_each_chunk`), instead of the dozen (N, V) float32 tensors that autograd keeps
for the textbook implementation.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from amid_ref import tolerances
from amid_ref.contract import Objective, temperature_overflow_message
from gpu._flags import (
    _BAD_STUDENT,
    _BAD_TEACHER,
    _EMPTY_SUPPORT,
    _FLAG_DTYPE,
    _INF_GRAD,
    _INF_LOSS,
    _NAN_GRAD,
    _NAN_LOSS,
    _TEMPERATURE_STUDENT,
    _TEMPERATURE_TEACHER,
    _TRUNCATED_STUDENT,
    _TRUNCATED_TEACHER,
)
from gpu._teachers import Teaching
from gpu._torch_kernel import LOCAL, LocalReduce, _grad_flags
from gpu._torch_kernel import chunk as torch_chunk
from gpu._validation import (
    check_bool,
    check_chunk_size,
    check_ignore_index,
    check_labels,
)

#: The kernel backends (``backend=`` of the losses).
BACKENDS = ("auto", "torch", "triton")


#: Elements (rows × V) per chunk of the logits loss on CPU: 1 MB of float32 per scratch
#: tensor (8 rows at V = 32000, 2 at V = 128256). The ~10 scratch tensors alive at once then
#: stay in the cache, and no 8 MB temporary pays its page faults each time it is allocated:
#: measured against 2^21 on this project's 2-core CPU (docs/gpu.md, *Chunk size on CPU*),
#: 0.64-0.99x the time for KL, JS and AB at V = 32000 and 50257, one thread or two, and
#: 2.6x less scratch; 2^17 and 2^19 were within a few percent of 2^18.
_CPU_CHUNK_ELEMENTS = 1 << 18
#: Elements per chunk on CPU where a chunk costs more than its elementwise passes: the fused
#: loss (two GEMMs read the whole weight per chunk) and the vocabulary-parallel loss (six
#: collectives per chunk): 8 MB of float32 per scratch tensor.
_CPU_WIDE_CHUNK_ELEMENTS = 1 << 21
#: Logits (rows × V) of a call below which its chunks run in the calling thread, not in
#: chunk workers (:func:`_for_each_chunk`): starting the workers and giving each one thread
#: cost more than they save on smaller calls. Measured on this project's 2-core CPU (two
#: torch threads, KL, forward + backward, workers / calling thread): 2.9x at 16384 logits,
#: 1.9x at 262144, 1.31x at 2.0M, 1.21x at 4.1M, 1.10x at 6.1M, 0.90x at 8.2M, 0.87x at 9.7M.
_CPU_WORKER_MIN_ELEMENTS = 7 << 20
#: On CUDA, larger chunks amortize kernel launches: 32 MB of float32 per scratch tensor.
_CUDA_CHUNK_ELEMENTS = 1 << 23


#: On CUDA with the Triton kernel: it keeps no (chunk, V) temporaries of its own (per-row
#: statistics only, the gradient written straight into its buffer), so a chunk is as large
#: as the rows gathered for labelled batches allow (below).
_TRITON_CHUNK_ELEMENTS = 1 << 26


def default_chunk_size(
    vocab_size: int, device: torch.device | str = "cpu", backend: str = "torch", wide: bool = False
) -> int:
    """Rows per chunk chosen from V: ``max(1, E // V)``.

    E = 2^18 elements on CPU and 2^23 on CUDA for the torch kernel (each of its ~10
    (chunk, V) float32 temporaries is then 1 or 32 MB); ``wide=True`` (the fused and the
    vocabulary-parallel losses, whose chunks each cost GEMMs or collectives) takes 2^21 on
    CPU. With ``backend="triton"`` on CUDA
    E = 2^26: the Triton kernel writes the gradient buffer in place and, with a gradient,
    keeps up to three float32 (chunk, V) scratch buffers between its passes (G unless the
    gradient is a float32 buffer of its own; log m in the mixture's |β| > 0 regimes; g_r for
    the AB family and χ² with q an argument): 4–12 bytes per element of the chunk,
    256–768 MiB at 2^26 elements; with labels that drop rows the engine also gathers the
    chunk's rows (two copies in the logits' dtype) and the kernel returns a float32
    gradient, 4 + 2·b bytes per element more (b the logits' bytes), against 2·b·N·V for
    the logits themselves.
    """
    if torch.device(device).type != "cuda":
        elements = _CPU_WIDE_CHUNK_ELEMENTS if wide else _CPU_CHUNK_ELEMENTS
    elif backend == "triton":
        elements = _TRITON_CHUNK_ELEMENTS
    else:
        elements = _CUDA_CHUNK_ELEMENTS
    return max(1, elements // int(vocab_size))


@dataclass(frozen=True)
class _Spec:
    """What a chunk kernel is run with: the objective and how the engine computes it.

    Attributes
    ----------
    objective : Objective
        The validated :class:`amid_ref.contract.Objective` (α, λ, divergence, order,
        parameters, temperature, detach flag, the teacher's form); the kernels read its
        fields as ``spec.objective.alpha``, ``spec.objective.first``, ...
    cdtype : torch.dtype
        The compute dtype: float32 at least, float64 for float64 inputs
        (:func:`gpu._validation.compute_dtype`).
    chunk_size : int
        Rows per chunk of the pass (:func:`default_chunk_size` when the caller gives none).
    teaching : Teaching
        The teacher-side work left to :func:`gpu._teachers.teaching_kernel` (logit
        transforms, vocabulary alignment, a sparse teacher): the objective's own fields at
        the front-end (:meth:`gpu._teachers.Teaching.of`), and the defaults (nothing left)
        in the spec that wrapper hands to the kernel it wraps.
    """

    objective: Objective
    cdtype: torch.dtype
    chunk_size: int
    teaching: Any = None


def _spec_of(
    objective: Objective,
    cdtype: torch.dtype,
    vocab: int,
    device: torch.device,
    chunk_size: Any,
    wide: bool = False,
) -> _Spec:
    """The chunk spec of a validated (gpu) ``objective``; ``chunk_size`` is checked here
    (``None``: :func:`default_chunk_size` of ``vocab`` on ``device``, ``wide`` as there)."""
    chunk_size = check_chunk_size(chunk_size)
    return _Spec(
        objective=objective,
        teaching=Teaching.of(objective),
        cdtype=cdtype,
        chunk_size=chunk_size or default_chunk_size(vocab, device, wide=wide),
    )


def _build_spec(
    cdtype: torch.dtype,
    vocab: int,
    device: torch.device,
    alpha: Any,
    lam: Any,
    divergence: Any,
    order: Any,
    div_params: Any,
    temperature: Any,
    detach_assistant: Any,
    chunk_size: Any,
    **teaching: Any,
) -> _Spec:
    """Validate the objective's arguments (naming the bad one) and build the chunk spec;
    ``teaching``: the teacher-side fields of :meth:`Objective.of` (``leftover``,
    ``vocab_alignment``, ``softcap``, ``logit_scale``, ``temperature_applies_to``). The
    default chunk is :func:`default_chunk_size`'s ``wide`` one (the fused loss: each chunk
    reads the whole weight)."""
    objective = Objective.of(
        alpha, lam, divergence, order, div_params, temperature, detach_assistant,
        implementation="gpu", **teaching,
    )  # fmt: skip
    return _spec_of(objective, cdtype, vocab, device, chunk_size, wide=True)


def _valid_rows(
    labels: torch.Tensor | None,
    leading: tuple[int, ...],
    device: torch.device,
    ignore_index: int | None,
    shift_labels: bool,
) -> tuple[torch.Tensor | None, int]:
    """Flat indices of the positions that count (``None``: all of them) and their number.

    ``labels`` holds integers (a position counts unless its label is ``ignore_index``; with
    ``ignore_index=None`` every position counts) or bools (True: the position counts). With
    ``shift_labels`` the mask of position t is that of label t + 1 along the last leading
    axis (Hugging Face causal-LM labels: the logits at t predict token t + 1), and the last
    position never counts.
    """
    shift_labels = check_bool(shift_labels, "shift_labels")
    n_total = math.prod(leading)
    if labels is None:
        if shift_labels:
            raise ValueError(
                "shift_labels=True needs labels (the mask of position t is that of label t+1)"
            )
        return None, n_total
    labels = check_labels(labels, torch.Size(leading), device)
    if labels.dtype == torch.bool:
        valid = labels
    elif ignore_index is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    else:
        check_ignore_index(ignore_index, labels.dtype)  # a value no label can equal masks nothing
        valid = labels != ignore_index
    if shift_labels:
        if valid.dim() == 0:
            raise ValueError("shift_labels=True needs labels with a sequence axis, got a scalar")
        valid = torch.cat([valid[..., 1:], torch.zeros_like(valid[..., :1])], dim=-1)
    valid = valid.reshape(-1)
    n_valid = int(valid.sum())
    if n_valid == n_total:
        return None, n_total
    return torch.nonzero(valid).flatten(), n_valid


def _rows_to_index(rows: list[int], leading: tuple[int, ...]) -> list[tuple[int, ...]]:
    out = []
    for r in rows:
        idx = []
        for n in reversed(leading):
            idx.append(r % n)
            r //= n
        out.append(tuple(reversed(idx)))
    return out


def _raise_for_flags(flags: torch.Tensor, leading: tuple[int, ...], spec: _Spec) -> None:
    """One device sync; raises a ValueError naming the offending rows, if any."""
    if not bool(flags.any()):
        return
    flags = flags.cpu()

    def rows(bit: int) -> list[tuple[int, ...]] | None:
        hit = torch.nonzero(flags & bit).flatten().tolist()
        return _rows_to_index(hit[:5], leading) if hit else None

    for bit, name in (
        (_TEMPERATURE_STUDENT, "student_logits"),
        (_TEMPERATURE_TEACHER, "teacher_logits"),
    ):
        if (bad := rows(bit)) is not None:
            raise ValueError(
                temperature_overflow_message(
                    name,
                    spec.objective.temperature,
                    f"row(s) {bad}",
                    str(spec.cdtype).removeprefix("torch."),
                )
            )
    if (bad := rows(_BAD_STUDENT)) is not None:
        raise ValueError(
            f"student_logits has NaN, +inf, or only -inf entries in row(s) {bad} (leading "
            "index); every row needs finite logits (-inf marks masked tokens)"
        )
    if (bad := rows(_BAD_TEACHER)) is not None:
        raise ValueError(
            f"teacher_logits has NaN, +inf, or only -inf entries in row(s) {bad} (leading "
            "index); every row needs finite logits (-inf marks masked tokens)"
        )
    for bit, side in ((_TRUNCATED_TEACHER, "teacher"), (_TRUNCATED_STUDENT, "student")):
        if (bad := rows(bit)) is not None:
            most = tolerances.VOCAB_TRUNCATE_MAX_DROPPED
            raise ValueError(
                f"vocab_alignment='truncate' drops more than {most:g} of "
                f"the {side}'s probability on row(s) {bad}: the ids beyond the shared "
                "vocabulary carry mass (they are not padding)"
            )
    if (bad := rows(_EMPTY_SUPPORT)) is not None:
        raise ValueError(
            f"the assistant r is undefined on row(s) {bad}: alpha={spec.objective.alpha} ≥ 1 "
            "keeps only the intersection of the teacher's and student's supports (-inf logits), "
            "and it is empty (Z = 0)"
        )
    if (bad := rows(_INF_LOSS)) is not None:
        raise ValueError(
            spec.objective.inf_loss_message(
                f"row(s) {bad}", str(spec.cdtype).removeprefix("torch.")
            )
        )
    if (bad := rows(_NAN_LOSS)) is not None:  # pragma: no cover - kernel bug guard
        raise FloatingPointError(f"gpu.amid_loss produced NaN on row(s) {bad}; please report")
    if (bad := rows(_INF_GRAD)) is not None:
        raise ValueError(
            f"the gradient with respect to student_logits exceeds the range of its dtype on "
            f"row(s) {bad} (a finite loss whose gradient entries are larger than the dtype's "
            "largest number, e.g. chi2 or an AB/Amari divergence on a confident float16 "
            "student); pass float32 or float64 student logits"
        )
    if (bad := rows(_NAN_GRAD)) is not None:  # pragma: no cover - kernel bug guard
        raise FloatingPointError(
            f"gpu.amid_loss produced a NaN gradient on row(s) {bad}; please report this input"
        )


def _run(
    s2: torch.Tensor,
    t2: torch.Tensor,
    rows: torch.Tensor | None,
    spec: _Spec,
    want_grad: bool,
    grad_scale: float,
    leading: tuple[int, ...],
    kernel=None,
    red: LocalReduce = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All chunks: per-row loss (N,) in the compute dtype and the gradient (N, V) buffer.

    ``red`` is passed to the torch kernel (the vocabulary-parallel loss's reducer); with a
    reducer that is not local the chunks run one after the other, in the same order on
    every rank (each reduction is a collective)."""
    kernel = kernel or torch_chunk
    n, _ = s2.shape
    row_loss = torch.zeros(n, dtype=spec.cdtype, device=s2.device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=s2.device)
    grad = None
    if want_grad:
        grad = torch.empty_like(s2) if rows is None else torch.zeros_like(s2)
    n_rows = n if rows is None else rows.numel()
    chunks: list = []  # each chunk's rows, for flags a sharded reducer completes at the end

    def body(start: int, stop: int) -> None:
        if not red.local:
            chunks.append(slice(start, stop) if rows is None else rows[start:stop])
        if rows is None:
            out = grad[start:stop] if grad is not None else None
            extra = {} if red.local else {"red": red}
            value, g, f = kernel(
                s2[start:stop], t2[start:stop], spec, want_grad, grad_scale, out, **extra
            )
            row_loss[start:stop] = value
            flags[start:stop] = f
        else:
            idx = rows[start:stop]
            extra = {} if red.local else {"red": red}
            # A gradient of a narrower dtype than the compute dtype is cast by the kernel,
            # whose flags then see an entry beyond its range (as with rows=None).
            out = None
            if grad is not None and grad.dtype != spec.cdtype:
                out = grad.new_empty(idx.numel(), grad.shape[-1])
            value, g, f = kernel(s2[idx], t2[idx], spec, want_grad, grad_scale, out, **extra)
            row_loss.index_copy_(0, idx, value)
            flags.index_copy_(0, idx, f)
            if grad is not None:
                grad.index_copy_(0, idx, g.to(grad.dtype))

    parallel = red.local and getattr(kernel, "parallel_chunks", False)
    _for_each_chunk(
        n_rows, spec.chunk_size, s2.device, body, parallel=parallel, row_elements=s2.shape[-1]
    )
    late = None if red.local else red.settle()
    for where_rows, late_flags in zip(chunks, late or (), strict=False):
        flags[where_rows] |= late_flags
    _raise_for_flags(flags, leading, spec)
    return row_loss, grad


def _chunk_workers(device: torch.device, n_rows: int, elements: int | None = None) -> int:
    """Threads that process chunks side by side: torch's intra-op thread count on CPU, for
    a call of at least :data:`_CPU_WORKER_MIN_ELEMENTS` logits (``elements``, rows × V)."""
    if device.type != "cpu" or n_rows < 2:
        return 1
    if elements is not None and elements < _CPU_WORKER_MIN_ELEMENTS:
        return 1
    return max(1, min(torch.get_num_threads(), n_rows))


def _for_each_chunk(n_rows, step, device, body, parallel=True, row_elements=None):
    r"""Call ``body(start, stop)`` for every chunk of rows.

    On CPU with more than one torch thread the chunks are shared among that many worker
    threads, each running its chunks with *one* intra-op thread (``torch.set_num_threads``
    is per thread), instead of running every one of a chunk's ~130 elementwise ops and
    reductions as its own OpenMP parallel region over all threads. A parallel region
    waits for its slowest thread, so on a loaded machine every region could wait a
    scheduler time slice for a descheduled thread; one region per *chunk* (the worker)
    waits for nothing (docs/gpu.md, *Threads*). Chunks write disjoint rows of shared
    outputs. Costs one chunk of scratch per worker; fewer rows than workers × ``step``
    are split evenly among the workers.

    ``body`` may return a callable, the chunk's *commit*: an accumulation into an output
    shared by all chunks (the fused loss's weight gradient). Commits run one at a time and
    in chunk order, whatever the number of workers, so the accumulated sums are formed in
    the same order as by one worker (one shared accumulator, not one per worker: the
    weight gradient is the largest buffer of the fused loss). A worker whose chunk is
    ready before its turn waits holding that chunk's scratch; the others go on.

    ``row_elements`` (V, when the caller knows it): a call of fewer than
    :data:`_CPU_WORKER_MIN_ELEMENTS` logits runs its chunks in the calling thread.
    """
    elements = None if row_elements is None else n_rows * row_elements
    workers = _chunk_workers(device, n_rows, elements) if parallel else 1
    if workers > 1:  # at least one chunk per worker (rows are independent: same results)
        step = max(1, min(step, -(-n_rows // workers)))
    starts = list(range(0, n_rows, step))
    workers = max(1, min(workers, len(starts)))
    if workers == 1:
        for start in starts:
            commit = body(start, min(start + step, n_rows))
            if commit is not None:
                commit()
        return

    turn = threading.Condition()
    state = {"next": 0, "failed": False}

    def work(w: int) -> None:
        torch.set_num_threads(1)  # this worker thread only
        try:
            with torch.no_grad():  # grad mode is per thread; workers start with it on
                for i in range(w, len(starts), workers):
                    start = starts[i]
                    commit = body(start, min(start + step, n_rows))
                    with turn:
                        turn.wait_for(lambda i=i: state["next"] == i or state["failed"])
                        if state["failed"]:
                            return
                        if commit is not None:
                            commit()
                        state["next"] = i + 1
                        turn.notify_all()
        except BaseException:
            with turn:  # release the workers waiting for this one's turn
                state["failed"] = True
                turn.notify_all()
            raise

    before = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, w) for w in range(workers)]
            for future in futures:
                future.result()  # re-raises a worker's exception here
    finally:
        if torch.get_num_threads() != before:  # a build whose thread count is global
            torch.set_num_threads(before)


#: Compiled kernels by torch.compile backend; ``None`` records one whose compilation failed.
_COMPILED: dict[str, Any] = {}


def _compiled_kernel(backend: str):
    """The torch kernel through ``torch.compile`` (same signature), or ``None`` if unavailable.

    The compiled function is the kernel with ``grad_scale = 1``; the scale (which changes
    with the number of valid rows) and the cast into the gradient buffer are applied
    after it, so that one compiled graph serves every batch.
    """
    if backend in _COMPILED:
        return _COMPILED[backend]
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        _COMPILED[backend] = None
        return None
    try:
        core = compile_fn(lambda s, t, spec, want_grad: torch_chunk(s, t, spec, want_grad, 1.0,
                                                                     branchless=True),
                          backend=backend, dynamic=None)  # fmt: skip
    except Exception as exc:  # e.g. an unknown backend name
        _warn_compile_failed(backend, exc)
        _COMPILED[backend] = None
        return None

    working = [True]
    objectives: set[str] = set()

    def kernel(s, t, spec, want_grad, grad_scale, out=None, out_lo=None):
        if not working[0] or out_lo is not None:  # the residual: the eager kernel's
            return torch_chunk(s, t, spec, want_grad, grad_scale, out, out_lo=out_lo)
        key = repr(spec.objective)
        if key not in objectives:
            objectives.add(key)
            # Each objective costs one graph per gradient mode and up to two per chunk-shape
            # class (static, then dynamic): half the limit is where eager fallback can begin.
            if len(objectives) == max(1, _recompile_limit() // 2):
                _warn_recompile_limit(backend, len(objectives))
        try:
            value, g, flags = core(s, t, spec, want_grad)
        except torch.cuda.OutOfMemoryError:  # the batch's, not the compiler's: as raised
            raise
        except Exception as exc:  # compiler missing or failing: fall back, once, loudly
            working[0] = False
            _COMPILED[backend] = None
            _warn_compile_failed(backend, exc)
            return torch_chunk(s, t, spec, want_grad, grad_scale, out)
        if g is not None:
            g = torch.mul(g, grad_scale, out=out) if out is not None else g.mul_(grad_scale)
            flags = flags | _grad_flags(g)
        return value, g, flags

    _COMPILED[backend] = kernel
    return kernel


def _recompile_limit() -> int:
    """torch._dynamo's recompile limit per code object (8 by default in torch 2.x)."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    for name in ("recompile_limit", "cache_size_limit"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 8


def _warn_recompile_limit(backend: str, n: int) -> None:
    warnings.warn(
        f"torch.compile(backend={backend!r}) has compiled the AMiD chunk kernel for {n} "
        "objectives: the graph is specialized on alpha, lam, divergence, order, parameters "
        "and temperature, each new one compiles again, and once torch's recompile limit "
        f"({_recompile_limit()} graphs, which chunk shapes and gradient modes also count) "
        "is reached new ones run the kernel eagerly. With an alpha/lam schedule use "
        "compile=False.",
        RuntimeWarning,
        stacklevel=4,
    )


def _warn_compile_failed(backend: str, exc: BaseException) -> None:
    warnings.warn(
        f"torch.compile(backend={backend!r}) of the AMiD chunk kernel failed "
        f"({type(exc).__name__}: {str(exc)[:200]}); using the eager kernel",
        RuntimeWarning,
        stacklevel=3,
    )


def check_backend(backend: Any) -> str:
    """``backend`` validated: one of :data:`BACKENDS`."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        known = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"backend must be one of {known}, got {backend!r}")
    return backend


def _triton_usable(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on ``device`` (``None`` if it can): triton must
    import, and run either compiled on CUDA or interpreted on CPU (``TRITON_INTERPRET=1``)."""
    try:  # optional: the triton package
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton does not import ({exc})"
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if device.type == "cuda" and not interpreted:
        return None
    if device.type == "cpu" and interpreted:
        return None
    return (
        f"triton runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1); these are on "
        f"{device.type}{' with TRITON_INTERPRET set' if interpreted else ''}"
    )


#: Reasons already warned about (one warning per reason and process).
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


#: The Triton kernel, wrapped: ``None`` until first asked for.
_TRITON: list[Any] = []


def _triton_kernel():
    """The Triton kernel wrapped so that a failure to compile or run falls back to the torch
    kernel with one warning (then for the rest of the process); ``None`` if it does not
    import."""
    if _TRITON:
        return _TRITON[0]
    try:  # optional: the triton package (the gpu and triton extras)
        from gpu._triton_kernel import launch_shapes, triton_chunk
    except ImportError as exc:
        _warn_once(f"the Triton AMiD kernel does not import ({exc}); using the torch kernel")
        _TRITON.append(None)
        return None
    working = [True]

    def kernel(s, t, spec, want_grad, grad_scale, out=None, out_lo=None, saved=None):
        if working[0]:
            launch_shapes()  # a malformed AMID_TRITON_LAUNCH is the caller's error: raised
            try:
                return triton_chunk(
                    s, t, spec, want_grad, grad_scale, out, out_lo=out_lo, saved=saved
                )
            except torch.cuda.OutOfMemoryError:  # the batch's, not the kernel's: as raised
                raise
            except Exception as exc:  # a compiler or launch failure: fall back, once, loudly
                working[0] = False
                _warn_once(
                    f"the Triton AMiD kernel failed ({type(exc).__name__}: {str(exc)[:300]}); "
                    "using the torch kernel from now on"
                )
        return torch_chunk(s, t, spec, want_grad, grad_scale, out, out_lo=out_lo)

    kernel.backend = "triton"
    _TRITON.append(kernel)
    return kernel


def _select_kernel(compile: Any, backend: Any = "auto", device: torch.device | None = None):
    """The per-chunk kernel for ``backend`` ("auto": Triton on CUDA when triton imports, the
    torch kernel otherwise; "torch"; "triton", which falls back to torch with one warning
    where it cannot run) and ``compile`` (False, True or a ``torch.compile`` backend name,
    for the torch kernel)."""
    backend = check_backend(backend)
    if not (compile is False or compile is None or compile is True or isinstance(compile, str)):
        raise TypeError(f"compile must be a bool or a torch.compile backend name, got {compile!r}")
    compiled = compile is not False and compile is not None
    device = torch.device("cpu") if device is None else torch.device(device)
    if backend == "triton" and compiled:
        raise ValueError(
            "compile applies to the torch kernel; backend='triton' is compiled by triton "
            "(pass compile=False, or backend='torch' to use torch.compile)"
        )
    if backend == "triton" or (backend == "auto" and not compiled and device.type == "cuda"):
        why = _triton_usable(device)
        if why is None:
            kernel = _triton_kernel()
            if kernel is not None:
                return kernel
        elif backend == "triton":
            _warn_once(f"backend='triton': {why}; using the torch kernel")
    if not compiled:
        return torch_chunk
    kernel = _compiled_kernel("inductor" if compile is True else compile)
    return torch_chunk if kernel is None else kernel


def _reduce(row_loss: torch.Tensor, reduction: str, n_valid: int, leading) -> torch.Tensor:
    if reduction == "none":
        return row_loss.reshape(leading)
    total = row_loss.sum()
    if reduction == "sum":
        return total
    return total / n_valid if n_valid > 0 else total * 0.0


def _scale_by_upstream(grad: torch.Tensor, grad_output: torch.Tensor, spec, reduction: str):
    """In place: the stored gradient rows times the upstream gradient (one number per row
    for ``reduction="none"``, chunk by chunk so no (N, V) temporary forms; a scalar else)."""
    if reduction == "none":
        go = grad_output.reshape(-1, 1).to(spec.cdtype)
        step = spec.chunk_size
        for start in range(0, grad.shape[0], step):
            block = grad[start : start + step]
            block.copy_(block.to(spec.cdtype).mul_(go[start : start + step]))
    elif bool(grad_output != 1):
        grad.mul_(grad_output.to(spec.cdtype))
