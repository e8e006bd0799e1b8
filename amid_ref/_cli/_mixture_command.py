"""Print r^(α,λ), Z_α and divergences between p, q and r for a grid of α.

Example: ``amid-ref mixture --p 0.7,0.2,0.1 --q 0.1,0.3,0.6 --lam 0.5 --alphas -5,-1,0,1``.

Where the α-mixture does not exist (α ≥ 1 keeps only the tokens that both p and q give
mass to, so Z_α = 0 when their supports are disjoint), the row says so and why; the other
rows are printed as usual.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

import amid_ref
from amid_ref._cli._util import float_list

DEFAULT_ALPHAS = "-inf,-5,-3,-1,0,0.5,1,3,5,inf"
_KEYS = ("D(p||r)", "D(q||r)", "D(r||p)", "D(r||q)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--p", required=True, type=float_list, help="teacher probabilities, e.g. 0.7,0.2,0.1"
    )
    parser.add_argument(
        "--q", required=True, type=float_list, help="student probabilities, e.g. 0.1,0.3,0.6"
    )
    parser.add_argument("--lam", type=float, default=0.5, help="teacher weight λ in [0, 1]")
    parser.add_argument(
        "--alphas",
        type=float_list,
        default=float_list(DEFAULT_ALPHAS),
        help=f"α grid, e.g. -5,-1,0,1 (default {DEFAULT_ALPHAS})",
    )
    parser.add_argument(
        "--divergence", default="kl", help="divergence for D(p‖r), D(q‖r), D(r‖p), D(r‖q)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _row(p: np.ndarray, q: np.ndarray, alpha: float, lam: float, divergence: str) -> dict:
    r = amid_ref.alpha_mixture(p, q, alpha, lam)
    z = float(amid_ref.alpha_mixture_normalizer(p, q, alpha, lam))
    divs = {
        "D(p||r)": float(amid_ref.divergence(p, r, divergence)),
        "D(q||r)": float(amid_ref.divergence(q, r, divergence)),
        "D(r||p)": float(amid_ref.divergence(r, p, divergence)),
        "D(r||q)": float(amid_ref.divergence(r, q, divergence)),
    }
    return {"alpha": alpha, "r": r.tolist(), "Z": z, **divs}


def run(args: argparse.Namespace) -> int:
    p = np.array(args.p)
    q = np.array(args.q)
    alphas = args.alphas
    if any(math.isnan(a) for a in alphas):
        raise ValueError(f"--alphas: NaN is not an α, got {list(alphas)}")
    # The arithmetic mixture (α = -1) exists for every valid input: an error here is one of
    # the input (p, q, λ, the divergence), reported as such for the whole table.
    _row(p, q, -1.0, args.lam, args.divergence)
    rows = []
    for alpha in alphas:
        try:
            rows.append(_row(p, q, alpha, args.lam, args.divergence))
        except ValueError as exc:  # this α's mixture does not exist for these p and q
            why = str(exc).removeprefix("the α-mixture is undefined: ")
            rows.append({"alpha": alpha, "undefined": why})
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
    print(head + "".join(f"  {k:>9}" for k in _KEYS))
    for row in rows:
        a = row["alpha"]
        label = ("-∞" if a < 0 else "+∞") if math.isinf(a) else f"{a:g}"
        if "undefined" in row:
            print(f"{label:>8}  undefined: {row['undefined']}")
            continue
        rtxt = " ".join(f"{x:.6f}" for x in row["r"])
        line = f"{label:>8}  {rtxt:<{width}}  {row['Z']:9.6f}"
        print(line + "".join(f"  {row[k]:9.6f}" for k in _KEYS))
    return 0
