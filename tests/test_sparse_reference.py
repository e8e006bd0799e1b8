"""Sparse (top-k) teachers, vocabulary alignment and logit transforms: amid_ref (float64)
against the mpmath oracle amid_ref.precise, for every divergence × order × leftover policy.

The grids follow the contract: α including ±inf and 1 ± 1e-12, λ ∈ {0, 1e-15, 0.5, 1},
k ∈ {1, 2, V−1, V}, the leftover ε from 0 to 1 − 1e-12, padded vocabularies, −inf entries
and softcaps. To stay fast (small V, one row per case) the grids are walked diagonally: each
(divergence, order, policy) triple meets every α, and the other axes rotate with it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amid_ref import amid_grad, amid_loss, precise, presets
from amid_ref._specs import LEFTOVER_POLICIES, ORDERS, SPECS
from amid_ref.tolerances import (
    SPARSE_CONDITIONING_BELOW,
    SPARSE_LOGPROB_ROUNDING_ULPS,
    assert_within,
    tolerance,
)

V = 6
ALPHAS = (-np.inf, -5.0, -1.0, 0.0, 1.0 - 1e-12, 1.0, 1.0 + 1e-12, 3.0, np.inf)
LAMS = (0.0, 1e-15, 0.5, 1.0)
KS = (1, 2, V - 1, V)
EPSILONS = (0.0, 1e-12, 0.3, 1.0 - 1e-12)
SOFTCAPS = (None, (2.0, None), None, (0.5, None))
DIVS = [(n, s.cases_for("grid")[0]) for n, s in SPECS.items() if s.cases_for("grid")]
LOSS_TOL = tolerance("reference", "loss")
GRAD_TOL = tolerance("reference", "grad")


def _sparse_teacher(seed: int, k: int, epsilon: float, *, masked: bool = False):
    """Student logits (V,) and a sparse teacher ``(ids, logprobs)`` with k ids and leftover ε
    (ε = 0 when k = V). The log-probabilities are exact-in-construction: log(1 − ε) + a
    log-softmax over the k ids; ``masked`` puts a −inf student logit off the kept ids."""
    rng = np.random.default_rng(seed)
    student = rng.normal(scale=2.0, size=V)
    ids = rng.permutation(V)[:k]
    eps = 0.0 if k == V else epsilon
    z = rng.normal(scale=2.0, size=k)
    lp = z - np.log(np.exp(z - z.max()).sum()) - z.max() + np.log1p(-eps)
    if masked and k < V:
        off = np.setdiff1d(np.arange(V), ids)[0]
        student[off] = -np.inf
    return student, (ids.astype(np.int64), lp)


def _oracle(fn, s, topk, *args, **kw):
    """The oracle's value, and the allowance for the rounding of the inputs: the float64
    log-probabilities fix ε = 1 − Σ_S e^ℓ only to ~k ulps of 1 (a float64 log-sum-exp is
    off by a few ulps), a relative error of k·2⁻⁵³/ε that no float64 evaluation avoids. For
    ε below ``SPARSE_CONDITIONING_BELOW`` the allowance is the oracle's own change when every
    ℓ moves by ±``SPARSE_LOGPROB_ROUNDING_ULPS``·k·2⁻⁵³ (zero otherwise): the loss's
    conditioning in ε, measured by the oracle, not by the code under test (reasons in
    amid_ref/tolerances.py)."""
    want = precise.to_float(fn(s, None, *args, teacher_topk=topk, **kw))
    ids, lp = topk
    eps = -np.expm1(np.logaddexp.reduce(lp[np.isfinite(lp)])) if np.isfinite(lp).any() else 1.0
    if not 0 < eps < SPARSE_CONDITIONING_BELOW or not np.isfinite(want).all():
        return want, 0.0
    shift = SPARSE_LOGPROB_ROUNDING_ULPS * len(ids) * 2.0**-53
    moved = [
        precise.to_float(fn(s, None, *args, teacher_topk=(ids, lp + d), **kw))
        for d in (shift, -shift)
    ]
    return want, max(np.abs(m - want).max() for m in moved)


def _grid():
    """(divergence, params, order, leftover, α, λ, k, ε, softcap, seed) on the diagonal."""
    out = []
    for n_case, ((name, params), order, leftover) in enumerate(
        itertools.product(DIVS, ORDERS, LEFTOVER_POLICIES)
    ):
        for j, alpha in enumerate(ALPHAS):
            i = n_case + j
            lam = LAMS[i % len(LAMS)]
            k = KS[(i // 2) % len(KS)]
            eps = EPSILONS[(i // 3) % len(EPSILONS)]
            cap = SOFTCAPS[(i // 5) % len(SOFTCAPS)]
            if leftover == "uniform" and k == V:
                k = V - 1
            if leftover == "renormalize" and eps == 1.0 - 1e-12 and k == 1:
                eps = 0.3
            out.append((name, params, order, leftover, alpha, lam, k, eps, cap, i))
    return out


GRID = _grid()


def _kw(leftover, cap, topk):
    return {"teacher_topk": topk, "leftover": leftover, "softcap": cap}


@pytest.mark.parametrize(("name", "params"), DIVS, ids=[n for n, _ in DIVS])
def test_sparse_loss_matches_oracle(name, params):
    for case in [c for c in GRID if c[0] == name]:
        _, _, order, leftover, alpha, lam, k, eps, cap, seed = case
        s, topk = _sparse_teacher(seed, k, eps, masked=seed % 7 == 0)
        kw = {"leftover": leftover, "softcap": cap}
        args = (alpha, lam, name, order, params)
        want, allowance = _oracle(precise.amid_loss, s, topk, *args, **kw)
        got = amid_loss(s, None, *args, teacher_topk=topk, **kw)
        if allowance:
            assert abs(got - want) <= LOSS_TOL.atol + LOSS_TOL.rtol * abs(want) + allowance
        else:
            assert_within(got, want, LOSS_TOL, what=f"{case[2:]}")


@pytest.mark.parametrize(("name", "params"), DIVS, ids=[n for n, _ in DIVS])
def test_sparse_grad_matches_oracle(name, params):
    # every third case of the diagonal (the oracle's differences cost 2V losses per row)
    for case in [c for c in GRID if c[0] == name][::3]:
        _, _, order, leftover, alpha, lam, k, eps, cap, seed = case
        s, topk = _sparse_teacher(seed, k, eps, masked=seed % 7 == 0)
        kw = _kw(leftover, cap, topk)
        loss = precise.to_float(precise.amid_loss(s, None, alpha, lam, name, order, params, **kw))
        if not np.isfinite(loss):
            with pytest.raises(ValueError, match=r"\+inf"):
                amid_grad(s, None, alpha, lam, name, order, params, **kw)
            continue
        kw.pop("teacher_topk")
        args = (alpha, lam, name, order, params)
        want, allowance = _oracle(precise.amid_grad, s, topk, *args, **kw)
        got = amid_grad(s, None, *args, teacher_topk=topk, **kw)
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= GRAD_TOL.atol + GRAD_TOL.rtol * scale + allowance, (
            f"{case[2:]}: {got} vs {want}"
        )


@pytest.mark.parametrize("leftover", LEFTOVER_POLICIES)
def test_top_v_equals_the_dense_loss(leftover):
    """At k = V every policy is the dense loss (the oracle's dense loss as the check)."""
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(2, V)), rng.normal(size=(2, V))
    lp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    ids = np.tile(np.arange(V)[::-1], (2, 1))
    topk = (ids, np.take_along_axis(lp, ids, -1))
    for alpha, order in ((-3.0, "pr"), (1.0, "rq"), (np.inf, "qr")):
        want = precise.to_float(precise.amid_loss(s, t, alpha, 0.3, "kl", order))
        got = amid_loss(s, None, alpha, 0.3, "kl", order, teacher_topk=topk, leftover=leftover)
        assert_within(got, want, LOSS_TOL)
        want_g = precise.to_float(precise.amid_grad(s, t, alpha, 0.3, "kl", order))
        got_g = amid_grad(s, None, alpha, 0.3, "kl", order, teacher_topk=topk, leftover=leftover)
        assert np.abs(got_g - want_g).max() <= GRAD_TOL.atol + GRAD_TOL.rtol * 1.0


def test_padded_slots_are_ignored():
    """A collator's padding (index −1, logprob −inf) changes nothing: rows of different k in
    one batch equal the same rows given alone (each checked against the oracle)."""
    s0, (i0, l0) = _sparse_teacher(11, 2, 0.3)
    s1, (i1, l1) = _sparse_teacher(12, 4, 0.1)
    ids = np.array([[*i0, -1, -1], list(i1)])
    lps = np.array([[*l0, -np.inf, -np.inf], list(l1)])
    s = np.stack([s0, s1])
    for leftover in LEFTOVER_POLICIES:
        got = amid_loss(s, None, 0.5, 0.3, teacher_topk=(ids, lps), leftover=leftover)
        want = [
            precise.to_float(precise.amid_loss(si, None, 0.5, 0.3, teacher_topk=tk,
                                               leftover=leftover))
            for si, tk in ((s0, (i0, l0)), (s1, (i1, l1)))
        ]  # fmt: skip
        assert_within(got, np.array(want), LOSS_TOL)


@pytest.mark.parametrize("alignment", ["pad", "truncate"])
@pytest.mark.parametrize("longer", ["teacher", "student"])
def test_vocab_alignment_matches_oracle(alignment, longer):
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(2, V)), rng.normal(size=(2, V))
    extra = np.full((2, 2), -40.0 if alignment == "truncate" else 1.5)
    if longer == "teacher":
        t = np.concatenate([t, extra], axis=-1)
    else:
        s = np.concatenate([s, extra], axis=-1)
    s[0, 1] = -np.inf  # a masked student token
    for alpha, order, cap in ((-np.inf, "pr", 3.0), (1.0 + 1e-12, "rp", None), (0.0, "rq", 0.7)):
        # a softcap bounds the padding's logit by the cap: truncation is tested uncapped
        cap = cap if alignment == "pad" else None
        kw = {"vocab_alignment": alignment, "softcap": cap, "temperature": 1.5}
        lam = 0.5
        want = precise.to_float(precise.amid_loss(s, t, alpha, lam, "kl", order, **kw))
        assert_within(amid_loss(s, t, alpha, lam, "kl", order, **kw), want, LOSS_TOL)
        if not np.isfinite(want).all():
            continue
        want_g = precise.to_float(precise.amid_grad(s, t, alpha, lam, "kl", order, **kw))
        got_g = amid_grad(s, t, alpha, lam, "kl", order, **kw)
        scale = np.abs(want_g).max()
        assert np.abs(got_g - want_g).max() <= GRAD_TOL.atol + GRAD_TOL.rtol * scale


def test_pad_gives_the_padding_no_mass():
    """Padding with −inf is the dense loss of the unpadded pair (not a logit of 0, which would
    give the padded ids real mass); at α ≥ 1 it stays finite."""
    rng = np.random.default_rng(8)
    s, t = rng.normal(size=V), rng.normal(size=V)
    t_long = np.concatenate([t, [-np.inf, -np.inf]])
    s_long = np.concatenate([s, [-np.inf, -np.inf]])
    for alpha in (-1.0, 1.0, 3.0):
        want = precise.to_float(precise.amid_loss(s_long, t_long, alpha, 0.4))
        got = amid_loss(s, t, alpha, 0.4)  # the unpadded pair
        padded = amid_loss(s, t_long, alpha, 0.4, vocab_alignment="pad")
        assert np.isfinite(padded)
        assert_within(padded, want, LOSS_TOL)
        assert_within(got, want, LOSS_TOL)
    # a student logit of 0 on the padded ids is real mass: at α < 1 the assistant is positive
    # wherever q is, and the loss is another one (at α ≥ 1, r = 0 where p = 0, and q's
    # renormalization cancels in r at α = 1)
    zero = amid_loss(np.concatenate([s, [0.0, 0.0]]), t_long, -1.0, 0.4)
    want = precise.to_float(precise.amid_loss(s_long, t_long, -1.0, 0.4))
    assert abs(zero - want) > 1e-2 * max(1.0, abs(want)), (zero, want)


@pytest.mark.parametrize("target", ["both", "student"])
def test_logit_scale_and_temperature_match_oracle(target):
    rng = np.random.default_rng(9)
    s, t = rng.normal(size=(2, V)), rng.normal(size=(2, V))
    kw = {
        "logit_scale": (2.0, 0.5),
        "softcap": (None, 1.5),
        "temperature": 0.7,
        "temperature_applies_to": target,
    }
    for divergence, order in (("kl", "pr"), ("tv", "rq"), ("hellinger", "qr")):
        want = precise.to_float(precise.amid_loss(s, t, -2.0, 0.2, divergence, order, **kw))
        assert_within(amid_loss(s, t, -2.0, 0.2, divergence, order, **kw), want, LOSS_TOL)
        want_g = precise.to_float(precise.amid_grad(s, t, -2.0, 0.2, divergence, order, **kw))
        got_g = amid_grad(s, t, -2.0, 0.2, divergence, order, **kw)
        scale = np.abs(want_g).max()
        assert np.abs(got_g - want_g).max() <= GRAD_TOL.atol + GRAD_TOL.rtol * scale


def test_sparse_student_temperature_matches_oracle():
    s, topk = _sparse_teacher(21, 3, 0.2)
    kw = {"teacher_topk": topk, "temperature": 2.5, "temperature_applies_to": "student"}
    for leftover in LEFTOVER_POLICIES:
        want = precise.to_float(precise.amid_grad(s, None, 0.5, 0.5, leftover=leftover, **kw))
        got = amid_grad(s, None, 0.5, 0.5, leftover=leftover, **kw)
        assert np.abs(got - want).max() <= GRAD_TOL.atol + GRAD_TOL.rtol * np.abs(want).max()


@given(
    seed=st.integers(0, 2**16),
    k=st.sampled_from(KS[:-1]),
    log10_eps=st.floats(-12.0, -1e-3),
    alpha=st.sampled_from(ALPHAS),
    lam=st.sampled_from((1e-15, 0.1, 0.9)),
    leftover=st.sampled_from(LEFTOVER_POLICIES),
    detach=st.booleans(),
)
def test_sparse_grad_random_rows(seed, k, log10_eps, alpha, lam, leftover, detach):
    """Random rows, ε log-uniform in [1e-12, 1), KL(p‖r)/KL(r‖q) with and without a detached
    assistant: the closed-form gradient against the oracle's central differences."""
    s, topk = _sparse_teacher(seed, k, 10.0**log10_eps)
    order = "rq" if detach else "pr"
    kw = {"leftover": leftover, "detach_assistant": detach}
    want, allowance = _oracle(precise.amid_grad, s, topk, alpha, lam, "kl", order, **kw, dps=30)
    if np.isnan(want).any():
        return
    got = amid_grad(s, None, alpha, lam, "kl", order, teacher_topk=topk, **kw)
    bound = GRAD_TOL.atol + GRAD_TOL.rtol * np.abs(want).max() + allowance
    assert np.abs(got - want).max() <= bound


@pytest.mark.parametrize("name", ["taid", "distillm_skl", "distillm_srkl"])
def test_presets_pass_the_sparse_teacher_through(name):
    """TAID and DistiLLM with a sparse teacher: each term is the oracle's sparse loss."""
    preset = presets.get(name)
    s, topk = _sparse_teacher(31, 3, 0.25)
    kw = {"teacher_topk": topk, "leftover": "bucket", "softcap": (2.0, None)}
    want = sum(
        weight
        * precise.to_float(
            precise.amid_loss(s, None, preset.alpha, preset.lam, preset.divergence, order,
                              dict(preset.div_params), **kw)
        )
        for order, weight in preset.terms
    )  # fmt: skip
    assert_within(preset.loss(s, None, **kw), want, LOSS_TOL)
    assert preset.grad(s, None, **kw).shape == s.shape
