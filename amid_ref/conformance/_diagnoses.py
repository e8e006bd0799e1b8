"""Known failure modes of published AMiD-type losses, each as a known-wrong formula.

A failing case is diagnosed by evaluating every applicable wrong formula on the case's own
inputs and checking whether the implementation's output agrees with it. ``exact`` modes must
agree within the case's tolerance (non-finite results agree with non-finite results: NaN or
±inf is the symptom); ``noise`` modes reproduce rounding noise, whose exact value depends on
the operation order, so they match when the implementation's error has the size of the wrong
formula's error (within a factor of 30, or both O(1) relative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from amid_ref.conformance._cases import Case, round_to_dtype
from amid_ref.conformance._reference import ReferenceInputs, reduce_grad, reduce_rows
from amid_ref.tolerances import Tolerance

__all__ = ["FAILURE_MODES", "Diagnosis", "DiagnosisContext", "FailureMode", "diagnose"]


@dataclass
class DiagnosisContext:
    """What a wrong formula needs: the rounded inputs and how the output is reduced."""

    ref: ReferenceInputs
    dtype: str
    reduction: str
    mask: np.ndarray | None
    upstream: np.ndarray | None
    want_grad: bool = False
    probe: Callable[[Case], tuple[np.ndarray, np.ndarray] | None] | None = None
    got: np.ndarray | None = None

    @property
    def case(self):
        return self.ref.case

    @property
    def kind(self) -> str:
        return self.ref.case.kind

    @property
    def compute_dtypes(self) -> tuple[str, ...]:
        """Dtypes a wrong formula is plausibly evaluated in for this declared dtype."""
        if self.dtype == "float64":
            return ("float64",)
        if self.dtype == "float16":
            return ("float32", "float16", "float64")
        return ("float32", "float64")

    def reduce(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "mixture":
            return rows
        return reduce_rows(rows, self.mask, self.reduction)

    def reference(self, **overrides) -> Wrong:
        """The reference with parameters or inputs overridden (value and, if needed, grad)."""
        rows, g = self.ref.rows(grad=self.want_grad and self.kind == "loss", **overrides)
        grad = None
        if g is not None:
            grad = reduce_grad(g, self.mask, self.reduction, self.upstream)
        return Wrong("", self.reduce(rows), grad)

    def moved(self, case: Case) -> DiagnosisContext:
        """The same context for ``case`` (same inputs, other parameters)."""
        s, t = case.arrays(self.dtype)
        ref = ReferenceInputs(
            case, s, t, normalized=self.ref.normalized, detach_assistant=self.ref.detach_assistant
        )
        return DiagnosisContext(ref, self.dtype, self.reduction, self.mask, None, False, None)

    def from_log_m(self, log_m: np.ndarray) -> np.ndarray:
        return self.reduce(self.ref.loss_from_log_m(log_m))


@dataclass
class Wrong:
    """A known-wrong formula's output on a case (value, optional gradient)."""

    variant: str
    value: np.ndarray | None
    grad: np.ndarray | None = None


@dataclass(frozen=True)
class FailureMode:
    """A known failure mode: when it can apply, its wrong formula, how to match, the message.

    ``message`` may contain ``{variant}``, filled with the variant that matched. A
    ``noise`` mode has a ``control(case, k)``: the same case with its conditioning parameter
    (β, or the AB parameters' distance to a special line) multiplied by ``k``; the mode
    matches only if the implementation's error follows the wrong formula's under such
    moves (:func:`_scales_like`).
    """

    id: str
    summary: str
    message: str
    match: str
    applies: Callable[[DiagnosisContext], bool]
    evaluate: Callable[[DiagnosisContext], list[Wrong]]
    kinds: tuple[str, ...] = ("loss", "mixture")
    control: Callable[[Case, float], Case | None] | None = None
    nonfinite_symptom: bool = False


@dataclass
class Diagnosis:
    """A failure mode whose wrong formula reproduces the implementation's output."""

    id: str
    message: str
    match: str
    quantity: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "message": self.message, "match": self.match, "on": self.quantity}


# --------------------------------------------------------------------------------------
# Wrong formulas
# --------------------------------------------------------------------------------------


def _beta(alpha: float) -> float:
    return (1.0 - alpha) / 2.0


#: Rounding-noise samples per dtype for ``noise`` modes: the unperturbed evaluation plus
#: evaluations on inputs jittered by ±1 unit roundoff of that dtype, giving the spread of
#: errors the wrong formula produces under a different operation order.
NOISE_SAMPLES = 4
_UNIT_ROUNDOFF = {
    "bfloat16": 2.0**-8,
    "float16": 2.0**-11,
    "float32": 2.0**-24,
    "float64": 2.0**-53,
}


_NOISE_FACTOR = 10.0


def _jitter(x: np.ndarray, dtype: str, sample: int) -> np.ndarray:
    if sample == 0:
        return x
    rng = np.random.default_rng(1000 + sample)
    u = rng.integers(-1, 2, np.shape(x)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), x * (1.0 + u * _UNIT_ROUNDOFF[dtype]), x)


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
    import amid_ref

    a = float(ctx.case.div_params["alpha"])
    b = float(ctx.case.div_params["beta"])
    log_p, log_q = ctx.ref.log_pq()
    log_r = np.asarray(amid_ref.log_alpha_mixture(log_p, log_q, ctx.case.alpha, ctx.case.lam))
    x, y = {
        "pr": (log_p, log_r),
        "qr": (log_q, log_r),
        "rp": (log_r, log_p),
        "rq": (log_r, log_q),
    }[ctx.case.order]
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
    sq = ctx.reference()
    sq.value = sq.value * temp**2
    if sq.grad is not None:
        sq.grad = sq.grad * temp**2
    sq.variant = "T^2 * loss (Hinton scaling)"
    ignored = ctx.reference(temperature=1.0)
    ignored.variant = "temperature ignored"
    return [sq, ignored]


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
    other = "sum" if ctx.reduction == "mean" else "mean"
    rows, g = ctx.ref.rows(grad=ctx.want_grad)
    value = reduce_rows(rows, ctx.mask, other)
    grad = reduce_grad(g, ctx.mask, other, ctx.upstream) if g is not None else None
    return [Wrong(other, value, grad)]


def _unnormalized(ctx: DiagnosisContext) -> list[Wrong]:
    import amid_ref

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


def _probability_space(ctx: DiagnosisContext) -> list[Wrong]:
    log_p, log_q = ctx.ref.log_pq()
    out = []
    for dt in ctx.compute_dtypes:
        npdt = {"float64": np.float64, "float32": np.float32, "float16": np.float16}[dt]
        log_r = _prob_space_log_m(log_p, log_q, ctx.case.alpha, ctx.case.lam, npdt)
        out.append(Wrong(dt, ctx.from_log_m(log_r)))
    return out


def _naive_log_m(lp, lq, alpha: float, lam: float, dtype: str) -> np.ndarray:
    """``(1/β)·logaddexp(log λ + β lp, log(1−λ) + β lq)`` with every result rounded to dtype."""

    def rnd(x):
        return round_to_dtype(x, dtype)

    beta = _beta(alpha)
    with np.errstate(all="ignore"):
        log_lam = math.log(lam) if lam > 0 else -math.inf
        log_mu = math.log1p(-lam) if lam < 1 else -math.inf
        a = rnd(rnd(rnd(lp) * beta) + log_lam)
        b = rnd(rnd(rnd(lq) * beta) + log_mu)
        return rnd(rnd(np.logaddexp(a, b)) / beta)


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
    x, y = {"pr": (lp, log_r), "qr": (lq, log_r), "rp": (log_r, lp), "rq": (log_r, lq)}[
        ctx.case.order
    ]
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


# --------------------------------------------------------------------------------------
# The registry (order = priority of the reported diagnosis)
# --------------------------------------------------------------------------------------

FAILURE_MODES: tuple[FailureMode, ...] = (
    FailureMode(
        "geometric_collapse",
        "an α-mixture that computes the geometric mixture for every α ≥ 1",
        "matches the geometric mixture: α ≥ 1 collapsed to α = 1 (so α = 3 is not harmonic)",
        "exact",
        lambda c: c.case.alpha > 1.0,
        _geometric,
    ),
    FailureMode(
        "lambda_on_student",
        "λ applied to the student instead of the teacher",
        "matches λ applied to the student: the mixture weights q by λ (λ must weight the "
        "teacher p; λ = 1 gives r = p)",
        "exact",
        lambda c: c.case.lam != 0.5,
        _lambda_on_student,
    ),
    FailureMode(
        "amari_limits_swapped",
        "Amari α-divergence limits swapped (γ → 1 returning KL(a‖b))",
        "matches the Amari α-divergence with γ → −γ: the limits are swapped (γ → 1 must give "
        "KL(b‖a), γ → −1 KL(a‖b))",
        "exact",
        lambda c: (
            c.kind == "loss"
            and c.case.divergence == "amari"
            and float(c.case.div_params.get("alpha", 0.0)) != 0.0
        ),
        _amari_swapped,
        ("loss",),
    ),
    FailureMode(
        "ab_special_case_scale",
        "AB-divergence special cases using 1/a_ instead of 1/a_²",
        "matches the AB-divergence special case with 1/{variant} instead of 1/{variant}² "
        "(a function discontinuous in (a_, b_))",
        "exact",
        lambda c: (
            c.kind == "loss"
            and c.case.divergence == "ab"
            and _ab_line(c.case.div_params) is not None
            and abs(_ab_line(c.case.div_params)[1]) != 1.0
        ),
        _ab_one_over_a,
        ("loss",),
    ),
    FailureMode(
        "padded_logit_zero",
        "padded vocabulary entries given logit 0 instead of −inf",
        "matches masked/padded vocabulary entries given logit 0 instead of −inf ({variant} logits)",
        "exact",
        lambda c: c.kind == "loss" and _has_neg_inf(c),
        _padded_zero,
        ("loss",),
    ),
    FailureMode(
        "mask_divide_by_zero",
        "masks that divide by zero when every position is ignored",
        "matches sum(mask·loss)/sum(mask) = 0/0: the mean divides by zero when every "
        "position is ignored (return 0)",
        "exact",
        lambda c: c.kind == "loss" and c.case.mask == "all" and c.reduction == "mean",
        _mask_nan,
        ("loss",),
        nonfinite_symptom=True,
    ),
    FailureMode(
        "ignore_index_not_applied",
        "labels equal to ignore_index still counted",
        "matches the loss with ignore_index not applied (ignored positions counted)",
        "exact",
        lambda c: c.kind == "loss" and c.case.mask in ("some", "all"),
        _mask_not_applied,
        ("loss",),
    ),
    FailureMode(
        "roles_swapped",
        "student and teacher swapped (or the declared convention is wrong)",
        "matches the reference with student and teacher swapped: check --convention, or the "
        "implementation swaps the roles",
        "exact",
        lambda c: True,
        _swapped_roles,
    ),
    FailureMode(
        "temperature",
        "temperature handled differently (T² scaling, or ignored)",
        "matches {variant}: the reference loss is D at temperature T without T² scaling",
        "exact",
        lambda c: c.kind == "loss" and c.case.temperature != 1.0,
        _temperature,
        ("loss",),
    ),
    FailureMode(
        "temperature_before_max",
        "logits divided by T in low precision before the row max is subtracted",
        "matches logits scaled by {variant} in the working dtype before the row max is "
        "subtracted: a large common offset loses its low bits (subtract the max first)",
        "exact",
        lambda c: c.kind == "loss" and c.case.temperature != 1.0 and c.dtype != "float64",
        _scaled_before_max,
        ("loss",),
    ),
    FailureMode(
        "reduction_mismatch",
        "reduced with mean where sum was declared, or the reverse",
        "matches reduction={variant}: declare --reduction {variant}",
        "exact",
        lambda c: c.kind == "loss" and c.reduction in ("mean", "sum"),
        _other_reduction,
        ("loss",),
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
        lambda c: c.kind == "loss" and c.want_grad,
        _detached,
        ("loss",),
    ),
    FailureMode(
        "probability_space_mixture",
        "mixture formed in probability space and then logged",
        "matches a mixture formed in probability space ({variant}) and then logged: where p "
        "and q underflow, log r = −inf and the loss is inf/NaN",
        "exact",
        lambda c: c.got is not None and bool((~np.isfinite(c.got)).any()),
        _probability_space,
        nonfinite_symptom=True,
    ),
    FailureMode(
        "low_precision_logaddexp",
        "the logaddexp/β formula evaluated in bf16 or fp16",
        "matches (1/β)·logaddexp(log λ + β log p, log(1−λ) + β log q) evaluated in "
        "{variant}: rounding noise of the bracket divided by β, whole nats near α = 1 (any "
        "formula dividing a rounded bracket by β fails so; use log1p/expm1, fp32 or better)",
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
            c.kind == "loss" and c.case.divergence == "ab" and _ab_near_line(c.case.div_params)
        ),
        _ab_general,
        ("loss",),
        control=_ab_control,
    ),
)


# --------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------


def _bound(want: np.ndarray, tol: Tolerance) -> np.ndarray:
    scale = np.abs(np.where(np.isfinite(want), want, 0.0))
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    return tol.atol + tol.rtol * scale


def _agrees(
    got: np.ndarray, wrong: np.ndarray, tol: Tolerance, *, any_nonfinite: bool = False
) -> bool:
    """``got`` within ``tol`` of ``wrong``; non-finite entries must be the same (NaN with
    NaN, +inf with +inf), or merely both non-finite when ``any_nonfinite`` (modes whose
    symptom is "inf or NaN", which one evaluation order turns into the other)."""
    if got.shape != wrong.shape:
        return False
    nf_got, nf_wrong = ~np.isfinite(got), ~np.isfinite(wrong)
    if (nf_got != nf_wrong).any():
        return False
    if not any_nonfinite:
        same = (np.isnan(got) == np.isnan(wrong)) & (np.isnan(got) | (got == wrong))
        if not same[nf_got].all():
            return False
    fin = ~nf_got
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(got - wrong)[fin] <= _bound(wrong, tol)[fin]))


def _fails(x: np.ndarray, want: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Entries of ``x`` outside the tolerance of ``want`` (infinities must agree exactly)."""
    with np.errstate(invalid="ignore"):
        same = x == want
        err = np.where(same, 0.0, np.abs(x - want))
        err = np.where(np.isnan(err), np.inf, err)
        return err > _bound(want, tol)


def _rms_error(got: np.ndarray, cand: np.ndarray, want: np.ndarray, failing: np.ndarray, tol):
    """RMS error of ``cand`` over the finite failing entries of ``got`` (None: incompatible)."""
    g, w, r = got[failing], cand[failing], want[failing]
    nf_g, nf_w = ~np.isfinite(g), ~np.isfinite(w)
    if (nf_g & ~nf_w).any():
        return None
    fin = ~nf_g
    if not fin.any():
        return 0.0, False
    if nf_w[fin].any() or not _fails(cand, want, tol)[failing][fin].any():
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e_w = np.abs(w - r)[fin]
        size = np.maximum(np.abs(r[fin]), 1e-300)
        return float(np.sqrt(np.mean(e_w**2))), bool(np.median(e_w / size) >= 0.3)


def _systematic(got: np.ndarray, want: np.ndarray, failing: np.ndarray) -> bool:
    """Whether the failing entries' errors look deterministic rather than rounding noise.

    True when there are at least two finite failing entries and their relative errors, or
    their absolute errors, all have one sign and agree within a factor of 1.5 (a scaled or
    shifted loss, say): rounding noise does not line up across rows like that.
    """
    g, r = got[failing], want[failing]
    fin = np.isfinite(g) & np.isfinite(r) & (r != 0)
    if fin.sum() < 2:
        return False
    err = g[fin] - r[fin]
    for e in (err / np.abs(r[fin]), err):
        same_sign = bool(np.all(e > 0) or np.all(e < 0))
        if same_sign and np.max(np.abs(e)) <= 1.5 * np.min(np.abs(e)):
            return True
    return False


def _noise_distance(
    got: np.ndarray, samples: list[np.ndarray], want: np.ndarray, tol: Tolerance
) -> float:
    """How far ``got``'s error is from the wrong formula's, in decades (inf: no match).

    Rounding noise differs entry by entry with the operation order, so error sizes are
    compared in aggregate over the entries where ``got`` fails: non-finite entries must be
    non-finite in the wrong formula too; over the finite ones, the root-mean-square error of
    ``got`` must lie within a factor of 10 of the range spanned by the noise ``samples`` of
    the wrong formula (:data:`NOISE_SAMPLES`), or both be O(1) relative (median relative
    error ≥ 0.3: garbage, whatever its exact value). Errors that line up across rows
    (:func:`_systematic`) do not match a wrong formula whose errors do not.
    """
    failing = _fails(got, want, tol)
    if not failing.any():
        return math.inf
    samples = [c for c in samples if c.shape == got.shape]
    n_systematic = sum(_systematic(c, want, failing) for c in samples)
    if _systematic(got, want, failing) and 2 * n_systematic <= len(samples):
        return math.inf  # a deterministic error, while the wrong formula's is noise
    own = _rms_error(got, got, want, failing, tol)
    stats = [_rms_error(got, c, want, failing, tol) for c in samples]
    stats = [x for x in stats if x is not None]
    if own is None or not stats:
        return math.inf
    rms_g = own[0]
    if rms_g == 0.0:
        return 0.0  # every failing entry is non-finite, as in the wrong formula
    lo = min(x[0] for x in stats)
    hi = max(x[0] for x in stats)
    if lo <= 0.0:
        return math.inf
    decades = (
        0.0 if lo <= rms_g <= hi else min(abs(math.log10(rms_g / lo)), abs(math.log10(rms_g / hi)))
    )
    return decades if decades <= math.log10(_NOISE_FACTOR) else math.inf


def _all_nonfinite_failures(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> bool:
    """Every failing entry is inf/NaN where the reference is finite (e.g. an underflow)."""
    failing = _fails(got, want, tol)
    return bool(failing.any() and np.all(~np.isfinite(got[failing])))


def _rms_all(x: np.ndarray, want: np.ndarray) -> float:
    """RMS relative error of ``x`` (relative to ``max(|want|, 1e-12)``; NaN if non-finite)."""
    fin = np.isfinite(x) & np.isfinite(want)
    if not fin.all():
        return math.nan
    with np.errstate(over="ignore"):
        rel = (x - want) / np.maximum(np.abs(want), 1e-12)
        return float(np.sqrt(np.mean(rel**2))) if x.size else 0.0


def _scales_like(
    ctx: DiagnosisContext,
    mode: FailureMode,
    variant: str,
    got: np.ndarray,
    want: np.ndarray,
    samples: list[np.ndarray],
    tol: Tolerance,
) -> bool:
    """Whether the implementation's error follows the wrong formula's as conditioning changes.

    ``mode.control`` moves the conditioning parameter (β, or the distance of the AB
    parameters to a special line) by k = 10, 0.1 and 0.01; at this case and at each moved
    case the RMS relative errors of the implementation and of the wrong formula are
    measured (relative, so that a defect whose error is proportional to the loss does not
    follow the wrong formula just because the loss changes with the parameter), and
    whether the implementation agrees (within tolerance) with a noise sample of the wrong
    formula. At every point the two errors must be within a factor of 10, and either

    * the wrong formula's error spans at least a decade over the points and, between the
      points where it is smallest and largest, the implementation's error grows by at least
      half as many decades (a defect with a fixed error, e.g. a scaled loss, cannot follow);
    * or the implementation agrees (within tolerance, widened to 4 units of roundoff of the
      declared dtype) with the unperturbed wrong formula at three points or more (where
      the wrong formula is saturated garbage that does not scale, e.g. a uniform r when
      β·log p is lost entirely).
    """
    if mode.control is None or ctx.probe is None or ctx.case.mask is not None:
        return False
    points = [(_rms_all(got, want), float(np.median([_rms_all(c, want) for c in samples])))]
    # Agreement is counted against the unperturbed evaluation only (samples[0]): agreeing
    # with one of several noise samples would be chance. The bound allows for a result
    # rounded to the declared dtype (an implementation computing everything in bf16).
    tol = Tolerance(
        rtol=max(tol.rtol, 4 * _UNIT_ROUNDOFF[ctx.dtype]), atol=tol.atol, reason="agreement"
    )
    agree = int(_agrees(got, samples[0], tol))
    for k in (10.0, 0.1, 0.01):
        moved = mode.control(ctx.case, k)
        if moved is None:
            continue
        try:
            probed = ctx.probe(moved)
            moved_samples = [
                np.broadcast_to(np.asarray(w.value, dtype=np.float64), probed[1].shape)
                for w in mode.evaluate(ctx.moved(moved))
                if probed is not None and w.variant == variant and w.value is not None
            ]
        except (ValueError, TypeError, ZeroDivisionError, FloatingPointError, KeyError):
            continue
        if probed is None or not moved_samples:
            continue
        got_k, want_k = probed
        e_wk = [_rms_all(c, want_k) for c in moved_samples]
        points.append((_rms_all(got_k, want_k), float(np.median(e_wk))))
        agree += int(_agrees(got_k, moved_samples[0], tol))
    points = [(g, w) for g, w in points if g > 0 and w > 0 and math.isfinite(g * w)]
    if len(points) < 2:
        return False
    log_g = np.log10([g for g, _ in points])
    log_w = np.log10([w for _, w in points])
    if np.max(np.abs(log_g - log_w)) > 1.0:
        return False
    if agree >= 3:
        return True
    lo, hi = int(np.argmin(log_w)), int(np.argmax(log_w))
    spread = log_w[hi] - log_w[lo]
    return bool(spread >= 1.0 and log_g[hi] - log_g[lo] >= 0.5 * spread)


def diagnose(
    ctx: DiagnosisContext,
    *,
    got: np.ndarray,
    want: np.ndarray,
    tol: Tolerance,
    quantity: str,
) -> list[Diagnosis]:
    """Every failure mode whose wrong formula reproduces ``got`` on this case.

    ``quantity`` is ``"value"`` (loss or log-mixture) or ``"grad"``; a wrong formula must
    itself fail the case, and the implementation must agree with it. Exact matches come
    first (registry order), then noise-type matches, closest first; a noise-type match
    needs its error size to agree (:func:`_noise_distance`) and, unless every failing entry
    is non-finite, its error to scale like the wrong formula's (:func:`_scales_like`).
    """
    ctx.got = got
    exact: list[Diagnosis] = []
    noisy: list[tuple[float, int, Diagnosis]] = []
    flag = "False" if ctx.ref.normalized else "True"
    for rank, mode in enumerate(FAILURE_MODES):
        if ctx.kind not in mode.kinds:
            continue
        if quantity == "grad" and mode.match != "exact":
            continue
        try:
            if not mode.applies(ctx):
                continue
            variants = mode.evaluate(ctx)
        except (ValueError, TypeError, ZeroDivisionError, FloatingPointError, KeyError):
            continue
        groups: dict[str, list[np.ndarray]] = {}
        for w in variants:
            cand = w.grad if quantity == "grad" else w.value
            if cand is None:
                continue
            cand = np.asarray(cand, dtype=np.float64)
            if cand.ndim == 0 and got.ndim:
                cand = np.broadcast_to(cand, got.shape)
            if cand.shape == got.shape:
                groups.setdefault(w.variant, []).append(cand)
        best: tuple[float, Diagnosis] | None = None
        for variant, cands in groups.items():
            message = mode.message.format(variant=variant, flag=flag)
            failing = [c for c in cands if _fails(c, want, tol).any()]
            if not failing:
                continue
            if mode.match == "exact":
                loose = mode.nonfinite_symptom
                if any(_agrees(got, c, tol, any_nonfinite=loose) for c in failing):
                    best = (-1.0, Diagnosis(mode.id, message, "exact", quantity))
                    break
            else:  # agreeing with one noise sample is chance, not evidence: always confirm
                dist = 0.0 if any(_agrees(got, c, tol) for c in failing) else math.inf
                dist = min(dist, _noise_distance(got, cands, want, tol))
                if not math.isfinite(dist) or (best is not None and dist >= best[0]):
                    continue
                if _all_nonfinite_failures(got, want, tol) or _scales_like(
                    ctx, mode, variant, got, want, cands, tol
                ):
                    best = (dist, Diagnosis(mode.id, message, "noise", quantity))
        if best is None:
            continue
        if best[0] < 0:
            exact.append(best[1])
        else:
            noisy.append((best[0], rank, best[1]))
    return exact + [d for _, _, d in sorted(noisy, key=lambda x: (x[0], x[1]))]
