"""Training conventions of the gpu losses, and autograd of the public helpers.

Reductions (``batchmean``), bool masks, ``ignore_index=None``, the causal label shift,
``temperature_scaling="T2"``, :class:`gpu.AMiDLoss` state, the refusal of double
backward, autograd of :func:`gpu.divergence` / :func:`gpu.log_alpha_mixture` (against
finite differences and against float64 textbook autograd, ``tests/_textbook.py``), and
:mod:`gpu.presets` against :mod:`amid_ref.presets`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _textbook import divergence as textbook_divergence  # noqa: E402
from _textbook import mixture as textbook_mixture  # noqa: E402

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref._specs import SPECS  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

INF = math.inf
TOL_LOSS = tolerance("gpu", "loss")
TOL_GRAD = tolerance("gpu", "grad")


def _data(seed=0, shape=(2, 5, 13)):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, shape), rng.normal(0, 1.5, shape)


def test_batchmean_is_the_per_token_mean():
    s_np, t_np = _data()
    labels = torch.tensor([[1, -100, 2, 3, -100], [4, 5, -100, -100, 6]])
    s, t = torch.tensor(s_np), torch.tensor(t_np)
    bm = gpu.amid_loss(s, t, 0.0, 0.1, labels=labels, reduction="batchmean")
    valid = (labels != -100).numpy()
    want = amid_ref.amid_loss(s_np[valid], t_np[valid], 0.0, 0.1).sum() / valid.sum()
    assert_within(bm.item(), want, TOL_LOSS)
    assert gpu.AMiDLoss(0.0, 0.1, reduction="batchmean").reduction == "mean"


def test_bool_mask_and_ignore_index_none():
    s_np, t_np = _data(1)
    s, t = torch.tensor(s_np), torch.tensor(t_np)
    mask = torch.tensor([[True, False, True, True, False], [False, True, True, False, True]])
    got = gpu.amid_loss(s, t, -5.0, 0.1, labels=mask, reduction="none")
    want = amid_ref.amid_loss(s_np, t_np, -5.0, 0.1) * mask.numpy()
    assert_within(got.numpy(), want, TOL_LOSS)
    labels = torch.full((2, 5), -100)
    everything = gpu.amid_loss(s, t, -5.0, 0.1, labels=labels, ignore_index=None)
    assert_within(everything.item(), amid_ref.amid_loss(s_np, t_np, -5.0, 0.1).mean(), TOL_LOSS)


def test_shift_labels_masks_exactly_the_next_label():
    """HF causal-LM labels: position t counts iff labels[t+1] != -100; the last never."""
    s_np, t_np = _data(2)
    labels = torch.tensor([[-100, -100, 7, 8, 9], [3, 4, -100, 5, -100]])
    s = torch.tensor(s_np, requires_grad=True)
    loss = gpu.amid_loss(s, torch.tensor(t_np), 0.0, 0.1, labels=labels, shift_labels=True)
    loss.backward()
    want_valid = np.zeros((2, 5), dtype=bool)
    want_valid[:, :-1] = labels[:, 1:].numpy() != -100
    assert np.array_equal(s.grad.abs().sum(-1).numpy() > 0, want_valid)
    want = amid_ref.amid_loss(s_np[want_valid], t_np[want_valid], 0.0, 0.1).mean()
    assert_within(loss.item(), want, TOL_LOSS)
    with pytest.raises(ValueError, match="shift_labels"):
        gpu.amid_loss(s, torch.tensor(t_np), 0.0, 0.1, shift_labels=True)
    with pytest.raises(TypeError, match="shift_labels"):
        gpu.amid_loss(s, torch.tensor(t_np), 0.0, 0.1, labels=labels, shift_labels=1)


def test_temperature_scaling_t2():
    s_np, t_np = _data(3)
    s = torch.tensor(s_np, requires_grad=True)
    t = torch.tensor(t_np)
    scaled = gpu.amid_loss(s, t, -1.0, 0.5, "js", temperature=2.0, temperature_scaling="T2")
    (g_scaled,) = torch.autograd.grad(scaled, s)
    plain = gpu.amid_loss(s, t, -1.0, 0.5, "js", temperature=2.0)
    (g_plain,) = torch.autograd.grad(plain, s)
    want = amid_ref.amid_loss(s_np, t_np, -1.0, 0.5, "js", temperature=2.0).mean()
    assert_within(scaled.item(), 4.0 * want, TOL_LOSS)
    assert_within(g_scaled.numpy(), 4.0 * g_plain.numpy(), TOL_GRAD)
    with torch.no_grad():
        nograd = gpu.amid_loss(s, t, -1.0, 0.5, "js", temperature=2.0, temperature_scaling="T2")
    assert nograd.item() == scaled.item()
    with pytest.raises(ValueError, match="temperature_scaling"):
        gpu.amid_loss(s, t, -1.0, 0.5, temperature_scaling="T^2")


def test_module_state_dict_checkpoints_alpha_and_lambda(tmp_path):
    crit = gpu.AMiDLoss(alpha=1.0, lam=0.1, order="rq", detach_assistant=True)
    crit.lam = 0.35
    crit.alpha = -INF
    torch.save(crit.state_dict(), tmp_path / "loss.pt")
    fresh = gpu.AMiDLoss(alpha=1.0, lam=0.1, order="rq", detach_assistant=True)
    fresh.load_state_dict(torch.load(tmp_path / "loss.pt"))
    assert (fresh.alpha, fresh.lam) == (-INF, 0.35)
    assert isinstance(fresh.lam, float)
    fresh.to(torch.bfloat16)  # the scalars keep their exact float64 values
    assert fresh.lam == 0.35 and fresh.state_dict()["lam"].dtype == torch.float64
    with pytest.raises(ValueError, match="lam"):
        fresh.lam = 1.5
    with pytest.raises(ValueError, match="alpha"):
        fresh.alpha = math.nan
    assert fresh.lam == 0.35


def test_double_backward_is_refused_not_zero():
    s_np, t_np = _data(4)
    s = torch.tensor(s_np, requires_grad=True)
    t = torch.tensor(t_np)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(gpu.amid_loss(s, t, -5.0, 0.1), s, create_graph=True)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.gradgradcheck(
            lambda x: gpu.amid_loss(x, t, -5.0, 0.1, reduction="none"), (s,)
        )
    lp = torch.tensor(t_np).log_softmax(-1).requires_grad_()
    for f in (
        lambda: gpu.divergence(lp, lp.detach().flip(-1), "kl", log_input=True).sum(),
        lambda: gpu.log_alpha_mixture(lp, lp.detach().flip(-1), -5.0, 0.1).sum(),
    ):
        with pytest.raises(RuntimeError, match="create_graph"):
            torch.autograd.grad(f(), lp, create_graph=True)


#: One representative parameter set per divergence the gpu package offers (the contract's).
DIVS = tuple((name, spec.typical_params) for name, spec in SPECS.items() if spec.offered_by("gpu"))


@pytest.mark.parametrize("div,params", DIVS, ids=[d for d, _ in DIVS])
def test_divergence_autograd_matches_textbook(div, params):
    s_np, t_np = _data(5, (3, 11))
    za = torch.tensor(t_np, requires_grad=True)
    zb = torch.tensor(s_np, requires_grad=True)
    got = gpu.divergence(za.log_softmax(-1), zb.log_softmax(-1), div, log_input=True, **params)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    g_got = torch.autograd.grad((got * w).sum(), (za, zb))
    want = textbook_divergence(za.softmax(-1), zb.softmax(-1), div, params)
    assert_within(got.detach().numpy(), want.detach().numpy(), TOL_LOSS, what=div)
    g_want = torch.autograd.grad((want * w).sum(), (za, zb))
    for a, b in zip(g_got, g_want, strict=True):
        assert_within(a.numpy(), b.numpy(), TOL_GRAD, what=div)
    # probabilities as inputs: through softmax, same gradient
    via_p = gpu.divergence(za.softmax(-1), zb.softmax(-1), div, **params)
    for a, b in zip(torch.autograd.grad((via_p * w).sum(), (za, zb)), g_want, strict=True):
        assert_within(a.numpy(), b.numpy(), TOL_GRAD, what=div + " (probabilities)")


def test_divergence_gradient_at_zero_probabilities_is_finite():
    a = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64, requires_grad=True)
    gpu.divergence(a, b, "kl").sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad[0, 2] == 0
    assert torch.isfinite(b.grad).all()


@pytest.mark.parametrize("alpha,lam", [(-5.0, 0.3), (0.5, 0.6), (1.0, 0.4), (3.0, 0.2),
                                       (-INF, 0.5), (0.0, 0.0), (0.0, 1.0)])  # fmt: skip
def test_log_alpha_mixture_autograd(alpha, lam):
    s_np, t_np = _data(6, (3, 9))
    zp = torch.tensor(t_np, requires_grad=True)
    zq = torch.tensor(s_np, requires_grad=True)
    got = gpu.log_alpha_mixture(zp.log_softmax(-1), zq.log_softmax(-1), alpha, lam)
    up = torch.tensor(np.random.default_rng(7).normal(size=(3, 9)))
    g_got = torch.autograd.grad((got * up).sum(), (zp, zq))
    want = textbook_mixture(zp.softmax(-1), zq.softmax(-1), alpha, lam).log()
    assert_within(got.detach().numpy(), want.detach().numpy(), TOL_LOSS)
    g_want = torch.autograd.grad((want * up).sum(), (zp, zq), allow_unused=True,
                                 materialize_grads=True)  # fmt: skip
    for a, b in zip(g_got, g_want, strict=True):
        assert_within(a.numpy(), b.numpy(), TOL_GRAD, what=f"alpha={alpha} lam={lam}")
    # finite differences on free (unnormalized) log inputs, with a masked token
    lp = torch.tensor(t_np[:2, :6], requires_grad=True)
    lq = torch.tensor(s_np[:2, :6], requires_grad=True)
    lp.data[0, -1] = -INF
    assert torch.autograd.gradcheck(
        lambda x, y: gpu.log_alpha_mixture(x, y, alpha, lam).nan_to_num(neginf=0.0), (lp, lq)
    )


def test_presets_match_the_reference():
    s_np, t_np = _data(8, (4, 21))
    s, t = torch.tensor(s_np, requires_grad=True), torch.tensor(t_np)
    for name, overrides in (("taid", {"t": 0.3}), ("gkd_jsd", {"beta": 0.2}), ("kd", {}),
                            ("rkl", {}), ("abkd", {}), ("distillm_skl", {})):  # fmt: skip
        ours = gpu.presets.get(name, **overrides)
        ref = amid_ref.presets.get(name, **overrides)
        assert ours.preset is ref or ours.preset == ref
        loss = ours.loss(s, t, reduction="none")
        assert_within(loss.detach().numpy(), ref.loss(s_np, t_np), TOL_LOSS, what=name)
        (g,) = torch.autograd.grad(loss.sum(), s)
        assert_within(g.numpy(), ref.grad(s_np, t_np), TOL_GRAD, what=name + " grad")
    assert gpu.presets.PRESETS is amid_ref.presets.PRESETS
    with pytest.raises(ValueError, match="unknown preset"):
        gpu.presets.get("taid2")
    h = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(21, 6, dtype=torch.float64)
    fused = gpu.presets.get("gkd_jsd", beta=0.2).fused_loss(h, w, teacher_logits=t)
    unfused = gpu.presets.get("gkd_jsd", beta=0.2).loss(h @ w.T, t)
    assert_within(fused.item(), unfused.item(), TOL_LOSS)


@pytest.mark.parametrize(
    "module", ["gpu._loss", "gpu._fused", "gpu._mixture", "gpu._divergences", "gpu.presets"]
)
def test_gpu_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
