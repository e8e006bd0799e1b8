"""Battery cases: what one conformance check evaluates, and the families of the battery."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from amid_ref import strategies as _S
from amid_ref._specs import SPECS

__all__ = [
    "DIVERGENCE_NAMES",
    "DTYPES",
    "FAMILIES",
    "IGNORE_INDEX",
    "KINDS",
    "PRESET_PARAM_GRIDS",
    "Case",
    "battery",
    "canonical_dtype",
    "get_case",
    "round_to_dtype",
]

#: Label value marking an ignored position (the PyTorch convention).
IGNORE_INDEX = -100

#: Canonical dtype names and their aliases.
DTYPES: dict[str, str] = {
    "float64": "float64",
    "fp64": "float64",
    "double": "float64",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

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
    "distillm_skl": tuple({"lam": x} for x in (0.1, 0.0, 1e-6, 0.01, 0.5, 0.9, 1.0)),
    "distillm_srkl": tuple({"lam": x} for x in (0.9, 0.0, 0.1, 0.5, 0.99, 1 - 1e-6, 1.0)),
    "gkd_jsd": tuple({"beta": x} for x in (0.5, *JS_BETA_GRID[:4], *JS_BETA_GRID[5:])),
    "taid": tuple({"t": x} for x in (0.5, 0.0, 1e-6, 0.1, 0.9, 1 - 1e-6, 1.0)),
    "abkd": tuple({"alpha": a, "beta": b} for a, b in _S.AB_PARAMS),
}

_DIRECTIONS = {"pr": "D(p||q)", "rp": "D(q||p)"}

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
    "divergence": (
        "param_grid",
        "extreme_logits",
        "one_hot",
        "vocab",
        "low_precision",
        "temperature",
        "masking",
        "shapes",
    ),
    "preset": (
        "param_grid",
        "extreme_logits",
        "one_hot",
        "vocab",
        "low_precision",
        "temperature",
        "masking",
        "shapes",
    ),
}

#: Kinds of case: an AMiD loss over logits, an α-mixture over log-probabilities, a plain
#: divergence D(p‖q) or D(q‖p) over logits (no mixture), or a preset (a prior method).
KINDS: tuple[str, ...] = tuple(_KIND_FAMILIES)


def canonical_dtype(dtype: Any) -> str:
    """Canonical name (``float64``, ``float32``, ``bfloat16``, ``float16``) of a dtype spec.

    Accepts the aliases of :data:`DTYPES`, numpy dtypes and torch dtypes (by name).
    """
    name = str(getattr(dtype, "name", None) or dtype)
    name = name.replace("torch.", "")
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(
            f"dtype: unsupported dtype {dtype!r}; expected one of {sorted(set(DTYPES))}"
        ) from None


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` and return them as float64 (exactly representable).

    bfloat16 rounds to nearest even through float32 (as ``torch.Tensor.to`` does); float16
    overflows to ±inf beyond 65504.
    """
    dtype = canonical_dtype(dtype)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        if dtype == "float64":
            return x.copy()
        if dtype == "float32":
            return x.astype(np.float32).astype(np.float64)
        if dtype == "float16":
            return x.astype(np.float16).astype(np.float64)
        return np.reshape(_S._round_bf16(np.atleast_1d(x)), x.shape)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    z = x - top
    with np.errstate(divide="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _fmt(x: float) -> str:
    """Short, round-trip text of a parameter value (``3``, ``0.999999``, ``1e+06``, ``-inf``)."""
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    text = repr(x)
    return f"{x:g}" if text.endswith(".0") else text


@dataclass(frozen=True, eq=False)
class Case:
    """One conformance check: parameters, how to make its inputs, and its family.

    Inputs are either generated (``inputs`` kind of :func:`amid_ref.strategies.logits_pair`,
    ``shape``, ``seed``: reproducible from what a report prints) or given explicitly as
    ``student_logits`` / ``teacher_logits`` (float64 arrays of shape ``(..., V)``). For kind
    ``"mixture"`` the function under test receives ``log_softmax`` of those logits.

    Parameters
    ----------
    family : str
        Battery family (:data:`FAMILIES`) or a free label for user cases.
    kind : {"loss", "mixture", "divergence", "preset"}
        ``"divergence"``: a plain D(p‖q) (``order="pr"``) or D(q‖p) (``"rp"``), the AMiD
        loss at λ = 0 (α and λ are set to −1 and 0); ``"preset"``: the prior method
        ``preset`` with ``preset_params`` (α, λ, divergence and order are the preset's).
    alpha, lam : float
        Path parameter α (may be ±inf) and teacher weight λ ∈ [0, 1].
    divergence, order, div_params, temperature
        As in :func:`amid_ref.amid_loss` (loss cases only).
    shape : tuple of int
        ``(..., V)`` of the generated logits.
    inputs : str
        Logits kind (:data:`amid_ref.strategies.LOGIT_KINDS`).
    seed : int
        Seed of the generated inputs.
    mask : {None, "some", "all", "none"}
        Ignore pattern of the labels passed with ``ignore_index`` (None: no labels).
    reduction : {None, "none", "mean", "sum"}
        Reduction this case asks for (None: the adapter's).
    name : str
        Identifier within the family; :attr:`id` is ``family/name``.
    preset : str, optional
        (preset kind) a name of :data:`amid_ref.presets.PRESETS`.
    preset_params : mapping, optional
        (preset kind) the preset's parameters as the function under test takes them
        (:data:`PRESET_PARAM_GRIDS`: ``beta`` for ``gkd_jsd``, ``t`` for ``taid``, ...).
    """

    family: str
    kind: str = "loss"
    alpha: float = -1.0
    lam: float = 0.5
    divergence: str = "kl"
    order: str = "pr"
    div_params: Mapping[str, float] = field(default_factory=dict)
    temperature: float = 1.0
    shape: tuple[int, ...] = (3, 64)
    inputs: str = "realistic"
    seed: int | None = None
    mask: str | None = None
    reduction: str | None = None
    name: str = ""
    student_logits: np.ndarray | None = None
    teacher_logits: np.ndarray | None = None
    preset: str | None = None
    preset_params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.kind == "divergence":
            # D(p‖q) is the AMiD loss at λ = 0 (r = q for every α) with order pr; D(q‖p) rp.
            if self.order not in _DIRECTIONS:
                raise ValueError(f"order: a divergence case is 'pr' (D(p‖q)) or 'rp' (D(q‖p)), "
                                 f"got {self.order!r}")  # fmt: skip
            object.__setattr__(self, "lam", 0.0)
            object.__setattr__(self, "alpha", -1.0)
        if self.kind == "preset":
            from amid_ref import presets

            if self.preset not in presets.PRESETS:
                raise ValueError(f"preset: expected one of {list(presets.PRESETS)}, "
                                 f"got {self.preset!r}")  # fmt: skip
            object.__setattr__(self, "preset_params", dict(self.preset_params))
            rec = self.preset_record()
            object.__setattr__(self, "alpha", float(rec.alpha))
            object.__setattr__(self, "lam", float(rec.lam))
            object.__setattr__(self, "divergence", rec.divergence)
            object.__setattr__(self, "div_params", dict(rec.div_params))
            object.__setattr__(self, "order", rec.terms[0][0])
        if not (0.0 <= float(self.lam) <= 1.0):
            raise ValueError(f"lam: must lie in [0, 1], got {self.lam!r}")
        if math.isnan(float(self.alpha)):
            raise ValueError("alpha: NaN is not a valid α")
        if self.mask not in (None, "some", "all", "none"):
            raise ValueError(f"mask: expected None, 'some', 'all' or 'none', got {self.mask!r}")
        if self.reduction not in (None, "none", "mean", "sum"):
            raise ValueError(f"reduction: expected none/mean/sum, got {self.reduction!r}")
        explicit = (self.student_logits is not None, self.teacher_logits is not None)
        if explicit[0] != explicit[1]:
            raise ValueError("student_logits/teacher_logits: give both or neither")
        if explicit[0]:
            s = np.asarray(self.student_logits, dtype=np.float64)
            t = np.asarray(self.teacher_logits, dtype=np.float64)
            if s.shape != t.shape or s.ndim == 0 or s.shape[-1] < 2:
                raise ValueError(f"logits: shapes {s.shape} and {t.shape} must match, (..., V>=2)")
            object.__setattr__(self, "student_logits", s)
            object.__setattr__(self, "teacher_logits", t)
            object.__setattr__(self, "shape", s.shape)
            object.__setattr__(self, "inputs", "explicit")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "div_params", dict(self.div_params))
        if not self.name:
            object.__setattr__(self, "name", self._auto_name())
        if self.seed is None:
            object.__setattr__(self, "seed", zlib.crc32(self.id.encode()) & 0x7FFFFFFF)

    def _auto_name(self) -> str:
        parts = [f"alpha={_fmt(self.alpha)}", f"lam={_fmt(self.lam)}"]
        div = self.divergence
        if self.div_params:
            div += "(" + ",".join(f"{k}={_fmt(v)}" for k, v in self.div_params.items()) + ")"
        if self.kind == "loss":
            parts += [div, self.order]
        elif self.kind == "divergence":
            parts = [div, _DIRECTIONS[self.order]]
        elif self.kind == "preset":
            parts = [self.preset]
            if self.preset_params:
                parts[0] += "(" + ",".join(
                    f"{k}={_fmt(v)}" for k, v in self.preset_params.items()
                ) + ")"  # fmt: skip
        if self.kind != "mixture" and self.temperature != 1.0:
            parts.append(f"T={_fmt(self.temperature)}")
        parts.append(f"{self.inputs}{list(self.shape)}")
        if self.mask is not None:
            parts.append(f"mask={self.mask}")
        if self.reduction is not None:
            parts.append(f"reduction={self.reduction}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"Case({self.id!r}, seed={self.seed})"

    @property
    def id(self) -> str:
        """``family/name``: unique within the battery; :func:`get_case` finds it."""
        return f"{self.family}/{self.name}"

    @property
    def vocab(self) -> int:
        return self.shape[-1]

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        """``(student_logits, teacher_logits)`` as float64 (before any dtype rounding)."""
        if self.student_logits is not None:
            return self.student_logits.copy(), self.teacher_logits.copy()
        if self.inputs == "student_masked":
            return _student_masked(self.shape, self.seed)
        return _S.logits_pair(self.inputs, self.shape, self.seed)

    def preset_record(self):
        """The :class:`amid_ref.presets.Preset` of a preset case, with its parameters."""
        from amid_ref import presets

        params = dict(self.preset_params)
        if self.preset == "abkd" and params:
            ab = {k: params.pop(k) for k in ("alpha", "beta") if k in params}
            params["div_params"] = {**presets.PRESETS["abkd"].div_params, **ab}
        return presets.get(self.preset, **params)

    def reproducer(self, dtype: str = "float32") -> str:
        """A Python line that rebuilds this case and its inputs as the report's function got
        them (for any case with generated inputs, in the battery or not)."""
        if self.inputs == "explicit":
            return "inputs given explicitly (Case(student_logits=..., teacher_logits=...))"
        fields = ["family", "kind", "alpha", "lam", "divergence", "order", "div_params"]
        fields += ["temperature", "shape", "inputs", "seed", "mask", "reduction", "name"]
        fields += ["preset", "preset_params"]
        defaults = {f.name: f.default for f in self.__dataclass_fields__.values()}
        args = []
        for name in fields:
            value = getattr(self, name)
            if name in ("div_params", "preset_params"):
                value = dict(value)
                if not value:
                    continue
            elif name not in ("family", "seed", "name") and value == defaults.get(name):
                continue
            if name in ("kind", "alpha", "lam") and self.kind in ("divergence", "preset"):
                if name != "kind":
                    continue
            if name in ("divergence", "order", "div_params") and self.kind == "preset":
                continue
            args.append(f"{name}={_py(value)}")
        return (
            "from amid_ref.conformance import Case; "
            f"s, t = Case({', '.join(args)}).arrays({dtype!r})"
        )

    def arrays(self, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
        """The inputs handed to the function under test, rounded to ``dtype``, as float64.

        Loss cases: ``(student_logits, teacher_logits)``. Mixture cases: ``(log_q, log_p)``,
        the float64 log-softmax of the logits, then rounded. The reference is evaluated on
        exactly these rounded values.
        """
        s, t = self.logits()
        if self.kind == "mixture":
            s, t = _log_softmax(s), _log_softmax(t)
        return round_to_dtype(s, dtype), round_to_dtype(t, dtype)

    def labels(self) -> np.ndarray | None:
        """Labels of shape ``shape[:-1]`` (int64) with :data:`IGNORE_INDEX` where ignored."""
        if self.mask is None:
            return None
        rng = np.random.default_rng(self.seed + 1)
        lead = self.shape[:-1]
        labels = rng.integers(0, self.vocab, lead).astype(np.int64)
        flat = labels.reshape(-1)
        if self.mask == "all":
            flat[:] = IGNORE_INDEX
        elif self.mask == "some":
            flat[1::2] = IGNORE_INDEX
        return flat.reshape(lead)

    def upstream(self, out_shape: tuple[int, ...]) -> np.ndarray:
        """Non-unit upstream gradient (uniform in [0.5, 1.5]) used for per-row outputs."""
        rng = np.random.default_rng(self.seed + 2)
        return rng.uniform(0.5, 1.5, out_shape)

    def params(self) -> dict[str, Any]:
        """The case's parameters as a JSON-friendly dict (what a report prints)."""
        d: dict[str, Any] = {
            "id": self.id,
            "family": self.family,
            "kind": self.kind,
            "alpha": _json_float(self.alpha),
            "lam": _json_float(self.lam),
        }
        if self.kind in ("loss", "divergence", "preset"):
            d.update(
                divergence=self.divergence,
                order=self.order,
                div_params={k: _json_float(v) for k, v in self.div_params.items()},
                temperature=self.temperature,
            )
        if self.kind == "preset":
            d.update(
                preset=self.preset,
                preset_params={k: _json_float(v) for k, v in self.preset_params.items()},
            )
        d.update(inputs=self.inputs, shape=list(self.shape), seed=self.seed)
        if self.mask is not None:
            d.update(mask=self.mask, ignore_index=IGNORE_INDEX)
        if self.reduction is not None:
            d["reduction"] = self.reduction
        return d

    def describe(self) -> str:
        """One line: parameters and how the inputs are generated."""
        p = self.params()
        bits = [f"alpha={_fmt(self.alpha)}", f"lam={_fmt(self.lam)}"]
        if self.kind == "divergence":
            bits = [f"{_DIRECTIONS[self.order]} divergence={self.divergence}"]
            bits += [f"div_params={p['div_params']}", f"temperature={self.temperature}"]
        elif self.kind == "preset":
            bits = [f"preset={self.preset} params={p['preset_params']}"]
            bits += [f"temperature={self.temperature}"]
        if self.kind == "loss":
            bits += [
                f"divergence={self.divergence}",
                f"order={self.order}",
                f"div_params={p['div_params']}",
                f"temperature={self.temperature}",
            ]
        bits.append(
            f"inputs={self.inputs} shape={tuple(self.shape)} seed={self.seed}"
            if self.inputs != "explicit"
            else f"inputs=explicit shape={tuple(self.shape)}"
        )
        if self.mask is not None:
            bits.append(f"mask={self.mask} (ignore_index={IGNORE_INDEX})")
        if self.reduction is not None:
            bits.append(f"reduction={self.reduction}")
        return " ".join(bits)


def iter_names(xs: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """A comma-separated string or an iterable of names as a tuple (None stays None)."""
    if xs is None:
        return None
    if isinstance(xs, str):
        return tuple(x.strip() for x in xs.split(",") if x.strip())
    return tuple(xs)


def _py(value: Any) -> str:
    """Python source of a field value (``float('inf')`` for infinities)."""
    if isinstance(value, float) and math.isinf(value):
        return "float('inf')" if value > 0 else "float('-inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _student_masked(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Realistic logits with about 30% of the student's entries −inf (the teacher finite);
    the student's row maximum is kept, so every row has mass."""
    student, teacher = _S.logits_pair("realistic", shape, seed)
    rng = np.random.default_rng(seed + 7)
    cut = rng.random(shape) < 0.3
    flat_s = student.reshape(-1, shape[-1])
    keep = np.argmax(flat_s, axis=-1)
    cut = cut.reshape(-1, shape[-1])
    cut[np.arange(cut.shape[0]), keep] = False
    student = np.where(cut.reshape(shape), -np.inf, student)
    return student, teacher


def _json_float(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


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
    orders = ("pr", "qr", "rp", "rq") if kind == "loss" else ("pr",)
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
        for order in ("pr", "qr", "rp", "rq"):
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
        from amid_ref import presets

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
