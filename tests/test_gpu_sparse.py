"""Sparse (top-k) teachers, vocabulary alignment and logit transforms in :mod:`gpu`, held to
:mod:`amid_ref` in float64.

The oracle is the float64 reference applied to the definitions of MATH.md (*Sparse
teachers, vocabulary alignment, logit transforms*), formed here in NumPy float64 from the
inputs: ``bucket`` is :func:`amid_ref.amid_loss` on the (k+1)-category coarse-grained pair
(its gradient chained back by q_j/q̂_★ off S), ``renormalize`` and ``uniform`` are
:func:`amid_ref.amid_loss` on the dense teacher of the table, ``pad``/``truncate`` on the
padded or cut logits, softcap and logit scale on the transformed logits (gradient times
the transform's derivative). Where :func:`amid_ref.amid_loss` takes ``teacher_topk``
itself, it is compared directly as well. Tolerances: the ``"gpu"`` rows.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref._special import log_normalize  # noqa: E402
from amid_ref._specs import SPECS  # noqa: E402
from amid_ref.contract import SPARSE_EPS_ROUNDING  # noqa: E402
from amid_ref.tolerances import SPARSE_MASS_TOL, assert_within, tolerance  # noqa: E402

INF = math.inf
NAMES = {torch.float64: "float64", torch.float32: "float32", torch.bfloat16: "bfloat16"}
#: (divergence, order, α, λ): forward/reverse KL, the paper's setting, TAID-type, bounded ones.
_GPU_DIVS = [
    name
    for name, spec in SPECS.items()
    if spec.offered_by("gpu") and not any(p.required for p in spec.params)
]
#: (divergence, order, α, λ), the divergences read from the records (the first is KL).
OBJECTIVES = tuple(
    (_GPU_DIVS[i % len(_GPU_DIVS)], order, alpha, lam)
    for i, (order, alpha, lam) in enumerate(
        [("pr", -5.0, 0.1), ("rq", 1.0, 0.5), ("qr", -1.0, 0.9), ("pr", 0.0, 0.3),
         ("rp", 3.0, 0.5), ("qr", -INF, 0.5)]
    )
)  # fmt: skip
POLICIES = ("bucket", "renormalize", "uniform")


def _log_softmax(x):
    m = np.max(x, -1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def _logsumexp(x):
    m = np.max(x, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return m + np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def _rows(rng, n, v, spread=2.0):
    s = rng.normal(size=(n, v)) * spread
    t = rng.normal(size=(n, v)) * spread
    return s, t


def _topk(t, k, pad_rows=()):
    """Top-k ids and log-probabilities of softmax(t); in ``pad_rows`` the last slot is
    padding (−1, −inf)."""
    lp = _log_softmax(t)
    idx = np.argsort(-lp, -1, kind="stable")[:, :k].copy()
    vals = np.take_along_axis(lp, idx, -1)
    for r in pad_rows:
        idx[r, -1], vals[r, -1] = -1, -INF
    return idx, vals


def oracle(s, idx, lp, policy, alpha, lam, div, order, dtype=torch.float64):
    """amid_ref float64 loss and gradient of the sparse objective, from the definitions
    (``dtype``: the one the log-probabilities were rounded to, which widens the k = V
    threshold of the mass rule by that rounding, as :mod:`gpu` documents)."""
    n, v = s.shape
    mask = np.zeros((n, v), bool)
    for r in range(n):
        mask[r, idx[r][idx[r] >= 0]] = True
    k = mask.sum(-1, keepdims=True)
    # the mass rule (amid_ref._sparse): ε at or below SPARSE_EPS_ROUNDING, or at or below
    # SPARSE_MASS_TOL with every id kept, is rounding of the sum: ε = 0
    eps = -np.expm1(_logsumexp(lp))
    full_tol = SPARSE_MASS_TOL
    if dtype != torch.float64:
        with np.errstate(invalid="ignore"):
            p_abs_l = np.where(np.isneginf(lp), 0.0, np.exp(lp) * np.abs(lp)).sum(-1, keepdims=True)
        full_tol = full_tol + 0.5 * torch.finfo(dtype).eps * p_abs_l
    rounding = (eps <= SPARSE_EPS_ROUNDING) | ((k == v) & (eps <= full_tol))
    with np.errstate(divide="ignore"):
        log_eps = np.log(np.where(rounding, 0.0, eps))
    if policy == "bucket":
        safe = np.where(idx >= 0, idx, 0)
        s_S = np.where(idx >= 0, np.take_along_axis(s, safe, -1), -INF)
        coarse_s = np.concatenate([s_S, _logsumexp(np.where(mask, -INF, s))], -1)
        coarse_t = np.concatenate([lp, log_eps], -1)  # k = V and ε kept: ★ is empty
        loss = amid_ref.amid_loss(coarse_s, coarse_t, alpha, lam, div, order)
        g_c = amid_ref.amid_grad(coarse_s, coarse_t, alpha, lam, div, order)
        q_off = np.where(mask, 0.0, np.exp(_log_softmax(s)))
        tot = q_off.sum(-1, keepdims=True)
        grad = np.where(tot > 0, q_off / np.where(tot > 0, tot, 1.0), 0.0) * g_c[:, -1:]
        for r in range(n):
            keep = idx[r] >= 0
            grad[r, idx[r][keep]] = g_c[r, :-1][keep]
        return loss, grad
    if policy == "renormalize":
        fill = np.full((n, 1), -INF)
    else:
        with np.errstate(divide="ignore"):
            fill = np.where(k < v, log_eps - np.log(np.maximum(v - k, 1)), -INF)
    t = np.where(mask, 0.0, fill + np.zeros((n, v)))
    for r in range(n):
        keep = idx[r] >= 0
        t[r, idx[r][keep]] = lp[r][keep]
    return (
        amid_ref.amid_loss(s, t, alpha, lam, div, order),
        amid_ref.amid_grad(s, t, alpha, lam, div, order),
    )


def _assert_grad(got, want, name, what):
    scale = np.maximum(1.0, np.max(np.abs(want), axis=-1, keepdims=True))
    assert_within(got / scale, want / scale, tolerance("gpu", "grad", name), what=what)


def check_sparse(s_np, idx, lp_np, dtype, policy, alpha, lam, div, order, **kwargs):
    name = NAMES[dtype]
    s = torch.tensor(s_np).to(dtype).requires_grad_()
    lp = torch.tensor(lp_np).to(dtype)
    s64, lp64 = s.detach().double().numpy(), lp.double().numpy()
    want, want_g = oracle(s64, idx, lp64, policy, alpha, lam, div, order, dtype)
    loss = gpu.amid_loss(
        s, None, alpha, lam, div, order, reduction="none",
        teacher_topk=(torch.tensor(idx), lp), leftover=policy, **kwargs,
    )  # fmt: skip
    loss.sum().backward()
    what = f"{policy} {div} {order} alpha={alpha} lam={lam} {name}"
    assert_within(loss.detach().double().numpy(), want, tolerance("gpu", "loss", name), what=what)
    _assert_grad(s.grad.double().numpy(), want_g, name, what)
    return want, want_g


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=NAMES.get)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("k", [1, 5, 16, 17])
def test_sparse_grid_small_vocab(dtype, policy, k):
    """Every policy × k ∈ {1, 5, V−1, V} × the objectives, padded slots in one row."""
    rng = np.random.default_rng(100 + k)
    s, t = _rows(rng, 3, 17)
    idx, lp = _topk(t, k, pad_rows=(1,) if k > 1 else ())
    if policy == "uniform" and k == 17:  # k = V with ε > 0 is refused (tested below)
        lp = _log_softmax(t)
        idx = np.tile(np.arange(17), (3, 1))
    for div, order, alpha, lam in OBJECTIVES:
        check_sparse(s, idx, lp, dtype, policy, alpha, lam, div, order)


@pytest.mark.parametrize("policy", POLICIES)
def test_top_v_is_the_dense_loss(policy):
    """At k = V every policy is the dense loss (MATH.md): amid_ref's dense loss is the oracle."""
    rng = np.random.default_rng(7)
    s, t = _rows(rng, 3, 23)
    lp = _log_softmax(t)
    idx = np.argsort(rng.random((3, 23)), -1)  # every id, in any order
    lp_sorted = np.take_along_axis(lp, idx, -1)
    st = torch.tensor(s, requires_grad=True)
    loss = gpu.amid_loss(
        st, None, -3.0, 0.2, reduction="none",
        teacher_topk=(torch.tensor(idx), torch.tensor(lp_sorted)), leftover=policy,
    )  # fmt: skip
    loss.sum().backward()
    tol = tolerance("gpu", "loss", "float64")
    assert_within(loss.detach().numpy(), amid_ref.amid_loss(s, t, -3.0, 0.2), tol)
    _assert_grad(st.grad.numpy(), amid_ref.amid_grad(s, t, -3.0, 0.2), "float64", policy)


@pytest.mark.parametrize(
    ("dtype", "policy"),
    [
        (torch.float64, "bucket"),
        (torch.float32, "bucket"),
        (torch.bfloat16, "bucket"),
        (torch.float32, "uniform"),
        (torch.float32, "renormalize"),
    ],
    ids=str,
)
def test_sparse_at_151936(dtype, policy):
    """Two rows at V = 151936, k = 64 (a Qwen-size vocabulary), chunked one row at a time."""
    rng = np.random.default_rng(151936)
    v = 151936
    s = rng.normal(size=(2, v)) * 2.0 - 1.1 * np.log1p(np.arange(v))
    t = rng.normal(size=(2, v)) * 2.0 - 1.1 * np.log1p(rng.permutation(v))
    idx, lp = _topk(t, 64)
    check_sparse(s, idx, lp, dtype, policy, -5.0, 0.1, "kl", "pr", chunk_size=1)


def test_softcap_scale_temperature_dense_and_sparse():
    """Scale, then cap, then temperature (MATH.md), with the transform's derivative; the
    sparse teacher's log-probabilities are used as given."""
    rng = np.random.default_rng(3)
    s, t = _rows(rng, 3, 31, spread=8.0)
    c_s, c_t, k_s, k_t, temp = 5.0, 7.0, 0.8, 1.3, 1.7

    def tr(x, k, c):
        return c * np.tanh(k * x / c)

    ds = k_s * (1.0 - np.tanh(k_s * s / c_s) ** 2)
    for div, order, alpha, lam in OBJECTIVES[:3]:
        div, order = "kl", order  # the transforms on KL in each order
        st = torch.tensor(s, requires_grad=True)
        loss = gpu.amid_loss(
            st, torch.tensor(t), alpha, lam, div, order, temperature=temp, reduction="none",
            softcap=(c_s, c_t), logit_scale=(k_s, k_t),
        )  # fmt: skip
        loss.sum().backward()
        zs, zt = tr(s, k_s, c_s), tr(t, k_t, c_t)
        want = amid_ref.amid_loss(zs, zt, alpha, lam, div, order, temperature=temp)
        want_g = amid_ref.amid_grad(zs, zt, alpha, lam, div, order, temperature=temp) * ds
        assert_within(loss.detach().numpy(), want, tolerance("gpu", "loss", "float64"))
        _assert_grad(st.grad.numpy(), want_g, "float64", f"softcap {div}")
        # temperature on the student only, dense teacher
        st.grad = None
        loss = gpu.amid_loss(
            st, torch.tensor(t), alpha, lam, div, order, temperature=temp, reduction="none",
            temperature_applies_to="student",
        )  # fmt: skip
        loss.sum().backward()
        want = amid_ref.amid_loss(s / temp, t, alpha, lam, div, order)
        want_g = amid_ref.amid_grad(s / temp, t, alpha, lam, div, order) / temp
        assert_within(loss.detach().numpy(), want, tolerance("gpu", "loss", "float64"))
        _assert_grad(st.grad.numpy(), want_g, "float64", f"student temperature {div}")
    # sparse teacher, softcapped and tempered student
    idx, lp = _topk(t, 6)
    st = torch.tensor(s, requires_grad=True)
    loss = gpu.amid_loss(
        st, None, -5.0, 0.1, reduction="none", teacher_topk=(torch.tensor(idx), torch.tensor(lp)),
        softcap=(c_s, None), temperature=temp, temperature_applies_to="student",
    )  # fmt: skip
    loss.sum().backward()
    z = tr(s, 1.0, c_s) / temp
    want, want_g = oracle(z, idx, lp, "bucket", -5.0, 0.1, "kl", "pr")
    assert_within(loss.detach().numpy(), want, tolerance("gpu", "loss", "float64"))
    dz = (1.0 - np.tanh(s / c_s) ** 2) / temp
    _assert_grad(st.grad.numpy(), want_g * dz, "float64", "sparse softcap")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=NAMES.get)
def test_vocab_alignment(dtype):
    """``pad``: −inf columns on the side with fewer ids; ``truncate``: the shared ids,
    refused when the dropped ids carry probability. The default names the parameter."""
    rng = np.random.default_rng(5)
    s, t = _rows(rng, 3, 40)
    name = NAMES[dtype]
    t_big = np.concatenate([t, np.full((3, 7), -INF)], -1)  # a teacher padded to 47
    st = torch.tensor(s).to(dtype).requires_grad_()
    s64 = st.detach().double().numpy()
    s_pad = np.concatenate([s64, np.full((3, 7), -INF)], -1)
    for alignment, want, want_g in (
        ("pad", amid_ref.amid_loss(s_pad, t_big, -3.0, 0.2),
         amid_ref.amid_grad(s_pad, t_big, -3.0, 0.2)[:, :40]),
        ("truncate", amid_ref.amid_loss(s64, t, -3.0, 0.2), amid_ref.amid_grad(s64, t, -3.0, 0.2)),
    ):  # fmt: skip
        st.grad = None
        loss = gpu.amid_loss(
            st, torch.tensor(t_big).to(dtype), -3.0, 0.2, reduction="none",
            vocab_alignment=alignment,
        )  # fmt: skip
        loss.sum().backward()
        assert_within(loss.detach().double().numpy(), want, tolerance("gpu", "loss", name))
        _assert_grad(st.grad.double().numpy(), want_g, name, alignment)
    # a student padded instead: the teacher gets −inf columns
    loss = gpu.amid_loss(
        torch.tensor(t_big), torch.tensor(s), 0.5, 0.5, reduction="none", vocab_alignment="pad"
    )
    want = amid_ref.amid_loss(t_big, np.concatenate([s, np.full((3, 7), -INF)], -1), 0.5, 0.5)
    assert_within(loss.numpy(), want, tolerance("gpu", "loss", "float64"))
    with pytest.raises(ValueError, match=r"vocab_alignment='pad'"):
        gpu.amid_loss(st, torch.tensor(t_big).to(dtype), -3.0, 0.2)
    t_mass = np.concatenate([t, np.zeros((3, 7))], -1)  # the extra ids carry mass
    with pytest.raises(ValueError, match=r"truncate.*teacher"):
        gpu.amid_loss(st, torch.tensor(t_mass).to(dtype), -3.0, 0.2, vocab_alignment="truncate")


@pytest.mark.parametrize("policy", POLICIES)
def test_fused_sparse_and_aligned(policy):
    """The fused loss with a sparse teacher (no teacher hidden states or weight), softcapped
    inside the chunk loop, equals the loss on its logits; a teacher lm_head with more rows
    is aligned per chunk."""
    rng = np.random.default_rng(11)
    n, v, h = 5, 29, 6
    hid = torch.tensor(rng.normal(size=(n, h)), requires_grad=True)
    w = torch.tensor(rng.normal(size=(v, h)), requires_grad=True)
    idx, lp = _topk(rng.normal(size=(n, v)) * 2, 4, pad_rows=(2,))
    loss = gpu.amid_fused_linear_loss(
        hid, w, None, None, -5.0, 0.1, teacher_topk=(torch.tensor(idx), torch.tensor(lp)),
        leftover=policy, softcap=(3.0, None), reduction="sum", chunk_size=2,
    )  # fmt: skip
    loss.backward()
    logits = (hid @ w.T).detach().numpy()
    want, g = oracle(3.0 * np.tanh(logits / 3.0), idx, lp, policy, -5.0, 0.1, "kl", "pr")
    g = g * (1.0 - np.tanh(logits / 3.0) ** 2)
    tol = tolerance("gpu", "loss", "float64")
    assert_within(loss.item(), want.sum(), tol)
    _assert_grad(hid.grad.numpy(), g @ w.detach().numpy(), "float64", "fused hidden grad")
    _assert_grad(w.grad.numpy(), g.T @ hid.detach().numpy(), "float64", "fused weight grad")
    # teacher lm_head padded to more rows (zero-mass rows: -inf bias), pad and truncate
    th, tw = torch.tensor(rng.normal(size=(n, h))), torch.tensor(rng.normal(size=(v + 3, h)))
    tb = torch.cat([torch.zeros(v), torch.full((3,), -INF)]).double()
    t_logits = (th @ tw.T + tb).numpy()
    for alignment in ("pad", "truncate"):
        got = gpu.amid_fused_linear_loss(
            hid, w, th, tw, 0.0, 0.5, teacher_bias=tb, vocab_alignment=alignment,
            reduction="none",
        )  # fmt: skip
        want = amid_ref.amid_loss(logits, t_logits[:, :v], 0.0, 0.5)
        assert_within(got.detach().numpy(), want, tol, what=alignment)
    with pytest.raises(ValueError, match="vocab_alignment"):
        gpu.amid_fused_linear_loss(hid, w, th, tw, 0.0, 0.5, teacher_bias=tb)


def test_module_takes_the_configuration():
    rng = np.random.default_rng(2)
    s, t = _rows(rng, 2, 13)
    idx, lp = _topk(t, 3)
    crit = gpu.AMiDLoss(-5.0, 0.1, leftover="uniform", reduction="none")
    got = crit(torch.tensor(s), teacher_topk=(torch.tensor(idx), torch.tensor(lp)))
    want, _ = oracle(s, idx, lp, "uniform", -5.0, 0.1, "kl", "pr")
    assert_within(got.numpy(), want, tolerance("gpu", "loss", "float64"))


def test_reference_takes_teacher_topk():
    """Where amid_ref has the sparse API, gpu equals it directly (every policy)."""
    if "teacher_topk" not in inspect.signature(amid_ref.amid_loss).parameters:
        pytest.skip("amid_ref.amid_loss has no teacher_topk parameter in this tree")
    rng = np.random.default_rng(9)
    s, t = _rows(rng, 3, 19)
    idx, lp = _topk(t, 5, pad_rows=(0,))
    for policy in POLICIES:
        want = amid_ref.amid_loss(s, None, -5.0, 0.1, teacher_topk=(idx, lp), leftover=policy)
        got = gpu.amid_loss(
            torch.tensor(s), None, -5.0, 0.1, reduction="none",
            teacher_topk=(torch.tensor(idx), torch.tensor(lp)), leftover=policy,
        )  # fmt: skip
        assert_within(got.numpy(), want, tolerance("gpu", "loss", "float64"), what=policy)


def _bad(**kwargs):
    s = torch.zeros(2, 6)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    lp = torch.full((2, 3), math.log(0.2))
    args = {"teacher_topk": (idx, lp)}
    args.update(kwargs)
    return gpu.amid_loss(s, args.pop("teacher_logits", None), 0.0, 0.5, **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"teacher_topk": (torch.tensor([[0, 0, 2], [3, 4, 5]]), torch.full((2, 3), -2.0))},
         ValueError, "duplicate"),
        ({"teacher_topk": (torch.tensor([[0, 6, 2], [3, 4, 5]]), torch.full((2, 3), -2.0))},
         ValueError, "out of range"),
        ({"teacher_topk": (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.full((2, 3), -0.5))},
         ValueError, "above 1"),
        ({"teacher_topk": (torch.arange(7).repeat(2, 1), torch.full((2, 7), -3.0))},
         ValueError, "exceeds the vocabulary"),
        ({"teacher_topk": (torch.tensor([[0, 1, 2], [3, 4, 5]]),
                           torch.tensor([[-2.0, math.nan, -2.0], [-2.0, -2.0, -2.0]]))},
         ValueError, "NaN"),
        ({"teacher_topk": (torch.tensor([[0, 1, -1], [3, 4, 5]]), torch.full((2, 3), -2.0))},
         ValueError, "padded slot"),
        ({"teacher_topk": (torch.tensor([[0, 1]]), torch.full((1, 2), -2.0))},
         ValueError, "shape"),
        ({"teacher_logits": torch.zeros(2, 6)}, ValueError, "both given"),
        ({"teacher_topk": None}, ValueError, "teacher_topk is None"),
        ({"leftover": "zero"}, ValueError, "leftover"),
        ({"softcap": 0.0}, ValueError, "softcap"),
        ({"logit_scale": -1.0}, ValueError, "logit_scale"),
        ({"temperature": 2.0}, ValueError, "temperature_applies_to='student'"),
        ({"teacher_topk": (torch.arange(6).repeat(2, 1), torch.full((2, 6), -2.0)),
          "leftover": "uniform"}, ValueError, "uniform"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)  # fmt: skip
def test_bad_sparse_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        _bad(**kwargs)


def _row_with_leftover(t, k, eps):
    """Log-probabilities of the top-k of softmax(t) (one row) scaled to leave ε off S, and
    the ε that amid_ref reads back from them (−expm1(logsumexp ℓ_S), float64)."""
    idx = np.argsort(-t, kind="stable")[:k]
    lp = _log_softmax(t[idx][None])[0] + math.log1p(-eps)
    return idx, lp, float(-np.expm1(_logsumexp(lp[None]))[0, 0])


@pytest.mark.parametrize(
    ("threshold", "side"),
    [(t, side) for t in ("SPARSE_EPS_ROUNDING", "SPARSE_MASS_TOL") for side in ("below", "above")],
)
def test_leftover_rounding_rule_is_the_reference(threshold, side):
    """A leftover ε just below / above SPARSE_EPS_ROUNDING (k < V) and SPARSE_MASS_TOL
    (k = V): at or below, ε is rounding and taken as 0, above it is kept (amid_ref's mass
    rule; ε is computed as amid_ref computes it, in float64). Objectives that tell ε = 0
    from ε > 0 by a +inf: KL(q̂‖p̂) (order ``qr``, λ = 1)
    is +inf when the teacher's ★ is empty and the student's is not; KL(p̂‖q̂) (``pr``,
    λ = 0) is +inf when the teacher keeps ε on the student's empty ★ (k = V)."""
    rng = np.random.default_rng(21)
    v = 9
    s, t = rng.normal(size=(1, v)), rng.normal(size=v) * 2.0
    factor = 0.75 if side == "below" else 1.25
    if threshold == "SPARSE_EPS_ROUNDING":
        k, limit, order, lam = v - 3, SPARSE_EPS_ROUNDING, "qr", 1.0
    else:
        k, limit, order, lam = v, SPARSE_MASS_TOL, "pr", 0.0
        factor = 1.0 - 1e-6 if side == "below" else 1.0 + 1e-6
    idx, lp, eps = _row_with_leftover(t, k, limit * factor)
    # The student's mass off S is ~1e-11: the ★ term q̂_★·log(q̂_★/ε) is then finite and
    # small for a kept ε, so that the few ulps by which two float64 ε may differ (relative
    # 1e-2 of ε ~ 1e-14) stay below the loss tolerance, and +inf for ε = 0.
    s[0, np.setdiff1d(np.arange(v), idx)] -= 25.0
    assert (eps <= limit) == (side == "below"), (eps, limit)  # the row is where it should be
    topk = (idx[None], lp[None])
    for policy in ("bucket", "uniform", "renormalize"):
        kwargs = dict(teacher_topk=topk, leftover=policy)
        if policy == "uniform" and k == v and side == "above":
            with pytest.raises(ValueError, match="uniform"):
                amid_ref.amid_loss(s, None, 0.0, lam, "kl", order, **kwargs)
            with pytest.raises(ValueError, match="uniform"):
                gpu.amid_loss(torch.tensor(s), None, 0.0, lam, "kl", order,
                              teacher_topk=(torch.tensor(idx[None]), torch.tensor(lp[None])),
                              leftover=policy)  # fmt: skip
            continue
        want = amid_ref.amid_loss(s, None, 0.0, lam, "kl", order, **kwargs)
        got = gpu.amid_loss(
            torch.tensor(s), None, 0.0, lam, "kl", order, reduction="none",
            teacher_topk=(torch.tensor(idx[None]), torch.tensor(lp[None])), leftover=policy,
        )  # fmt: skip
        what = f"{threshold} {side} {policy}"
        assert_within(got.numpy(), want, tolerance("gpu", "loss", "float64"), what=what)
        if policy == "bucket":  # the case that tells the two sides apart
            assert bool(np.isinf(want[0])) == (side == ("below" if k < v else "above")), what


def _row_with_logsumexp(target: float, gap: float) -> np.ndarray:
    """Two log-probabilities ``[a, a − gap]`` whose log-sum-exp as amid_ref forms it
    (:func:`amid_ref._special.log_normalize`, float64) is ``target`` exactly: ``a`` is
    stepped by ulps from ``target − log1p(e^−gap)``."""
    a = target - math.log1p(math.exp(-gap))
    for _ in range(64):
        lse = float(log_normalize(np.array([a, a - gap]))[1][0])
        if lse == target:
            return np.array([a, a - gap])
        a = float(np.nextafter(a, INF if lse < target else -INF))
    raise AssertionError(f"no row with log-sum-exp {target!r}")


def _outcome(loss, *args, **kwargs) -> str:
    """The word "accepted", or the message of the mass-above-1 error ``loss(...)`` raised."""
    try:
        loss(*args, **kwargs)
    except ValueError as exc:
        assert "sum to P_S" in str(exc), exc
        return str(exc)
    return "accepted"


#: A mass tolerance at which ``expm1(lse) > tol`` and ``lse > log1p(tol)`` disagree on a
#: float64 neighbour of log1p(tol) (found by scanning 3000 tolerances in [1e-6, 1e-2]).
_TOL_WHERE_THE_FORMS_DIFFER = 5.946454306285815e-4


@pytest.mark.parametrize("mass_tol", [SPARSE_MASS_TOL, _TOL_WHERE_THE_FORMS_DIFFER])
def test_mass_above_one_boundary_is_the_reference(monkeypatch, mass_tol):
    """Kept log-probabilities whose log-sum-exp is log1p(SPARSE_MASS_TOL) or one of its
    float64 neighbours (three ulps either side; one id, and two ids whose sum is formed):
    gpu.amid_loss refuses exactly the rows amid_ref refuses (the same float64 test of the
    log-sum-exp; the sharded loss checks through the same function), and both sides of the
    boundary occur. Also at a tolerance where a test of expm1(lse) would disagree."""
    import amid_ref._sparse
    import amid_ref.tolerances

    monkeypatch.setattr(amid_ref.tolerances, "SPARSE_MASS_TOL", mass_tol)
    monkeypatch.setattr(amid_ref._sparse, "SPARSE_MASS_TOL", mass_tol)
    boundary = math.log1p(mass_tol)
    targets = [boundary]
    for _ in range(3):
        targets = [float(np.nextafter(targets[0], -INF)), *targets]
        targets = [*targets, float(np.nextafter(targets[-1], INF))]
    s = np.random.default_rng(5).normal(size=(1, 6))
    refused = []
    for target in targets:
        for lp in (np.array([target]), _row_with_logsumexp(target, 23.0)):
            idx = np.arange(len(lp))[None]
            topk_t = (torch.tensor(idx), torch.tensor(lp[None]))
            outcome = [
                _outcome(amid_ref.amid_loss, s, None, -5.0, 0.1, teacher_topk=(idx, lp[None])),
                _outcome(gpu.amid_loss, torch.tensor(s), None, -5.0, 0.1, teacher_topk=topk_t),
            ]
            assert outcome[0] == outcome[1], (target, lp, outcome)
            refused.append(outcome[0] != "accepted")
    assert any(refused) and not all(refused)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rounding_leftover_is_zero_as_in_amid_ref(dtype):
    """A leftover ε ≤ SPARSE_EPS_ROUNDING (here ~1e-15: an id whose probability is below
    float64 rounding of the kept sum, left out) is 0, by amid_ref's rule: at α ≥ 1 the
    assistant then has no mass off the kept ids, so D(q‖r) is +inf where amid_ref says so
    (a tiny ε would give a finite loss), and α = 1 equals amid_ref too; in float32 as well
    (ε recomputed there would be rounding of order 1e-7)."""
    from amid_ref.contract import SPARSE_EPS_ROUNDING

    t = np.array([[2.0, 1.0, 0.0, 0.5, -1.0, -32.0], [0.3, -0.2, 1.5, 0.0, 2.5, -32.0]])
    lp = _log_softmax(t)
    eps = np.exp(lp[:, -1])
    assert (1e-16 < eps).all() and (eps < SPARSE_EPS_ROUNDING).all()
    idx = np.tile(np.arange(5), (2, 1))
    topk_np = (idx, lp[:, :5])
    s = np.array([[0.1, 0.4, -0.3, 0.2, 0.0, 0.7], [1.0, 0.0, -1.0, 0.5, 0.2, -0.4]])
    s = torch.tensor(s, dtype=dtype).double().numpy()  # the dtype-rounded student
    topk = (torch.tensor(idx), torch.tensor(lp[:, :5], dtype=dtype))
    for alpha, order in ((INF, "qr"), (1.0, "rq"), (1.0, "qr")):
        for policy in POLICIES:
            kw = {"leftover": policy}
            want = amid_ref.amid_loss(s, None, alpha, 0.5, "kl", order, teacher_topk=topk_np, **kw)
            got = gpu.amid_loss(
                torch.tensor(s, dtype=dtype), None, alpha, 0.5, "kl", order,
                reduction="none", teacher_topk=topk, **kw,
            )  # fmt: skip
            tol = tolerance("gpu", "loss", NAMES[dtype])
            assert_within(got.double().numpy(), want, tol, what=f"{alpha} {order} {policy}")


def test_leftover_keeps_its_relative_accuracy_near_one():
    """P_S within 1e-12 of 1 (a wide teacher row whose top-3 hold nearly all the mass):
    ε = −expm1(logsumexp ℓ_S) is formed from an exact log-sum-exp (max + log1p(others)),
    so log ε, and with it the loss at α = 1 (where ★'s assistant mass is ε^λ q★^(1−λ)),
    equals amid_ref to the gpu rows; torch.logsumexp's rounding (~1e-16 absolute in lse)
    put ε off by ~1e-5 relative and the loss by as much."""
    t = np.array([[30.0, 4.0, 2.0, -5.0, -9.0, 3.0, -2.0]])
    lp = _log_softmax(t)
    idx = np.array([[0, 1, 5]])
    eps = -np.expm1(_logsumexp(lp[:, [0, 1, 5]]))
    assert 1e-13 < eps[0, 0] < 1e-10
    s = np.array([[2.0, -1.0, 0.5, 9.0, 1.0, 0.0, 3.0]])
    topk = (torch.tensor(idx), torch.tensor(lp[:, [0, 1, 5]]))
    for policy in POLICIES:
        for alpha, order in ((1.0, "rq"), (0.5, "pr")):
            kw = {"leftover": policy}
            want = amid_ref.amid_loss(
                s, None, alpha, 0.5, "kl", order, teacher_topk=(idx, lp[:, [0, 1, 5]]), **kw
            )
            got = gpu.amid_loss(
                torch.tensor(s), None, alpha, 0.5, "kl", order, reduction="none",
                teacher_topk=topk, **kw,
            )  # fmt: skip
            tol = tolerance("gpu", "loss", "float64")
            assert_within(got.numpy(), want, tol, what=f"{policy} {alpha} {order}")
