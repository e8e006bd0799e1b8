"""The fused lm_head + AMiD loss (:func:`gpu.amid_fused_linear_loss`) against two oracles.

* ``linear`` + :func:`gpu.amid_loss` on the materialized logits (the unfused path, itself
  held to :mod:`amid_ref` by tests/test_gpu.py): same loss and same parameter gradients,
  fp64 to 1e-12, fp32/bf16 to the ``"gpu"`` rows of the tolerance table;
* an unfused reference written here from the textbook formulas (softmaxes, the α-mean
  ``(λa^β + (1−λ)b^β)^(1/β)``, the divergences on probabilities) in float64 and
  differentiated by torch autograd: the hidden-state, weight and bias gradients.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _textbook import textbook_loss  # noqa: E402

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref._specs import ORDERS, SPECS  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

INF = math.inf
#: One representative parameter set per divergence the gpu package offers (the contract's).
DIVERGENCES = tuple(
    (name, spec.typical_params) for name, spec in SPECS.items() if spec.offered_by("gpu")
)
DIV_IDS = [d for d, _ in DIVERGENCES]
#: (α, λ) pairs per (divergence, order): the α-mean's regimes and both endpoints of λ.
SETTINGS = ((-5.0, 0.3), (0.5, 0.6), (1.0, 0.4), (3.0, 0.2), (-INF, 0.5), (0.0, 0.0), (0.0, 1.0))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _problem(seed, n=6, hdim=5, vocab=17, ht=4, dtype=torch.float64, bias=True):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(2, n // 2, hdim, generator=gen, dtype=torch.float64)
    w = torch.randn(vocab, hdim, generator=gen, dtype=torch.float64) * 0.7
    b = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.3 if bias else None
    th = torch.randn(2, n // 2, ht, generator=gen, dtype=torch.float64)
    tw = torch.randn(vocab, ht, generator=gen, dtype=torch.float64)
    tb = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.3 if bias else None
    cast = [None if x is None else x.to(dtype) for x in (h, w, b, th, tw, tb)]
    return [None if x is None else x.requires_grad_(i < 3) for i, x in enumerate(cast)]


def _grads(loss, xs, upstream=None):
    """Gradients of ``loss`` w.r.t. ``xs`` (zeros where it does not depend on them)."""
    xs = [x for x in xs if x is not None]
    if not loss.requires_grad:  # e.g. D(p‖r) at λ = 1: r = p, no path to the student
        return [torch.zeros_like(x) for x in xs]
    return torch.autograd.grad(loss, xs, upstream, allow_unused=True, materialize_grads=True)


# --- equality with linear + amid_loss, and the textbook autograd gradients -----------------


@pytest.mark.parametrize("order", tuple(ORDERS))
@pytest.mark.parametrize("div,params", DIVERGENCES, ids=DIV_IDS)
def test_float64_equals_unfused_and_textbook_autograd(div, params, order):
    h, w, b, th, tw, tb = _problem(3)
    tol_loss, tol_grad = tolerance("gpu", "loss"), tolerance("gpu", "grad")  # vs textbook
    tol_fused_loss, tol_fused_grad = tolerance("fused", "loss"), tolerance("fused", "grad")
    for alpha, lam in SETTINGS:
        detach = alpha == 1.0  # TAID-style detached assistant at α = 1
        kw = dict(temperature=1.3, detach_assistant=detach, chunk_size=2, reduction="sum")
        what = f"{div} {order} alpha={alpha} lam={lam}"
        fused = gpu.amid_fused_linear_loss(
            h, w, th, tw, alpha, lam, div, order, params, student_bias=b, teacher_bias=tb, **kw
        )
        t_logits = F.linear(th, tw, tb)
        unfused = gpu.amid_loss(F.linear(h, w, b), t_logits, alpha, lam, div, order, params, **kw)
        textbook = textbook_loss(
            F.linear(h, w, b), t_logits, alpha, lam, div, order, params, 1.3, detach
        )
        assert_within(fused.item(), unfused.item(), tol_fused_loss, what=what)
        assert_within(fused.item(), textbook.sum().item(), tol_loss, what=what + " textbook")
        g_fused = _grads(fused, (h, w, b))
        g_unfused = _grads(unfused, (h, w, b))
        g_text = _grads(textbook.sum(), (h, w, b))
        for name, gf, gu, gt in zip(
            ("hidden", "weight", "bias"), g_fused, g_unfused, g_text, strict=True
        ):
            assert_within(gf.numpy(), gu.numpy(), tol_fused_grad, what=f"{what} {name} vs unfused")
            assert_within(gf.numpy(), gt.numpy(), tol_grad, what=f"{what} {name} vs autograd")


def test_textbook_reference_agrees_with_amid_ref():
    """The test's own reference is itself checked against the float64 library."""
    h, w, b, th, tw, tb = _problem(4)
    s = F.linear(h, w, b).detach()
    t = F.linear(th, tw, tb)
    for div, params in DIVERGENCES:
        for order in ORDERS:
            got = textbook_loss(s, t, -5.0, 0.3, div, order, params, 1.0, False)
            want = amid_ref.amid_loss(s.numpy(), t.detach().numpy(), -5.0, 0.3, div, order, params)
            assert_within(got.detach().numpy(), want, tolerance("gpu", "loss"), what=div + order)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"]
)
@pytest.mark.parametrize("div,params", DIVERGENCES, ids=DIV_IDS)
def test_low_precision_equals_unfused(div, params, dtype):
    """fp32 and bf16 weights and hidden states. The loss equals ``linear`` + ``amid_loss``
    (the same rounded logits) to the "gpu" loss row. The gradients are held to float64:
    the chain rule ``G·W``, ``Gᵀh``, ``ΣG`` with G from ``amid_loss`` in float64 on those
    same rounded logits and the rounded parameters, to the "gpu" grad row."""
    h, w, b, th, tw, tb = _problem(5, n=8, hdim=16, vocab=96, ht=12, dtype=dtype)
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    h64, w64 = h.detach().double(), w.detach().double()
    for order in ORDERS:
        kw = dict(chunk_size=3)
        fused = gpu.amid_fused_linear_loss(
            h, w, th, tw, -5.0, 0.3, div, order, params, student_bias=b, teacher_bias=tb, **kw
        )
        s_low, t_low = F.linear(h, w, b).detach(), F.linear(th, tw, tb)
        unfused = gpu.amid_loss(s_low, t_low, -5.0, 0.3, div, order, params, **kw)
        assert fused.dtype == torch.float32
        what = f"{div} {order} {name}"
        assert_within(fused.item(), unfused.item(), tolerance("gpu", "loss", name), what=what)
        s64 = s_low.double().requires_grad_()
        loss64 = gpu.amid_loss(s64, t_low.double(), -5.0, 0.3, div, order, params)
        (g64,) = _grads(loss64, (s64,))
        g64 = g64.reshape(-1, g64.shape[-1])
        want = (
            (g64 @ w64).reshape(h.shape),
            g64.T @ h64.reshape(-1, h.shape[-1]),
            g64.sum(0),
        )
        for gf, gw_, x in zip(_grads(fused, (h, w, b)), want, (h, w, b), strict=True):
            assert gf.dtype == x.dtype
            gf, gw_ = gf.double().numpy(), gw_.numpy()
            # fp16 rounds beyond 65520 to inf: a true gradient beyond it must come back as a
            # signed inf (entries within 1% of the boundary may round either way: skipped)
            top = float(torch.finfo(dtype).max) + 16.0 if dtype == torch.float16 else math.inf
            over, near = np.abs(gw_) > 1.01 * top, np.abs(gw_) > 0.99 * top
            assert np.all(np.isinf(gf[over]) & (np.sign(gf[over]) == np.sign(gw_[over])))
            assert np.all(np.isfinite(gf[~near]))
            gf, gw_ = np.where(near, 0.0, gf), np.where(near, 0.0, gw_)
            scale = max(1.0, float(np.abs(gw_).max()))  # row-scaled as in tests/test_gpu.py
            assert_within(gf / scale, gw_ / scale, tolerance("gpu", "grad", name), what=what)


# --- labels, shift, precomputed teachers, reductions ------------------------------------------


def test_labels_shift_and_ignore_index():
    h, w, b, th, tw, tb = _problem(6, n=10)
    labels = torch.tensor([[5, -100, 3, 4, -100], [-100, 1, 2, 3, 9]])
    s_logits, t_logits = F.linear(h, w, b), F.linear(th, tw, tb)
    # shift_labels=True: position t counts iff label t+1 does; the last never counts.
    valid = torch.zeros(2, 5, dtype=torch.bool)
    valid[:, :-1] = labels[:, 1:] != -100
    fused = gpu.amid_fused_linear_loss(
        h, w, th, tw, 0.0, 0.1, student_bias=b, teacher_bias=tb, labels=labels, shift_labels=True
    )
    textbook = textbook_loss(s_logits, t_logits, 0.0, 0.1, "kl", "pr", {}, 1.0, False)
    want = textbook[valid].mean()
    assert_within(fused.item(), want.item(), tolerance("gpu", "loss"), what="shifted mean")
    for gf, gt in zip(_grads(fused, (h, w, b)), _grads(want, (h, w, b)), strict=True):
        assert_within(gf.numpy(), gt.numpy(), tolerance("gpu", "grad"), what="shifted grads")
    (gh,) = torch.autograd.grad(
        gpu.amid_fused_linear_loss(
            h, w, th, tw, 0.0, 0.1, labels=labels, shift_labels=True, reduction="sum"
        ),
        h,
    )
    assert torch.all(gh[~valid] == 0) and torch.all(gh[valid].abs().sum(-1) > 0)
    # the aligned convention (default) and a bool mask select the same rows
    aligned = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, labels=torch.where(valid, 1, -100))
    masked = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, labels=valid)
    unmasked = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1, labels=labels, ignore_index=None)
    plain = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1)
    assert aligned.item() == masked.item()
    assert unmasked.item() == plain.item()
    want_aligned = textbook_loss(F.linear(h, w), F.linear(th, tw), 0.0, 0.1, "kl", "pr", {}, 1, 0)
    assert_within(aligned.item(), want_aligned[valid].mean().item(), tolerance("gpu", "loss"))


def test_precomputed_teacher_logits_and_log_probs():
    h, w, _b, th, tw, tb = _problem(7)
    t_logits = F.linear(th, tw, tb).detach()
    ref = gpu.amid_fused_linear_loss(h, w, th, tw, -1.0, 0.5, "js", teacher_bias=tb)
    from_logits = gpu.amid_fused_linear_loss(
        h, w, None, None, -1.0, 0.5, "js", teacher_logits=t_logits
    )
    from_logp = gpu.amid_fused_linear_loss(
        h, w, None, None, -1.0, 0.5, "js", teacher_logits=t_logits.log_softmax(-1)
    )
    assert_within(from_logits.item(), ref.item(), tolerance("gpu", "loss"))
    assert_within(from_logp.item(), ref.item(), tolerance("gpu", "loss"))
    for ga, gb_ in zip(_grads(from_logp, (h, w)), _grads(ref, (h, w)), strict=True):
        assert_within(ga.numpy(), gb_.numpy(), tolerance("gpu", "grad"))


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
def test_reductions_upstream_and_temperature_scaling(reduction):
    h, w, b, th, tw, _tb = _problem(8)
    labels = torch.tensor([[1, -100, 2], [3, 4, -100]])
    kw = dict(labels=labels, reduction=reduction, temperature=2.0, temperature_scaling="T2")
    fused = gpu.amid_fused_linear_loss(h, w, th, tw, 0.5, 0.3, "kl", "rq", student_bias=b, **kw)
    unfused = gpu.amid_loss(F.linear(h, w, b), F.linear(th, tw), 0.5, 0.3, "kl", "rq", **kw)
    upstream = torch.tensor([[0.5, 7.0, -2.0], [1.5, 0.0, 3.0]], dtype=torch.float64)
    up = upstream if reduction == "none" else torch.tensor(2.5, dtype=torch.float64)
    assert fused.shape == unfused.shape
    assert_within(fused.detach().numpy(), unfused.detach().numpy(), tolerance("gpu", "loss"))
    gf = torch.autograd.grad(fused, (h, w, b), up)
    gu = torch.autograd.grad(unfused, (h, w, b), up)
    for a, c in zip(gf, gu, strict=True):
        assert_within(a.numpy(), c.numpy(), tolerance("gpu", "grad"), what=reduction)
    plain = gpu.amid_loss(F.linear(h, w, b), F.linear(th, tw), 0.5, 0.3, "kl", "rq",
                          labels=labels, reduction=reduction, temperature=2.0)  # fmt: skip
    assert_within(unfused.detach().numpy(), 4.0 * plain.detach().numpy(), tolerance("gpu", "loss"))


def test_frozen_weight_retain_graph_and_no_grad():
    h, w, _b, th, tw, _tb = _problem(9)
    w = w.detach()  # a frozen lm_head: only the hidden states get a gradient
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1, chunk_size=4)
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    loss.backward()  # recomputed from the saved inputs
    assert_within(h.grad.numpy(), 2.0 * first.numpy(), tolerance("gpu", "grad"))
    assert w.grad is None and th.grad is None
    with torch.no_grad():  # the same chunks: F.linear's rounding depends on the rows per call
        value = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1, chunk_size=4)
    assert not value.requires_grad and value.item() == loss.item()


def test_create_graph_is_refused():
    h, w, _b, th, tw, _tb = _problem(10)
    loss = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(loss, h, create_graph=True)


def test_module_state_and_repr():
    crit = gpu.AMiDFusedLinearLoss(alpha=0.0, lam=0.1, shift_labels=True)
    crit.lam = 0.25
    assert crit.lam == 0.25 and crit.state_dict()["config.lam"].item() == 0.25
    other = gpu.AMiDFusedLinearLoss(alpha=-5.0, lam=0.9, shift_labels=True)
    other.load_state_dict(crit.state_dict())
    assert (other.alpha, other.lam) == (0.0, 0.25)
    h, w, b, th, tw, tb = _problem(11)
    labels = torch.tensor([[1, 2, 3], [4, -100, -100]])
    got = other(h, w, th, tw, labels, student_bias=b, teacher_bias=tb)
    want = gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.25, student_bias=b, teacher_bias=tb,
                                      labels=labels, shift_labels=True)  # fmt: skip
    assert got.item() == want.item()


@pytest.mark.parametrize(
    "change,exc,match",
    [
        ({"student_weight": torch.zeros(17, 4, dtype=torch.float64)}, ValueError, "hidden size"),
        ({"student_weight": torch.zeros(17, 5)}, TypeError, "dtype"),
        ({"teacher_weight": torch.zeros(18, 4, dtype=torch.float64)}, ValueError, "vocabulary"),
        ({"student_bias": torch.zeros(16, dtype=torch.float64)}, ValueError, "student_bias"),
        ({"teacher_hidden": torch.zeros(3, 3, 4, dtype=torch.float64)}, ValueError, "leading"),
        ({"teacher_logits": torch.zeros(2, 3, 17, dtype=torch.float64)}, ValueError, "not both"),
        ({"teacher_hidden": None}, ValueError, "together"),
        ({"lam": 2.0}, ValueError, "lam"),
        ({"divergence": "kld"}, ValueError, "divergence"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"temperature_scaling": "T3"}, ValueError, "temperature_scaling"),
        ({"shift_labels": True}, ValueError, "shift_labels"),
        ({"labels": torch.zeros(2, 4, dtype=torch.long)}, ValueError, "labels"),
    ],
)
def test_error_contract(change, exc, match):
    h, w, b, th, tw, _tb = _problem(12)
    args = dict(student_hidden=h, student_weight=w, teacher_hidden=th, teacher_weight=tw,
                alpha=-5.0, lam=0.1, student_bias=b)  # fmt: skip
    args.update(change)
    with pytest.raises(exc, match=match):
        gpu.amid_fused_linear_loss(**args)


def test_bad_values_name_the_rows():
    h, w, _b, th, tw, _tb = _problem(13)
    th = th.clone()
    th[1, 2, 0] = math.nan
    with pytest.raises(ValueError, match=r"teacher.*\(1, 2\)"):
        gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1)


# --- CUDA copies (skipped without CUDA by tests/conftest.py) ---------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_cuda_fused_matches_float64_chain_rule(dtype):
    name = "float32" if dtype == torch.float32 else "bfloat16"
    h, w, b, th, tw, tb = _problem(14, n=64, hdim=64, vocab=32000, ht=48, dtype=dtype)
    h, w, b = (x.detach().cuda().requires_grad_() for x in (h, w, b))
    th, tw, tb = (x.cuda() for x in (th, tw, tb))
    for div, params in DIVERGENCES[:3]:
        fused = gpu.amid_fused_linear_loss(h, w, th, tw, -5.0, 0.1, div, "pr", params,
                                           student_bias=b, teacher_bias=tb)  # fmt: skip
        s_low, t_low = F.linear(h, w, b).detach(), F.linear(th, tw, tb)
        s64 = s_low.double().cpu().requires_grad_()
        loss64 = gpu.amid_loss(s64, t_low.double().cpu(), -5.0, 0.1, div, "pr", params)
        assert_within(fused.item(), loss64.item(), tolerance("gpu", "loss", name), what=div)
        (g64,) = torch.autograd.grad(loss64, s64)
        g64 = g64.reshape(-1, g64.shape[-1])
        gh, gw = _grads(fused, (h, w))
        want_h = g64 @ w.detach().double().cpu()
        want_w = g64.T @ h.detach().double().cpu().reshape(-1, h.shape[-1])
        for got, want in ((gh.reshape(want_h.shape), want_h), (gw, want_w)):
            got = got.double().cpu().numpy()
            scale = max(1.0, float(want.abs().max()))
            assert_within(got / scale, want.numpy() / scale, tolerance("gpu", "grad", name))


@pytest.mark.gpu
def test_cuda_fused_peak_memory_is_weight_sized():
    """bf16, B·T = 8192, V = 128256, H = 4096: peak extra ≤ the float32 weight gradient and
    its bf16 cast + the hidden gradient + O(chunk·V) scratch; no (N, V) tensor."""
    rows, vocab, hidden = 8192, 128256, 4096
    gen = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(rows, hidden, device="cuda", generator=gen).bfloat16().requires_grad_()
    w = (0.02 * torch.randn(vocab, hidden, device="cuda", generator=gen)).bfloat16()
    w.requires_grad_()
    th = torch.randn(rows, hidden, device="cuda", generator=gen).bfloat16()
    tw = (0.04 * torch.randn(vocab, hidden, device="cuda", generator=gen)).bfloat16()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gpu.amid_fused_linear_loss(h, w, th, tw, 0.0, 0.1).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    chunk = gpu.default_chunk_size(vocab, "cuda")
    bound = vocab * hidden * (4 + 2) + rows * hidden * 2 * 2 + 24 * chunk * vocab * 4
    assert extra <= bound, (extra, bound)
    assert extra < rows * vocab * 2  # less than one bf16 (N, V) tensor


def test_weight_gradient_products_fall_back_by_torch_version(monkeypatch):
    """The float32-output products of bf16 operands (CUDA), as torch versions offer them:
    ``addmm`` with ``out_dtype`` into the float32 accumulator; where that overload refuses
    a float32 addend, ``mm`` with ``out_dtype`` and an add; where neither exists, the
    operands in float32 with one warning. Each refusal is remembered; an out-of-memory is
    raised, not taken for a refusal. Run on the CPU with the CUDA route forced."""
    import warnings

    from gpu import _engine, _fused

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(5, 7, generator=gen).to(torch.bfloat16)
    b = torch.randn(7, 3, generator=gen).to(torch.bfloat16)
    want = a.double() @ b.double() + 1.0
    monkeypatch.setattr(_fused, "_tensor_cores", lambda t: True)
    monkeypatch.setattr(_fused, "OUT_DTYPE_PRODUCTS", {})
    monkeypatch.setattr(_engine, "_WARNED", set())
    real_mm = torch.mm

    def refuse(*args, **kwargs):
        raise RuntimeError("self and mat2 must have the same dtype")

    def mm(x, y, out_dtype=None):  # what CUDA's mm.dtype computes
        return real_mm(x.to(out_dtype), y.to(out_dtype)) if out_dtype else real_mm(x, y)

    monkeypatch.setattr(torch, "addmm", refuse)
    monkeypatch.setattr(torch, "mm", mm)
    acc = torch.ones(5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fused._addmm_(acc, a, b)
        _fused._addmm_(acc, a, b)
    assert _fused.OUT_DTYPE_PRODUCTS == {"addmm": False, "mm": True}
    assert torch.allclose(acc.double(), 2 * want - 1.0, rtol=1e-6, atol=1e-6)

    monkeypatch.setattr(torch, "mm", refuse)  # neither: float32 operands, said once
    _fused.OUT_DTYPE_PRODUCTS.clear()
    acc = torch.ones(5, 3)
    with pytest.warns(RuntimeWarning, match="float32, many times slower"):
        _fused._addmm_(acc, a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fused._addmm_(acc, a, b)
    assert _fused.OUT_DTYPE_PRODUCTS == {"addmm": False, "mm": False}
    assert torch.allclose(acc.double(), 2 * want - 1.0, rtol=1e-6, atol=1e-6)
    assert _fused._mm(a, b, torch.float32).dtype == torch.float32  # its own fallback

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "addmm", out_of_memory)
    _fused.OUT_DTYPE_PRODUCTS.clear()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _fused._addmm_(torch.ones(5, 3), a, b)
    assert "addmm" not in _fused.OUT_DTYPE_PRODUCTS
