"""The documentation page "Published implementations, checked" (``docs/peers.md``), generated
from the JSON reports that ``amid-ref conform --peer NAME --json`` writes.

Usage (from the repository root)::

    python -m amid_ref.conformance.audit_page --run   # run every installed peer, write
                                                      # docs/peers/NAME.DTYPE.json, then the page
    python -m amid_ref.conformance.audit_page         # rebuild docs/peers.md from the JSON
    python -m amid_ref.conformance.audit_page --check # exit 1 if docs/peers.md is stale

Every number on the page comes from a JSON report; nothing is typed by hand. The page says
which command produced each report, on which machine and with which package version; where
a peer differs from the reference by its authors' documented intent (the :attr:`Peer.by_design`
notes and the ``by_design`` failure modes), it says so instead of calling it a defect.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from amid_ref.conformance._cases import FAMILIES
from amid_ref.conformance._peers import PEERS

__all__ = ["DTYPES_CHECKED", "build_page", "main", "run_peers"]

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "docs" / "peers"
PAGE = ROOT / "docs" / "peers.md"

#: The dtypes every peer is checked in.
DTYPES_CHECKED: tuple[str, ...] = ("float32", "bfloat16")


def _command(name: str, dtype: str) -> list[str]:
    return ["amid-ref", "conform", "--peer", name, "--dtype", dtype, "--json"]


def run_peers(names: list[str] | None = None, out: Path = REPORTS) -> list[Path]:
    """Run ``amid-ref conform --peer NAME --dtype D --json`` for each installed peer and
    dtype of :data:`DTYPES_CHECKED`; write ``out/NAME.D.json``. Returns the files written."""

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(PEERS):
        if PEERS[name].version() is None:
            print(f"skip {name}: {PEERS[name].distribution} not installed", file=sys.stderr)
            continue
        for dtype in DTYPES_CHECKED:
            argv = [sys.executable, "-m", "amid_ref", *_command(name, dtype)[1:]]
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
            if proc.returncode not in (0, 1):
                raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr}")
            data = json.loads(proc.stdout)
            data["settings"]["command"] = " ".join(_command(name, dtype))
            path = out / f"{name}.{dtype}.json"
            path.write_text(json.dumps(data, ensure_ascii=False) + "\n")
            written.append(path)
    return written


def _load(reports: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The reports by peer (in the registry's order, then others by name) and dtype."""

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(reports.glob("*.json")):
        data = json.loads(path.read_text())
        name = data["settings"]["peer"]["name"]
        out.setdefault(name, {})[data["settings"]["dtype"]] = data
    order = [n for n in PEERS if n in out] + sorted(set(out) - set(PEERS))
    return {n: out[n] for n in order}


def _num(x: Any) -> str:
    if isinstance(x, str):
        return x
    return f"{x:.1e}" if math.isfinite(x) else str(x)


def _family_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| family | cases | pass | fail | skip | max abs err | max rel err | diagnoses |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    fams = data["families"]
    for name in [*FAMILIES, *sorted(set(fams) - set(FAMILIES))]:  # the battery's order
        f = fams.get(name)
        if f is None:
            continue
        diag = ", ".join(f"`{k}` ×{v}" for k, v in sorted(f["diagnoses"].items()))
        lines.append(
            f"| {name} | {f['cases']} | {f['passed']} | {f['failed']} | {f['skipped']} | "
            f"{_num(f['max_abs_err'])} | {_num(f['max_rel_err'])} | {diag} |"
        )
    return lines


def _diagnoses(data: dict[str, Any], by_design: set[str]) -> list[str]:
    """One bullet per diagnosis: count, its message on one failing case, that case's id."""
    first: dict[str, tuple[str, str]] = {}
    undiagnosed = 0
    for r in data["failures"]:
        ds = r.get("diagnoses") or []
        if not ds:
            undiagnosed += 1
            continue
        first.setdefault(ds[0]["id"], (ds[0]["message"], r["case"]["id"]))
    lines = []
    for mode, count in sorted(data["diagnoses"].items(), key=lambda kv: -kv[1]):
        message, case = first[mode]
        tag = " **By design** (documented by the peer's authors)." if mode in by_design else ""
        lines.append(f"* `{mode}` on {count} case(s).{tag} E.g. `{case}`: {message}.")
    if undiagnosed:
        lines.append(f"* {undiagnosed} failing case(s) matched no known failure mode.")
    if not lines:
        lines.append("* No failure.")
    return lines


def build_page(reports: Path = REPORTS) -> str:
    """The Markdown of ``docs/peers.md`` from the JSON reports in ``reports``."""

    runs = _load(reports)
    env = next((d["settings"].get("environment") for v in runs.values() for d in v.values()), {})
    out = [
        "# Published implementations, checked",
        "",
        "<!-- Generated by `python -m amid_ref.conformance.audit_page` from the JSON reports in "
        "docs/peers/; do not edit by hand. -->",
        "",
        "Each installable distillation loss below was run through its mapped conformance "
        "battery with its built-in adapter (`amid-ref conform --peer NAME`): the generalized "
        "JSD of TRL and liger-kernel is the AMiD loss at λ = 0 with divergence `js` (and the "
        "`gkd_jsd` preset), torch's `F.kl_div` used for knowledge distillation is `kl` "
        "forward or reverse (the `kd` / `rkl` presets). Values and gradients (w.r.t. the "
        "student logits) are compared with `amid_ref` in float64 on the same rounded inputs, "
        "within the tolerances of `amid_ref.tolerances`; every failing case is diagnosed by "
        "evaluating known-wrong formulas on it (see [Check your implementation]"
        "(conformance.md)).",
        "",
        f"Measured on {env.get('machine', 'an unrecorded machine')} with Python "
        f"{env.get('python', '?')}, torch {env.get('torch', '?')}, numpy "
        f"{env.get('numpy', '?')}. Regenerate with `python -m amid_ref.conformance.audit_page "
        "--run` (needs `pip install 'amid-ref[peers]'`).",
        "",
        "| peer | package | maps to | float32: pass / fail / skip | bfloat16: pass / fail / "
        "skip | main findings (float32) |",
        "|---|---|---|---|---|---|",
    ]
    for name, per in runs.items():
        peer = next(iter(per.values()))["settings"]["peer"]
        cells = []
        for dtype in DTYPES_CHECKED:
            d = per.get(dtype)
            c = d["counts"] if d else None
            cells.append(f"{c['pass']} / {c['fail']} / {c['skip']}" if c else "not run")
        main = per.get("float32", {}).get("diagnoses", {})
        finding = ", ".join(f"`{k}` ×{v}" for k, v in main.items()) or "none"
        out.append(
            f"| [`{name}`](#{name}) | {peer['distribution']} {peer['version']} | "
            f"{peer['divergence']} {peer['direction']} / {peer['preset']} | {cells[0]} | "
            f"{cells[1]} | {finding} |"
        )
    for name, per in runs.items():
        first = next(iter(per.values()))
        peer = first["settings"]["peer"]
        by_design = set(PEERS[name].by_design_modes) if name in PEERS else set()
        out += ["", f"## {name}", "", f"{peer['summary']}.", ""]
        out.append(f"* Checked: `{peer['source']}` from {peer['distribution']} "
                   f"{peer['version']}.")  # fmt: skip
        out.append(f"* Maps to: divergence `{peer['divergence']}`, {peer['direction']} "
                   f"(λ = 0), preset `{peer['preset']}`.")  # fmt: skip
        out += [f"* Convention: {c}." for c in peer["conventions"]]
        if peer["by_design"]:
            out += ["", "**Differs from the reference by design.**"]
            out += [f"{note}" for note in peer["by_design"]]
        for dtype in DTYPES_CHECKED:
            d = per.get(dtype)
            if d is None:
                continue
            c = d["counts"]
            out += [
                "",
                f"### {dtype}",
                "",
                "```console",
                f"$ {d['settings'].get('command', ' '.join(_command(name, dtype)))}",
                "```",
                "",
                f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped in "
                f"{d['seconds']:.1f} s (gradients {d['settings']['grad']}); tolerance "
                + ", ".join(
                    f"{q} rtol={t['rtol']:.0e} atol={t['atol']:.0e} [`{t['row']}`]"
                    for q, t in d["tolerances"].items()
                )
                + ".",
                "",
                *_family_table(d),
                "",
                "Diagnoses:",
                "",
                *_diagnoses(d, by_design),
            ]
            skipped = d.get("skipped_reasons", {})
            if skipped:
                out += ["", "Skipped (outside what the peer supports):", ""]
                out += [f"* {n} × {reason}" for reason, n in skipped.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amid_ref.conformance.audit_page")
    parser.add_argument("--run", action="store_true", help="run the peers first")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--peers", help="comma-separated peers to run (default: all)")
    args = parser.parse_args(argv)
    if args.run:
        run_peers(args.peers.split(",") if args.peers else None)
    text = build_page()
    if args.check:
        stale = not PAGE.is_file() or PAGE.read_text() != text
        print("docs/peers.md is stale" if stale else "docs/peers.md is up to date")
        return int(stale)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
