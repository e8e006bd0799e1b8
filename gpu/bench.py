r"""Benchmark: chunked closed-form AMiD loss vs the straightforward eager autograd version.

Usage::

    python -m gpu.bench                 # the full table (CPU here, CUDA too when present)
    python -m gpu.bench --quick         # a small table (a minute on a laptop CPU)
    python -m gpu.bench --configs 50257:2048 --dtype float32 --json
    python -m gpu.bench --fused          # lm_head + loss: fused vs unfused vs liger-kernel
    python -m gpu.bench --fused --fused-configs 50257:2048:768 --compile

Both implementations compute the same loss, KL(p‖r) with the α-mixture assistant
(default α = −5, λ = 0.1, the paper's main setting; see docs/choosing.md), forward and
backward, in the same run on the same inputs. The *straightforward* implementation
(:func:`straightforward_amid_loss`) is what one writes first: full (N, V) float32
softmaxes, log-mixture, normalizer and product, differentiated by autograd. The *chunked*
one is :func:`gpu.amid_loss`.

Measurement method
------------------
* Every (implementation, configuration) pair runs in a **fresh subprocess**, so allocator
  caches and earlier peaks never leak between measurements.
* **CPU peak memory**: the kernel's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the measured step so that a transient of the imports
  cannot stand in for it; it sees torch's allocations, unlike ``tracemalloc``) after one
  forward+backward, minus the
  resident set size right after the inputs were allocated and touched
  (``/proc/self/statm``). The inputs are generated in blocks of at most 1 MB so that their
  creation leaves no higher earlier peak. The memory worker runs with a fixed glibc mmap
  threshold (:data:`gpu._rss.MALLOC_ENV`), so large blocks are mmapped and returned on
  free and the high-water mark tracks live tensors; the time is measured in a second
  subprocess with the default allocator (the fixed threshold page-faults every chunk's
  scratch afresh, which slowed the chunked loss by 1.46× at V = 50257, N = 2048).
  "Extra" memory therefore includes the final gradient ``student.grad`` (N·V in the student
  dtype) for both implementations.
* **CUDA peak memory**: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus the allocation after the inputs.
* **Threads**: CPU runs pin torch to ``--threads`` intra-op threads (default 1) for both
  implementations; ``--threads 0`` keeps torch's default.
* **Time**: one untimed forward+backward and one warm-up, then the
  median of ``--reps`` timed forward+backward passes (``student.grad`` reset to ``None``
  between passes); CUDA timings synchronize before and after.
* **Roofline (CUDA only)**: bytes that must move at least once — both logits read and the
  gradient written, ``N·V·(size(student) + size(teacher) + size(grad))`` — divided by the
  time and by the HBM bandwidth (``--hbm-tbps``, 4.8 TB/s for an H200).

Fused mode (``--fused``)
------------------------
The lm_head and the loss together, from hidden states (N, H) and weights (V, H), forward +
backward (gradients of the student's hidden states and weight), at the JSD-equivalent
setting every implementation computes: JS_β(p‖q) = β·KL(p‖m) + (1−β)·KL(q‖m),
m = βp + (1−β)q (``gpu``: divergence ``"js"``, λ = 0, order ``"pr"``; liger:
``LigerFusedLinearJSDLoss(weight_hard_loss=0, weight_soft_loss=1, beta=β)``). Each
implementation runs in its own subprocess, twice: with torch's default thread count on an
otherwise idle machine ("quiet"), and with a busy-loop process started on the side
("loaded", one core taken; the worker keeps torch's default threads). Implementations:
``naive`` (``F.linear`` + the textbook eager JSD with autograd, as TRL's
``generalized_jsd_loss``), ``unfused`` (``F.linear`` + :func:`gpu.amid_loss`), ``fused``
(:func:`gpu.amid_fused_linear_loss`), ``fused_compiled`` (``compile=True``, with
``--compile``), ``liger`` and ``liger_chunk`` (liger at its default chunk and at ours; on
CPU with ``compiled=False``, its pure-torch path), and the loss alone on materialized
logits: ``logits_naive`` (the textbook eager JSD), ``logits_chunked``
(:func:`gpu.amid_loss`) and ``logits_compiled`` (with ``--compile``). Ratios are printed
side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

import gpu
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from gpu._rss import MALLOC_ENV, _reset_rss_peak, _rss_peak_bytes

DEFAULT_ALPHA = -5.0
DEFAULT_LAM = 0.1
H200_HBM_TBPS = 4.8

_CPU_CONFIGS = [(32000, 512), (32000, 2048), (50257, 512), (50257, 2048), (128256, 512)]
_CPU_QUICK = [(32000, 256), (50257, 512)]
_CUDA_CONFIGS = [
    (32000, 2048),
    (32000, 8192),
    (50257, 2048),
    (50257, 8192),
    (128256, 2048),
    (128256, 8192),
]
_CUDA_QUICK = [(50257, 2048), (128256, 8192)]


def straightforward_amid_loss(student_logits, teacher_logits, alpha: float, lam: float):
    """The textbook eager implementation (float32, autograd) of the mean KL(p‖r) loss.

    ``p = softmax(t)``, ``q = softmax(s)``, log-mixture by ``logaddexp(...)/β``, normalized by
    log-sum-exp, ``KL = Σ p (log p − log r)``; every intermediate is a full (N, V) float32
    tensor and autograd saves what it needs. Valid for finite α ≠ 1 and 0 < λ < 1.
    """
    import torch  # heavy: imported only where the benchmark runs

    s = student_logits.float()
    t = teacher_logits.float()
    log_q = torch.log_softmax(s, dim=-1)
    log_p = torch.log_softmax(t, dim=-1)
    p = log_p.exp()
    log_m = naive_log_alpha_mean(log_p, log_q, alpha, lam, logaddexp=torch.logaddexp)
    log_r = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
    return (p * (log_p - log_r)).sum(-1).mean()


@dataclass
class Result:
    impl: str
    device: str
    dtype: str
    rows: int
    vocab: int
    time_ms: float
    peak_extra_mib: float
    roofline: float | None = None
    loss: float | None = None


# --- worker (runs in a fresh subprocess) --------------------------------------------------


def _rss_now_bytes() -> int:
    """Current resident set size (Linux /proc), falling back to the high-water mark."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return _rss_peak_bytes()


def _make_inputs(rows: int, vocab: int, dtype, device):
    import torch  # heavy: imported only where the benchmark runs

    gen = torch.Generator(device="cpu").manual_seed(1234)
    s = torch.empty(rows, vocab, dtype=dtype, device=device)
    t = torch.empty(rows, vocab, dtype=dtype, device=device)
    block = max(1, (1 << 18) // vocab)  # ≤ 1 MB temporaries: no earlier peak to hide
    for i in range(0, rows, block):  # block-wise: no full-size float32 temporary
        j = min(rows, i + block)
        s[i:j] = (2.0 * torch.randn(j - i, vocab, generator=gen)).to(dtype)
        tb = 2.0 * torch.randn(j - i, vocab, generator=gen)
        tb[torch.arange(j - i), torch.randint(0, vocab, (j - i,), generator=gen)] += 12.0
        t[i:j] = tb.to(dtype)
    return s.requires_grad_(), t


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
    times = []
    for _ in range(spec["reps"] + 1):  # the first pass is a warm-up
        clear_grads()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step().backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return peak, loss_value, statistics.median(times[1:])


def _worker(spec: dict) -> dict:
    import torch  # heavy: imported by the benchmark worker, not by --help

    import gpu  # heavy: imports torch

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab = spec["rows"], spec["vocab"]
    alpha, lam = spec["alpha"], spec["lam"]
    if spec["impl"] == "chunked":

        def step():
            return gpu.amid_loss(s, t, alpha, lam, chunk_size=spec.get("chunk_size"))
    else:

        def step():
            return straightforward_amid_loss(s, t, alpha, lam)

    if spec.get("threads") and device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    cuda = device.type == "cuda"
    # Warm-up on two rows: the first call pages in torch's kernels (resident code pages the
    # peak would otherwise count for either implementation).
    s, t = _make_inputs(min(rows, 2), vocab, dtype, device)
    step().backward()
    s, t = _make_inputs(rows, vocab, dtype, device)
    peak, loss_value, time_s = _measure_step(step, lambda: setattr(s, "grad", None), cuda, spec)
    roofline = None
    if cuda:
        nbytes = rows * vocab * (s.element_size() + t.element_size() + s.grad.element_size())
        roofline = nbytes / time_s / (spec["hbm_tbps"] * 1e12)
    return asdict(
        Result(
            impl=spec["impl"],
            device=device.type,
            dtype=spec["dtype"],
            rows=rows,
            vocab=vocab,
            time_ms=1e3 * time_s,
            peak_extra_mib=peak / 2**20,
            roofline=roofline,
            loss=loss_value,
        )
    )


def _run_in_subprocess(spec: dict, timeout: float, parts=("memory", "time")) -> dict:
    """One measurement in fresh subprocesses; on CPU, memory and time in separate ones.

    The CPU memory run uses a fixed glibc mmap threshold (:data:`gpu._rss.MALLOC_ENV`), so
    that the high-water mark tracks live tensors; the timed run uses the default allocator,
    as a user's process does (with the fixed threshold every chunk's scratch is mmapped and
    page-faulted afresh: measured 5.7 s against 3.9 s for ``logits_chunked`` at
    V = 50257, N = 2048). ``parts`` = ``("time",)`` skips the memory run (its peak is 0).
    """
    if spec["device"] == "cuda":
        return _worker_process({**spec, "measure": "both"}, timeout, {})
    out = None
    for part in parts:
        env = MALLOC_ENV if part == "memory" else {}
        got = _worker_process({**spec, "measure": part}, timeout, env)
        if out is None:
            out = got
        elif part == "time":
            out["time_ms"] = got["time_ms"]
        else:
            out["peak_extra_mib"] = got["peak_extra_mib"]
    return out


def _worker_process(spec: dict, timeout: float, env: dict) -> dict:
    cmd = [sys.executable, "-m", "gpu.bench", "--_worker", json.dumps(spec)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({spec}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- driver ---------------------------------------------------------------------------------


def _estimate_naive_bytes(rows: int, vocab: int) -> int:
    """Rough peak of the straightforward version: about 12 float32 (N, V) tensors."""
    return 12 * rows * vocab * 4


def _format_table(pairs: list[tuple[Result, Result]]) -> str:
    head = (
        f"{'device':6} {'dtype':8} {'B·T':>6} {'V':>7} | {'naive ms':>9} {'chunked ms':>10} "
        f"{'time ratio':>10} | {'naive MiB':>9} {'chunked MiB':>11} {'mem ratio':>9} | "
        f"{'roofline':>8} | {'|Δloss|':>8}"
    )
    lines = [head, "-" * len(head)]
    for naive, ours in pairs:
        roof = f"{ours.roofline:8.1%}" if ours.roofline is not None else f"{'-':>8}"
        dl = abs(naive.loss - ours.loss) if None not in (naive.loss, ours.loss) else float("nan")
        lines.append(
            f"{ours.device:6} {ours.dtype:8} {ours.rows:6d} {ours.vocab:7d} | "
            f"{naive.time_ms:9.1f} {ours.time_ms:10.1f} {ours.time_ms / naive.time_ms:10.2f} | "
            f"{naive.peak_extra_mib:9.1f} {ours.peak_extra_mib:11.1f} "
            f"{ours.peak_extra_mib / max(naive.peak_extra_mib, 1e-9):9.3f} | {roof} | {dl:8.1e}"
        )
    return "\n".join(lines)


def _parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        v, _, n = item.partition(":")
        out.append((int(v), int(n)))
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small configurations only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, +CUDA"
    )
    parser.add_argument("--configs", help="comma-separated V:B·T pairs, e.g. 50257:2048")
    parser.add_argument("--dtype", help="input dtype (default float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--lam", type=float, default=DEFAULT_LAM)
    parser.add_argument("--reps", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for every implementation; default 1 in the classic "
        "mode (on a shared machine every OpenMP region can wait a scheduler slice for its "
        "second thread, see docs/gpu.md) and torch's default in --fused mode; 0 keeps "
        "torch's default",
    )
    parser.add_argument("--hbm-tbps", type=float, default=H200_HBM_TBPS)
    parser.add_argument(
        "--max-gib",
        type=float,
        default=8.0,
        help="CPU only: skip configurations whose straightforward run would need more",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per subprocess, seconds")
    parser.add_argument(
        "--fused", action="store_true", help="lm_head + loss from hidden states (see Fused mode)"
    )
    parser.add_argument(
        "--fused-configs",
        help="comma-separated V:B·T:H triples (default 50257:2048:768 on CPU, "
        "128256:8192:4096 on CUDA)",
    )
    parser.add_argument("--beta", type=float, default=0.5, help="JSD β of the fused mode")
    parser.add_argument(
        "--impls", help=f"fused mode: comma-separated subset of {','.join(FUSED_IMPLS)}"
    )
    parser.add_argument("--compile", action="store_true", help="fused mode: add compile=True")
    parser.add_argument(
        "--no-load", action="store_true", help="fused mode: skip the concurrent-load runs"
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--vocab-parallel",
        action="store_true",
        help="benchmark the vocabulary-parallel loss instead (gpu/bench_vocab_parallel.py)",
    )


def run(args: argparse.Namespace) -> int:
    if args._worker:
        spec = json.loads(args._worker)
        work = _fused_worker if spec.get("mode") == "fused" else _worker
        print(json.dumps(work(spec)))
        return 0
    if args.vocab_parallel:
        # heavy (spawns a process group): imported only for this benchmark
        from gpu.bench_vocab_parallel import main as vocab_parallel_main

        return vocab_parallel_main(["--json"] if args.json else [])
    if args.fused:
        return run_fused(args)
    if args.threads is None:
        args.threads = 1
    import torch  # heavy: imported only where the benchmark runs

    devices = ["cpu"]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices = ["cuda"] if args.device == "cuda" else ["cpu", "cuda"]
    pairs: list[tuple[Result, Result]] = []
    skipped: list[str] = []
    for device in devices:
        if args.configs:
            configs = _parse_configs(args.configs)
        elif device == "cuda":
            configs = _CUDA_QUICK if args.quick else _CUDA_CONFIGS
        else:
            configs = _CPU_QUICK if args.quick else _CPU_CONFIGS
        dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
        for vocab, rows in configs:
            if device == "cpu" and _estimate_naive_bytes(rows, vocab) > args.max_gib * 2**30:
                skipped.append(f"{device} V={vocab} B·T={rows} (over --max-gib {args.max_gib})")
                continue
            spec = {
                "device": device,
                "dtype": dtype,
                "rows": rows,
                "vocab": vocab,
                "alpha": args.alpha,
                "lam": args.lam,
                "reps": args.reps,
                "chunk_size": args.chunk_size,
                "threads": args.threads,
                "hbm_tbps": args.hbm_tbps,
            }
            got = {}
            for impl in ("straightforward", "chunked"):
                got[impl] = Result(**_run_in_subprocess({**spec, "impl": impl}, args.timeout))
                if not args.json:
                    r = got[impl]
                    print(
                        f"  {device} {dtype} V={vocab} B·T={rows} {impl}: {r.time_ms:.1f} ms, "
                        f"{r.peak_extra_mib:.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            pairs.append((got["straightforward"], got["chunked"]))
    if args.json:
        print(
            json.dumps(
                {
                    "alpha": args.alpha,
                    "lam": args.lam,
                    "divergence": "kl",
                    "order": "pr",
                    "results": [
                        {
                            "straightforward": asdict(a),
                            "chunked": asdict(b),
                            "time_ratio": b.time_ms / a.time_ms,
                            "memory_ratio": b.peak_extra_mib / max(a.peak_extra_mib, 1e-9),
                        }
                        for a, b in pairs
                    ],
                    "skipped": skipped,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"AMiD KL(p‖r), alpha={args.alpha}, lam={args.lam}: forward+backward, median of "
        f"{args.reps}; peak extra memory over the inputs (incl. the gradient); "
        f"CPU torch threads: {args.threads or 'default'}"
    )
    print(_format_table(pairs))
    for s in skipped:
        print(f"skipped: {s}")
    return 0


# --- fused mode ------------------------------------------------------------------------------

FUSED_IMPLS = (
    "naive",
    "unfused",
    "fused",
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


def naive_jsd(student_logits, teacher_logits, beta: float):
    """Textbook eager JSD_β(p‖q) per row mean, float32 autograd (TRL's formula)."""

    lq = torch.log_softmax(student_logits.float(), dim=-1)
    lp = torch.log_softmax(teacher_logits.float(), dim=-1)
    lm = torch.logsumexp(torch.stack([lq + math.log1p(-beta), lp + math.log(beta)]), dim=0)
    kl_p = (lp.exp() * (lp - lm)).sum(-1)
    kl_q = (lq.exp() * (lq - lm)).sum(-1)
    return (beta * kl_p + (1.0 - beta) * kl_q).mean()


def _fused_inputs(rows, vocab, hidden, dtype, device):
    gen = torch.Generator(device="cpu").manual_seed(4321)

    def block_randn(shape, scale):
        out = torch.empty(shape, dtype=dtype, device=device)
        step = max(1, (1 << 18) // shape[1])
        for i in range(0, shape[0], step):
            j = min(shape[0], i + step)
            out[i:j] = (scale * torch.randn(j - i, shape[1], generator=gen)).to(dtype)
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
        # liger-kernel: optional (the peers extra)
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

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
    else:
        compile_flag = impl == "fused_compiled"

        def step():
            return gpu.amid_fused_linear_loss(
                h, w, th, tw, chunk_size=chunk, compile=compile_flag, **js
            )

    if spec.get("threads") and not cuda:
        torch.set_num_threads(spec["threads"])
    if impl in _COMPILED_IMPLS:  # compile outside the measurement
        step().backward()
        h.grad = w.grad = None

    def clear_grads():
        h.grad = w.grad = None

    peak, loss_value, time_s = _measure_step(step, clear_grads, cuda, spec)
    roofline = None
    if cuda:  # weights read (student twice: forward and G·W), written once; hidden in/out
        el = h.element_size()
        nbytes = vocab * hidden * el * 4 + rows * hidden * el * 3
        roofline = nbytes / time_s / (spec["hbm_tbps"] * 1e12)
    return {
        "impl": impl,
        "device": device.type,
        "dtype": spec["dtype"],
        "rows": rows,
        "vocab": vocab,
        "hidden": hidden,
        "time_ms": 1e3 * time_s,
        "peak_extra_mib": peak / 2**20,
        "roofline": roofline,
        "loss": loss_value,
        "threads": torch.get_num_threads() if not cuda else None,
    }


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


def run_fused(args: argparse.Namespace) -> int:
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if args.fused_configs:
        configs = [tuple(int(x) for x in c.split(":")) for c in args.fused_configs.split(",")]
    else:
        configs = _CUDA_FUSED if device == "cuda" else _CPU_FUSED
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    impls = [i for i in FUSED_IMPLS if i not in _COMPILED_IMPLS or args.compile]
    if args.impls:
        wanted = args.impls.split(",")
        unknown = sorted(set(wanted) - set(FUSED_IMPLS))
        if unknown:
            raise SystemExit(f"unknown --impls {unknown}; known: {', '.join(FUSED_IMPLS)}")
        impls = [i for i in FUSED_IMPLS if i in wanted]
    skipped = []
    if not _liger_available():
        impls = [i for i in impls if not i.startswith("liger")]
        skipped.append("liger, liger_chunk (liger-kernel is not installed)")
    conditions = ["quiet"] if (args.no_load or device == "cuda") else ["quiet", "loaded"]
    report = {"beta": args.beta, "device": device, "dtype": dtype, "configs": []}
    for vocab, rows, hidden in configs:
        our_chunk = args.chunk_size or gpu_default_chunk(vocab, device)
        spec = {
            "mode": "fused", "device": device, "dtype": dtype, "rows": rows, "vocab": vocab,
            "hidden": hidden, "beta": args.beta, "reps": args.reps, "threads": args.threads,
            "chunk_size": args.chunk_size, "our_chunk": our_chunk, "hbm_tbps": args.hbm_tbps,
        }  # fmt: skip
        got: dict[str, dict[str, dict]] = {c: {} for c in conditions}
        for condition in conditions:
            for impl in impls:
                one = {**spec, "impl": impl}
                try:
                    if condition == "loaded":
                        with _BusyLoad():  # time only: the peak is the quiet run's
                            r = _run_in_subprocess(one, args.timeout, parts=("time",))
                    else:
                        r = _run_in_subprocess(one, args.timeout)
                except RuntimeError as exc:
                    skipped.append(f"{impl} {condition}: {str(exc).splitlines()[-1][:200]}")
                    continue
                got[condition][impl] = r
                if not args.json:
                    print(
                        f"  {condition} {impl}: {r['time_ms']:.1f} ms, "
                        f"{r['peak_extra_mib']:.1f} MiB, loss {r['loss']:.6f}",
                        file=sys.stderr,
                        flush=True,
                    )
        report["configs"].append(
            {"vocab": vocab, "rows": rows, "hidden": hidden, "our_chunk": our_chunk, **got}
        )
    report["skipped"] = skipped
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(_format_fused(report, args))
    return 0


def gpu_default_chunk(vocab: int, device: str) -> int:
    return gpu.default_chunk_size(vocab, device)


def _ratio(a, b):
    return a / b if (a is not None and b) else float("nan")


def _format_fused(report: dict, args) -> str:
    lines = [
        f"lm_head + JSD(β={report['beta']}) forward+backward, {report['device']} "
        f"{report['dtype']}, median of {args.reps}; peak extra memory over the inputs (incl. "
        "the hidden and weight gradients); CPU torch threads: "
        f"{args.threads or 'default'}"
    ]
    for cfg in report["configs"]:
        quiet, loaded = cfg.get("quiet", {}), cfg.get("loaded", {})
        lines.append(
            f"\nV={cfg['vocab']} B·T={cfg['rows']} H={cfg['hidden']} (gpu chunk "
            f"{cfg['our_chunk']} rows, liger_chunk the same)"
        )
        lines.append(
            "(×ref: time over naive, memory over unfused; for the logits_* rows, which time "
            "the loss alone on materialized logits, both over logits_naive)"
        )
        head = (
            f"{'impl':15} | {'quiet ms':>9} {'×ref':>7} | {'loaded ms':>9} {'×ref':>7} | "
            f"{'peak MiB':>9} {'×ref':>8} | {'|Δloss|':>8}"
        )
        lines += [head, "-" * len(head)]
        unf = quiet.get("unfused", {}).get("peak_extra_mib")
        ref_loss = quiet.get("naive", quiet.get("logits_naive", {})).get("loss")
        for impl in FUSED_IMPLS:
            q = quiet.get(impl)
            if q is None:
                continue
            on_logits = impl.startswith("logits_")
            tref = "logits_naive" if on_logits else "naive"
            mref = quiet.get("logits_naive" if on_logits else "unfused", {}).get("peak_extra_mib")
            nq = quiet.get(tref, {}).get("time_ms")
            nl = loaded.get(tref, {}).get("time_ms")
            lt = loaded.get(impl, {}).get("time_ms")
            dl = abs(q["loss"] - ref_loss) if ref_loss is not None else float("nan")
            lines.append(
                f"{impl:15} | {q['time_ms']:9.1f} {_ratio(q['time_ms'], nq):7.2f} | "
                f"{(lt if lt is not None else float('nan')):9.1f} {_ratio(lt, nl):7.2f} | "
                f"{q['peak_extra_mib']:9.1f} {_ratio(q['peak_extra_mib'], mref):8.3f} | "
                f"{dl:8.1e}"
            )
        f, lg = quiet.get("fused"), quiet.get("liger_chunk")
        targets = []
        if f and unf is not None:  # a peak that rounds to 0 is a measurement too
            targets.append(("fused peak ≤ 0.3× unfused", _ratio(f["peak_extra_mib"], unf), 0.3))
        if f and lg:
            targets.append(
                (
                    "fused peak ≤ 1.0× liger (same chunk)",
                    _ratio(f["peak_extra_mib"], lg["peak_extra_mib"]),
                    1.0,
                )
            )
            targets.append(
                ("fused time ≤ 1.0× liger (same chunk)", _ratio(f["time_ms"], lg["time_ms"]), 1.0)
            )
        for kernel in ("logits_chunked", "logits_compiled"):  # the loss alone, on logits
            for cond, results, bound in (("quiet", quiet, 0.25), ("loaded", loaded, 1.0)):
                ours, naive = results.get(kernel), results.get("logits_naive")
                if ours and naive:
                    targets.append((f"{kernel} time ≤ {bound}× logits_naive, {cond}",
                                    _ratio(ours["time_ms"], naive["time_ms"]), bound))  # fmt: skip
        for name, value, bound in targets:
            verdict = "met" if value <= bound else "NOT met"  # nan (no reference): NOT met
            lines.append(f"target {name}: {value:.3f} ({verdict})")
    for sk in report.get("skipped", []):
        lines.append(f"skipped: {sk}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.bench", description=__doc__.split("\n")[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
