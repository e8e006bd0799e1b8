"""Textbook float64 formulas of the AMiD loss, differentiated by torch autograd.

An oracle for the gpu package's closed-form gradients written independently of it: plain
softmaxes, the α-mean ``(λa^β + (1−λ)b^β)^(1/β)`` and the divergences on probabilities, with
none of the log-domain rearrangements of :mod:`gpu`. Valid for strictly positive
distributions and moderate logits (the tests that use it generate such inputs).
"""

from __future__ import annotations

import math

import torch

INF = math.inf


def mixture(p, q, alpha, lam):
    """Normalized α-mixture of probabilities, textbook form (strictly positive p, q)."""
    if lam == 0.0:
        m = q
    elif lam == 1.0:
        m = p
    elif alpha == -INF:
        m = torch.maximum(p, q)
    elif alpha == INF:
        m = torch.minimum(p, q)
    elif alpha == 1.0:
        m = p**lam * q ** (1.0 - lam)
    else:
        beta = (1.0 - alpha) / 2.0
        m = (lam * p**beta + (1.0 - lam) * q**beta) ** (1.0 / beta)
    return m / m.sum(-1, keepdim=True)


def _kl(a, b, params):
    return (a * (a / b).log()).sum(-1)


def _js(a, b, params):
    beta = params["beta"]
    m = beta * a + (1.0 - beta) * b
    return beta * _kl(a, m, {}) + (1.0 - beta) * _kl(b, m, {})


def _tv(a, b, params):
    return 0.5 * (a - b).abs().sum(-1)


def _hellinger(a, b, params):
    return 0.5 * ((a.sqrt() - b.sqrt()) ** 2).sum(-1)


def _chi2(a, b, params):
    return ((a - b) ** 2 / b).sum(-1)


def _ab(a, b, params):
    x, y = params["alpha"], params["beta"]
    lsum = x + y
    terms = a**x * b**y - x / lsum * a**lsum - y / lsum * b**lsum
    return -terms.sum(-1) / (x * y)


def _amari(a, b, params):  # AB(s, 1 − s), s = (1 − γ)/2
    s = (1.0 - params["alpha"]) / 2.0
    return _ab(a, b, {"alpha": s, "beta": 1.0 - s})


def _renyi(a, b, params):
    rho = params["order"]
    return (a**rho * b ** (1.0 - rho)).sum(-1).log() / (rho - 1.0)


def _jeffreys(a, b, params):
    return ((a - b) * (a / b).log()).sum(-1)


def _skew_kl(a, b, params):
    s = params["skew"]
    return _kl(a, s * a + (1.0 - s) * b, {})


#: The textbook form of every divergence the gpu package offers, by record name
#: (``tests/test_registry.py`` checks it against the records of the contract).
TEXTBOOK = {
    "kl": _kl,
    "js": _js,
    "tv": _tv,
    "hellinger": _hellinger,
    "chi2": _chi2,
    "amari": _amari,
    "renyi": _renyi,
    "ab": _ab,
    "jeffreys": _jeffreys,
    "skew_kl": _skew_kl,
}


def divergence(a, b, name, params):
    """``D(a‖b)`` per row from :data:`TEXTBOOK`, probabilities of shape (..., V)."""
    if name not in TEXTBOOK:
        raise AssertionError(
            f"no textbook form of the divergence {name!r}: add one to TEXTBOOK in "
            "tests/_textbook.py"
        )
    return TEXTBOOK[name](a, b, params)


def textbook_loss(s_logits, t_logits, alpha, lam, name, order, params, temperature, detach):
    q = torch.softmax(s_logits / temperature, -1)
    p = torch.softmax(t_logits / temperature, -1)
    r = mixture(p, q, alpha, lam)
    if detach:
        r = r.detach()
    dist = {"p": p, "q": q, "r": r}
    return divergence(dist[order[0]], dist[order[1]], name, params)
