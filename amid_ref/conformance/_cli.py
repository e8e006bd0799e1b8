"""``amid-ref conform MODULE:FUNCTION --kind loss|mixture|divergence|preset [...]`` and
``amid-ref conform --peer NAME``."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from amid_ref.conformance._adapters import Support, labels_in
from amid_ref.conformance._cases import iter_names
from amid_ref.conformance._peers import Peer, conform_peer, get_peer, peer_table
from amid_ref.conformance._runner import conform
from amid_ref.conformance._targets import load_object

__all__ = ["configure_parser", "load_target", "run"]


def load_target(spec: str) -> Callable:
    """Resolve ``MODULE:FUNCTION`` (or ``path/to/file.py:FUNCTION``) to the callable (or to
    a :class:`~amid_ref.conformance.Peer` record, for ``--peer MODULE:PEER``).

    ``FUNCTION`` may be dotted (``module:Class.method``). The current directory is put on
    ``sys.path`` first, as ``python -m`` does, so a local ``my_loss.py`` is found.
    """
    obj = load_object(spec)
    if not callable(obj) and not isinstance(obj, Peer):
        raise TypeError(f"target: {spec!r} is not callable")
    return obj


def _range(text: str | None, what: str) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"{what}: expected LO,HI (e.g. -10,10 or -inf,inf), got {text!r}")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{what}: expected two numbers, got {text!r}") from None
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{what}: NaN bound in {text!r}")
    return lo, hi


def _kwargs(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``conform`` arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        nargs="?",
        help="implementation to check (omit with --peer)",
    )
    parser.add_argument(
        "--peer",
        metavar="NAME",
        help="check a published implementation with its built-in adapter ('--peer list' "
        "lists them; MODULE:PEER names a user's Peer record)",
    )
    parser.add_argument(
        "--kind",
        choices=("loss", "mixture", "divergence", "preset"),
        default=None,
        help="a loss over logits, an α-mixture over log-probabilities, a plain divergence "
        "D(p‖q) over logits called with its parameters by name, or a preset (default: loss; "
        "divergence for --peer)",
    )
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="check a prior method against its preset (kd, rkl, distillm_skl, distillm_srkl, "
        "gkd_jsd, taid, abkd); --set fixes its parameters, e.g. --set beta=0.1",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="declared input dtype: float64, float32, bf16, fp16 (default: float32 for a "
        "torch function, float64 for a NumPy one)",
    )
    parser.add_argument(
        "--grad",
        action="store_true",
        help="also compare torch autograd gradients with amid_ref.amid_grad",
    )
    parser.add_argument(
        "--grad-only",
        action="store_true",
        help="compare gradients only (implies --grad), e.g. for a cross-entropy whose value "
        "is a KL plus a constant",
    )
    parser.add_argument(
        "--temperature-squared",
        action="store_true",
        help="the loss is multiplied by T² (Hinton scaling); the reference is scaled too",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--full",
        action="store_true",
        help="add the slow cases (every α at V = 32000 ... 151936; offset logits with T)",
    )
    parser.add_argument(
        "--convention",
        choices=("auto", "student_first", "teacher_first"),
        default="auto",
        help="argument order (default auto: parameter names, else a probe)",
    )
    parser.add_argument(
        "--reduction",
        choices=("auto", "none", "mean", "sum", "batchmean"),
        default="auto",
        help="what a loss returns (default auto: reduction='none' if it takes a "
        "'reduction' keyword, else probed; batchmean: the sum over the first dimension's "
        "size)",
    )
    parser.add_argument(
        "--map",
        action="append",
        metavar="CHECK=FUNCTION",
        help="pass the check's parameter CHECK under the function's name FUNCTION, e.g. "
        "--map skew=lam (a preset's or divergence's parameter, alpha, lam, temperature, "
        "labels); repeatable",
    )
    parser.add_argument(
        "--labels-in",
        metavar="NAME[.KEY]",
        help="the function takes its labels in a dict argument NAME under KEY (default "
        "label), e.g. --labels-in no_model_batch.label (DistiLLM's losses)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "numpy"),
        default="auto",
        help="array type passed in (default auto: torch if the module imports torch)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--families", help="comma-separated families to run (default: all)")
    parser.add_argument("--divergences", help="comma-separated divergences supported")
    parser.add_argument(
        "--orders",
        help="comma-separated orders supported (pr,qr,rp,rq; for --kind divergence pq = "
        "D(p‖q), qp = D(q‖p))",
    )
    parser.add_argument("--alpha-range", help="supported α interval LO,HI (inf allowed)")
    parser.add_argument("--lam-range", help="supported λ interval LO,HI")
    parser.add_argument("--max-vocab", type=int, help="largest vocabulary supported")
    parser.add_argument(
        "--no-neg-inf", action="store_true", help="the implementation does not accept -inf"
    )
    masking = parser.add_mutually_exclusive_group()
    masking.add_argument(
        "--ignore-index",
        dest="ignore_index",
        action="store_const",
        const=True,
        help="the function takes labels/ignore_index/reduction (e.g. through **kwargs)",
    )
    masking.add_argument(
        "--no-ignore-index",
        dest="ignore_index",
        action="store_const",
        const=False,
        help="skip the ignore_index (masking) family",
    )
    parser.add_argument(
        "--detach-assistant",
        action="store_true",
        help="the implementation detaches r (TAID-style gradient)",
    )
    parser.add_argument(
        "--unnormalized",
        action="store_true",
        help="(mixture) the function returns log m_α, not the normalized log r",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="extra keyword for every call (VALUE parsed as JSON if possible); repeatable",
    )


def _pairs(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--map: expected CHECK=FUNCTION (e.g. skew=lam), got {item!r}")
        out[key.strip()] = value.strip()
    return out


#: Exit codes of ``amid-ref conform``: passed, failed, bad arguments, nothing checked.
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_NOTHING_CHECKED = 0, 1, 2, 3


def _environment() -> dict[str, str]:
    """Where a report was measured: machine, Python and the numerical packages."""
    env = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env["machine"] += f", {torch.cuda.get_device_name()}"
    return env


def run(args: argparse.Namespace) -> int:
    """Run the battery; print the report. Exit code 0: passed; 1: a case failed; 3: nothing
    checked (every case skipped); bad arguments raise (the CLI's exit code 2)."""
    if args.peer == "list":
        print(peer_table())
        return 0
    if args.peer is None and args.target is None:
        raise ValueError("target: give MODULE:FUNCTION, or --peer NAME (--peer list)")
    support: dict[str, Any] = {}
    if args.divergences:
        support["divergences"] = iter_names(args.divergences)
    if args.orders:
        aliases = {"pq": "pr", "qp": "rp"}  # the CLI's direction names of a divergence
        support["orders"] = tuple(aliases.get(o, o) for o in iter_names(args.orders))
    alpha_range = _range(args.alpha_range, "--alpha-range")
    if alpha_range:
        support["alpha_range"] = alpha_range
    lam_range = _range(args.lam_range, "--lam-range")
    if lam_range:
        support["lam_range"] = lam_range
    if args.max_vocab is not None:
        support["max_vocab"] = args.max_vocab
    if args.no_neg_inf:
        support["neg_inf"] = False
    if args.ignore_index is not None:
        support["ignore_index"] = args.ignore_index
    if args.detach_assistant:
        support["detach_assistant"] = True
    if args.temperature_squared:
        support["temperature_squared"] = True
    common = {
        "dtype": args.dtype,
        "grad": args.grad or args.grad_only,
        "compare": "grad" if args.grad_only else "value",
        "full": args.full,
        "families": iter_names(args.families),
        "device": args.device,
        "kwargs": _kwargs(args.set),
    }
    if args.peer is not None:
        peer = get_peer(args.peer)
        common["grad"] = True  # a peer's gradients are always compared
        try:
            report = conform_peer(
                peer,
                kind=args.kind or ("preset" if args.preset else None),
                support=replace(peer.support, **support),
                **common,
            )
        except ImportError as exc:  # not installed, or cannot run in this process
            raise ValueError(f"peer: {exc}") from None
    else:
        fn = load_target(args.target)
        if args.labels_in:
            name, _, key = args.labels_in.partition(".")
            fn = labels_in(fn, name, key or "label")
        report = conform(
            fn,
            args.kind or ("preset" if args.preset else "loss"),
            support=Support(**support),
            convention=args.convention,
            reduction=args.reduction,
            backend=args.backend,
            normalized=not args.unnormalized,
            target=args.target,
            preset=args.preset,
            param_map=_pairs(args.map),
            **common,
        )
    if args.json:
        report.settings["environment"] = _environment()
    print(report.to_json() if args.json else report.text())
    if report.nothing_checked:
        return EXIT_NOTHING_CHECKED
    return EXIT_PASS if report.passed else EXIT_FAIL
