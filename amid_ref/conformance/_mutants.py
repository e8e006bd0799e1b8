"""The known-wrong formulas of published AMiD-type losses, as data: one
:class:`~amid_ref.conformance._failure_modes.FailureMode` record per failure mode, in
:data:`FAILURE_MODES` (order = priority of the reported diagnosis).

Each record says when the mode can apply to a failing case, evaluates the wrong formula on
the case's own inputs (through the reference with parameters or inputs overridden, or by an
independent NumPy evaluation in the working dtype), and how to match it (``exact`` or
``noise``). :mod:`amid_ref.conformance._diagnoses` holds the matching.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.special import logsumexp

import amid_ref
from amid_ref._battery._compare import agrees, fails, tolerance_for
from amid_ref._battery._known_wrong import naive_log_alpha_mean
from amid_ref._divergences import get_divergence
from amid_ref._specs import ORDERS, SPECS, order_arguments
from amid_ref.conformance._cases import (
    DIVERGENCE_NAMES,
    PRESET_PARAM_GRIDS,
    Case,
    _div_grid,
    round_to_dtype,
)
from amid_ref.conformance._failure_modes import (
    NOISE_SAMPLES,
    DiagnosisContext,
    FailureMode,
    Wrong,
    _jitter,
    _noise_distance,
    _systematic,
)
from amid_ref.conformance._reference import reduce_grad, reduce_rows

__all__ = ["FAILURE_MODES"]

#: Kinds of case over logits (a loss, a plain divergence, a preset).
_LOGITS = ("loss", "divergence", "preset")

# --------------------------------------------------------------------------------------
# Wrong formulas
# --------------------------------------------------------------------------------------


def _beta(alpha: float) -> float:
    return (1.0 - alpha) / 2.0


#: Rounding-noise samples per dtype for ``noise`` modes: the unperturbed evaluation plus
#: evaluations on inputs jittered by ±1 unit roundoff of that dtype, giving the spread of
#: errors the wrong formula produces under a different operation order.


def _with(variant: str, w: Wrong) -> list[Wrong]:
    w.variant = variant
    return [w]


def _geometric(ctx: DiagnosisContext) -> list[Wrong]:
    return _with("alpha=1", ctx.reference(alpha=1.0))


def _lambda_on_student(ctx: DiagnosisContext) -> list[Wrong]:
    return _with(f"lam={1.0 - ctx.case.lam!r}", ctx.reference(lam=1.0 - ctx.case.lam))


def _amari_swapped(ctx: DiagnosisContext) -> list[Wrong]:
    gamma = float(ctx.case.div_params.get("alpha", 0.0))
    return _with(f"gamma={-gamma!r}", ctx.reference(div_params={"alpha": -gamma}))


def _ab_line(params) -> tuple[str, float] | None:
    a, b = float(params.get("alpha", 1.0)), float(params.get("beta", 0.0))
    if a == 0.0 and b != 0.0:
        return "b_", b
    if b == 0.0 and a != 0.0:
        return "a_", a
    if a + b == 0.0 and a != 0.0:
        return "a_", a
    return None


def _ab_one_over_a(ctx: DiagnosisContext) -> list[Wrong]:
    name, factor = _ab_line(ctx.case.div_params)
    w = ctx.reference()
    w.value = w.value * factor
    if w.grad is not None:
        w.grad = w.grad * factor
    return _with(name, w)


def _ab_near_line(params) -> bool:
    a, b = float(params.get("alpha", 1.0)), float(params.get("beta", 0.0))
    near = [abs(x) for x in (a, b, a + b)]
    return all(x != 0.0 for x in near) and min(near) < 1e-3


def _ab_general(ctx: DiagnosisContext) -> list[Wrong]:
    a = float(ctx.case.div_params["alpha"])
    b = float(ctx.case.div_params["beta"])
    log_p, log_q = ctx.ref.log_pq()
    log_r = np.asarray(amid_ref.log_alpha_mixture(log_p, log_q, ctx.case.alpha, ctx.case.lam))
    x, y = order_arguments(ctx.case.order, log_p, log_q, log_r)
    out = []
    for dt in ctx.compute_dtypes:
        npdt = np.float64 if dt == "float64" else np.float32
        for k in range(NOISE_SAMPLES):
            with np.errstate(all="ignore"):
                xs = _jitter(np.exp(x), dt, k // 2).astype(npdt)
                ys = _jitter(np.exp(y), dt, k // 2).astype(npdt)
                a_, b_ = npdt(a), npdt(b)
                if k % 2 == 0:  # coefficients computed in the working dtype
                    ca, cb, ab = a_ / (a_ + b_), b_ / (a_ + b_), a_ * b_
                else:  # coefficients computed in float64 and rounded once
                    ca, cb, ab = npdt(a / (a + b)), npdt(b / (a + b)), npdt(a * b)
                terms = xs**a_ * ys**b_ - ca * xs ** (a_ + b_) - cb * ys ** (a_ + b_)
                rows = -np.sum(terms, axis=-1, dtype=npdt) / ab
            out.append(Wrong(dt, ctx.reduce(rows.astype(np.float64))))
    return out


def _has_neg_inf(ctx: DiagnosisContext) -> bool:
    return bool(np.isneginf(ctx.ref.s).any() or np.isneginf(ctx.ref.t).any())


def _padded_zero(ctx: DiagnosisContext) -> list[Wrong]:
    s, t = ctx.ref.s, ctx.ref.t
    zs, zt = np.where(np.isneginf(s), 0.0, s), np.where(np.isneginf(t), 0.0, t)
    out = []
    for variant, ss, tt in (("both", zs, zt), ("teacher", s, zt), ("student", zs, t)):
        if np.array_equal(ss, s) and np.array_equal(tt, t):
            continue  # that side has no -inf entry
        out.append(_with(variant, ctx.reference(s=ss, t=tt))[0])
    return out


def _padded_overrides(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    s, t = ctx.ref.s, ctx.ref.t
    zs, zt = np.where(np.isneginf(s), 0.0, s), np.where(np.isneginf(t), 0.0, t)
    out = []
    for variant, ss, tt in (("both", zs, zt), ("teacher", s, zt), ("student", zs, t)):
        if not (np.array_equal(ss, s) and np.array_equal(tt, t)):
            out.append((variant, {"s": ss, "t": tt}))
    return out


def _mask_nan(ctx: DiagnosisContext) -> list[Wrong]:
    return [Wrong("0/0", np.asarray(math.nan))]


def _mask_not_applied(ctx: DiagnosisContext) -> list[Wrong]:
    rows, g = ctx.ref.rows(grad=ctx.want_grad)
    value = reduce_rows(rows, None, ctx.reduction)
    grad = reduce_grad(g, None, ctx.reduction, ctx.upstream) if g is not None else None
    return [Wrong("ignored rows counted", value, grad)]


def _swapped_roles(ctx: DiagnosisContext) -> list[Wrong]:
    return _with("student<->teacher", ctx.reference(s=ctx.ref.t, t=ctx.ref.s))


def _temperature(ctx: DiagnosisContext) -> list[Wrong]:
    temp = float(ctx.case.temperature)
    out = []
    factors = (("T² missing", temp**-2), ("T² applied twice", temp**2))
    if not ctx.ref.temperature_squared:
        factors = (("T² * loss (Hinton scaling, not declared)", temp**2),)
    for variant, factor in factors:
        w = ctx.reference()
        w.value = w.value * factor
        if w.grad is not None:
            w.grad = w.grad * factor
        w.variant = variant
        out.append(w)
    ignored = ctx.reference(temperature=1.0)
    if ctx.ref.temperature_squared:  # the reference at T = 1 has no T² left: put it back
        ignored.value = ignored.value * temp**2
        ignored.grad = None
    ignored.variant = "temperature ignored (applied to sampling only, not to the loss)"
    return [*out, ignored]


def _scaled_before_max(ctx: DiagnosisContext) -> list[Wrong]:
    """Logits multiplied by 1/T in the working dtype, before the row max is subtracted."""
    inv_t = 1.0 / float(ctx.case.temperature)
    dt = "float32" if ctx.dtype in ("bfloat16", "float16") else ctx.dtype
    out = []
    for variant, scale in (("1/T rounded", float(round_to_dtype(inv_t, dt))), ("1/T", inv_t)):
        with np.errstate(over="ignore", invalid="ignore"):
            ss = round_to_dtype(ctx.ref.s * scale, dt)
            tt = round_to_dtype(ctx.ref.t * scale, dt)
        out.append(_with(variant, ctx.reference(s=ss, t=tt, temperature=1.0))[0])
    return out


def _other_reduction(ctx: DiagnosisContext) -> list[Wrong]:
    """The per-row losses reduced another way: mean ↔ sum, the sum divided by the batch
    size B (the first dimension) where the mean over B·T positions was meant or the reverse,
    and torch's kl_div 'mean' (the sum over rows × V)."""
    rows, g = ctx.ref.rows(grad=ctx.want_grad)
    mask = ctx.mask
    kept = np.where(mask, rows, 0.0) if mask is not None else rows
    n_rows = int(mask.sum()) if mask is not None else int(np.size(rows))
    batch = rows.shape[0] if np.ndim(rows) else 1
    vocab = ctx.ref.s.shape[-1]
    total = float(np.sum(kept))
    options = {
        "sum": (total, 1.0),
        "mean": (total / n_rows if n_rows else 0.0, 1.0 / n_rows if n_rows else 0.0),
        "batchmean": (total / batch, 1.0 / batch),
        "elementwise mean": (total / (np.size(rows) * vocab), 1.0 / (np.size(rows) * vocab)),
    }
    declared = ctx.reduction
    want = reduce_rows(rows, mask, declared)
    out = []
    for name, (value, weight) in options.items():
        if name == declared or (np.ndim(rows) == 0 and name != "elementwise mean"):
            continue
        if np.allclose(value, want, rtol=1e-12, atol=0.0):
            continue  # the same number here (e.g. batchmean = mean for 2-D inputs)
        grad = None
        if g is not None:
            w = np.ones(np.shape(rows)) if mask is None else mask.astype(np.float64)
            grad = np.asarray(g) * (w * weight)[..., None]
        out.append(Wrong(name, np.asarray(value), grad))
    return out


def _unnormalized(ctx: DiagnosisContext) -> list[Wrong]:
    log_m = np.asarray(amid_ref.log_alpha_mean(ctx.ref.t, ctx.ref.s, ctx.case.alpha, ctx.case.lam))
    if ctx.ref.normalized:
        return [Wrong("log m (unnormalized)", log_m)]
    return [Wrong("log r (normalized)", log_m - logsumexp(log_m, axis=-1, keepdims=True))]


def _detached(ctx: DiagnosisContext) -> list[Wrong]:
    flip = not ctx.ref.detach_assistant
    w = ctx.reference(detach_assistant=flip)
    w.variant = "assistant detached" if flip else "assistant not detached"
    return [w]


def _prob_space_log_m(lp, lq, alpha: float, lam: float, npdt) -> np.ndarray:
    with np.errstate(all="ignore"):
        p, q = np.exp(lp.astype(npdt)), np.exp(lq.astype(npdt))
        lam_, mu_ = npdt(lam), npdt(1.0 - lam)
        if alpha == 1.0:
            m = p**lam_ * q**mu_
        elif alpha == math.inf:
            m = np.minimum(p, q)
        elif alpha == -math.inf:
            m = np.maximum(p, q)
        else:
            beta = npdt(_beta(alpha))
            m = (lam_ * p**beta + mu_ * q**beta) ** (npdt(1.0) / beta)
        r = m / np.sum(m, axis=-1, keepdims=True)
        return np.log(r.astype(np.float64))


def _single_mixture_term(ctx: DiagnosisContext) -> bool:
    """A preset of one term with a mixture (DistiLLM's skews: λ ∉ {0, 1})."""
    rec = ctx.case.preset_record()
    return len([w for _, w in rec.terms if w]) == 1 and 0.0 < rec.lam < 1.0


def _probability_space(ctx: DiagnosisContext) -> list[Wrong]:
    log_p, log_q = ctx.ref.log_pq()
    out = []
    for dt in ctx.compute_dtypes:
        npdt = {"float64": np.float64, "float32": np.float32, "float16": np.float16}[dt]
        log_r = _prob_space_log_m(log_p, log_q, ctx.case.alpha, ctx.case.lam, npdt)
        out.append(Wrong(dt, ctx.from_log_m(log_r)))
    return out


def _naive_log_m(lp, lq, alpha: float, lam: float, dtype: str) -> np.ndarray:
    """:func:`amid_ref._battery._known_wrong.naive_log_alpha_mean` with every result rounded
    to dtype."""

    def rnd(x):
        return round_to_dtype(x, dtype)

    with np.errstate(all="ignore"):
        return naive_log_alpha_mean(lp, lq, alpha, lam, rnd=rnd)


def _low_precision(ctx: DiagnosisContext) -> list[Wrong]:
    log_p, log_q = ctx.ref.log_pq()
    out = []
    # The formula in the declared dtype, or in fp32 after an upcast of bf16/fp16 inputs.
    dtypes = [ctx.dtype] + (["float32"] if ctx.dtype in ("bfloat16", "float16") else [])
    for dt in dtypes:
        for k in range(NOISE_SAMPLES):
            lp, lq = _jitter(log_p, dt, k), _jitter(log_q, dt, k)
            log_m = _naive_log_m(lp, lq, ctx.case.alpha, ctx.case.lam, dt)
            out.append(Wrong(dt, ctx.from_log_m(log_m)))
    if ctx.dtype in ("bfloat16", "float16") and (
        ctx.kind == "mixture" or ctx.case.divergence == "kl"
    ):
        for k in range(NOISE_SAMPLES):
            out.append(Wrong(f"{ctx.dtype} throughout", _throughout(ctx, ctx.dtype, k)))
    return out


def _throughout(ctx: DiagnosisContext, dt: str, sample: int) -> np.ndarray:
    """Log-softmax, naive mixture, normalization and KL all rounded to ``dt`` (a loss run
    in the input dtype without an upcast); sums accumulate in fp32, as torch's do."""

    def rnd(x):
        return round_to_dtype(x, dt)

    def log_softmax(x):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            x32 = x.astype(np.float32)
            top = np.max(x32, axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0)
            lse = np.log(np.sum(np.exp(x32 - top), axis=-1, keepdims=True, dtype=np.float32))
            return rnd((x32 - top - lse).astype(np.float64))

    if ctx.kind == "mixture":
        lp, lq = ctx.ref.t, ctx.ref.s
    else:
        temp = float(ctx.case.temperature)
        lp, lq = log_softmax(rnd(ctx.ref.t / temp)), log_softmax(rnd(ctx.ref.s / temp))
    lp, lq = rnd(_jitter(lp, dt, sample)), rnd(_jitter(lq, dt, sample))
    log_r = log_softmax(_naive_log_m(lp, lq, ctx.case.alpha, ctx.case.lam, dt))
    if ctx.kind == "mixture":
        return log_r
    x, y = order_arguments(ctx.case.order, lp, lq, log_r)
    with np.errstate(invalid="ignore", over="ignore"):
        terms = rnd(rnd(np.exp(x)) * rnd(x - y))
        terms = np.where(np.isneginf(x), 0.0, terms)
        rows = rnd(np.sum(terms.astype(np.float32), axis=-1, dtype=np.float32).astype(np.float64))
    return ctx.reduce(rows)


def _same_inputs(case: Case, **changes) -> Case:
    """``case`` with other parameters but the very same (unrounded) inputs."""
    s, t = case.logits()
    params = {
        "kind": case.kind,
        "alpha": case.alpha,
        "lam": case.lam,
        "divergence": case.divergence,
        "order": case.order,
        "div_params": dict(case.div_params),
        "temperature": case.temperature,
        "reduction": case.reduction,
    }
    params.update(changes)
    return Case(
        "control", name=case.name + "/control", student_logits=s, teacher_logits=t, **params
    )


def _beta_control(case: Case, k: float) -> Case | None:
    beta = _beta(case.alpha) * k
    if not math.isfinite(beta) or abs(beta) > 1e6 or beta == 0.0:
        return None
    return _same_inputs(case, alpha=1.0 - 2.0 * beta)


def _ab_control(case: Case, k: float) -> Case | None:
    a, b = float(case.div_params["alpha"]), float(case.div_params["beta"])
    near = min((abs(a), "a"), (abs(b), "b"), (abs(a + b), "s"))[1]
    if near == "a":
        a = a * k
    elif near == "b":
        b = b * k
    else:
        b = -a + (a + b) * k
    return _same_inputs(case, div_params={"alpha": a, "beta": b})


def _finite_beta(ctx: DiagnosisContext) -> bool:
    a, lam = ctx.case.alpha, ctx.case.lam
    return math.isfinite(a) and a != 1.0 and 0.0 < lam < 1.0


# --- modes of published code: NaN at α = ±∞, −inf handling, parameters, CE, dtype, JSD ends --


def _confirm_lambda_on_student(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """Near λ ∈ {0, 1} the wrong mixture is p or q itself, and the wrong loss often
    D(x‖x) ≈ 0, which any output of 0 "matches": require the same defect at λ = 0.25 on the
    same inputs."""

    if ctx.probe is None or ctx.case.mask is not None:
        return False
    lam = 0.25 if ctx.case.lam != 0.25 else 0.125
    moved = _same_inputs(ctx.case, lam=lam)
    probed = ctx.probe(moved)
    if probed is None:
        return False
    got, want = probed
    wrong = np.asarray(ctx.moved(moved).reference(lam=1.0 - lam).value)
    return bool(fails(wrong, want, tol).any() and agrees(got, wrong, tol))


def _naive_at_infinite_alpha(ctx: DiagnosisContext) -> list[Wrong]:
    log_p, log_q = ctx.ref.log_pq()
    log_m = _naive_log_m(log_p, log_q, ctx.case.alpha, ctx.case.lam, "float64")
    return [Wrong("beta=" + ("-inf" if ctx.case.alpha > 0 else "inf"), ctx.from_log_m(log_m))]


def _confirm_infinite_alpha(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The NaN is the α, not the inputs: the same α and λ on realistic logits is NaN too
    (a probability-space mixture, say, is NaN only where p and q underflow)."""

    if ctx.probe is None or ctx.case.mask is not None:
        return False
    c = ctx.case
    control = replace(c, family="control", inputs="realistic", name=c.name + "/control",
                      student_logits=None, teacher_logits=None, seed=c.seed)  # fmt: skip
    probed = ctx.probe(control)
    return probed is not None and bool(np.isnan(probed[0]).any())


def _kl_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-entry a·(log a − log b) of KL(a‖b) from logs: 0 where a = 0, +inf where only b = 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.exp(x) * (x - y)
    return np.where(np.isneginf(x), 0.0, np.where(np.isneginf(y), np.inf, t))


def _kl_pairs(ctx: DiagnosisContext) -> list[tuple[float, np.ndarray, np.ndarray]] | None:
    """The loss as Σ weight·KL(a‖b) over ``(weight, log a, log b)`` (None: not KL-type).

    A KL loss has one pair per order term; a generalized JSD D_js(x‖y; β) is β·KL(x‖m) +
    (1−β)·KL(y‖m), m = βx + (1−β)y (0 at β ∈ {0, 1}).
    """

    c = ctx.case
    if ctx.kind == "mixture" or c.divergence not in ("kl", "js"):
        return None
    log_p, log_q = ctx.ref.log_pq()
    terms = c.preset_record().terms if c.kind == "preset" else ((c.order, 1.0),)
    pairs = []
    for order, weight in terms:
        if weight == 0.0:
            continue
        log_r = log_q
        if c.lam != 0.0:
            log_r = np.asarray(amid_ref.log_alpha_mixture(log_p, log_q, c.alpha, c.lam))
        x, y = order_arguments(order, log_p, log_q, log_r)
        if c.divergence == "kl":
            pairs.append((weight, x, y))
            continue
        beta = float(c.div_params.get("beta", 0.5))
        if beta in (0.0, 1.0):
            continue
        with np.errstate(divide="ignore"):
            lm = np.logaddexp(math.log(beta) + x, math.log1p(-beta) + y)
        pairs += [(weight * beta, x, lm), (weight * (1.0 - beta), y, lm)]
    return pairs


def _scaled(ctx: DiagnosisContext, rows: np.ndarray) -> np.ndarray:
    if ctx.ref.temperature_squared:
        rows = rows * float(ctx.case.temperature) ** 2
    return rows


def _neg_inf_dropped(ctx: DiagnosisContext) -> list[Wrong]:
    pairs = _kl_pairs(ctx)
    if pairs is None:
        return []
    out = []
    for side, logits in (("teacher", ctx.ref.t), ("student", ctx.ref.s)):
        dropped = np.isneginf(logits)
        if not dropped.any():
            continue
        rows = sum(w * np.where(dropped, 0.0, _kl_terms(x, y)).sum(axis=-1) for w, x, y in pairs)
        out.append(Wrong(side, ctx.reduce(_scaled(ctx, np.asarray(rows, dtype=np.float64)))))
    return out


def _nan_grad(ctx: DiagnosisContext) -> list[Wrong]:
    w = ctx.reference()
    if w.grad is None:
        return []
    every = Wrong("every entry", w.value, np.full(w.grad.shape, np.nan))
    some = Wrong(
        "rows holding a zero probability", w.value, np.where(_zero_rows(ctx), np.nan, w.grad)
    )
    return [every, some]


def _zero_rows(ctx: DiagnosisContext) -> np.ndarray:
    """Rows (keepdims) where p or q has a zero: a −inf logit, or a probability that
    underflows to 0 in the working dtype (fp32: log-probabilities below about −103)."""
    log_p, log_q = ctx.ref.log_pq()
    floor = -103.0 if ctx.dtype != "float64" else -744.0
    zero = (log_p < floor) | (log_q < floor)
    return zero.any(axis=-1, keepdims=True)


def _has_zero(ctx: DiagnosisContext) -> bool:
    return bool(_zero_rows(ctx).any())


def _kl_div_nan(ctx: DiagnosisContext) -> list[Wrong]:
    """``F.kl_div(log b, target)`` per KL(a‖b) term: NaN rows where the target a has a −inf
    log (log_target=True: exp(−inf)·(−inf − log b) = 0·(−inf)), or where a = 0 meets
    log b = −inf (log_target=False: 0·log 0 − 0·(−inf))."""
    pairs = _kl_pairs(ctx)
    if pairs is None:
        return []
    rows, _ = ctx.ref.rows()
    out = []
    for variant, bad_entry in (
        ("log_target=True", lambda x, y: np.isneginf(x)),
        ("log_target=False", lambda x, y: np.isneginf(x) & np.isneginf(y)),
    ):
        bad = np.zeros(rows.shape, dtype=bool)
        for _, x, y in pairs:
            bad |= bad_entry(x, y).any(axis=-1)
        if not bad.any():
            continue
        out.append((variant, bad))
    if len(out) == 2 and np.array_equal(out[0][1], out[1][1]):
        out = [("log_target=True, or False where both are zero", out[0][1])]
    # The value is the symptom: the gradient of such rows is NaN too, but a NaN gradient
    # under a right value is nan_grad_at_neg_inf's.
    return [Wrong(v, ctx.reduce(np.where(bad, np.nan, rows))) for v, bad in out]


def _kl_div_nan_transform(ctx: DiagnosisContext, wrong: Wrong) -> list[Wrong]:
    pairs = _kl_pairs(ctx)
    if pairs is None or wrong.value is None:
        return []
    bad = np.zeros(ctx.ref.s.shape[:-1], dtype=bool)
    for _, x, _ in pairs:
        bad |= np.isneginf(x).any(axis=-1)
    if not bad.any() or ctx.reduction != "none":
        return (
            [] if not bad.any() else [Wrong("log_target=True", np.full_like(wrong.value, np.nan))]
        )
    return [Wrong("log_target=True", np.where(bad, np.nan, wrong.value))]


def _other_params(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """Parameter sets of the case's divergence other than the one asked for."""

    c = ctx.case
    if c.kind == "preset" or not c.div_params or c.divergence not in _div_params_names():
        return []
    seen, out = [], []
    for params in [*_div_grid(c.divergence), *_PUBLISHED_DEFAULTS.get(c.divergence, ())]:
        if params == dict(c.div_params) or params in seen:
            continue
        if c.divergence == "js" and params["beta"] in (0.0, 1.0):
            continue  # JSD_0 = JSD_1 = 0 for all inputs: "matching" it is no evidence
        seen.append(params)
        label = ", ".join(f"{k}={v:g}" for k, v in params.items())
        out.append((label, {"div_params": dict(params)}))
    return out


def _div_params_names() -> tuple[str, ...]:
    return tuple(n for n in DIVERGENCE_NAMES if SPECS[n].params)


#: Parameters published code fixes (ABKD's and the AMiD paper's AB (0.2, 0.7) is in the grid).
_PUBLISHED_DEFAULTS: dict[str, tuple[dict[str, float], ...]] = {
    "js": ({"beta": 0.5},),
    "ab": ({"alpha": 0.2, "beta": 0.7},),
}


def _rounded_params(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """The divergence's parameters rounded to the working dtype (e.g. TRL's β tensor in the
    logits' dtype: bf16(0.999999) = 1)."""
    c = ctx.case
    if ctx.dtype not in ("bfloat16", "float16") or not c.div_params:
        return []
    rounded = {
        k: float(round_to_dtype(np.asarray([v]), ctx.dtype)[0]) for k, v in c.div_params.items()
    }
    if rounded == dict(c.div_params):
        return []
    label = ", ".join(f"{k}={v!r}" for k, v in rounded.items())
    return [(label, {"div_params": rounded})]


def _confirm_params_ignored(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """ "Whatever is asked": with other parameters asked on the same inputs, the output is
    still the divergence at the same fixed parameters."""

    if ctx.probe is None or ctx.case.mask is not None:
        return False
    fixed = dict(next(ov for label, ov in _other_params(ctx) if label == variant)["div_params"])
    for _, ov in _other_params(ctx):
        asked = ov["div_params"]
        if asked == fixed:
            continue
        moved = _same_inputs(ctx.case, div_params=asked)
        probed = ctx.probe(moved)
        if probed is None:
            return False
        wrong = ctx.moved(moved).reference(div_params=fixed).value
        if np.all(np.abs(np.asarray(wrong) - probed[1]) <= 1e-9):
            continue  # the two parameter sets agree on these inputs: no evidence either way
        return agrees(probed[0], np.asarray(wrong), tol)
    return False


def _confirm_rounded_params(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The same inputs passed as float32 (the parameter then rounded to fp32 only) give the
    reference: the rounding of the parameter to the input dtype is the defect."""
    return _confirm_input_dtype(ctx, variant, tol)


def _params_ignored(ctx: DiagnosisContext) -> list[Wrong]:
    out = []
    for label, ov in _other_params(ctx):
        w = ctx.reference(**ov)
        if np.all(np.abs(np.asarray(w.value)) < 1e-9):
            continue  # a divergence ~0 for all inputs there (JSD at β = 1e-15): no evidence
        w.variant = label
        out.append(w)
    return out


def _preset_params_ignored(ctx: DiagnosisContext) -> list[Wrong]:
    c = ctx.case
    default = PRESET_PARAM_GRIDS[c.preset][0]
    if not c.preset_params or dict(c.preset_params) == default:
        return []
    moved = ctx.moved(replace(c, preset_params=default))
    w = moved.reference()
    w.variant = ", ".join(f"{k}={v:g}" for k, v in default.items())
    return [w]


def _entropy_of_first(ctx: DiagnosisContext) -> np.ndarray | None:
    pairs = _kl_pairs(ctx)
    if pairs is None or ctx.case.divergence != "kl":
        return None
    return sum(w * -_kl_terms(x, np.zeros_like(x)).sum(axis=-1) for w, x, _ in pairs)


def _cross_entropy(ctx: DiagnosisContext) -> list[Wrong]:
    """−Σ a·log b for KL(a‖b) on every term, or only on the terms whose first distribution
    is the teacher p (a forward KL written as a cross-entropy next to a true reverse KL)."""
    pairs = _order_pairs(ctx)
    if pairs is None or ctx.case.divergence != "kl":
        return []
    out = []
    orders = [o for _, o, _, _ in pairs]
    subsets = [("every term", orders)]
    if "pr" in orders and any(o != "pr" for o in orders):
        subsets.append(("the KL(p‖·) terms", ["pr"]))
    for label, chosen in subsets:
        h = sum(w * -_kl_terms(x, np.zeros_like(x)).sum(axis=-1)
                for w, o, x, _ in pairs if o in chosen)  # fmt: skip
        w = ctx.reference()
        w.value = w.value + ctx.reduce(_scaled(ctx, np.asarray(h, dtype=np.float64)))
        # H(a) is constant in the student only when every such term's first argument is p.
        if not all(o == "pr" for o in chosen):
            w.grad = None
        firsts = sorted({ORDERS[o][0] for o in chosen})
        w.variant = " + ".join(f"H({a})" for a in firsts)
        if len(subsets) > 1:
            w.variant += f" on {label}"
        out.append(w)
    return out


def _jsd_endpoint(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """The generalized JSD at β ∈ {0, 1} replaced by KL(x‖y) at β = 0, KL(y‖x) at β = 1."""
    c = ctx.case
    flip = {"pr": "rp", "rp": "pr", "qr": "rq", "rq": "qr"}
    if c.kind == "preset":
        beta = float(c.preset_params.get("beta", 0.5))
        if c.preset != "gkd_jsd" or beta not in (0.0, 1.0):
            return []
        order = "pr" if beta == 0.0 else "rp"
        return [(f"KL({'p‖q' if beta == 0 else 'q‖p'}) at beta={beta:g}",
                 {"terms": ((order, 1.0),), "lam": 0.0})]  # fmt: skip
    beta = float(c.div_params.get("beta", 0.5)) if c.divergence == "js" else None
    if beta not in (0.0, 1.0):
        return []
    order = c.order if beta == 0.0 else flip[c.order]
    pair = {"pr": "p‖q", "rp": "q‖p", "qr": "q‖r", "rq": "r‖q"}[order]
    if c.lam != 0.0:
        pair = "‖".join(ORDERS[order])
    ov = {"divergence": "kl", "div_params": {}, "order": order}
    return [(f"KL({pair}) at beta={beta:g}", ov)]


def _from_overrides(fn):
    def evaluate(ctx: DiagnosisContext) -> list[Wrong]:
        out = []
        for variant, ov in fn(ctx):
            w = ctx.reference(**ov)
            w.variant = variant
            out.append(w)
        return out

    return evaluate


def _emulated_rows(
    ctx: DiagnosisContext, dt: str, sample: int, form: str = "logs"
) -> np.ndarray | None:
    """The loss with every intermediate rounded to ``dt`` (log-softmax, the mixture, the
    per-entry terms; sums accumulated in fp32 as torch's are): a loss computed in its input
    dtype, at any α. KL-type losses only."""

    def rnd(x):
        return round_to_dtype(x, dt)

    c = ctx.case
    if ctx.kind == "mixture" or c.divergence not in ("kl", "js"):
        return None

    def log_softmax(x, raw=False):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            x32 = rnd(x).astype(np.float32)
            top = np.max(x32, axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0)
            lse = np.log(np.sum(np.exp(x32 - top), axis=-1, keepdims=True, dtype=np.float32))
            if raw:  # the fp32 log-softmax before its rounding to dt
                return (x32 - top).astype(np.float64) - lse.astype(np.float64)
            return rnd((x32 - top).astype(np.float64) - rnd(lse.astype(np.float64)))

    temp = float(c.temperature)
    lp = rnd(_jitter(log_softmax(rnd(ctx.ref.t / temp)), dt, sample))
    lq = rnd(_jitter(log_softmax(rnd(ctx.ref.s / temp)), dt, sample))
    # softmax in dt: the fp32 probabilities rounded once (not exp of the rounded log)
    softmax = {
        id(lp): rnd(np.exp(_jitter(log_softmax(rnd(ctx.ref.t / temp), raw=True), dt, sample))),
        id(lq): rnd(np.exp(_jitter(log_softmax(rnd(ctx.ref.s / temp), raw=True), dt, sample))),
    }
    if c.lam == 0.0:
        lr = lq
    elif math.isfinite(c.alpha) and c.alpha != 1.0:
        lr = log_softmax(_naive_log_m(lp, lq, c.alpha, c.lam, dt))
    elif c.alpha == 1.0:
        lr = log_softmax(rnd(rnd(c.lam * lp) + rnd((1.0 - c.lam) * lq)))
    else:
        lr = log_softmax(np.minimum(lp, lq) if c.alpha > 0 else np.maximum(lp, lq))

    def kl(x, y):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            a = rnd(np.exp(x))
            if form == "probabilities":  # kl_div(log b, a): a·(log a − log b), log a recomputed
                x = rnd(np.log(a))
            if form == "xlogy":  # F.kl_div(log b, softmax(a)) as torch evaluates it:
                a = softmax.get(id(x), a)  # xlogy(a, a) − a·log b
                terms = rnd(rnd(a * np.log(np.where(a > 0, a, 1.0))) - rnd(a * y))
            else:
                terms = rnd(a * rnd(x - y))
        terms = np.where(np.isneginf(x), 0.0, terms)
        return rnd(np.sum(terms.astype(np.float32), axis=-1, dtype=np.float32).astype(np.float64))

    terms = c.preset_record().terms if c.kind == "preset" else ((c.order, 1.0),)
    rows = 0.0
    for order, weight in terms:
        if weight == 0.0:
            continue
        x, y = order_arguments(order, lp, lq, lr)
        if c.divergence == "kl":
            rows = rows + weight * kl(x, y)
            continue
        beta = float(c.div_params.get("beta", 0.5))
        if beta in (0.0, 1.0):
            continue
        with np.errstate(divide="ignore"):
            lm = rnd(np.logaddexp(rnd(x + math.log(beta)), rnd(y + math.log1p(-beta))))
        rows = rows + weight * rnd(rnd(beta * kl(x, lm)) + rnd((1.0 - beta) * kl(y, lm)))
    return _scaled(ctx, np.asarray(rows, dtype=np.float64) + np.zeros(ctx.ref.s.shape[:-1]))


def _emulations(ctx: DiagnosisContext, dtypes: tuple[str, ...]) -> list[Wrong]:
    out = []
    for dt in dtypes:
        for form in ("logs", "probabilities", "xlogy"):
            for k in range(NOISE_SAMPLES // 2):
                rows = _emulated_rows(ctx, dt, k, form)
                if rows is None:
                    return []
                out.append(Wrong(dt, ctx.reduce(rows)))
                # ... and with the scaled rows and the reduced loss rounded too
                rounded = round_to_dtype(ctx.reduce(round_to_dtype(rows, dt)), dt)
                out.append(Wrong(dt, rounded))
    return out


def _input_dtype(ctx: DiagnosisContext) -> list[Wrong]:
    return _emulations(ctx, (ctx.dtype,))


def _internal_low_precision(ctx: DiagnosisContext) -> list[Wrong]:
    return _emulations(ctx, ("bfloat16", "float16"))


def _confirm_internal_low_precision(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """A cast to ``variant`` inside the function: with float32 inputs (the declared
    dtype's inputs passed as float32, or the case itself when float32 is declared) the
    output still has the error size of the computation in ``variant``, on this case and on
    two others (other inputs, same parameters); and the relative errors at these points do
    not line up (one relative error everywhere is a scaled loss, not rounding)."""
    if ctx.probe is None:
        return False
    first = _control_inputs(ctx)
    if first is None:
        return False
    second = replace(first, name=first.name + "b", seed=(first.seed + 7919) % 2**31)
    tol32 = tolerance_for("loss", "float32")[0]
    errors, wants = [], []
    for case in (ctx.case, first, second):
        probed = ctx.probe(case, "float32")
        if probed is None:
            return False
        got, want = probed
        c32 = (ctx if case is ctx.case else ctx.moved(case)).with_dtype("float32")
        samples = [
            np.broadcast_to(np.asarray(w.value, dtype=np.float64), np.shape(want))
            for w in _internal_low_precision(c32)
            if w.variant == variant and w.value is not None
        ]
        if not samples or not math.isfinite(_noise_distance(got, samples, want, tol32)):
            return False
        failing = fails(got, want, tol32)
        errors.append(np.ravel(np.asarray(got, dtype=np.float64)[failing]))
        wants.append(np.ravel(np.asarray(want, dtype=np.float64)[failing]))
    got_all, want_all = np.concatenate(errors), np.concatenate(wants)
    return not _systematic(got_all, want_all, np.ones(got_all.shape, dtype=bool))


def _confirm_input_dtype(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The same (rounded) inputs passed as float32 give the reference within the float32
    tolerance: the error comes from the arithmetic dtype, not from the formula."""

    if ctx.probe is None:
        return False
    probed = ctx.probe(ctx.case, "float32")
    if probed is None:
        return False
    got32, want = probed
    return not fails(got32, want, tolerance_for("loss", "float32")[0]).any()


# --- modes of the distillation code people train with (and of hand-written slips) ---------


def _entry_terms(name: str, params, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Per-entry terms of D(x‖y) from logs, whose sum over the last axis is the divergence
    (the registry's own kernel on a trailing axis of size 1). None for Rényi, which is not a
    sum of entries."""
    if name in ("renyi", "f"):
        return None
    rec = get_divergence(name)
    resolved = rec.resolve_params(dict(params or {}))
    with np.errstate(all="ignore"):
        return np.asarray(rec.value(x[..., None], y[..., None], -1, resolved), dtype=np.float64)


def _order_pairs(
    ctx: DiagnosisContext,
    log_p: np.ndarray | None = None,
    log_q: np.ndarray | None = None,
    *,
    normalized: bool = True,
) -> list[tuple[float, str, np.ndarray, np.ndarray]] | None:
    """The loss as Σ weight·D(x‖y) over ``(weight, order, log x, log y)``: one term per
    order (a preset's terms, else the case's order), r the α-mixture of ``log_p``,
    ``log_q`` (default the case's), normalized or not. None for a mixture case."""
    c = ctx.case
    if ctx.kind == "mixture":
        return None
    if log_p is None or log_q is None:
        lp0, lq0 = ctx.ref.log_pq()
        log_p = lp0 if log_p is None else log_p
        log_q = lq0 if log_q is None else log_q
    terms = c.preset_record().terms if c.kind == "preset" else ((c.order, 1.0),)
    if c.lam == 0.0:
        log_r = log_q
    elif normalized:
        log_r = np.asarray(amid_ref.log_alpha_mixture(log_p, log_q, c.alpha, c.lam))
    else:
        log_r = np.asarray(amid_ref.log_alpha_mean(log_p, log_q, c.alpha, c.lam))
    out = []
    for order, weight in terms:
        if weight != 0.0:
            x, y = order_arguments(order, log_p, log_q, log_r)
            out.append((float(weight), order, x, y))
    return out


def _rows_from_entries(ctx: DiagnosisContext, pairs, keep=None) -> np.ndarray | None:
    """Σ_terms weight·Σ_entries (the per-entry terms where ``keep``), scaled by T² when
    declared; None if the divergence is not a sum of entries."""
    c = ctx.case
    rows = 0.0
    for weight, _, x, y in pairs:
        t = _entry_terms(c.divergence, c.div_params, x, y)
        if t is None:
            return None
        if keep is not None:
            t = np.where(keep, t, 0.0)
        rows = rows + weight * t.sum(axis=-1)
    rows = np.asarray(rows, dtype=np.float64) + np.zeros(ctx.ref.s.shape[:-1])
    return _scaled(ctx, rows)


def _isinf_dropped(ctx: DiagnosisContext) -> list[Wrong]:
    """The per-entry sum without the entries where the teacher's, the student's or either
    side's logit is −inf: ``masked_fill(isinf(student) | isinf(teacher), 0)`` on the terms."""
    pairs = _order_pairs(ctx)
    if pairs is None:
        return []
    s_inf, t_inf = np.isneginf(ctx.ref.s), np.isneginf(ctx.ref.t)
    out, seen = [], []
    for side, dropped in (
        ("teacher", t_inf),
        ("student", s_inf),
        ("teacher or student", s_inf | t_inf),
    ):
        if not dropped.any() or any(np.array_equal(dropped, d) for d in seen):
            continue
        seen.append(dropped)
        rows = _rows_from_entries(ctx, pairs, keep=~dropped)
        if rows is not None:
            out.append(Wrong(side, ctx.reduce(rows)))
    return out


def _low_precision_logits(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """The logits rounded to bf16/fp16 before an fp32 computation (an lm_head GEMM whose
    output is bf16, cast to fp32 afterwards): on the student, the teacher or both."""
    if ctx.dtype not in ("float32", "float64"):
        return []
    s, t = ctx.ref.s, ctx.ref.t
    out = []
    for dt in ("bfloat16", "float16"):
        with np.errstate(over="ignore"):
            rs, rt = round_to_dtype(s, dt), round_to_dtype(t, dt)
        if not (
            np.all(np.isfinite(rs) | np.isneginf(s)) and np.all(np.isfinite(rt) | np.isneginf(t))
        ):
            continue  # beyond the fp16 range
        for side, ss, tt in (("both", rs, rt), ("student", rs, t), ("teacher", s, rt)):
            if np.array_equal(ss, s) and np.array_equal(tt, t):
                continue
            out.append((f"{side} logits in {dt}", {"s": ss, "t": tt}))
    return out


def _confirm_low_precision_logits(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The same rounding explains a second case: the implementation on other (realistic)
    inputs with the same parameters agrees with the reference on those inputs rounded the
    same way, and fails."""
    control = _control_inputs(ctx)
    if control is None:
        return False
    moved = ctx.moved(control)
    ov = dict(_low_precision_logits(moved)).get(variant)
    if ov is None:
        return False
    return _agrees_on(ctx, control, moved.reference(**ov).value, tol)


def _control_inputs(ctx: DiagnosisContext) -> Case | None:
    """The case's parameters on other inputs: realistic logits of the same shape, another
    seed (None for explicit inputs or masked cases, whose labels belong to the inputs)."""
    c = ctx.case
    if ctx.probe is None or c.inputs == "explicit":
        return None
    seed = (c.seed + 7919) % 2**31
    return replace(
        c, family="control", inputs="realistic", name=c.name + "/control2", seed=seed,
        student_logits=None, teacher_logits=None,
    )  # fmt: skip


def _agrees_on(ctx: DiagnosisContext, case: Case, wrong, tol) -> bool:
    """The implementation on ``case`` agrees with ``wrong`` there, and ``wrong`` fails."""
    probed = ctx.probe(case)
    if probed is None or wrong is None:
        return False
    got, want = probed
    wrong = np.broadcast_to(np.asarray(wrong, dtype=np.float64), np.shape(want))
    return bool(fails(wrong, want, tol).any() and agrees(got, wrong, tol))


_CLAMP_EPS = (1e-4, 1e-3, 1e-2, 0.05, 0.1)


def _js_beta(ctx: DiagnosisContext) -> float | None:
    c = ctx.case
    if c.kind == "preset":
        return float(c.preset_params.get("beta", 0.5)) if c.preset == "gkd_jsd" else None
    if c.divergence == "js":
        return float(c.div_params.get("beta", 0.5))
    return None


def _beta_clamped(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """The JSD's β clamped into [ε, 1 − ε] (so β = 0 and 1 are never reached)."""
    beta = _js_beta(ctx)
    if beta is None:
        return []
    out = []
    for eps in _CLAMP_EPS:
        clamped = min(max(beta, eps), 1.0 - eps)
        if clamped == beta:
            continue
        label = f"beta clamped to [{eps:g}, {1 - eps:g}]"
        if ctx.case.kind == "preset":
            rec = amid_ref.presets.get("gkd_jsd", beta=clamped)
            out.append((label, {"terms": rec.terms, "lam": rec.lam}))
        else:
            out.append((label, {"div_params": {**ctx.case.div_params, "beta": clamped}}))
    return out


def _confirm_beta_clamped(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The same ε at the other end: with β mirrored (1 − β) on the same inputs, the output
    is the JSD at the other clamp."""
    beta = _js_beta(ctx)
    if beta is None or ctx.probe is None or ctx.case.mask is not None:
        return False
    c = ctx.case
    if c.kind == "preset":
        moved = _same_preset(c, beta=1.0 - beta)
    else:
        moved = _same_inputs(c, div_params={**c.div_params, "beta": 1.0 - beta})
    mctx = ctx.moved(moved)
    ov = dict(_beta_clamped(mctx)).get(variant)
    return ov is not None and _agrees_on(ctx, moved, mctx.reference(**ov).value, tol)


def _same_preset(case: Case, **params) -> Case:
    s, t = case.logits()
    return Case("control", "preset", preset=case.preset,
                preset_params={**case.preset_params, **params}, temperature=case.temperature,
                name=case.name + "/control", student_logits=s, teacher_logits=t)  # fmt: skip


def _rounded_side(log_x: np.ndarray, form: str, dt: str, logits=None) -> np.ndarray:
    """log of a distribution handed over in ``dt``: ``softmax`` rounded (probabilities in
    dt), ``log_softmax`` rounded (log-probabilities in dt), ``exp`` of the rounded
    log-softmax rounded again (a bf16 ``.exp()``), or ``model`` (the softmax in dt of the
    ``logits`` rounded to dt: a bf16 model's output)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if form == "model":
            z = round_to_dtype(logits, dt)
            top = np.max(np.where(np.isfinite(z), z, -np.inf), axis=-1, keepdims=True)
            z = z - np.where(np.isfinite(top), top, 0.0)
            log_x = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
            return np.log(round_to_dtype(np.exp(log_x), dt))
        if form == "softmax":
            return np.log(round_to_dtype(np.exp(log_x), dt))
        if form == "log_softmax":
            return round_to_dtype(log_x, dt)
        return np.log(round_to_dtype(np.exp(round_to_dtype(log_x, dt)), dt))


def _mixture_unnormalized(log_p, log_q, alpha, lam):
    """The m-mixture λp + (1−λ)q of (possibly unnormalized) p, q, as code writes it."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log(lam) + log_p, np.log1p(-lam) + log_q)


_FORM_WORDS = {
    "softmax": "probabilities",
    "log_softmax": "log-probabilities",
    "exp": "probabilities (exp of log-probabilities)",
    "model": "logits and probabilities",
}


def _low_precision_probabilities(ctx: DiagnosisContext) -> list[Wrong]:
    """The divergence of probabilities (or log-probabilities) rounded to bf16/fp16 on one
    side or both: they no longer sum to 1, so the loss is off (a JSD of a bf16 teacher and
    an fp32 student mixed in one mixture can be negative). The mixture, if any, is the
    m-mixture (α = −1) of the rounded distributions; the output optionally rounded to the
    input dtype."""
    c = ctx.case
    if ctx.kind == "mixture" or c.divergence not in ("kl", "js", "tv", "skew_kl", "jeffreys"):
        return []
    if c.lam != 0.0 and c.alpha != -1.0:
        return []
    log_p, log_q = ctx.ref.log_pq()
    dtypes = ("bfloat16", "float16") if ctx.dtype != "float16" else ("float16",)
    forms = (None, "softmax", "log_softmax", "exp", "model")
    temp = float(c.temperature)
    out = []
    for dt in dtypes:
        for tf in forms:
            for sf in forms:
                if (tf is None and sf is None) or (tf == "model") + (sf == "model") > 1:
                    continue
                lp = log_p if tf is None else _rounded_side(log_p, tf, dt, ctx.ref.t / temp)
                lq = log_q if sf is None else _rounded_side(log_q, sf, dt, ctx.ref.s / temp)
                terms = c.preset_record().terms if c.kind == "preset" else ((c.order, 1.0),)
                lr = lq if c.lam == 0.0 else _mixture_unnormalized(lp, lq, c.alpha, c.lam)
                rows = 0.0
                for order, weight in terms:
                    if weight == 0.0:
                        continue
                    x, y = order_arguments(order, lp, lq, lr)
                    t = _entry_terms(c.divergence, c.div_params, x, y)
                    rows = rows + weight * np.where(np.isneginf(x) & np.isneginf(y), 0.0, t).sum(-1)
                rows = _scaled(ctx, np.asarray(rows, dtype=np.float64) + np.zeros(lp.shape[:-1]))
                label = ", ".join(
                    f"{who} {_FORM_WORDS[form]} in {dt}"
                    for who, form in (("teacher", tf), ("student", sf))
                    if form is not None
                )
                value = ctx.reduce(rows)
                out.append(Wrong(label, value))
                if ctx.dtype in ("bfloat16", "float16"):
                    out.append(Wrong(label + ", loss returned in " + ctx.dtype,
                                     round_to_dtype(value, ctx.dtype)))  # fmt: skip
    return out


def _confirm_on_control(evaluate):
    """Confirmation by a second case: the same variant of the wrong formula reproduces the
    implementation's output on other inputs with the same parameters."""

    def confirm(ctx: DiagnosisContext, variant: str, tol) -> bool:
        control = _control_inputs(ctx)
        if control is None:
            return False
        for w in evaluate(ctx.moved(control)):
            if w.variant == variant:
                return _agrees_on(ctx, control, w.value, tol)
        return False

    return confirm


def _temperature_one_side(ctx: DiagnosisContext) -> list[Wrong]:
    """T dividing only the student's logits, or only the teacher's."""
    temp = float(ctx.case.temperature)
    s, t = ctx.ref.s, ctx.ref.t
    out = []
    for side, ss, tt in (("student", s / temp, t), ("teacher", s, t / temp)):
        w = ctx.reference(s=ss, t=tt, temperature=1.0)
        if ctx.ref.temperature_squared:
            w.value = w.value * temp**2
        w.variant, w.grad = f"T on the {side}'s logits only", None
        out.append(w)
    return out


def _shifted_masks(ctx: DiagnosisContext) -> list[tuple[str, np.ndarray]]:
    """The label mask shifted by one position along the sequence axis (labels[..., 1:]
    against logits[..., :-1], or the reverse), the vacated position dropped."""
    mask = ctx.mask
    if mask is None or mask.ndim < 2 or mask.shape[-1] < 2:
        return []
    left = np.zeros_like(mask)
    left[..., :-1] = mask[..., 1:]
    right = np.zeros_like(mask)
    right[..., 1:] = mask[..., :-1]
    return [
        ("labels[..., 1:] against logits[..., :-1] (a shift of labels already aligned)", left),
        ("labels[..., :-1] against logits[..., 1:]", right),
    ]


def _labels_shifted(ctx: DiagnosisContext) -> list[Wrong]:
    rows, g = ctx.ref.rows(grad=ctx.want_grad)
    out = []
    for variant, mask in _shifted_masks(ctx):
        if np.array_equal(mask, ctx.mask):
            continue
        value = reduce_rows(rows, mask, ctx.reduction)
        grad = reduce_grad(g, mask, ctx.reduction, ctx.upstream) if g is not None else None
        out.append(Wrong(variant, value, grad))
    return out


def _unnormalized_assistant(ctx: DiagnosisContext) -> list[Wrong]:
    """The loss with the unnormalized mixture m in place of r = m/Z (a forgotten
    normalization: for KL(p‖r) the error is exactly −log Z per row)."""
    c = ctx.case
    if c.lam in (0.0, 1.0) or c.alpha == -1.0:
        return []  # Z = 1: m is r
    pairs = _order_pairs(ctx, normalized=False)
    if pairs is None:
        return []
    rows = _rows_from_entries(ctx, pairs)
    if rows is None:
        return []
    return [Wrong("log m for log r (Z left out)", ctx.reduce(rows))]


def _alpha_sign_slip(ctx: DiagnosisContext) -> list[tuple[str, dict]]:
    """β = (α − 1)/2 for (1 − α)/2: the mixture at 2 − α."""
    a = ctx.case.alpha
    if not math.isfinite(a) or a == 1.0 or ctx.case.kind in ("divergence",):
        return []
    if ctx.case.kind == "preset" or not 0.0 < ctx.case.lam < 1.0:
        return []
    return [(f"alpha={2.0 - a!r} (beta={(a - 1.0) / 2.0:g})", {"alpha": 2.0 - a})]


def _confirm_alpha_sign_slip(ctx: DiagnosisContext, variant: str, tol) -> bool:
    """The same slip at another α on the same inputs, one far from 1 (α = −3, or 3)."""
    if ctx.probe is None or ctx.case.mask is not None:
        return False
    other = -3.0 if ctx.case.alpha > -2.0 else 3.0
    moved = _same_inputs(ctx.case, alpha=other)
    return _agrees_on(ctx, moved, ctx.moved(moved).reference(alpha=2.0 - other).value, tol)


# --------------------------------------------------------------------------------------
# The registry (order = priority of the reported diagnosis)
# --------------------------------------------------------------------------------------

FAILURE_MODES: tuple[FailureMode, ...] = (
    FailureMode(
        "jsd_endpoint_kl",
        "KL returned at the generalized JSD's endpoints β ∈ {0, 1}",
        "matches {variant}: at β = 0 and β = 1 the generalized JSD is 0 (its mixture is one "
        "of the two distributions), while this returns forward KL at β = 0 and reverse KL at "
        "β = 1 (TRL and liger-kernel document this as intended: a jump at the endpoints)",
        "exact",
        lambda c: bool(_jsd_endpoint(c)),
        _from_overrides(_jsd_endpoint),
        _LOGITS,
        overrides=_jsd_endpoint,
    ),
    FailureMode(
        "beta_clamped",
        "the JSD's β clamped into [ε, 1 − ε], so β = 0 and 1 are never reached",
        "matches the generalized JSD with {variant}: near the endpoints the loss is the "
        "JSD at the clamp, not at the β asked (β = 0 and 1 do nothing of their own)",
        "exact",
        lambda c: c.kind != "mixture" and bool(_beta_clamped(c)),
        _from_overrides(_beta_clamped),
        _LOGITS,
        confirm=_confirm_beta_clamped,
        overrides=_beta_clamped,
    ),
    FailureMode(
        "infinite_alpha_nan",
        "NaN at α = ±∞ (the finite-α formula evaluated with β = ∓∞)",
        "matches the finite-α formula (1/β)·logaddexp(log λ + β log p, log(1−λ) + β log q) "
        "at α = ±∞ ({variant}): NaN; α = +∞ is min(p, q), α = −∞ max(p, q), normalized",
        "exact",
        lambda c: c.kind in ("loss", "mixture") and math.isinf(c.case.alpha) and 0 < c.case.lam < 1,
        _naive_at_infinite_alpha,
        nonfinite_symptom=True,
        confirm=_confirm_infinite_alpha,
    ),
    FailureMode(
        "kl_div_nan_at_neg_inf",
        "NaN from F.kl_div at −inf targets (0·(−inf))",
        "matches F.kl_div({variant}): NaN on every row where the target distribution has a "
        "zero (a −inf log-probability), since exp(−inf)·(−inf − input) = 0·(−inf); the KL "
        "term of a zero is 0 (mask it, e.g. torch.where(target == -inf, 0, ...))",
        "exact",
        lambda c: c.kind != "mixture" and _has_neg_inf(c),
        _kl_div_nan,
        _LOGITS,
        nonfinite_symptom=True,
        transform=_kl_div_nan_transform,
    ),
    FailureMode(
        "neg_inf_dropped",
        "−inf (masked) entries dropped from the divergence's sum",
        "matches the sum with the entries where the {variant} logit is −inf left out (the "
        "masked_fill(isinf(student) | isinf(teacher), 0) idiom on the terms): those entries "
        "still carry mass in the other distributions (their terms are not 0), so the "
        "divergence is wrong and can be negative",
        "exact",
        lambda c: c.kind != "mixture" and _has_neg_inf(c),
        _isinf_dropped,
        _LOGITS,
    ),
    FailureMode(
        "nan_grad_at_neg_inf",
        "NaN gradients at −inf logits or zero probabilities while the loss value is right",
        "matches the right loss with NaN gradients on {variant} (a masked_fill or where "
        "applied after the 0·log 0 or 0·(−inf) arithmetic, e.g. kl_div's target = "
        "softmax(student) underflowing to 0: the forward value is fixed, the backward is "
        "still NaN; mask the inputs before the arithmetic)",
        "exact",
        lambda c: c.kind != "mixture" and c.want_grad and _has_zero(c),
        _nan_grad,
        _LOGITS,
        nonfinite_symptom=True,
    ),
    FailureMode(
        "params_rounded_to_dtype",
        "divergence parameters rounded to the input dtype",
        "matches the divergence with its parameters rounded to the input dtype ({variant}): "
        "the parameter is made a tensor of the logits' dtype (keep it a Python float or "
        "fp32)",
        "exact",
        lambda c: c.kind != "mixture" and bool(_rounded_params(c)),
        _from_overrides(_rounded_params),
        _LOGITS,
        confirm=_confirm_rounded_params,
        overrides=_rounded_params,
    ),
    FailureMode(
        "logits_in_low_precision",
        "logits formed in bf16/fp16 and cast to fp32 afterwards",
        "matches the reference on the {variant}: the logits were rounded to that dtype (e.g. "
        "an lm_head GEMM with a bf16 output, cast to fp32 afterwards) before an otherwise "
        "exact computation; form them in fp32 (an fp32-output GEMM)",
        "exact",
        lambda c: c.kind != "mixture" and bool(_low_precision_logits(c)),
        _from_overrides(_low_precision_logits),
        _LOGITS,
        confirm=_confirm_low_precision_logits,
        overrides=_low_precision_logits,
    ),
    FailureMode(
        "preset_params_ignored",
        "a preset's parameters ignored (its default used)",
        "matches the preset at its default {variant} whatever is asked: the parameter is ignored",
        "exact",
        lambda c: c.kind == "preset",
        _preset_params_ignored,
        ("preset",),
    ),
    FailureMode(
        "cross_entropy_for_kl",
        "cross-entropy returned instead of KL (KL + H(a))",
        "matches the cross-entropy −Σ a·log b = KL(a‖b) + {variant}: the value is off by the "
        "entropy of the first distribution, a constant in the student when it is the teacher "
        "p, so the gradient is right (check such a peer with --grad-only)",
        "exact",
        lambda c: c.kind != "mixture" and c.case.divergence == "kl",
        _cross_entropy,
        _LOGITS,
    ),
    FailureMode(
        "low_precision_probabilities",
        "probabilities rounded to bf16/fp16 before the divergence (one side or both)",
        "matches the divergence of the {variant}: rounded, a distribution no longer sums to "
        "1, so the divergence is off and can be negative (a bf16 teacher mixed with an fp32 "
        "student gives a negative JSD); form both distributions in fp32",
        "exact",
        lambda c: c.kind != "mixture" and c.dtype != "float64",
        _low_precision_probabilities,
        _LOGITS,
        confirm=_confirm_on_control(_low_precision_probabilities),
    ),
    FailureMode(
        "unnormalized_assistant",
        "the mixture m used unnormalized in place of r = m/Z",
        "matches the loss with {variant}: the α-mixture must be normalized (for KL(p‖r) the "
        "error is exactly −log Z per row; Z = 1 only at α = −1)",
        "exact",
        lambda c: c.kind in ("loss", "preset"),
        _unnormalized_assistant,
        ("loss", "preset"),
        confirm=_confirm_on_control(_unnormalized_assistant),
    ),
    FailureMode(
        "alpha_sign_slip",
        "β = (α − 1)/2 instead of (1 − α)/2 (the mixture at 2 − α)",
        "matches the α-mixture at {variant}: the exponent's sign is flipped, β = (α − 1)/2 "
        "for (1 − α)/2 (α = −1 becomes harmonic, α = 3 arithmetic)",
        "exact",
        lambda c: bool(_alpha_sign_slip(c)),
        _from_overrides(_alpha_sign_slip),
        confirm=_confirm_alpha_sign_slip,
        overrides=_alpha_sign_slip,
    ),
    FailureMode(
        "geometric_collapse",
        "an α-mixture that computes the geometric mixture for every α ≥ 1",
        "matches the geometric mixture: α ≥ 1 collapsed to α = 1 (so α = 3 is not harmonic)",
        "exact",
        lambda c: c.case.alpha > 1.0,
        _geometric,
        overrides=lambda c: [("alpha=1", {"alpha": 1.0})],
    ),
    FailureMode(
        "lambda_on_student",
        "λ applied to the student instead of the teacher",
        "matches λ applied to the student: the mixture weights q by λ (λ must weight the "
        "teacher p; λ = 1 gives r = p)",
        "exact",
        lambda c: c.case.lam != 0.5,
        _lambda_on_student,
        confirm=_confirm_lambda_on_student,
        overrides=lambda c: [(f"lam={1.0 - c.case.lam!r}", {"lam": 1.0 - c.case.lam})],
    ),
    FailureMode(
        "amari_limits_swapped",
        "Amari α-divergence limits swapped (γ → 1 returning KL(a‖b))",
        "matches the Amari α-divergence with γ → −γ: the limits are swapped (γ → 1 must give "
        "KL(b‖a), γ → −1 KL(a‖b))",
        "exact",
        lambda c: (
            c.kind != "mixture"
            and c.case.divergence == "amari"
            and float(c.case.div_params.get("alpha", 0.0)) != 0.0
        ),
        _amari_swapped,
        _LOGITS,
    ),
    FailureMode(
        "ab_special_case_scale",
        "AB-divergence special cases using 1/a_ instead of 1/a_²",
        "matches the AB-divergence special case with 1/{variant} instead of 1/{variant}² "
        "(a function discontinuous in (a_, b_))",
        "exact",
        lambda c: (
            c.kind != "mixture"
            and c.case.divergence == "ab"
            and _ab_line(c.case.div_params) is not None
            and abs(_ab_line(c.case.div_params)[1]) != 1.0
        ),
        _ab_one_over_a,
        _LOGITS,
    ),
    FailureMode(
        "divergence_params_ignored",
        "divergence parameters ignored (the output is the divergence at fixed parameters)",
        "matches the divergence at {variant} whatever parameters are asked: the divergence "
        "parameters are ignored",
        "exact",
        lambda c: c.kind != "mixture" and bool(_other_params(c)),
        _params_ignored,
        _LOGITS,
        confirm=_confirm_params_ignored,
        overrides=_other_params,
    ),
    FailureMode(
        "padded_logit_zero",
        "padded vocabulary entries given logit 0 instead of −inf",
        "matches masked/padded vocabulary entries given logit 0 instead of −inf ({variant} logits)",
        "exact",
        lambda c: c.kind != "mixture" and _has_neg_inf(c),
        _padded_zero,
        _LOGITS,
        overrides=lambda c: _padded_overrides(c),
    ),
    FailureMode(
        "mask_divide_by_zero",
        "masks that divide by zero when every position is ignored",
        "matches sum(mask·loss)/sum(mask) = 0/0: the mean divides by zero when every "
        "position is ignored (return 0)",
        "exact",
        lambda c: c.kind != "mixture" and c.case.mask == "all" and c.reduction == "mean",
        _mask_nan,
        _LOGITS,
        nonfinite_symptom=True,
    ),
    FailureMode(
        "ignore_index_not_applied",
        "labels equal to ignore_index still counted",
        "matches the loss with ignore_index not applied (ignored positions counted)",
        "exact",
        lambda c: c.kind != "mixture" and c.case.mask in ("some", "all"),
        _mask_not_applied,
        _LOGITS,
    ),
    FailureMode(
        "roles_swapped",
        "student and teacher swapped (or the declared convention is wrong)",
        "matches the reference with student and teacher swapped: check --convention, or the "
        "implementation swaps the roles",
        "exact",
        lambda c: True,
        _swapped_roles,
        ("loss", "mixture", "divergence", "preset"),
        overrides=lambda c: [("student<->teacher", {"s": c.ref.t, "t": c.ref.s})],
    ),
    FailureMode(
        "temperature",
        "temperature handled differently (T² missing, twice or undeclared; T ignored)",
        "matches {variant}: the reference loss is D at temperature T (softmax of logits/T on "
        "both sides), times T² only where declared (--temperature-squared)",
        "exact",
        lambda c: c.kind != "mixture" and c.case.temperature != 1.0,
        _temperature,
        _LOGITS,
        overrides=lambda c: (
            [] if c.ref.temperature_squared else [("temperature ignored", {"temperature": 1.0})]
        ),
    ),
    FailureMode(
        "temperature_one_side",
        "temperature dividing one side's logits only",
        "matches {variant}: T must divide both the student's and the teacher's logits",
        "exact",
        lambda c: c.kind != "mixture" and c.case.temperature != 1.0,
        _temperature_one_side,
        _LOGITS,
        confirm=_confirm_on_control(_temperature_one_side),
    ),
    FailureMode(
        # Diagnosed by its control only (amid_ref.conformance._diagnoses._offset_rounding):
        # the same distributions with the row maximum subtracted first pass.
        "logit_offset_rounding",
        "rounding at the magnitude of a large common logit offset",
        "rounding at the logits' magnitude: subtract the row maximum first",
        "exact",
        lambda c: False,
        lambda c: [],
        _LOGITS,
    ),
    FailureMode(
        "temperature_before_max",
        "logits divided by T in low precision before the row max is subtracted",
        "matches logits scaled by {variant} in the working dtype before the row max is "
        "subtracted: a large common offset loses its low bits (subtract the max first)",
        "exact",
        lambda c: c.kind != "mixture" and c.case.temperature != 1.0 and c.dtype != "float64",
        _scaled_before_max,
        _LOGITS,
    ),
    FailureMode(
        "labels_shifted",
        "labels shifted by one position against the logits",
        "matches the loss masked by {variant}: the labels were shifted once too often (or "
        "not at all); the mask must be that of the same positions as the logits",
        "exact",
        lambda c: c.kind != "mixture" and c.case.mask in ("some", "all", "none"),
        _labels_shifted,
        _LOGITS,
    ),
    FailureMode(
        "reduction_mismatch",
        "reduced another way than declared (mean, sum, by the batch size, by rows × V)",
        "matches reduction={variant} (batchmean: the sum divided by the batch size, the "
        "first dimension; mean: by the number of kept positions; elementwise mean: by rows × "
        "V, torch's kl_div 'mean'): declare it, or reduce as intended",
        "exact",
        lambda c: c.kind != "mixture" and c.reduction in ("mean", "sum", "batchmean"),
        _other_reduction,
        _LOGITS,
    ),
    FailureMode(
        "normalization_mismatch",
        "normalized log r vs unnormalized log m",
        "matches {variant}: declare normalized={flag}",
        "exact",
        lambda c: c.kind == "mixture",
        _unnormalized,
        ("mixture",),
    ),
    FailureMode(
        "assistant_detach_mismatch",
        "gradient with the assistant r detached (or not) against the declaration",
        "matches the gradient with the {variant}: declare detach_assistant accordingly",
        "exact",
        lambda c: c.kind != "mixture" and c.want_grad,
        _detached,
        _LOGITS,
    ),
    FailureMode(
        "probability_space_mixture",
        "mixture formed in probability space and then logged",
        "matches a mixture formed in probability space ({variant}) and then logged: where p "
        "and q underflow, log r = −inf and the loss is inf/NaN",
        "exact",
        lambda c: (
            c.got is not None
            and bool((~np.isfinite(c.got)).any())
            and (c.kind != "preset" or _single_mixture_term(c))
        ),
        _probability_space,
        ("loss", "mixture", "preset"),
        nonfinite_symptom=True,
    ),
    FailureMode(
        "low_precision_logaddexp",
        "the logaddexp/β formula evaluated in bf16 or fp16",
        "matches (1/β)·logaddexp(log λ + β log p, log(1−λ) + β log q) evaluated in "
        "{variant}: rounding noise of the bracket divided by β, an error that grows like "
        "1/|1 − α| as α → 1 (any formula dividing a rounded bracket by β fails so; use "
        "log1p/expm1, fp32 or better)",
        "noise",
        _finite_beta,
        _low_precision,
        control=_beta_control,
    ),
    FailureMode(
        "ab_cancellation",
        "the general AB formula cancelling catastrophically as a_ → 0",
        "matches the general AB-divergence formula in {variant} cancelling catastrophically "
        "near a_ = 0, b_ = 0 or a_ + b_ = 0 (evaluate by series there)",
        "noise",
        lambda c: (
            c.kind != "mixture" and c.case.divergence == "ab" and _ab_near_line(c.case.div_params)
        ),
        _ab_general,
        _LOGITS,
        control=_ab_control,
    ),
    FailureMode(
        "input_dtype_arithmetic",
        "arithmetic in the input dtype (bf16/fp16) at every α, not only near α = 1",
        "matches the loss computed in {variant} throughout (log-softmax, mixture, per-entry "
        "terms; sums in fp32): the same inputs passed as float32 give the reference, so the "
        "error is the {variant} arithmetic (upcast the logits to fp32 first)",
        "noise",
        lambda c: c.kind != "mixture" and c.dtype in ("bfloat16", "float16"),
        _input_dtype,
        _LOGITS,
        confirm=_confirm_input_dtype,
    ),
    FailureMode(
        "low_precision_arithmetic",
        "arithmetic in bf16/fp16 inside the function (a cast or autocast), whatever the "
        "input dtype",
        "matches the loss computed in {variant} throughout (log-softmax, mixture, per-entry "
        "terms; sums in fp32) although the inputs are not {variant}: float32 inputs give "
        "the same size of error on this case and on another, so the function casts to "
        "{variant} inside (remove the cast, or compute the loss in fp32)",
        "noise",
        lambda c: c.kind != "mixture" and c.dtype != "float16",
        _internal_low_precision,
        _LOGITS,
        confirm=_confirm_internal_low_precision,
    ),
)
