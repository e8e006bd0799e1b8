"""The case type of every battery: one check's parameters and how to make its inputs.

:class:`Case` is shared by the conformance battery (:mod:`amid_ref.conformance`, which
re-exports it), the Hypothesis strategies (:func:`amid_ref.strategies.loss_cases`) and the
validation sweeps; its inputs come from :func:`amid_ref._battery._logits.logits_pair`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amid_ref import presets
from amid_ref._battery._logits import _round_bf16, logits_pair

__all__ = ["DTYPES", "IGNORE_INDEX", "KINDS", "Case", "canonical_dtype", "round_to_dtype"]

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

#: Kinds of case: an AMiD loss over logits, an α-mixture over log-probabilities, a plain
#: divergence D(p‖q) or D(q‖p) over logits (no mixture), or a preset (a prior method).
KINDS: tuple[str, ...] = ("loss", "mixture", "divergence", "preset")

_DIRECTIONS = {"pr": "D(p||q)", "rp": "D(q||p)"}


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
        return np.reshape(_round_bf16(np.atleast_1d(x)), x.shape)


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
        return logits_pair(self.inputs, self.shape, self.seed)

    def preset_record(self):
        """The :class:`amid_ref.presets.Preset` of a preset case, with its parameters."""
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
    student, teacher = logits_pair("realistic", shape, seed)
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
