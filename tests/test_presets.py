"""Each preset equals its method's own formula, written here independently of amid_ref."""

from __future__ import annotations

import numpy as np
import pytest

from amid_ref import presets


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl(a, b):
    return np.sum(a * np.log(a / b), axis=-1)


RNG = np.random.default_rng(7)
S = RNG.normal(scale=2.0, size=(4, 9))
T = RNG.normal(scale=2.0, size=(4, 9))
P, Q = softmax(T), softmax(S)


def direct_ab(x, y, a, b):
    lam = a + b
    return -np.sum(x**a * y**b - a / lam * x**lam - b / lam * y**lam, axis=-1) / (a * b)


@pytest.mark.parametrize(
    ("name", "direct"),
    [
        ("kd", lambda: kl(P, Q)),
        ("rkl", lambda: kl(Q, P)),
        ("distillm_skl", lambda: kl(P, 0.1 * P + 0.9 * Q)),
        ("distillm_srkl", lambda: kl(Q, 0.9 * P + 0.1 * Q)),
        ("gkd_jsd", lambda: 0.5 * kl(P, 0.5 * (P + Q)) + 0.5 * kl(Q, 0.5 * (P + Q))),
        ("abkd", lambda: direct_ab(P, Q, 0.2, 0.7)),
        ("symmetric_kl", lambda: 0.5 * kl(P, Q) + 0.5 * kl(Q, P)),
    ],
)
def test_preset_loss_equals_the_method_formula(name, direct):
    got = presets.get(name).loss(S, T)
    np.testing.assert_allclose(got, direct(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_gkd_jsd_with_beta(beta):
    m = beta * P + (1 - beta) * Q
    want = beta * kl(P, m) + (1 - beta) * kl(Q, m)
    np.testing.assert_allclose(presets.get("gkd_jsd", beta=beta).loss(S, T), want, rtol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_taid_loss_and_gradient(t):
    # TAID: r_t ∝ p^t q^(1−t) (detached); loss KL(r‖q); its gradient equals that of TAID's
    # cross-entropy −Σ r log q with r fixed, namely q − r.
    r = P**t * Q ** (1 - t)
    r /= r.sum(axis=-1, keepdims=True)
    preset = presets.get("taid", t=t)
    np.testing.assert_allclose(preset.loss(S, T), kl(r, Q), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(preset.grad(S, T), Q - r, rtol=1e-10, atol=1e-14)


def test_kd_gradient_is_q_minus_p():
    np.testing.assert_allclose(presets.get("kd").grad(S, T), Q - P, rtol=1e-11, atol=1e-15)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset 'taidd'"):
        presets.get("taidd")
    with pytest.raises(ValueError, match=r"unknown preset field\(s\) \['gamma'\]"):
        presets.get("kd", gamma=1.0)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        presets.get("gkd_jsd", beta=1.5)


def test_registry_lists_every_method():
    assert set(presets.PRESETS) == {
        "kd",
        "rkl",
        "distillm_skl",
        "distillm_srkl",
        "gkd_jsd",
        "taid",
        "abkd",
        "symmetric_kl",
    }
    for p in presets.PRESETS.values():
        assert p.description and p.reference


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_symmetric_kl_with_ratio(ratio):
    want = ratio * kl(P, Q) + (1 - ratio) * kl(Q, P)
    got = presets.get("symmetric_kl", ratio=ratio).loss(S, T)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("skew", [0.1, 0.25])
def test_distillm_skew_is_the_weight_of_the_first_argument(skew):
    # DistiLLM: KL(p‖s·p + (1−s)·q) and KL(q‖s·q + (1−s)·p), s the skew
    skl = presets.get("distillm_skl", skew=skew).loss(S, T)
    srkl = presets.get("distillm_srkl", skew=skew).loss(S, T)
    np.testing.assert_allclose(skl, kl(P, skew * P + (1 - skew) * Q), rtol=1e-12)
    np.testing.assert_allclose(srkl, kl(Q, skew * Q + (1 - skew) * P), rtol=1e-12)
    with pytest.raises(ValueError, match="skew must lie in"):
        presets.get("distillm_srkl", skew=1.5)
    with pytest.raises(ValueError, match="ratio must lie in"):
        presets.get("symmetric_kl", ratio=-0.1)
