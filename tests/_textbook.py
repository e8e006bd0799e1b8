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


def divergence(a, b, name, params):
    if name == "kl":
        return (a * (a / b).log()).sum(-1)
    if name == "js":
        beta = params["beta"]
        m = beta * a + (1.0 - beta) * b
        return beta * divergence(a, m, "kl", {}) + (1.0 - beta) * divergence(b, m, "kl", {})
    if name == "tv":
        return 0.5 * (a - b).abs().sum(-1)
    if name == "hellinger":
        return 0.5 * ((a.sqrt() - b.sqrt()) ** 2).sum(-1)
    if name == "chi2":
        return ((a - b) ** 2 / b).sum(-1)
    if name == "amari":  # AB(s, 1 − s), s = (1 − γ)/2
        s = (1.0 - params["alpha"]) / 2.0
        return divergence(a, b, "ab", {"alpha": s, "beta": 1.0 - s})
    if name == "renyi":
        rho = params["order"]
        return (a**rho * b ** (1.0 - rho)).sum(-1).log() / (rho - 1.0)
    if name == "jeffreys":
        return ((a - b) * (a / b).log()).sum(-1)
    if name == "skew_kl":
        s = params["skew"]
        return divergence(a, s * a + (1.0 - s) * b, "kl", {})
    if name == "ab":
        x, y = params["alpha"], params["beta"]
        lsum = x + y
        terms = a**x * b**y - x / lsum * a**lsum - y / lsum * b**lsum
        return -terms.sum(-1) / (x * y)
    raise AssertionError(name)


def textbook_loss(s_logits, t_logits, alpha, lam, name, order, params, temperature, detach):
    q = torch.softmax(s_logits / temperature, -1)
    p = torch.softmax(t_logits / temperature, -1)
    r = mixture(p, q, alpha, lam)
    if detach:
        r = r.detach()
    dist = {"p": p, "q": q, "r": r}
    return divergence(dist[order[0]], dist[order[1]], name, params)
