"""gpu.kernel_cost: the Triton passes compiled for sm_90 and read without a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu import kernel_cost

ROOT = Path(__file__).resolve().parent.parent

# A hand-written nvdisasm -g -c listing: a prologue, a three-instruction loop body closed by a
# backward branch, the exit and the trap that branches to itself.
LISTING = """
\t//## File "/src/k.py", line 10
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
\t//## File "/src/k.py", line 12
        /*0010*/                   MUFU.EX2 R2, R3 ;
        /*0020*/              @!P0 MUFU.LG2 R4, R5 ;
\t//## File "/src/k.py", line 13
        /*0030*/                   FADD R6, R2, R4 ;
        /*0040*/               @P1 BRA `(.L_x_0) ;
        /*0050*/                   EXIT ;
.L_x_1:
        /*0060*/                   BRA `(.L_x_1) ;
"""


def test_parse_sass_finds_the_loop_body_and_its_lines():
    code, labels = kernel_cost.parse_sass(LISTING)
    assert len(code) == 7
    assert labels == {".L_x_0": 1, ".L_x_1": 6}
    body = kernel_cost.loop_body(code, labels)
    assert body == [1, 2, 3, 4]  # the trap's branch to itself is no loop
    assert [kernel_cost.opcode(code[k][0]) for k in body] == ["MUFU.EX2", "MUFU.LG2", "FADD", "BRA"]
    assert [code[k][1] for k in body] == [("/src/k.py", 12)] * 2 + [("/src/k.py", 13)] * 2


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
    assert list(passes) == ["_max_pass", "_lse_pass", "_mixture_max_pass", "_mixture_lse_pass",
                            "_divergence_pass", "_gradient_sum_pass", "_gradient_pass"]  # fmt: skip
    for p in passes.values():
        assert 0 < p["registers"] <= 255
        assert p["loop_instructions"] > 0
        assert p["elements_per_warp_tile"] == p["constexprs"]["BLOCK_V"] // p["warps"]
    # the maxima take no special function; the log-sum-exp takes an exp per element
    assert passes["_max_pass"]["loop_mufu"] == 0
    assert passes["_lse_pass"]["loop_mufu"] > 0
    # 7 passes read both bfloat16 logits, the last writes the bfloat16 gradient
    assert cost["bytes_per_element"] == 30
    assert cost["issue_floor_ms"] > 0 and cost["hbm_floor_ms"] > 0


def test_the_cli_refuses_an_interpreted_triton(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        kernel_cost.main(["--objectives", "kl"])
    assert "TRITON_INTERPRET" in capsys.readouterr().err
