r"""Benchmark: the chunked closed-form AMiD loss against the textbook autograd version and peers.

Usage::

    python -m gpu.bench                  # the logits table (CPU here, CUDA too when present)
    python -m gpu.bench --quick          # small sizes (V = 32000 with 256 rows, V = 50257)
    python -m gpu.bench --configs 50257:2048 --objectives kl,js,ab --impls textbook,torch
    python -m gpu.bench --fused          # lm_head + loss: textbook, fused, liger-kernel
    python -m gpu.bench --sparse         # a top-k teacher (k = 64) against the dense one
    python -m gpu.bench --targets        # every target of this device, from one run
    python -m gpu.bench --out bench.json # the JSON file, rewritten after every implementation

Implementations (logits mode, ``--impls``; each computes the objective of ``--objectives``,
forward and backward, on the same inputs):

* ``textbook`` -- :func:`textbook_amid_loss`: full (N, V) float32 log-softmaxes, the
  log α-mixture ``logaddexp(...)/β``, its normalizer and the divergence, differentiated by
  autograd (what one writes first);
* ``torch`` / ``triton`` -- :func:`gpu.amid_loss` with ``backend="torch"`` /
  ``backend="triton"`` (on CUDA; on CPU the Triton kernel runs only interpreted, under
  ``TRITON_INTERPRET=1``: a dry run, its time is no timing);
* ``compiled`` -- :func:`gpu.amid_loss` with ``compile=True`` (the torch kernel through
  ``torch.compile``);
* ``liger_jsd`` / ``liger_kl`` -- liger-kernel's Triton ``LigerJSD`` (objective ``js``) and
  ``LigerKLDIVLoss`` (objective ``kl``; it computes KL(p‖q), the λ = 0 member, so its time
  is a peer's, not the same objective) on ``log_softmax`` of the logits, CUDA only;
  ``"not installed"`` is recorded where liger-kernel is absent.

Objectives (``--objectives``): ``kl`` -- KL(p‖r), α = −5, λ = 0.1 (``--alpha``/``--lam``);
``js`` -- JS_β(p‖q), β = 0.5; ``ab`` -- AB(0.2, 0.7) D(r‖q), α = −5, λ = 0.1.

Robustness. Every implementation runs in its own subprocess with a time limit
(``--timeout``); a timeout, a crash or an out-of-memory is recorded as ``{"status":
"timeout" | "error", "why": ...}``, an implementation that cannot run here as ``{"status":
"not available", "why": ...}``, and the run continues. The JSON report (``--out``) is
rewritten after every implementation, so a later timeout or crash loses nothing.

Measurement method
------------------
* Every (implementation, configuration) pair runs in a **fresh subprocess**, so allocator
  caches and earlier peaks never leak between measurements.
* **CPU peak memory**: the kernel's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the measured step) after one forward+backward, minus
  the resident set size right after the inputs were allocated and touched. The inputs are
  generated in blocks of at most 1 MB, so that their creation leaves no higher earlier peak.
  The memory worker runs with a fixed glibc mmap threshold (:data:`gpu._rss.MALLOC_ENV`),
  so the high-water mark tracks live tensors; the time is measured in a second subprocess
  with the default allocator. "Extra" memory includes the final gradient (N·V in the
  student dtype) for every implementation.
* **CUDA peak memory**: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus the allocation after the inputs.
* **Time**: one untimed forward+backward and one warm-up, then the median of ``--reps``
  timed passes (gradients reset between passes); on CUDA between CUDA events.
* **Roofline**: each case counts the bytes that must move at least once (logits: both
  inputs read and the gradient written; fused: the weights and hidden states read and
  their gradients written) and its floating-point operations (fused: four GEMMs,
  8·N·V·H; logits: :data:`ELEMENTWISE_FLOPS` per element, an estimate). The HBM fraction
  is ``bytes / time / bandwidth`` and the FLOP fraction ``flops / time / rate``, with the
  ceilings of the device at hand measured at the start of the run
  (:func:`measure_ceilings`): on CUDA a 1 GiB device-to-device copy and a bf16 8192³
  product (the H200 here: :data:`H200_COPY_TBPS`, :data:`H200_BF16_TFLOPS`), on the CPU
  a 128 MiB float32 copy and a 1024³ float32 product.
* **Threads**: CPU logits runs pin torch to ``--threads`` intra-op threads (default 1);
  ``--threads 0`` keeps torch's default.

Fused mode (``--fused``)
------------------------
The lm_head and the loss together, from hidden states (N, H) and weights (V, H), forward +
backward, at JS_β(p‖q), β = 0.5 (``gpu``: divergence ``"js"``, λ = 0, order ``"pr"``;
liger: ``LigerFusedLinearJSDLoss(weight_hard_loss=0, weight_soft_loss=1, beta=β)``).
Implementations: ``naive`` (``F.linear`` + the textbook eager JSD, as TRL's
``generalized_jsd_loss``), ``unfused`` (``F.linear`` + :func:`gpu.amid_loss`), ``fused``
(:func:`gpu.amid_fused_linear_loss` at its default chunk), ``fused_rows`` (the same with
``gpu._fused.TWO_PHASE`` off: the row-chunk backward where the two-phase one would run, the
Triton kernel on CUDA; by default on CUDA only, elsewhere it is ``fused``),
``fused_compiled`` (``compile=True``, with ``--compile``), ``liger`` and ``liger_chunk``
(liger at its default chunk and at ours; on CPU with ``compiled=False``, its pure-torch
path), and the loss alone on materialized logits: ``logits_naive``, ``logits_chunked`` and
``logits_compiled``. On CPU each runs twice: on an otherwise idle machine ("quiet") and
with a busy-loop process on the side ("loaded").

Sparse mode (``--sparse``)
--------------------------
A top-k teacher (``teacher_topk=(indices, logprobs)``, k = ``--k``, ``leftover="bucket"``)
against the dense teacher logits, both through :func:`gpu.amid_loss`, KL(p‖r) α = −5
λ = 0.1, time and peak memory side by side. Where ``gpu.amid_loss`` does not accept
``teacher_topk=`` the sparse row is recorded as ``"not available"``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import gpu
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from gpu import _fused
from gpu._engine import _triton_usable
from gpu._fused import OUT_DTYPE_PRODUCTS
from gpu._rss import MALLOC_ENV, _reset_rss_peak, _rss_peak_bytes

DEFAULT_ALPHA = -5.0
DEFAULT_LAM = 0.1
#: Device-to-device copy bandwidth measured on one H200 here (bytes read + written), TB/s;
#: the datasheet says 4.8.
H200_COPY_TBPS = 4.3
#: bf16 8192³ matrix product measured on one H200 here (random data), TFLOP/s.
H200_BF16_TFLOPS = 790.0
#: Floating-point operations per logit assumed for the logits loss's FLOP count: about 30
#: transcendentals and as many arithmetic operations per element for the mixture, the
#: divergence and the gradient (an estimate; the loss is bound by memory traffic).
ELEMENTWISE_FLOPS = 60

#: The objectives of the logits mode: ``gpu.amid_loss`` keyword arguments and a label.
OBJECTIVES: dict[str, dict[str, Any]] = {
    "kl": {"alpha": DEFAULT_ALPHA, "lam": DEFAULT_LAM, "divergence": "kl", "order": "pr",
           "div_params": None, "label": "KL(p‖r) α=−5 λ=0.1"},
    "js": {"alpha": 0.0, "lam": 0.0, "divergence": "js", "order": "pr",
           "div_params": {"beta": 0.5}, "label": "JS β=0.5"},
    "ab": {"alpha": DEFAULT_ALPHA, "lam": DEFAULT_LAM, "divergence": "ab", "order": "rq",
           "div_params": {"alpha": 0.2, "beta": 0.7}, "label": "AB(0.2, 0.7) D(r‖q) α=−5 λ=0.1"},
}  # fmt: skip
LOGITS_IMPLS = ("textbook", "torch", "triton", "compiled", "liger_jsd", "liger_kl")
#: Which objective each liger peer computes (it is a peer of that objective only).
_LIGER_OBJECTIVE = {"liger_jsd": "js", "liger_kl": "kl"}

_CPU_CONFIGS = [(32000, 512), (32000, 2048), (50257, 512), (50257, 2048), (128256, 512)]
_CPU_QUICK = [(32000, 256), (50257, 512)]
_CUDA_CONFIGS = [(32000, 8192), (50257, 8192), (128256, 2048), (128256, 8192)]
_CUDA_QUICK = [(128256, 8192)]

#: Status of an implementation that ran; the others are "timeout", "error", "not available".
OK = "ok"


class Unavailable(Exception):
    """An implementation that cannot run here (not installed, needs CUDA, ...)."""


# --- the textbook implementations -------------------------------------------------------------


def textbook_amid_loss(
    student_logits, teacher_logits, alpha: float, lam: float, divergence: str = "kl",
    order: str = "pr", div_params: dict | None = None,
):  # fmt: skip
    r"""The textbook eager implementation (float32, autograd) of the mean AMiD loss.

    ``log q = log_softmax(s)``, ``log p = log_softmax(t)``, the log α-mixture
    :math:`\tfrac1\beta\,\mathrm{logaddexp}(\log\lambda + \beta\log p,
    \log(1-\lambda) + \beta\log q)`, β = (1 − α)/2, normalized by log-sum-exp, then the
    divergence between the two distributions that ``order`` names:

    * ``kl``: :math:`\sum a(\log a - \log b)`;
    * ``js`` (β_JS): :math:`\beta_{JS}\,KL(a\|m) + (1-\beta_{JS})\,KL(b\|m)`,
      :math:`m = \beta_{JS} a + (1-\beta_{JS}) b`;
    * ``ab`` (a_*, b_*): :math:`-\frac{1}{a_* b_*}\sum\big(a^{a_*}b^{b_*}
      - \frac{a_*}{a_*+b_*}a^{a_*+b_*} - \frac{b_*}{a_*+b_*}b^{a_*+b_*}\big)`.

    Every intermediate is a full (N, V) float32 tensor and autograd saves what it needs.
    Valid for finite α ≠ 1 (λ ∈ {0, 1} pick q or p).
    """
    s = student_logits.float()
    t = teacher_logits.float()
    log_q = torch.log_softmax(s, dim=-1)
    log_p = torch.log_softmax(t, dim=-1)
    if lam == 0.0:
        log_r = log_q
    elif lam == 1.0:
        log_r = log_p
    else:
        log_m = naive_log_alpha_mean(log_p, log_q, alpha, lam, logaddexp=torch.logaddexp)
        log_r = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
    logs = {"p": log_p, "q": log_q, "r": log_r}
    la, lb = logs[order[0]], logs[order[1]]
    params = div_params or {}
    if divergence == "kl":
        rows = (la.exp() * (la - lb)).sum(-1)
    elif divergence == "js":
        beta = params["beta"]
        lm = torch.logaddexp(la + math.log(beta), lb + math.log1p(-beta))
        rows = beta * (la.exp() * (la - lm)).sum(-1) + (1.0 - beta) * (lb.exp() * (lb - lm)).sum(-1)
    elif divergence == "ab":
        x, y = params["alpha"], params["beta"]
        total = x + y
        terms = (
            torch.exp(x * la + y * lb)
            - x / total * torch.exp(total * la)
            - y / total * torch.exp(total * lb)
        )
        rows = -terms.sum(-1) / (x * y)
    else:
        raise ValueError(f"textbook_amid_loss: divergence {divergence!r} is not written here")
    return rows.mean()


def naive_jsd(student_logits, teacher_logits, beta: float):
    """Textbook eager JSD_β(p‖q) per row mean, float32 autograd (TRL's formula)."""
    lq = torch.log_softmax(student_logits.float(), dim=-1)
    lp = torch.log_softmax(teacher_logits.float(), dim=-1)
    lm = torch.logsumexp(torch.stack([lq + math.log1p(-beta), lp + math.log(beta)]), dim=0)
    kl_p = (lp.exp() * (lp - lm)).sum(-1)
    kl_q = (lq.exp() * (lq - lm)).sum(-1)
    return (beta * kl_p + (1.0 - beta) * kl_q).mean()


# --- roofline -----------------------------------------------------------------------------------


def logits_case_cost(rows: int, vocab: int, student_bytes: int, teacher_bytes: int) -> dict:
    """Bytes that must move at least once (both logits read, the gradient written in the
    student dtype) and the estimated FLOPs (:data:`ELEMENTWISE_FLOPS` per element)."""
    return {
        "bytes": rows * vocab * (2 * student_bytes + teacher_bytes),
        "flops": ELEMENTWISE_FLOPS * rows * vocab,
    }


def fused_case_cost(rows: int, vocab: int, hidden: int, elem: int) -> dict:
    """Fused lm_head + loss: the student weight read twice (forward, G·W) and its gradient
    written, the teacher weight read once; the hidden states read (student twice, teacher
    once) and the student's gradient written. FLOPs: four GEMMs (student and teacher
    logits, dh, dW), 8·N·V·H."""
    return {
        "bytes": elem * (4 * vocab * hidden + 4 * rows * hidden),
        "flops": 8 * rows * vocab * hidden,
    }


def roofline(cost: dict, time_s: float, ceilings: dict) -> dict:
    """The HBM (memory) and FLOP fractions of the ceilings reached in ``time_s``."""
    if not (time_s and time_s > 0 and math.isfinite(time_s)):
        return {"hbm_fraction": None, "flop_fraction": None}
    return {
        "hbm_fraction": cost["bytes"] / time_s / ceilings["bytes_per_s"],
        "flop_fraction": cost["flops"] / time_s / ceilings["flops_per_s"],
    }


def _median_seconds(fn, cuda: bool, reps: int, before=None) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call (between CUDA
    events on CUDA); ``before`` (untimed) runs before each call."""
    times = []
    for _ in range(reps + 1):
        if before is not None:
            before()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def measure_ceilings(device: str, copy_bytes: int | None = None, gemm: int | None = None) -> dict:
    """The copy bandwidth (bytes read + written per second) and the matrix-product rate
    (FLOP/s) of ``device``, measured now: a copy of ``copy_bytes`` (CUDA 1 GiB, CPU 128 MiB:
    far beyond the caches) and a ``gemm``³ product (CUDA bf16 8192³, the tensor cores'
    rate; CPU float32 1024³), median of 10 (CPU: 5 and 3) after a warm-up."""
    cuda = device == "cuda"
    copy_bytes = copy_bytes or (1 << (30 if cuda else 27))
    gemm = gemm or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    x = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    bandwidth = 2 * x.numel() * 4 / _median_seconds(partial(y.copy_, x), cuda, 10 if cuda else 5)
    del x, y
    a = torch.rand(gemm, gemm, device=device).to(dtype)
    b = torch.rand(gemm, gemm, device=device).to(dtype)
    rate = 2 * gemm**3 / _median_seconds(partial(torch.matmul, a, b), cuda, 10 if cuda else 3)
    del a, b
    if cuda:
        torch.cuda.empty_cache()  # the workers measure their own peaks; give the blocks back
    return {"bytes_per_s": bandwidth, "flops_per_s": rate}


def device_ceilings(device: str, hbm_tbps: float | None = None) -> dict:
    """Memory bandwidth and FLOP rate of ``device`` for the roofline, measured now
    (:func:`measure_ceilings`): on CUDA a 1 GiB device-to-device copy and a bf16 8192³
    product, so that the fractions are of the GPU at hand (an H100 copies about 3.0 TB/s,
    an H200 :data:`H200_COPY_TBPS`); on the CPU a 128 MiB float32 copy and a 1024³ float32
    product. ``hbm_tbps`` (TB/s) replaces the measured bandwidth."""
    measured = measure_ceilings(device)
    override = f"; bandwidth set by --hbm-tbps {hbm_tbps}" if hbm_tbps else ""
    if device == "cuda":
        what = (f"{torch.cuda.get_device_name(0)}: a 1 GiB device-to-device copy "
                f"({measured['bytes_per_s'] / 1e12:.2f} TB/s) and a bf16 8192³ product "
                f"({measured['flops_per_s'] / 1e12:.0f} TFLOP/s) measured now")  # fmt: skip
    else:
        what = ("CPU: a 128 MiB float32 copy and a 1024³ float32 product measured now, "
                f"at {torch.get_num_threads()} torch threads")  # fmt: skip
    return {
        "bytes_per_s": hbm_tbps * 1e12 if hbm_tbps else measured["bytes_per_s"],
        "flops_per_s": measured["flops_per_s"],
        "measured_bytes_per_s": measured["bytes_per_s"],
        "source": what + override,
    }


# --- worker (runs in a fresh subprocess) --------------------------------------------------


def _rss_now_bytes() -> int:
    """Current resident set size (Linux /proc), falling back to the high-water mark."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return _rss_peak_bytes()


def _make_logits(rows: int, vocab: int, dtype, device, seed: int, peaked: bool):
    """(rows, V) logits ~ 2·N(0, 1) in ``dtype``, generated in ≤ 1 MB blocks (no earlier
    peak to hide; on CUDA, drawn on the device in 64 MB blocks, which the peak's baseline
    taken after them does not count); ``peaked``: one entry per row raised by 12 (a
    confident teacher)."""
    where = torch.device(device)
    gen_device = where if where.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(seed)
    out = torch.empty(rows, vocab, dtype=dtype, device=device)
    block = max(1, (1 << (24 if where.type == "cuda" else 18)) // vocab)
    for i in range(0, rows, block):
        j = min(rows, i + block)
        b = 2.0 * torch.randn(j - i, vocab, generator=gen, device=gen_device)
        if peaked:
            hot = torch.randint(0, vocab, (j - i,), generator=gen, device=gen_device)
            b[torch.arange(j - i, device=gen_device), hot] += 12.0
        out[i:j] = b.to(dtype)
    return out


def _make_inputs(rows: int, vocab: int, dtype, device):
    s = _make_logits(rows, vocab, dtype, device, 1234, False)
    t = _make_logits(rows, vocab, dtype, device, 4321, True)
    return s.requires_grad_(), t


def _make_topk(rows: int, vocab: int, k: int, device):
    """The top-k (indices, float32 log-probabilities) of the same teacher rows as
    :func:`_make_inputs`, computed block by block (no dense (N, V) teacher kept)."""
    gen = torch.Generator(device="cpu").manual_seed(4321)
    idx = torch.empty(rows, k, dtype=torch.long)
    lp = torch.empty(rows, k, dtype=torch.float32)
    block = max(1, (1 << 18) // vocab)
    for i in range(0, rows, block):
        j = min(rows, i + block)
        b = 2.0 * torch.randn(j - i, vocab, generator=gen)
        b[torch.arange(j - i), torch.randint(0, vocab, (j - i,), generator=gen)] += 12.0
        v, ix = torch.log_softmax(b, -1).topk(k, dim=-1)
        idx[i:j], lp[i:j] = ix, v
    return idx.to(device), lp.to(device)


def _timed(step, clear_grads, cuda: bool, reps: int) -> float:
    """Median seconds of ``reps`` forward+backward passes after one warm-up pass (the
    gradients cleared before each, outside the timing)."""

    def one() -> None:
        step().backward()

    return _median_seconds(one, cuda, reps, before=clear_grads)


def _measure_step(step, clear_grads, cuda: bool, spec: dict) -> tuple[int, float, float]:
    """Peak extra memory (bytes) of one forward+backward of ``step``, its loss, and the
    median time of ``spec["reps"]`` further passes after one warm-up pass.

    ``spec["measure"]``: ``"memory"`` (peak and loss only, time ``nan``), ``"time"`` (loss
    and time, peak ``0``) or ``"both"`` (the default; what CUDA runs use).
    """
    measure = spec.get("measure", "both")
    peak = 0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_now_bytes()
        _reset_rss_peak()
    loss = step()
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    elif measure != "time":
        peak = _rss_peak_bytes() - base
    loss_value = float(loss.detach())
    del loss
    if measure == "memory":
        return peak, loss_value, float("nan")
    return peak, loss_value, _timed(step, clear_grads, cuda, spec["reps"])


def _objective_kwargs(spec: dict) -> dict:
    obj = {k: v for k, v in OBJECTIVES[spec["objective"]].items() if k != "label"}
    for key in ("alpha", "lam"):  # --alpha / --lam apply to the mixture objectives
        if spec.get(key) is not None and obj["lam"] not in (0.0, 1.0):
            obj[key] = spec[key]
    return obj


def _liger_logits_loss(impl: str, obj: dict):
    """liger-kernel's Triton loss on log-probabilities (its availability told by
    :func:`why_unavailable`)."""
    if impl == "liger_jsd":
        from liger_kernel.transformers import LigerJSD  # optional: the peers extra

        crit = LigerJSD(beta=obj["div_params"]["beta"])
        return lambda s, t: crit(
            torch.log_softmax(s.float(), -1).view(-1, s.shape[-1]),
            torch.log_softmax(t.float(), -1).view(-1, t.shape[-1]),
        )
    from liger_kernel.transformers import LigerKLDIVLoss  # optional: the peers extra

    crit = LigerKLDIVLoss(reduction="batchmean", log_target=True)
    return lambda s, t: crit(torch.log_softmax(s.float(), -1), torch.log_softmax(t.float(), -1))


def why_unavailable(spec: dict) -> str | None:
    """Why the implementation of a worker ``spec`` cannot run here (``None`` if it can):
    liger-kernel not installed, a Liger logits loss of another objective or off CUDA, the
    Triton backend where triton cannot run (:func:`gpu._engine._triton_usable`), a
    compiled CPU kernel without a C++ compiler. Told in the driver as in the worker, so
    such a row costs no subprocess."""
    impl, device = spec["impl"], torch.device(spec["device"])
    if spec.get("mode") == "fused":
        if impl.startswith("liger") and importlib.util.find_spec("liger_kernel") is None:
            return "not installed: liger-kernel"
        return None
    if spec.get("mode") is not None:
        return None
    if impl in _LIGER_OBJECTIVE:
        if _LIGER_OBJECTIVE[impl] != _objective_kwargs(spec)["divergence"]:
            return f"{impl} computes the {_LIGER_OBJECTIVE[impl]} objective only"
        if importlib.util.find_spec("liger_kernel") is None:
            return "not installed: liger-kernel"
        if device.type != "cuda":
            return "liger-kernel's Triton kernels run on CUDA"
    elif impl == "triton":
        why = _triton_usable(device)
        if why is not None:
            return why
        if importlib.util.find_spec("gpu._triton_kernel") is None:
            return "this gpu package has no Triton kernel (gpu._triton_kernel)"
    elif impl == "compiled" and device.type == "cpu":
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "torch.compile (inductor) needs a C++ compiler on the CPU"
    return None


def _logits_step(spec: dict, device: torch.device):
    """The step to measure, the inputs, and extra row fields (or :class:`Unavailable`)."""
    impl = spec["impl"]
    why = why_unavailable(spec)
    if why is not None:
        raise Unavailable(why)
    obj = _objective_kwargs(spec)
    extra: dict[str, Any] = {}
    if impl == "textbook":
        fn = lambda s, t: textbook_amid_loss(s, t, **obj)  # noqa: E731
    elif impl in ("torch", "triton", "compiled"):
        backend = "torch" if impl == "compiled" else impl
        if impl == "triton":
            extra = {"interpreted": device.type == "cpu"}
        compile_flag = impl == "compiled"

        def fn(s, t):
            return gpu.amid_loss(s, t, **obj, chunk_size=spec.get("chunk_size"),
                                 backend=backend, compile=compile_flag)  # fmt: skip
    elif impl in _LIGER_OBJECTIVE:
        fn = _liger_logits_loss(impl, obj)
        if impl == "liger_kl":
            extra["objective_computed"] = "KL(p‖q) (λ = 0)"
    else:
        raise ValueError(f"unknown implementation {impl!r}; known: {', '.join(LOGITS_IMPLS)}")
    return fn, extra


def _worker(spec: dict) -> dict:
    """One logits-mode measurement (run in a fresh subprocess by the driver)."""
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab = spec["rows"], spec["vocab"]
    if spec.get("threads") and device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    cuda = device.type == "cuda"
    fn, extra = _logits_step(spec, device)
    # Warm-up on two rows: the first call pages in torch's kernels (and compiles).
    s, t = _make_inputs(min(rows, 2), vocab, dtype, device)
    fn(s, t).backward()
    if spec["impl"] == "compiled":  # and at the measured shape: compilation is not timed
        s, t = _make_inputs(rows, vocab, dtype, device)
        fn(s, t).backward()
    del s, t
    s, t = _make_inputs(rows, vocab, dtype, device)
    peak, loss_value, time_s = _measure_step(
        lambda: fn(s, t), lambda: setattr(s, "grad", None), cuda, spec
    )
    return {
        "impl": spec["impl"], "objective": spec["objective"], "device": device.type,
        "dtype": spec["dtype"], "rows": rows, "vocab": vocab, "status": OK,
        "time_ms": 1e3 * time_s, "peak_extra_mib": peak / 2**20, "loss": loss_value,
        **logits_case_cost(rows, vocab, s.element_size(), t.element_size()), **extra,
    }  # fmt: skip


def _sparse_worker(spec: dict) -> dict:
    """One sparse-mode measurement: the dense teacher or its top-k (``spec["impl"]``)."""
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab, k = spec["rows"], spec["vocab"], spec["k"]
    if spec.get("threads") and device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    obj = _objective_kwargs({**spec, "objective": "kl"})
    if spec["impl"] == "sparse":
        if not accepts_teacher_topk():
            raise Unavailable("gpu.amid_loss does not accept teacher_topk= here")

        def make():
            s = _make_logits(rows, vocab, dtype, device, 1234, False).requires_grad_()
            return s, _make_topk(rows, vocab, k, device)

        def fn(s, topk):
            return gpu.amid_loss(s, None, **obj, teacher_topk=topk, leftover="bucket",
                                 chunk_size=spec.get("chunk_size"))  # fmt: skip

        teacher_bytes = rows * k * (8 + 4)
    else:

        def make():
            return _make_inputs(rows, vocab, dtype, device)

        def fn(s, t):
            return gpu.amid_loss(s, t, **obj, chunk_size=spec.get("chunk_size"))

        teacher_bytes = rows * vocab * dtype.itemsize
    s, t = make()
    fn(s[:2], t[:2] if spec["impl"] == "dense" else tuple(x[:2] for x in t)).backward()
    del s, t
    s, t = make()
    peak, loss_value, time_s = _measure_step(
        lambda: fn(s, t), lambda: setattr(s, "grad", None), device.type == "cuda", spec
    )
    grad_bytes = rows * vocab * dtype.itemsize
    return {
        "impl": spec["impl"], "objective": "kl", "device": device.type, "dtype": spec["dtype"],
        "rows": rows, "vocab": vocab, "k": k if spec["impl"] == "sparse" else None,
        "status": OK, "time_ms": 1e3 * time_s, "peak_extra_mib": peak / 2**20,
        "gradient_mib": grad_bytes / 2**20, "teacher_input_mib": teacher_bytes / 2**20,
        "loss": loss_value,
        "bytes": 2 * rows * vocab * dtype.itemsize + teacher_bytes,
        "flops": ELEMENTWISE_FLOPS * rows * (vocab if spec["impl"] == "dense" else k),
    }  # fmt: skip


def accepts_teacher_topk() -> bool:
    """Whether :func:`gpu.amid_loss` takes a sparse teacher (``teacher_topk=``)."""
    try:
        return "teacher_topk" in inspect.signature(gpu.amid_loss).parameters
    except (TypeError, ValueError):  # pragma: no cover - not introspectable
        return False


def _worker_main(spec: dict) -> dict:
    """Run the worker ``spec`` names; an implementation that cannot run here becomes a
    ``"not available"`` row. A fallback of the gpu engine to another kernel is an error
    here (the row would time the wrong kernel)."""
    work = {"fused": _fused_worker, "sparse": _sparse_worker}.get(spec.get("mode"), _worker)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*using the torch kernel.*")
        warnings.filterwarnings("error", message=".*using the eager kernel.*")
        try:
            return work(spec)
        except Unavailable as exc:
            return {"impl": spec["impl"], "status": "not available", "why": str(exc)}


# --- the driver's side: one subprocess per implementation, failures recorded ------------------


class WorkerFailed(RuntimeError):
    """A worker subprocess that exited non-zero (a crash, an out-of-memory, an exception)."""


def _worker_command(spec: dict) -> list[str]:
    return [sys.executable, "-m", "gpu.bench", "--_worker", json.dumps(spec)]


def _worker_process(spec: dict, timeout: float, env: dict) -> dict:
    """Run one worker in a fresh subprocess; its row is the last line of its stdout."""
    proc = subprocess.run(
        _worker_command(spec), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env},
    )  # fmt: skip
    if proc.returncode != 0:
        raise WorkerFailed(_failure_reason(proc.returncode, proc.stderr))
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise WorkerFailed("the worker printed no result")
    return json.loads(lines[-1])


def _failure_reason(returncode: int, stderr: str) -> str:
    """One line saying why a worker failed: its last error line, and out-of-memory named."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    if returncode < 0:
        sig = -returncode
        why = f"killed by signal {sig}" + (" (out of memory?)" if sig == 9 else "")
        return f"{why}{': ' + last if last else ''}"[:500]
    if "out of memory" in stderr.lower() or "OutOfMemoryError" in stderr:
        return f"out of memory: {last}"[:500]
    return (last or f"exit status {returncode}")[:500]


def _run_in_subprocess(spec: dict, timeout: float, parts=("memory", "time")) -> dict:
    """One measurement in fresh subprocesses; on CPU, memory and time in separate ones.

    The CPU memory run uses a fixed glibc mmap threshold (:data:`gpu._rss.MALLOC_ENV`), so
    that the high-water mark tracks live tensors; the timed run uses the default allocator,
    as a user's process does. ``parts`` = ``("time",)`` skips the memory run (its peak is
    0); ``("both",)`` takes both in one subprocess, as on CUDA (the dry run of the CUDA
    plan on the CPU, :func:`_parts`). A row whose status is not ``"ok"`` is returned as it
    came.
    """
    if spec["device"] == "cuda" or tuple(parts) == ("both",):
        return _worker_process({**spec, "measure": "both"}, timeout, {})
    out = None
    for part in parts:
        env = MALLOC_ENV if part == "memory" else {}
        got = _worker_process({**spec, "measure": part}, timeout, env)
        if got.get("status", OK) != OK:
            return got
        if out is None:
            out = got
        elif part == "time":
            out["time_ms"] = got["time_ms"]
        else:
            out["peak_extra_mib"] = got["peak_extra_mib"]
    return out


def _parts(args, device: str) -> tuple[str, ...]:
    """The subprocesses of one measurement: one (``"both"``) in a dry run of the CUDA plan
    on the CPU (every code path as CUDA runs it; its figures are not read), else memory
    and time apart on the CPU (:func:`_run_in_subprocess`)."""
    if device == "cpu" and getattr(args, "target_plan", None) == "cuda":
        return ("both",)
    return ("memory", "time")


def attempt(spec: dict, timeout: float, parts=("memory", "time")) -> dict:
    """:func:`_run_in_subprocess`, with a timeout or a failure recorded as a row
    (``{"status": "timeout" | "error", "why": ...}``) instead of raised."""
    ident = {k: spec.get(k) for k in ("impl", "objective", "device", "dtype", "rows", "vocab")
             if k in spec}  # fmt: skip
    why = why_unavailable(spec)
    if why is not None:  # told here: no subprocess to start
        return {**ident, "status": "not available", "why": why}
    try:
        row = _run_in_subprocess(spec, timeout, parts)
    except subprocess.TimeoutExpired:
        return {**ident, "status": "timeout", "why": f"over the {timeout:g} s limit per process"}
    except (WorkerFailed, ValueError, OSError) as exc:  # ValueError: unreadable JSON
        return {**ident, "status": "error", "why": f"{type(exc).__name__}: {exc}"[:600]}
    return {**ident, **row}


class Report:
    """The JSON report, rewritten (atomically) after every row added."""

    def __init__(self, path: str | os.PathLike | None, header: dict):
        self.path = Path(path) if path else None
        self.data = {**header, "results": [], "targets": []}
        self.write()

    def add(self, row: dict) -> dict:
        self.data["results"].append(row)
        self.write()
        return row

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def _progress(row: dict, args) -> None:
    if args.json:
        return
    label = " ".join(str(row.get(k)) for k in ("objective", "impl") if row.get(k))
    where = f"{row.get('device')} {row.get('dtype')} V={row.get('vocab')} N={row.get('rows')}"
    if row.get("status") == OK:
        what = f"{row['time_ms']:.1f} ms, {row['peak_extra_mib']:.1f} MiB, loss {row['loss']:.6g}"
    else:
        what = f"{row.get('status')}: {row.get('why')}"
    print(f"  {where} {label}: {what}", file=sys.stderr, flush=True)


# --- targets ----------------------------------------------------------------------------------

MET, NOT_MET, NOT_MEASURED = "MET", "NOT MET", "NOT MEASURED"

#: The logits targets on CUDA (bf16, N = 8192, V = 128256): time and peak memory over the
#: textbook version's, for these objectives.
CUDA_LOGITS_TARGET = {"rows": 8192, "vocab": 128256, "dtype": "bfloat16",
                      "objectives": ("kl", "js", "ab"), "time": 0.25, "memory": 0.1}  # fmt: skip
#: The fused target on CUDA: time and peak memory over LigerFusedLinearJSDLoss's.
CUDA_FUSED_TARGET = {"rows": 8192, "vocab": 128256, "hidden": 4096, "time": 1.0, "memory": 1.0}
#: The CPU target: the torch backend's time over the textbook version's (V = 32000, N = 256).
CPU_LOGITS_TARGET = {"rows": 256, "vocab": 32000, "dtype": "float32", "objectives": ("kl",),
                     "time": 1.0}  # fmt: skip
#: The sparse target (CPU float32, N = 2048, V = 151936, k = 64): the sparse loss's working
#: memory (peak extra less the gradient) over the dense chunked loss's.
SPARSE_TARGET = {"rows": 2048, "vocab": 151936, "k": 64, "dtype": "float32", "memory": 0.25}


def judge(name: str, ours: dict | None, ref: dict | None, key: str, bound: float) -> dict:
    """One target: ``ours[key] / ref[key] ≤ bound``, MET / NOT MET, or NOT MEASURED (with
    why) when either row is missing or did not run."""
    row = {"target": name, "bound": bound, "ratio": None}
    for who, r in (("implementation", ours), ("reference", ref)):
        if r is None:
            return {**row, "verdict": NOT_MEASURED, "why": f"no {who} row in this run"}
        if r.get("status", OK) != OK:
            return {**row, "verdict": NOT_MEASURED,
                    "why": f"{r.get('impl')}: {r.get('status')} ({r.get('why')})"}  # fmt: skip
        if r.get("interpreted"):
            return {**row, "verdict": NOT_MEASURED, "why": f"{r.get('impl')} was interpreted"}
    a, b = ours.get(key), ref.get(key)
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return {**row, "verdict": NOT_MEASURED, "why": f"{key} missing or not positive"}
    ratio = a / b
    return {**row, "ratio": ratio, "verdict": MET if ratio <= bound else NOT_MET}


def _find(results: list[dict], **want) -> dict | None:
    for r in results:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def logits_targets(
    rows: list[dict], device: str, plan: str | None = None, size: dict | None = None
) -> list[dict]:
    """The logits targets of ``device`` judged on the rows of one run: on CUDA the default
    backend (triton) against the textbook version, time and peak memory, for each objective
    of :data:`CUDA_LOGITS_TARGET`; on the CPU the torch backend's time (the CPU default)
    at :data:`CPU_LOGITS_TARGET`'s size. ``plan`` (default: ``device``) picks the set of
    targets and ``size`` overrides its rows, vocab and dtype (the CPU dry run of the CUDA
    plan)."""
    out = []
    if (plan or device) == "cuda":
        tgt, ours = CUDA_LOGITS_TARGET, "triton"
    else:
        tgt, ours = CPU_LOGITS_TARGET, "torch"
    tgt = {**tgt, **(size or {})}
    size = {"rows": tgt["rows"], "vocab": tgt["vocab"], "dtype": tgt["dtype"], "device": device}
    for objective in tgt["objectives"]:
        mine = _find(rows, impl=ours, objective=objective, **size)
        ref = _find(rows, impl="textbook", objective=objective, **size)
        label = OBJECTIVES[objective]["label"]
        where = f"N={tgt['rows']} V={tgt['vocab']} {tgt['dtype']}"
        out.append(judge(f"{label}, {where}: {ours} time ≤ {tgt['time']}× textbook",
                         mine, ref, "time_ms", tgt["time"]))  # fmt: skip
        if "memory" in tgt:
            out.append(judge(f"{label}, {where}: {ours} peak ≤ {tgt['memory']}× textbook",
                             mine, ref, "peak_extra_mib", tgt["memory"]))  # fmt: skip
    return out


def fused_targets(rows: list[dict], device: str = "cuda", size: dict | None = None) -> list[dict]:
    """The fused target (CUDA): the fused loss at its default chunk against
    LigerFusedLinearJSDLoss at its own, time and peak memory (``size``: other rows, vocab
    and hidden, for the dry run)."""
    tgt = {**CUDA_FUSED_TARGET, **(size or {})}
    size = {"rows": tgt["rows"], "vocab": tgt["vocab"], "hidden": tgt["hidden"],
            "device": device}  # fmt: skip
    mine, ref = _find(rows, impl="fused", **size), _find(rows, impl="liger", **size)
    where = f"N={tgt['rows']} V={tgt['vocab']} H={tgt['hidden']} JSD β=0.5"
    return [
        judge(f"fused, {where}: time ≤ {tgt['time']}× liger", mine, ref, "time_ms", tgt["time"]),
        judge(f"fused, {where}: peak ≤ {tgt['memory']}× liger", mine, ref, "peak_extra_mib",
              tgt["memory"]),
    ]  # fmt: skip


def working_memory_mib(row: dict | None) -> dict | None:
    """A sparse-mode row with ``working_mib``: its peak extra memory less the gradient
    buffer both losses must write (the loss's own scratch)."""
    if row is None or row.get("status", OK) != OK:
        return row
    return {**row, "working_mib": row["peak_extra_mib"] - row["gradient_mib"]}


def sparse_targets(rows: list[dict]) -> list[dict]:
    """The sparse target: working memory (peak extra less the gradient) of the top-k loss
    over the dense chunked loss's, at :data:`SPARSE_TARGET`'s size; the peak-extra ratio
    including the gradient is reported beside it."""
    tgt = SPARSE_TARGET
    size = {"rows": tgt["rows"], "vocab": tgt["vocab"], "dtype": tgt["dtype"], "device": "cpu"}
    mine = working_memory_mib(_find(rows, impl="sparse", **size))
    ref = working_memory_mib(_find(rows, impl="dense", **size))
    where = f"N={tgt['rows']} V={tgt['vocab']} k={tgt['k']} {tgt['dtype']}"
    return [
        judge(f"sparse, {where}: working memory ≤ {tgt['memory']}× dense", mine, ref,
              "working_mib", tgt["memory"]),
        {**judge(f"sparse, {where}: peak extra incl. gradient (reported)", mine, ref,
                 "peak_extra_mib", math.inf), "reported_only": True},
        {**judge(f"sparse, {where}: time (reported)", mine, ref, "time_ms", math.inf),
         "reported_only": True},
    ]  # fmt: skip


def format_targets(targets: list[dict]) -> str:
    """One line per target: its name, the measured ratio and MET / NOT MET / NOT MEASURED."""
    lines = []
    for t in targets:
        ratio = f"{t['ratio']:.3f}×" if t.get("ratio") is not None else "–"
        if t.get("reported_only"):
            verdict = "(reported)" if t["verdict"] != NOT_MEASURED else NOT_MEASURED
        else:
            verdict = t["verdict"]
        why = f"  [{t['why']}]" if t.get("why") else ""
        lines.append(f"target {t['target']}: {ratio} {verdict}{why}")
    return "\n".join(lines)


# --- logits mode --------------------------------------------------------------------------------


def _parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        v, _, n = item.partition(":")
        out.append((int(v), int(n)))
    return out


def _estimate_textbook_bytes(rows: int, vocab: int) -> int:
    """Rough peak of the textbook version: about 12 float32 (N, V) tensors."""
    return 12 * rows * vocab * 4


def _names(text: str | None, known, what: str, default) -> list[str]:
    if not text:
        return list(default)
    wanted = [x for x in text.split(",") if x]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return wanted


def _default_logits_impls(device: str) -> tuple[str, ...]:
    if device == "cuda":
        return LOGITS_IMPLS
    return ("textbook", "torch")


def _devices(args) -> list[str]:
    cuda = torch.cuda.is_available()
    if args.device == "cuda":
        return ["cuda"]
    if args.device == "cpu":
        return ["cpu"]
    return ["cpu", "cuda"] if cuda else ["cpu"]


def _header(args, mode: str, devices: list[str]) -> dict:
    return {
        "mode": mode,
        "devices": devices,
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "reps": args.reps,
        "timeout_s": args.timeout,
        "ceilings": {d: device_ceilings(d, args.hbm_tbps) for d in devices},
    }


def run_logits(args, report: Report | None = None, plan=None) -> Report:
    """The logits mode: every (device, configuration, objective, implementation) in its
    own subprocess, each row added to the report as it comes."""
    devices = _devices(args)
    report = report or Report(args.out, _header(args, "logits", devices))
    threads = 1 if args.threads is None else args.threads
    for device in devices:
        if plan is not None:
            cases = plan(device)
        else:
            if args.configs:
                configs = _parse_configs(args.configs)
            elif device == "cuda":
                configs = _CUDA_QUICK if args.quick else _CUDA_CONFIGS
            else:
                configs = _CPU_QUICK if args.quick else _CPU_CONFIGS
            objectives = _names(args.objectives, OBJECTIVES, "--objectives",
                                ("kl", "js", "ab") if device == "cuda" else ("kl",))  # fmt: skip
            impls = _names(args.impls, LOGITS_IMPLS, "--impls", _default_logits_impls(device))
            dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
            cases = [(v, n, dtype, o, impls) for v, n in configs for o in objectives]
        ceilings = report.data["ceilings"].get(device) or device_ceilings(device, args.hbm_tbps)
        for vocab, rows, dtype, objective, impls in cases:
            if device == "cpu" and _estimate_textbook_bytes(rows, vocab) > args.max_gib * 2**30:
                report.data.setdefault("skipped", []).append(
                    f"{device} V={vocab} N={rows} (over --max-gib {args.max_gib})"
                )
                continue
            for impl in impls:
                if impl in _LIGER_OBJECTIVE and _LIGER_OBJECTIVE[impl] != objective:
                    continue  # a peer of another objective
                spec = {
                    "device": device, "dtype": dtype, "rows": rows, "vocab": vocab,
                    "objective": objective, "impl": impl, "alpha": args.alpha, "lam": args.lam,
                    "reps": args.reps, "chunk_size": args.chunk_size, "threads": threads,
                }  # fmt: skip
                row = attempt(spec, args.timeout, parts=_parts(args, device))
                if row.get("status") == OK:
                    row.update(roofline(row, row["time_ms"] / 1e3, ceilings))
                report.add(row)
                _progress(row, args)
    return report


def _fmt(x, spec: str, missing: str = "–") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_logits(report: dict) -> str:
    """The side-by-side table of the logits mode (ratios to the textbook row of the case)."""
    rows = report["results"]
    head = (
        f"{'device':6} {'dtype':8} {'N':>5} {'V':>7} {'objective':9} {'impl':10} | "
        f"{'ms':>9} {'×text':>6} | {'peak MiB':>9} {'×text':>6} | {'HBM':>6} {'FLOP':>6} | "
        f"{'|Δloss|':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        key = {k: r.get(k) for k in ("device", "dtype", "rows", "vocab", "objective")}
        ref = _find(rows, impl="textbook", **key)
        ok_ref = ref is not None and ref.get("status") == OK
        lead = (
            f"{r.get('device')!s:6} {r.get('dtype')!s:8} {r.get('rows', 0):5d} "
            f"{r.get('vocab', 0):7d} {r.get('objective')!s:9} {r.get('impl')!s:10} | "
        )
        if r.get("status") != OK:
            lines.append(lead + f"{r.get('status')}: {r.get('why')}")
            continue
        t_ratio = r["time_ms"] / ref["time_ms"] if ok_ref else None
        m_ratio = r["peak_extra_mib"] / max(ref["peak_extra_mib"], 1e-9) if ok_ref else None
        dl = abs(r["loss"] - ref["loss"]) if ok_ref else None
        note = "  (interpreted: no timing)" if r.get("interpreted") else ""
        if r.get("objective_computed"):
            note += f"  (computes {r['objective_computed']})"
        lines.append(
            lead + f"{r['time_ms']:9.1f} {_fmt(t_ratio, '6.2f')} | {r['peak_extra_mib']:9.1f} "
            f"{_fmt(m_ratio, '6.3f')} | {_fmt(r.get('hbm_fraction'), '6.1%')} "
            f"{_fmt(r.get('flop_fraction'), '6.1%')} | {_fmt(dl, '8.1e')}{note}"
        )
    return "\n".join(lines)


# --- fused mode ------------------------------------------------------------------------------

FUSED_IMPLS = (
    "naive",
    "unfused",
    "fused",
    "fused_rows",
    "fused_compiled",
    "liger",
    "liger_chunk",
    "logits_naive",
    "logits_chunked",
    "logits_compiled",
)
#: Implementations that need ``--compile``.
_COMPILED_IMPLS = ("fused_compiled", "logits_compiled")
_CPU_FUSED = [(50257, 2048, 768)]
_CUDA_FUSED = [(128256, 8192, 4096)]
LIGER_DEFAULT_CHUNK = 1024


def _fused_inputs(rows, vocab, hidden, dtype, device):
    where = torch.device(device)
    gen_device = where if where.type == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=gen_device).manual_seed(4321)

    def block_randn(shape, scale):
        out = torch.empty(shape, dtype=dtype, device=device)
        step = max(1, (1 << (24 if where.type == "cuda" else 18)) // shape[1])
        for i in range(0, shape[0], step):
            j = min(shape[0], i + step)
            b = torch.randn(j - i, shape[1], generator=gen, device=gen_device)
            out[i:j] = (scale * b).to(dtype)
        return out

    h = block_randn((rows, hidden), 1.0).requires_grad_()
    w = block_randn((vocab, hidden), hidden**-0.5 * 2.0).requires_grad_()
    th = block_randn((rows, hidden), 1.0)
    tw = block_randn((vocab, hidden), hidden**-0.5 * 4.0)
    return h, w, th, tw


def _fused_worker(spec: dict) -> dict:
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab, hidden, beta = spec["rows"], spec["vocab"], spec["hidden"], spec["beta"]
    impl, chunk = spec["impl"], spec.get("chunk_size")
    cuda = device.type == "cuda"
    why = why_unavailable(spec)
    if why is not None:
        raise Unavailable(why)
    h, w, th, tw = _fused_inputs(rows, vocab, hidden, dtype, device)
    labels = torch.zeros(rows, dtype=torch.long, device=device)
    js = dict(alpha=0.0, lam=0.0, divergence="js", order="pr", div_params={"beta": beta})
    if impl.startswith("logits_"):  # the loss alone, on materialized logits (no lm_head)
        with torch.no_grad():
            s_logits = F.linear(h, w).requires_grad_()
            t_logits = F.linear(th, tw)
        h = s_logits  # what receives the gradient below
        w = torch.empty(0)
    if impl == "logits_naive":

        def step():
            return naive_jsd(s_logits, t_logits, beta)
    elif impl in ("logits_chunked", "logits_compiled"):
        compile_logits = impl == "logits_compiled"

        def step():
            return gpu.amid_loss(s_logits, t_logits, chunk_size=chunk, compile=compile_logits, **js)
    elif impl in ("liger", "liger_chunk"):
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss  # optional: peers extra

        crit = LigerFusedLinearJSDLoss(
            weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, compiled=cuda,
            chunk_size=LIGER_DEFAULT_CHUNK if impl == "liger" else spec["our_chunk"],
        )  # fmt: skip

        def step():
            return crit(h, w, th, tw, labels)
    elif impl == "naive":

        def step():
            with torch.no_grad():
                t = F.linear(th, tw)
            return naive_jsd(F.linear(h, w), t, beta)
    elif impl == "unfused":

        def step():
            with torch.no_grad():
                t = F.linear(th, tw)
            return gpu.amid_loss(F.linear(h, w), t, chunk_size=chunk, **js)
    elif impl in ("fused", "fused_rows", "fused_compiled"):
        compile_flag = impl == "fused_compiled"
        two_phase = impl != "fused_rows"  # fused_rows: the row-chunk path where both apply

        def step():
            before, _fused.TWO_PHASE = _fused.TWO_PHASE, two_phase
            try:
                return gpu.amid_fused_linear_loss(
                    h, w, th, tw, chunk_size=chunk, compile=compile_flag, **js
                )
            finally:
                _fused.TWO_PHASE = before
    else:
        raise ValueError(f"unknown implementation {impl!r}; known: {', '.join(FUSED_IMPLS)}")

    if spec.get("threads") and not cuda:
        torch.set_num_threads(spec["threads"])
    if impl in _COMPILED_IMPLS:  # compile outside the measurement
        step().backward()
        h.grad = w.grad = None

    def clear_grads():
        h.grad = w.grad = None

    peak, loss_value, time_s = _measure_step(step, clear_grads, cuda, spec)
    el = h.element_size()
    cost = (
        logits_case_cost(rows, vocab, el, el)
        if impl.startswith("logits_")
        else fused_case_cost(rows, vocab, hidden, el)
    )
    return {
        "impl": impl,
        "device": device.type,
        "dtype": spec["dtype"],
        "rows": rows,
        "vocab": vocab,
        "hidden": hidden,
        "status": OK,
        "time_ms": 1e3 * time_s,
        "peak_extra_mib": peak / 2**20,
        "loss": loss_value,
        "threads": torch.get_num_threads() if not cuda else None,
        **cost,
        **_gemm_route(impl),
    }


def _gemm_route(impl: str) -> dict:
    """For the gpu fused loss: which float32-output products of low-precision operands
    this torch took (``gpu._fused.OUT_DTYPE_PRODUCTS``; empty off CUDA)."""
    if impl not in ("fused", "fused_rows", "fused_compiled"):
        return {}
    return {"out_dtype_products": dict(OUT_DTYPE_PRODUCTS)}


class _BusyLoad:
    """A busy-looping subprocess for the duration of a ``with`` block (one core taken)."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False


def _liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def gpu_default_chunk(vocab: int, device: str) -> int:
    return gpu.default_chunk_size(vocab, device, wide=True)


def run_fused(args, report: Report | None = None, configs=None, impls=None) -> Report:
    """The fused mode: each implementation in its own subprocess, each row added to the
    report as it comes (quiet rows, then loaded ones on CPU)."""
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if configs is None:
        if args.fused_configs:
            configs = [tuple(int(x) for x in c.split(":")) for c in args.fused_configs.split(",")]
        else:
            configs = _CUDA_FUSED if device == "cuda" else _CPU_FUSED
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    if impls is None:
        # fused_rows differs from fused only where the two-phase path runs (Triton: CUDA)
        default = [i for i in FUSED_IMPLS if (i not in _COMPILED_IMPLS or args.compile)
                   and (i != "fused_rows" or device == "cuda")]  # fmt: skip
        impls = _names(args.impls, FUSED_IMPLS, "--impls", default)
    report = report or Report(args.out, {**_header(args, "fused", [device]), "beta": args.beta})
    ceilings = report.data["ceilings"].get(device) or device_ceilings(device, args.hbm_tbps)
    conditions = ["quiet"] if (args.no_load or device == "cuda") else ["quiet", "loaded"]
    for vocab, rows, hidden in configs:
        our_chunk = args.chunk_size or gpu_default_chunk(vocab, device)
        spec = {
            "mode": "fused", "device": device, "dtype": dtype, "rows": rows, "vocab": vocab,
            "hidden": hidden, "beta": args.beta, "reps": args.reps, "threads": args.threads,
            "chunk_size": args.chunk_size, "our_chunk": our_chunk,
        }  # fmt: skip
        for condition in conditions:
            for impl in impls:
                one = {**spec, "impl": impl}
                if condition == "loaded":
                    with _BusyLoad():  # time only: the peak is the quiet run's
                        row = attempt(one, args.timeout, parts=("time",))
                else:
                    row = attempt(one, args.timeout, parts=_parts(args, device))
                row.update(condition=condition, hidden=hidden, our_chunk=our_chunk)
                if row.get("status") == OK:
                    row.update(roofline(row, row["time_ms"] / 1e3, ceilings))
                report.add(row)
                _progress(row, args)
    return report


def _ratio(a, b):
    return a / b if (a is not None and b) else float("nan")


def format_fused(report: dict, reps: int) -> str:
    """The fused table: time (quiet, loaded) and peak memory with their ratios."""
    lines = [
        f"lm_head + JSD(β={report.get('beta')}) forward+backward, median of {reps}; peak extra "
        "memory over the inputs (incl. the hidden and weight gradients)"
    ]
    rows = report["results"]
    configs = sorted({(r.get("vocab"), r.get("rows"), r.get("hidden")) for r in rows})
    for vocab, n, hidden in configs:
        mine = [r for r in rows if (r.get("vocab"), r.get("rows"), r.get("hidden"))
                == (vocab, n, hidden)]  # fmt: skip
        quiet = {r["impl"]: r for r in mine if r.get("condition") == "quiet"}
        loaded = {r["impl"]: r for r in mine if r.get("condition") == "loaded"}
        chunk = mine[0].get("our_chunk") if mine else None
        lines.append(f"\nV={vocab} N={n} H={hidden} (gpu chunk {chunk} rows, liger_chunk the same)")
        lines.append(
            "(×ref: time over naive, memory over unfused; for the logits_* rows, which time "
            "the loss alone on materialized logits, both over logits_naive)"
        )
        head = (
            f"{'impl':15} | {'quiet ms':>9} {'×ref':>7} | {'loaded ms':>9} {'×ref':>7} | "
            f"{'peak MiB':>9} {'×ref':>8} | {'HBM':>6} {'FLOP':>6} | {'|Δloss|':>8}"
        )
        lines += [head, "-" * len(head)]

        def ok(d, impl):
            r = d.get(impl)
            return r if r is not None and r.get("status") == OK else None

        ref_loss = (ok(quiet, "naive") or ok(quiet, "logits_naive") or {}).get("loss")
        for impl in FUSED_IMPLS:
            q = quiet.get(impl)
            if q is None:
                continue
            if q.get("status") != OK:
                lines.append(f"{impl:15} | {q.get('status')}: {q.get('why')}")
                continue
            on_logits = impl.startswith("logits_")
            tref = "logits_naive" if on_logits else "naive"
            mref = (ok(quiet, "logits_naive" if on_logits else "unfused") or {}).get(
                "peak_extra_mib"
            )
            nq = (ok(quiet, tref) or {}).get("time_ms")
            nl = (ok(loaded, tref) or {}).get("time_ms")
            lt = (ok(loaded, impl) or {}).get("time_ms")
            dl = abs(q["loss"] - ref_loss) if ref_loss is not None else float("nan")
            lines.append(
                f"{impl:15} | {q['time_ms']:9.1f} {_ratio(q['time_ms'], nq):7.2f} | "
                f"{(lt if lt is not None else float('nan')):9.1f} {_ratio(lt, nl):7.2f} | "
                f"{q['peak_extra_mib']:9.1f} {_ratio(q['peak_extra_mib'], mref):8.3f} | "
                f"{_fmt(q.get('hbm_fraction'), '6.1%')} {_fmt(q.get('flop_fraction'), '6.1%')} | "
                f"{dl:8.1e}"
            )
        targets = []
        f, lg, unf = ok(quiet, "fused"), ok(quiet, "liger_chunk"), ok(quiet, "unfused")
        if f and unf:
            targets.append(("fused peak ≤ 0.3× unfused",
                            _ratio(f["peak_extra_mib"], unf["peak_extra_mib"]), 0.3))  # fmt: skip
        if f and lg:
            targets.append(("fused peak ≤ 1.0× liger (same chunk)",
                            _ratio(f["peak_extra_mib"], lg["peak_extra_mib"]), 1.0))  # fmt: skip
            targets.append(("fused time ≤ 1.0× liger (same chunk)",
                            _ratio(f["time_ms"], lg["time_ms"]), 1.0))  # fmt: skip
        for name, value, bound in targets:
            verdict = MET if value <= bound else NOT_MET  # nan (no reference): NOT met
            lines.append(f"target {name}: {value:.3f} ({verdict})")
    return "\n".join(lines)


# --- sparse mode ----------------------------------------------------------------------------------


def run_sparse(args, report: Report | None = None, configs=None) -> Report:
    """The sparse mode: the dense chunked loss and the top-k one, each in its own
    subprocess, on the CPU (or ``--device cuda``)."""
    device = "cuda" if args.device == "cuda" else "cpu"
    dtype = args.dtype or "float32"
    if configs is None:
        configs = (
            _parse_configs(args.configs)
            if args.configs
            else [(SPARSE_TARGET["vocab"], SPARSE_TARGET["rows"])]
        )
    report = report or Report(args.out, {**_header(args, "sparse", [device]), "k": args.k})
    ceilings = report.data["ceilings"].get(device) or device_ceilings(device, args.hbm_tbps)
    threads = 1 if args.threads is None else args.threads
    for vocab, rows in configs:
        for impl in ("dense", "sparse"):
            spec = {"mode": "sparse", "device": device, "dtype": dtype, "rows": rows,
                    "vocab": vocab, "k": args.k, "impl": impl, "alpha": args.alpha,
                    "lam": args.lam, "reps": args.reps, "chunk_size": args.chunk_size,
                    "threads": threads}  # fmt: skip
            row = working_memory_mib(attempt(spec, args.timeout))
            if row.get("status") == OK:
                row.update(roofline(row, row["time_ms"] / 1e3, ceilings))
            report.add(row)
            _progress(row, args)
    return report


def format_sparse(report: dict) -> str:
    lines = [
        f"sparse (top-k, leftover='bucket') vs dense teacher, KL(p‖r) α=−5 λ=0.1, "
        f"forward+backward; working = peak extra less the gradient ({report.get('k')} ids kept)",
        f"{'device':6} {'dtype':8} {'N':>5} {'V':>7} {'impl':7} | {'ms':>9} | {'peak MiB':>9} "
        f"{'working MiB':>11} {'teacher MiB':>11} | {'loss':>10}",
    ]
    for r in report["results"]:
        lead = (f"{r.get('device')!s:6} {r.get('dtype')!s:8} {r.get('rows', 0):5d} "
                f"{r.get('vocab', 0):7d} {r.get('impl')!s:7} | ")  # fmt: skip
        if r.get("status") != OK:
            lines.append(lead + f"{r.get('status')}: {r.get('why')}")
            continue
        lines.append(
            lead + f"{r['time_ms']:9.1f} | {r['peak_extra_mib']:9.1f} {r['working_mib']:11.1f} "
            f"{r['teacher_input_mib']:11.2f} | {r['loss']:10.6f}"
        )
    return "\n".join(lines)


# --- targets mode ---------------------------------------------------------------------------------


def run_targets(args) -> Report:
    """Every target of this device from one run: on CUDA the logits targets (three
    objectives: textbook, triton, and torch for KL, with the liger peers) and the fused
    target (fused against liger); on the CPU the torch-vs-textbook target at the quick size
    and, with ``--sparse``, the sparse target. ``--target-plan cuda`` with ``--device cpu``
    and small ``--configs`` / ``--fused-configs`` runs the CUDA plan on the CPU (a dry run:
    every code path, no meaningful ratio)."""
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    args.device = device
    plan = args.target_plan or device
    report = Report(args.out, {**_header(args, "targets", [device]), "beta": args.beta,
                               "k": args.k, "target_plan": plan})  # fmt: skip
    if plan == "cuda":
        t = dict(CUDA_LOGITS_TARGET)
        if args.configs:
            (t["vocab"], t["rows"]), *_ = _parse_configs(args.configs)
        t["dtype"] = args.dtype or t["dtype"]

        def cases(impls_of):
            return lambda _device: [
                (t["vocab"], t["rows"], t["dtype"], o, impls_of(o)) for o in t["objectives"]
            ]

        # What the targets judge first (each objective's textbook and triton rows, then the
        # fused pair), the peers last: a stage limit that cuts the run short cuts a peer.
        run_logits(args, report, cases(lambda _o: ["textbook", "triton"]))
        f = dict(CUDA_FUSED_TARGET)
        if args.fused_configs:
            f["vocab"], f["rows"], f["hidden"] = (
                int(x) for x in args.fused_configs.split(",")[0].split(":")
            )
        args.no_load = True
        run_fused(args, report, configs=[(f["vocab"], f["rows"], f["hidden"])],
                  impls=["fused", "liger"])  # fmt: skip
        peers = {"kl": ["torch", "liger_kl"], "js": ["liger_jsd"]}
        run_logits(args, report, cases(lambda o: peers.get(o, [])))
        # last: the fused loss down its row-chunk path (what the two-phase path's memory costs)
        run_fused(args, report, configs=[(f["vocab"], f["rows"], f["hidden"])],
                  impls=["fused_rows"])  # fmt: skip
        size = {k: t[k] for k in ("rows", "vocab", "dtype")}
        report.data["targets"] = logits_targets(
            report.data["results"], device, "cuda", size
        ) + fused_targets(report.data["results"], device,
                          {k: f[k] for k in ("rows", "vocab", "hidden")})  # fmt: skip
    else:
        t = CPU_LOGITS_TARGET
        run_logits(
            args, report, lambda _d: [(t["vocab"], t["rows"], t["dtype"], "kl",
                                       ["textbook", "torch"])]
        )  # fmt: skip
        report.data["targets"] = logits_targets(report.data["results"], "cpu")
        if args.sparse:
            s = SPARSE_TARGET
            run_sparse(args, report, configs=[(s["vocab"], s["rows"])])
            report.data["targets"] += sparse_targets(report.data["results"])
    report.write()
    return report


# --- command line ---------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small configurations only")
    parser.add_argument("--json", action="store_true", help="print the JSON report, not tables")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON report file, rewritten after every implementation (default: none)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, +CUDA"
    )
    parser.add_argument("--configs", help="comma-separated V:N pairs, e.g. 50257:2048")
    parser.add_argument("--objectives", help=f"comma-separated subset of {','.join(OBJECTIVES)}")
    parser.add_argument("--dtype", help="input dtype (default float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--alpha", type=float, default=None, help="α of the kl and ab objectives")
    parser.add_argument("--lam", type=float, default=None, help="λ of the kl and ab objectives")
    parser.add_argument("--reps", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU torch intra-op threads for every implementation; default 1 in the logits "
        "and sparse modes (on a shared machine every OpenMP region can wait a scheduler "
        "slice for its second thread, see docs/gpu.md) and torch's default in --fused "
        "mode; 0 keeps torch's default",
    )
    parser.add_argument(
        "--hbm-tbps",
        type=float,
        default=None,
        help="memory bandwidth for the roofline, TB/s (default: measured at the start of "
        "the run, a device-to-device copy on CUDA and a 128 MiB copy on the CPU)",
    )
    parser.add_argument(
        "--max-gib",
        type=float,
        default=8.0,
        help="CPU only: skip configurations whose textbook run would need more",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per subprocess, seconds")
    parser.add_argument(
        "--fused", action="store_true", help="lm_head + loss from hidden states (see Fused mode)"
    )
    parser.add_argument(
        "--fused-configs",
        help="comma-separated V:N:H triples (default 50257:2048:768 on CPU, "
        "128256:8192:4096 on CUDA)",
    )
    parser.add_argument("--beta", type=float, default=0.5, help="JSD β of the fused mode")
    parser.add_argument(
        "--impls",
        help=f"comma-separated subset: logits mode {','.join(LOGITS_IMPLS)}; fused mode "
        f"{','.join(FUSED_IMPLS)}",
    )
    parser.add_argument("--compile", action="store_true", help="fused mode: add compile=True")
    parser.add_argument(
        "--no-load", action="store_true", help="fused mode: skip the concurrent-load runs"
    )
    parser.add_argument(
        "--sparse", action="store_true", help="a top-k teacher against the dense one"
    )
    parser.add_argument("--k", type=int, default=SPARSE_TARGET["k"], help="sparse mode: ids kept")
    parser.add_argument(
        "--targets", action="store_true", help="every target of this device, from one run"
    )
    parser.add_argument(
        "--target-plan",
        choices=("cpu", "cuda"),
        default=None,
        help="--targets: the set of targets to run (default: the device's); 'cuda' on the "
        "CPU with small --configs/--fused-configs is a dry run of the CUDA plan",
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--vocab-parallel",
        action="store_true",
        help="benchmark the vocabulary-parallel loss instead (gpu/bench_vocab_parallel.py)",
    )


def run(args: argparse.Namespace) -> int:
    if args._worker:
        print(json.dumps(_worker_main(json.loads(args._worker)), default=str))
        return 0
    if args.vocab_parallel:
        # heavy (spawns a process group): imported only for this benchmark
        from gpu.bench_vocab_parallel import main as vocab_parallel_main

        return vocab_parallel_main(["--json"] if args.json else [])
    if args.targets:
        report = run_targets(args)
        text = format_logits(report.data)
        if any(r.get("mode") == "sparse" or r.get("impl") in ("dense", "sparse")
               for r in report.data["results"]):  # fmt: skip
            text += "\n" + format_sparse(report.data)
    elif args.fused:
        report = run_fused(args)
        if torch.cuda.is_available() and args.device != "cpu":
            report.data["targets"] = fused_targets(report.data["results"])
        text = format_fused(report.data, args.reps)
    elif args.sparse:
        report = run_sparse(args)
        report.data["targets"] = sparse_targets(report.data["results"])
        text = format_sparse(report.data)
    else:
        report = run_logits(args)
        rows = report.data["results"]
        report.data["targets"] = [
            t for d in report.data["devices"] for t in logits_targets(rows, d)
            if t["verdict"] != NOT_MEASURED  # only the targets whose size this run had
        ]  # fmt: skip
        text = format_logits(report.data)
    report.write()
    if args.json:
        print(json.dumps(report.data, indent=2, default=str))
        return 0
    print(text)
    if report.data.get("targets"):
        print(format_targets(report.data["targets"]))
    for sk in report.data.get("skipped", []):
        print(f"skipped: {sk}")
    if args.out:
        print(f"JSON: {os.path.abspath(args.out)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.bench", description=__doc__.split("\n")[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
