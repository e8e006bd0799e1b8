r"""One prepared check of the gpu package on a CUDA machine, written to one JSON file.

Usage::

    python -m gpu.device_check                      # on a CUDA machine: every stage, ≤ 6 min
    python -m gpu.device_check --out check.json     # choose the output file
    python -m gpu.device_check --cpu-dry-run        # every stage at tiny sizes on the CPU

Each stage runs in its own subprocess with its own time limit (:data:`STAGE_LIMITS`, 350 s
in all); its status (``ok``, ``failed``, ``timeout``, ``error``), wall time and result are
recorded, and the JSON file is rewritten after every stage, so a stage that times out or
crashes loses nothing of the ones before and the next one still runs. Every stage after
the first records ``triton_cache_entries_added``: the Triton variants it had to compile
itself (0 when the compile stage had them all).

1. ``compile`` -- :func:`_stage_compile`: the Triton variants that ``bench``, ``tune``,
   ``accuracy`` and ``tests`` launch, recorded by running their workloads with the kernels
   replaced by recorders (:class:`_Recording`), compiled by parallel worker processes into Triton's
   on-disk cache (bench's first), within its limit; how many, and the wall time.
2. ``bench`` -- ``python -m gpu.bench --targets`` (shortened: 5 timed passes, 40 s per
   implementation): the logits targets (KL, JS, AB at N = 8192, V = 128256, bf16) and the
   fused target against liger-kernel, each MET / NOT MET with its ratio, then the peers
   and the fused loss down its row-chunk backward (``fused_rows``). The benchmark
   writes its own JSON after every implementation; on a timeout the rows it had are kept.
   Its roofline fractions are of the GPU at hand: the copy bandwidth and bf16 product rate
   are measured at its start (:func:`gpu.bench.measure_ceilings`).
3. ``tune`` -- :func:`_stage_tune`: the Triton logits loss at the same size under each
   launch shape of :data:`TUNE_SHAPES` (:data:`gpu._triton_kernel.LAUNCH_ENV`), the total
   and each pass's time (CUDA events around its launches), and per objective the best
   shape overall and per pass; written after every (shape, objective).
4. ``accuracy`` -- :func:`gpu.accuracy.backend_accuracy`: the loss and gradient of both
   backends (``torch``, ``triton``) in float32 and bfloat16 at V = 151936 against
   :mod:`amid_ref` in float64, as fractions of the "gpu" tolerance rows.
5. ``kernels`` -- the accuracy of the framework kernels the loss relies on, against float64
   on the CPU, at V = 151936 (:func:`kernel_accuracy`).
6. ``sigmoid`` -- :func:`gpu.accuracy.sigmoid_accuracy`: is ``torch.sigmoid`` through
   ``torch.compile`` off by more than 4 eps on this device (and the reciprocal form the
   mixture weight uses)? The dry run takes torch.compile's ``eager`` backend: the same
   steps, without inductor's C++ for the CPU, which would say nothing of its CUDA code.
7. ``tests`` -- ``pytest -m gpu`` over the gpu test files (the CUDA copies of the checks
   against :mod:`amid_ref`), with pytest's summary; last, as the stage with the most
   variants (``test_cuda_small_grid``: about 1260), whatever the compile stage had no time
   for is compiled here.

Without CUDA it says so, runs the CPU-measurable stages (``accuracy``, ``kernels`` and
``sigmoid`` on the CPU) and exits 0; ``--cpu-dry-run`` runs every stage at tiny sizes on
the CPU, through the same subprocesses, to prove the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

import gpu
from gpu import _engine, accuracy, bench
from gpu._fused import OUT_DTYPE_PRODUCTS, _addmm_, _times_weight
from gpu.bench import format_targets

#: Seconds per stage on CUDA, in the order they run (350 s in all: the check fits in 6
#: minutes with start-up); the compile stage first, so that the others measure, not compile.
STAGE_LIMITS = {"compile": 100, "bench": 100, "tune": 30, "accuracy": 30, "kernels": 15,
                "sigmoid": 20, "tests": 55}  # fmt: skip
#: Seconds per stage in the CPU dry run.
DRY_RUN_LIMITS = {"compile": 90, "bench": 240, "tune": 60, "accuracy": 60, "kernels": 60,
                  "sigmoid": 90, "tests": 60}  # fmt: skip
STAGES = tuple(STAGE_LIMITS)
#: At most this many compile worker processes (the CUDA machine has 16 cores).
COMPILE_WORKERS = 16
#: Seconds of the compile stage's limit kept for recording its result.
COMPILE_MARGIN_S = 5
#: The gpu test files whose ``gpu``-marked tests the ``tests`` stage runs.
#: Recording with the torch kernel's values, chunks larger than this many elements get the
#: zero-filled outputs instead: the torch kernel's float32 temporaries of a chunk past 2^31
#: elements (``test_cuda_offsets_beyond_int32``) would not fit the GPU, and the recording
#: needs only the launches.
TORCH_VALUES_MAX = 2**28
#: In this order: the fused and kernel tests (the fused peak-memory bound among them) before
#: test_gpu.py, whose grid holds most of the variants.
TEST_FILES = ("test_gpu_fused.py", "test_gpu_kernels.py", "test_gpu.py")


def _eps(dtype) -> float:
    return float(torch.finfo(dtype).eps)


def kernel_accuracy(device: str, vocabs=(151936,), rows: int = 8) -> dict[str, Any]:
    """Max relative error (in eps of the compute dtype) of each kernel vs float64 on CPU."""

    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {}
    for vocab in vocabs:
        x64 = torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * 4.0
        x64[:, 0] += 30.0  # a peaked row: the largest logit 30 nats above the rest
        y64 = torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * 4.0
        x = x64.float().to(device)
        y = y64.float().to(device)
        xr, yr = x.double().cpu(), y.double().cpu()  # the float32-rounded inputs, exactly
        eps = _eps(torch.float32)

        def rel(got, want, floor=1e-300, eps=eps):
            got = got.double().cpu()
            err = (got - want).abs() / want.abs().clamp_min(floor)
            err = torch.where(torch.isfinite(want), err, torch.zeros_like(err))
            return float(err.max()) / eps

        def abs_err(got, want, scale, eps=eps):
            return float((got.double().cpu() - want).abs().max()) / (eps * scale)

        lse = torch.logsumexp(xr, -1, keepdim=True)
        entry = {
            # log-probabilities are compared absolutely at the scale max(1, |log p|)
            "log_softmax": abs_err(
                torch.log_softmax(x, -1), xr - lse, float((xr - lse).abs().max())
            ),
            "logsumexp": rel(torch.logsumexp(x, -1), lse[:, 0]),
            "softmax": rel(torch.softmax(x, -1), torch.softmax(xr, -1), 1e-30),
            "exp": rel(torch.exp(x / 8), torch.exp(xr / 8)),
            "expm1": rel(torch.expm1(x / 64), torch.expm1(xr / 64)),
            "log1p": rel(torch.log1p(x.abs() / 16), torch.log1p(xr.abs() / 16)),
            "logaddexp": abs_err(
                torch.logaddexp(x, y),
                torch.logaddexp(xr, yr),
                float(torch.logaddexp(xr, yr).abs().max().clamp_min(1)),
            ),
            "sigmoid": rel(torch.sigmoid(x), torch.sigmoid(xr), 1e-30),
            "sum": abs_err(x.sum(-1), xr.sum(-1), float(xr.abs().sum(-1).max())),
        }
        out[str(vocab)] = entry
    # bf16 G·W of the fused backward (gpu._fused._times_weight), H = 512
    g64 = torch.randn(rows, vocabs[-1], generator=gen, dtype=torch.float64)
    g64 -= g64.mean(-1, keepdim=True)  # sums to 0 along V, as a projected gradient does
    w64 = torch.randn(vocabs[-1], 512, generator=gen, dtype=torch.float64) * 0.02
    w = w64.to(torch.bfloat16).to(device)
    got = _times_weight(g64.float().to(device), w)
    want = g64.float().double() @ w.double().cpu()
    scale = float((g64.abs() @ w.double().cpu().abs()).max())
    err = (got.double().cpu() - want).abs()
    out["bf16_times_weight"] = {
        "max_abs_error_over_sum_abs": float(err.max()) / scale,
        "max_abs_error_over_max_result": float(err.max() / want.abs().max()),
        "bf16_ulp_at_1": 2.0**-7,
    }
    # the weight gradient's bf16 product into a float32 accumulator (gpu._fused._addmm_), and
    # the route this torch takes for it (a float32 GEMM fallback would be many times slower)
    h64 = torch.randn(rows, 512, generator=gen, dtype=torch.float64)
    h = h64.to(torch.bfloat16).to(device)
    g_b = g64.to(torch.bfloat16).to(device)
    acc = torch.ones(vocabs[-1], 512, dtype=torch.float32, device=device)
    _addmm_(acc, g_b.T, h)
    g_r, h_r = g_b.double().cpu(), h.double().cpu()  # the bf16-rounded operands, exactly
    want = 1.0 + g_r.T @ h_r
    scale = float((g_r.abs().T @ h_r.abs()).max())
    out["bf16_weight_gradient_product"] = {
        "route": dict(OUT_DTYPE_PRODUCTS) or "float32 (not CUDA)",
        "max_abs_error_over_sum_abs": float((acc.double().cpu() - want).abs().max()) / scale,
    }
    out["unit"] = "max error / float32 eps (rel., or abs. over the stated scale)"
    out["note"] = (
        "softmax is compared relatively: a log-probability rounded at eps·|log p| gives a "
        "relative error eps·|log p| in p (|log p| up to ~90 here), so ~100 eps is the "
        "conditioning, not a kernel defect"
    )
    return out


# --- the stages (each runs in its own subprocess: ``--_stage NAME``) ---------------------------


def _accuracy_size(dry: bool) -> tuple[int, int]:
    """(V, rows) of the accuracy stage."""
    return (301, 2) if dry else (151936, 4)


def _stage_accuracy(device: str, dry: bool) -> dict:
    vocab, rows = _accuracy_size(dry)
    found = accuracy.backend_accuracy(vocab, rows, device=device)
    measured = [r for r in found if r["status"] == "ok"]
    return {
        "status": "ok" if all(r["holds"] for r in measured) else "failed",
        "vocab": vocab,
        "all_within_tolerance": all(r["holds"] for r in measured),
        "worst_loss_fraction": max((r["loss_fraction"] for r in measured), default=None),
        "worst_grad_fraction": max((r["grad_fraction"] for r in measured), default=None),
        "rows": found,
    }


def _stage_kernels(device: str, dry: bool) -> dict:
    return {
        "status": "ok",
        **kernel_accuracy(device, (4099,) if dry else (151936,), 2 if dry else 8),
    }


def _stage_sigmoid(device: str, dry: bool) -> dict:
    # the dry run: the same steps, no C++ compile (inductor's CPU code is not the question)
    backend = "eager" if dry else "inductor"
    return {"status": "ok", **accuracy.sigmoid_accuracy(device, compile_backend=backend)}


# --- the tune stage: the Triton passes' time under other launch shapes -----------------------

#: The launch shapes the ``tune`` stage times, in the syntax of
#: :data:`gpu._triton_kernel.LAUNCH_ENV` (``BLOCK_R:BLOCK_V:warps[:stages]``, every pass;
#: ``None``: the default, 1:4096:8 at these sizes), chosen from the sm_90 counts of
#: ``python -m gpu.kernel_cost`` (docs/gpu.md, *Launch shapes*): the default's 16 elements
#: per thread in smaller blocks (more warps resident where the launch has the programs:
#: 1:2048:4, 1:1024:2) or in a 16-warp block (twice the warps per program at 128
#: registers: 1:8192:16), 32 per thread (the fewest instructions, 8 warps: 1:4096:4), and
#: two with the loop pipelined in two stages (the next tile's loads in flight while one is
#: computed: 1:4096:8:2, 1:1024:2:2). Not timed: 8 elements per thread (1:2048:8,
#: 1:1024:4: the warps of 1:8192:16 for 8–11 % more instructions, not 2.7 %) and several
#: rows per program (4:1024:8: 131 programs for a chunk's 523 rows, one per SM).
TUNE_SHAPES = (None, "1:2048:4", "1:1024:2", "1:8192:16", "1:4096:4", "1:4096:8:2",
               "1:1024:2:2")  # fmt: skip
#: The dry run's shapes (under Triton's interpreter, at tiny sizes: the steps, no timing).
DRY_TUNE_SHAPES = (None, "4:64:4")
#: Timed forward+backward passes per (objective, shape), after one warm-up pass.
TUNE_REPS = 3
#: The default shape is timed once more per objective at this many times the default chunk:
#: a launch has one program per row of the chunk (523 at V = 128256), which bounds the
#: programs an SM holds; this row tells whether the chunk, not the shape, limits a pass.
TUNE_CHUNK_SCALE = 4


class _PassTimer:
    """Within ``with``: every launch of :mod:`gpu._triton_kernel`'s passes is timed (CUDA
    events around it; on the CPU the wall time) and counted, by kernel name."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.events: list[tuple[str, Any, Any]] = []
        self.launches: dict[str, int] = {}

    def _timed(self, name: str, kernel):
        timer = self

        class _Kernel:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    timer.launches[name] = timer.launches.get(name, 0) + 1
                    if timer.cuda:
                        start = torch.cuda.Event(enable_timing=True)
                        end = torch.cuda.Event(enable_timing=True)
                        start.record()
                        out = kernel[grid](*args, **kwargs)
                        end.record()
                    else:
                        start = time.perf_counter()
                        out = kernel[grid](*args, **kwargs)
                        end = time.perf_counter()
                    timer.events.append((name, start, end))
                    return out

                return launch

        return _Kernel()

    def __enter__(self):
        from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

        self._saved = {n: getattr(tk, n) for n in _kernel_names()}
        for name, kernel in self._saved.items():
            setattr(tk, name, self._timed(name, kernel))
        return self

    def __exit__(self, *exc):
        from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

        for name, kernel in self._saved.items():
            setattr(tk, name, kernel)
        return False

    def take(self) -> dict[str, float]:
        """Milliseconds per kernel since the last call (launches counted from the start)."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.events:
            ms = start.elapsed_time(end) if self.cuda else 1e3 * (end - start)
            out[name] = out.get(name, 0.0) + ms
        self.events = []
        return out


def _tune_plan(dry: bool) -> dict:
    """The tune stage's sizes and shapes: the logits target's (N = 8192, V = 128256, bf16)
    on CUDA; 16 × 300 float32, KL only, under the interpreter in the dry run."""
    t = bench.CUDA_LOGITS_TARGET
    if dry:
        return {"rows": 16, "vocab": 300, "dtype": "float32", "shapes": DRY_TUNE_SHAPES,
                "reps": 1, "objectives": ("kl",)}  # fmt: skip
    return {"rows": t["rows"], "vocab": t["vocab"], "dtype": t["dtype"], "shapes": TUNE_SHAPES,
            "reps": TUNE_REPS, "objectives": tuple(t["objectives"])}  # fmt: skip


def _tune_step(s, t, objective: str, chunk_size: int | None = None):
    obj = {k: v for k, v in bench.OBJECTIVES[objective].items() if k != "label"}
    return gpu.amid_loss(s, t, backend="triton", chunk_size=chunk_size, **obj)


def _tune_workloads(device: str, dry: bool) -> None:
    """The Triton work of the ``tune`` stage, once per (objective, shape), at its sizes."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    plan = _tune_plan(dry)
    s, t = bench._make_inputs(plan["rows"], plan["vocab"], getattr(torch, plan["dtype"]), device)
    for shape in plan["shapes"]:
        for objective in plan["objectives"]:
            with tk.launch_config(shape):
                _tune_step(s, t, objective).backward()


def _stage_tune(device: str, dry: bool, part: str | None = None) -> dict:
    """Forward + backward of the Triton logits loss at the logits target's size for each
    objective under each launch shape of :data:`TUNE_SHAPES`, then under the shape that
    gives each pass its own fastest (:func:`_per_pass_shape`): the median total time and
    each pass's time (CUDA events around its launches), so that the passes' launch
    shapes can be chosen from one run. The result is written to ``part`` after every
    (shape, objective): a stage cut short keeps what it measured."""
    plan = _tune_plan(dry)
    cuda = device == "cuda"
    rows: list[dict] = []
    result: dict[str, Any] = {**plan, "shapes": [s or "default" for s in plan["shapes"]],
                              "rows": rows}  # fmt: skip
    s, t = bench._make_inputs(plan["rows"], plan["vocab"], getattr(torch, plan["dtype"]), device)
    # every shape for every objective (a stage cut short keeps every objective of a shape),
    # then per objective its passes' fastest shapes together, and the default shape at
    # TUNE_CHUNK_SCALE times the default chunk
    todo = [(shape, o, 1) for shape in plan["shapes"] for o in plan["objectives"]]
    todo += [("per-pass", o, 1) for o in plan["objectives"]]
    todo += [(None, o, TUNE_CHUNK_SCALE) for o in plan["objectives"]]
    chunk = _engine.default_chunk_size(plan["vocab"], device, "triton")
    result["chunk_rows"] = chunk
    with _PassTimer(cuda) as timer, warnings.catch_warnings():
        # a fall-back to the torch kernel is an error here: the row would time the wrong kernel
        warnings.filterwarnings("error", message=".*using the torch kernel.*")
        for shape, objective, scale in todo:
            if shape == "per-pass":
                shape = _per_pass_shape(result.get("best", {}).get(objective), plan)
                if shape is None:
                    continue
            rows.append(_tune_row(s, t, objective, shape, plan["reps"], timer,
                                  chunk * scale if scale != 1 else None))  # fmt: skip
            result["best"] = _tune_best(rows)
            if part:
                Path(part).write_text(json.dumps(_tune_result(result), indent=2))
    result["launches"] = dict(timer.launches)
    return _tune_result(result)


def _tune_row(s, t, objective: str, shape: str | None, reps: int, timer: _PassTimer,
              chunk_rows: int | None = None) -> dict:  # fmt: skip
    """One (objective, shape) of the tune stage: ``reps`` timed forward+backward passes
    after a warm-up, the median total and per-pass times (``chunk_rows``: rows per chunk,
    ``None`` the default); an error recorded, not raised."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    row: dict[str, Any] = {"objective": objective, "launch": shape or "default"}
    if chunk_rows is not None:
        row["chunk_rows"] = chunk_rows
    # a fresh wrapper, nothing said yet: an earlier shape's failure is neither kept nor left
    # unsaid if this shape fails alike (its fall-back warning is this row's error)
    _engine._TRITON.clear()
    _engine._WARNED.clear()
    try:
        totals, passes = [], []
        with tk.launch_config(shape):
            for rep in range(reps + 1):  # the first: a warm-up
                s.grad = None
                timer.take()
                t0 = time.perf_counter()
                _tune_step(s, t, objective, chunk_rows).backward()
                by_pass = timer.take()  # synchronizes
                if rep:
                    totals.append(1e3 * (time.perf_counter() - t0))
                    passes.append(by_pass)
        if not passes or not passes[-1]:
            raise RuntimeError("no Triton pass was launched")
        per_pass = {k: statistics.median(p.get(k, 0.0) for p in passes) for k in passes[-1]}
        row.update(status="ok", time_ms=round(statistics.median(totals), 3),
                   passes_ms={k: round(v, 3) for k, v in per_pass.items()})  # fmt: skip
        row["passes_total_ms"] = round(sum(row["passes_ms"].values()), 3)
    except Exception as exc:  # recorded; the next shape still runs
        row.update(status="error", why=f"{type(exc).__name__}: {exc}"[:300])
    return row


def _per_pass_shape(best: dict | None, plan: dict) -> str | None:
    """The launch shape that gives each pass its own fastest shape (``best`` from
    :func:`_tune_best`), in :data:`gpu._triton_kernel.LAUNCH_ENV`'s syntax; ``None`` where
    one shape is the fastest for every pass (it was timed already) or none was measured."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    if not best or len({p["launch"] for p in best["per_pass"].values()}) < 2:
        return None
    letters = {name: letter for letter, name in tk.PASSES.items()}
    parts = []
    for name, fastest in best["per_pass"].items():
        with tk.launch_config(None if fastest["launch"] == "default" else fastest["launch"]):
            r, bv, w, stages = tk._blocks(plan["rows"], plan["vocab"], name)
        parts.append(f"{letters[name]}={r}:{bv}:{w}:{stages}")
    return ",".join(parts)


def format_tune(best: dict) -> str:
    """One line per objective of the tune stage's summary (:func:`_tune_best`)."""
    lines = []
    for objective, b in best.items():
        default = b.get("default_passes_total_ms")
        fastest = [f"{name.strip('_').removesuffix('_pass')} {p['launch']}"
                   for name, p in b["per_pass"].items()]  # fmt: skip
        wide = b.get("larger_chunk")
        chunk = (f"; the default at {wide['chunk_rows']} rows a chunk: "
                 f"{wide['passes_total_ms']} ms" if wide else "")  # fmt: skip
        lines.append(
            f"tune {objective}: passes {default if default is not None else '–'} ms at the "
            f"default, {b['passes_total_ms']} ms at {b['launch']}; each pass at its fastest: "
            + ", ".join(fastest)
            + chunk
        )
    return "\n".join(lines)


def _tune_result(result: dict) -> dict:
    """The stage's record: ``failed`` where a shape did not run."""
    ok = all(r["status"] == "ok" for r in result["rows"])
    return {"status": "ok" if ok else "failed", **result}


def _tune_best(rows: list[dict]) -> dict:
    """Per objective: the shape of the least total time, and per pass the shape of its least
    time (the sum of those per-pass minima: what per-pass shapes would give), over the rows
    at the default chunk; and the default shape's time at a larger chunk where measured."""
    best: dict[str, Any] = {}
    for objective in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == objective and r["status"] == "ok"]
        ok = [r for r in mine if "chunk_rows" not in r]
        if not ok:
            continue
        top = min(ok, key=lambda r: r["passes_total_ms"])
        default = next((r for r in ok if r["launch"] == "default"), None)
        per_pass = {}
        for name in top["passes_ms"]:
            fastest = min(ok, key=lambda r: r["passes_ms"].get(name, math.inf))
            per_pass[name] = {"launch": fastest["launch"], "ms": fastest["passes_ms"][name]}
        best[objective] = {
            "launch": top["launch"],
            "passes_total_ms": top["passes_total_ms"],
            "default_passes_total_ms": default["passes_total_ms"] if default else None,
            "per_pass": per_pass,
            "per_pass_total_ms": round(sum(p["ms"] for p in per_pass.values()), 3),
        }
        wide = [r for r in mine if "chunk_rows" in r]
        if wide:
            best[objective]["larger_chunk"] = {
                "chunk_rows": wide[0]["chunk_rows"],
                "passes_total_ms": wide[0]["passes_total_ms"],
            }
    return best


# --- the compile stage: every Triton variant the later stages launch, compiled in parallel -----
#
# A Triton kernel is compiled once per variant: its constexprs (divergence, order, mixture
# regime, ...), the dtypes of its pointers and their 16-byte alignment, and the class of each
# integer argument (1, a multiple of 16, i32 or i64); the compiled binary lands in Triton's
# on-disk cache (TRITON_CACHE_DIR), keyed by exactly these, where a later process finds it.
# The plan of the compile stage is recorded, not written down: each later stage's workload
# runs with gpu._triton_kernel's kernels replaced by recorders (:class:`_Recording`), which
# note every launch's arguments and launch nothing, so the variants planned are the ones the
# stage launches, by construction.

#: The stages whose Triton launches the compile stage records and compiles, in the order
#: their variants are compiled (the bench's first: its timings are the check's aim).
COMPILED_STAGES = ("bench", "tune", "accuracy", "tests")


def _int_class(value: int) -> int:
    """A representative of ``value``'s specialization class in Triton's cache key (==1, a
    multiple of 16, i32 or i64 range): the variant compiled for it is the one for ``value``."""
    if value == 1:
        return 1
    base = 0 if -(2**31) <= value < 2**31 else 2**32
    return base + (16 if value % 16 == 0 else 17)


def _describe(arg) -> tuple:
    """One launch argument as it enters the cache key (the variant), hashable and JSON-able."""
    if isinstance(arg, torch.Tensor):
        return ("tensor", str(arg.dtype).removeprefix("torch."), arg.data_ptr() % 16 == 0)
    if isinstance(arg, bool):
        return ("bool", arg)
    if isinstance(arg, int):
        return ("int", _int_class(arg))
    if isinstance(arg, float):
        return ("float",)  # a runtime float32 scalar: not part of the variant
    raise TypeError(f"launch argument of type {type(arg).__name__} is not planned for")


def variant_key(kernel: str, args, kwargs) -> tuple:
    """The variant of one launch ``kernel[grid](*args, **kwargs)``: the kernel's name, each
    positional argument described (:func:`_describe`), and the keyword arguments (the
    constexprs and ``num_warps``) as given."""
    return (kernel, tuple(_describe(a) for a in args), tuple(sorted(kwargs.items())))


def _kernel_names() -> list[str]:
    from triton.runtime.jit import KernelInterface  # optional: triton (the triton extra)

    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    return sorted(n for n, v in vars(tk).items() if isinstance(v, KernelInterface))


class _Recording:
    """Within ``with``: every :func:`gpu.amid_loss` (and fused loss) that would run the Triton
    kernel records the CUDA launches of :func:`gpu._triton_kernel.triton_chunk` and
    :func:`~gpu._triton_kernel.gradient_tile` in :attr:`variants` and launches nothing.

    The host code of the Triton kernel runs as written, with the CUDA choices (``ACC``, the
    block sizes and warps of a compiled kernel, whatever device the tensors are on), so the
    constexprs, dtypes and integers recorded are the ones a CUDA run passes. ``values``:
    ``"torch"`` returns the torch kernel's loss and gradient (same contract; a workload that
    checks its values still passes, the fused loss takes its torch path; chunks beyond
    :data:`TORCH_VALUES_MAX` elements get zeros), ``"skip"`` returns
    the chunk's zero-filled outputs and lets the fused loss call ``gradient_tile`` too
    (faster; the values are meaningless).
    """

    def __init__(self, values: str = "skip", keep_launches: bool = False):
        self.values = values
        self.variants: dict[tuple, None] = {}  # ordered set
        self.errors: list[str] = []
        #: (kernel, args, kwargs) of every launch, with ``keep_launches``
        self.launches: list[tuple] | None = [] if keep_launches else None

    def _recorder(self, name: str):
        recording = self

        class _Kernel:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    recording.variants.setdefault(variant_key(name, args, kwargs))
                    if recording.launches is not None:
                        recording.launches.append((name, args, kwargs))

                return launch

        return _Kernel()

    def __enter__(self):
        from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

        self._saved = {
            (tk, "triton_chunk"): tk.triton_chunk,
            (tk, "gradient_tile"): tk.gradient_tile,
            (tk, "_interpreted"): tk._interpreted,
            (_engine, "_triton_usable"): _engine._triton_usable,
            (bench, "_triton_usable"): bench._triton_usable,
        }
        self._saved.update({(tk, n): getattr(tk, n) for n in _kernel_names()})
        real_chunk, real_tile = tk.triton_chunk, tk.gradient_tile
        for name in _kernel_names():
            setattr(tk, name, self._recorder(name))
        values = self.values

        def chunk(s, t, spec, want_grad, grad_scale, out=None, out_lo=None, saved=None):
            keep = saved if values == "skip" else None
            try:
                loss, grad, flags = real_chunk(s, t, spec, want_grad, grad_scale, out, out_lo,
                                               keep)  # fmt: skip
            except Exception as exc:  # the engine would fall back to torch: keep it visible
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                raise
            if (values == "skip" or not tk.runs_in_triton(spec, s.dtype)
                    or s.numel() > TORCH_VALUES_MAX):  # fmt: skip
                return loss, grad, flags
            return tk.torch_chunk(s, t, spec, want_grad, grad_scale, out, out_lo=out_lo)

        tk.triton_chunk = chunk
        tk.gradient_tile = real_tile  # its launch is recorded; it writes nothing
        tk._interpreted = lambda: False
        _engine._triton_usable = bench._triton_usable = lambda device: None
        self._wrapped = _engine._TRITON[:]  # the engine's wrapper of the real triton_chunk
        _engine._TRITON.clear()
        return self

    def __exit__(self, *exc):
        for (module, name), value in self._saved.items():
            setattr(module, name, value)
        _engine._TRITON[:] = self._wrapped
        return False


def _bench_workloads(device: str, dry: bool) -> None:
    """The Triton work of the ``bench`` stage, once: :func:`gpu.bench._worker` of the
    ``triton`` implementation for each logits target objective (its two-row warm-up, then
    the target size) and :func:`gpu.bench._fused_worker` of ``fused``, with the stage's
    sizes (:func:`_bench_command`)."""
    t, f = dict(bench.CUDA_LOGITS_TARGET), dict(bench.CUDA_FUSED_TARGET)
    dtype = t["dtype"]
    if dry:
        t["vocab"], t["rows"] = 300, 16
        f["vocab"], f["rows"], f["hidden"] = 300, 16, 8
        dtype = "float32"
    common = {"device": device, "dtype": dtype, "reps": 1, "threads": 1 if dry else None,
              "chunk_size": None, "measure": "memory"}  # fmt: skip
    for objective in t["objectives"]:
        bench._worker({**common, "rows": t["rows"], "vocab": t["vocab"], "objective": objective,
                       "impl": "triton", "alpha": None, "lam": None})  # fmt: skip
    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    beta = parser.parse_args([]).beta
    bench._fused_worker({**common, "rows": f["rows"], "vocab": f["vocab"], "hidden": f["hidden"],
                         "beta": beta, "impl": "fused",
                         "our_chunk": bench.gpu_default_chunk(f["vocab"], device)})  # fmt: skip


def _accuracy_workloads(device: str, dry: bool) -> None:
    """The Triton work of the ``accuracy`` stage: its :func:`gpu.accuracy.backend_accuracy`
    call, the ``triton`` backend only."""
    vocab, rows = _accuracy_size(dry)
    accuracy.backend_accuracy(vocab, rows, device=device, backends=("triton",))


def record_variants(stage: str, device: str, dry: bool, root: Path | None = None) -> list:
    """The Triton variants stage ``stage`` launches, in launch order (:class:`_Recording`).

    ``tests`` runs the stage's pytest command with this module as a plugin (the torch
    kernel's values: the tests pass and keep going), ``accuracy`` and ``bench`` their
    workloads in this process.
    """
    if stage == "tests":
        root = root or Path(__file__).resolve().parent.parent
        with tempfile.TemporaryDirectory() as tmp:
            part = os.path.join(tmp, "variants.json")
            cmd = [*_tests_command(root, dry), "-p", "gpu.device_check"]
            env = {**os.environ, _RECORD_ENV: part}
            subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
            if not os.path.exists(part):
                return []
            return [_as_key(v) for v in json.loads(Path(part).read_text())]
    run = {"accuracy": _accuracy_workloads, "bench": _bench_workloads,
           "tune": _tune_workloads}[stage]  # fmt: skip
    with _Recording() as rec, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(device, dry)
    return list(rec.variants)


def _as_key(item) -> tuple:
    """A variant back from JSON (lists to tuples)."""
    name, args, kwargs = item
    return (name, tuple(tuple(a) for a in args), tuple(tuple(k) for k in kwargs))


#: The environment variable under which the pytest plugin hooks below record (a JSON path).
_RECORD_ENV = "AMID_RECORD_TRITON_VARIANTS"
_PYTEST_RECORDING: list = []


def pytest_configure(config):
    """pytest plugin (``-p gpu.device_check``): record the tests' Triton variants."""
    path = os.environ.get(_RECORD_ENV)
    if path:
        rec = _Recording(values="torch").__enter__()
        _PYTEST_RECORDING[:] = [rec, path]


def pytest_unconfigure(config):
    """pytest plugin: write the recorded variants (:func:`pytest_configure`)."""
    if _PYTEST_RECORDING:
        rec, path = _PYTEST_RECORDING
        rec.__exit__(None, None, None)
        Path(path).write_text(json.dumps(list(rec.variants)))


def _mock_args(args: tuple) -> list:
    """Launch arguments standing for a variant's (:func:`_describe`): dtype-only tensors at an
    aligned (or not) address, the integer representatives, 1.0 for the floats."""
    from triton.runtime.jit import MockTensor  # optional: triton (the triton extra)

    class _Unaligned(MockTensor):
        @staticmethod
        def data_ptr():
            return 8

    out = []
    for kind, *rest in args:
        if kind == "tensor":
            dtype, aligned = getattr(torch, rest[0]), rest[1]
            out.append(MockTensor(dtype) if aligned else _Unaligned(dtype))
        elif kind == "float":
            out.append(1.0)
        else:
            out.append(rest[0])
    return out


def _compile_sm90(kernel, args: list, kwargs: dict):
    """Compile one variant for CUDA sm_90 without a GPU (Triton's own binder for a CUDA
    target, then :func:`triton.compile`): what the CPU can measure of a CUDA compile."""
    # optional: triton (the triton extra), its compiler for a CUDA target
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend  # optional: triton
    from triton.runtime.jit import create_function_from_signature  # optional: triton

    target = GPUTarget("cuda", 90, 128)
    backend = make_backend(target)
    # the options JITFunction.run adds before binding, those this triton has (3.6 has no
    # fpsan_homomorphic_casts; 3.9 has both)
    kwargs = {**kwargs, "debug": False}
    for knob in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, knob):
            kwargs[knob] = getattr(knobs.compilation, knob)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, kwargs, bound, specialization, options
    )
    return compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                   options=options.__dict__)  # fmt: skip


def compile_variants(variants: list, worker: int, workers: int, target: str, out: str) -> None:
    """Compile this worker's share (every ``workers``-th, from ``worker``) of ``variants``
    into Triton's on-disk cache: ``cuda`` by the kernel's own ``warmup`` (the current GPU,
    the cache key of a real launch), ``sm90`` by :func:`_compile_sm90`. One JSON line per
    variant is appended to ``out`` as it is done."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    for i in range(worker, len(variants), workers):
        name, args, kwargs = variants[i]
        kernel, kw = getattr(tk, name), dict(kwargs)
        t0 = time.perf_counter()
        error = None
        try:
            if target == "cuda":
                kernel.warmup(*_mock_args(args), grid=(1,), **kw)
            else:
                _compile_sm90(kernel, _mock_args(args), kw)
        except Exception as exc:  # recorded, the other variants still compile
            error = f"{type(exc).__name__}: {exc}"[:300]
        row = {"index": i, "kernel": name, "seconds": round(time.perf_counter() - t0, 2),
               "constexprs": {k: v for k, v in kw.items() if k != "num_warps"},
               "error": error}  # fmt: skip
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def _cache_entries() -> int:
    """The number of entries in Triton's on-disk cache (one per compiled variant and more)."""
    path = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return sum(1 for _ in path.iterdir()) if path.is_dir() else 0


def _stage_compile(device: str, dry: bool) -> dict:
    """Record every later stage's Triton variants, then compile them in parallel worker
    processes (one per core, at most :data:`COMPILE_WORKERS`) into the on-disk cache, within
    :data:`COMPILE_BUDGET_S` of this stage's limit; the dry run compiles one variant for
    sm_90 (no GPU: the compile alone)."""
    t0 = time.perf_counter()
    root = Path(__file__).resolve().parent.parent
    per_stage, variants = {}, {}
    for stage in COMPILED_STAGES:
        t1 = time.perf_counter()
        found = record_variants(stage, device, dry, root)
        per_stage[stage] = {"variants": len(found), "record_s": round(time.perf_counter() - t1, 1)}
        for v in found:
            variants.setdefault(v)
    planned = list(variants)
    todo = planned[:1] if dry else planned
    workers = max(1, min(COMPILE_WORKERS, os.cpu_count() or 1, len(todo)))
    budget = (DRY_RUN_LIMITS if dry else STAGE_LIMITS)["compile"] - COMPILE_MARGIN_S
    budget -= time.perf_counter() - t0
    before = _cache_entries()
    t1 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = os.path.join(tmp, "plan.json")
        Path(plan).write_text(json.dumps(todo))
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        procs, outs = [], []
        for w in range(workers if todo else 0):
            outs.append(os.path.join(tmp, f"done{w}.jsonl"))
            cmd = [sys.executable, "-m", "gpu.device_check", "--_compile", plan,
                   "--_worker", f"{w}/{workers}", "--_part", outs[-1],
                   "--_device", "cuda" if device == "cuda" else "sm90"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))  # fmt: skip
        timed_out = False
        for p in procs:
            try:
                p.wait(timeout=max(1.0, budget - (time.perf_counter() - t1)))
            except subprocess.TimeoutExpired:
                timed_out = True
                p.kill()
                p.wait()
        for o in outs:
            if os.path.exists(o):
                rows += [json.loads(ln) for ln in Path(o).read_text().splitlines() if ln]
    wall = time.perf_counter() - t1
    errors = [r for r in rows if r["error"]]
    by_kernel: dict[str, list[float]] = {}
    for r in rows:
        by_kernel.setdefault(r["kernel"], []).append(r["seconds"])
    return {
        "status": "ok" if not errors and not timed_out and len(rows) == len(todo) else "failed",
        "variants_planned": len(planned),
        "variants_compiled": len(rows) - len(errors),
        "workers": workers,
        "compile_wall_s": round(wall, 1),
        "compile_cpu_s": round(sum(r["seconds"] for r in rows), 1),
        "stopped_at_budget": timed_out,
        "cache_entries_added": _cache_entries() - before,
        "per_stage": per_stage,
        "per_kernel": {
            k: {"variants": len(s), "mean_s": round(sum(s) / len(s), 2), "max_s": max(s)}
            for k, s in sorted(by_kernel.items())
        },
        "errors": errors[:5],
    }


_IN_PROCESS = {
    "compile": _stage_compile,
    "tune": _stage_tune,
    "accuracy": _stage_accuracy,
    "kernels": _stage_kernels,
    "sigmoid": _stage_sigmoid,
}


def _bench_command(dry: bool, out: str) -> list[str]:
    cmd = [sys.executable, "-m", "gpu.bench", "--targets", "--out", out]
    if dry:  # the CUDA plan at tiny sizes on the CPU: every code path, no timing
        return [*cmd, "--device", "cpu", "--target-plan", "cuda", "--configs", "300:16",
                "--fused-configs", "300:16:8", "--dtype", "float32", "--reps", "1",
                "--timeout", "60", "--threads", "1"]  # fmt: skip
    return [*cmd, "--device", "cuda", "--reps", "5", "--timeout", "40"]


def _tests_command(root: Path, dry: bool) -> list[str]:
    """The ``tests`` stage's pytest command; in the dry run collection only (the gpu-marked
    tests need CUDA)."""
    files = [str(root / "tests" / f) for f in TEST_FILES]
    if dry:
        files = [str(root / "tests" / "test_gpu_fused.py"), "--co"]
    # -v: a line per test as it ends, so a stage cut short by its limit still says which passed
    return [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rfE", "-p", "no:cacheprovider",
            *files]  # fmt: skip


def _run_stage(name: str, limit: float, dry: bool, device: str, root: Path) -> dict:
    """Run stage ``name`` in a subprocess within ``limit`` seconds; its record."""
    with tempfile.TemporaryDirectory() as tmp:
        part = os.path.join(tmp, f"{name}.json")
        if name == "tests":
            cmd = _tests_command(root, dry)
        elif name == "bench":
            cmd = _bench_command(dry, part)
        else:
            cmd = [sys.executable, "-m", "gpu.device_check", "--_stage", name, "--_part", part,
                   "--_device", device, *(["--cpu-dry-run"] if dry else [])]  # fmt: skip
        env = None
        if name == "tune" and dry:  # the Triton kernel on the CPU: interpreted
            env = {**os.environ, "TRITON_INTERPRET": "1"}
        t0 = time.perf_counter()
        record: dict[str, Any] = {"cmd": " ".join(cmd[1:]), "limit_s": limit}
        cached = _cache_entries()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                  cwd=root, env=env)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            record.update(status="timeout", why=f"over the stage's {limit:g} s limit",
                          stdout_tail=_text(exc.stdout)[-6000:],
                          stderr_tail=_text(exc.stderr)[-3000:])  # fmt: skip
        else:
            record["returncode"] = proc.returncode
            record["stderr_tail"] = proc.stderr[-3000:]
            if name == "tests":
                record["status"] = "ok" if proc.returncode in (0, 5) else "failed"
                record["summary"] = proc.stdout.strip().splitlines()[-1:] or [""]
                record["stdout_tail"] = proc.stdout[-6000:]
            elif proc.returncode != 0:
                record.update(status="error", why=_last_line(proc.stderr))
            else:
                record["status"] = "ok"
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        if name != "compile":  # variants this stage compiled itself (0: all found compiled)
            record["triton_cache_entries_added"] = _cache_entries() - cached
        if os.path.exists(part):  # what the stage wrote, even when it timed out
            try:
                got = json.loads(Path(part).read_text())
            except json.JSONDecodeError as exc:
                record["result_error"] = f"unreadable stage JSON: {exc}"
            else:
                if name == "bench":
                    record["result"] = got
                    record["targets"] = got.get("targets", [])
                else:
                    status = got.pop("status", None)
                    if record.get("status") == "ok" and status:
                        record["status"] = status
                    record["result"] = got
        return record


def _text(x) -> str:
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    return x or ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def _write(report: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.device_check", description=__doc__)
    parser.add_argument("--out", default="device_check.json", help="the JSON file written")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes, on the CPU")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--_stage", help=argparse.SUPPRESS)
    parser.add_argument("--_part", help=argparse.SUPPRESS)
    parser.add_argument("--_device", help=argparse.SUPPRESS)
    parser.add_argument("--_compile", help=argparse.SUPPRESS)
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._compile:  # one compile worker of the compile stage
        worker, workers = (int(x) for x in args._worker.split("/"))
        plan = [_as_key(v) for v in json.loads(Path(args._compile).read_text())]
        compile_variants(plan, worker, workers, args._device, args._part)
        return 0

    if args._stage:  # one stage, in its own subprocess
        extra = {"part": args._part} if args._stage == "tune" else {}  # written as it goes
        result = _IN_PROCESS[args._stage](args._device, args.cpu_dry_run, **extra)
        Path(args._part).write_text(json.dumps(result, indent=2, default=str))
        return 0

    cuda = torch.cuda.is_available() and not args.cpu_dry_run
    dry = args.cpu_dry_run
    device = "cuda" if cuda else "cpu"
    report: dict[str, Any] = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "liger_kernel": _version("liger_kernel"),
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "mode": "cuda" if cuda else ("cpu-dry-run" if dry else "cpu"),
        "stages": {},
    }
    out = Path(args.out)
    root = Path(__file__).resolve().parent.parent
    limits = DRY_RUN_LIMITS if dry else STAGE_LIMITS
    stages = list(STAGES) if (cuda or dry) else ["accuracy", "kernels", "sigmoid"]
    os.environ.setdefault("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))
    if not (cuda or dry):
        print("CUDA is absent: running the CPU-measurable stages only (accuracy, kernels, "
              "sigmoid on the CPU); use --cpu-dry-run to exercise every stage at tiny sizes",
              file=sys.stderr)  # fmt: skip
    if args.stages:
        wanted = args.stages.split(",")
        unknown = sorted(set(wanted) - set(STAGES))
        if unknown:
            raise SystemExit(f"unknown --stages {unknown}; known: {', '.join(STAGES)}")
        stages = [s for s in stages if s in wanted]
    _write(report, out)
    for name in stages:
        record = _run_stage(name, limits[name], dry, device, root)
        report["stages"][name] = record
        _write(report, out)
        print(f"[device_check] {name}: {record['status']} ({record['wall_s']} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    targets = report["stages"].get("bench", {}).get("targets", [])
    if targets:
        print(format_targets(targets), file=sys.stderr)
    tuned = report["stages"].get("tune", {}).get("result", {}).get("best", {})
    if tuned:
        print(format_tune(tuned), file=sys.stderr)
    print(f"[device_check] wrote {out.resolve()}", file=sys.stderr)
    return 0


def _version(module: str) -> str | None:
    try:
        return version(module.replace("_", "-"))
    except Exception:  # not installed
        return None


if __name__ == "__main__":
    sys.exit(main())
