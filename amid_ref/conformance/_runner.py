"""Running the battery against an implementation, and the report."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import log_softmax

from amid_ref._battery._compare import Summary, passes, tolerance_for
from amid_ref._specs import SPECS
from amid_ref.conformance._adapters import (
    LossAdapter,
    MixtureAdapter,
    Outputs,
    Support,
    Unsupported,
    _signature,
    make_adapter,
)
from amid_ref.conformance._cases import FAMILIES, PRESET_PARAM_GRIDS, Case, battery, iter_names
from amid_ref.conformance._diagnoses import Diagnosis, DiagnosisContext, diagnose
from amid_ref.conformance._reference import ReferenceInputs, reduce_grad, reduce_rows
from amid_ref.tolerances import TOLERANCES, Tolerance, indicator_ties

__all__ = ["CaseResult", "Report", "check_case", "conform"]


#: Why a case's gradient is not checked at α = ±inf (its value is).
GRAD_TIE_NOTE = (
    "gradient not checked: at alpha = ±inf p and q tie within the dtype's rounding on some "
    "token, where the indicator weight w jumps (amid_ref.tolerances.indicator_ties)"
)


def _tolerance(quantity: str, dtype: str, chosen: Mapping[str, Any] | None = None) -> Tolerance:
    return _tolerance_row(quantity, dtype, chosen)[0]


def _tolerance_row(
    quantity: str, dtype: str, chosen: Mapping[str, Any] | None = None
) -> tuple[Tolerance, str]:
    """The tolerance of ``quantity`` and its row key: the chosen one (``tolerances=``), else
    the declared dtype's (:func:`amid_ref._battery._compare.tolerance_for`)."""
    if chosen and quantity in chosen:
        return chosen[quantity]
    return tolerance_for(quantity, dtype)


def _resolve_tolerances(tolerances: Mapping[str, Any] | None) -> dict[str, tuple]:
    """``tolerances=`` as ``{quantity: (Tolerance, row key)}``; a bad key or row is an error
    naming it."""
    out: dict[str, tuple] = {}
    for quantity, row in dict(tolerances or {}).items():
        if quantity not in ("loss", "grad", "log_mixture"):
            raise ValueError(
                f"tolerances: unknown quantity {quantity!r}; expected loss, grad or log_mixture"
            )
        if isinstance(row, Tolerance):
            out[quantity] = (row, "given")
            continue
        key = tuple(row.split("/")) if isinstance(row, str) else tuple(row)
        if key not in TOLERANCES:
            rows = ", ".join("/".join(k) for k in TOLERANCES if k[1] == quantity)
            raise ValueError(f"tolerances: no row {row!r} for {quantity}; rows: {rows}")
        out[quantity] = (TOLERANCES[key], "/".join(key))
    return out


def _check_param_map(
    param_map: Mapping[str, str] | None, kind: str, preset: str | None, fn: Callable
) -> dict[str, str]:
    """``param_map`` validated: each entry maps a parameter of the check to a parameter of
    ``fn``; either side may be written first (``skew=lam`` or ``lam=skew``)."""
    if not param_map:
        return {}
    own = {"alpha", "lam", "temperature", "labels"}
    if kind == "preset" and preset in PRESET_PARAM_GRIDS:
        own |= set(PRESET_PARAM_GRIDS[preset][0])
    own |= {p.name for spec in SPECS.values() for p in spec.params}
    names, var_kw = _signature(fn)
    out = {}
    for a, b in dict(param_map).items():
        if a in own and (b in names or var_kw or b not in own):
            out[a] = b
        elif b in own:
            out[b] = a
        else:
            raise ValueError(
                f"param_map: neither {a!r} nor {b!r} is a parameter of this check "
                f"({', '.join(sorted(own))})"
            )
        target = out[a] if a in out else out[b]
        if names and not var_kw and target not in names:
            raise ValueError(
                f"param_map: the function has no parameter {target!r} (it has {', '.join(names)})"
            )
    return out


@dataclass
class ErrorStats:
    """Worst entry of a comparison: absolute/relative error and error/bound ratio."""

    abs_err: float
    rel_err: float
    ratio: float
    index: tuple[int, ...]
    got: float
    want: float
    bound: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "abs_err": _jf(self.abs_err),
            "rel_err": _jf(self.rel_err),
            "error_over_bound": _jf(self.ratio),
            "index": list(self.index),
            "got": _jf(self.got),
            "want": _jf(self.want),
            "bound": _jf(self.bound),
        }


def _jf(x: float) -> float | str:
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _input_scale(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-entry ``max(|log q|, |log p|)`` over finite inputs (0 where both are -inf)."""
    a = np.where(np.isfinite(s), np.abs(s), 0.0)
    b = np.where(np.isfinite(t), np.abs(t), 0.0)
    return np.maximum(a, b)


def _passes_log_mixture(got, want, tol: Tolerance, extra: np.ndarray) -> bool:
    """The table's check, or the same bound with the scale widened to the inputs' size.

    A log-mixture entry is computed from ``log p`` and ``log q`` at that entry; an input of
    magnitude 5000 is itself only resolved to eps*5000 in the working dtype, so the scale of
    the log-scaled bound is ``max(1, |log r|, |log p|, |log q|)``. Infinities must still
    agree exactly.
    """
    if passes(got, want, tol):
        return True
    stats = _error_stats(got, want, tol, extra)
    return stats.ratio <= 1.0


def _error_stats(
    got: np.ndarray, want: np.ndarray, tol: Tolerance, extra: np.ndarray | None = None
) -> ErrorStats:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.abs(np.where(np.isfinite(want), want, 0.0))
        if tol.log_scaled:
            scale = np.maximum(1.0, scale)
        if extra is not None:
            scale = np.maximum(scale, extra)
        bound = tol.atol + tol.rtol * scale
        err = np.where(got == want, 0.0, np.abs(got - want))
        err = np.where(np.isnan(err), np.inf, err)
        # Relative error against the tolerance's own scale; entries whose scale is within
        # the absolute floor (e.g. want = 0) are governed by atol and left out.
        significant = np.isfinite(want) & (scale > tol.atol) & (scale > 0)
        rel = np.where(significant, err / np.where(scale > 0, scale, 1.0), 0.0)
        rel = np.where(np.isfinite(want) | (err == 0), rel, np.inf)
        ratio = np.where(bound > 0, err / bound, np.where(err == 0, 0.0, np.inf))
    if got.size == 0:
        return ErrorStats(0.0, 0.0, 0.0, (), math.nan, math.nan, 0.0)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.ndim else ()
    return ErrorStats(
        float(err.max()),
        float(rel.max()),
        float(ratio[i]),
        tuple(int(k) for k in i),
        float(got[i]),
        float(want[i]),
        float(bound[i]),
    )


@dataclass
class CaseResult:
    """The outcome of one case: ``status`` is ``"pass"``, ``"fail"`` or ``"skip"``."""

    case: Case
    status: str
    reason: str = ""
    quantity: str = ""
    value_stats: ErrorStats | None = None
    grad_stats: ErrorStats | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)
    seconds: float = 0.0
    dtype: str = "float64"

    @property
    def ratio(self) -> float:
        """Worst error/bound over value and gradient (inf for a non-numeric failure)."""
        if self.status == "fail" and self.value_stats is None and self.grad_stats is None:
            return math.inf
        rs = [s.ratio for s in (self.value_stats, self.grad_stats) if s is not None]
        return max(rs) if rs else 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"case": self.case.params(), "status": self.status}
        if self.reason:
            d["reason"] = self.reason
        if self.quantity:
            d["failed_on"] = self.quantity
        if self.value_stats is not None:
            d["value"] = self.value_stats.to_dict()
        if self.grad_stats is not None:
            d["grad"] = self.grad_stats.to_dict()
        if self.diagnoses:
            d["diagnoses"] = [x.to_dict() for x in self.diagnoses]
        d["seconds"] = round(self.seconds, 4)
        return d


class FamilySummary(Summary):
    """The summary of one family of the battery: the battery's one summary type
    (:class:`amid_ref._battery._compare.Summary`; ``worst`` holds the family's worst
    :class:`CaseResult`, ``failures`` the failing case ids), with the counts also under
    their earlier names: ``cases`` (run and skipped), ``passed``, ``failed``, ``skipped``.
    The verdict is :attr:`status`."""

    @property
    def cases(self) -> int:
        return self.n_checks + self.n_skipped

    @property
    def passed(self) -> int:  # type: ignore[override]  # a count, as before
        return self.n_passed

    @property
    def failed(self) -> int:
        return self.n_failed

    @property
    def skipped(self) -> int:
        return self.n_skipped


@dataclass
class Report:
    """Results of a conformance run, with per-family summaries, text and JSON renderings."""

    settings: dict[str, Any]
    tolerances: dict[str, dict[str, Any]]
    results: list[CaseResult]
    seconds: float

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.results)

    @property
    def passed(self) -> bool:
        """True iff no case failed and at least one case ran."""
        c = self.counts
        return c["fail"] == 0 and c["pass"] > 0

    @property
    def nothing_checked(self) -> bool:
        """True iff no case ran (every case skipped): neither a pass nor a failure."""
        c = self.counts
        return c["pass"] == 0 and c["fail"] == 0

    def hints(self) -> list[str]:
        """What to add or map, for the parameters the function lacks that skipped the most
        cases (at least half as many as the most frequent one)."""
        counts: Counter = Counter()
        names: dict[str, str] = {}
        for r in self.results:
            if r.status != "skip" or not r.reason.startswith("function has no '"):
                continue
            parts = r.reason.split("'")
            if parts[1] == "labels":  # the labels/ignore_index pair: not a parameter map
                continue
            counts[parts[1]] += 1
            names[parts[1]] = parts[3] if "(mapped from '" in r.reason else parts[1]
        if not counts:
            return []
        top = max(counts.values())
        return [
            f"add a {name!r} parameter to the function, or map the one it has: "
            f"--map {names[name]}=YOUR_NAME (Python: param_map={{{names[name]!r}: 'your_name'}})"
            for name, n in counts.most_common()
            if 2 * n >= top
        ]

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "fail"]

    def diagnoses(self) -> Counter:
        """How many failing cases each failure mode (by id) was diagnosed on (primary only)."""
        return Counter(r.diagnoses[0].id for r in self.failures if r.diagnoses)

    def all_diagnoses(self) -> Counter:
        """Like :meth:`diagnoses`, counting every matching mode, not only the primary."""
        return Counter(d.id for r in self.failures for d in r.diagnoses)

    def families(self) -> dict[str, FamilySummary]:
        out: dict[str, FamilySummary] = {}
        for r in self.results:
            fam = out.setdefault(r.case.family, FamilySummary(r.case.family))
            if r.status == "skip":
                fam.skip(r.reason)
                continue
            fam.n_checks += 1
            if r.status == "fail":
                fam.fail(r.case.id)
                if r.diagnoses:
                    fam.diagnoses[r.diagnoses[0].id] += 1
            for st in (r.value_stats, r.grad_stats):
                if st is not None:
                    fam.max_abs_err = max(fam.max_abs_err, st.abs_err)
                    fam.max_rel_err = max(fam.max_rel_err, st.rel_err)
            worse = fam.worst is None or (
                (r.status == "fail", r.ratio) > (fam.worst.status == "fail", fam.worst.ratio)
            )
            if worse:
                fam.worst = r
                fam.worst_ratio, fam.worst_case = r.ratio, r.case.id
        return out

    # -- renderings ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        fams = {}
        for name, f in self.families().items():
            fams[name] = {
                "status": f.status,
                "cases": f.n_checks + f.n_skipped,
                "passed": f.n_passed,
                "failed": f.n_failed,
                "skipped": f.n_skipped,
                "max_abs_err": _jf(f.max_abs_err),
                "max_rel_err": _jf(f.max_rel_err),
                "worst": f.worst.to_dict() if f.worst is not None else None,
                "diagnoses": dict(f.diagnoses),
            }
        skipped = Counter(r.reason for r in self.results if r.status == "skip")
        return {
            "passed": self.passed,
            "nothing_checked": self.nothing_checked,
            "settings": self.settings,
            "tolerances": self.tolerances,
            "counts": {"pass": c["pass"], "fail": c["fail"], "skip": c["skip"]},
            "seconds": round(self.seconds, 3),
            "families": fams,
            "diagnoses": dict(self.diagnoses()),
            "skipped_reasons": dict(skipped),
            "failures": [r.to_dict() for r in self.failures],
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 2), ensure_ascii=False, **kw)

    def text(self, *, max_failures_per_family: int = 1) -> str:
        """The human-readable report (what ``amid-ref conform`` prints)."""
        s = self.settings
        lines = [f"amid-ref conform {s['target']}"]
        keys = ("kind", "backend", "dtype", "device", "convention", "reduction", "grad")
        lines.append("  " + "  ".join(f"{k}={s[k]}" for k in keys if k in s))
        if "normalized" in s:
            lines.append(f"  normalized={s['normalized']}")
        if s.get("param_map"):
            pairs = ", ".join(f"{k} -> {v}" for k, v in s["param_map"].items())
            lines.append(f"  parameters passed as: {pairs}")
        peer = s.get("peer")
        if peer:
            maps = f"{peer['divergence']} {peer['direction']} at λ = 0 (preset {peer['preset']})"
            if peer.get("kind") == "preset":
                maps = f"the preset {peer['preset']}"
            lines.append(
                f"  peer: {peer['source']} ({peer['distribution']} {peer['version']}), "
                f"mapped to {maps}"
            )
        sup = s.get("support", {})

        def show(v):
            return "[" + ", ".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)

        lines.append("  support: " + "  ".join(f"{k}={show(v)}" for k, v in sup.items()))
        for q, t in self.tolerances.items():
            lines.append(
                f"  tolerance {q}: rtol={t['rtol']:.0e} atol={t['atol']:.0e}  [{t['row']}]"
            )
        lines.append("")
        head = f"{'family':<15}{'cases':>6}{'pass':>6}{'fail':>6}{'skip':>6}"
        head += f"{'max abs err':>13}{'max rel err':>13}   worst case"
        lines.append(head)
        fams = self.families()
        for name in [*FAMILIES, *sorted(set(fams) - set(FAMILIES))]:
            f = fams.get(name)
            if f is None:
                continue
            worst = f.worst.case.id if f.worst is not None else "-"
            lines.append(
                f"{name:<15}{f.n_checks + f.n_skipped:>6}{f.n_passed:>6}{f.n_failed:>6}"
                f"{f.n_skipped:>6}"
                f"{_e(f.max_abs_err):>13}{_e(f.max_rel_err):>13}   {worst}"
            )
        for name, f in fams.items():
            if not f.n_failed:
                continue
            lines.append("")
            lines.append(f"FAIL {name}: {f.n_failed} of {f.n_checks + f.n_skipped} cases failed")
            lines.extend(_describe_failure(f.worst, "  "))
            if f.worst is not None and not f.worst.diagnoses and f.diagnoses:
                diagnosed = [r for r in self.failures if r.case.family == name and r.diagnoses]
                example = max(diagnosed, key=lambda r: r.ratio)
                lines.extend(_describe_failure(example, "  ", "worst diagnosed"))
            if f.diagnoses:
                diag = ", ".join(f"{k} x{v}" for k, v in f.diagnoses.most_common())
                lines.append(f"  diagnoses in this family: {diag}")
            undiagnosed = sum(1 for r in self.failures if r.case.family == name and not r.diagnoses)
            if undiagnosed:
                lines.append(f"  failures matching no known failure mode: {undiagnosed}")
        skipped = Counter(r.reason for r in self.results if r.status == "skip")
        if skipped:
            lines.append("")
            lines.append("skipped:")
            for reason, n in skipped.most_common():
                lines.append(f"  {n:>4} x {reason}")
        if peer and peer.get("by_design_modes"):
            ours = {k: v for k, v in self.diagnoses().items() if k in peer["by_design_modes"]}
            if ours:
                lines.append("")
                lines.append(
                    "by design (documented by the peer's authors, not a defect): "
                    + ", ".join(f"{k} x{v}" for k, v in ours.items())
                )
        c = self.counts
        verdict = "PASS" if self.passed else "FAIL"
        if self.nothing_checked:
            verdict = "NOTHING CHECKED (no case ran)"
            hints = self.hints()
            if hints:
                lines.append("")
                lines.append("to check it:")
                lines.extend(f"  {h}" for h in hints)
        lines.append("")
        lines.append(
            f"RESULT: {verdict}  ({c['pass']} passed, {c['fail']} failed, {c['skip']} skipped; "
            f"{self.seconds:.1f} s)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _e(x: float) -> str:
    return f"{x:.1e}" if math.isfinite(x) else str(x)


def _describe_failure(r: CaseResult | None, indent: str, label: str = "worst case") -> list[str]:
    if r is None:
        return []
    c = r.case
    out = [f"{indent}{label:<17}{c.id}"]
    out.append(f"{indent}  parameters     {c.describe()}")
    if r.reason:
        out.append(f"{indent}  error          {r.reason}")
    for label, st in (("value", r.value_stats), ("grad", r.grad_stats)):
        if st is None or st.ratio <= 1.0:
            continue
        q = label if label == "grad" else ("log r" if c.kind == "mixture" else "loss")
        err = abs(st.got - st.want) if st.got != st.want else 0.0
        err = err if math.isfinite(err) else math.inf
        rel = err / abs(st.want) if st.want != 0 else (0.0 if err == 0 else math.inf)
        out.append(
            f"{indent}  {q:<14} at {list(st.index)}: got {st.got:.9g}, want {st.want:.9g} "
            f"(error {_e(err)}, relative {_e(rel)}, bound {_e(st.bound)})"
        )
    if r.diagnoses:
        for i, d in enumerate(r.diagnoses):
            how = "" if d.match == "exact" else " (error size and scaling)"
            head = "diagnosis" if i == 0 else "also"
            out.append(f"{indent}  {head:<14} {d.message} [{d.id}{how}]")
    else:
        out.append(f"{indent}  diagnosis      no known failure mode reproduces this output")
    if c.inputs != "explicit":
        out.append(f"{indent}  reproduce      {c.reproducer(r.dtype)}")
    return out


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


_REF_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}
_REF_CACHE_MAX = 4096


def _reference_rows(
    ref: ReferenceInputs, dtype: str, grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    c = ref.case
    key = None
    if c.inputs != "explicit":
        key = (c.kind, c.id, c.seed, dtype, ref.normalized, ref.detach_assistant)
        key += (ref.temperature_squared, c.preset, tuple(sorted(c.preset_params.items())))
        hit = _REF_CACHE.get(key)
        if hit is not None and (hit[1] is not None or not grad):
            return hit
    rows, g = ref.rows(grad=grad)
    if key is not None:
        if len(_REF_CACHE) >= _REF_CACHE_MAX:
            _REF_CACHE.clear()
        _REF_CACHE[key] = (rows, g)
    return rows, g


def _run_case(
    adapter: LossAdapter | MixtureAdapter,
    case: Case,
    support: Support,
    *,
    grad: bool,
    diagnose_failures: bool,
    compare: str = "value",
) -> CaseResult:
    t0 = time.perf_counter()
    dtype = adapter.dtype

    def skip(reason: str) -> CaseResult:
        return CaseResult(case, "skip", reason, seconds=time.perf_counter() - t0, dtype=dtype)

    if case.kind != adapter.kind:
        return skip(f"case kind {case.kind} != adapter kind {adapter.kind}")
    s, t = case.arrays(dtype)
    if np.isnan(s).any() or np.isnan(t).any() or np.isposinf(s).any() or np.isposinf(t).any():
        return skip(f"inputs not representable in {dtype}")
    neg_inf = bool(np.isneginf(s).any() or np.isneginf(t).any())
    reason = support.reason_unsupported(case, neg_inf) or adapter.reason_unsupported(case, support)
    if reason:
        return skip(reason)
    ref = ReferenceInputs(
        case,
        s,
        t,
        normalized=getattr(adapter, "normalized", True),
        detach_assistant=support.detach_assistant,
        temperature_squared=support.temperature_squared,
    )
    check_grad = grad and case.kind != "mixture" and adapter.backend == "torch"
    grad_note = None
    try:
        rows, grad_rows = _reference_rows(ref, dtype, check_grad)
    except (ValueError, FloatingPointError) as exc:
        return skip(f"reference rejects this case: {exc}")
    reduction = adapter.effective_reduction(case)
    labels = case.labels()
    mask = None if labels is None else labels != -100
    want = rows if case.kind == "mixture" else reduce_rows(rows, mask, reduction)
    if case.kind != "mixture" and not np.all(np.isfinite(rows if mask is None else rows[mask])):
        return skip("reference loss is +inf here (disjoint supports)")
    finite_want = np.asarray(want)[np.isfinite(want)]
    if dtype != "float64" and np.any(np.abs(finite_want) > np.finfo(np.float32).max):
        return skip("reference beyond the float32 range (not representable in the loss dtype)")
    if check_grad and grad_rows is not None and not np.all(np.isfinite(grad_rows)):
        check_grad = False
    if check_grad and dtype != "float64" and np.any(np.abs(grad_rows) > np.finfo(np.float32).max):
        check_grad = False
    if check_grad and math.isinf(case.alpha) and 0.0 < case.lam < 1.0:
        # w jumps where p = q: ties within the dtype's rounding may take either side
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = log_softmax(np.asarray(t, np.float64) / case.temperature, axis=-1)
            lq = log_softmax(np.asarray(s, np.float64) / case.temperature, axis=-1)
        if indicator_ties(lp, lq, dtype).any():
            check_grad = False
            grad_note = GRAD_TIE_NOTE
    quantity = "log_mixture" if case.kind == "mixture" else "loss"
    chosen = getattr(adapter, "tolerances", None)
    tol = _tolerance(quantity, dtype, chosen)
    result = CaseResult(case, "pass", dtype=dtype)
    if grad_note is not None:
        result.reason = grad_note
    try:
        out: Outputs = adapter.evaluate(case, s, t, labels, grad=check_grad)
    except (NotImplementedError, Unsupported) as exc:
        return skip(f"implementation: {type(exc).__name__}: {exc}")
    except Exception as exc:  # any exception of the implementation is a failure
        result.status, result.quantity = "fail", "error"
        result.reason = f"raised {type(exc).__name__}: {exc}"
        if diagnose_failures and case.mask == "all" and isinstance(exc, ZeroDivisionError):
            result.diagnoses = [
                Diagnosis(
                    "mask_divide_by_zero",
                    "raises ZeroDivisionError when every position is ignored: the mean "
                    "divides by the number of kept positions, 0 (return 0)",
                    "exact",
                    "error",
                )
            ]
        result.seconds = time.perf_counter() - t0
        return result
    got = out.value
    if got.shape != np.shape(want):
        result.status, result.quantity = "fail", "shape"
        result.reason = f"output shape {got.shape} != expected {np.shape(want)} ({reduction=})"
        result.seconds = time.perf_counter() - t0
        return result
    failed_on = None
    if case.kind == "mixture":
        extra = _input_scale(s, t)
        result.value_stats = _error_stats(got, want, tol, extra)
        if not _passes_log_mixture(got, want, tol, extra):
            failed_on = "value"
    else:
        result.value_stats = _error_stats(got, want, tol)
        if not passes(got, want, tol) and (compare != "grad" or not check_grad):
            failed_on = "value"
    want_grad = None
    if check_grad:
        gtol = _tolerance("grad", dtype, chosen)
        want_grad = reduce_grad(grad_rows, mask, reduction, out.upstream)
        if out.grad is None or out.grad.shape != want_grad.shape:
            result.reason = "no gradient"
            failed_on = failed_on or "grad"
        else:
            result.grad_stats = _error_stats(out.grad, want_grad, gtol)
            if not passes(out.grad, want_grad, gtol) and failed_on is None:
                failed_on = "grad"
        if out.notes:
            result.reason = "; ".join(out.notes)
    if failed_on is not None:
        result.status = "fail"
        result.quantity = "loss" if failed_on == "value" and case.kind != "mixture" else failed_on
        if failed_on == "value" and case.kind == "mixture":
            result.quantity = "log_mixture"
        if diagnose_failures:
            ctx = DiagnosisContext(
                ref,
                dtype,
                reduction,
                mask,
                out.upstream,
                want_grad=failed_on == "grad",
                probe=lambda moved, dt=None, g=False: _probe(
                    adapter, moved, reduction, mask, support, dt, g
                ),
            )
            if failed_on == "value":
                result.diagnoses = diagnose(ctx, got=got, want=want, tol=tol, quantity="value")
            elif out.grad is not None:
                result.diagnoses = diagnose(
                    ctx,
                    got=out.grad,
                    want=want_grad,
                    tol=_tolerance("grad", dtype, chosen),
                    quantity="grad",
                )
    result.seconds = time.perf_counter() - t0
    return result


@contextlib.contextmanager
def _single_thread(adapter):
    """Run torch CPU work single-threaded while the battery runs, then restore the setting.

    The battery's tensors are small (mostly 3 x 64): intra-op threads only add
    synchronization, which on a loaded machine costs ~1 ms per op instead of ~10 us.
    """
    if adapter.backend != "torch" or not str(adapter.device).startswith("cpu"):
        yield
        return
    # torch: optional (the gpu extra)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _probe(
    adapter, case: Case, reduction: str, mask, support=None, compute_dtype=None, grad=False
) -> tuple[np.ndarray, np.ndarray] | None:
    """Implementation output and reference on a control case (for noise-type diagnoses).

    With ``compute_dtype`` (e.g. ``"float32"``), the same inputs (rounded to the declared
    dtype) are passed as tensors of that dtype instead: what the implementation returns
    when it computes in ``compute_dtype``. With ``grad``, the gradients (implementation,
    reference) instead of the values.
    """
    s, t = case.arrays(adapter.dtype)
    t2 = bool(support is not None and support.temperature_squared)
    ref = ReferenceInputs(
        case, s, t, normalized=getattr(adapter, "normalized", True), temperature_squared=t2
    )
    labels = case.labels()
    declared = adapter.dtype
    try:
        rows, g = ref.rows(grad=grad)
        if compute_dtype is not None:
            adapter.dtype = compute_dtype
        out = adapter.evaluate(case, s, t, labels, grad=grad)
        got = out.value
    except Exception:  # the control is evidence only; any failure means "no evidence"
        return None
    finally:
        adapter.dtype = declared
    if grad:
        if out.grad is None or g is None:
            return None
        return out.grad, reduce_grad(g, mask, reduction, out.upstream)
    want = rows if case.kind == "mixture" else reduce_rows(rows, mask, reduction)
    return (got, want) if got.shape == want.shape else None


def _make_support(support: Support | Mapping[str, Any] | None, adapter) -> Support:
    if isinstance(support, Support):
        return support
    return Support(**dict(support or {}))


def _reference_for_probe(case: Case, dtype: str, temperature_squared: bool = False) -> np.ndarray:
    s, t = case.arrays(dtype)
    return ReferenceInputs(case, s, t, temperature_squared=temperature_squared).rows()[0]


def _directions(orders: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Orders with the divergence-kind aliases ``pq`` (D(p‖q) = ``pr``) and ``qp`` (``rp``)."""
    if orders is None:
        return None
    return tuple({"pq": "pr", "qp": "rp"}.get(o, o) for o in orders)


def conform(
    fn: Callable,
    kind: str = "loss",
    *,
    dtype: Any = None,
    support: Support | Mapping[str, Any] | None = None,
    grad: bool = False,
    full: bool = False,
    families: Iterable[str] | None = None,
    cases: Iterable[Case] | None = None,
    convention: str = "auto",
    reduction: str = "auto",
    backend: str = "auto",
    device: str = "cpu",
    normalized: bool = True,
    kwargs: Mapping[str, Any] | None = None,
    diagnose_failures: bool = True,
    target: str | None = None,
    preset: str | None = None,
    preset_params: Mapping[str, float] | None = None,
    compare: str = "value",
    divergences: Iterable[str] | str | None = None,
    orders: Iterable[str] | str | None = None,
    alpha_range: tuple[float, float] | None = None,
    lam_range: tuple[float, float] | None = None,
    max_vocab: int | None = None,
    neg_inf: bool | None = None,
    ignore_index: bool | None = None,
    detach_assistant: bool | None = None,
    temperature_squared: bool | None = None,
    reduction_names: Mapping[str, str] | None = None,
    param_map: Mapping[str, str] | None = None,
    tolerances: Mapping[str, Any] | None = None,
) -> Report:
    r"""Run the conformance battery against ``fn`` and return the :class:`Report`.

    Every case's reference is ``amid_ref`` in float64 evaluated on the case's inputs *after*
    rounding to ``dtype`` (so representation error is not charged to the implementation);
    the bound is :func:`amid_ref.tolerances`' row for the quantity at ``dtype``:

    .. math::

        |\mathrm{got} - \mathrm{want}| \le \mathrm{atol} + \mathrm{rtol}\,|\mathrm{want}|,

    with infinities required to agree exactly. Cases outside the declared ``support`` or
    needing a keyword ``fn`` lacks are skipped (reported with the reason), never failed.

    Parameters
    ----------
    fn : callable
        The implementation: a loss over logits (``kind="loss"``, see
        :class:`~amid_ref.conformance.LossAdapter`), an α-mixture over log-probabilities
        (``kind="mixture"``, see :class:`~amid_ref.conformance.MixtureAdapter`), a plain
        divergence over logits called with the divergence's parameters by name
        (``kind="divergence"``, e.g. ``fn(student_logits, teacher_logits, beta=0.1)``), or
        a prior method called with the preset's parameters by name (``kind="preset"``).
    kind : {"loss", "mixture", "divergence", "preset"}
    dtype : str, optional
        Declared input dtype: ``float64``, ``float32``, ``bfloat16``/``bf16``, ``float16``
        (default float32 for a torch function, float64 for a NumPy one).
    support : Support or mapping, optional
        What ``fn`` declares it supports (divergences, orders, α range, −inf, ...).
    grad : bool
        Also compare ``torch.autograd`` gradients w.r.t. the student logits with
        :func:`amid_ref.amid_grad` (torch loss functions only).
    full : bool
        Add the slow cases (every α at V = 32000 ... 151936).
    families : iterable of str, optional
        Restrict to these families (:data:`~amid_ref.conformance.FAMILIES`).
    cases : iterable of Case, optional
        Run these cases instead of the battery (e.g. from :mod:`amid_ref.strategies`).
    convention, reduction, backend, device, normalized, kwargs
        Calling convention (see the adapters); ``auto`` values are resolved first.
    diagnose_failures : bool
        Evaluate the known-wrong formulas on failing cases (default True).
    target : str, optional
        Name shown in the report (default ``module:qualname`` of ``fn``).
    preset, preset_params
        The preset of ``kind="preset"`` (``kd``, ``rkl``, ``distillm_skl``,
        ``distillm_srkl``, ``gkd_jsd``, ``taid``, ``abkd``; giving ``preset`` implies that
        kind) and its parameters fixed for every case (e.g. ``{"beta": 0.1}``; keys of
        ``kwargs`` that are the preset's parameters count as such). Without them the
        ``param_grid`` family sweeps the preset's parameters.
    compare : {"value", "grad"}
        ``"grad"``: with ``grad=True``, compare only the gradient (for a peer whose value is
        off by a constant by design, e.g. a cross-entropy in place of a KL).
    divergences, orders, alpha_range, lam_range, max_vocab, neg_inf, ignore_index,
    detach_assistant, temperature_squared
        The fields of :class:`~amid_ref.conformance.Support`, as the CLI's ``--divergences``
        ``--alpha-range`` ... flags; they override ``support``'s. For ``kind="divergence"``
        ``divergences`` and ``orders`` (``pr`` = D(p‖q), ``rp`` = D(q‖p); ``pq``/``qp``
        accepted) also select the battery's cases.
    reduction_names : mapping, optional
        The function's own ``reduction=`` word for each reduction a case asks for (e.g.
        ``{"mean": "batchmean", "sum": "sum"}``); cases asking for another are skipped.
    param_map : mapping, optional
        The check's parameter name -> the function's, where they differ (the CLI's
        ``--map skew=lam``): a preset's or divergence's parameters (``skew``, ``beta``,
        ``t``, ...), ``alpha``, ``lam``, ``temperature``, ``labels``. A preset parameter's
        published alias is used without a map when the function has it (DistiLLM's ``lam``
        for the skew of ``distillm_skl`` / ``distillm_srkl``).
    tolerances : mapping, optional
        The tolerance row for a quantity (``"loss"``, ``"grad"``, ``"log_mixture"``) instead
        of the declared dtype's: a row key of :mod:`amid_ref.tolerances` (``"gpu/loss/bfloat16"``
        or a tuple) or a :class:`~amid_ref.tolerances.Tolerance`.

    Returns
    -------
    Report
        ``report.passed`` is True iff no case failed and at least one ran.
    """
    t0 = time.perf_counter()

    if preset is not None:
        kind = "preset"
    if compare not in ("value", "grad"):
        raise ValueError(f"compare: expected 'value' or 'grad', got {compare!r}")
    kwargs = dict(kwargs or {})
    if kind == "preset":
        if preset not in PRESET_PARAM_GRIDS:
            raise ValueError(f"preset: expected one of {list(PRESET_PARAM_GRIDS)}, got {preset!r}")
        own = set(PRESET_PARAM_GRIDS[preset][0])
        preset_params = {**{k: kwargs.pop(k) for k in list(kwargs) if k in own},
                         **dict(preset_params or {})}  # fmt: skip
    fields = {
        "divergences": iter_names(divergences),
        "orders": _directions(iter_names(orders)),
        "alpha_range": alpha_range,
        "lam_range": lam_range,
        "max_vocab": max_vocab,
        "neg_inf": neg_inf,
        "ignore_index": ignore_index,
        "detach_assistant": detach_assistant,
        "temperature_squared": temperature_squared,
    }
    adapter = make_adapter(
        fn,
        kind,
        dtype=dtype,
        backend=backend,
        device=device,
        convention=convention,
        reduction=reduction,
        normalized=normalized,
        kwargs=kwargs,
        reduction_names=reduction_names,
        param_map=_check_param_map(param_map, kind, preset, fn),
    )
    adapter.tolerances = _resolve_tolerances(tolerances)
    sup = _make_support(support, adapter)
    given = {k: v for k, v in fields.items() if v is not None}
    if given:
        sup = replace(sup, **given)
    adapter.ignore_index_declared = bool(sup.ignore_index)
    select: dict[str, Any] = {}
    if kind == "divergence":
        select = {"divergences": sup.divergences, "orders": sup.orders}
    elif kind == "preset":
        select = {"preset": preset, "preset_params": preset_params or None}
    if cases is not None:
        case_list = list(cases)
    else:
        case_list = battery(kind, full=full, families=families, **select)
    if kind in ("divergence", "preset"):
        first = next((c for c in case_list if c.kind == kind), None)
        if first is not None:
            adapter.probe_case = Case(
                "probe", kind, shape=(3, 16), name="probe", seed=20260101,
                divergence=first.divergence, div_params=first.div_params, order=first.order,
                preset=first.preset, preset_params=first.preset_params,
            )  # fmt: skip
    t2 = sup.temperature_squared
    adapter.resolve(lambda case, dt: _reference_for_probe(case, dt, t2))
    dtype = adapter.dtype
    with _single_thread(adapter):
        results = [
            _run_case(
                adapter, c, sup, grad=grad, diagnose_failures=diagnose_failures, compare=compare
            )
            for c in case_list
        ]
    settings = adapter.describe()
    if target:
        settings["target"] = target
    grad_note = "off"
    if grad:
        grad_note = (
            "on"
            if (kind != "mixture" and adapter.backend == "torch")
            else ("requested, not checked (needs a torch loss)")
        )
    if grad_note == "on" and compare == "grad":
        grad_note = "on (gradient only: values not compared)"
    settings["grad"] = grad_note
    if kind == "preset":
        settings["preset"] = preset
        settings["preset_params"] = dict(preset_params or {})
    settings["support"] = {k: v for k, v in sup.describe().items() if v not in (None, "all")}
    settings["full"] = bool(full)
    quantities = ["log_mixture"] if kind == "mixture" else ["loss"]
    if grad_note.startswith("on"):
        quantities.append("grad")
    tolerances = {}
    for q in quantities:
        tol, row = _tolerance_row(q, dtype, adapter.tolerances)
        tolerances[q] = {"rtol": tol.rtol, "atol": tol.atol, "row": row, "reason": tol.reason}
    return Report(settings, tolerances, results, time.perf_counter() - t0)


def check_case(fn: Callable, case: Case, **options: Any) -> CaseResult:
    """Run one case (e.g. drawn from :func:`amid_ref.strategies.loss_cases`) against ``fn``.

    ``options`` are those of :func:`conform`; returns the :class:`CaseResult`.
    """
    report = conform(fn, case.kind, cases=[case], **options)
    return report.results[0]
