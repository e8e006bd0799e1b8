"""Battery families and the cases they generate (the case type is
:mod:`amid_ref._battery._case`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache

from amid_ref import presets
from amid_ref import strategies as _S
from amid_ref._battery._case import (
    _DIRECTIONS,
    DTYPES,
    IGNORE_INDEX,
    KINDS,
    Case,
    canonical_dtype,
    round_to_dtype,
)
from amid_ref._specs import ORDERS, SPECS

__all__ = [
    "DIVERGENCE_NAMES",
    "DTYPES",
    "FAMILIES",
    "IGNORE_INDEX",
    "KINDS",
    "PRESET_PARAM_ALIASES",
    "PRESET_PARAM_GRIDS",
    "Case",
    "battery",
    "canonical_dtype",
    "get_case",
    "round_to_dtype",
]


#: Families of the battery: name -> what it exercises (kinds it applies to).
FAMILIES: dict[str, str] = {
    "param_grid": "(divergence / preset kinds) the divergence's or preset's own parameters over "
    "their grid: limits (JSD β ∈ {0, 1}, Amari γ = ±1, ...) and 1e-15 / 1e-6 from them",
    "alpha_grid": "α over ALPHA_GRID (±∞, ±1e6, −1 ± 1e-6, 1 ± 1e-6, 3, 5, 50, ...) at three λ",
    "lambda_edges": "λ at 0, 1, 1e-15 / 1e-9 / 1e-3 from them, and 0.5, for α in {−3, −1, 1, 3, ∞}",
    "extreme_logits": "spreads of 1e4, offsets of 2e4, double underflow, −inf (masked) entries",
    "one_hot": "one-hot and near-one-hot teachers, every order",
    "vocab": "V = 2 ... 4099 and realistic LLM vocabularies up to 151936",
    "low_precision": "bf16/fp16-rounded logits with α within 1e-2 of 1 (the β → 0 pole)",
    "divergences": "every divergence, parameter set (limits and near-limits) and order",
    "temperature": "temperature T ∈ {0.5, 2, 10}",
    "masking": "labels with ignore_index: some / all / no positions ignored, each reduction",
    "shapes": "1-D, (1, V) and (B, T, V) inputs",
}

#: Divergences a ``"divergence"`` case can name: the contract's records with battery
#: parameter sets (the user-callable ``f`` has none).
DIVERGENCE_NAMES: tuple[str, ...] = tuple(
    n for n, spec in SPECS.items() if spec.cases_for("battery")
)


#: The representative parameters of each divergence, used by every family but ``param_grid``:
#: the record's quick set, else its defaults, else its first battery set.
TYPICAL_DIV_PARAMS: dict[str, dict[str, float]] = {
    n: SPECS[n].typical_params for n in DIVERGENCE_NAMES
}

#: Generalized-JSD β of the ``param_grid`` family: the endpoints, where JSD_β = 0 (TRL and
#: liger-kernel return KL there instead), 1e-15 and 1e-6 from them, and the usual values.
JS_BETA_GRID: tuple[float, ...] = (0.0, 1e-15, 1e-6, 0.1, 0.5, 0.9, 1 - 1e-6, 1 - 1e-15, 1.0)

#: Parameters of each preset (:mod:`amid_ref.presets`) as passed to the function under test,
#: with their grids for the ``param_grid`` family; the first value is the default.
PRESET_PARAM_GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "kd": ({},),
    "rkl": ({},),
    # DistiLLM's skew s (its code calls it ``lam``): the weight of the divergence's first
    # argument in the mixture, λ = s for the skew KL and λ = 1 − s for the skew reverse KL.
    "distillm_skl": tuple({"skew": x} for x in (0.1, 0.0, 1e-6, 0.01, 0.5, 0.9, 1.0)),
    "distillm_srkl": tuple({"skew": x} for x in (0.1, 0.0, 1e-6, 0.01, 0.5, 0.9, 1.0)),
    "gkd_jsd": tuple({"beta": x} for x in (0.5, *JS_BETA_GRID[:4], *JS_BETA_GRID[5:])),
    "taid": tuple({"t": x} for x in (0.5, 0.0, 1e-6, 0.1, 0.9, 1 - 1e-6, 1.0)),
    "abkd": tuple({"alpha": a, "beta": b} for a, b in _S.AB_PARAMS),
    "symmetric_kl": tuple({"ratio": x} for x in (0.5, 0.0, 1e-6, 0.1, 0.9, 1 - 1e-6, 1.0)),
}

#: Other names published code gives a preset's parameter (DistiLLM's functions call the skew
#: ``lam``): a function without the parameter's own name but with one of these gets it there.
PRESET_PARAM_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "distillm_skl": {"skew": ("lam",)},
    "distillm_srkl": {"skew": ("lam",)},
    "symmetric_kl": {"ratio": ("sym_kd_ratio",)},
}


#: The families of the kinds whose function under test has its own parameters.
_PARAMETRIZED_FAMILIES = (
    "param_grid",
    "extreme_logits",
    "one_hot",
    "vocab",
    "low_precision",
    "temperature",
    "masking",
    "shapes",
)
_KIND_FAMILIES = {
    "loss": tuple(f for f in FAMILIES if f != "param_grid"),
    "mixture": (
        "alpha_grid",
        "lambda_edges",
        "extreme_logits",
        "one_hot",
        "vocab",
        "low_precision",
        "shapes",
    ),
    "divergence": _PARAMETRIZED_FAMILIES,
    "preset": _PARAMETRIZED_FAMILIES,
}


def iter_names(xs: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """A comma-separated string or an iterable of names as a tuple (None stays None)."""
    if xs is None:
        return None
    if isinstance(xs, str):
        return tuple(x.strip() for x in xs.split(",") if x.strip())
    return tuple(xs)


# --------------------------------------------------------------------------------------
# The battery
# --------------------------------------------------------------------------------------


def _alpha_grid(kind: str, full: bool) -> Iterable[Case]:
    for alpha in _S.ALPHA_GRID:
        for lam in (0.1, 0.5, 0.9):
            yield Case("alpha_grid", kind, alpha, lam)
    if full:
        for alpha in _S.ALPHA_GRID:
            yield Case("alpha_grid", kind, alpha, 0.3, order="rq", shape=(4, 1000))


def _lambda_edges(kind: str, full: bool) -> Iterable[Case]:
    orders = ("pr", "qr") if kind == "loss" else ("pr",)
    alphas = (-3.0, -1.0, 1.0, 3.0, math.inf) + ((-math.inf, 0.0) if full else ())
    for lam in _S.LAMBDA_GRID:
        for alpha in alphas:
            for order in orders:
                yield Case("lambda_edges", kind, alpha, lam, order=order)


_EXTREME_KINDS = (
    "extreme",
    "huge_offset",
    "underflow",
    "masked",
    "teacher_masked",
    "student_masked",
    "flat",
    "equal",
)


def _extreme_logits(kind: str, full: bool) -> Iterable[Case]:
    kinds = _EXTREME_KINDS
    alphas = (-5.0, -1.0, 0.5, 1.0, 3.0, math.inf)
    for inputs in kinds:
        for alpha in alphas:
            yield Case("extreme_logits", kind, alpha, 0.3, inputs=inputs)
            if kind == "loss" and inputs in ("underflow", "masked"):
                yield Case("extreme_logits", kind, alpha, 0.3, order="rq", inputs=inputs)


def _one_hot(kind: str, full: bool) -> Iterable[Case]:
    orders = tuple(ORDERS) if kind == "loss" else ("pr",)
    alphas = (-math.inf, -3.0, -1.0, 0.0, 1.0, 3.0, math.inf)
    for inputs in ("one_hot", "near_one_hot", "peaked", "disjoint_peaks"):
        for alpha in alphas:
            for order in orders:
                yield Case("one_hot", kind, alpha, 0.2, order=order, inputs=inputs)


def _vocab(kind: str, full: bool) -> Iterable[Case]:
    for v in _S.SMALL_VOCABS:
        for alpha in (-3.0, 1.0, 3.0):
            yield Case("vocab", kind, alpha, 0.4, shape=(2, v))
    # Two rows of the largest real vocabulary stay in the default battery (fast: one row each).
    yield Case("vocab", kind, -5.0, 0.1, shape=(1, 151936))
    yield Case("vocab", kind, 3.0, 0.5, order="rq", shape=(1, 151936), inputs="masked")
    if full:
        for v in _S.BIG_VOCABS:
            for alpha in (-5.0, -1.0, 0.0, 1.0, 1.0 + 1e-6, 3.0, math.inf):
                yield Case("vocab", kind, alpha, 0.3, shape=(2, v))


def _low_precision(kind: str, full: bool) -> Iterable[Case]:
    for inputs in ("bf16_grid", "fp16_grid"):
        for alpha in (*_S.ALPHA_NEAR_ONE, -1.0 - 1e-6, -1.0 + 1e-6):
            for lam in (0.1, 0.5):
                yield Case("low_precision", kind, alpha, lam, inputs=inputs, shape=(4, 128))


def _divergences(kind: str, full: bool) -> Iterable[Case]:
    if kind != "loss":
        return
    for name, params in _S.DIVERGENCE_PARAM_GRID:
        for order in ORDERS:
            for alpha in (-3.0, 1.0, 3.0):
                yield Case(
                    "divergences", kind, alpha, 0.3, divergence=name, div_params=params, order=order
                )
    if full:
        # Rényi of small order on a spread of 1e4: the sum is carried by terms whose
        # probabilities underflow (p ~ e^-1900), which only a log-domain sum keeps.
        for order_rho in (0.05, 0.5):
            for alpha in (-1.0, 3.0):
                yield Case(
                    "divergences",
                    kind,
                    alpha,
                    0.3,
                    divergence="renyi",
                    div_params={"order": order_rho},
                    inputs="extreme",
                )


def _temperature(kind: str, full: bool) -> Iterable[Case]:
    if kind != "loss":
        return
    for t in (0.5, 2.0, 10.0):
        for alpha in (-3.0, 1.0, 3.0):
            for order in ("pr", "rq"):
                yield Case("temperature", kind, alpha, 0.3, order=order, temperature=t)
    if full:
        # Logits with a common offset of 2e4 divided by T in fp32 lose ~1e-3 absolute in
        # every logit difference unless the row max is subtracted first (T not a power of
        # two, or the division is exact).
        for t in (0.3, 3.0):
            for alpha in (-3.0, 3.0):
                yield Case("temperature", kind, alpha, 0.3, temperature=t, inputs="huge_offset")


def _masking(kind: str, full: bool) -> Iterable[Case]:
    if kind != "loss":
        return
    patterns = (("some", "mean"), ("some", "sum"), ("some", "none"), ("all", "mean"))
    patterns += (("all", "sum"), ("all", "none"), ("none", "mean"))
    for mask, reduction in patterns:
        for alpha in (-3.0, 3.0):
            yield Case(
                "masking", kind, alpha, 0.3, mask=mask, reduction=reduction, shape=(2, 3, 32)
            )


def _shapes(kind: str, full: bool) -> Iterable[Case]:
    for shape in ((64,), (1, 64), (2, 3, 17), (5, 1, 33)):
        for alpha in (-3.0, 3.0):
            yield Case("shapes", kind, alpha, 0.3, shape=shape)


_BUILDERS = {
    "alpha_grid": _alpha_grid,
    "lambda_edges": _lambda_edges,
    "extreme_logits": _extreme_logits,
    "one_hot": _one_hot,
    "vocab": _vocab,
    "low_precision": _low_precision,
    "divergences": _divergences,
    "temperature": _temperature,
    "masking": _masking,
    "shapes": _shapes,
}


# --- divergence and preset kinds: the same families over the divergence's own parameters ---


def _div_grid(name: str) -> list[dict[str, float]]:
    if name == "js":
        return [{"beta": b} for b in JS_BETA_GRID]
    return [dict(p) for n, p in _S.DIVERGENCE_PARAM_GRID if n == name]


def _plain_cases(family: str, kind: str, full: bool, select: tuple) -> Iterable[Case]:
    """The families of a divergence or preset case over ``select``: for ``"divergence"``,
    ``(names, orders)``; for ``"preset"``, ``(preset, fixed_params or None)``."""
    if kind == "divergence":
        names, orders = select
        variants = []
        for name in names:
            grid = _div_grid(name) if family == "param_grid" else [TYPICAL_DIV_PARAMS[name]]
            variants += [{"divergence": name, "div_params": p} for p in grid]
        variants = [{**v, "order": o} for v in variants for o in orders]
    else:
        preset, fixed = select
        grid = PRESET_PARAM_GRIDS[preset]
        if fixed is not None:
            if family == "param_grid":
                return
            grid = (dict(fixed),)
        elif family != "param_grid":
            grid = grid[:1]
        variants = [{"preset": preset, "preset_params": p} for p in grid]
    for v in variants:
        if family == "param_grid":
            yield Case(family, kind, **v)
            yield Case(family, kind, shape=(2, 3, 40), inputs="peaked", **v)
        elif family == "extreme_logits":
            for inputs in _EXTREME_KINDS:
                yield Case(family, kind, inputs=inputs, **v)
        elif family == "one_hot":
            for inputs in ("one_hot", "near_one_hot", "peaked", "disjoint_peaks"):
                yield Case(family, kind, inputs=inputs, **v)
        elif family == "vocab":
            for n in _S.SMALL_VOCABS:
                yield Case(family, kind, shape=(2, n), **v)
            for n in _S.BIG_VOCABS if full else (151936,):
                yield Case(family, kind, shape=(1, n), **v)
        elif family == "low_precision":
            for inputs in ("bf16_grid", "fp16_grid"):
                yield Case(family, kind, inputs=inputs, shape=(4, 128), **v)
        elif family == "temperature":
            for t in (0.5, 2.0, 10.0):
                yield Case(family, kind, temperature=t, **v)
        elif family == "masking":
            patterns = (("some", "mean"), ("some", "sum"), ("some", "none"), ("all", "mean"))
            patterns += (("all", "sum"), ("none", "mean"))
            for mask, reduction in patterns:
                yield Case(family, kind, mask=mask, reduction=reduction, shape=(2, 3, 32), **v)
        elif family == "shapes":
            for shape in ((64,), (1, 64), (2, 3, 17), (5, 1, 33)):
                yield Case(family, kind, shape=shape, **v)


@lru_cache(maxsize=32)
def _battery(
    kind: str, full: bool, families: tuple[str, ...], select: tuple = ()
) -> tuple[Case, ...]:
    cases: list[Case] = []
    for fam in families:
        if kind in ("divergence", "preset"):
            cases.extend(_plain_cases(fam, kind, full, select))
        else:
            cases.extend(_BUILDERS[fam](kind, full))
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:  # pragma: no cover - a battery construction bug
            raise RuntimeError(f"duplicate case id {c.id}")
        seen.add(c.id)
    return tuple(cases)


def battery(
    kind: str = "loss",
    *,
    full: bool = False,
    families: Iterable[str] | None = None,
    divergences: Iterable[str] | None = None,
    orders: Iterable[str] | None = None,
    preset: str | None = None,
    preset_params: Mapping[str, float] | None = None,
) -> list[Case]:
    """The conformance battery for ``kind``.

    Parameters
    ----------
    kind : {"loss", "mixture", "divergence", "preset"}
        ``"divergence"``: a plain D(p‖q) (order ``pr``) or D(q‖p) (``rp``) over logits, the
        AMiD loss at λ = 0; ``"preset"``: the prior method ``preset`` of
        :mod:`amid_ref.presets`.
    full : bool
        Add the slow cases (realistic vocabularies of 32000–151936 for every α, more orders).
        The default battery already holds two V = 151936 rows.
    families : iterable of str, optional
        Restrict to these families (:data:`FAMILIES`); default all that apply to ``kind``.
    divergences, orders : iterable of str, optional
        (divergence kind) the divergences (default :data:`DIVERGENCE_NAMES`) and directions
        (``pr`` = D(p‖q), ``rp`` = D(q‖p); default both) to build cases for.
    preset, preset_params
        (preset kind) the preset and, optionally, its parameters fixed for every case (the
        ``param_grid`` family, which sweeps them, is then left out).

    Returns
    -------
    list of Case
        Deterministic: the same call always returns the same cases with the same seeds.
    """
    if kind not in _KIND_FAMILIES:
        raise ValueError(f"kind: expected 'loss' or 'mixture', got {kind!r}")
    if families is None:
        fams = _KIND_FAMILIES[kind]
    else:
        fams = tuple(families)
        unknown = [f for f in fams if f not in FAMILIES]
        if unknown:
            raise ValueError(f"families: unknown {unknown}; expected some of {list(FAMILIES)}")
        fams = tuple(f for f in fams if f in _KIND_FAMILIES[kind])
    select: tuple = ()
    if kind == "divergence":
        names = tuple(divergences) if divergences is not None else DIVERGENCE_NAMES
        bad = [n for n in names if n not in DIVERGENCE_NAMES]
        if bad:
            raise ValueError(f"divergences: unknown {bad}; expected some of {DIVERGENCE_NAMES}")
        dirs = tuple(orders) if orders is not None else tuple(_DIRECTIONS)
        dirs = tuple(o for o in dirs if o in _DIRECTIONS)
        select = (names, dirs)
    elif kind == "preset":
        if preset not in presets.PRESETS:
            raise ValueError(f"preset: expected one of {list(presets.PRESETS)}, got {preset!r}")
        fixed = None
        if preset_params:
            fixed = {**PRESET_PARAM_GRIDS[preset][0], **dict(preset_params)}
            fixed = tuple(sorted((k, float(v)) for k, v in fixed.items()))
        select = (preset, fixed)
    return list(_battery(kind, bool(full), fams, select))


def get_case(case_id: str, kind: str | None = None) -> Case:
    """The battery case with identifier ``case_id`` (as printed in a report).

    Searches the full battery of ``kind`` (loss, mixture and divergence if None). A case of
    another battery (a preset's, a user's) is rebuilt by the line
    :meth:`Case.reproducer` prints, which every report shows.

    Examples
    --------
    >>> c = get_case("alpha_grid/alpha=3,lam=0.5,kl,pr,realistic[3, 64]")
    >>> c.alpha, c.lam, c.arrays("float32")[0].shape
    (3.0, 0.5, (3, 64))
    """
    kinds = (kind,) if kind is not None else ("loss", "mixture", "divergence")
    for k in kinds:
        for c in battery(k, full=True):
            if c.id == case_id:
                return c
    raise KeyError(f"case_id: no battery case {case_id!r}")
