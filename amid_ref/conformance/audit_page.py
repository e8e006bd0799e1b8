"""The documentation pages "Published implementations, checked" (``docs/peers.md``) and
"Which AMiD setting is my library's loss?" (``docs/mapping.md``), generated from the
:class:`~amid_ref.conformance.Peer` records and the JSON reports that ``amid-ref conform --peer
NAME --json`` writes.

Usage (from the repository root)::

    python -m amid_ref.conformance.audit_page --run   # run every installed peer, write
                                                      # docs/peers/NAME.DTYPE.json, then the page
    python -m amid_ref.conformance.audit_page         # rebuild both pages from the JSON
    python -m amid_ref.conformance.audit_page --check # exit 1 if a page is stale

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

__all__ = ["DTYPES_CHECKED", "build_mapping_page", "build_page", "main", "run_peers"]

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "docs" / "peers"
PAGE = ROOT / "docs" / "peers.md"
MAPPING = ROOT / "docs" / "mapping.md"

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
            if proc.returncode not in (0, 1, 3):  # passed, failed, nothing checked
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
        "JSD of TRL (GKD and the DistillationTrainer) and liger-kernel is the AMiD loss at "
        "λ = 0 with divergence `js` (and the `gkd_jsd` preset); torch's `F.kl_div`, "
        "torchtune's KD losses, liger-kernel's KL kernel and NVIDIA ModelOpt's logits loss "
        "are `kl` forward or reverse (the `kd` / `rkl` presets; torchtune's symmetric KL the "
        "`symmetric_kl` preset); liger-kernel's TVD kernel is `tv`. Which parameter of each "
        "is which AMiD setting: [Which AMiD setting is my library's loss?](mapping.md). "
        "Values and gradients (w.r.t. the "
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
            cell = f"{c['pass']} / {c['fail']} / {c['skip']}" if c else "not run"
            if c and c["pass"] == c["fail"] == 0:
                cell += " (nothing checked)"
            cells.append(cell)
        main = per.get("float32", {}).get("diagnoses", {})
        finding = ", ".join(f"`{k}` ×{v}" for k, v in main.items()) or "none"
        maps = f"{peer['divergence']} {peer['direction']} / {peer['preset']}"
        if peer.get("kind") == "preset":
            maps = f"preset {peer['preset']}"
        elif not peer["preset"]:
            maps = f"{peer['divergence']} {peer['direction']}"
        out.append(
            f"| [`{name}`](#{name}) | {peer['distribution']} {peer['version']} | {maps} | "
            f"{cells[0]} | {cells[1]} | {finding} |"
        )
    for name, per in runs.items():
        first = next(iter(per.values()))
        peer = first["settings"]["peer"]
        by_design = set(PEERS[name].by_design_modes) if name in PEERS else set()
        out += ["", f"## {name}", "", f"{peer['summary']}.", ""]
        out.append(f"* Checked: `{peer['source']}` from {peer['distribution']} "
                   f"{peer['version']}.")  # fmt: skip
        if peer.get("kind") == "preset":
            out.append(f"* Maps to: preset `{peer['preset']}` ({peer['amid']}).")
        else:
            preset = f", preset `{peer['preset']}`" if peer["preset"] else ""
            out.append(f"* Maps to: divergence `{peer['divergence']}`, {peer['direction']} "
                       f"(λ = 0){preset}.")  # fmt: skip
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


_REDUCTION_WORDS = {
    "none": "per row",
    "mean": "mean over kept rows",
    "sum": "sum over rows",
    "batchmean": "sum ÷ first dimension (mean over kept rows with labels)",
}


def _endpoints(data: dict[str, Any] | None, peer) -> str:
    """What the float32 report measured at the parameter's endpoints (0 and 1)."""
    if data is None:
        return "not run"
    seen: dict[str, int] = {}
    for r in data["failures"]:
        case = r["case"]
        if case["family"] != "param_grid":
            continue
        params = case.get("preset_params") or case.get("div_params") or {}
        at_end = [f"{k} = {v:g}" for k, v in params.items() if v in (0.0, 1.0)]
        if not at_end:
            continue
        mode = r["diagnoses"][0]["id"] if r.get("diagnoses") else "undiagnosed"
        key = f"{', '.join(at_end)}: `{mode}`"
        seen[key] = seen.get(key, 0) + 1
    swept = peer.kind == "preset" or peer.divergence == "js"
    if not swept:
        return "— (no parameter with endpoints)"
    if not seen:
        return "agree with the reference"
    by_design = set(peer.by_design_modes)
    return "; ".join(
        f"{k} ×{n}" + (" (by design)" if k.split("`")[1] in by_design else "")
        for k, n in sorted(seen.items())
    )


def _precision(data: dict[str, Any] | None) -> str:
    """What the bf16 report measured: counts and its most frequent diagnoses."""
    if data is None:
        return "not run"
    c = data["counts"]
    if c["pass"] == c["fail"] == 0:
        reason = max(data["skipped_reasons"].items(), key=lambda kv: kv[1])[0]
        return f"not checked: {reason}"
    top = sorted(data["diagnoses"].items(), key=lambda kv: -kv[1])[:2]
    found = ", ".join(f"`{k}` ×{v}" for k, v in top)
    return f"{c['pass']} pass / {c['fail']} fail" + (f": {found}" if found else "")


def _temperature(peer) -> str:
    if peer.support.temperature is False:
        return "no T"
    return "T² applied" if peer.support.temperature_squared else "no T²"


def build_mapping_page(reports: Path = REPORTS) -> str:
    """The Markdown of ``docs/mapping.md``: one row per :data:`PEERS` record (its parameters
    and conventions), with the endpoint and bf16 behaviour measured in ``reports``."""

    runs = _load(reports)
    out = [
        "# Which AMiD setting is my library's loss?",
        "",
        "<!-- Generated by `python -m amid_ref.conformance.audit_page` from the Peer records "
        "(amid_ref/conformance/_peers.py) and the JSON reports in docs/peers/; do not edit by "
        "hand. -->",
        "",
        "Each distillation loss of the libraries below is an AMiD setting: a path parameter "
        "α, a teacher weight λ (λ = 0: r = q, a plain divergence D(p‖q) or D(q‖p)), a "
        "divergence and an order (`pr` = D(p‖r), `rp` = D(r‖p); p the teacher, q the "
        "student), with or without T², reduced one way or another. The table gives each "
        "library parameter its AMiD meaning; the last two columns are measured by the "
        "harness (`amid-ref conform --peer NAME`, float32 and bfloat16; the details, "
        "commands and versions are on [Published implementations, checked](peers.md)).",
        "",
        "| peer | package | its parameters → AMiD | AMiD setting | T | reduction | label "
        "shift | masking | at the endpoints (float32, measured) | bfloat16 (measured) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, peer in PEERS.items():
        per = runs.get(name, {})
        version = next(iter(per.values()))["settings"]["peer"]["version"] if per else None
        package = f"{peer.distribution} {version}" if version else peer.distribution
        params = "; ".join(f"`{k}`: {v}" for k, v in peer.params) or "—"
        cells = [
            f"[`{name}`](peers.md#{name})",
            package,
            params,
            peer.amid or "—",
            _temperature(peer),
            _REDUCTION_WORDS[peer.reduction],
            peer.label_shift,
            peer.masking or "—",
            _endpoints(per.get("float32"), peer),
            _precision(per.get("bfloat16")),
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += [
        "",
        "Reading a row: `trl-gjsd`'s `beta` is λ = β with the m-mixture (α = −1), and its loss "
        "β·KL(p‖r) + (1−β)·KL(q‖r) is the generalized JSD of the `gkd_jsd` preset; at β = 0 "
        "and 1 TRL returns KL(p‖q) and KL(q‖p) by design, where the JSD is 0. A user's own "
        "loss is mapped the same way: `amid-ref conform my_module:my_loss --preset NAME` "
        "(`--map` renames parameters), see [Check your implementation](conformance.md).",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amid_ref.conformance.audit_page")
    parser.add_argument("--run", action="store_true", help="run the peers first")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--peers", help="comma-separated peers to run (default: all)")
    args = parser.parse_args(argv)
    if args.run:
        run_peers(args.peers.split(",") if args.peers else None)
    pages = {PAGE: build_page(), MAPPING: build_mapping_page()}
    if args.check:
        stale = [p for p, text in pages.items() if not p.is_file() or p.read_text() != text]
        for p in pages:
            rel = p.relative_to(ROOT)
            print(f"{rel} is stale" if p in stale else f"{rel} is up to date")
        return int(bool(stale))
    for p, text in pages.items():
        p.write_text(text)
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
