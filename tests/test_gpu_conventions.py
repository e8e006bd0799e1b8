"""Training conventions of the gpu losses, and autograd of the public helpers.

Reductions (``batchmean``), bool masks, ``ignore_index=None``, the causal label shift,
``temperature_scaling="T2"``, :class:`gpu.AMiDLoss` state, the refusal of double
backward, autograd of :func:`gpu.divergence` / :func:`gpu.log_alpha_mixture` (against
finite differences and against float64 textbook autograd, ``tests/_textbook.py``), and
:mod:`gpu.presets` against :mod:`amid_ref.presets`.
"""

from __future__ import annotations

import math
import re

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


# --- the loss modules hold an Objective ------------------------------------------------

#: The loss modules, each with options of its own that differ from their defaults.
MODULES = {
    "AMiDLoss": (gpu.AMiDLoss, {"reduction": "sum", "chunk_size": 3, "ignore_index": None}),
    "AMiDFusedLinearLoss": (gpu.AMiDFusedLinearLoss, {"reduction": "none", "shift_labels": True}),
    "VocabParallelAMiDLoss": (gpu.VocabParallelAMiDLoss, {"reduction": "sum", "chunk_size": 5}),
}

#: Keyword arguments as users write them (a divergence's defaults left out, one softcap for
#: both sides), one objective per divergence the gpu package offers, in the contract's order.
USER_KEYWORDS = [
    {"alpha": -5.0, "lam": 0.1},
    {"alpha": 0.5, "lam": 0.3, "divergence": "js", "order": "rq", "temperature": 2.0,
     "detach_assistant": True, "softcap": 30.0, "logit_scale": (2.0, None)},
    {"alpha": INF, "lam": 0.7, "leftover": "uniform", "vocab_alignment": "pad",
     "temperature_applies_to": "student"},
    *({"alpha": 1.0 - 1e-12, "lam": 0.4, "divergence": name, "div_params": dict(params)}
      for name, params in DIVS),
]  # fmt: skip


def _objective_bad_inputs():
    """The rows of the bad-input table that change only the objective's fields of a gpu
    call, with their values built as gpu receives them."""
    from _bad_inputs import BAD_INPUTS, _materialize

    from amid_ref.contract import objective_parameters

    for case in BAD_INPUTS:
        if case.function == "amid_loss" and "gpu" in case.only and not case.extra:
            if set(case.overrides) <= set(objective_parameters()):
                built = {k: _materialize(v, for_gpu=True) for k, v in case.overrides.items()}
                yield pytest.param(case, built, id=case.id)


def _outcome(fn):
    try:
        return fn(), None
    except (TypeError, ValueError) as err:
        return None, (type(err), str(err))


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("keywords", USER_KEYWORDS, ids=lambda k: k.get("divergence", "kl"))
def test_from_objective_equals_the_keyword_constructor(module, keywords):
    from amid_ref.contract import Objective

    cls, options = MODULES[module]
    objective = Objective.of(**keywords)
    by_keywords = cls(**keywords, **options)
    made = cls.from_objective(objective, **options)
    assert made.objective == by_keywords.objective == objective
    # the fused module's options are those of its configuration, an AMiDLoss
    own = [getattr(m, "config", m) for m in (made, by_keywords)]
    assert {k: getattr(own[0], k) for k in options} == {k: getattr(own[1], k) for k in options}
    for name, value in objective.keywords().items():
        got = getattr(made, name)
        assert (dict(got) if name == "div_params" else got) == value, name
    assert made.state_dict().keys() == by_keywords.state_dict().keys()
    for key, value in made.state_dict().items():
        assert value.dtype == torch.float64 and value.item() == by_keywords.state_dict()[key]
    assert repr(made) == repr(by_keywords)


def test_from_objective_refuses_what_is_not_an_objective_of_gpu():
    from amid_ref.contract import Objective

    for cls, options in MODULES.values():
        with pytest.raises(TypeError, match=r"objective must be an amid_ref\.contract\.Objective"):
            cls.from_objective({"alpha": 0.0, "lam": 0.1}, **options)
        with pytest.raises(TypeError, match=r"from_objective.*: lam"):
            cls.from_objective(Objective.of(0.0, 0.1), lam=0.2, **options)
        f = Objective.of(0.0, 0.1, "f", div_params={"f": np.log, "f_prime": np.reciprocal})
        with pytest.raises(ValueError, match="divergence 'f'"):
            cls.from_objective(f, **options)


@pytest.mark.parametrize("module", MODULES)
def test_objective_fields_assign_with_validation(module):
    from amid_ref.contract import Objective

    cls, options = MODULES[module]
    crit = cls(alpha=0.0, lam=0.1, **options)
    crit.lam = 0.3  # a schedule's step
    crit.alpha = -INF
    crit.softcap = 30.0
    want = Objective.of(-INF, 0.3, softcap=30.0)
    assert crit.objective == want
    assert (crit.alpha, crit.lam, crit.softcap) == (-INF, 0.3, (30.0, 30.0))
    crit.divergence = "js"  # its parameter takes the contract's default
    assert crit.div_params == {"beta": 0.5}
    with pytest.raises(TypeError):
        crit.div_params["beta"] = 0.2  # read-only: assign div_params, or a new objective
    crit.div_params = {"beta": 0.2}
    assert crit.objective.params == {"beta": 0.2}
    with pytest.raises(ValueError, match="alpha"):  # ab's parameters do not fit js
        crit.divergence = "ab"
    ab = Objective.of(0.5, 0.3, "ab", div_params={"alpha": 0.2, "beta": 0.7})
    crit.objective = ab  # the divergence and its parameters together
    assert crit.objective == ab and crit.divergence == "ab"
    for key, value in crit.state_dict().items():  # the buffers follow the objective
        assert value.item() == getattr(ab, key.rsplit(".", 1)[-1])
    with pytest.raises(TypeError, match="objective must be"):
        crit.objective = ab.keywords()
    assert crit.objective == ab


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case,built", list(_objective_bad_inputs()))
def test_objective_fields_refuse_as_the_contract_does(module, case, built):
    """A bad field is refused by the module, as assigned and as constructed, with the
    error of Objective.of (naming the parameter); an assignment that fails changes
    nothing."""
    from amid_ref.contract import Objective

    cls, options = MODULES[module]
    base = {"alpha": 0.5, "lam": 0.3}
    _, want = _outcome(lambda: Objective.of(**{**base, **built}, implementation="gpu"))
    if want is not None and case.exception is not None:  # the table's own word
        assert issubclass(want[0], case.exception) and re.search(case.match, want[1])
    assert _outcome(lambda: cls(**{**base, **built}, **options))[1] == want
    if len(built) == 1:
        crit = cls(**base, **options)
        before = crit.objective
        assert _outcome(lambda: setattr(crit, *next(iter(built.items()))))[1] == want
        if want is not None:
            assert crit.objective == before
            assert all(v.item() == getattr(before, k.rsplit(".", 1)[-1])
                       for k, v in crit.state_dict().items())  # fmt: skip


@pytest.mark.parametrize("module", ["AMiDLoss", "AMiDFusedLinearLoss"])
def test_module_checkpoint_and_dtype_keep_the_objective(module, tmp_path):
    cls, options = MODULES[module]
    crit = cls(alpha=1.0, lam=0.1, **options)
    crit.lam, crit.alpha = 0.35, -INF
    torch.save(crit.state_dict(), tmp_path / "loss.pt")
    fresh = cls(alpha=1.0, lam=0.1, **options)
    fresh.load_state_dict(torch.load(tmp_path / "loss.pt"))
    assert fresh.objective == crit.objective
    fresh.half()  # the held floats and the buffers stay exact
    assert fresh.lam == 0.35 and fresh.objective.lam == 0.35
    bad = {k: torch.tensor(1.5 if k.endswith("lam") else 0.0, dtype=torch.float64)
           for k in fresh.state_dict()}  # fmt: skip
    with pytest.raises(ValueError, match="lam must lie in"):
        fresh.load_state_dict(bad)  # refused before anything is loaded
    assert fresh.objective == crit.objective
    assert [v.item() for v in fresh.state_dict().values()] == [-INF, 0.35]


def test_module_forward_runs_its_objective():
    """The module's loss is gpu.amid_loss's with the objective's keywords and the options,
    and follows an assigned field; both are held to amid_ref in float64."""
    s_np, t_np = _data(9, (2, 4, 7))
    s, t = torch.tensor(s_np), torch.tensor(t_np)
    crit = gpu.AMiDLoss(alpha=-5.0, lam=0.1, divergence="js", reduction="none")
    crit.lam = 0.6
    want = amid_ref.amid_loss(s_np, t_np, -5.0, 0.6, "js")
    assert_within(crit(s, t).numpy(), want, TOL_LOSS)
    kwargs = crit._loss_kwargs()
    assert kwargs["lam"] == 0.6 and kwargs["reduction"] == "none"
    assert torch.equal(gpu.amid_loss(s, t, **kwargs), crit(s, t))
