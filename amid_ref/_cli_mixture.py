"""Print r^(α,λ), Z_α and divergences between p, q and r for a grid of α.

Example: ``amid-ref mixture --p 0.7,0.2,0.1 --q 0.1,0.3,0.6 --lam 0.5``.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

import amid_ref

DEFAULT_ALPHAS = "-inf,-5,-3,-1,0,0.5,1,3,5,inf"


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(
            f"{what} must be a comma-separated list of numbers, got {text!r}"
        ) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p", required=True, help="teacher probabilities, e.g. 0.7,0.2,0.1")
    parser.add_argument("--q", required=True, help="student probabilities, e.g. 0.1,0.3,0.6")
    parser.add_argument("--lam", type=float, default=0.5, help="teacher weight λ in [0, 1]")
    parser.add_argument(
        "--alphas", default=DEFAULT_ALPHAS, help=f"α grid (default {DEFAULT_ALPHAS})"
    )
    parser.add_argument(
        "--divergence", default="kl", help="divergence for D(p‖r), D(q‖r), D(r‖p), D(r‖q)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    p = np.array(_floats(args.p, "--p"))
    q = np.array(_floats(args.q, "--q"))
    alphas = _floats(args.alphas, "--alphas")
    rows = []
    for alpha in alphas:
        r = amid_ref.alpha_mixture(p, q, alpha, args.lam)
        z = float(amid_ref.alpha_mixture_normalizer(p, q, alpha, args.lam))
        divs = {
            "D(p||r)": float(amid_ref.divergence(p, r, args.divergence)),
            "D(q||r)": float(amid_ref.divergence(q, r, args.divergence)),
            "D(r||p)": float(amid_ref.divergence(r, p, args.divergence)),
            "D(r||q)": float(amid_ref.divergence(r, q, args.divergence)),
        }
        rows.append({"alpha": alpha, "r": r.tolist(), "Z": z, **divs})
    if args.json:
        print(
            json.dumps(
                {
                    "p": p.tolist(),
                    "q": q.tolist(),
                    "lam": args.lam,
                    "divergence": args.divergence,
                    "rows": rows,
                },
                indent=2,
            )
        )
        return 0
    print(f"p = {p.tolist()}  q = {q.tolist()}  λ = {args.lam}  divergence = {args.divergence}")
    width = max(9, 9 * len(p))
    head = f"{'α':>8}  {'r^(α,λ)':<{width}}  {'Z_α':>9}"
    keys = ["D(p||r)", "D(q||r)", "D(r||p)", "D(r||q)"]
    print(head + "".join(f"  {k:>9}" for k in keys))
    for row in rows:
        a = row["alpha"]
        label = ("-∞" if a < 0 else "+∞") if math.isinf(a) else f"{a:g}"
        rtxt = " ".join(f"{x:.6f}" for x in row["r"])
        line = f"{label:>8}  {rtxt:<{width}}  {row['Z']:9.6f}"
        print(line + "".join(f"  {row[k]:9.6f}" for k in keys))
    return 0
