"""The matching: which known failure mode reproduces a failing implementation's output.

The failure modes' data types are :mod:`amid_ref.conformance._failure_modes`, the wrong
formulas :data:`amid_ref.conformance._mutants.FAILURE_MODES`. A failing case is diagnosed
by evaluating every applicable wrong formula on the case's own inputs and checking whether
the implementation's output agrees with it. ``exact`` modes must agree within the case's
tolerance (non-finite results agree with non-finite results: NaN or ±inf is the symptom);
``noise`` modes reproduce rounding noise, whose exact value depends on the operation order,
so they match when the implementation's error has the size of the wrong formula's error
(within a factor of 30, or both O(1) relative).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from amid_ref._battery._compare import agrees, fails, tolerance_for
from amid_ref.conformance._cases import Case
from amid_ref.conformance._failure_modes import (
    _UNIT_ROUNDOFF,
    Diagnosis,
    DiagnosisContext,
    FailureMode,
    Wrong,
    _noise_distance,
)
from amid_ref.conformance._mutants import FAILURE_MODES
from amid_ref.conformance._reference import reduce_grad
from amid_ref.tolerances import Tolerance

__all__ = ["Diagnosis", "DiagnosisContext", "FailureMode", "diagnose"]


# --------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------


def _all_nonfinite_failures(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> bool:
    """Every failing entry is inf/NaN where the reference is finite (e.g. an underflow)."""
    failing = fails(got, want, tol)
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
    agree = int(agrees(got, samples[0], tol))
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
        agree += int(agrees(got_k, moved_samples[0], tol))
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


def _candidates(variants: list[Wrong], quantity: str, got: np.ndarray) -> dict[str, list]:
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
    return groups


_EXPECTED = (ValueError, TypeError, ZeroDivisionError, FloatingPointError, KeyError)


def _degenerate(wrong: np.ndarray, tol: Tolerance) -> bool:
    """Every entry finite and within the tolerance's absolute floor of 0."""
    wrong = np.asarray(wrong, dtype=np.float64)
    return bool(np.all(np.isfinite(wrong)) and np.all(np.abs(wrong) <= tol.atol))


def _single_modes(
    ctx: DiagnosisContext, got, want, tol: Tolerance, quantity: str, *, exact_only: bool = False
) -> tuple[list[Diagnosis], list[tuple[float, int, Diagnosis]]]:
    exact: list[Diagnosis] = []
    noisy: list[tuple[float, int, Diagnosis]] = []
    flag = "False" if ctx.ref.normalized else "True"
    for rank, mode in enumerate(FAILURE_MODES):
        if ctx.kind not in mode.kinds:
            continue
        if (quantity == "grad" or exact_only) and mode.match != "exact":
            continue
        try:
            if not mode.applies(ctx):
                continue
            variants = mode.evaluate(ctx)
        except _EXPECTED:
            continue
        groups = _candidates(variants, quantity, got)
        best: tuple[float, Diagnosis] | None = None
        for variant, cands in groups.items():
            message = mode.message.format(variant=variant, flag=flag)
            failing = [c for c in cands if fails(c, want, tol).any()]
            if not failing:
                continue
            if mode.match == "exact":
                loose = mode.nonfinite_symptom
                agreeing = [c for c in failing if agrees(got, c, tol, any_nonfinite=loose)]
                if agreeing:
                    # A wrong formula that is ~0 everywhere (D(x‖x) at a degenerate parameter)
                    # "matches" any output of 0: only the mode's own control can confirm it.
                    # (A zero gradient, by contrast, is a specific symptom: a detached graph.)
                    degenerate = quantity == "value" and all(_degenerate(c, tol) for c in agreeing)
                    try:
                        if mode.confirm is None:
                            confirmed = not degenerate
                        else:
                            confirmed = mode.confirm(ctx, variant, tol)
                    except _EXPECTED:
                        confirmed = False
                    if confirmed:
                        best = (-1.0, Diagnosis(mode.id, message, "exact", quantity))
                        break
            else:  # agreeing with one noise sample is chance, not evidence: always confirm
                dist = 0.0 if any(agrees(got, c, tol) for c in failing) else math.inf
                dist = min(dist, _noise_distance(got, cands, want, tol))
                if not math.isfinite(dist) or (best is not None and dist >= best[0]):
                    continue
                if mode.confirm is not None:
                    ok = mode.confirm(ctx, variant, tol)
                else:
                    ok = _all_nonfinite_failures(got, want, tol) or _scales_like(
                        ctx, mode, variant, got, want, cands, tol
                    )
                if ok:
                    best = (dist, Diagnosis(mode.id, message, "noise", quantity))
        if best is None:
            continue
        if best[0] < 0:
            exact.append(best[1])
        else:
            noisy.append((best[0], rank, best[1]))
    return exact, noisy


def _pairs(ctx: DiagnosisContext, got, want, tol: Tolerance, quantity: str) -> list[Diagnosis]:
    """Two modes at once: two parameter/input overrides merged, or an override followed by
    an output transform (e.g. the α ≥ 1 collapse with the AB parameters fixed)."""
    modes = []
    for mode in FAILURE_MODES:
        if ctx.kind not in mode.kinds or (mode.overrides is None and mode.transform is None):
            continue
        try:
            if mode.applies(ctx):
                modes.append(mode)
        except _EXPECTED:
            continue
    for i, a in enumerate(modes):
        if a.overrides is None:
            continue
        try:
            ov_a = a.overrides(ctx)
        except _EXPECTED:
            continue
        for b in modes[i + 1 :] + modes[:i]:
            if b is a:
                continue
            try:
                ov_b = b.overrides(ctx) if b.overrides is not None else [("", {})]
            except _EXPECTED:
                continue
            for va, oa in ov_a:
                for vb, ob in ov_b:
                    if set(oa) & set(ob) or (b.overrides is None and b.transform is None):
                        continue
                    try:
                        w = ctx.reference(**oa, **ob)
                        cands = [w] if b.overrides is not None else b.transform(ctx, w)
                    except _EXPECTED:
                        continue
                    for c in _candidates(cands, quantity, got).values():
                        c = c[0]
                        loose = a.nonfinite_symptom or b.nonfinite_symptom
                        if (quantity == "value" and _degenerate(c, tol)) or not fails(
                            c, want, tol
                        ).any():
                            continue
                        if not agrees(got, c, tol, any_nonfinite=loose):
                            continue
                        if _one_suffices(ctx, got, tol, quantity, oa, ob, b, loose):
                            continue  # one of the two explains it alone: no evidence of a pair
                        if not _pair_on_control(ctx, tol, quantity, (a, va), (b, vb), loose):
                            continue
                        msg_b = b.message.format(variant=vb or (cands[0].variant), flag="")
                        message = a.message.format(variant=va, flag="") + "; and " + msg_b
                        return [Diagnosis(f"{a.id}+{b.id}", message, "exact", quantity)]
    return []


def _pick(values: dict, quantity: str):
    w = values.grad if quantity == "grad" else values.value
    return None if w is None else np.asarray(w, dtype=np.float64)


def _one_suffices(ctx, got, tol, quantity, oa, ob, b, loose) -> bool:
    """Whether either override alone already reproduces ``got`` (then the pair is no
    evidence of two defects: near α = 1, say, the α sign slip changes nothing)."""
    singles = [oa] + ([ob] if b.overrides is not None else [])
    for ov in singles:
        try:
            w = _pick(ctx.reference(**ov), quantity)
        except _EXPECTED:
            continue
        if w is not None and w.shape == np.shape(got) and agrees(got, w, tol, any_nonfinite=loose):
            return True
    return False


def _pair_on_control(ctx, tol, quantity, a_variant, b_variant, loose) -> bool:
    """The same pair reproduces the implementation on a second case: the case's
    parameters on other inputs of the same kind (another seed)."""
    c = ctx.case
    if ctx.probe is None or c.inputs == "explicit":
        return False
    control = replace(c, family="control", name=c.name + "/pair", seed=(c.seed + 104729) % 2**31)
    moved = ctx.moved(control)
    moved.want_grad = quantity == "grad"
    if quantity == "grad" and ctx.reduction == "none":
        moved.upstream = control.upstream(tuple(control.shape[:-1]))
    picked = []
    for mode, variant in (a_variant, b_variant):
        if mode.overrides is None:
            picked.append((mode, {}))
            continue
        try:
            ov = dict(mode.overrides(moved)).get(variant)
        except _EXPECTED:
            return False
        if ov is None:
            return False
        picked.append((mode, ov))
    (_, oa), (b, ob) = picked
    try:
        w = moved.reference(**oa, **ob)
        cands = [w] if b.overrides is not None else b.transform(moved, w)
    except _EXPECTED:
        return False
    probed = ctx.probe(control, None, quantity == "grad")
    if probed is None:
        return False
    got_c, want_c = probed
    for cand in cands:
        x = _pick(cand, quantity)
        if x is None:
            continue
        x = np.broadcast_to(x, np.shape(got_c))
        if fails(x, want_c, tol).any() and agrees(got_c, x, tol, any_nonfinite=loose):
            return True
    return False


def _rms(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x**2))) if x.size else math.inf


def _underneath_low_precision(ctx: DiagnosisContext, got, want, quantity: str) -> list[Diagnosis]:
    """The structural defect under the rounding noise of a bf16/fp16 computation.

    The same inputs are passed as float32; if that output fails too and an exact mode (or
    a pair) reproduces it within the float32 tolerance, and the low-precision output is
    at least 3x closer to that wrong formula than to the reference, the defect is reported
    with the rounding noise named.
    """
    if quantity != "value" or ctx.probe is None or ctx.dtype not in ("bfloat16", "float16"):
        return []
    probed = ctx.probe(ctx.case, "float32")
    if probed is None:
        return []
    got32, want32 = probed
    tol32 = tolerance_for("log_mixture" if ctx.kind == "mixture" else "loss", "float32")[0]
    if not fails(got32, want32, tol32).any():
        return []
    ctx32 = ctx.with_dtype("float32")
    ctx32.got = got32
    exact, _ = _single_modes(ctx32, got32, want32, tol32, quantity, exact_only=True)
    if not exact:
        exact = _pairs(ctx32, got32, want32, tol32, quantity)
    if not exact:
        return []
    with np.errstate(invalid="ignore", over="ignore"):
        to_wrong = _rms(np.asarray(got, dtype=np.float64) - got32)
        to_ref = _rms(np.asarray(got, dtype=np.float64) - want)
    if not to_wrong * 3.0 <= to_ref:
        return []
    d = exact[0]
    note = (
        f" (in {ctx.dtype}: the same inputs passed as float32 reproduce it exactly; the rest "
        f"of the error is {ctx.dtype} rounding)"
    )
    return [Diagnosis(d.id, d.message + note, "exact", quantity, {"compute_dtype": "float32"})]


def _low_precision_grad(ctx: DiagnosisContext, got, want, tol: Tolerance) -> list[Diagnosis]:
    """A gradient off by the rounding of a bf16/fp16 computation, the formula being right.

    The same inputs passed as float32 must give the reference gradient (float32 tolerance),
    and every entry's error must be within 16 units of roundoff of the dtype times the
    entry's natural scale: the reduction weight times (p + q) (the gradient of a KL-type
    loss w.r.t. a logit is a difference of such probabilities), times 1/T (T with T²).
    """
    if ctx.probe is None or ctx.dtype not in ("bfloat16", "float16") or ctx.kind == "mixture":
        return []
    probed = ctx.probe(ctx.case, "float32", True)
    if probed is None:
        return []
    g32, w32 = probed
    if fails(g32, w32, tolerance_for("grad", "float32")[0]).any():
        return []
    log_p, log_q = ctx.ref.log_pq()
    temp = float(ctx.case.temperature)
    per_t = temp if ctx.ref.temperature_squared else 1.0 / temp
    scale = reduce_grad(np.exp(log_p) + np.exp(log_q), ctx.mask, ctx.reduction, ctx.upstream)
    bound = 16 * _UNIT_ROUNDOFF[ctx.dtype] * np.abs(scale) * per_t + tol.atol
    with np.errstate(invalid="ignore"):
        ok = np.all(np.abs(got - want) <= bound)
    if not ok:
        return []
    message = (
        f"the gradient computed in {ctx.dtype}: the same inputs passed as float32 give the "
        f"reference gradient, and every entry is within 16 units of {ctx.dtype} roundoff of "
        f"its scale (weight·(p + q)): arithmetic in the input dtype (upcast to fp32 first)"
    )
    return [Diagnosis("input_dtype_arithmetic", message, "noise", "grad")]


def _explicit(case, s: np.ndarray, t: np.ndarray):
    """``case``'s parameters (and labels: the same seed) on the logits ``s``, ``t``."""
    return Case(
        "control", case.kind, alpha=case.alpha, lam=case.lam, divergence=case.divergence,
        order=case.order, div_params=dict(case.div_params), temperature=case.temperature,
        mask=case.mask, reduction=case.reduction, name=case.name + "/shifted", seed=case.seed,
        student_logits=s, teacher_logits=t, preset=case.preset,
        preset_params=dict(case.preset_params),
    )  # fmt: skip


def _row_max(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        top = np.max(np.where(np.isfinite(x), x, -np.inf), axis=-1, keepdims=True)
    return np.where(np.isfinite(top), top, 0.0)


def _offset_rounding(ctx: DiagnosisContext, got, want, tol: Tolerance, quantity: str):
    """An error that the logits' common offset causes: the same distributions with each
    row's maximum subtracted from the logits first (an exact shift) give the reference, and
    the error is within 64 units of float32 roundoff of the offset's magnitude M (value:
    64·u·M·max(1, |want|); gradient: 64·u·M·weight·(p + q)/T). A log-normalizer (or
    logits/T) formed at the magnitude of the logits loses the low bits the loss needs."""
    if ctx.probe is None or ctx.kind == "mixture" or ctx.case.inputs == "explicit":
        return []
    s, t = ctx.ref.s, ctx.ref.t
    fin = np.concatenate([np.abs(s[np.isfinite(s)]), np.abs(t[np.isfinite(t)])])
    big = float(fin.max()) if fin.size else 0.0
    if big < 64.0:
        return []
    shifted = _explicit(ctx.case, s - _row_max(s), t - _row_max(t))
    probed = ctx.probe(shifted, None, quantity == "grad")
    if probed is None or fails(probed[0], probed[1], tol).any():
        return []
    u = _UNIT_ROUNDOFF["float64" if ctx.dtype == "float64" else "float32"]
    temp = float(ctx.case.temperature)
    if quantity == "grad":
        log_p, log_q = ctx.ref.log_pq()
        per_t = temp if ctx.ref.temperature_squared else 1.0 / temp
        scale = reduce_grad(np.exp(log_p) + np.exp(log_q), ctx.mask, ctx.reduction, ctx.upstream)
        bound = 64 * u * big / temp * np.abs(scale) * per_t + tol.atol
    else:
        bound = 64 * u * big / temp * np.maximum(1.0, np.abs(want)) + tol.atol
    with np.errstate(invalid="ignore"):
        if not np.all(np.abs(np.asarray(got, dtype=np.float64) - want) <= bound):
            return []
    message = (
        f"rounding at the logits' magnitude (|logit| up to {big:.3g}): the same distributions "
        "with each row's maximum subtracted from the logits give the reference, and the error "
        f"is within 64 units of {'float64' if u < 1e-10 else 'float32'} roundoff of that "
        "magnitude: a log-normalizer (or logits/T) formed at the offset loses the low bits "
        "the loss needs (subtract the row maximum first)"
    )
    return [Diagnosis("logit_offset_rounding", message, "exact", quantity)]


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
    is non-finite, its error to scale like the wrong formula's (:func:`_scales_like`) or
    the mode's own confirmation. A bf16/fp16 output no exact mode reproduces is checked
    for a structural defect under its rounding noise (:func:`_underneath_low_precision`);
    when no single mode matches, pairs of modes are tried (:func:`_pairs`).
    """
    ctx.got = got
    exact, noisy = _single_modes(ctx, got, want, tol, quantity)
    if not exact:
        under = _underneath_low_precision(ctx, got, want, quantity)
        if under:
            return under
    if not exact and not noisy:
        exact = _pairs(ctx, got, want, tol, quantity)
    if not exact and not noisy and quantity == "grad":
        exact = _low_precision_grad(ctx, got, want, tol)
    if not exact and not noisy:
        exact = _offset_rounding(ctx, got, want, tol, quantity)
    # The generic "bf16 inside" mode only when no more specific noise mode explains it
    specific = [x for x in noisy if x[2].id != "low_precision_arithmetic"]
    noisy = specific or noisy
    return exact + [d for _, _, d in sorted(noisy, key=lambda x: (x[0], x[1]))]
