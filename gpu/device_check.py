r"""One prepared check of the gpu package on a CUDA machine, written to one JSON file.

Usage::

    python -m gpu.device_check                      # on a CUDA machine: every stage, ≤ 6 min
    python -m gpu.device_check --out check.json     # choose the output file
    python -m gpu.device_check --cpu-dry-run        # every stage at tiny sizes on the CPU

Each stage runs in its own subprocess with its own time limit (:data:`STAGE_LIMITS`, 340 s
in all); its status (``ok``, ``failed``, ``timeout``, ``error``), wall time and result are
recorded, and the JSON file is rewritten after every stage, so a stage that times out or
crashes loses nothing of the ones before and the next one still runs.

1. ``tests`` -- ``pytest -m gpu`` over the gpu test files (the CUDA copies of the checks
   against :mod:`amid_ref`), with pytest's summary.
2. ``accuracy`` -- :func:`gpu.accuracy.backend_accuracy`: the loss and gradient of both
   backends (``torch``, ``triton``) in float32 and bfloat16 at V = 151936 against
   :mod:`amid_ref` in float64, as fractions of the "gpu" tolerance rows.
3. ``kernels`` -- the accuracy of the framework kernels the loss relies on, against float64
   on the CPU, at V = 151936 (:func:`kernel_accuracy`).
4. ``sigmoid`` -- :func:`gpu.accuracy.sigmoid_accuracy`: is ``torch.sigmoid`` through
   ``torch.compile`` off by more than 4 eps on this device (and the reciprocal form the
   mixture weight uses)?
5. ``bench`` -- ``python -m gpu.bench --targets`` (shortened: 5 timed passes, 40 s per
   implementation): the logits targets (KL, JS, AB at N = 8192, V = 128256, bf16) and the
   fused target against liger-kernel, each MET / NOT MET with its ratio. The benchmark
   writes its own JSON after every implementation; on a timeout the rows it had are kept.

Without CUDA it says so, runs the CPU-measurable stages (``accuracy``, ``kernels`` and
``sigmoid`` on the CPU) and exits 0; ``--cpu-dry-run`` runs every stage at tiny sizes on
the CPU, through the same subprocesses, to prove the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from gpu import accuracy
from gpu._fused import _times_weight
from gpu.bench import format_targets

#: Seconds per stage on CUDA (340 s in all: the check fits in 6 minutes with start-up).
STAGE_LIMITS = {"tests": 100, "accuracy": 45, "kernels": 25, "sigmoid": 20, "bench": 150}
#: Seconds per stage in the CPU dry run.
DRY_RUN_LIMITS = {"tests": 60, "accuracy": 60, "kernels": 60, "sigmoid": 90, "bench": 240}
STAGES = tuple(STAGE_LIMITS)
#: The gpu test files whose ``gpu``-marked tests the ``tests`` stage runs.
TEST_FILES = ("test_gpu.py", "test_gpu_fused.py", "test_gpu_kernels.py")


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
    out["unit"] = "max error / float32 eps (rel., or abs. over the stated scale)"
    out["note"] = (
        "softmax is compared relatively: a log-probability rounded at eps·|log p| gives a "
        "relative error eps·|log p| in p (|log p| up to ~90 here), so ~100 eps is the "
        "conditioning, not a kernel defect"
    )
    return out


# --- the stages (each runs in its own subprocess: ``--_stage NAME``) ---------------------------


def _stage_accuracy(device: str, dry: bool) -> dict:
    vocab, rows = (301, 2) if dry else (151936, 4)
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
    return {"status": "ok", **accuracy.sigmoid_accuracy(device)}


_IN_PROCESS = {"accuracy": _stage_accuracy, "kernels": _stage_kernels, "sigmoid": _stage_sigmoid}


def _bench_command(dry: bool, out: str) -> list[str]:
    cmd = [sys.executable, "-m", "gpu.bench", "--targets", "--out", out]
    if dry:  # the CUDA plan at tiny sizes on the CPU: every code path, no timing
        return [*cmd, "--device", "cpu", "--target-plan", "cuda", "--configs", "300:16",
                "--fused-configs", "300:16:8", "--dtype", "float32", "--reps", "1",
                "--timeout", "60", "--threads", "1"]  # fmt: skip
    return [*cmd, "--device", "cuda", "--reps", "5", "--timeout", "40"]


def _tests_command(root: Path) -> list[str]:
    files = [str(root / "tests" / f) for f in TEST_FILES]
    return [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider",
            *files]  # fmt: skip


def _run_stage(name: str, limit: float, dry: bool, device: str, root: Path) -> dict:
    """Run stage ``name`` in a subprocess within ``limit`` seconds; its record."""
    with tempfile.TemporaryDirectory() as tmp:
        part = os.path.join(tmp, f"{name}.json")
        if name == "tests":
            cmd = _tests_command(root)
            if dry:  # collection only: the gpu-marked tests need CUDA
                cmd = [*cmd[: -len(TEST_FILES)], str(root / "tests" / "test_gpu_fused.py"), "--co"]
        elif name == "bench":
            cmd = _bench_command(dry, part)
        else:
            cmd = [sys.executable, "-m", "gpu.device_check", "--_stage", name, "--_part", part,
                   "--_device", device, *(["--cpu-dry-run"] if dry else [])]  # fmt: skip
        t0 = time.perf_counter()
        record: dict[str, Any] = {"cmd": " ".join(cmd[1:]), "limit_s": limit}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                  cwd=root)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            record.update(status="timeout", why=f"over the stage's {limit:g} s limit",
                          stdout_tail=_text(exc.stdout)[-3000:],
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
    args = parser.parse_args(argv)

    if args._stage:  # one stage, in its own subprocess
        result = _IN_PROCESS[args._stage](args._device, args.cpu_dry_run)
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
    print(f"[device_check] wrote {out.resolve()}", file=sys.stderr)
    return 0


def _version(module: str) -> str | None:
    try:
        return version(module.replace("_", "-"))
    except Exception:  # not installed
        return None


if __name__ == "__main__":
    sys.exit(main())
