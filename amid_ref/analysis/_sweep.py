"""The validation sweep: amid_ref (float64) against amid_ref.precise (mpmath) on grids."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

import amid_ref
from amid_ref._battery._compare import Summary, error_ratio
from amid_ref._specs import SPECS, alpha_grid, lambda_grid
from amid_ref.analysis._common import (
    _fmt_alpha,
    _fmt_lam,
    _log_softmax,
)
from amid_ref.tolerances import assert_within, tolerance


@dataclass(frozen=True)
class SweepCase:
    """A teacher/student pair of logits of the validation sweep.

    Attributes
    ----------
    name : str
        Short identifier used in the report.
    teacher_logits, student_logits : ndarray, shape (V,)
        Logits; ``-inf`` marks a masked token (probability exactly 0).
    description : str
        What the case exercises.
    """

    name: str
    teacher_logits: np.ndarray
    student_logits: np.ndarray
    description: str


def sweep_cases(seed: int = 20260101) -> list[SweepCase]:
    """The logit pairs of the validation sweep (V = 6).

    Random logits; a peaked teacher; logits spanning 1e4 (probabilities below the float64
    range, exact only in the log domain); masked (−inf) tokens in teacher, student and
    both; a one-hot teacher; a shift of the logits by 1e4 (must not matter); ``q = p``
    exactly and to within 1e-7 (the optimum of Theorem 3.4, where losses vanish).
    """
    rng = np.random.default_rng(seed)
    ninf = -np.inf
    t_rand = 2.0 * rng.standard_normal(6)
    s_rand = 2.0 * rng.standard_normal(6)
    return [
        SweepCase("random", t_rand, s_rand, "standard normal logits ×2"),
        SweepCase(
            "peaked",
            np.array([9.0, 0.5, -1.0, -2.0, 0.0, -3.0]),
            2.0 * rng.standard_normal(6),
            "teacher with 99.9% of its mass on one token",
        ),
        SweepCase(
            "wide-span",
            np.array([0.0, -30.0, -700.0, -800.0, -5000.0, -1.0e4]),
            np.array([-1.0e4, -5.0, 0.0, -750.0, -2.0, -40.0]),
            "logits spanning 1e4: probabilities underflow to 0 outside the log domain",
        ),
        SweepCase(
            "masked",
            np.array([1.0, ninf, 0.3, -0.5, ninf, 2.0]),
            np.array([0.2, 1.5, ninf, -1.0, ninf, 0.7]),
            "−inf logits: token 1 masked for the teacher, 2 for the student, 4 for both",
        ),
        SweepCase(
            "one-hot",
            np.array([0.0, ninf, ninf, ninf, ninf, ninf]),
            2.0 * rng.standard_normal(6),
            "one-hot teacher",
        ),
        SweepCase(
            "shifted",
            t_rand + 1.0e4,
            s_rand - 1.0e4,
            "the random case with logits shifted by ±1e4",
        ),
        SweepCase("equal", t_rand.copy(), t_rand.copy(), "q = p exactly"),
        SweepCase(
            "near-equal",
            t_rand.copy(),
            t_rand + 1e-7 * rng.standard_normal(6),
            "q = p to within 1e-7 in the logits",
        ),
    ]


#: The sweep's α grid: ±inf, huge |α|, the special values, and points approaching ±1
#: from both sides (1e-3 down to 1e-12); the quick grid is a subset (contract grids).
SWEEP_ALPHAS_FULL: tuple[float, ...] = alpha_grid("full")
SWEEP_ALPHAS_QUICK: tuple[float, ...] = alpha_grid("quick")
#: λ grid: the endpoints, 1e-15 from them, and interior points.
SWEEP_LAMS_FULL: tuple[float, ...] = lambda_grid("full")
SWEEP_LAMS_QUICK: tuple[float, ...] = lambda_grid("quick")


def _pearson_generator(u):
    """f(u) = (u − 1)², the generator of Pearson's χ²; plain operators only, so it runs on
    float64 arrays and on mpmath numbers alike."""
    return (u - 1) ** 2


def _pearson_generator_prime(u):
    return 2 * (u - 1)


#: (name, params) pairs of the divergence part of the sweep: every divergence, with
#: parameters at and near their limits (Amari γ → ±1, Rényi ρ → 1, AB a_ → 0, a_ + b_ = 0).
SWEEP_DIVERGENCES: tuple[tuple[str, dict], ...] = (
    *((spec.name, params) for spec in SPECS.values() for params in spec.cases_for("sweep")),
    ("f", {"f": _pearson_generator, "f_prime": _pearson_generator_prime}),
)


#: Combinations the sweep does not compare, each with the documented reason (a skip is data,
#: reported with its reason, never silent): (divergence name, case name) -> reason.
SWEEP_SKIPS: dict[tuple[str, str], str] = {
    ("f", "wide-span"): (
        "a user generator f is evaluated in float64 at u = a/b; on the wide-span case u "
        "reaches e^470 and beyond, where f(u) overflows and amid_ref refuses log ratios "
        "> 709 by design (ValueError: use a named divergence, which works in the log "
        "domain), while the oracle evaluates f at 50 digits"
    ),
}


#: Documented refusals: an amid_ref ValueError whose message contains the key is the
#: library declining, by design, an input it cannot evaluate in float64 (the oracle, at 50
#: digits, can). Counted as skipped with the reason, never as a pass; any other ValueError
#: where the oracle gives a value is a failure.
SWEEP_REFUSALS: dict[str, str] = {
    "exceeds the float64 range": (
        "divergence 'f' with a user generator: amid_ref refuses ratios a/b beyond the float64 "
        "range (log ratio > 709), which occur for α within ~1e-6 of 1 with masked tokens "
        "(r has mass λ^(1/β)·a ≈ e^(-1e10) there) and for logits spanning 1e4"
    ),
}


#: The summary of one quantity of the sweep: the battery's one summary type.
SweepSummary = Summary


def _oracle_to_float(x) -> np.ndarray:
    """Round the oracle's mpf output to float64 with ``float(mpf)`` (round to nearest).

    Used instead of ``precise.to_float`` because the sweep produces values such as
    ``exp(-4.6e10)``, whose exact conversion is needlessly expensive; ``float`` gives 0.0.
    """
    arr = np.asarray(x, dtype=object)
    return np.array([float(v) for v in arr.flat], dtype=np.float64).reshape(arr.shape)


@dataclass(frozen=True)
class SweepPlan:
    """The grids of one run of :func:`validation_sweep` (see :data:`SWEEP_PLANS`)."""

    cases: tuple[str, ...]
    alphas: tuple[float, ...]
    lams: tuple[float, ...]
    loss_cases: tuple[str, ...]
    loss_alphas: tuple[float, ...]
    loss_lams: tuple[float, ...]
    loss_divergences: tuple[tuple[str, dict], ...]
    temperatures: tuple[float, ...]
    grad_cases: tuple[str, ...]
    grad_alphas: tuple[float, ...]
    grad_lams: tuple[float, ...]
    grad_divergences: tuple[tuple[str, dict], ...]


def _divs(*names_params: tuple[str, dict]) -> tuple[tuple[str, dict], ...]:
    for item in names_params:
        if item not in SWEEP_DIVERGENCES:
            raise KeyError(item)
    return tuple(names_params)


def _record_sets(use: str) -> tuple[tuple[str, dict], ...]:
    return _divs(*((spec.name, p) for spec in SPECS.values() for p in spec.cases_for(use)))


#: The quick plan's divergences (the records' "quick" sets) and its gradient subset.
_CORE_DIVERGENCES = _record_sets("quick")

#: ``"quick"`` (about 15 s on one core) and ``"full"`` (about 4 minutes) grids. The oracle
#: costs ~5 ms per mixture or loss and ~60 ms per gradient (V = 6), which sets the sizes.
SWEEP_PLANS: dict[str, SweepPlan] = {
    "quick": SweepPlan(
        cases=("random", "wide-span", "masked", "one-hot", "equal"),
        alphas=SWEEP_ALPHAS_QUICK,
        lams=SWEEP_LAMS_QUICK,
        loss_cases=("random", "wide-span", "masked", "one-hot"),
        loss_alphas=(-math.inf, -3.0, 1.0 - 1e-10, 1.0, 3.0, math.inf),
        loss_lams=(0.3,),
        loss_divergences=_CORE_DIVERGENCES,
        temperatures=(1.0,),
        grad_cases=("random", "masked"),
        grad_alphas=(-3.0, 1.0 - 1e-10, 1.0),
        grad_lams=(0.3,),
        grad_divergences=_record_sets("quick_grad"),
    ),
    "full": SweepPlan(
        cases=tuple(c.name for c in sweep_cases()),
        alphas=SWEEP_ALPHAS_FULL,
        lams=SWEEP_LAMS_FULL,
        loss_cases=tuple(c.name for c in sweep_cases()),
        loss_alphas=(-math.inf, -5.0, -1.0 - 1e-8, -1.0, 0.0, 1.0 - 1e-10, 1.0, 3.0, math.inf),
        loss_lams=(0.0, 0.1, 0.9),
        loss_divergences=SWEEP_DIVERGENCES,
        temperatures=(1.0, 2.0),
        grad_cases=("random", "masked", "peaked", "near-equal"),
        grad_alphas=(-math.inf, -5.0, -1.0, 0.0, 1.0 - 1e-10, 1.0, 3.0),
        grad_lams=(0.1, 0.9),
        grad_divergences=(*_CORE_DIVERGENCES, ("hellinger", {}), SWEEP_DIVERGENCES[-1]),
    ),
}


def _div_label(name: str, params: dict) -> str:
    shown = ",".join(f"{k}={v:g}" for k, v in params.items() if not callable(v))
    return f"{name}({shown})" if shown else name


def validation_sweep(
    quick: bool = False,
    *,
    dps: int = 50,
    progress: Callable[[str], None] | None = None,
    plan: SweepPlan | None = None,
    quantities: Sequence[str] = ("log_mixture", "mixture", "divergence", "loss", "grad"),
    on_item: Callable[[str, int, int], None] | None = None,
) -> list[SweepSummary]:
    r"""Compare :mod:`amid_ref` with the mpmath oracle :mod:`amid_ref.precise` on grids.

    Every comparison uses the tolerance ``("reference", quantity, "float64")`` of
    :mod:`amid_ref.tolerances`:

    .. math::

        |\text{got} - \text{want}| \le \text{atol} + \text{rtol}\cdot\text{scale}

    (``scale = max(1, |want|)`` for the log-domain mixture entries), with infinities
    required to agree exactly. Grids (:data:`SWEEP_PLANS`): the logit pairs of
    :func:`sweep_cases` (extreme, masked, one-hot, equal); α in :data:`SWEEP_ALPHAS_FULL`
    (±inf, ±1e6, and ±1 approached from both sides down to 1e-12) and λ in
    :data:`SWEEP_LAMS_FULL` (0, 1e-15, …, 1 − 1e-15, 1) for the mixtures; every divergence
    with parameters at and near their limits (:data:`SWEEP_DIVERGENCES`) in the probability
    and the log domain; divergences × the four orders × α × λ (× temperature) for the loss,
    and a sub-grid for the gradient (the oracle differentiates its loss numerically, an
    identity independent of Proposition 3.5). Gradients are compared only where both
    losses are finite.

    A combination both sides reject with ``ValueError`` (Z = 0) counts as agreement
    (``n_undefined``); an exception of the oracle other than ``ValueError`` is kept apart
    (``n_oracle_errors``).

    Parameters
    ----------
    quick : bool
        The ``"quick"`` plan instead of ``"full"``.
    dps : int
        Decimal digits of the oracle.
    progress : callable, optional
        Called with a one-line summary after each quantity.
    plan : SweepPlan, optional
        Custom grids (overrides ``quick``).
    quantities : sequence of str
        Which parts to run.
    on_item : callable, optional
        Called as ``on_item(quantity, done, total)`` at the start of each quantity
        (``done = 0``) and after each of its items (a logit case; a case and divergence
        for the loss and the gradient), for a progress display.

    Returns
    -------
    list of SweepSummary
        One per quantity, in the order given.
    """
    if plan is None:
        plan = SWEEP_PLANS["quick" if quick else "full"]
    unknown = [q for q in quantities if q not in SWEEP_QUANTITIES]
    if unknown:
        raise ValueError(
            f"unknown sweep quantities {unknown}; choose from {list(SWEEP_QUANTITIES)}"
        )
    return [run_quantity(q, plan, dps=dps, progress=progress, on_item=on_item) for q in quantities]


# --- the parts of the sweep -------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One comparison of the sweep: ``ours()`` (amid_ref) against ``oracle()`` (precise).

    ``select`` restricts the comparison to the entries where it is true (a function of the
    oracle's value).
    """

    what: str
    ours: Callable[[], object]
    oracle: Callable[[], object]
    select: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class Skipped:
    """A combination the sweep does not compare, with the documented reason."""

    reason: str


#: A combination whose loss is undefined or infinite on either side: no gradient compared.
UNDEFINED = "undefined"


def _oracle():
    from amid_ref import precise  # mpmath: heavy, only the sweep needs the oracle

    return precise


def compare(summary: SweepSummary, comparison: Comparison) -> None:
    """Run both sides of ``comparison``; record agreement, disagreement or an oracle error
    in ``summary`` (a ``ValueError`` on both sides is agreement: ``n_undefined``)."""
    what = comparison.what
    summary.n_checks += 1
    want_exc = got_exc = None
    try:
        want = _oracle_to_float(comparison.oracle())
    except ValueError as exc:
        want_exc = exc
    except Exception as exc:  # the oracle's own failure: kept apart
        summary.n_oracle_errors += 1
        if len(summary.failures) < 20:
            summary.failures.append(f"oracle error at {what}: {type(exc).__name__}: {exc}")
        return
    try:
        got = np.asarray(comparison.ours(), dtype=np.float64)
    except ValueError as exc:
        got_exc = exc
    except Exception as exc:
        summary.fail(f"{what}: amid_ref raised {type(exc).__name__}: {exc}")
        return
    if want_exc is not None and got_exc is not None:
        summary.n_undefined += 1
        return
    if got_exc is not None:
        refusal = next(
            (reason for phrase, reason in SWEEP_REFUSALS.items() if phrase in str(got_exc)),
            None,
        )
        if refusal is not None:
            summary.n_checks -= 1
            summary.skip(refusal)
            return
        summary.fail(f"{what}: amid_ref raised ValueError ({got_exc}); the oracle did not")
        return
    if want_exc is not None:
        summary.fail(f"{what}: the oracle raised ValueError ({want_exc}); amid_ref gave {got}")
        return
    if comparison.select is not None:
        mask = comparison.select(want)
        got, want = got[mask], want[mask]
    ratio, idx = error_ratio(got, want, summary.tolerance)
    if ratio >= summary.worst_ratio and idx:
        g, w = np.atleast_1d(got)[idx], np.atleast_1d(want)[idx]
        entry = f", entry {idx[0]}" if np.ndim(got) else ""
        summary.worst_ratio = ratio
        summary.worst_case = f"{what}{entry}: got {float(g)!r}, want {float(w)!r}"
    message = None
    try:
        with np.errstate(invalid="ignore"):  # inf - inf inside the comparison
            assert_within(got, want, summary.tolerance, what=what)
    except AssertionError as exc:
        message = str(exc)
    if message is None and ratio > 1.0:  # e.g. NaN from the oracle
        message = f"{what}: error/bound = {ratio:.3g} (got {got!r}, want {want!r})"
    if message is not None:
        summary.fail(message)


def _tag(case, alpha, lam, extra=""):
    return f"case={case} α={_fmt_alpha(alpha)} λ={_fmt_lam(lam)}{extra}"


def _logs(names: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    by_name = {c.name: c for c in sweep_cases()}
    return {
        n: (_log_softmax(by_name[n].teacher_logits), _log_softmax(by_name[n].student_logits))
        for n in names
    }


def _log_mixture_comparisons(plan: SweepPlan, dps: int):
    precise = _oracle()
    for name, (lp, lq) in _logs(plan.cases).items():
        for alpha in plan.alphas:
            for lam in plan.lams:
                yield Comparison(
                    _tag(name, alpha, lam),
                    lambda lp=lp, lq=lq, a=alpha, l=lam: amid_ref.log_alpha_mixture(lp, lq, a, l),
                    lambda lp=lp, lq=lq, a=alpha, l=lam: precise.log_alpha_mixture(
                        lp, lq, a, l, dps=dps
                    ),
                )
        yield ITEM_DONE


def _mixture_comparisons(plan: SweepPlan, dps: int):
    precise = _oracle()
    for name, logs in _logs(plan.cases).items():
        p, q = (np.exp(x) for x in logs)
        for alpha in plan.alphas:
            for lam in plan.lams:
                yield Comparison(
                    _tag(name, alpha, lam),
                    lambda p=p, q=q, a=alpha, l=lam: amid_ref.alpha_mixture(p, q, a, l),
                    lambda p=p, q=q, a=alpha, l=lam: precise.alpha_mixture(p, q, a, l, dps=dps),
                    # the table applies this bound above 1e-300 (subnormals below)
                    select=lambda w: (w >= 1e-300) | (w == 0.0),
                )
        yield ITEM_DONE


def _divergence_comparisons(plan: SweepPlan, dps: int):
    precise = _oracle()
    for name, (lp, lq) in _logs(plan.cases).items():
        for a_name, b_name, la, lb in (("p", "q", lp, lq), ("q", "p", lq, lp)):
            for div, params in SWEEP_DIVERGENCES:
                if (div, name) in SWEEP_SKIPS:
                    yield Skipped(SWEEP_SKIPS[div, name])
                    continue
                for log_input in (False, True):
                    a, b = (la, lb) if log_input else (np.exp(la), np.exp(lb))
                    domain = " log_input" if log_input else ""
                    yield Comparison(
                        f"case={name} {_div_label(div, params)}({a_name}‖{b_name}){domain}",
                        lambda a=a, b=b, d=div, pr=params, li=log_input: amid_ref.divergence(
                            a, b, d, log_input=li, **pr
                        ),
                        lambda a=a, b=b, d=div, pr=params, li=log_input: precise.divergence(
                            a, b, d, log_input=li, dps=dps, **pr
                        ),
                    )
        yield ITEM_DONE


def _loss_comparisons(plan: SweepPlan, dps: int):
    precise = _oracle()
    by_name = {c.name: c for c in sweep_cases()}
    for name in plan.loss_cases:
        c = by_name[name]
        for div, params in plan.loss_divergences:
            if (div, name) in SWEEP_SKIPS:
                yield Skipped(SWEEP_SKIPS[div, name])
                yield ITEM_DONE
                continue
            for order, alpha, lam, temp in itertools.product(
                amid_ref.ORDERS, plan.loss_alphas, plan.loss_lams, plan.temperatures
            ):
                kw = {"divergence": div, "order": order, "div_params": params, "temperature": temp}
                yield Comparison(
                    _tag(name, alpha, lam, f" {_div_label(div, params)}/{order} T={temp:g}"),
                    lambda c=c, a=alpha, l=lam, kw=kw: amid_ref.amid_loss(
                        c.student_logits, c.teacher_logits, a, l, **kw
                    ),
                    lambda c=c, a=alpha, l=lam, kw=kw: precise.amid_loss(
                        c.student_logits, c.teacher_logits, a, l, dps=dps, **kw
                    ),
                )
            yield ITEM_DONE


def _grad_comparisons(plan: SweepPlan, dps: int):
    precise = _oracle()
    by_name = {c.name: c for c in sweep_cases()}
    for name in plan.grad_cases:
        c = by_name[name]
        for div, params in plan.grad_divergences:
            if (div, name) in SWEEP_SKIPS:
                yield Skipped(SWEEP_SKIPS[div, name])
                yield ITEM_DONE
                continue
            for order, alpha, lam in itertools.product(
                amid_ref.ORDERS, plan.grad_alphas, plan.grad_lams
            ):
                if math.isinf(alpha) and name in ("equal", "near-equal"):
                    continue  # max/min switch branches at ties: no derivative
                kw = {"divergence": div, "order": order, "div_params": params}
                args = (c.student_logits, c.teacher_logits, alpha, lam)
                try:
                    finite = np.isfinite(amid_ref.amid_loss(*args, **kw)) and bool(
                        np.isfinite(_oracle_to_float(precise.amid_loss(*args, dps=dps, **kw)))
                    )
                except ValueError:
                    finite = False  # undefined loss: reported by the loss sweep
                if not finite:
                    yield UNDEFINED  # no gradient of an infinite loss
                    continue
                yield Comparison(
                    _tag(name, alpha, lam, f" {_div_label(div, params)}/{order}"),
                    lambda args=args, kw=kw: amid_ref.amid_grad(*args, **kw),
                    lambda args=args, kw=kw: precise.amid_grad(*args, dps=dps, **kw),
                )
            yield ITEM_DONE


#: Marker yielded by the comparison generators after each item of the progress count
#: (:data:`SWEEP_ITEMS`).
ITEM_DONE = object()

#: Quantity -> the number of items its generator marks with :data:`ITEM_DONE`.
SWEEP_ITEMS: dict[str, Callable[[SweepPlan], int]] = {
    "log_mixture": lambda plan: len(plan.cases),
    "mixture": lambda plan: len(plan.cases),
    "divergence": lambda plan: len(plan.cases),
    "loss": lambda plan: len(plan.loss_cases) * len(plan.loss_divergences),
    "grad": lambda plan: len(plan.grad_cases) * len(plan.grad_divergences),
}

#: Quantity -> the generator of its comparisons, ``(plan, dps) -> iterator`` of
#: :class:`Comparison`, :class:`Skipped` or :data:`UNDEFINED`.
SWEEP_QUANTITIES: dict[str, Callable] = {
    "log_mixture": _log_mixture_comparisons,
    "mixture": _mixture_comparisons,
    "divergence": _divergence_comparisons,
    "loss": _loss_comparisons,
    "grad": _grad_comparisons,
}


def sweep_comparisons(quantity: str, plan: SweepPlan, *, dps: int = 50):
    """The comparisons of one quantity of the sweep, in order (nothing is evaluated until
    a :class:`Comparison` is passed to :func:`compare`)."""
    return (item for item in SWEEP_QUANTITIES[quantity](plan, dps) if item is not ITEM_DONE)


def run_quantity(
    quantity: str,
    plan: SweepPlan,
    *,
    dps: int = 50,
    progress: Callable[[str], None] | None = None,
    on_item: Callable[[str, int, int], None] | None = None,
) -> SweepSummary:
    """Every comparison of ``quantity`` under ``plan``, summarized; ``on_item`` as in
    :func:`validation_sweep`."""
    summary = SweepSummary(quantity, tolerance("reference", quantity, "float64"))
    start = time.perf_counter()
    total, done = SWEEP_ITEMS[quantity](plan), 0
    if on_item is not None:
        on_item(quantity, 0, total)
    for item in SWEEP_QUANTITIES[quantity](plan, dps):
        if item is ITEM_DONE:
            done += 1
            if on_item is not None:
                on_item(quantity, done, total)
        elif isinstance(item, Skipped):
            summary.skip(item.reason)
        elif item is UNDEFINED:
            summary.n_undefined += 1
        else:
            compare(summary, item)
    summary.seconds = time.perf_counter() - start
    if progress is not None:
        progress(
            f"sweep {quantity}: {summary.n_checks} checks, {summary.n_failed} failed, "
            f"{summary.n_oracle_errors} oracle errors, worst error = "
            f"{summary.worst_ratio:.3g} × bound ({summary.seconds:.1f} s)"
        )
    return summary
