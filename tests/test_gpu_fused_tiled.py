"""The two-phase, vocabulary-tiled backward of :func:`gpu.amid_fused_linear_loss`.

With the Triton kernel (here under triton's interpreter, ``backend="triton"``; compiled on
CUDA) the fused loss forms the weight gradient vocabulary tile by vocabulary tile
(``gpu._fused._vocab_tiled_run``): phase 1 walks row chunks over all V (loss, row
statistics, ∂L/∂h), phase 2 walks vocabulary tiles over all rows (the tile's logits again,
its gradient from the saved statistics, ∂L/∂W_tile = G_tileᵀ h). The tile width is shrunk
here so that V = 96 makes three tiles (and, in one test, two tiles, the last one
narrower).

Oracle: :func:`amid_ref.amid_loss` and :func:`amid_ref.amid_grad` in float64 on the same
dtype-rounded logits, chained by hand (∂h = G W, ∂W = Gᵀ h, ∂b = Σ G in float64, G the
reference gradient times the reduction's row weights), to the ``"gpu"`` rows of the
tolerance table; and the row-chunk path (the torch kernel), to the same rows.

Every check asserts that the tiled pass ran (a counter on
:func:`gpu._triton_kernel.gradient_tile`); the memory test records every tensor an aten op
returns (a ``TorchDispatchMode``) and finds no float32 V×H tensor, where the row-chunk path
has one. The interpreter costs ~0.1 s a launch: one row chunk (7 launches) and three tiles
per call.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
F = torch.nn.functional

from _memory import LiveBytes  # noqa: E402
from _triton import NoLaunch, interpreted  # noqa: E402

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu import _engine, _fused  # noqa: E402
from gpu import _triton_kernel as tk  # noqa: E402

INF = math.inf
pytestmark = pytest.mark.skipif(
    not interpreted(), reason="the tiled path is checked here under TRITON_INTERPRET=1"
)

ROWS, HIDDEN, VOCAB, T_HIDDEN = 8, 32, 96, 12
NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


@pytest.fixture
def tiles(monkeypatch):
    """Tiles of 32 columns (three over V = 96) and of 4 rows (two GEMMs per tile over
    8 rows), the Triton backend fresh (no earlier fallback: warnings are errors), and a
    counter of the tiled gradient pass (the tile widths), which the test must run."""
    monkeypatch.setattr(_fused, "_VOCAB_TILE_ELEMENTS", 4 * 32)
    monkeypatch.setattr(_fused, "_VOCAB_TILE_QUANTUM", 32)
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    calls = []
    real = tk.gradient_tile

    def counted(s, *args):
        calls.append(s.shape[-1])
        return real(s, *args)

    monkeypatch.setattr(tk, "gradient_tile", counted)
    yield calls
    assert calls, "the vocabulary-tiled gradient pass did not run"


def _problem(seed, dtype, bias=True):
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    h = draw(2, ROWS // 2, HIDDEN).requires_grad_()
    w = draw(VOCAB, HIDDEN, scale=0.4).requires_grad_()
    b = draw(VOCAB, scale=0.3).requires_grad_() if bias else None
    th, tw = draw(2, ROWS // 2, T_HIDDEN), draw(VOCAB, T_HIDDEN, scale=0.8)
    tb = draw(VOCAB, scale=0.3) if bias else None
    return h, w, b, th, tw, tb


def _chain_rule(h, w, b, th, tw, tb, row_weights, objective):
    """Loss and (∂h, ∂W, ∂b) in float64 from amid_ref on the dtype-rounded logits."""
    alpha, lam, div, order, params, temperature = objective
    s = F.linear(h, w, b).detach().double().reshape(-1, VOCAB).numpy()
    t = F.linear(th, tw, tb).double().reshape(-1, VOCAB).numpy()
    loss = amid_ref.amid_loss(s, t, alpha, lam, div, order, params, temperature)
    g = amid_ref.amid_grad(s, t, alpha, lam, div, order, params, temperature)
    g = g * row_weights[:, None]
    h64 = h.detach().double().reshape(-1, HIDDEN).numpy()
    grads = (g @ w.detach().double().numpy(), g.T @ h64, g.sum(0))
    return float(np.sum(loss * row_weights)), grads


def _assert_grads(got, want, name, what):
    for label, gf, gw_ in zip(("hidden", "weight", "bias"), got, want, strict=True):
        if gf is None:
            continue
        gf = gf.detach().double().reshape(gw_.shape).numpy()
        scale = max(1.0, float(np.abs(gw_).max()))  # row-scaled as in tests/test_gpu.py
        tol = tolerance("gpu", "grad", name)
        assert_within(gf / scale, gw_ / scale, tol, what=f"{what} {label}")


#: (α, λ, divergence, order, params, T): the mixture's regimes, every Triton divergence.
OBJECTIVES = (
    (-5.0, 0.3, "kl", "pr", None, 1.0),
    (0.5, 0.6, "js", "qr", {"beta": 0.5}, 1.3),
    (-INF, 0.5, "tv", "rq", None, 1.0),
    (3.0, 0.2, "jeffreys", "rp", None, 1.0),
    (1.0, 0.4, "hellinger", "qr", None, 1.0),
    (0.0, 0.1, "skew_kl", "pr", {"skew": 0.1}, 1.0),
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("objective", OBJECTIVES, ids=[o[2] for o in OBJECTIVES])
def test_tiled_equals_reference_and_row_chunks(tiles, objective, dtype):
    """Mean over the labelled rows (shifted, two ignored), bias on both lm_heads."""
    alpha, lam, div, order, params, temperature = objective
    name = NAMES[dtype]
    h, w, b, th, tw, tb = _problem(11, dtype)
    labels = torch.tensor([[3, -100, 5, 7], [1, 2, -100, 9]])
    valid = torch.zeros(2, ROWS // 2, dtype=torch.bool)
    valid[:, :-1] = labels[:, 1:] != -100
    kw = dict(labels=labels, shift_labels=True, temperature=temperature, student_bias=b,
              teacher_bias=tb)  # fmt: skip
    what = f"{div} {order} alpha={alpha} lam={lam} {name}"
    fused = gpu.amid_fused_linear_loss(h, w, th, tw, alpha, lam, div, order, params,
                                       backend="triton", **kw)  # fmt: skip
    got = torch.autograd.grad(fused, (h, w, b))
    assert [g.dtype for g in got] == [dtype] * 3
    row_weights = valid.reshape(-1).double().numpy() / int(valid.sum())
    want_loss, want = _chain_rule(h, w, b, th, tw, tb, row_weights, objective)
    assert_within(fused.item(), want_loss, tolerance("gpu", "loss", name), what=what)
    _assert_grads(got, want, name, what)
    # the row-chunk path (torch kernel, float32 accumulator) agrees to the same rows
    rowwise = gpu.amid_fused_linear_loss(h, w, th, tw, alpha, lam, div, order, params,
                                         backend="torch", **kw)  # fmt: skip
    assert_within(fused.item(), rowwise.item(), tolerance("gpu", "loss", name), what=what)
    both = [g.double().numpy() for g in torch.autograd.grad(rowwise, (h, w, b))]
    _assert_grads(got, [x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x for x in both], name,
                  what + " vs row chunks")  # fmt: skip
    assert tiles == [32, 32, 32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_tiled_teacher_logits_sum_and_upstream(tiles, dtype, monkeypatch):
    """A precomputed teacher (logits, float32), no bias, reduction='sum', an upstream
    gradient of 0.25 (folded into the tiles' gradient scale), two row chunks, and an
    uneven last tile (V = 96 in tiles of 64)."""
    monkeypatch.setattr(_fused, "_VOCAB_TILE_ELEMENTS", ROWS * 64)
    name = NAMES[dtype]
    h, w, _b, th, tw, _tb = _problem(12, dtype, bias=False)
    t_logits = F.linear(th, tw).float()
    objective = (-1.0, 0.5, "js", "pr", {"beta": 0.5}, 1.0)
    alpha, lam, div, order, params, _ = objective
    loss = gpu.amid_fused_linear_loss(h, w, None, None, alpha, lam, div, order, params,
                                      teacher_logits=t_logits, reduction="sum", chunk_size=5,
                                      backend="triton")  # fmt: skip
    got = torch.autograd.grad(loss * 0.25, (h, w))
    s = F.linear(h, w).detach().double().reshape(-1, VOCAB).numpy()
    t = t_logits.double().reshape(-1, VOCAB).numpy()
    want_loss = amid_ref.amid_loss(s, t, alpha, lam, div, order, params).sum()
    g = 0.25 * amid_ref.amid_grad(s, t, alpha, lam, div, order, params)
    want = (g @ w.detach().double().numpy(), g.T @ h.detach().double().reshape(-1, HIDDEN).numpy())
    assert_within(loss.item(), want_loss, tolerance("gpu", "loss", name), what=name)
    _assert_grads((*got, None), (*want, None), name, f"teacher logits {name}")
    assert tiles == [64, 32]


def test_two_phase_switch_takes_the_row_chunk_path(tiles, monkeypatch):
    """``gpu._fused.TWO_PHASE = False`` (the benchmark's ``fused_rows``): the same Triton
    loss down the row-chunk path (no tile pass, a float32 V×H accumulator), both paths
    within the gpu rows of the float64 chain rule."""
    objective = (-5.0, 0.3, "kl", "pr", None, 1.0)
    alpha, lam, div, order, params, _ = objective
    h, w, b, th, tw, tb = _problem(16, torch.bfloat16)
    kw = dict(student_bias=b, teacher_bias=tb, backend="triton")
    want_loss, want = _chain_rule(h, w, b, th, tw, tb, np.full(ROWS, 1.0 / ROWS), objective)
    for two_phase, tile_passes in ((False, []), (True, [32] * 6)):
        monkeypatch.setattr(_fused, "TWO_PHASE", two_phase)
        with LiveBytes() as meter:
            loss = gpu.amid_fused_linear_loss(h, w, th, tw, alpha, lam, div, order, params, **kw)
            got = torch.autograd.grad(loss, (h, w, b))
        assert tiles == tile_passes
        accumulator = (tuple(w.shape), torch.float32) in meter.seen
        assert accumulator is not two_phase
        what = f"two_phase={two_phase}"
        assert_within(loss.item(), want_loss, tolerance("gpu", "loss", "bfloat16"), what=what)
        _assert_grads(got, want, "bfloat16", what)


def test_tiled_through_log_z_rows(tiles):
    """Rows whose entries reach the student only through log Z (tests/test_fidelity_sweeps.py's
    apart rows at α = 50: w is 0 in float32 where q ≫ p): phase 2's tile pass forms the
    through-Z term from phase 1's row sums, against the float64 chain rule. The student's
    logits are the hidden states themselves (W = I), so they are those rows exactly."""
    from test_fidelity_sweeps import apart_rows

    s64, t64 = apart_rows()
    v = s64.shape[-1]
    h = torch.tensor(s64, dtype=torch.float32, requires_grad=True)
    w = torch.eye(v, dtype=torch.float32, requires_grad=True)
    t_logits = torch.tensor(t64, dtype=torch.float32)
    for div, order, params in (("kl", "rq", {}), ("ab", "qr", {"alpha": 0.2, "beta": 0.7})):
        loss = gpu.amid_fused_linear_loss(h, w, None, None, 50.0, 0.5, div, order, params,
                                          teacher_logits=t_logits, reduction="sum",
                                          backend="triton")  # fmt: skip
        got = torch.autograd.grad(loss, (h, w))
        want_loss = amid_ref.amid_loss(s64, t64, 50.0, 0.5, div, order, params).sum()
        g = amid_ref.amid_grad(s64, t64, 50.0, 0.5, div, order, params)
        assert_within(loss.item(), want_loss, tolerance("gpu", "loss", "float32"), what=div)
        _assert_grads((got[0], None, None), (g, None, None), "float32", f"{div} through log Z")
        # ∂W = Gᵀ h with logits up to 100 in h: each entry within G's own bound (the grad
        # row, row-scaled) carried through h, not within the entry's (its terms cancel)
        tol = tolerance("gpu", "grad", "float32")
        g_bound = tol.rtol * np.abs(g) + tol.atol * np.maximum(
            1.0, np.abs(g).max(-1, keepdims=True)
        )
        bound = g_bound.T @ np.abs(s64)
        err = np.abs(got[1].double().numpy() - g.T @ s64)
        assert (err <= bound).all(), f"{div} ∂W: {(err / bound).max():.3g}× the bound"
    assert tiles == [v, v]


def test_tiled_all_rows_ignored_and_frozen_weight(tiles):
    """No labelled row: zero gradients (the tiles are skipped); a frozen weight takes the
    row-chunk path (no weight gradient to tile), a trainable one the tiled path."""
    h, w, b, th, tw, tb = _problem(13, torch.float32)
    none = torch.full((2, ROWS // 2), -100)
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, labels=none, student_bias=b,
                                      teacher_bias=tb, backend="triton")  # fmt: skip
    for g in torch.autograd.grad(loss, (h, w, b)):
        assert torch.all(g == 0)
    assert tiles == []
    w.requires_grad_(False)
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, backend="triton")
    torch.autograd.grad(loss, h)
    assert tiles == []
    w.requires_grad_(True)
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, backend="triton")
    torch.autograd.grad(loss, w)
    assert tiles == [32] * 6


def _largest_float32(seen):
    return max((math.prod(shape) for shape, dt in seen if dt == torch.float32), default=0)


def test_tiled_path_forms_no_float32_weight_sized_tensor(tiles):
    """bf16 weights: the tiled path's largest float32 tensor is a tile's accumulator (32·H),
    the row-chunk path's is the V×H weight gradient (the recorder sees it)."""
    h, w, b, th, tw, tb = _problem(14, torch.bfloat16)
    kw = dict(student_bias=b, teacher_bias=tb)
    with LiveBytes() as tiled:
        loss = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1, backend="triton", **kw)
        loss.backward()
    with LiveBytes() as rowwise:
        loss = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1, backend="torch", **kw)
        loss.backward()
    assert tiles == [32] * 6
    assert _largest_float32(rowwise.seen) >= VOCAB * HIDDEN  # the recorder catches it
    assert _largest_float32(tiled.seen) <= 32 * HIDDEN
    assert (tuple(w.shape), torch.bfloat16) in tiled.seen  # dW formed in the weight dtype


def _cuda_products(monkeypatch, meter: LiveBytes) -> None:
    """``torch.mm`` / ``torch.addmm`` with ``out_dtype`` as on CUDA, for the memory count:
    the product's float32 operands are the GEMM's registers there, so they are not counted
    (the CPU torch has no such overload and would convert the operands)."""
    real_mm = torch.mm

    def mm(a, b, *, out_dtype=None):
        if out_dtype is None:
            return real_mm(a, b)
        with meter.paused():
            out = real_mm(a.to(out_dtype), b.to(out_dtype))
        meter.count(out)
        return out

    def addmm(acc, a, b, *, out_dtype, out):
        assert out is acc
        with meter.paused():
            return acc.add_(real_mm(a.to(out_dtype), b.to(out_dtype)))

    monkeypatch.setattr(_fused, "_tensor_cores", lambda a: True)
    monkeypatch.setattr(_fused, "OUT_DTYPE_PRODUCTS", {})
    monkeypatch.setattr(torch, "mm", mm)
    monkeypatch.setattr(torch, "addmm", addmm)


def test_tiled_peak_memory_is_its_count(monkeypatch):
    """The two-phase path's peak extra memory is the count of docs/gpu.md (*Two-phase,
    vocabulary-tiled backward*), reached in phase 2: the weight and hidden-state gradients
    in the weight dtype, 84 bytes of row statistics a row and one tile's scratch (its
    student and teacher logits, the float32 tile × H accumulator), plus a few row vectors
    (flags, the tile's copy of the arg-maxima); below one bf16 (N, V) tensor, the bound of
    ``test_cuda_fused_peak_memory_is_weight_sized``. Each chunk's and each tile's buffers
    go before the next ones are formed.

    The CUDA target's shape (N = 8192, V = 128256, H = 4096, bf16) divided by 16, the
    chunk and tile elements by 256 (the same 16 rows of 8016 a chunk as 261 of 128256,
    tiles of 256 columns as of 4096); the Triton passes launch nothing (on CUDA a launch
    allocates no memory; the kernel's numbers are the other tests'), the products are
    CUDA's ``out_dtype`` ones, and :class:`LiveBytes` counts the storages the call makes."""
    k = 16
    n, v, hdim = 8192 // k, 128256 // k, 4096 // k
    monkeypatch.setattr(_fused, "_TRITON_FUSED_CHUNK_ELEMENTS", 2**25 // k**2)
    monkeypatch.setattr(_fused, "_VOCAB_TILE_ELEMENTS", 2**25 // k**2)
    monkeypatch.setattr(_fused, "_VOCAB_TILE_QUANTUM", 256 // k)
    monkeypatch.setattr(_engine, "_WARNED", set())
    for name in tk.PASSES.values():
        monkeypatch.setattr(tk, name, NoLaunch())
    tiles = []
    real = tk.gradient_tile
    monkeypatch.setattr(tk, "gradient_tile", lambda s, *a: tiles.append(s.shape) or real(s, *a))
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, hdim, generator=gen).bfloat16().requires_grad_()
    w = (0.02 * torch.randn(v, hdim, generator=gen)).bfloat16().requires_grad_()
    th = torch.randn(n, hdim, generator=gen).bfloat16()
    tw = (0.04 * torch.randn(v, hdim, generator=gen)).bfloat16()
    meter = LiveBytes()
    _cuda_products(monkeypatch, meter)
    with meter:
        gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, backend="triton").backward()
    chunk, tile = 2**25 // k**2 // v, _fused._vocab_tile(n, v)
    assert (chunk, tile) == (16, 256)
    assert [s[-1] for s in tiles] == [tile] * (v // tile) + [v % tile]  # the tiled path ran
    count = v * hdim * 2 + n * hdim * 2 + n * 84 + n * tile * 2 * 2 + tile * hdim * 4
    assert v * hdim * 2 <= meter.peak <= count + 32 * n, (meter.peak, count)
    assert meter.peak < n * v * 2


def test_tiled_bad_rows_are_named(tiles):
    """A NaN hidden state: the row is named after phase 1 (before any tile runs); a clean
    call afterwards takes the tiled path."""
    h, w, _b, th, tw, _tb = _problem(15, torch.bfloat16)
    bad = h.detach().clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        gpu.amid_fused_linear_loss(bad.requires_grad_(), w, th, tw, 0.0, 0.1, backend="triton")
    assert tiles == []
    torch.autograd.grad(gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, backend="triton"), w)


def test_tiled_falls_back_with_the_kernel(monkeypatch):
    """A Triton kernel that fails (a compiler error) warns once and the row-chunk path with
    the torch kernel computes the loss and gradients, equal to the torch backend's (to the
    float32 rows: the two runs split the rows into chunks differently)."""
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(tk, "triton_chunk", broken)
    h, w, _b, th, tw, _tb = _problem(16, torch.float32)
    with pytest.warns(RuntimeWarning, match="Triton AMiD kernel failed"):
        loss = gpu.amid_fused_linear_loss(h, w, th, tw, 0.5, 0.3, backend="triton")
        got = torch.autograd.grad(loss, (h, w))
    want_loss = gpu.amid_fused_linear_loss(h, w, th, tw, 0.5, 0.3, backend="torch")
    want = torch.autograd.grad(want_loss, (h, w))
    assert_within(loss.item(), want_loss.item(), tolerance("gpu", "loss", "float32"))
    _assert_grads((*got, None), (*[x.double().numpy() for x in want], None), "float32", "fallback")
