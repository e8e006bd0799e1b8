"""Benchmark of the vocabulary-parallel loss: per-rank memory and bytes all-reduced per row.

``python -m gpu.bench --vocab-parallel`` (or ``python -m gpu.bench_vocab_parallel``) runs, on
this machine's CPU, the same rows (student and teacher logits of shape (N, V), float32 by
default) twice, each in fresh processes:

* unsharded: :func:`gpu.amid_loss` on the full rows in one process;
* sharded: :func:`gpu.vocab_parallel_amid_loss` with world size 2 over gloo (127.0.0.1, a
  free port), each rank holding its half of the vocabulary.

It prints side by side the peak extra resident memory of one forward+backward (over the
inputs, the gradient included) per process, their ratio (target ≤ 0.55), the number of
``all_reduce`` calls and the bytes they carry per row (counted by wrapping
``torch.distributed.all_reduce``; target ≤ 64 bytes per row in float32) and the median time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from gpu._rss import MALLOC_ENV, _reset_rss_peak, _rss_peak_bytes

DEFAULT_ROWS = 256
DEFAULT_VOCAB = 50257
MEMORY_TARGET = 0.55
BYTES_TARGET = 64
#: Each process first runs the loss once on 2 rows (untimed, unmeasured): the first use of a
#: torch kernel (and of gloo's all-reduce paths) pages in tens of MiB of library code, which
#: the resident-set measurement would otherwise count as the loss's memory.
_WARM_UP = 2


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int:
    return _rss_peak_bytes()


def _inputs(rows: int, vocab: int, lo: int, hi: int, dtype):
    """Columns [lo, hi) of the benchmark logits, made in row blocks (no full-size temporary)."""
    import torch  # heavy: imported in the worker processes only

    gen = torch.Generator().manual_seed(1234)
    s = torch.empty(rows, hi - lo, dtype=dtype)
    t = torch.empty(rows, hi - lo, dtype=dtype)
    block = max(1, (1 << 18) // vocab)
    for i in range(0, rows, block):
        j = min(rows, i + block)
        sb = 2.0 * torch.randn(j - i, vocab, generator=gen)
        tb = 2.0 * torch.randn(j - i, vocab, generator=gen)
        tb[torch.arange(j - i), torch.randint(0, vocab, (j - i,), generator=gen)] += 12.0
        s[i:j] = sb[:, lo:hi].to(dtype)
        t[i:j] = tb[:, lo:hi].to(dtype)
    return s.requires_grad_(), t


def _measure(step, s, reps: int) -> tuple[int, float, float]:
    base = _rss_now()
    _reset_rss_peak()  # the peak of this step, not a transient of the imports
    loss = step()
    loss.backward()
    peak = _rss_peak() - base
    value = float(loss.detach())
    del loss
    times = []
    for _ in range(reps):
        s.grad = None
        t0 = time.perf_counter()
        step().backward()
        times.append(time.perf_counter() - t0)
    return peak, value, statistics.median(times)


def _worker(spec: dict) -> dict:
    # heavy: torch and gpu are imported in the worker processes only
    import torch

    import gpu  # heavy: imports torch (worker processes only)

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab, world = spec["rows"], spec["vocab"], spec["world"]
    kw = {"alpha": spec["alpha"], "lam": spec["lam"]}
    if world == 1:
        s, t = _inputs(rows, vocab, 0, vocab, dtype)
        s0, t0 = _inputs(_WARM_UP, vocab, 0, vocab, dtype)
        gpu.amid_loss(s0, t0, **kw).backward()  # warm-up, see _WARM_UP
        peak, value, sec = _measure(lambda: gpu.amid_loss(s, t, **kw), s, spec["reps"])
        return {"peak": peak, "loss": value, "time_s": sec}
    import torch.distributed as dist  # heavy (and optional in some torch builds)

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    rank = spec["rank"]
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{spec['port']}", rank=rank, world_size=world
    )
    width = -(-vocab // world)
    lo, hi = rank * width, min(vocab, (rank + 1) * width)
    s, t = _inputs(rows, vocab, lo, hi, dtype)
    s0, t0 = _inputs(_WARM_UP, vocab, lo, hi, dtype)
    gpu.vocab_parallel_amid_loss(s0, t0, **kw).backward()  # warm-up, see _WARM_UP
    dist.barrier()
    counts = {"calls": 0, "bytes": 0}
    all_reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        counts["calls"] += 1
        counts["bytes"] += tensor.numel() * tensor.element_size()
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = counting_all_reduce
    try:
        peak, value, sec = _measure(
            lambda: gpu.vocab_parallel_amid_loss(s, t, **kw), s, spec["reps"]
        )
    finally:
        dist.all_reduce = all_reduce
    passes = spec["reps"] + 1  # the measured pass and the timed ones
    dist.destroy_process_group()
    return {
        "peak": peak,
        "loss": value,
        "time_s": sec,
        "calls": counts["calls"] / passes,
        "bytes": counts["bytes"] / passes,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(specs: list[dict], timeout: float) -> list[dict]:
    cmd = [sys.executable, "-m", "gpu.bench_vocab_parallel", "--_worker"]
    # A fixed mmap threshold: every block above 128 KiB is mmapped and unmapped on free, so
    # the resident high-water mark follows live tensors (glibc's default threshold grows to
    # the size of the last freed block, after which equal blocks come from the heap).
    env = {**os.environ, **MALLOC_ENV}
    procs = [
        subprocess.Popen(
            [*cmd, json.dumps(sp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for sp in specs
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"benchmark worker failed:\n{stderr.decode()[-2000:]}")
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="N = B·T rows")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB, help="V (full rows)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--alpha", type=float, default=-5.0)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--reps", type=int, default=3, help="timed passes (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args._worker:
        print(json.dumps(_worker(json.loads(args._worker))))
        return 0
    base = {
        "rows": args.rows,
        "vocab": args.vocab,
        "dtype": args.dtype,
        "alpha": args.alpha,
        "lam": args.lam,
        "reps": args.reps,
        "threads": args.threads,
    }
    (full,) = _launch([{**base, "world": 1}], args.timeout)
    port = _free_port()
    shards = _launch(
        [{**base, "world": 2, "rank": k, "port": port} for k in range(2)], args.timeout
    )
    peak_shard = max(r["peak"] for r in shards)
    result = {
        **base,
        "unsharded_peak_mib": full["peak"] / 2**20,
        "sharded_peak_mib_per_rank": [r["peak"] / 2**20 for r in shards],
        "memory_ratio": peak_shard / full["peak"],
        "all_reduce_calls": shards[0]["calls"],
        "bytes_per_row": shards[0]["bytes"] / args.rows,
        "unsharded_ms": 1e3 * full["time_s"],
        "sharded_ms": 1e3 * max(r["time_s"] for r in shards),
        "loss_unsharded": full["loss"],
        "loss_sharded": shards[0]["loss"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"AMiD KL(p‖r), alpha={args.alpha}, lam={args.lam}, {args.dtype}, N={args.rows}, "
        f"V={args.vocab}: forward+backward, world size 2 over gloo (CPU, {args.threads} "
        "torch thread(s) per process)"
    )
    rows = [
        ("", "unsharded (1 process)", "sharded (per rank, 2 ranks)"),
        (
            "peak extra memory",
            f"{result['unsharded_peak_mib']:.1f} MiB",
            " / ".join(f"{m:.1f}" for m in result["sharded_peak_mib_per_rank"]) + " MiB",
        ),
        ("time (median)", f"{result['unsharded_ms']:.1f} ms", f"{result['sharded_ms']:.1f} ms"),
        ("all_reduce calls", "0", f"{result['all_reduce_calls']:.0f}"),
        ("loss", f"{result['loss_unsharded']:.9g}", f"{result['loss_sharded']:.9g}"),
    ]
    for a, b, c in rows:
        print(f"  {a:<20} {b:>24} {c:>30}")
    ok_mem = "ok" if result["memory_ratio"] <= MEMORY_TARGET else "ABOVE TARGET"
    ok_bytes = "ok" if result["bytes_per_row"] <= BYTES_TARGET else "ABOVE TARGET"
    print(
        f"  memory ratio (largest rank / unsharded): {result['memory_ratio']:.3f} "
        f"(target ≤ {MEMORY_TARGET}: {ok_mem})"
    )
    print(
        f"  bytes all-reduced per row per forward+backward: {result['bytes_per_row']:.1f} "
        f"(target ≤ {BYTES_TARGET}: {ok_bytes})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu.bench_vocab_parallel", description=__doc__.split("\n")[0]
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
