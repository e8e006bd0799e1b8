"""Claims about sparse (top-k) teachers (mathematics page, "Sparse teachers, vocabulary
alignment, logit transforms"): each leftover policy gives a distribution, top-V is the dense
loss, ``bucket`` is the dense loss of the coarse-grained pair (with its gradient share), the
optimum each policy keeps (Theorem 3.4 applied to the policy's pair), and the dense-vs-sparse
gap of KD's KL(p‖q) as an exact identity in ε with its bound."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import sympy as sp

import amid_ref
from amid_ref.contract import LEFTOVER_POLICIES, SPECS, check_teacher_topk
from amid_ref.contract import sparse_pair as _sparse_pair
from proofs_check._core import Claim
from proofs_check._numeric import check
from proofs_check._symbolic import prove_zero, require

__all__ = ["CLAIMS"]

SRC = "mathematics page, Sparse teachers"
# two kept ids and two off S: enough for every sum and share to be generic
P1, P2, P3, P4 = sp.symbols("p1:5", positive=True)
S1, S2, S3, S4 = sp.symbols("s1:5", real=True)


def _teacher(seed: int, v: int = 6, k: int = 3, eps: float = 0.3):
    """Student logits (v,), the dense teacher's log-probabilities (v,) whose mass off the k
    kept ids is ``eps``, and the sparse teacher (ids, logprobs)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=2.0, size=v)
    z = rng.normal(scale=2.0, size=v)
    ids = rng.permutation(v)[:k]
    off = np.setdiff1d(np.arange(v), ids)
    lp = np.empty(v)
    lp[ids] = z[ids] - np.log(np.exp(z[ids]).sum()) + np.log1p(-eps)
    lp[off] = z[off] - np.log(np.exp(z[off]).sum()) + np.log(eps)
    return s, lp, (ids, lp[ids])


def _sym_distribution() -> str:
    p_s = P1 + P2
    eps = 1 - p_s
    out = [prove_zero((P1 + P2 + eps) - 1, "bucket teacher: Σ_S p + ε = 1")]
    q = [sp.exp(x) / sum(sp.exp(y) for y in (S1, S2, S3, S4)) for x in (S1, S2, S3, S4)]
    out.append(prove_zero(q[0] + q[1] + (q[2] + q[3]) - 1, "bucket student: Σ_S q + q★ = 1"))
    out.append(prove_zero(P1 / p_s + P2 / p_s - 1, "renormalize: Σ_S p/P_S = 1"))
    n_off = 2
    out.append(prove_zero(P1 + P2 + n_off * (eps / n_off) - 1, "uniform: P_S + (V−k)·ε/(V−k)"))
    return "; ".join(out)


def _num_distribution() -> str:
    n = 0
    for seed in range(4):
        s, _, topk = _teacher(seed, eps=[1e-12, 0.3, 0.9, 1 - 1e-9][seed])
        lq = s - np.log(np.exp(s).sum())
        for leftover in LEFTOVER_POLICIES:
            sparse = check_teacher_topk(topk, s.shape, "error")
            lq_hat, lp_hat, _ = _sparse_pair(leftover, sparse, lq)
            for arr, what in ((lp_hat, "p̂"), (lq_hat, "q̂")):
                total = mp.fsum(mp.exp(mp.mpf(float(x))) for x in arr if np.isfinite(x))
                require(bool(abs(total - 1) < 1e-13), f"{leftover} {what} sums to {total}")
                n += 1
    return f"{n} pairs (ε from 1e-12 to 1 − 1e-9) sum to 1 within 1e-13"


def _sym_top_v() -> str:
    # at k = V: ε = 1 − Σ_V p = 0, the star holds no id (q★ = 0, p★ = 0: a 0/0 category
    # contributes 0 by the convention of every divergence), P_S = 1, no id off S.
    eps = 1 - (P1 + P2 + P3 + (1 - P1 - P2 - P3))
    return prove_zero(eps, "ε at k = V") + "; the star is a (0, 0) category, P_S = 1"


def _num_top_v() -> str:
    n = 0
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    lp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    ids = np.tile(np.arange(5), (2, 1))
    for name, spec in SPECS.items():
        if not spec.cases_for("grid"):
            continue
        params = spec.cases_for("grid")[0]
        for leftover in LEFTOVER_POLICIES:
            for alpha, order in ((-5.0, "pr"), (1.0, "rq"), (np.inf, "qr"), (0.5, "rp")):
                dense = amid_ref.amid_loss(s, t, alpha, 0.3, name, order, params)
                sparse = amid_ref.amid_loss(
                    s, None, alpha, 0.3, name, order, params,
                    teacher_topk=(ids, lp), leftover=leftover,
                )  # fmt: skip
                check(sparse, dense, "loss", f"{name} {order} {leftover}")
                n += 1
    return f"{n} (divergence, order, α, policy) cases at k = V equal the dense loss"


def _sym_bucket() -> str:
    z = sum(sp.exp(x) for x in (S1, S2, S3, S4))
    star = sp.log(sp.exp(S3) + sp.exp(S4))  # the coarse logit of ★
    coarse_z = sp.exp(S1) + sp.exp(S2) + sp.exp(star)
    a = prove_zero(coarse_z - z, "the coarse logits (s_S, logsumexp s_off) have the same Z")
    share = sp.diff(star, S3) - (sp.exp(S3) / z) / ((sp.exp(S3) + sp.exp(S4)) / z)
    b = prove_zero(share, "∂ŝ★/∂s_j = q_j/q★ (the ids off S share ★'s gradient)")
    return f"{a}; {b}"


def _num_bucket() -> str:
    n = 0
    for seed in range(3):
        s, _, (ids, lps) = _teacher(seed, eps=[0.3, 1e-9, 0.99][seed])
        off = np.setdiff1d(np.arange(s.size), ids)
        eps = -np.expm1(np.logaddexp.reduce(lps))
        coarse_t = np.append(lps, np.log(eps))
        coarse_s = np.append(s[ids], np.logaddexp.reduce(s[off]))
        for alpha, order in ((-3.0, "pr"), (1.0, "rq"), (0.0, "qr")):
            kw = {"teacher_topk": (ids, lps), "leftover": "bucket"}
            want = amid_ref.amid_loss(coarse_s, coarse_t, alpha, 0.4, "kl", order)
            check(amid_ref.amid_loss(s, None, alpha, 0.4, "kl", order, **kw), want, "loss", "")
            g_coarse = amid_ref.amid_grad(coarse_s, coarse_t, alpha, 0.4, "kl", order)
            g = amid_ref.amid_grad(s, None, alpha, 0.4, "kl", order, **kw)
            q_off = np.exp(s[off] - np.logaddexp.reduce(s[off]))
            check(g[ids], g_coarse[:-1], "grad", "kept ids")
            check(g[off], g_coarse[-1] * q_off, "grad", "ids off S")
            n += 1
    return f"{n} rows: bucket = dense loss of the coarse pair, gradients shared by q_j/q★"


def _sym_optimum() -> str:
    # Theorem 3.4 applies to any pair of distributions on a common finite space; the
    # policies' pairs are distributions (sparse.distribution). What q̂ = p̂ means for q:
    eps = 1 - P1 - P2
    q3, q4 = sp.symbols("q3 q4", positive=True)
    bucket = prove_zero((q3 + q4).subs(q4, eps - q3) - eps, "bucket: any split with q(V∖S) = ε")
    return (
        f"{bucket}; uniform: q̂ = q = p̂ is the one dense distribution; renormalize: "
        "q̂ = q = p(·|S) has q = 0 off S, reached only as the student's logits off S → −∞"
    )


def _num_optimum() -> str:
    s, _, (ids, lps) = _teacher(3, eps=0.2)
    off = np.setdiff1d(np.arange(s.size), ids)
    eps = -np.expm1(np.logaddexp.reduce(lps))
    rng = np.random.default_rng(1)
    n = 0
    for alpha, lam, name, order in ((-5.0, 0.1, "kl", "pr"), (1.0, 0.5, "tv", "rq"),
                                    (3.0, 0.9, "hellinger", "qr")):  # fmt: skip
        kw = {"teacher_topk": (ids, lps)}
        # bucket: the teacher on S, ε split at random off S -> loss 0
        split = rng.dirichlet(np.ones(off.size)) * eps
        q = np.empty(s.size)
        q[ids], q[off] = np.exp(lps), split
        loss = amid_ref.amid_loss(np.log(q), None, alpha, lam, name, order, **kw)
        require(bool(abs(loss) < 1e-12), f"bucket loss at a random split off S: {loss}")
        # uniform: the optimum is p̂ itself, and a random split is not optimal
        q_u = q.copy()
        q_u[off] = eps / off.size
        kw_u = {**kw, "leftover": "uniform"}
        loss_u = amid_ref.amid_loss(np.log(q_u), None, alpha, lam, name, order, **kw_u)
        require(bool(abs(loss_u) < 1e-12), f"uniform loss at p̂: {loss_u}")
        away = amid_ref.amid_loss(np.log(q), None, alpha, lam, name, order, **kw_u)
        require(bool(away > 1e-6), f"uniform loss at a non-uniform split: {away}")
        # renormalize: decreasing to 0 as the mass off S → 0
        kw_r = {**kw, "leftover": "renormalize"}
        values = []
        for delta in (1e-2, 1e-5, 1e-9):
            q_r = np.empty(s.size)
            q_r[ids] = np.exp(lps) / np.exp(lps).sum() * (1 - delta)
            q_r[off] = delta / off.size
            values.append(amid_ref.amid_loss(np.log(q_r), None, alpha, lam, name, order, **kw_r))
        require(bool(values[0] > values[1] > values[2] >= 0 and values[2] < 1e-6), f"{values}")
        n += 1
    return f"{n} objectives: bucket 0 at every split of ε, uniform 0 only at p̂, renormalize → 0"


def _sym_gap() -> str:
    # KD (λ = 0, r = q): KL(p‖q) − KL(p̂‖q̂) = ε·KL(p(·|off) ‖ q(·|off)) (chain rule)
    q1, q2, q3, q4 = sp.symbols("q1:5", positive=True)
    eps, qs = P3 + P4, q3 + q4
    dense = sum(p * sp.log(p / q) for p, q in ((P1, q1), (P2, q2), (P3, q3), (P4, q4)))
    coarse = P1 * sp.log(P1 / q1) + P2 * sp.log(P2 / q2) + eps * sp.log(eps / qs)
    cond = (P3 / eps) * sp.log((P3 / eps) / (q3 / qs)) + (P4 / eps) * sp.log((P4 / eps) / (q4 / qs))
    identity = sp.expand_log(dense - coarse - eps * cond, force=True)
    return prove_zero(identity, "KL(p‖q) − KL(p̂‖q̂) = ε·KL(p(·|off)‖q(·|off))") + (
        "; hence 0 ≤ gap ≤ ε·log(q★/min_{j∉S} q_j) (KL(a‖b) ≤ log max_j a_j/b_j ≤ −log min b)"
    )


def _num_gap() -> str:
    worst = 0.0
    n = 0
    for seed in range(6):
        for eps in (1e-12, 1e-3, 0.3, 1 - 1e-9):
            s, lp, (ids, _) = _teacher(seed, v=8, k=3, eps=eps)
            off = np.setdiff1d(np.arange(s.size), ids)
            lq = s - np.log(np.exp(s).sum())
            if seed % 2 == 0:  # the worst row: p off S all on the student's least likely id
                lp = lp.copy()
                lp[off] = -np.inf
                lp[off[np.argmin(lq[off])]] = np.log(eps)
            dense = mp.mpf(float(amid_ref.amid_loss(s, lp, 0.0, 0.0)))
            topk = (ids, lp[ids])
            sparse = mp.mpf(float(amid_ref.amid_loss(s, None, 0.0, 0.0, teacher_topk=topk)))
            q = [mp.exp(mp.mpf(float(x))) for x in lq]
            q_star = mp.fsum(q[j] for j in off)
            bound = eps * mp.log(q_star / min(q[j] for j in off))
            gap = dense - sparse
            tol = 1e-12 * (1 + abs(dense))
            require(bool(-tol <= gap <= bound + tol), f"gap {gap} outside [0, {bound}] at ε={eps}")
            if seed % 2 == 0 and bound > 0:
                worst = max(worst, float(gap / bound))
            n += 1
    require(bool(worst > 0.999), f"the worst rows reach only {worst} of the bound")
    return f"{n} rows inside [0, ε·log(q★/min q_off)]; the worst rows attain it ({worst:.12f})"


CLAIMS = [
    Claim(
        "sparse.distribution",
        r"\text{bucket, renormalize, uniform: } \hat p, \hat q \in \Delta",
        SRC,
        _sym_distribution,
        _num_distribution,
        backs=("amid_loss", "amid_grad"),
    ),
    Claim(
        "sparse.top_v_dense",
        r"k = V:\ \mathcal L_{\text{policy}}(\ell_S, q) = \mathcal L(p, q)"
        r" \text{ for every policy}",
        SRC,
        _sym_top_v,
        _num_top_v,
        backs=("amid_loss",),
    ),
    Claim(
        "sparse.bucket_coarse_grained",
        r"\mathcal L_{\text{bucket}} = \mathcal L(\hat p, \mathrm{softmax}(s_S,"
        r" \log\textstyle\sum_{j\notin S} e^{s_j})),\ \partial_{s_j} = \partial_{\hat s_\star}"
        r" q_j/q_\star",
        SRC,
        _sym_bucket,
        _num_bucket,
        backs=("amid_loss", "amid_grad"),
    ),
    Claim(
        "sparse.optimum",
        r"0<\lambda<1:\ \mathcal L = 0 \iff \hat q = \hat p:\ \text{bucket: } q_S = p_S,"
        r" q(V\setminus S) = \varepsilon;\ \text{uniform: } q = \hat p;\ \text{renormalize: }"
        r" q \to p(\cdot|S)",
        SRC + "; Theorem 3.4 applied to the policy's pair",
        _sym_optimum,
        _num_optimum,
        backs=("amid_loss",),
    ),
    Claim(
        "sparse.kd_gap",
        r"\lambda = 0:\ \mathrm{KL}(p\|q) - \mathrm{KL}(\hat p\|\hat q)"
        r" = \varepsilon\,\mathrm{KL}(p(\cdot|\bar S)\|q(\cdot|\bar S))"
        r" \in [0,\ \varepsilon \log(q_\star/\min_{j\notin S} q_j)]",
        SRC + "; the chain rule of KL",
        _sym_gap,
        _num_gap,
        backs=("amid_loss",),
    ),
]
