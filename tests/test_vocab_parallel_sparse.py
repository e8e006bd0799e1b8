"""The vocabulary-parallel loss with a sparse (top-k) teacher, and vocabularies of different
sizes, over torch.distributed (gloo, CPU).

The worker pools of tests/_sharded.py (world sizes 2 and 3) run each case on every
rank: the student's logits sharded over the vocabulary, the sparse teacher ``(indices,
logprobs)`` of global ids replicated. The replicated loss and the gathered gradient are held
to :func:`gpu.amid_loss` with the same ``teacher_topk`` on the full rows (float64: the
``"vocab_parallel"`` rows of :mod:`amid_ref.tolerances`) and to :func:`amid_ref.amid_loss` /
:func:`amid_ref.amid_grad` with that ``teacher_topk`` in float64 (the ``"gpu"`` rows).
Where the unsharded loss raises, every rank must raise the same error with the same message.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from _sharded import (  # noqa: E402 (tests/ is on sys.path)
    DIVERGENCES,
    Pool,
    _agreed,
    _bounds,
    _grad_within,
    _log_softmax,
    _logits,
    _outcome,
    _started_pools,
)

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

INF = math.inf
POLICIES = ("bucket", "renormalize", "uniform")
#: (order, α, λ): α through ±inf and 1, λ inside and at the ends; each paired with the
#: divergences the gpu package offers (their records' parameters) in turn.
SETTINGS = (
    ("pr", -5.0, 0.1),
    ("rq", 1.0, 0.5),
    ("qr", INF, 0.5),
    ("pr", -INF, 0.3),
    ("rp", 0.0, 1.0),
    ("qr", 3.0, 0.0),
    ("pr", 1.0 + 1e-6, 0.7),
    ("rq", -1.0, 0.5),
)
OBJECTIVES = tuple(
    (*DIVERGENCES[i % len(DIVERGENCES)], *setting) for i, setting in enumerate(SETTINGS * 2)
)


@pytest.fixture(scope="module")
def pools(request):
    yield from _started_pools(request.module.__name__)


# --- the job (run in the workers) -----------------------------------------------------------


def _inputs(c: dict, rank: int | None):
    """The student's logits (this rank's columns, or all for ``rank=None``) and the
    teacher: ``teacher_topk`` tensors (replicated) or dense logits."""
    lo, hi = (0, None) if rank is None else c["bounds"][rank]
    dtype = getattr(torch, c["dtype"])
    s = torch.tensor(c["s"][..., lo:hi], dtype=dtype, requires_grad=c.get("grad", True))
    if "topk" in c:
        idx, lp = c["topk"] if rank is None else c.get("topk_of_rank", {}).get(rank, c["topk"])
        return s, None, (torch.tensor(idx), torch.tensor(lp, dtype=dtype))
    t = c["t"]
    if rank is not None:
        lo_t, hi_t = c.get("bounds_t", c["bounds"])[rank]
        t = t[..., lo_t:hi_t]
    return s, torch.tensor(t, dtype=dtype), None


def _sharded(c: dict, rank: int):
    """The outcome of the sharded loss (function or module form) on this rank."""
    s, t, topk = _inputs(c, rank)
    labels = None if c.get("labels") is None else torch.tensor(c["labels"])

    kw = c.get("kw_of_rank", {}).get(rank, c["kw"])

    def loss():
        if c.get("module"):
            return gpu.VocabParallelAMiDLoss(**kw)(s, t, labels, teacher_topk=topk)
        return gpu.vocab_parallel_amid_loss(s, t, labels=labels, teacher_topk=topk, **kw)

    return _outcome(loss, s, c)


def _job(rank: int, world: int, cases: list[dict]) -> list:
    return [_sharded(c, rank) for c in cases]


# --- data and comparison --------------------------------------------------------------------


def _unsharded(c: dict):
    s, t, topk = _inputs(c, None)
    labels = None if c.get("labels") is None else torch.tensor(c["labels"])
    kw = {k: v for k, v in c["kw"].items() if k != "chunk_size"}
    return _outcome(lambda: gpu.amid_loss(s, t, labels=labels, teacher_topk=topk, **kw), s, c)


def _oracle(c: dict, loss, grad, what: str) -> None:
    """amid_ref float64 with the same ``teacher_topk`` (on the dtype-rounded inputs)."""
    kw = dict(c["kw"])
    assert kw.pop("reduction") == "none" and c.get("labels") is None and "upstream" not in c
    dtype = getattr(torch, c["dtype"])
    s = torch.tensor(c["s"], dtype=dtype).double().numpy()
    idx, lp = c["topk"]
    lp = torch.tensor(lp, dtype=dtype).double().numpy()
    args = [kw.pop("alpha"), kw.pop("lam"), kw.pop("divergence", "kl"), kw.pop("order", "pr")]
    args.append(kw.pop("div_params"))
    temperature = kw.pop("temperature", 1.0)
    kw.pop("chunk_size", None)
    want = amid_ref.amid_loss(s, None, *args, temperature, teacher_topk=(idx, lp), **kw)
    assert_within(loss, want, tolerance("gpu", "loss", c["dtype"]), what=what + " vs amid_ref")
    if grad is not None:
        want_g = amid_ref.amid_grad(s, None, *args, temperature, teacher_topk=(idx, lp), **kw)
        tol = tolerance("gpu", "grad", c["dtype"])
        _grad_within(grad, want_g, tol, what + " grad vs amid_ref", want)


def _check(pool: Pool, cases: list[dict]) -> int:
    """Every rank's outcome against the unsharded loss's (and amid_ref's); returns the number
    of cases where they all raised."""
    answers = pool.run(_job, cases)
    for k, a in enumerate(answers):
        assert a[0] == "ok", f"rank {k} failed: {a}"
    n_raised = 0
    for i, c in enumerate(cases):
        what = f"world={pool.world} {c['dtype']} bounds={c['bounds']} {c['kw']}"
        got = [answers[k][1][i] for k in range(pool.world)]
        want = c.get("want") or _unsharded(c)
        agreed = _agreed(what, got, want, c["dtype"], contains="want" in c)
        if agreed is None:
            n_raised += 1
            continue
        loss, grad = agreed
        plain = c.get("labels") is None and c.get("upstream") is None
        if c["kw"].get("reduction") == "none" and plain and "topk" in c:
            _oracle(c, loss, grad, what)
    return n_raised


def _topk(t: np.ndarray, k: int, *, within=None, pad_rows=(), exact_rows=()):
    """Top-k ids and log-probabilities of softmax(t) (global ids); ``within=(lo, hi)`` takes
    the top k among the ids [lo, hi) only (all on one rank); in ``pad_rows`` the last slot
    is padding (−1, −inf); in ``exact_rows`` the teacher is renormalized on its k ids
    (ε = 0)."""
    lp = _log_softmax(t)
    lo, hi = within or (0, t.shape[-1])
    idx = lo + np.argsort(-lp[:, lo:hi], -1, kind="stable")[:, :k]
    vals = np.take_along_axis(lp, idx, -1)
    for r in exact_rows:
        vals[r] = _log_softmax(vals[r])
    for r in pad_rows:
        idx[r, -1], vals[r, -1] = -1, -INF
    return idx, vals


def _case(s, topk, bounds, dtype="float64", **kw) -> dict:
    extra = {k: kw.pop(k) for k in ("labels", "upstream", "grad", "module") if k in kw}
    kw.setdefault("reduction", "none")
    kw.setdefault("div_params", {})
    return {"s": s, "topk": topk, "bounds": bounds, "dtype": dtype, "kw": kw, **extra}


def _objective(i: int) -> dict:
    d, p, o, a, lam = OBJECTIVES[i % len(OBJECTIVES)]
    return {"divergence": d, "div_params": p, "order": o, "alpha": a, "lam": lam}


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("world, widths", [(2, [7, 4]), (3, [1, 6, 4])])
def test_sparse_teacher_equals_unsharded_and_amid_ref(pools, world, widths):
    """Every leftover policy × the objectives (α ∈ {±inf, 1, 1 + 1e-6, ...}, λ ∈ {0, …, 1})
    × k ∈ {1, 3, V}, uneven shards; rows with a padded slot, ids all on the first rank, a
    teacher renormalized on its ids (ε = 0): loss and gradient against gpu.amid_loss and
    amid_ref with the same teacher_topk, float64."""
    vocab = 11
    bounds = _bounds(vocab, world, widths)
    s, t = _logits(31 + world, 4, vocab)
    lo, hi = bounds[0] if widths[0] > 1 else bounds[1]
    teachers = {
        "k=1": _topk(t, 1),
        "k=3": _topk(t, 3, pad_rows=(1,), exact_rows=(2,)),
        "k=3 one rank": _topk(t, 3, within=(lo, hi)),
        "k=V": _topk(t, vocab, pad_rows=(3,)),
    }
    cases = []
    for j, (policy, topk) in enumerate((p, tk) for p in POLICIES for tk in teachers.values()):
        for i in range(3):  # three objectives per pair, all of them over the pairs
            obj = _objective(3 * j + i + world)
            cases.append(_case(s, topk, bounds, leftover=policy, **obj))
    n_raised = _check(pools[world], cases)
    # some objectives raise (an infinite loss), on every rank alike as unsharded; most do
    # not (a bad sparse teacher's refusals are test_bad_sparse_teacher_*'s)
    assert 0 < n_raised < len(cases)


def test_sparse_float32_masks_reductions_and_transforms(pools):
    """float32 and bfloat16; labels with mean/sum, an upstream gradient, chunking, the
    module form, a student-only temperature and the student's softcap and logit scale."""
    vocab = 13
    s, t = _logits(41, 6, vocab)
    s3 = s.reshape(2, 3, vocab)
    idx, lp = _topk(t, 4, pad_rows=(5,))
    topk3 = (idx.reshape(2, 3, 4), lp.reshape(2, 3, 4))
    labels = np.array([[1, -100, 2], [-100, 5, 6]])
    up = np.linspace(0.5, 2.0, 6).reshape(2, 3)
    base = {"alpha": -5.0, "lam": 0.1, "divergence": "kl", "order": "pr"}
    for world in (2, 3):
        bounds = _bounds(vocab, world)
        cases = [
            _case(s, (idx, lp), bounds, "float32", **base, leftover=policy) for policy in POLICIES
        ]
        cases += [
            _case(s3, topk3, bounds, **base, reduction="mean", labels=labels),
            _case(s3, topk3, bounds, **base, reduction="sum", labels=labels, leftover="uniform"),
            _case(s3, topk3, bounds, **base, upstream=up, leftover="renormalize"),
            _case(s3, topk3, bounds, **base, reduction="mean", chunk_size=2, module=True),
            _case(s3, topk3, bounds, "bfloat16", **{**base, "order": "rq"}, reduction="mean"),
            _case(s, (idx, lp), bounds, **base, grad=False),
            _case(s, (idx, lp), bounds, **base, temperature=2.0, temperature_applies_to="student"),
            _case(s, (idx, lp), bounds, **base, softcap=(3.0, None), logit_scale=(1.5, 1.0)),
        ]
        assert _check(pools[world], cases) == 0


def test_truncate_drops_ids_beyond_the_student(pools):
    """vocab_alignment='truncate': a teacher of a larger vocabulary whose ids ≥ V carry at
    most VOCAB_TRUNCATE_MAX_DROPPED are dropped (equal to gpu.amid_loss and amid_ref), more
    is refused; 'pad' and 'error' refuse ids ≥ V, naming vocab_alignment."""
    vocab, k = 11, 4
    s, t = _logits(51, 4, vocab + 2)
    t[:, vocab:] = -40.0  # the teacher's padded ids: probability ~e-40
    idx, lp = _topk(t, k)
    idx[:, -1], lp[:, -1] = vocab + 1, -40.0 - np.log(np.exp(t[0]).sum())  # an id beyond V
    heavy = (idx.copy(), lp.copy())
    heavy[1][1, -1] = np.log(0.01)  # row 1 drops probability 0.01
    s = s[:, :vocab]
    bounds = _bounds(vocab, 2)
    base = {"alpha": 0.5, "lam": 0.4, "divergence": "kl", "order": "pr"}
    cases = [
        _case(s, (idx, lp), bounds, **base, vocab_alignment="truncate", leftover=policy)
        for policy in POLICIES
    ]
    cases += [
        _case(s, heavy, bounds, **base, vocab_alignment="truncate"),
        _case(s, (idx, lp), bounds, **base, vocab_alignment="pad"),
        _case(s, (idx, lp), bounds, **base),
    ]
    assert _check(pools[2], cases) == 3


def _bad(s, topk, bounds, message: str, **kw) -> dict:
    """A case every rank must refuse with a message containing ``message`` (also checked
    against the unsharded loss where it takes the same input)."""
    base = {"alpha": -5.0, "lam": 0.1, "divergence": "kl", "order": "pr"}
    c = _case(s, topk, bounds, **{**base, **kw})
    want = _unsharded(c)
    assert want[0] == "raised" and message in want[2], (message, want)
    return c


def test_bad_sparse_teacher_raises_the_same_error_on_every_rank(pools):
    """Ids out of range (≥ the global V, though below some rank's width), duplicates, a mass
    above 1, k > V, uniform with k = V and ε > 0, renormalize with P_S = 0, a temperature
    that would divide the teacher, a teacher-side softcap, NaN log-probabilities: every rank
    raises gpu.amid_loss's error."""
    vocab = 11
    s, t = _logits(61, 3, vocab)
    idx, lp = _topk(t, 3)
    bounds = _bounds(vocab, 3)
    out = idx.copy()
    out[1, 0] = vocab
    dup = idx.copy()
    dup[2, 2] = dup[2, 0]
    heavy = lp.copy()
    heavy[0] = np.log([0.6, 0.3, 0.2])
    nan = lp.copy()
    nan[0, 1] = np.nan
    full_idx, full_lp = _topk(t, vocab)
    tiny = np.full_like(lp, -INF)
    wide = np.tile(np.arange(vocab + 1), (3, 1)), np.full((3, vocab + 1), -5.0)
    cases = [
        _bad(s, (out, lp), bounds, f"index {vocab} out of range [0, V = {vocab})"),
        _bad(s, (dup, lp), bounds, "duplicate index"),
        _bad(s, (idx, heavy), bounds, "sum to P_S"),
        _bad(s, wide, bounds, f"k = {vocab + 1} ids per row exceeds the vocabulary V = {vocab}"),
        _bad(s, (full_idx, full_lp - 0.1), bounds, "leftover='uniform' needs", leftover="uniform"),
        _bad(s, (idx, tiny), bounds, "leftover='renormalize' needs", leftover="renormalize"),
        _bad(s, (idx, lp), bounds, "temperature_applies_to='student'", temperature=2.0),
        _bad(s, (idx, lp), bounds, "cannot apply to teacher_topk", softcap=3.0),
        _bad(s, (idx, nan), bounds, "NaN or +inf"),
    ]
    # a +inf student logit on the last rank's shard, which the softcap would map to its cap
    s_inf = s.copy()
    s_inf[1, -1] = INF
    capped = _bad(s_inf, (idx, lp), bounds, "student_logits has NaN, +inf", softcap=(3.0, None))
    cases.append(capped)
    dense = {**_case(s_inf, None, bounds, alpha=-5.0, lam=0.1, softcap=3.0), "t": t}
    del dense["topk"]
    assert "student_logits has NaN, +inf" in _unsharded(dense)[2]
    cases.append(dense)
    assert _check(pools[3], cases) == len(cases)


def test_ranks_disagreeing_on_the_sparse_teacher_raise_everywhere(pools):
    """A teacher_topk that differs on one rank (one id, one log-probability), or another
    leftover policy there: every rank raises, and the group keeps working."""
    vocab = 9
    s, t = _logits(71, 2, vocab)
    idx, lp = _topk(t, 3)
    bounds = _bounds(vocab, 2)
    other_id = idx.copy()
    other_id[0, 2] = next(i for i in range(vocab) if i not in idx[0])
    other_lp = lp.copy()
    other_lp[1, 1] -= 1e-12
    cases = []
    for rank_1 in ((other_id, lp), (idx, other_lp)):
        c = _case(s, (idx, lp), bounds, alpha=-5.0, lam=0.1)
        c["topk_of_rank"] = {1: rank_1}
        c["want"] = ("raised", "ValueError", "disagree on teacher_topk")
        cases.append(c)
    c = _case(s, (idx, lp), bounds, alpha=-5.0, lam=0.1)
    c["kw_of_rank"] = {1: {**c["kw"], "leftover": "uniform"}}
    c["want"] = ("raised", "ValueError", "disagree on teacher form")
    cases.append(c)
    assert _check(pools[2], cases) == 3
    assert _check(pools[2], [_case(s, (idx, lp), bounds, alpha=-5.0, lam=0.1)]) == 0


def test_dense_shards_of_different_widths_are_refused_everywhere(pools):
    """Dense teacher shards whose widths differ from the student's (a teacher of another V,
    only the last rank's shard differs): every rank raises the same error naming
    vocab_alignment and the two vocabularies' sizes."""
    vocab, vocab_t = 11, 13
    s, _ = _logits(81, 2, vocab)
    _, t = _logits(82, 2, vocab_t)
    message = "vocabulary sizes differ: the student's shards have widths [6, 5] (V = 11)"
    for alignment in ("error", "pad", "truncate"):
        c = {
            "s": s,
            "t": t,
            "bounds": _bounds(vocab, 2),
            "bounds_t": _bounds(vocab_t, 2, [6, 7]),
            "dtype": "float64",
            "kw": {"alpha": -5.0, "lam": 0.1, "vocab_alignment": alignment},
            "want": ("raised", "ValueError", message),
        }
        answers = pools[2].run(_job, [c])
        for k, (status, (outcome,)) in enumerate(answers):
            assert status == "ok" and outcome[0] == "raised", (k, outcome)
            assert message in outcome[2] and "vocab_alignment" in outcome[2], outcome
        assert answers[0][1] == answers[1][1]


# --- the bad-input table's sparse rows --------------------------------------------------------


def _table_rows() -> list:
    """The rows of the bad-input table (tests/_bad_inputs.py) about a sparse teacher that
    gpu takes: each is run on the shards of its 3-id student as on the whole rows."""
    from _bad_inputs import BAD_INPUTS

    return [
        c
        for c in BAD_INPUTS
        if "gpu" in c.only
        and c.function == "amid_loss"
        and ("teacher_topk" in c.overrides or c.overrides.get("teacher_logits", 0) is None)
    ]


def test_infinite_student_logits_reach_the_kernel_as_themselves(pools):
    """A padded teacher slot, and a student row of only −inf logits, on the sparse path over
    3 ranks: the gathered logits keep their −inf (not the dtype's lowest number), so the
    loss equals the unsharded one and the empty row is refused with its words."""
    vocab, world = 11, 3
    bounds = _bounds(vocab, world, [1, 6, 4])
    s, t = _logits(41, 3, vocab)
    topk = _topk(t, 3, pad_rows=(0, 2))
    finite = _case(s, topk, bounds, leftover="bucket", alpha=-5.0, lam=0.1, divergence="jeffreys")
    s_empty = s.copy()
    s_empty[1] = -INF
    empty = _case(s_empty, topk, bounds, leftover="bucket", alpha=-5.0, lam=0.1)
    assert _check(pools[world], [finite, empty]) == 1


def _job_table(rank: int, world: int, rows: list) -> list:
    """Each table row's call to gpu.vocab_parallel_amid_loss on this rank's columns (the
    student's [2, 1] ids on 2 ranks): ``("ok", loss)`` or ``("raised", type, message)``."""
    import _bad_inputs

    lo, hi = ((0, 2), (2, 3))[rank]
    out = []
    for case in rows:
        args = {**_bad_inputs._base(case.function), **case.overrides}
        args = {k: _bad_inputs._materialize(v, for_gpu=True) for k, v in args.items()}
        s, t = args.pop("student_logits"), args.pop("teacher_logits")
        s, t = s[..., lo:hi], t if t is None else t[..., lo:hi]
        try:
            loss = gpu.vocab_parallel_amid_loss(s, t, **args)
            out.append(("ok", float(loss)))
        except (ValueError, TypeError) as exc:
            out.append(("raised", type(exc).__name__, str(exc)))
    return out


def test_bad_input_table_sparse_rows_on_the_shards(pools):
    """Every sparse-teacher row of the bad-input table, on two ranks: accepted where
    gpu.amid_loss accepts it (the same loss), else the same exception with the same
    message on both ranks."""
    from _bad_inputs import call

    rows = _table_rows()
    assert len(rows) > 20
    answers = pools[2].run(_job_table, rows)
    for k, a in enumerate(answers):
        assert a[0] == "ok", f"rank {k} failed: {a}"
    for i, case in enumerate(rows):
        try:
            want = ("ok", float(call(case, "gpu")))
        except (ValueError, TypeError) as exc:
            want = ("raised", type(exc).__name__, str(exc))
        for k in range(2):
            got = answers[k][1][i]
            if want[0] == "ok":
                assert got[0] == "ok", (case.id, k, got)
                tol = tolerance("vocab_parallel", "loss", "float64")
                assert_within(got[1], want[1], tol, what=case.id)
            else:
                assert got == want, (case.id, k, got, want)


def _job_dtensor_topk(rank: int, world: int, s_np, idx, lp) -> tuple:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    s = distribute_tensor(torch.tensor(s_np), mesh, [Shard(-1)]).requires_grad_()
    topk = (torch.tensor(idx), torch.tensor(lp))
    loss = gpu.vocab_parallel_amid_loss(s, None, 0.5, 0.3, "js", "qr", teacher_topk=topk)
    loss.backward()
    return float(loss.detach()), s.grad.full_tensor().numpy()


def test_dtensor_student_with_a_sparse_teacher(pools):
    """A DTensor student (Shard(-1), DTensor's uneven layout 4, 4, 3) with a plain,
    replicated teacher_topk equals gpu.amid_loss."""
    s, t = _logits(91, 5, 11)
    idx, lp = _topk(t, 3, pad_rows=(2,))
    s_t = torch.tensor(s, requires_grad=True)
    topk = (torch.tensor(idx), torch.tensor(lp))
    want = gpu.amid_loss(s_t, None, 0.5, 0.3, "js", "qr", teacher_topk=topk)
    want.backward()
    for k, (status, (loss, grad)) in enumerate(pools[3].run(_job_dtensor_topk, s, idx, lp)):
        assert status == "ok", (k, loss)
        tol = tolerance("vocab_parallel", "loss", "float64")
        assert_within(loss, float(want.detach()), tol, what="dtensor loss")
        tol = tolerance("vocab_parallel", "grad", "float64")
        _grad_within(grad, s_t.grad.numpy(), tol, "dtensor grad")


def test_gradient_overflow_on_one_rank_raises_everywhere(pools):
    """A sparse teacher whose χ²(p‖q) gradient (λ = 0: r = q) overflows float16 on one id
    of one rank's shard only (q tiny there; premise checked with amid_ref in float64): the
    gradient's flag bits, sent once per pass, make every rank raise gpu.amid_loss's error
    naming the row, for 'bucket' (the gathered (k+1)-category kernel) and 'uniform' (the
    densified shard), with chunks of one row and with labels."""
    vocab, k = 12, 3
    world = 3
    bounds = _bounds(vocab, world)
    col = bounds[1][0] + 1  # on the middle rank's shard
    s = np.zeros((2, 2, vocab))
    s[1, 0, col] = -14.0
    idx = np.tile(np.array([col, 0, vocab - 1]), (2, 2, 1))
    lp = np.full((2, 2, k), -np.log(vocab))  # a uniform teacher's top k
    kw = {"alpha": -5.0, "lam": 0.0, "divergence": "chi2", "order": "pr"}
    cases = []
    for policy in ("bucket", "uniform"):
        want_g = amid_ref.amid_grad(
            s[1, 0], None, *kw.values(), teacher_topk=(idx[1, 0], lp[1, 0]), leftover=policy
        )
        assert np.flatnonzero(np.abs(want_g) > np.finfo(np.float16).max).tolist() == [col]
        cases += [
            _case(s, (idx, lp), bounds, "float16", **kw, leftover=policy, chunk_size=1),
            _case(s, (idx, lp), bounds, "float16", **kw, leftover=policy, reduction="sum",
                  labels=np.array([[1, -100], [1, 1]])),
        ]  # fmt: skip
    assert "its dtype on row(s) [(1, 0)]" in _unsharded(cases[-1])[2]
    assert _check(pools[world], cases) == len(cases)
