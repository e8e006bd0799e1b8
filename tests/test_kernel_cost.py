"""gpu.kernel_cost: the Triton passes compiled for sm_90 and read without a GPU."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu import kernel_cost

ROOT = Path(__file__).resolve().parent.parent

# A hand-written nvdisasm -g -c listing: a prologue, a loop whose body holds a runtime ``if``
# (a conditional forward branch on the source line of an ``if``, skipping two instructions)
# and a branch the compiler adds on another line (skipping one), closed by a backward branch;
# then the exit and the trap that branches to itself.
SOURCE = """x = load()
if rare(x):
    x = slow(x)
y = fast(x)
"""
LISTING = """
\t//## File "{src}", line 1
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
\t//## File "{src}", line 4
        /*0010*/                   MUFU.EX2 R2, R3 ;
        /*0020*/              @!P0 MUFU.LG2 R4, R5 ;
\t//## File "{src}", line 2
        /*0030*/              @!P2 BRA `(.L_x_2) ;
\t//## File "{src}", line 3
        /*0040*/                   MUFU.LG2 R7, R6 ;
        /*0050*/                   FMUL R6, R7, R7 ;
.L_x_2:
\t//## File "{src}", line 4
        /*0060*/               @P3 BRA `(.L_x_3) ;
        /*0070*/                   STS [R0], R6 ;
.L_x_3:
        /*0080*/                   FADD R6, R2, R4 ;
        /*0090*/               @P1 BRA `(.L_x_0) ;
        /*00a0*/                   EXIT ;
.L_x_1:
        /*00b0*/                   BRA `(.L_x_1) ;
"""


def test_parse_sass_finds_the_loop_body_its_rare_region_and_its_lines(tmp_path):
    src = tmp_path / "k.py"
    src.write_text(SOURCE)
    code, labels = kernel_cost.parse_sass(LISTING.format(src=src))
    assert len(code) == 12
    assert labels == {".L_x_0": 1, ".L_x_2": 6, ".L_x_3": 8, ".L_x_1": 11}
    body = kernel_cost.loop_body(code, labels)
    assert body == list(range(1, 10))  # the trap's branch to itself is no loop
    assert [kernel_cost.opcode(code[k][0]) for k in body[:3]] == ["MUFU.EX2", "MUFU.LG2", "BRA"]
    assert [code[k][1][1] for k in body] == [4, 4, 2, 3, 3, 4, 4, 4, 4]
    # the ``if`` on line 2 skips lines 3's two instructions; the branch on line 4 is the
    # compiler's and its store stays on the common path
    assert kernel_cost.uniform_branch_regions(code, labels, body) == {4, 5}


# The same loop where the compiler moved an instruction of line 4 next to the ``if``'s branch
# and put the branch on that line: its predicate was set on line 2 (the test) or on a line
# of the helper named (file, line); a branch whose predicate comes from neither stays counted.
MOVED = """
\t//## File "{src}", line 1
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
\t//## File "{src}", line {test}
        /*0010*/                   ISETP.NE.U32.AND P2, PT, R0, RZ, PT ;
\t//## File "{src}", line 4
        /*0020*/                   FADD R4, R2, R2 ;
        /*0030*/              @!P2 BRA `(.L_x_2) ;
\t//## File "{src}", line 3
        /*0040*/                   MUFU.LG2 R7, R6 ;
        /*0050*/                   FMUL R6, R7, R7 ;
.L_x_2:
\t//## File "{src}", line 4
        /*0060*/               @P1 BRA `(.L_x_0) ;
        /*0070*/                   EXIT ;
"""


@pytest.mark.parametrize(("test_line", "helpers", "rare"), [
    (2, frozenset(), {4, 5}),  # the predicate set on the ``if`` line
    (1, frozenset({("k.py", 1)}), {4, 5}),  # on a line of the helper
    (1, frozenset(), set()),  # on neither: the compiler's branch, counted
])  # fmt: skip
def test_a_branch_moved_off_its_if_line_is_told_by_its_predicate(tmp_path, test_line,
                                                                 helpers, rare):  # fmt: skip
    src = tmp_path / "k.py"
    src.write_text(SOURCE)
    code, labels = kernel_cost.parse_sass(MOVED.format(src=src, test=test_line))
    body = kernel_cost.loop_body(code, labels)
    assert body == list(range(1, 7))
    assert kernel_cost.predicate_origin(code, 3) == (str(src), test_line)
    assert kernel_cost.predicate_origin(code, 6) is None  # P1 is set outside the listing
    assert kernel_cost.uniform_branch_regions(code, labels, body, helpers) == rare


def test_uniform_helper_lines_are_those_of_anywhere():
    pytest.importorskip("triton")
    from gpu import _triton_kernel as tk

    lines = kernel_cost.uniform_helper_lines()
    fn = getattr(tk._anywhere, "fn", tk._anywhere)
    source, start = inspect.getsourcelines(fn)
    assert ("_triton_kernel.py", start) in lines and len(lines) == len(source)
    assert any("tl.max" in source[line - start] for _, line in lines)


@pytest.mark.parametrize(
    ("instruction", "nbytes"),
    [
        ("LDG.E.128 R8, desc[UR4][R2.64]", 16),
        ("@!P0 STG.E.64 desc[UR4][R2.64], R4", 8),
        ("STG.E.U16 desc[UR4][R2.64], R5", 2),
        ("LDG.E R9, desc[UR4][R6.64]", 0),  # a row statistic, one address per row
        # a pipelined loop's asynchronous copy of a tile into shared memory, and its fence
        ("LDGSTS.E.BYPASS.128 [R5+0x400], desc[UR6][R2.64]", 16),
        ("LDGDEPBAR", 0),
        ("LDS.128 R8, [R3]", 0),
        ("FADD R6, R2, R4", 0),
    ],
)
def test_tile_bytes_by_access_width(instruction, nbytes):
    assert kernel_cost.tile_bytes(instruction) == nbytes


@pytest.mark.parametrize(
    ("registers", "warps", "resident"),
    [
        # 255 registers round up to 256 per thread: 8192 per warp, one 8-warp block fills
        # the 65536-register file
        (255, 8, 8),
        # 64 per thread, 2048 per warp: 8 blocks of 4 warps by registers, below 32 blocks
        # and 64 warps
        (64, 4, 32),
        # 32 per thread: 16 blocks of 4 warps would fit the registers; 64 warps cap it
        (32, 4, 64),
    ],
)
def test_resident_warps_follow_the_sm90_limits(registers, warps, resident):
    assert kernel_cost.resident_warps(registers, warps) == resident


@pytest.mark.parametrize(
    ("registers", "warps", "shared", "resident"),
    [
        # 64 registers allow 8 blocks of 4 warps; 40 KiB of shared memory (+1 KiB reserved
        # each) only 5 of 228 KiB
        (64, 4, 40 * 1024, 20),
        # a little shared memory binds nothing: the registers do
        (64, 4, 1024, 32),
        # 100 KiB: two blocks
        (32, 8, 100 * 1024, 16),
    ],
)
def test_resident_warps_count_shared_memory(registers, warps, shared, resident):
    assert kernel_cost.resident_warps(registers, warps, shared) == resident


def _tools_present() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        kernel_cost.tools_dir()
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _tools_present(), reason="triton with its NVIDIA tools is not installed")
def test_every_pass_of_the_kl_objective_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "gpu.kernel_cost", "--objectives", "kl", "--vocab", "4096",
           "--json"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (cost,) = json.loads(done.stdout)
    passes = {p["kernel"]: p for p in cost["passes"]}
    # the passes of gpu._triton_kernel's table for a loss with a gradient through r
    assert list(passes) == ["_normalizer_pass", "_mixture_pass", "_divergence_pass",
                            "_gradient_sum_pass", "_gradient_pass"]  # fmt: skip
    for p in passes.values():
        assert 0 < p["registers"] <= 255
        assert 0 < p["common_instructions"] <= p["loop_instructions"]
        assert p["elements_per_warp_tile"] == p["constexprs"]["BLOCK_V"] // p["warps"]
    # the log-sum-exps take an exp per element
    assert passes["_normalizer_pass"]["loop_mufu"] > 0
    # pass a reads both bfloat16 logits (4 B per element); b also stores log m and
    # its ratio to p in float32 (12 B), c reads them (12 B); c2 reads the logits and log m
    # and writes G in float32 (12 B: KL(p||r) needs no ratio there); d reads the student's
    # logits and G and writes the bfloat16 gradient (8 B)
    assert [p["bytes_per_element"] for p in passes.values()] == [4, 12, 12, 12, 8]
    assert cost["bytes_per_element"] == 48
    assert cost["issue_floor_ms"] > 0 and cost["hbm_floor_ms"] > 0
    # each pass at the larger of its issue and memory times: between the larger floor and
    # their sum, and above it where some pass is bound by the other resource than the whole
    issue, hbm, by_pass = cost["issue_floor_ms"], cost["hbm_floor_ms"], cost["pass_floor_ms"]
    assert max(issue, hbm) <= by_pass <= issue + hbm
    ms_per_slot = issue / cost["issue_per_element"]
    ms_per_byte = hbm / cost["bytes_per_element"]
    want = sum(max(p["issue_per_element"] * ms_per_slot, p["bytes_per_element"] * ms_per_byte)
               for p in passes.values())  # fmt: skip
    assert by_pass == pytest.approx(want, rel=1e-9)


def test_the_cli_refuses_an_interpreted_triton(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        kernel_cost.main(["--objectives", "kl"])
    assert "TRITON_INTERPRET" in capsys.readouterr().err
