r"""The AMiD contract: what every implementation agrees on, and nothing of how it computes.

One record per divergence (:class:`DivergenceSpec`) carries its name, its parameters (default,
domain, check and error message), its formula in LaTeX and in words, its limits, the regions
where it is ``+inf``, the special lines where its evaluation switches form, the parameter sets
the tests, sweeps and proofs use, and the reason for any implementation that does not offer it.
The three implementations register *kernels* against these records by name:

* :mod:`amid_ref._divergences` (float64, log domain),
* :mod:`amid_ref.precise` (mpmath, an independent transcription of the definitions),
* :mod:`gpu._divergences` (torch, chunked).

The records hold no formula that a kernel evaluates: the LaTeX is documentation, and each
implementation writes its own arithmetic. ``tests/test_registry.py`` checks that every record
has a kernel in each implementation (or a stated reason), a zero case, a docs row and a
strategy, and that the three agree on parameter names, defaults and errors.

Also here, because every implementation validates the same way:

* :data:`ORDERS` and :func:`order_arguments` (the ``{"pr": (p, r), ...}`` lookup, once);
* the scalar checks (:func:`check_alpha`, :func:`check_lam`, :func:`check_real`, ...), which
  accept Python and NumPy scalars and single-element torch tensors without importing torch;
* the teacher-form checks (:func:`check_leftover`, :func:`check_vocab_alignment`,
  :func:`check_softcap`, :func:`check_logit_scale`, :func:`check_temperature_applies_to`);
* :class:`Objective`, the frozen, validated ``(α, λ, divergence, order, params, T, detach)``
  plus the teacher's form (leftover policy, vocabulary alignment, logit transforms)
  that flows inside :func:`amid_ref.amid_loss`, :func:`amid_ref.amid_grad`, the presets, the
  analysis studies and :func:`gpu.amid_loss`;
* the α and λ grids (:func:`alpha_grid`, :func:`lambda_grid`) at a quick and a full density.

Examples
--------
>>> from amid_ref._specs import Objective, SPECS
>>> obj = Objective.of(alpha=-5.0, lam=0.1, divergence="js")
>>> obj.params["beta"], obj.first, obj.second
(0.5, 'p', 'r')
>>> [p.name for p in SPECS["ab"].params]
['alpha', 'beta']
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from amid_ref._special import call_generator

__all__ = [
    "DIVERGENCES",
    "IMPLEMENTATIONS",
    "LEFTOVER_POLICIES",
    "ORDERS",
    "REQUIRED",
    "SPECS",
    "TEMPERATURE_TARGETS",
    "VOCAB_ALIGNMENTS",
    "DivergenceSpec",
    "Objective",
    "Param",
    "ParameterError",
    "alpha_grid",
    "check_alpha",
    "check_bool",
    "check_lam",
    "check_leftover",
    "check_logit_scale",
    "check_order",
    "check_real",
    "check_softcap",
    "check_temperature",
    "check_temperature_applies_to",
    "check_vocab_alignment",
    "get_spec",
    "lambda_grid",
    "objective_parameters",
    "order_arguments",
    "resolve_params",
]

#: The implementations that register kernels against the records.
IMPLEMENTATIONS: tuple[str, ...] = ("amid_ref", "precise", "gpu")

# --------------------------------------------------------------------------------------
# argument orders
# --------------------------------------------------------------------------------------

#: Argument orders: the loss is D(first ‖ second), p = teacher, q = student, r = assistant.
ORDERS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"pr": ("p", "r"), "qr": ("q", "r"), "rp": ("r", "p"), "rq": ("r", "q")}
)


def check_order(order: Any) -> tuple[str, str]:
    """The ``(first, second)`` names of an order; unknown orders raise ``ValueError``."""
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(
            f"unknown order {order!r}; expected one of {', '.join(ORDERS)} "
            "(pr: D(p‖r), qr: D(q‖r), rp: D(r‖p), rq: D(r‖q))"
        )
    return ORDERS[order]


def order_arguments(order: str, p, q, r):
    """``(first, second)`` of ``D(first ‖ second)`` for ``order``, picked from p, q, r."""
    first, second = check_order(order)
    by_name = {"p": p, "q": q, "r": r}
    return by_name[first], by_name[second]


# --------------------------------------------------------------------------------------
# scalar checks (shared by amid_ref and gpu; precise converts exactly to mpf instead)
# --------------------------------------------------------------------------------------


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def as_real_scalar(value, name: str, what: str = "a real number") -> float:
    """A real scalar parameter as a Python float: Python and NumPy reals, 0-d NumPy arrays
    of float or int dtype and one-element torch tensors of float or int dtype are
    accepted; bools (a common slip for a flag) and everything else raise ``TypeError``.

    This is the one rule for α, λ, the temperature and the divergence parameters of
    :mod:`amid_ref`, :mod:`amid_ref.precise` and :mod:`gpu`.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be {what}, got the bool {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        return float(value)
    if _is_torch_tensor(value) and value.numel() == 1:
        if not value.is_complex() and str(value.dtype) != "torch.bool":
            return float(value.detach().cpu().reshape(()).double().item())
    raise TypeError(f"{name} must be {what}, got {value!r}")


def check_alpha(alpha: Any) -> float:
    """α: any real number or ±inf; NaN and non-numbers are rejected."""
    alpha = as_real_scalar(alpha, "alpha", "a real number (float, ±inf allowed)")
    if math.isnan(alpha):
        raise ValueError("alpha is NaN; it must be a real number or ±inf")
    return alpha


def check_lam(lam: Any, name: str = "lam") -> float:
    """λ ∈ [0, 1] (the teacher's weight in the assistant)."""
    lam = as_real_scalar(lam, name, "a real number in [0, 1]")
    if math.isnan(lam):
        raise ValueError(f"{name} is NaN; it must lie in [0, 1]")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {lam!r}")
    return lam


def check_real(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A finite real parameter (divergence parameters, temperature)."""
    value = as_real_scalar(value, name)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN")
    if not allow_inf and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_temperature(temperature: Any) -> float:
    """T > 0, finite."""
    temperature = check_real(temperature, "temperature")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return temperature


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# the teacher's form: sparse leftover policy, vocabulary alignment, logit transforms
# (MATH.md "Sparse teachers, vocabulary alignment, logit transforms")
# --------------------------------------------------------------------------------------

#: Leftover policies of a sparse (top-k) teacher: what becomes of the mass ε outside the k ids.
#: ``bucket``: one extra category ★ (teacher ε, student Σ_{j∉S} q_j); ``renormalize``: the
#: teacher restricted to S and renormalized; ``uniform``: ε spread evenly over the V − k ids.
LEFTOVER_POLICIES: tuple[str, ...] = ("bucket", "renormalize", "uniform")

#: Vocabulary alignments of a dense teacher whose V differs from the student's: refuse, pad
#: the shorter side with −inf logits, or cut the longer side to the shared ids (renormalized).
VOCAB_ALIGNMENTS: tuple[str, ...] = ("error", "pad", "truncate")

#: What the temperature divides: both logits, or the student's only (a sparse teacher's
#: log-probabilities are used as given).
TEMPERATURE_TARGETS: tuple[str, ...] = ("both", "student")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def check_leftover(leftover: Any) -> str:
    """The leftover policy of a sparse teacher, one of :data:`LEFTOVER_POLICIES`."""
    return _check_choice(leftover, "leftover", LEFTOVER_POLICIES)


def check_vocab_alignment(vocab_alignment: Any) -> str:
    """The vocabulary alignment, one of :data:`VOCAB_ALIGNMENTS`."""
    return _check_choice(vocab_alignment, "vocab_alignment", VOCAB_ALIGNMENTS)


def check_temperature_applies_to(target: Any) -> str:
    """What the temperature divides, one of :data:`TEMPERATURE_TARGETS`."""
    return _check_choice(target, "temperature_applies_to", TEMPERATURE_TARGETS)


def _positive_or_none(value: Any, name: str, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    x = as_real_scalar(value, name, "a real number > 0" + (" or None" if allow_none else ""))
    if math.isnan(x) or not 0.0 < x < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return x


def _pair(value: Any, name: str, *, allow_none: bool) -> tuple[Any, Any]:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(
                f"{name} must be one value or a pair (student, teacher), got {len(value)} values"
            )
        return (
            _positive_or_none(value[0], f"{name}[0] (student)", allow_none=allow_none),
            _positive_or_none(value[1], f"{name}[1] (teacher)", allow_none=allow_none),
        )
    one = _positive_or_none(value, name, allow_none=allow_none)
    return one, one


def check_softcap(softcap: Any) -> tuple[float | None, float | None]:
    r"""Softcaps :math:`z \mapsto c\tanh(z/c)` as ``(student_cap, teacher_cap)``.

    ``None`` (no cap), one cap c > 0 for both, or a pair whose entries are caps or ``None``.
    """
    if softcap is None:
        return None, None
    return _pair(softcap, "softcap", allow_none=True)


def check_logit_scale(logit_scale: Any) -> tuple[float, float]:
    r"""Logit scales :math:`z \mapsto \kappa z` as ``(student_scale, teacher_scale)`` floats.

    ``None`` (1.0, no scale), one κ > 0 for both, or a pair of scales (``None`` in a pair is 1).
    """
    if logit_scale is None:
        return 1.0, 1.0
    s, t = _pair(logit_scale, "logit_scale", allow_none=True)
    return (1.0 if s is None else s), (1.0 if t is None else t)


# --------------------------------------------------------------------------------------
# divergence records
# --------------------------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a parameter that has none.
REQUIRED: Any = _Required()


class ParameterError(ValueError, TypeError):
    """A missing or unknown divergence parameter.

    Both a ``ValueError`` (the float packages' historical type) and a ``TypeError`` (what
    Python raises for a wrong keyword, the oracle's historical type), so every implementation
    raises the same error and callers written against either keep working.
    """


@dataclass(frozen=True)
class Param:
    """One divergence parameter: its name, default, domain and the message when outside it.

    ``kind`` is ``"real"`` (a real number, converted by the implementation: ``float`` in the
    float packages, an exact ``mpf`` in the oracle), ``"callable"`` or ``"optional_callable"``.
    ``inside`` is a predicate written with comparisons only, so that it holds for floats and
    for ``mpf`` alike; ``error`` is formatted with ``value``.
    """

    name: str
    default: Any = REQUIRED
    kind: str = "real"
    label: str = ""
    domain: str = r"\mathbb{R}"
    inside: Callable[[Any], bool] | None = None
    allow_inf: bool = False
    error: str = ""
    meaning: str = ""
    oracle_inside: Callable[[Any], bool] | None = None
    oracle_error: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(
        self, value: Any, real: Callable[..., Any] = check_real, *, oracle: bool = False
    ) -> Any:
        """The checked value: ``real(value, label, allow_inf=...)`` then the domain.

        With ``oracle`` the domain is :attr:`oracle_inside` where one is given: a closed
        form that exists in exact arithmetic at a point the float packages refuse (the
        oracle evaluates it; the float packages' domain stays :attr:`inside`).
        """
        label = self.label or self.name
        if self.kind == "callable":
            if not callable(value):
                raise TypeError(self.error or f"{label} must be callable, got {value!r}")
            return value
        if self.kind == "optional_callable":
            if value is not None and not callable(value):
                raise TypeError(self.error or f"{label} must be callable or None, got {value!r}")
            return value
        x = real(value, label, allow_inf=self.allow_inf)
        if oracle and self.oracle_inside is not None:
            if not self.oracle_inside(x):
                raise ValueError(self.oracle_error.format(value=value))
        elif self.inside is not None and not self.inside(x):
            raise ValueError(self.error.format(value=value))
        return x


@dataclass(frozen=True)
class DivergenceSpec:
    r"""The contract of one divergence (no numerics).

    Attributes
    ----------
    name : str
        The name users pass (``divergence="kl"``).
    title : str
        Its name in words.
    formula : str
        The definition in LaTeX (documentation only; no kernel evaluates it).
    words : str
        The definition in words.
    params : tuple of Param
        Its parameters, in signature order.
    limits : tuple of (str, str)
        ``(statement in LaTeX, claim id)`` of each limit the family reaches.
    infinite : str
        Where the divergence is ``+inf``.
    special_lines : tuple of str
        Parameter values where the evaluation switches to a closed form or a series.
    cases : mapping of str to tuple of dict
        Parameter sets by use: ``"grid"`` (one set: the loss, gradient and gpu grids),
        ``"accuracy"`` (at and near the limits: divergence-level accuracy tests),
        ``"zero"`` (the proofs' D(a‖a) = 0 check), ``"battery"`` (the conformance grid),
        ``"sweep"`` (the full validation sweep), ``"quick"`` and ``"quick_grad"`` (the quick
        sweep's losses and gradients), ``"optimality"`` (the Theorem 3.4 minimizations; not
        TV, whose kink at the minimum L-BFGS cannot handle).
    not_offered : mapping of str to str
        Implementation name -> why it does not offer this divergence.
    no_cases : str
        Why the record has no parameter sets (a user callable), else empty.
    float_check : callable, optional
        The float packages' last step on the checked parameters (e.g. putting a parameter
        within 1e-200 of a special line on it); the oracle evaluates parameters exactly.
    claims : tuple of str
        The proofs_check claims about this divergence.
    on_normalized : bool
        Defined on the inputs normalized along the reduced axis (Rényi): an implementation
        whose kernels expect distributions normalizes first.
    """

    name: str
    title: str
    formula: str
    words: str
    params: tuple[Param, ...] = ()
    limits: tuple[tuple[str, str], ...] = ()
    infinite: str = ""
    special_lines: tuple[str, ...] = ()
    cases: Mapping[str, tuple[dict, ...]] = field(default_factory=dict)
    not_offered: Mapping[str, str] = field(default_factory=dict)
    no_cases: str = ""
    float_check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    claims: tuple[str, ...] = ()
    on_normalized: bool = False

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default (:data:`REQUIRED` when there is none)."""
        return {p.name: p.default for p in self.params}

    def offered_by(self, implementation: str) -> bool:
        return implementation not in self.not_offered

    @property
    def typical_params(self) -> dict[str, Any]:
        """One representative parameter set: the quick set, else the defaults (when every
        parameter has one), else the first battery set."""
        if self.cases_for("quick"):
            return self.cases_for("quick")[0]
        if all(v is not REQUIRED for v in self.defaults.values()):
            return dict(self.defaults)
        return self.cases_for("battery")[0]

    def cases_for(self, use: str) -> tuple[dict, ...]:
        """The parameter sets for ``use`` (copies, so callers may not alter the record)."""
        return tuple(dict(c) for c in self.cases.get(use, ()))


def resolve_params(
    spec: DivergenceSpec,
    given: Mapping[str, Any] | None,
    *,
    real: Callable[..., Any] = check_real,
    float_path: bool = True,
) -> dict[str, Any]:
    """Check ``given`` against the record: known names, required ones present, domains.

    ``real`` converts a real parameter (``float`` by default; the oracle passes its exact
    ``mpf`` conversion and ``float_path=False``, which skips :attr:`DivergenceSpec.float_check`
    and uses :attr:`Param.oracle_inside` where a parameter has one).
    Missing and unknown names raise :class:`ParameterError`.
    """
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise TypeError(f"div_params must be a mapping of parameter names, got {given!r}")
    names = spec.param_names
    unknown = sorted(set(given) - set(names))
    if unknown:
        allowed = ", ".join(names) or "none"
        raise ParameterError(
            f"unknown parameter(s) {unknown} for divergence {spec.name!r} (unexpected; "
            f"allowed: {allowed})"
        )
    missing = [p.name for p in spec.params if p.required and given.get(p.name) is None]
    if missing:
        raise ParameterError(
            f"divergence {spec.name!r} needs parameter(s) {missing} (it requires the "
            f"parameter {missing[0]!r})"
        )
    out = {
        p.name: p.check(given.get(p.name, p.default), real, oracle=not float_path)
        for p in spec.params
    }
    if float_path and spec.float_check is not None:
        out = spec.float_check(out)
    return out


# Parameters closer to a special line than this are put on it: the divergence moves by
# O(|a_|·δ³) there, below float64 resolution by a factor 1e-150 even for δ = 2e4, while
# products such as a_·b_ or (a_ δ)² would underflow and lose every digit.
_AB_SNAP = 1e-200


def _ab_float_check(params: dict[str, Any]) -> dict[str, Any]:
    a_, b_ = params["alpha"], params["beta"]
    return {"alpha": 0.0 if abs(a_) < _AB_SNAP else a_, "beta": 0.0 if abs(b_) < _AB_SNAP else b_}


def _f_float_check(params: dict[str, Any]) -> dict[str, Any]:
    one = float(call_generator(params["f"], np.array([1.0]), "f")[0])
    if not abs(one) <= 1e-12:
        raise ValueError(f"an f-divergence generator must satisfy f(1) = 0, got f(1) = {one!r}")
    return params


_F_REASON = (
    "an arbitrary Python generator f has no batched torch form (it would run element by "
    "element on the host)"
)

_SPEC_LIST: tuple[DivergenceSpec, ...] = (
    DivergenceSpec(
        "kl",
        "Kullback–Leibler divergence",
        r"\mathrm{KL}(a\|b) = \sum_x a \log(a/b)",
        'Kullback–Leibler divergence KL(a‖b); "reverse KL" is an argument order.',
        infinite="a(x) > 0 = b(x) for some x",
        cases={
            "grid": ({},),
            "accuracy": ({},),
            "zero": ({},),
            "battery": ({},),
            "sweep": ({},),
            "optimality": ({},),
            "quick": ({},),
            "quick_grad": ({},),
        },
        claims=("divergence.zero_iff_equal",),
    ),
    DivergenceSpec(
        "js",
        "generalized Jensen–Shannon divergence",
        r"\mathrm{JSD}_\beta = \beta\,\mathrm{KL}(a\|m) + (1-\beta)\,\mathrm{KL}(b\|m),"
        r"\ m = \beta a + (1-\beta) b",
        "Generalized Jensen–Shannon divergence (GKD).",
        params=(
            Param(
                "beta",
                0.5,
                domain="[0, 1]",
                inside=lambda x: 0 <= x <= 1,
                error="js parameter beta must lie in [0, 1], got {value!r}",
                meaning="weight of a in the mixture m",
            ),
        ),
        limits=((r"\beta \in \{0, 1\}:\ 0", ""),),
        infinite="never (m > 0 wherever a or b is)",
        special_lines=(r"\beta \in \{0, 1\}",),
        cases={
            "grid": ({"beta": 0.3},),
            "accuracy": ({"beta": 0.5}, {"beta": 1e-12}, {"beta": 0.9}),
            "zero": ({"beta": 0.1}, {"beta": 0.5}, {"beta": 0.9}),
            "battery": ({"beta": 0.5}, {"beta": 0.1}, {"beta": 0.9}),
            "sweep": ({"beta": 0.5}, {"beta": 0.1}),
            "optimality": ({"beta": 0.5},),
            "quick": ({"beta": 0.5},),
            "quick_grad": ({"beta": 0.5},),
        },
        claims=("divergence.zero_iff_equal",),
    ),
    DivergenceSpec(
        "tv",
        "total variation distance",
        r"\tfrac12 \sum_x |a - b|",
        "Total variation distance.",
        infinite="never",
        cases={
            "grid": ({},),
            "accuracy": ({},),
            "zero": ({},),
            "battery": ({},),
            "sweep": ({},),
        },
        claims=("divergence.zero_iff_equal",),
    ),
    DivergenceSpec(
        "hellinger",
        "squared Hellinger distance",
        r"\tfrac12 \sum_x (\sqrt a - \sqrt b)^2",
        "Squared Hellinger distance.",
        infinite="never",
        cases={
            "grid": ({},),
            "accuracy": ({},),
            "zero": ({},),
            "battery": ({},),
            "sweep": ({},),
            "optimality": ({},),
        },
        claims=("divergence.zero_iff_equal",),
    ),
    DivergenceSpec(
        "chi2",
        "Pearson χ² divergence",
        r"\sum_x (a - b)^2 / b",
        "Pearson χ² divergence.",
        infinite="a(x) > 0 = b(x) for some x",
        cases={
            "grid": ({},),
            "accuracy": ({},),
            "zero": ({},),
            "battery": ({},),
            "sweep": ({},),
            "optimality": ({},),
            "quick": ({},),
        },
        claims=("divergence.zero_iff_equal",),
    ),
    DivergenceSpec(
        "amari",
        "Amari α-divergence",
        r"\frac{4}{1-\gamma^2}\sum_x \big[\tfrac{1-\gamma}{2} a + \tfrac{1+\gamma}{2} b"
        r" - a^{\frac{1-\gamma}{2}} b^{\frac{1+\gamma}{2}}\big]",
        "Amari α-divergence with its own parameter γ (param 'alpha'); γ→−1 KL(a‖b), γ→1 KL(b‖a).",
        params=(
            Param(
                "alpha",
                label="alpha (Amari γ)",
                meaning="γ; −1 is KL(a‖b), +1 is KL(b‖a)",
            ),
        ),
        limits=(
            (r"\gamma \to -1:\ \mathrm{KL}(a\|b)", "divergence.amari.limit_minus1"),
            (r"\gamma \to 1:\ \mathrm{KL}(b\|a)", "divergence.amari.limit_plus1"),
        ),
        infinite="a(x) > 0 = b(x) with γ ≤ −1, or b(x) > 0 = a(x) with γ ≥ 1",
        special_lines=(r"\gamma = \pm 1",),
        cases={
            "grid": ({"alpha": 0.5},),
            "accuracy": tuple(
                {"alpha": g}
                for g in (
                    *(-3.0, -1.0 - 1e-9, -1.0, -1.0 + 1e-9, -0.5, 0.0, 0.5),
                    *(1.0 - 1e-9, 1.0, 1.0 + 1e-9, 3.0),
                )
            ),
            "zero": tuple({"alpha": g} for g in (-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0)),
            "battery": tuple(
                {"alpha": g}
                for g in (-1.0, -1.0 + 1e-6, -0.5, 0.0, 0.5, 1.0 - 1e-6, 1.0, 3.0, -3.0)
            ),
            "sweep": tuple({"alpha": g} for g in (0.5, -1.0 + 1e-9, 1.0 - 1e-9, 3.0)),
            "optimality": ({"alpha": 0.5},),
            "quick": ({"alpha": 0.5},),
            "quick_grad": ({"alpha": 0.5},),
        },
        claims=("divergence.amari.limit_minus1", "divergence.amari.limit_plus1"),
    ),
    DivergenceSpec(
        "renyi",
        "Rényi divergence",
        r"\frac{1}{\rho - 1}\log \sum_x a^\rho b^{1-\rho}",
        "Rényi divergence of order ρ > 0 (param 'order') of the normalized inputs.",
        params=(
            Param(
                "order",
                label="order (Rényi ρ)",
                domain=r"(0, \infty)",
                inside=lambda x: x > 0,
                error="renyi parameter order must be > 0, got {value!r}",
                meaning="ρ; 1 is KL",
                # ρ = 0 is −log Σ_{a > 0} b, a limit the oracle evaluates exactly.
                oracle_inside=lambda x: x >= 0,
                oracle_error="renyi parameter order must be >= 0 for the oracle, got {value!r}",
            ),
        ),
        limits=((r"\rho \to 1:\ \mathrm{KL}(a\|b)", "divergence.renyi.limit_1"),),
        infinite="a(x) > 0 = b(x) with ρ ≥ 1; disjoint supports",
        special_lines=(r"\rho = 1",),
        cases={
            "grid": ({"order": 2.0},),
            "accuracy": tuple({"order": r} for r in (0.5, 1.0 - 1e-9, 1.0, 1.0 + 1e-9, 2.0, 5.0)),
            "zero": tuple({"order": r} for r in (0.1, 0.5, 1.0, 2.0, 10.0)),
            "battery": tuple({"order": r} for r in (0.5, 1.0 - 1e-6, 1.0, 2.0)),
            "sweep": tuple({"order": r} for r in (0.5, 1.0 + 1e-9, 2.0)),
            "optimality": ({"order": 2.0},),
            "quick": ({"order": 0.5},),
        },
        claims=("divergence.renyi.limit_1",),
        on_normalized=True,
    ),
    DivergenceSpec(
        "ab",
        "AB-divergence (Cichocki, Cruces & Amari 2011)",
        r"-\frac{1}{a_\star b_\star}\sum_x \big(a^{a_\star} b^{b_\star}"
        r" - \frac{a_\star}{a_\star+b_\star} a^{a_\star+b_\star}"
        r" - \frac{b_\star}{a_\star+b_\star} b^{a_\star+b_\star}\big)",
        "AB-divergence (Cichocki, Cruces & Amari 2011), params 'alpha'=a_*, 'beta'=b_*.",
        params=(
            Param("alpha", label="alpha (AB-divergence a_)", meaning="a_*"),
            Param("beta", label="beta (AB-divergence b_)", meaning="b_*"),
        ),
        limits=(
            (r"(1, 0):\ \mathrm{KL}(a\|b)", "divergence.ab.kl_forward"),
            (r"(0, 1):\ \mathrm{KL}(b\|a)", "divergence.ab.kl_reverse"),
            (r"a_\star = 0", "divergence.ab.limit_a0"),
            (r"b_\star = 0", "divergence.ab.limit_b0"),
            (r"a_\star + b_\star = 0", "divergence.ab.limit_sum0"),
        ),
        infinite="a zero of one argument where the other is positive, unless the exponents "
        "make the term finite (a_* > 0 and a_* + b_* > 0 for a zero of a)",
        special_lines=(
            r"a_\star = 0",
            r"b_\star = 0",
            r"a_\star + b_\star = 0",
            r"(a_\star, b_\star) = (0, 0)",
        ),
        cases={
            "grid": ({"alpha": 0.2, "beta": 0.7},),
            "accuracy": tuple(
                {"alpha": a, "beta": b}
                for a, b in (
                    (1.0, 0.0),
                    (0.0, 1.0),
                    (0.2, 0.7),
                    (1e-9, 0.7),
                    (0.7, 1e-9),
                    (0.0, 0.7),
                    (0.7, 0.0),
                    (0.5, -0.5),
                    (0.5, -0.5 + 1e-9),
                    (0.0, 0.0),
                    (1e-9, -1e-9 / 3),
                    (-0.3, 0.8),
                    (1.5, 0.5),
                )
            ),
            "zero": tuple(
                {"alpha": a, "beta": b}
                for a, b in (
                    (0.2, 0.7),
                    (1.0, 0.0),
                    (0.0, 1.0),
                    (0.5, -0.5),
                    (0.0, 0.0),
                    (-0.3, 0.8),
                    (2.0, -0.5),
                    (-1.0, -1.0),
                )
            ),
            "battery": tuple(
                {"alpha": a, "beta": b}
                for a, b in (
                    (0.2, 0.7),
                    (1.0, 0.0),
                    (0.0, 1.0),
                    (0.0, 0.7),
                    (0.2, 0.0),
                    (0.5, -0.5),
                    (0.0, 0.0),
                    (1e-7, 0.7),
                    (0.2, 1e-7),
                    (0.5, -0.5 + 1e-7),
                )
            ),
            "sweep": tuple(
                {"alpha": a, "beta": b}
                for a, b in ((0.2, 0.7), (1.0, 0.0), (1e-9, 0.7), (0.5, -0.5))
            ),
            "optimality": ({"alpha": 0.2, "beta": 0.7},),
            "quick": ({"alpha": 0.2, "beta": 0.7},),
            "quick_grad": ({"alpha": 0.2, "beta": 0.7},),
        },
        float_check=_ab_float_check,
        claims=(
            "divergence.ab.kl_forward",
            "divergence.ab.kl_reverse",
            "divergence.ab.limit_a0",
            "divergence.ab.limit_b0",
            "divergence.ab.limit_sum0",
        ),
    ),
    DivergenceSpec(
        "f",
        "f-divergence",
        r"\sum_x b\, f(a/b),\ f \text{ convex},\ f(1) = 0",
        "Generic f-divergence with a user generator f (f(1)=0).",
        params=(
            Param(
                "f",
                kind="callable",
                error="divergence 'f' needs a callable generator f (vectorized over arrays)",
                meaning="the generator, vectorized (float path) or on mpf scalars (oracle)",
            ),
            Param(
                "f_prime",
                None,
                kind="optional_callable",
                error="f_prime must be callable (the derivative of f)",
                meaning="f', needed by the gradient",
            ),
            Param(
                "f_inf_slope",
                math.inf,
                allow_inf=True,
                meaning="lim f(u)/u as u → ∞ (the term where b = 0 < a)",
            ),
        ),
        infinite="b(x) = 0 < a(x) with f_inf_slope = +inf",
        not_offered={"gpu": _F_REASON},
        no_cases=(
            "a user generator has a float form and a separate mpmath form, so its cases live "
            "with the tests that write both (tests/test_reference_accuracy.py, "
            "tests/test_precise.py, proofs_check.claims_divergences)"
        ),
        float_check=_f_float_check,
    ),
    DivergenceSpec(
        "jeffreys",
        "Jeffreys divergence (symmetric KL)",
        r"J(a\|b) = \sum_x (a - b)\log(a/b) = \mathrm{KL}(a\|b) + \mathrm{KL}(b\|a)",
        "Jeffreys divergence KL(a‖b) + KL(b‖a), symmetric in its arguments.",
        infinite="a(x) > 0 = b(x) or b(x) > 0 = a(x) for some x (different supports)",
        cases={
            "grid": ({},),
            "accuracy": ({},),
            "zero": ({},),
            "battery": ({},),
            "sweep": ({},),
            "optimality": ({},),
        },
        claims=("divergence.jeffreys.symmetric_kl",),
    ),
    DivergenceSpec(
        "skew_kl",
        "skew KL divergence (DistiLLM)",
        r"\mathrm{KL}_s(a\|b) = \mathrm{KL}\big(a \,\|\, s a + (1-s) b\big)",
        "Skew KL: KL from a to the mixture s·a + (1−s)·b, s ∈ [0, 1) (param 'skew'); "
        "s = 0 is KL(a‖b).",
        params=(
            Param(
                "skew",
                0.1,
                domain="[0, 1)",
                inside=lambda x: 0 <= x < 1,
                error="skew_kl parameter skew must lie in [0, 1), got {value!r}",
                meaning="s, the weight of a in the second argument",
            ),
        ),
        limits=((r"s = 0:\ \mathrm{KL}(a\|b)", "divergence.skew_kl.kl_at_zero"),),
        infinite="only at s = 0 (KL): a(x) > 0 = b(x); for s > 0 it is at most log(1/s)",
        special_lines=("s = 0",),
        cases={
            "grid": ({"skew": 0.1},),
            "accuracy": tuple({"skew": s} for s in (0.0, 1e-12, 0.1, 0.5, 0.9, 1.0 - 1e-9)),
            "zero": tuple({"skew": s} for s in (0.0, 0.1, 0.5, 0.9)),
            "battery": tuple({"skew": s} for s in (0.0, 0.1, 0.9)),
            "sweep": ({"skew": 0.1}, {"skew": 0.9}),
            "optimality": ({"skew": 0.1},),
        },
        claims=("divergence.skew_kl.kl_at_zero", "divergence.skew_kl.bounded"),
    ),
)

#: Divergence name -> its record.
SPECS: Mapping[str, DivergenceSpec] = MappingProxyType({s.name: s for s in _SPEC_LIST})

#: Names of the divergences of the contract, in the order of the records.
DIVERGENCES: tuple[str, ...] = tuple(SPECS)


def get_spec(name: Any, implementation: str | None = None) -> DivergenceSpec:
    """The record of ``name``; ``ValueError`` if unknown or not offered by ``implementation``."""
    if not isinstance(name, str):
        raise TypeError(f"divergence name must be a string, got {name!r}")
    spec = SPECS.get(name)
    # the names this implementation takes (gpu has no generic "f")
    known = ", ".join(
        n for n, s in SPECS.items() if implementation is None or s.offered_by(implementation)
    )
    if spec is None:
        raise ValueError(f"unknown divergence {name!r}; known: {known}")
    if implementation is not None and not spec.offered_by(implementation):
        raise ValueError(
            f"divergence {name!r} is not offered by the {implementation} package: "
            f"{spec.not_offered[implementation]}; known: {known}"
        )
    return spec


# --------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """The AMiD objective ``D(first ‖ second)`` over p, q and r = r^(α,λ)(p, q), validated.

    Build it with :meth:`of` (which checks every field once); the public functions keep
    their keyword arguments and build one internally.

    Besides ``(α, λ, divergence, order, params, T, detach)`` it carries the teacher's form
    (MATH.md "Sparse teachers, vocabulary alignment, logit transforms"): ``leftover`` (one of
    :data:`LEFTOVER_POLICIES`, used with a sparse teacher), ``vocab_alignment`` (one of
    :data:`VOCAB_ALIGNMENTS`), ``softcap`` ``(c_s | None, c_t | None)``, ``logit_scale``
    ``(κ_s, κ_t)`` (1.0 = none) and ``temperature_applies_to`` (``"both"`` or
    ``"student"``). The logit transforms apply in the order scale, cap, temperature.
    """

    alpha: float
    lam: float
    divergence: str
    order: str
    params: Mapping[str, Any]
    temperature: float = 1.0
    detach_assistant: bool = False
    leftover: str = "bucket"
    vocab_alignment: str = "error"
    softcap: tuple[float | None, float | None] = (None, None)
    logit_scale: tuple[float, float] = (1.0, 1.0)
    temperature_applies_to: str = "both"

    @classmethod
    def of(
        cls,
        alpha: Any,
        lam: Any,
        divergence: Any = "kl",
        order: Any = "pr",
        div_params: Mapping[str, Any] | None = None,
        temperature: Any = 1.0,
        detach_assistant: Any = False,
        *,
        leftover: Any = "bucket",
        vocab_alignment: Any = "error",
        softcap: Any = None,
        logit_scale: Any = None,
        temperature_applies_to: Any = "both",
        implementation: str | None = None,
    ) -> Objective:
        """Validate the arguments of ``amid_loss``/``amid_grad`` (float path) into an Objective.

        Every error names the parameter. ``softcap`` and ``logit_scale`` are normalized to
        pairs (:func:`check_softcap`, :func:`check_logit_scale`).
        """
        alpha = check_alpha(alpha)
        lam = check_lam(lam)
        spec = get_spec(divergence, implementation)
        params = resolve_params(spec, div_params)
        check_order(order)
        temperature = check_temperature(temperature)
        detach_assistant = check_bool(detach_assistant, "detach_assistant")
        return cls(
            alpha,
            lam,
            divergence,
            order,
            MappingProxyType(params),
            temperature,
            detach_assistant,
            check_leftover(leftover),
            check_vocab_alignment(vocab_alignment),
            check_softcap(softcap),
            check_logit_scale(logit_scale),
            check_temperature_applies_to(temperature_applies_to),
        )

    @property
    def spec(self) -> DivergenceSpec:
        return SPECS[self.divergence]

    @property
    def first(self) -> str:
        return ORDERS[self.order][0]

    @property
    def second(self) -> str:
        return ORDERS[self.order][1]

    @property
    def transforms_logits(self) -> bool:
        """Whether a softcap or a logit scale is set (on either side)."""
        return self.softcap != (None, None) or self.logit_scale != (1.0, 1.0)

    def check_sparse_temperature(self) -> None:
        """Refuse a temperature ≠ 1 applied to a sparse teacher's log-probabilities (which
        are used as given): the caller must say ``temperature_applies_to="student"``."""
        if self.temperature != 1.0 and self.temperature_applies_to == "both":
            raise ValueError(
                f"temperature={self.temperature} with teacher_topk: a sparse teacher's "
                "log-probabilities are used as given, so the temperature can divide the "
                "student's logits only; pass temperature_applies_to='student' (or give "
                "tempered log-probabilities)"
            )

    def inf_loss_message(self, where: str, dtype: str = "float64") -> str:
        """The error for a ``+inf`` loss where a gradient is asked for (the same words in
        every implementation): what makes this objective's loss infinite, with the compute
        ``dtype`` (an overflow of float32 is named as such)."""
        cause = (
            f"divergence={self.divergence!r} is infinite where one of its arguments is 0 and "
            "the other is positive (a token masked with a -inf logit on one side only"
        )
        if self.alpha >= 1.0 and "r" in self.order:
            cause += f"; with alpha={self.alpha} ≥ 1 the assistant r is 0 wherever p or q is"
        cause += ")"
        if dtype != "float64":
            cause += (
                f", or the loss exceeds the {dtype} range (pass float64 logits to compute it "
                "in float64)"
            )
        return f"the loss is +inf on {where}: {cause}; its gradient is undefined"

    def arguments(self, p, q, r):
        """``(first, second)`` picked from p, q, r."""
        return order_arguments(self.order, p, q, r)

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`of` that rebuild this objective, in its order:
        ``Objective.of(**objective.keywords()) == objective``. Each field is under the name of
        its parameter (``params`` as ``div_params``, a dict); ``softcap`` and
        ``logit_scale`` are the normalized pairs."""
        return {
            name: dict(self.params) if name == "div_params" else getattr(self, name)
            for name in objective_parameters()
        }

    def __reduce__(self):
        # Picklable (worker processes): the read-only params travel as a plain dict.
        fields = (self.alpha, self.lam, self.divergence, self.order, dict(self.params))
        form = (
            self.leftover,
            self.vocab_alignment,
            self.softcap,
            self.logit_scale,
            self.temperature_applies_to,
        )
        return (_objective, (*fields, self.temperature, self.detach_assistant, *form))


@functools.cache
def objective_parameters() -> tuple[str, ...]:
    """The names of :meth:`Objective.of`'s parameters, in its order (``implementation``,
    which selects the checks rather than a field, apart): what an entry point that takes an
    objective by keywords lists."""
    names = inspect.signature(Objective.of).parameters
    return tuple(name for name in names if name != "implementation")


def _objective(alpha, lam, divergence, order, params, temperature, detach_assistant, *form):
    return Objective(
        alpha,
        lam,
        divergence,
        order,
        MappingProxyType(params),
        temperature,
        detach_assistant,
        *form,
    )


# --------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------

_INF = math.inf

_ALPHA_GRIDS: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {
        # ±inf, |α| = 1e6, α approaching ±1 from both sides (β within 5e-13 of 0 at
        # 1 − 1e-12) and α > 1: the float64 reference's numerical contract.
        "contract": (
            -_INF, -1e6, -5.0, -3.0, -1.0 - 1e-9, -1.0, 0.0, 1.0 - 1e-12, 1.0 - 1e-7, 1.0,
            1.0 + 1e-7, 3.0, 5.0, 1e6, _INF,
        ),
        # The validation sweep: ±inf, huge |α|, the special values, and points approaching
        # ±1 from both sides (1e-3 down to 1e-12).
        "full": (
            -_INF, -1e6, -50.0, -5.0, -3.0,
            -1.0 - 1e-3, -1.0 - 1e-8, -1.0, -1.0 + 1e-8, -1.0 + 1e-3,
            -0.5, 0.0, 0.5,
            1.0 - 1e-3, 1.0 - 1e-8, 1.0 - 1e-12, 1.0, 1.0 + 1e-12, 1.0 + 1e-8, 1.0 + 1e-3,
            2.0, 3.0, 5.0, 50.0, 1e6, _INF,
        ),
        "quick": (
            -_INF, -50.0, -3.0, -1.0 - 1e-8, -1.0, -1.0 + 1e-8, 0.0,
            1.0 - 1e-10, 1.0, 1.0 + 1e-10, 3.0, 50.0, _INF,
        ),
    }
)  # fmt: skip

#: Interior λ values by density; the endpoints and 1e-15 from them are always included.
_LAMBDA_INTERIOR: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {"quick": (0.5,), "full": (0.1, 0.5, 0.9)}
)
_LAMBDA_EDGE_OFFSET = 1e-15


def alpha_grid(density: str = "full") -> tuple[float, ...]:
    """The α grid at ``density`` ``"quick"``, ``"full"`` (the validation sweep) or
    ``"contract"`` (the float64 reference's accuracy contract)."""
    try:
        return _ALPHA_GRIDS[density]
    except KeyError:
        raise ValueError(
            f"unknown density {density!r}; expected one of {', '.join(_ALPHA_GRIDS)}"
        ) from None


def lambda_grid(density: str = "full") -> tuple[float, ...]:
    """The λ grid: 0 and 1, 1e-15 from them (where 1 − λ and log λ lose digits), and the
    interior (0.5 at ``"quick"``; 0.1, 0.5, 0.9 at ``"full"``), increasing."""
    if density == "contract":
        density = "full"
    if density not in _LAMBDA_INTERIOR:
        raise ValueError(f"unknown density {density!r}; expected 'quick' or 'full'")
    edges = (0.0, _LAMBDA_EDGE_OFFSET, 1.0 - _LAMBDA_EDGE_OFFSET, 1.0)
    return tuple(sorted({*edges, *_LAMBDA_INTERIOR[density]}))
