"""The failure modes' data: a failing case's context, a known-wrong formula's output, the
record of a failure mode, and a diagnosis.

The records themselves (the wrong formulas) are :data:`amid_ref.conformance._mutants.FAILURE_MODES`;
the matching of an implementation's output against them is
:func:`amid_ref.conformance._diagnoses.diagnose`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from amid_ref._battery._case import Case
from amid_ref._battery._compare import fails
from amid_ref.conformance._reference import ReferenceInputs, reduce_grad, reduce_rows
from amid_ref.tolerances import Tolerance

__all__ = ["NOISE_SAMPLES", "Diagnosis", "DiagnosisContext", "FailureMode", "Wrong"]


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
        rows, g = self.ref.rows(grad=self.want_grad and self.kind != "mixture", **overrides)
        grad = None
        if g is not None:
            grad = reduce_grad(g, self.mask, self.reduction, self.upstream)
        return Wrong("", self.reduce(rows), grad)

    def moved(self, case: Case) -> DiagnosisContext:
        """The same context for ``case`` (same inputs, other parameters)."""
        s, t = case.arrays(self.dtype)
        ref = ReferenceInputs(
            case,
            s,
            t,
            normalized=self.ref.normalized,
            detach_assistant=self.ref.detach_assistant,
            temperature_squared=self.ref.temperature_squared,
        )
        labels = case.labels()  # the moved case's own labels (its seed may differ)
        mask = None if labels is None else labels != -100
        return DiagnosisContext(ref, self.dtype, self.reduction, mask, None, False, None)

    def with_dtype(self, dtype: str) -> DiagnosisContext:
        """The same case and inputs, with the implementation computing in ``dtype``."""
        return DiagnosisContext(
            self.ref, dtype, self.reduction, self.mask, self.upstream, self.want_grad, self.probe
        )

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
    #: ``confirm(ctx, variant, tol)``: extra evidence a match needs (e.g. the same defect on
    #: a control case where the wrong formula does not degenerate to 0); for a noise mode it
    #: replaces the scaling check :func:`_scales_like`.
    confirm: Callable[[DiagnosisContext, str, Tolerance], bool] | None = None
    #: ``overrides(ctx)``: the mode as ``[(variant, reference overrides)]``, so that it can
    #: be combined with another mode (:func:`diagnose` tries pairs).
    overrides: Callable[[DiagnosisContext], list[tuple[str, dict]]] | None = None
    #: ``transform(ctx, wrong)``: the mode as a change of a (wrong) output, for pairs.
    transform: Callable[[DiagnosisContext, Wrong], list[Wrong]] | None = None


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
# Rounding-noise samples
# --------------------------------------------------------------------------------------

NOISE_SAMPLES = 4
_UNIT_ROUNDOFF = {
    "bfloat16": 2.0**-8,
    "float16": 2.0**-11,
    "float32": 2.0**-24,
    "float64": 2.0**-53,
}


def _jitter(x: np.ndarray, dtype: str, sample: int) -> np.ndarray:
    if sample == 0:
        return x
    rng = np.random.default_rng(1000 + sample)
    u = rng.integers(-1, 2, np.shape(x)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), x * (1.0 + u * _UNIT_ROUNDOFF[dtype]), x)


# --------------------------------------------------------------------------------------
# Matching noise: how far an implementation's error is from a wrong formula's
# --------------------------------------------------------------------------------------

#: How far (a factor) a noise mode's error size may be from the implementation's.
_NOISE_FACTOR = 10.0


def _rms_error(got: np.ndarray, cand: np.ndarray, want: np.ndarray, failing: np.ndarray, tol):
    """RMS error of ``cand`` over the finite failing entries of ``got`` (None: incompatible)."""
    g, w, r = got[failing], cand[failing], want[failing]
    nf_g, nf_w = ~np.isfinite(g), ~np.isfinite(w)
    if (nf_g & ~nf_w).any():
        return None
    fin = ~nf_g
    if not fin.any():
        return 0.0, False
    if nf_w[fin].any() or not fails(cand, want, tol)[failing][fin].any():
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e_w = np.abs(w - r)[fin]
        size = np.maximum(np.abs(r[fin]), 1e-300)
        return float(np.sqrt(np.mean(e_w**2))), bool(np.median(e_w / size) >= 0.3)


def _systematic(got: np.ndarray, want: np.ndarray, failing: np.ndarray) -> bool:
    """Whether the failing entries' errors look deterministic rather than rounding noise.

    True when there are at least three finite failing entries and their relative errors,
    or their absolute errors, all have one sign and agree within a factor of 1.5 (a scaled
    or shifted loss, say): rounding noise does not line up across rows like that (two
    entries can, by chance).
    """
    g, r = got[failing], want[failing]
    fin = np.isfinite(g) & np.isfinite(r) & (r != 0)
    if fin.sum() < 3:
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
    failing = fails(got, want, tol)
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
