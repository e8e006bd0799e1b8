r"""The Triton kernel's cost on a CUDA GPU, read from its machine code without a GPU.

``python -m gpu.kernel_cost`` compiles, for NVIDIA sm_90 (H100, H200), every pass that
:func:`gpu.amid_loss` launches for an objective (the host code of
:mod:`gpu._triton_kernel` runs as on CUDA and its launches are recorded, as the device
check records them, :class:`gpu.device_check._Recording`), and reads the machine code with
the NVIDIA tools that ship inside the triton wheel (``cuobjdump``, ``nvdisasm``):

* registers per thread and local memory (spills), and from them the warps an SM can hold;
* the instructions of the vocabulary loop, the body each warp runs once per
  ``BLOCK_R × BLOCK_V`` tile: per element, :math:`I_e = I_{\text{loop}}\,W/(B_R B_V)`
  warp-instructions (``W`` warps share a tile), and how many of them are ``MUFU`` (the
  special-function unit: ``ex2``, ``lg2``, ``rcp``). :math:`I_{\text{loop}}` counts the
  common path: the kernel's runtime ``if`` statements are uniform tile branches around
  rare forms (an ``e^x`` beyond float32, a divergence parameter at 0), and the regions
  they skip (:func:`uniform_branch_regions`) are left out; ``static/el`` counts them too;
* the same instructions by source line (``nvdisasm -g``): which forms cost the most.

Two floors follow for N × V logits. An SM issues at most one warp-instruction per
scheduler per clock, so the passes take at least

.. math::

    t_{\text{issue}} = \frac{N V \sum_{\text{passes}} I_e}{\text{SMs}\cdot 4 \cdot f},

(H200 and H100 SXM: 132 SMs, 4 schedulers, f = 1.98 GHz boost), and the memory at least
:math:`t_{\text{HBM}} = N V\,b/B` for the ``b`` bytes per element the loops' global loads
and stores of tiles move (:func:`tile_bytes`) at B = 4.3 TB/s. The larger is a floor no
implementation of these passes can beat. The passes are launches one after another, so
each takes at least the larger of its own two times: their sum,
:math:`\sum_{\text{passes}} \max(t_{\text{issue}}, t_{\text{HBM}})`, is the tighter floor
of the kernel as it is split. Real kernels stall on dependencies too, more so with few
warps resident. Measured on a GPU, ``python -m gpu.bench`` gives the time.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import linecache
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import gpu
from gpu import bench, device_check

#: The CUDA machine the floors are for: H200 SXM (H100 SXM has the same SMs and clock).
SMS, SCHEDULERS, CLOCK_HZ = 132, 4, 1.98e9
#: Its device-to-device copy bandwidth, bytes per second (:data:`gpu.bench.H200_COPY_TBPS`).
HBM_BYTES_S = bench.H200_COPY_TBPS * 1e12
#: Registers per SM, the register allocation unit per warp, warps and blocks per SM (sm_90).
REGISTERS_PER_SM, REGISTER_UNIT, MAX_WARPS_PER_SM, MAX_BLOCKS_PER_SM = 65536, 256, 64, 32
#: Shared memory per SM and the part the system reserves per block (sm_90), bytes: a
#: pipelined loop (a launch shape with stages > 1) stages its tiles there.
SHARED_PER_SM, SHARED_RESERVED = 228 * 1024, 1024


@dataclass
class PassCost:
    """One compiled pass: its resources and the instructions of its vocabulary loop."""

    kernel: str
    constexprs: dict
    registers: int
    local_bytes: int
    warps: int
    elements_per_warp_tile: int
    #: every instruction of the loop, its rare branches included
    loop_instructions: int
    #: the loop's common path: without the regions of the kernel's uniform ``if`` branches
    common_instructions: int
    loop_mufu: int
    #: warp-instructions (issue slots) per element on the common path: its instructions /
    #: elements per warp
    issue_per_element: float
    mufu_per_element: float
    #: bytes of the logits, gradient and scratch tiles the common path loads and stores per
    #: element (vector and 16-bit global accesses, :func:`tile_bytes`)
    bytes_per_element: float
    #: warps an SM holds at these registers and shared memory (occupancy, of 64)
    resident_warps: int
    #: shared memory per block, bytes (the tiles of a pipelined loop, the reductions)
    shared_bytes: int = 0
    #: the heaviest source lines of the loop: (file:line, instructions, source)
    lines: list = field(default_factory=list)


def tools_dir() -> Path:
    """The NVIDIA binary tools bundled in the triton wheel (``cuobjdump``, ``nvdisasm``)."""
    import triton  # optional: triton (the triton extra), whose wheel bundles the tools

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for tool in ("cuobjdump", "nvdisasm"):
        if not (path / tool).exists():
            raise RuntimeError(f"{tool} is not in {path}: this triton ships no NVIDIA tools")
    return path


_INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"\s*(\.L_x_\d+):")
_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_TARGET = re.compile(r"BRA\s.*?\((\.L_x_\d+)\)")


def parse_sass(listing: str) -> tuple[list[tuple[str, tuple | None]], dict[str, int]]:
    """``nvdisasm -g -c`` output as ``[(instruction, (file, line) or None)]`` and the index of
    the instruction each label stands before."""
    code: list[tuple[str, tuple | None]] = []
    labels: dict[str, int] = {}
    where = None
    for text in listing.splitlines():
        if m := _LINE.search(text):
            where = (m.group(1), int(m.group(2)))
        elif m := _LABEL.match(text):
            labels[m.group(1)] = len(code)
        elif m := _INSTRUCTION.match(text):
            code.append((m.group(2), where))
    return code, labels


def opcode(instruction: str) -> str:
    """The opcode of one instruction (its predicate, ``@P0`` or ``@!P0``, skipped)."""
    words = instruction.split()
    return words[1] if words and words[0].startswith("@") and len(words) > 1 else words[0]


#: Bytes per thread of a global load or store by its width suffix.
_WIDTH = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}


def tile_bytes(instruction: str) -> int:
    """Bytes per thread that one global load or store (``LDG``/``STG``, and ``LDGSTS``, the
    asynchronous copy into shared memory of a pipelined loop) of a tile moves; 0 for other
    instructions and for plain 32-bit accesses, which in the passes' loops are the row
    statistics every thread of a row reads at one address (L1 broadcasts, no tile traffic;
    a float32 tile is read by vector loads)."""
    op = opcode(instruction)
    if not op.startswith(("LDG", "STG")):
        return 0
    return max((_WIDTH.get(part, 0) for part in op.split(".")[1:]), default=0)


def loop_body(code: list, labels: dict) -> list[int]:
    """Indices of the instructions inside a loop: from the target of each backward branch
    to the branch (nested or repeated loops counted once; a branch to itself, the trap
    after a kernel's ``EXIT``, is no loop)."""
    inside: set[int] = set()
    for k, (text, _) in enumerate(code):
        m = _TARGET.search(text)
        if m and labels.get(m.group(1), k) < k:
            inside.update(range(labels[m.group(1)], k + 1))
    return sorted(inside)


#: An instruction that sets a predicate register as its first operand (``ISETP… P4, …``).
_SETS_PREDICATE = re.compile(r"^(?:@!?P\d\s+)?\S+\s+(P\d)\s*,")
#: Instructions looked back for the one that set a branch's predicate.
_PREDICATE_LOOKBACK = 64


def predicate_origin(code: list, k: int) -> tuple | None:
    """The ``(file, line)`` of the instruction that last set the predicate of the
    conditional branch ``code[k]`` (up to :data:`_PREDICATE_LOOKBACK` instructions back;
    ``None`` where none is found or the branch is unconditional)."""
    m = re.match(r"@!?(P\d)\s", code[k][0])
    if m is None:
        return None
    for j in range(k - 1, max(-1, k - 1 - _PREDICATE_LOOKBACK), -1):
        d = _SETS_PREDICATE.match(code[j][0])
        if d and d.group(1) == m.group(1):
            return code[j][1]
    return None


def uniform_branch_regions(code: list, labels: dict, body: list[int],
                           helper_lines: frozenset = frozenset()) -> set[int]:  # fmt: skip
    """Indices of the loop that a runtime ``if`` of the kernel source skips when its condition
    is false: the region from a conditional forward branch to its target in the loop, where
    the branch is located on a source line that starts with ``if``, or its predicate was set
    on one or on one of ``helper_lines`` (``(file name, line)``: the body of
    ``gpu._triton_kernel._anywhere``, the kernel's test for such a branch; the compiler may
    place the branch itself on the line of an instruction it moved next to it). The kernel's
    runtime ``if`` statements are uniform tile branches around rare forms
    (``_anywhere(...)``, a constant such as c = 0): the common path leaves them out.
    (Branches the compiler adds, e.g. in reductions, are on other lines and stay
    counted.)"""

    def decides(where) -> bool:
        return _source(where).startswith("if ") or (
            where is not None and (Path(where[0]).name, where[1]) in helper_lines
        )

    inside = set(body)
    rare: set[int] = set()
    for k in body:
        text, where = code[k]
        m = _TARGET.search(text)
        if not (m and text.startswith("@") and m.group(1) in labels):
            continue
        target = labels[m.group(1)]
        if (
            k < target
            and target in inside
            and (decides(where) or decides(predicate_origin(code, k)))
        ):
            rare.update(range(k + 1, target))
    return rare & inside


def uniform_helper_lines() -> frozenset:
    """``(file name, line)`` of every line of ``gpu._triton_kernel._anywhere`` (the helper
    whose result decides the kernel's uniform tile branches)."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    fn = getattr(tk._anywhere, "fn", tk._anywhere)  # the jitted function's Python source
    lines, start = inspect.getsourcelines(fn)
    name = Path(inspect.getsourcefile(fn)).name
    return frozenset((name, start + i) for i in range(len(lines)))


def resident_warps(registers: int, warps: int, shared: int = 0) -> int:
    """Warps an sm_90 SM holds for blocks of ``warps`` warps at ``registers`` per thread and
    ``shared`` bytes of shared memory per block."""
    per_warp = math.ceil(registers * 32 / REGISTER_UNIT) * REGISTER_UNIT
    blocks = min(REGISTERS_PER_SM // (per_warp * warps), MAX_BLOCKS_PER_SM,
                 MAX_WARPS_PER_SM // warps)  # fmt: skip
    if shared:
        blocks = min(blocks, SHARED_PER_SM // (shared + SHARED_RESERVED))
    return blocks * warps


def _source(where) -> str:
    """The source line at ``(file, line)`` (stripped, 100 characters at most; "" where there is
    none), through :mod:`linecache`: each file is read once, not once per branch asked."""
    if where is None:
        return ""
    return linecache.getline(where[0], where[1]).strip()[:100]


def analyse(cubin: bytes, name: str, constexprs: dict, top: int = 8,
            helper_lines: frozenset = frozenset(), shared: int = 0) -> PassCost:  # fmt: skip
    """The :class:`PassCost` of one compiled pass (its cubin; ``shared``: its shared memory
    per block, Triton's ``metadata.shared``); ``helper_lines`` as for
    :func:`uniform_branch_regions`."""
    tools = tools_dir()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pass.cubin")
        Path(path).write_bytes(cubin)
        listing = subprocess.run([str(tools / "nvdisasm"), "-g", "-c", path],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", path],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    local = int(re.search(r"LOCAL:(\d+)", usage).group(1))
    code, labels = parse_sass(listing)
    body = loop_body(code, labels)
    rare = uniform_branch_regions(code, labels, body, helper_lines)
    common = [k for k in body if k not in rare]
    warps = int(constexprs.get("num_warps", 4))
    per_tile = max(1, constexprs.get("BLOCK_R", 1) * constexprs.get("BLOCK_V", 1) // warps)
    mufu = sum(opcode(code[k][0]).startswith("MUFU") for k in common)
    moved = sum(tile_bytes(code[k][0]) for k in common) * 32
    by_line = Counter(code[k][1] for k in common)
    lines = [(f"{Path(w[0]).name}:{w[1]}" if w else "?", n, _source(w))
             for w, n in by_line.most_common(top)]  # fmt: skip
    return PassCost(
        kernel=name,
        constexprs={k: v for k, v in constexprs.items() if k != "num_warps"},
        registers=registers,
        local_bytes=local,
        warps=warps,
        elements_per_warp_tile=per_tile,
        loop_instructions=len(body),
        common_instructions=len(common),
        loop_mufu=mufu,
        issue_per_element=len(common) / per_tile,
        mufu_per_element=mufu / per_tile,
        bytes_per_element=moved / per_tile,
        resident_warps=resident_warps(registers, warps, shared),
        shared_bytes=shared,
        lines=lines,
    )


def record_launches(objective: str, vocab: int, dtype: str = "bfloat16",
                    launch: str | None = None) -> list:  # fmt: skip
    """The Triton variants (device check keys, in launch order) that the logits loss launches
    for ``objective`` (a key of :data:`gpu.bench.OBJECTIVES`) at vocabulary ``vocab``, forward
    and backward, with the choices of a CUDA run (``launch``: the launch shapes, in the
    syntax of :data:`gpu._triton_kernel.LAUNCH_ENV`; ``None``: as the environment says);
    nothing is launched."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    obj = {k: v for k, v in bench.OBJECTIVES[objective].items() if k != "label"}
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, vocab, generator=gen).to(getattr(torch, dtype)).requires_grad_()
    t = torch.randn(2, vocab, generator=gen).to(getattr(torch, dtype))
    shapes = tk.launch_config(launch) if launch is not None else contextlib.nullcontext()
    with device_check._Recording() as rec, warnings.catch_warnings(), shapes:
        warnings.simplefilter("ignore")
        gpu.amid_loss(s, t, backend="triton", **obj).backward()
    if rec.errors:
        raise RuntimeError(f"recording {objective} failed: {rec.errors[0]}")
    return list(rec.variants)


@contextlib.contextmanager
def _triton_cache(path: str):
    """Triton's on-disk cache in ``path`` while the block runs (``TRITON_CACHE_DIR``, which
    triton reads at each compile)."""
    before = os.environ.get("TRITON_CACHE_DIR")
    os.environ["TRITON_CACHE_DIR"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = before


def objective_cost(objective: str, vocab: int, dtype: str = "bfloat16", top: int = 8,
                   launch: str | None = None) -> dict:  # fmt: skip
    """Every pass of ``objective`` compiled for sm_90 and analysed, with the floors at
    :data:`gpu.bench.CUDA_LOGITS_TARGET`'s rows and ``vocab`` (``launch`` as for
    :func:`record_launches`)."""
    from gpu import _triton_kernel as tk  # optional: triton (the triton extra)

    passes = []
    helpers = uniform_helper_lines()
    # A cache of its own: triton's cache key is the kernels' source, not the file it is in,
    # so a binary cached from another checkout carries that checkout's file and line numbers
    # (or a file since removed), and the runtime if-lines would not be found in this one.
    with tempfile.TemporaryDirectory() as cache, _triton_cache(cache):
        for name, args, kwargs in record_launches(objective, vocab, dtype, launch):
            kw = dict(kwargs)
            compiled = device_check._compile_sm90(
                getattr(tk, name), device_check._mock_args(args), kw
            )
            passes.append(analyse(compiled.asm["cubin"], name, kw, top, helpers,
                                  int(getattr(compiled.metadata, "shared", 0) or 0)))  # fmt: skip
    rows = bench.CUDA_LOGITS_TARGET["rows"]
    elements = rows * vocab
    issue = sum(p.issue_per_element for p in passes)
    bytes_per_element = sum(p.bytes_per_element for p in passes)
    issue_s = elements / (SMS * SCHEDULERS * CLOCK_HZ)  # seconds per issue slot per element
    hbm_s = elements / HBM_BYTES_S  # seconds per byte per element
    return {
        "objective": objective,
        "label": bench.OBJECTIVES[objective]["label"],
        "launch": launch if launch is not None else os.environ.get(tk.LAUNCH_ENV) or "default",
        "rows": rows,
        "vocab": vocab,
        "dtype": dtype,
        "passes": [asdict(p) for p in passes],
        "issue_per_element": issue,
        "mufu_per_element": sum(p.mufu_per_element for p in passes),
        "bytes_per_element": bytes_per_element,
        "issue_floor_ms": issue * issue_s * 1e3,
        "hbm_floor_ms": bytes_per_element * hbm_s * 1e3,
        "pass_floor_ms": 1e3
        * sum(max(p.issue_per_element * issue_s, p.bytes_per_element * hbm_s) for p in passes),
        "min_resident_warps": min(p.resident_warps for p in passes),
    }


def format_cost(cost: dict, lines: int = 3) -> str:
    """A table of one objective's passes and its floors."""
    out = [f"{cost['label']}, N={cost['rows']} V={cost['vocab']} {cost['dtype']} on sm_90, "
           f"launch {cost.get('launch', 'default')}:",
           f"  {'pass':<20} {'regs':>4} {'spill':>5} {'warps/SM':>8} {'issue/el':>8} "
           f"{'static/el':>9} {'MUFU/el':>7} {'B/el':>5}"]  # fmt: skip
    for p in cost["passes"]:
        static = p["loop_instructions"] / p["elements_per_warp_tile"]
        out.append(f"  {p['kernel']:<20} {p['registers']:>4} {p['local_bytes']:>5} "
                   f"{p['resident_warps']:>8} {p['issue_per_element']:>8.2f} {static:>9.2f} "
                   f"{p['mufu_per_element']:>7.3f} {p['bytes_per_element']:>5.1f}")  # fmt: skip
        for where, n, src in p["lines"][:lines]:
            share = n / max(1, p["common_instructions"])
            out.append(f"      {share:>4.0%} {where:<24} {src[:70]}")
    out.append(f"  issue slots per element {cost['issue_per_element']:.2f} -> issue floor "
               f"{cost['issue_floor_ms']:.1f} ms; {cost['bytes_per_element']:.0f} B per element -> "
               f"HBM floor {cost['hbm_floor_ms']:.1f} ms; pass by pass, the larger of the two: "
               f"{cost['pass_floor_ms']:.1f} ms")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu.kernel_cost",
        description="The Triton kernel's passes compiled for sm_90 (no GPU needed): registers, "
        "spills, instructions per element of the vocabulary loop, and the instruction-issue and "
        "HBM floors.",
    )
    parser.add_argument("--objectives", default=",".join(bench.CUDA_LOGITS_TARGET["objectives"]),
                        help="comma-separated subset of " + ",".join(bench.OBJECTIVES))  # fmt: skip
    parser.add_argument("--vocab", type=int, default=bench.CUDA_LOGITS_TARGET["vocab"])
    parser.add_argument("--dtype", default=bench.CUDA_LOGITS_TARGET["dtype"],
                        choices=("bfloat16", "float16", "float32"))  # fmt: skip
    parser.add_argument("--lines", type=int, default=3, help="source lines shown per pass")
    parser.add_argument(
        "--launch",
        default=None,
        help="the passes' launch shapes, R:V:W[:S] and/or LETTER=R:V:W[:S] "
        "(gpu._triton_kernel.LAUNCH_ENV; default: as AMID_TRITON_LAUNCH says)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    for o in objectives:
        if o not in bench.OBJECTIVES:
            parser.error(f"--objectives: unknown objective {o!r}")
    if args.launch is not None:
        from gpu._triton_kernel import parse_launch  # optional: triton (the triton extra)

        try:
            parse_launch(args.launch, "--launch")
        except ValueError as exc:
            parser.error(str(exc))
    costs = [objective_cost(o, args.vocab, args.dtype, top=max(args.lines, 8),
                            launch=args.launch) for o in objectives]  # fmt: skip
    if args.json:
        print(json.dumps(costs, indent=1))
    else:
        print("\n\n".join(format_cost(c, args.lines) for c in costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
