"""Claims that the prior distillation methods are AMiD settings (mathematics page, "Prior methods as
special cases"): each published objective equals the AMiD loss at the preset's (α, λ,
divergence, order) symbolically, and :mod:`amid_ref.presets` reproduces the published
formula (evaluated independently in mpmath) in value and gradient."""

from __future__ import annotations

import dataclasses

import mpmath as mp
import numpy as np
import sympy as sp

import amid_ref
from proofs_check._core import Claim
from proofs_check._numeric import DPS, check, distribution_pairs, mp_grad, mp_softmax
from proofs_check._symbolic import beta_of_alpha, power_mean, prove_zero, require

__all__ = ["CLAIMS"]

V = 3
P_FREE = sp.symbols("p1:3", positive=True)
Q_FREE = sp.symbols("q1:3", positive=True)
LAM = sp.Symbol("lambda", positive=True)


def _simplex(free):
    """A generic point of the 3-simplex: (x1, x2, 1 − x1 − x2)."""
    return [*free, 1 - sum(free)]


def _amid_assistant(p, q, alpha, lam):
    """r = m_α(p, q; λ)/Σ m_α from the generic α-mean formula (α substituted, not special
    cased), so the check covers the α ↦ formula map."""
    if alpha == 1:
        m = [pi**lam * qi ** (1 - lam) for pi, qi in zip(p, q, strict=True)]
    else:
        m = [
            power_mean(pi, qi, lam, beta_of_alpha(sp.Integer(alpha)))
            for pi, qi in zip(p, q, strict=True)
        ]
    z = sum(m)
    return [mi / z for mi in m]


def _check_preset(name: str, **expected) -> str:
    preset = amid_ref.presets.PRESETS[name]
    for field, want in expected.items():
        got = getattr(preset, field)
        require(got == want, f"preset {name}: {field} = {got!r}, expected {want!r}")
    return name


def _rows():
    t, s, _, _ = distribution_pairs(3, 6, 61, scale=2.0)
    return t, s


def _mp_kl(a, b):
    return mp.fsum(x * mp.log(x / y) for x, y in zip(a, b, strict=True))


def _compare(preset, published, what: str, grad_objective=None) -> int:
    """preset.loss/grad against the published objective ``published(t_row, s_row)`` (an
    mpmath function of the student logits) and mpmath's gradient of it, or of
    ``grad_objective(t_row, s_row, s_base)`` where the method detaches part of the objective
    (evaluated at the base logits ``s_base``)."""
    t, s = _rows()
    loss = np.asarray(preset.loss(s, t))
    grad = np.asarray(preset.grad(s, t))
    for row in range(t.shape[0]):
        with mp.workdps(DPS):
            want = float(published(t[row], [mp.mpf(float(x)) for x in s[row]]))
        check(loss[row], want, "loss", f"{what} loss")
        if grad_objective is None:

            def objective(x, row=row):
                return published(t[row], x)

        else:

            def objective(x, row=row):
                return grad_objective(t[row], x, s[row])

        check(grad[row], mp_grad(objective, s[row]), "grad", f"{what} gradient")
    return t.shape[0]


# --- DistiLLM --------------------------------------------------------------------------------


def _sym_skl() -> str:
    p, q = _simplex(P_FREE), _simplex(Q_FREE)
    skew = LAM
    r = _amid_assistant(p, q, -1, skew)
    for x in range(V):
        prove_zero(r[x] - (skew * p[x] + (1 - skew) * q[x]), f"r_{x + 1} = s p + (1−s) q")
    return (
        "for V = 3 generic distributions and any skew s: the AMiD assistant at α = −1, λ = s is "
        "s·p + (1−s)·q, so KL(p‖r) (order pr) is DistiLLM's skew KL KL(p‖s p + (1−s) q)"
    )


def _num_skl() -> str:
    _check_preset("distillm_skl", alpha=-1.0, lam=0.1, divergence="kl", terms=(("pr", 1.0),))

    def published(t_row, s_row):
        p, q = mp_softmax(t_row), mp_softmax(s_row)
        return _mp_kl(p, [mp.mpf("0.1") * a + mp.mpf("0.9") * b for a, b in zip(p, q, strict=True)])

    n = _compare(amid_ref.presets.get("distillm_skl"), published, "skew KL")
    return (
        "preset distillm_skl (α=−1, λ=0.1, KL, pr) matches KL(p‖0.1p+0.9q) and its gradient "
        f"({n} rows)"
    )


def _sym_srkl() -> str:
    p, q = _simplex(P_FREE), _simplex(Q_FREE)
    skew = LAM
    r = _amid_assistant(p, q, -1, 1 - skew)
    for x in range(V):
        prove_zero(r[x] - ((1 - skew) * p[x] + skew * q[x]), f"r_{x + 1} = (1−s) p + s q")
    return (
        "for V = 3 generic distributions and any skew s: the assistant at α = −1, λ = 1 − s is "
        "(1−s)·p + s·q, so KL(q‖r) (order qr) is DistiLLM's skew reverse KL KL(q‖(1−s)p + s q)"
    )


def _num_srkl() -> str:
    _check_preset("distillm_srkl", alpha=-1.0, lam=0.9, divergence="kl", terms=(("qr", 1.0),))

    def published(t_row, s_row):
        p, q = mp_softmax(t_row), mp_softmax(s_row)
        return _mp_kl(q, [mp.mpf("0.9") * a + mp.mpf("0.1") * b for a, b in zip(p, q, strict=True)])

    n = _compare(amid_ref.presets.get("distillm_srkl"), published, "skew reverse KL")
    return (
        "preset distillm_srkl (α=−1, λ=0.9, KL, qr) matches KL(q‖0.9p+0.1q) and its gradient "
        f"({n} rows)"
    )


# --- GKD ---------------------------------------------------------------------------------------


def _sym_gkd() -> str:
    p = sp.symbols("p1:4", positive=True)
    q = sp.symbols("q1:4", positive=True)
    k = sp.Symbol("k", positive=True)
    beta = 1 / (1 + k)  # any β ∈ (0, 1)
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
    # the AMiD assistant at α = −1, λ = β, on normalized p, q
    p_n, q_n = _simplex(P_FREE), _simplex(Q_FREE)
    r = _amid_assistant(p_n, q_n, -1, LAM)
    for x in range(V):
        prove_zero(r[x] - (LAM * p_n[x] + (1 - LAM) * q_n[x]), f"r_{x + 1} = βp + (1−β)q")

    def kl(a, b):
        return sum(ai * sp.log(ai / bi) for ai, bi in zip(a, b, strict=True))

    def entropy(a):
        return -sum(ai * sp.log(ai) for ai in a)

    amid_form = beta * kl(p, m) + (1 - beta) * kl(q, m)
    entropy_form = entropy(m) - beta * entropy(p) - (1 - beta) * entropy(q)
    prove_zero(sp.expand(sp.expand_log(amid_form - entropy_form, force=False)), "entropy form")
    return (
        "for V = 3: the assistant at α = −1, λ = β is m = βp + (1−β)q, and "
        "β·KL(p‖m) + (1−β)·KL(q‖m) = H(m) − βH(p) − (1−β)H(q), GKD's generalized JSD(β)"
    )


def _num_gkd() -> str:
    n = 0
    for beta in (0.1, 0.5, 0.9):
        preset = amid_ref.presets.get("gkd_jsd", beta=beta)
        require(
            preset.alpha == -1.0 and preset.lam == beta and preset.divergence == "kl",
            f"gkd_jsd(β={beta}) is not α=−1, λ=β, KL: {preset}",
        )
        require(preset.terms == (("pr", beta), ("qr", 1.0 - beta)), f"terms {preset.terms}")
        b = mp.mpf(beta)

        def published(t_row, s_row, b=b):  # entropy form: independent of the KL form
            p, q = mp_softmax(t_row), mp_softmax(s_row)
            m = [b * x + (1 - b) * y for x, y in zip(p, q, strict=True)]

            def ent(a):
                return -mp.fsum(x * mp.log(x) for x in a)

            return ent(m) - b * ent(p) - (1 - b) * ent(q)

        n += _compare(preset, published, f"JSD(β={beta})")
    return (
        "preset gkd_jsd(β) matches H(m) − βH(p) − (1−β)H(q) and its gradient "
        f"(β ∈ {{0.1, 0.5, 0.9}}, {n} rows)"
    )


# --- TAID --------------------------------------------------------------------------------------


def _sym_taid() -> str:
    u = sp.symbols("U1:4", positive=True)  # exp(teacher logits)
    e = sp.symbols("S1:4", positive=True)  # exp(student logits)
    tt = sp.Symbol("t", positive=True)
    p = [x / sum(u) for x in u]
    q = [x / sum(e) for x in e]
    r = _amid_assistant(p, q, 1, tt)
    mix = [a**tt * b ** (1 - tt) for a, b in zip(u, e, strict=True)]  # exp(t·u_x + (1−t)·s_x)
    taid = [x / sum(mix) for x in mix]
    for x in range(V):
        diff = sp.powsimp(sp.expand_power_base(r[x] - taid[x], force=False), force=False)
        prove_zero(diff, f"r_{x + 1} = softmax(t·u + (1−t)·s)_{x + 1}")
    # gradient: with r detached, ∂/∂s_j KL(r‖q) = ∂/∂s_j (−Σ r log q) = q_j − r_j
    rr = sp.symbols("R1:3", positive=True)
    r_const = [*rr, 1 - sum(rr)]
    cross_entropy = -sum(rx * sp.log(qx) for rx, qx in zip(r_const, q, strict=True))
    for j in range(V):
        grad = e[j] * sp.diff(cross_entropy, e[j])  # ∂/∂s_j = E_j ∂/∂E_j
        prove_zero(sp.together(grad - (q[j] - r_const[j])), f"∂/∂s_{j + 1} = q − r")
    return (
        "for V = 3: the assistant at α = 1, λ = t is softmax(t·u + (1−t)·s) (TAID's "
        "interpolation of logits), and with r detached the gradient of KL(r‖q) equals that of "
        "TAID's cross-entropy −Σ r log q, namely q − r"
    )


def _num_taid() -> str:
    _check_preset("taid", alpha=1.0, divergence="kl", terms=(("rq", 1.0),), detach_assistant=True)
    n = 0
    for tt in (0.2, 0.7):
        preset = amid_ref.presets.get("taid", t=tt)
        require(preset.lam == tt, f"taid(t={tt}) has lam={preset.lam}")
        t_mp = mp.mpf(tt)

        def interpolated(t_row, s_row, t_mp=t_mp):
            return mp_softmax(
                [
                    t_mp * mp.mpf(float(a)) + (1 - t_mp) * b
                    for a, b in zip(t_row, s_row, strict=True)
                ]
            )

        def published(t_row, s_row, interpolated=interpolated):
            return _mp_kl(interpolated(t_row, s_row), mp_softmax(s_row))

        def detached(t_row, s_row, s_base, interpolated=interpolated):
            r = interpolated(t_row, [mp.mpf(float(x)) for x in s_base])  # held constant
            q = mp_softmax(s_row)
            return -mp.fsum(
                a * mp.log(b) for a, b in zip(r, q, strict=True)
            )  # TAID's cross-entropy

        n += _compare(preset, published, f"TAID(t={tt})", grad_objective=detached)
    return (
        "preset taid(t) matches KL(softmax(t·u + (1−t)·s)‖q) and, with the assistant detached, "
        f"the gradient of TAID's cross-entropy (t ∈ {{0.2, 0.7}}, {n} rows)"
    )


# --- λ = 0 presets ---------------------------------------------------------------------------


def _sym_lambda0() -> str:
    a, b = sp.symbols("a b", positive=True)
    beta = sp.Symbol("beta", real=True, nonzero=True)
    prove_zero(power_mean(a, b, 0, beta) - b, "β ≠ 0: m_α(p, q; 0) = q")
    prove_zero(a**0 * b**1 - b, "β = 0: p^0 q^1 = q")
    return (
        "λ = 0 gives m_α(p(x), q(x); 0) = q(x) for every α (symbolic β ≠ 0, and β = 0), hence "
        "Z = Σq = 1 and r = q"
    )


def _num_lambda0(name: str):
    def check_numeric() -> str:
        preset = amid_ref.presets.PRESETS[name]
        require(preset.lam == 0.0, f"preset {name} has lam={preset.lam}")

        if name == "kd":
            _check_preset(name, divergence="kl", terms=(("pr", 1.0),))

            def published(t_row, s_row):
                return _mp_kl(mp_softmax(t_row), mp_softmax(s_row))

        elif name == "rkl":
            _check_preset(name, divergence="kl", terms=(("rp", 1.0),))

            def published(t_row, s_row):
                return _mp_kl(mp_softmax(s_row), mp_softmax(t_row))

        else:
            _check_preset(name, divergence="ab", terms=(("pr", 1.0),))
            a_, b_ = (mp.mpf(preset.div_params[k]) for k in ("alpha", "beta"))
            require((float(a_), float(b_)) == (0.2, 0.7), f"abkd uses (a_, b_) = {a_, b_}")

            def published(t_row, s_row):
                p, q = mp_softmax(t_row), mp_softmax(s_row)
                s = a_ + b_
                return -mp.fsum(
                    x**a_ * y**b_ - a_ / s * x**s - b_ / s * y**s for x, y in zip(p, q, strict=True)
                ) / (a_ * b_)

        n = 0
        for alpha in (-5.0, 1.0, 3.0):  # λ = 0: the preset's α must not matter
            _compare(dataclasses.replace(preset, alpha=alpha), published, name)
            n += 1
        return f"preset {name} matches the published objective and gradient for {n} values of α"

    return check_numeric


# --- registry ----------------------------------------------------------------------------------

SRC = "AMiD (arXiv 2510.15982), prior methods as special cases; mathematics page"

CLAIMS: list[Claim] = [
    Claim(
        "presets.distillm_skl",
        r"\mathrm{KL}(p\,\|\,s p + (1-s) q) = D_{\mathrm{KL}}(p\,\|\,r^{(-1,\,s)})"
        r" \quad\text{(DistiLLM skew KL, } s=0.1)",
        SRC + "; Ko et al. 2024 (DistiLLM) skew KL",
        _sym_skl,
        _num_skl,
        backs=("presets",),
    ),
    Claim(
        "presets.distillm_srkl",
        r"\mathrm{KL}(q\,\|\,(1-s) p + s q) = D_{\mathrm{KL}}(q\,\|\,r^{(-1,\,1-s)})"
        r" \quad\text{(DistiLLM skew reverse KL, } s=0.1)",
        SRC + "; Ko et al. 2024 (DistiLLM) skew reverse KL",
        _sym_srkl,
        _num_srkl,
        backs=("presets",),
    ),
    Claim(
        "presets.gkd_jsd",
        r"\mathrm{JSD}_\beta(p\|q) = \beta\,\mathrm{KL}(p\|r^{(-1,\beta)}) +"
        r" (1-\beta)\,\mathrm{KL}(q\|r^{(-1,\beta)})",
        SRC + "; Agarwal et al. 2024 (GKD) generalized JSD",
        _sym_gkd,
        _num_gkd,
        backs=("presets",),
    ),
    Claim(
        "presets.taid",
        r"\mathrm{softmax}(t\,u + (1-t)\,s) = r^{(1,\,t)}(\mathrm{softmax}\,u,"
        r" \mathrm{softmax}\,s);\ \nabla_s \mathrm{KL}(\mathrm{sg}[r]\|q) = \nabla_s"
        r" \mathrm{CE}(\mathrm{sg}[r], q)",
        SRC + "; Shing et al. 2025 (TAID)",
        _sym_taid,
        _num_taid,
        backs=("presets",),
    ),
    Claim(
        "presets.kd",
        r"\lambda = 0:\ r^{(\alpha,0)} = q,\ D_{\mathrm{KL}}(p\|r) = \mathrm{KL}(p\|q)"
        r" \quad\text{(KD, any } \alpha)",
        SRC + "; Hinton et al. 2015",
        _sym_lambda0,
        _num_lambda0("kd"),
        backs=("presets",),
    ),
    Claim(
        "presets.rkl",
        r"\lambda = 0:\ D_{\mathrm{KL}}(r\|p) = \mathrm{KL}(q\|p) \quad\text{(reverse KL, any }"
        r" \alpha)",
        SRC + "; Gu et al. 2024 (MiniLLM)",
        _sym_lambda0,
        _num_lambda0("rkl"),
        backs=("presets",),
    ),
    Claim(
        "presets.abkd",
        r"\lambda = 0:\ D_{AB}^{(0.2,0.7)}(p\|r) = D_{AB}^{(0.2,0.7)}(p\|q) \quad\text{(ABKD, any"
        r" } \alpha)",
        SRC + "; Wang et al. 2025 (ABKD)",
        _sym_lambda0,
        _num_lambda0("abkd"),
        backs=("presets",),
    ),
]
