"""Input domains of the conformance battery, as grids, NumPy generators and Hypothesis strategies.

One module holds every domain choice the conformance battery (:mod:`amid_ref.conformance`)
makes, so that the fixed battery and a property-based search draw from the same places:

* **Grids** (plain tuples, no dependency): the α values, λ values, vocabulary sizes and
  divergence parameters the battery enumerates. Each carries a comment saying which known
  failure it is there to expose.
* **Generators** (NumPy only, in :mod:`amid_ref._battery._logits`): :func:`logits_pair` turns
  ``(kind, shape, seed)`` into a reproducible pair of student/teacher logits. A battery case
  stores only those three values, so a failing case is reproduced exactly from what the
  report prints.
* **Hypothesis strategies** (:func:`alphas`, :func:`lambdas`, :func:`logits_rows`,
  :func:`logits_pairs`, :func:`divergence_specs`, :func:`loss_cases`, ...): the same domains
  for ``@given`` tests. Hypothesis is a test extra, imported inside each strategy function,
  so ``import amid_ref.strategies`` works without it.

Examples
--------
>>> import numpy as np
>>> from amid_ref.strategies import logits_pair
>>> s, t = logits_pair("one_hot", (2, 5), seed=0)
>>> s.shape, int(np.isfinite(t[0]).sum())
((2, 5), 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from amid_ref._battery._case import Case
from amid_ref._battery._logits import LOGIT_KINDS, logits_pair
from amid_ref._specs import ORDERS, SPECS, alpha_grid, lambda_grid

if TYPE_CHECKING:  # pragma: no cover
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "AB_PARAMS",
    "ALPHA_GRID",
    "ALPHA_NEAR_ONE",
    "AMARI_GAMMAS",
    "BIG_VOCABS",
    "DIVERGENCE_PARAM_GRID",
    "JS_BETAS",
    "LAMBDA_GRID",
    "LOGIT_KINDS",
    "LOSS_ALPHAS",
    "NO_STRATEGY",
    "PARAM_STRATEGIES",
    "RENYI_ORDERS",
    "SMALL_VOCABS",
    "alphas",
    "divergence_specs",
    "lambdas",
    "logits_pair",
    "logits_pairs",
    "logits_rows",
    "loss_cases",
    "mixture_cases",
    "orders",
    "shapes",
    "temperatures",
]

_INF = math.inf

# --------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------

#: α values enumerated by the battery's ``alpha_grid`` family.
#:
#: * ±∞ and ±1e6: the min/max limits and their finite neighbourhood (β = ∓5e5, where
#:   ``exp(β·log p)`` overflows unless evaluated in the log domain).
#: * −5, −3, −2, −0.5, 0, 0.5, 2: ordinary power means on both sides of −1 (Z ≥ 1 for
#:   α < −1, Z ≤ 1 for α > −1). −5 is the paper's best α.
#: * −1 and −1 ± 1e-6: the m-mixture and its neighbourhood (Z = 1 exactly at −1).
#: * 1, 1 ± 1e-6, 1 ± 1e-3: the e-mixture, where the logaddexp/β formula divides rounding
#:   noise by β → 0 (errors of whole nats in bf16/fp16).
#: * 3, 5, 50: α > 1 other than 1, where an implementation that collapses every α ≥ 1 to the
#:   geometric mixture is caught (3 is the harmonic mean).
ALPHA_GRID: tuple[float, ...] = (
    -_INF,
    -1e6,
    -50.0,
    -5.0,
    -3.0,
    -2.0,
    -1.0 - 1e-6,
    -1.0,
    -1.0 + 1e-6,
    -0.5,
    0.0,
    0.5,
    1.0 - 1e-3,
    1.0 - 1e-6,
    1.0,
    1.0 + 1e-6,
    1.0 + 1e-3,
    2.0,
    3.0,
    5.0,
    50.0,
    1e6,
    _INF,
)

#: The α grid of the float64 reference's numerical contract (checked against the mpmath
#: oracle by tests/test_reference_accuracy.py and tests/test_precise.py): ±∞, |α| = 1e6,
#: α approaching ±1 from both sides (β within 5e-13 of 0 at 1 − 1e-12) and α > 1.
CONTRACT_ALPHAS: tuple[float, ...] = alpha_grid("contract")

#: The λ grid of the same contract: the endpoints, 1e-15 from them, and the interior.
CONTRACT_LAMBDAS: tuple[float, ...] = lambda_grid("full")

#: One α per regime of the loss and its gradient, for the grids that multiply α by
#: divergences, orders and λ (the float64 loss and gradient against the oracle, gpu against
#: amid_ref): ±∞ (max/min), −5 (the paper's best), −1 (the m-mixture), 0 and 0.5, 1 − 1e-6
#: and 1 (the e-mixture and its neighbourhood), 3 (α > 1).
LOSS_ALPHAS: tuple[float, ...] = (-_INF, -5.0, -1.0, 0.0, 0.5, 1.0 - 1e-6, 1.0, 3.0, _INF)

#: α values within 1e-2 of the pole β = 0 (α = 1) used by the ``low_precision`` family: the
#: bracket of ``(1/β)·logaddexp(log λ + β log p, log(1−λ) + β log q)`` is O(β) while its
#: rounding error is O(eps·|log λ|), so the relative error of the naive formula is eps/|β|.
ALPHA_NEAR_ONE: tuple[float, ...] = (
    1.0 - 1e-2,
    1.0 - 1e-4,
    1.0 - 1e-6,
    1.0 + 1e-6,
    1.0 + 1e-4,
    1.0 + 1e-2,
)

#: λ values of the ``lambda_edges`` family: the endpoints (r = q at 0, r = p at 1, where
#: ``log λ`` or ``log(1−λ)`` is −∞), 1e-15 and 1e-9 from them (``1 − λ`` loses all but a few
#: digits; ``log1p(−λ)`` is needed), 1e-3 from them, and the interior 0.5. An implementation
#: that weights the student with λ fails at every λ ≠ 0.5.
LAMBDA_GRID: tuple[float, ...] = (
    0.0,
    1e-15,
    1e-9,
    1e-3,
    0.5,
    1.0 - 1e-3,
    1.0 - 1e-9,
    1.0 - 1e-15,
    1.0,
)

#: Small vocabularies: V = 2 and 3 (a single comparison; Z is a two-term sum), odd sizes that
#: are not multiples of any SIMD/chunk width.
SMALL_VOCABS: tuple[int, ...] = (2, 3, 5, 17, 257, 4099)

#: Realistic LLM vocabularies (GPT-2 50257, Llama-2 32000, Llama-3 128256, Qwen 151936):
#: sums of 1e5 terms expose fp32 accumulation and chunking errors.
BIG_VOCABS: tuple[int, ...] = (32000, 50257, 128256, 151936)


def _battery(name: str, *keys: str) -> tuple:
    """The record's battery parameter sets as values (one key) or tuples of values."""
    sets = SPECS[name].cases_for("battery")
    if len(keys) == 1:
        return tuple(p[keys[0]] for p in sets)
    return tuple(tuple(p[k] for k in keys) for p in sets)


# The parameter sets below are the records' "battery" sets (amid_ref._specs), named here as
# the battery's grids; the reasons for each value are:
#: Generalized-JSD weights: symmetric 0.5 and the skewed 0.1/0.9 GKD uses.
JS_BETAS: tuple[float, ...] = _battery("js", "beta")

#: Amari γ (``div_params={"alpha": γ}``): the limits γ = ±1 (KL(a‖b) at −1, KL(b‖a) at +1;
#: one published library swaps them), 1e-6 from them (where 4/(1−γ²) multiplies a cancelled
#: bracket), 0 (4× squared Hellinger), ±0.5 and |γ| = 3 (outside [−1, 1]).
AMARI_GAMMAS: tuple[float, ...] = _battery("amari", "alpha")

#: Rényi orders ρ: 1 (KL limit) and 1e-6 below it (1/(ρ−1) times a cancelled logarithm),
#: 0.5 (Bhattacharyya) and 2 (collision).
RENYI_ORDERS: tuple[float, ...] = _battery("renyi", "order")

#: AB-divergence (a_, b_): the AMiD paper's (0.2, 0.7); the KL corners (1, 0) and (0, 1); the
#: special lines a_ = 0, b_ = 0, a_ + b_ = 0 with a parameter ≠ 1 (so that a 1/a_ vs 1/a_²
#: slip changes the value); the origin (½Σ(log x − log y)²); and points 1e-7 from each line,
#: where the general formula cancels catastrophically unless evaluated by series.
AB_PARAMS: tuple[tuple[float, float], ...] = _battery("ab", "alpha", "beta")

#: Every divergence with its parameter sets, as ``(name, params)``: the records' battery
#: sets; ``"f"`` (a user callable) is not enumerated.
DIVERGENCE_PARAM_GRID: tuple[tuple[str, dict[str, float]], ...] = tuple(
    (spec.name, params) for spec in SPECS.values() for params in spec.cases_for("battery")
)


# --------------------------------------------------------------------------------------
# Hypothesis strategies (hypothesis imported lazily: it is a test extra)
# --------------------------------------------------------------------------------------


def _st():
    try:
        from hypothesis import strategies  # hypothesis: optional (the test extra)
    except ImportError as exc:  # pragma: no cover - exercised only without the test extra
        raise ImportError(
            "amid_ref.strategies needs hypothesis (pip install 'amid-ref[test]')"
        ) from exc
    return strategies


def alphas(*, allow_infinity: bool = True, max_abs: float = 1e6) -> SearchStrategy[float]:
    """α values: the battery grid, neighbourhoods of the poles ±1, and a continuous range.

    Domain choices:

    * :data:`ALPHA_GRID` (special values and limits) is drawn one time in three;
    * ``±1 + δ`` with ``|δ|`` log-uniform in [1e-12, 1e-1]: the m-mixture at −1 and the
      β = 0 pole at +1 are where naive formulas lose accuracy, and errors grow as δ shrinks;
    * a uniform float in [−10, 10] (the range the paper sweeps) and, rarely, ``|α|`` up to
      ``max_abs`` (near the min/max limits, where ``β·log p`` overflows in linear space).

    Parameters
    ----------
    allow_infinity : bool
        Include α = ±∞ (m = max/min). Implementations that cannot take ∞ pass False.
    max_abs : float
        Largest finite |α| drawn.
    """
    st = _st()
    grid = [
        a
        for a in ALPHA_GRID
        if (math.isfinite(a) and abs(a) <= max_abs) or (math.isinf(a) and allow_infinity)
    ]
    near_pole = st.builds(
        lambda pole, sign, exponent: pole + sign * 10.0**exponent,
        st.sampled_from([-1.0, 1.0]),
        st.sampled_from([-1.0, 1.0]),
        st.floats(-12.0, -1.0),
    )
    wide = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False)
    return st.one_of(
        st.sampled_from(sorted(set(grid))),
        near_pole,
        st.floats(-10.0, 10.0, allow_nan=False),
        wide,
    )


def lambdas(*, allow_endpoints: bool = True) -> SearchStrategy[float]:
    """λ ∈ [0, 1]: the endpoints, points 1e-15..1e-3 from them, and the open interval.

    Domain choices: λ = 0 and λ = 1 make one of ``log λ``, ``log(1−λ)`` equal −∞ (r = q or
    r = p exactly); λ = 1e-15 and 1 − 1e-15 make ``1 − λ`` lose all but one or two digits, so
    an implementation must use ``log1p(−λ)``; the interior is drawn uniformly. An
    implementation that weights the student with λ differs from the reference at every λ
    except 0.5.

    Parameters
    ----------
    allow_endpoints : bool
        Include λ ∈ {0, 1} exactly.
    """
    st = _st()
    near = st.builds(
        lambda side, exponent: (1.0 - 10.0**exponent) if side else 10.0**exponent,
        st.booleans(),
        st.floats(-15.0, -3.0),
    )
    grid = [x for x in LAMBDA_GRID if allow_endpoints or 0.0 < x < 1.0]
    inner = st.floats(0.0, 1.0, exclude_min=not allow_endpoints, exclude_max=not allow_endpoints)
    return st.one_of(st.sampled_from(grid), near, inner)


def orders() -> SearchStrategy[str]:
    """The four AMiD orders ``pr, qr, rp, rq`` (D(p‖r), D(q‖r), D(r‖p), D(r‖q))."""
    return _st().sampled_from(tuple(ORDERS))


def temperatures() -> SearchStrategy[float]:
    """Distillation temperatures: 1 (no scaling) half the time, else log-uniform in [0.25, 16]."""
    st = _st()
    return st.one_of(st.just(1.0), st.floats(-2.0, 4.0).map(lambda e: float(2.0**e)))


def divergence_specs(names: Sequence[str] | None = None) -> SearchStrategy[tuple[str, dict]]:
    """``(divergence, params)`` pairs, from :data:`DIVERGENCE_PARAM_GRID` or drawn around it.

    Domain choices: half the draws come from the grid (limits and the lines where formulas
    switch branch); the rest draw JSD β in (0, 1), Amari γ near ±1 (δ down to 1e-12) or in
    [−5, 5], Rényi ρ in (0, 5] or 1 ± δ, and AB (a_, b_) in [0, 2] × [−0.5, 2] or at a distance
    δ ∈ [1e-12, 1e-2] from one of the lines a_ = 0, b_ = 0, a_ + b_ = 0 (where only a series
    evaluation is continuous); distances below 1e-12 other than 0 are not drawn (see
    :func:`_ab_resolvable`). ``"f"`` (a user callable) is not drawn.

    Parameters
    ----------
    names : sequence of str, optional
        Restrict to these divergences (default: every enumerated one).
    """
    st = _st()
    allowed = tuple(names) if names is not None else tuple(dict(DIVERGENCE_PARAM_GRID))
    grid = [(n, p) for n, p in DIVERGENCE_PARAM_GRID if n in allowed]
    if not grid:
        raise ValueError(f"names: no enumerable divergence among {allowed!r}")
    small = st.floats(-12.0, -2.0).map(lambda e: 10.0**e)
    drawn = {name: make(st, small) for name, make in PARAM_STRATEGIES.items()}
    drawn.update({n: st.just({}) for n, spec in SPECS.items() if not spec.params})
    continuous = [
        st.tuples(st.just(n), drawn[n]) for n in allowed if n in drawn and n in dict(grid)
    ]
    return st.one_of(st.sampled_from(grid), *continuous)


#: Divergence name -> ``make(st, small)`` building the strategy of its continuous parameter
#: draws (``st`` is ``hypothesis.strategies``, ``small`` draws 1e-12..1e-2), registered
#: against the contract's records; a record without parameters needs none (it draws ``{}``).
#: tests/test_registry.py checks every record with parameters has one (or a reason).
PARAM_STRATEGIES: dict[str, Callable[[Any, Any], Any]] = {
    "js": lambda st, small: st.builds(lambda b: {"beta": b}, st.floats(0.01, 0.99)),
    "amari": lambda st, small: st.one_of(
        st.builds(lambda s, d: {"alpha": s * (1.0 - d)}, st.sampled_from([-1.0, 1.0]), small),
        st.builds(lambda g: {"alpha": g}, st.floats(-5.0, 5.0)),
    ),
    "renyi": lambda st, small: st.one_of(
        st.builds(lambda s, d: {"order": 1.0 + s * d}, st.sampled_from([-1.0, 1.0]), small),
        st.builds(lambda r: {"order": r}, st.floats(0.05, 5.0)),
    ),
    "ab": lambda st, small: st.one_of(
        st.builds(lambda a, b: {"alpha": a, "beta": b}, st.floats(0, 2), st.floats(-0.5, 2)).filter(
            _ab_resolvable
        ),
        st.builds(lambda b, d: {"alpha": d, "beta": b}, st.floats(0.1, 2), small),
        st.builds(lambda a, d: {"alpha": a, "beta": d}, st.floats(0.1, 2), small),
        st.builds(lambda a, d: {"alpha": a, "beta": -a + d}, st.floats(0.1, 1), small),
    ),
    # s in [0, 1): 0 (KL), 1e-12..1e-2 from 0 and from 1, and the interval.
    "skew_kl": lambda st, small: st.one_of(
        st.builds(lambda s: {"skew": s}, st.floats(0.0, 0.99)),
        st.builds(lambda d: {"skew": d}, small),
        st.builds(lambda d: {"skew": 1.0 - d}, small),
    ),
}

#: Why a record has no entry in :data:`PARAM_STRATEGIES`.
NO_STRATEGY: dict[str, str] = {
    "f": "a user callable generator; there is no domain of generators to draw from",
}


def _ab_resolvable(params: dict) -> bool:
    """AB parameters whose distances a_, b_, a_ + b_ to the special lines are each 0 or at
    least 1e-12: closer than that (down to subnormals) only re-tests the line itself, with
    products like a_·λ underflowing to 0."""
    a, b = params["alpha"], params["beta"]
    return all(x == 0.0 or abs(x) >= 1e-12 for x in (a, b, a + b))


def shapes(
    *, max_vocab: int = 4099, max_batch: int = 4, big_vocab: bool = False
) -> SearchStrategy[tuple[int, ...]]:
    """Logit shapes ``(V,)``, ``(B, V)`` or ``(B, T, V)``.

    Domain choices: V from :data:`SMALL_VOCABS` (2 and 3 are degenerate sums; odd sizes miss
    every vector width) or uniform in [2, max_vocab]; with ``big_vocab`` also the real LLM
    vocabularies of :data:`BIG_VOCABS` (one row, to stay cheap). Leading dims 0–2 of size 1
    to ``max_batch``.
    """
    st = _st()
    vocab = st.one_of(
        st.sampled_from([v for v in SMALL_VOCABS if v <= max_vocab]), st.integers(2, max_vocab)
    )
    lead = st.lists(st.integers(1, max_batch), min_size=0, max_size=2)
    small = st.builds(lambda lead, v: (*lead, v), lead, vocab)
    if not big_vocab:
        return small
    return st.one_of(small, st.sampled_from(BIG_VOCABS).map(lambda v: (1, v)))


def logits_pairs(
    *,
    kinds: Sequence[str] = LOGIT_KINDS,
    shape: SearchStrategy[tuple[int, ...]] | None = None,
) -> SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """``(student_logits, teacher_logits)`` from :func:`logits_pair` with a drawn seed.

    Realistic and extreme row shapes come from the ``kinds`` (see :func:`logits_pair` for
    what each one stresses); the seed makes a counterexample printable and replayable.
    """
    st = _st()
    shape = shape if shape is not None else shapes()
    return st.builds(
        lambda kind, shp, seed: logits_pair(kind, shp, seed),
        st.sampled_from(list(kinds)),
        shape,
        st.integers(0, 2**31 - 1),
    )


def logits_rows(
    *, shape: SearchStrategy[tuple[int, ...]] | None = None, allow_neg_inf: bool = True
) -> SearchStrategy[np.ndarray]:
    """One float64 logits array drawn element by element (so Hypothesis can shrink it).

    Domain choices: most elements in [−30, 30] (realistic LM logits), some in ±1e4 (a spread
    at which every probability but the top ones underflows), and with ``allow_neg_inf`` some
    −inf (masked or padded vocabulary entries); every row keeps at least one finite entry.
    """
    st = _st()
    from hypothesis.extra.numpy import arrays  # hypothesis: optional (the test extra)

    shape = shape if shape is not None else shapes(max_vocab=64)
    element_choices = [
        st.floats(-30.0, 30.0),
        st.floats(-1e4, 1e4),
    ]
    if allow_neg_inf:
        element_choices.append(st.just(-math.inf))
    elements = st.one_of(*element_choices)

    def fix(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        dead = ~np.isfinite(x).any(axis=-1)
        x[dead, 0] = 0.0
        return x

    return shape.flatmap(lambda shp: arrays(np.float64, shp, elements=elements)).map(fix)


def _case_strategy(kind: str, families: str, big_vocab: bool):
    st = _st()

    @st.composite
    def draw_case(draw):
        alpha = draw(alphas())
        lam = draw(lambdas())
        shp = draw(shapes(big_vocab=big_vocab))
        logits_kind = draw(st.sampled_from(LOGIT_KINDS))
        seed = draw(st.integers(0, 2**31 - 1))
        extra: dict[str, Any] = {}
        if kind == "loss":
            name, params = draw(divergence_specs())
            extra = {
                "divergence": name,
                "div_params": params,
                "order": draw(orders()),
                "temperature": draw(temperatures()),
            }
        return Case(
            family=families,
            kind=kind,
            alpha=alpha,
            lam=lam,
            shape=shp,
            inputs=logits_kind,
            seed=seed,
            **extra,
        )

    return draw_case()


def loss_cases(*, big_vocab: bool = False) -> SearchStrategy[Any]:
    """:class:`amid_ref.conformance.Case` objects of kind ``"loss"`` over every domain above.

    Each draws α (:func:`alphas`), λ (:func:`lambdas`), a shape (:func:`shapes`), a logits
    kind and seed (:func:`logits_pair`), a divergence with parameters
    (:func:`divergence_specs`), an order and a temperature. Use with
    :func:`amid_ref.conformance.check_case` or ``assert_conforms(fn, cases=[case])``.
    """
    return _case_strategy("loss", "hypothesis", big_vocab)


def mixture_cases(*, big_vocab: bool = False) -> SearchStrategy[Any]:
    """:class:`amid_ref.conformance.Case` objects of kind ``"mixture"`` (α, λ, shape, logits)."""
    return _case_strategy("mixture", "hypothesis", big_vocab)
