"""Bad input gets a clear error naming the parameter and the problem, never a NaN."""

from __future__ import annotations

import numpy as np
import pytest

import amid_ref
from amid_ref import (
    alpha_mean,
    alpha_mixture,
    alpha_mixture_normalizer,
    amid_grad,
    amid_loss,
    divergence,
    log_alpha_mean,
    log_alpha_mixture,
)

P = np.array([0.7, 0.2, 0.1])
Q = np.array([0.1, 0.3, 0.6])
S = np.log(Q)
T = np.log(P)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        # logits
        (
            lambda: amid_loss(np.array([np.nan, 0.0, 1.0]), T, 0.0, 0.5),
            ValueError,
            r"student_logits contains NaN",
        ),
        (
            lambda: amid_loss(S, np.array([np.inf, 0.0, 1.0]), 0.0, 0.5),
            ValueError,
            r"teacher_logits contains \+inf",
        ),
        (
            lambda: amid_loss(S, np.full(3, -np.inf), 0.0, 0.5),
            ValueError,
            r"teacher_logits has a row whose logits are all -inf",
        ),
        (lambda: amid_loss(S, T[:2], 0.0, 0.5), ValueError, r"vocab_alignment"),
        (lambda: amid_loss(np.zeros((2, 0)), np.zeros((2, 0)), 0.0, 0.5), ValueError, r"empty"),
        (lambda: amid_loss(np.array(1.0), np.array(1.0), 0.0, 0.5), ValueError, r"vocabulary axis"),
        (
            lambda: amid_loss(np.array([1, 2, 3]), T, 0.0, 0.5),
            TypeError,
            r"student_logits must have a floating-point dtype",
        ),
        (
            lambda: amid_loss(S, T.astype(np.int64), 0.0, 0.5),
            TypeError,
            r"teacher_logits must have a floating-point dtype",
        ),
        # λ, α
        (lambda: amid_loss(S, T, 0.0, 1.5), ValueError, r"lam must lie in \[0, 1\]"),
        (lambda: amid_loss(S, T, 0.0, -1e-9), ValueError, r"lam must lie in \[0, 1\]"),
        (lambda: amid_loss(S, T, 0.0, float("nan")), ValueError, r"lam is NaN"),
        (lambda: amid_loss(S, T, float("nan"), 0.5), ValueError, r"alpha is NaN"),
        (lambda: amid_loss(S, T, "1", 0.5), TypeError, r"alpha must be a real number"),
        (lambda: amid_loss(S, T, 0.0, True), TypeError, r"lam must be a real number"),
        # divergence / order / params
        (
            lambda: amid_loss(S, T, 0.0, 0.5, divergence="kll"),
            ValueError,
            r"unknown divergence 'kll'",
        ),
        (lambda: amid_loss(S, T, 0.0, 0.5, order="pq"), ValueError, r"unknown order 'pq'"),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "renyi"),
            ValueError,
            r"divergence 'renyi' needs parameter",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "kl", div_params={"beta": 1}),
            ValueError,
            r"unknown parameter\(s\) \['beta'\] for divergence 'kl'",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "js", div_params={"beta": 2.0}),
            ValueError,
            r"beta must lie in \[0, 1\]",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "renyi", div_params={"order": -1.0}),
            ValueError,
            r"order must be > 0",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "ab", div_params={"alpha": np.nan, "beta": 1.0}),
            ValueError,
            r"alpha \(AB-divergence a_\) is NaN",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, "f", div_params={"f": lambda u: u}),
            ValueError,
            r"f\(1\) = 0",
        ),
        (
            lambda: amid_loss(S, T, 0.0, 0.5, temperature=0.0),
            ValueError,
            r"temperature must be > 0",
        ),
        (lambda: amid_loss(S, T, 0.0, 0.5, div_params=[1]), TypeError, r"div_params"),
        (
            lambda: amid_grad(S, T, 0.0, 0.5, detach_assistant="yes"),
            TypeError,
            r"detach_assistant must be a bool",
        ),
        (
            lambda: amid_grad(S, T, 0.0, 0.5, "f", div_params={"f": lambda u: u * np.log(u)}),
            ValueError,
            r"needs the parameter f_prime",
        ),
        # probabilities
        (
            lambda: alpha_mixture(np.array([0.5, 0.6, -0.1]), Q, 0.0, 0.5),
            ValueError,
            r"p has negative probabilities",
        ),
        (
            lambda: alpha_mixture(P, np.array([0.1, 0.3, 0.7]), 0.0, 0.5),
            ValueError,
            r"q is not normalized",
        ),
        (lambda: alpha_mixture(P, Q[:2], 0.0, 0.5), ValueError, r"shape mismatch"),
        (lambda: alpha_mixture(P, Q, 0.0, 0.5, axis=1), ValueError, r"axis=1 is out of range"),
        (
            lambda: alpha_mixture(np.array([1, 0]), np.array([0, 1]), 0.0, 0.5),
            TypeError,
            r"floating-point dtype",
        ),
        (lambda: alpha_mixture([], [], 0.0, 0.5), ValueError, r"p is empty"),
        (
            lambda: log_alpha_mixture(np.log(P) + 0.1, np.log(Q), 0.0, 0.5),
            ValueError,
            r"log_p \(log-probabilities\) is not normalized",
        ),
        (lambda: divergence(P, Q, "chi3"), ValueError, r"unknown divergence 'chi3'"),
        (lambda: divergence(P, Q, "kl", log_input=1), TypeError, r"log_input must be a bool"),
        (
            lambda: divergence(P, np.array([0.2, 0.2, 0.2]), "kl"),
            ValueError,
            r"b is not normalized",
        ),
        (lambda: alpha_mean(-1.0, 1.0, 0.0, 0.5), ValueError, r"a has negative entries"),
        (lambda: alpha_mean(np.ones(2), np.ones(3), 0.0, 0.5), ValueError, r"shape mismatch"),
        (lambda: log_alpha_mean(np.inf, 0.0, 0.0, 0.5), ValueError, r"log_a contains \+inf"),
        (lambda: alpha_mixture_normalizer(P, Q, np.nan, 0.5), ValueError, r"alpha is NaN"),
    ],
)
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_empty_support_intersection_is_an_error_not_nan():
    p = np.array([1.0, 0.0])
    q = np.array([0.0, 1.0])
    for alpha in (1.0, 3.0, np.inf):
        with pytest.raises(ValueError, match=r"Z = 0"):
            alpha_mixture(p, q, alpha, 0.5)
        assert alpha_mixture_normalizer(p, q, alpha, 0.5) == 0.0
    with pytest.raises(ValueError, match=r"Z = 0"):
        amid_loss(np.array([0.0, -np.inf]), np.array([-np.inf, 0.0]), 1.0, 0.5)
    # For α < 1 the support is the union, so the same inputs are fine.
    r = alpha_mixture(p, q, 0.0, 0.5)
    np.testing.assert_allclose(r, [0.5, 0.5], rtol=1e-15)


def test_infinite_loss_has_no_gradient():
    # α ≥ 1: r = 0 where the student masks a token the teacher uses → KL(p‖r) = +inf.
    s = np.array([0.0, 0.0, -np.inf])
    t = np.array([0.0, 0.0, 0.0])
    assert amid_loss(s, t, 1.0, 0.5) == np.inf
    with pytest.raises(ValueError, match=r"loss is \+inf"):
        amid_grad(s, t, 1.0, 0.5)


def test_registries_are_complete():
    assert set(amid_ref.DIVERGENCES) >= {
        "kl",
        "js",
        "tv",
        "hellinger",
        "chi2",
        "amari",
        "renyi",
        "ab",
        "f",
    }
    assert tuple(amid_ref.ORDERS) == ("pr", "qr", "rp", "rq")
