r"""The teacher as people have it: a sparse (top-k) teacher, a vocabulary of another size,
logits transformed before the softmax (MATH.md "Sparse teachers, vocabulary alignment, logit
transforms").

This module holds what every implementation shares about these inputs without computing
anything: the structural check of a sparse teacher ``(indices, logprobs)``
(:func:`check_teacher_topk`: types, shapes, k ≤ V, the range of the ids, duplicates, padded
slots) and the words of the errors about its mass (:func:`mass_above_one_message`,
:func:`leftover_needs_mass_message`), so that :mod:`amid_ref`, :mod:`amid_ref.precise` and
:mod:`gpu` refuse the same inputs with the same messages. The arithmetic (log-sum-exp of the
kept log-probabilities, ε, the leftover policies, the transforms and their derivatives) is
written by each implementation on its own.

The rule for the kept mass, per row, with :math:`n` kept ids (padded slots, index −1 with
log-probability −inf, are not counted) and :math:`L = \operatorname{logsumexp}_{i \in S}
\ell_i`:

1. :math:`L > \log(1 + \text{SPARSE\_MASS\_TOL})`: refused (the probabilities sum above 1).
2. :math:`\varepsilon = -\operatorname{expm1}(L)`. If :math:`\varepsilon \le`
   ``SPARSE_EPS_ROUNDING`` (rounding of the sum, including a sum slightly above 1), or if
   :math:`n = V` and :math:`\varepsilon \le` ``SPARSE_MASS_TOL`` (every id is kept, so the
   leftover is rounding), the row is renormalized: :math:`\ell_i \leftarrow \ell_i - L`,
   :math:`\varepsilon = 0`.
3. ``leftover="uniform"`` with :math:`n = V` and :math:`\varepsilon > 0` is refused (no id
   to spread ε over); ``leftover="renormalize"`` with :math:`P_S = 0` is refused (nothing to
   renormalize). ``bucket`` with :math:`n = V` keeps ε on an empty ★ (student mass 0 there).

With ``vocab_alignment="truncate"`` ids ≥ V are dropped (their mass counts against
``VOCAB_TRUNCATE_MAX_DROPPED``) and the kept log-probabilities divided by
:math:`1 - \text{dropped}`; with ``"error"`` or ``"pad"`` an id ≥ V is out of range (a
sparse teacher has no padding rows to pad the student with).
"""

from __future__ import annotations

import math

import numpy as np

from amid_ref._validation import as_float_array, tensor_to_numpy
from amid_ref.tolerances import SPARSE_MASS_TOL

__all__ = [
    "SPARSE_EPS_ROUNDING",
    "SparseTeacher",
    "check_teacher_source",
    "check_teacher_topk",
    "leftover_needs_mass_message",
    "log1p_tol",
    "mass_above_one_message",
    "sparse_transform_message",
    "truncate_dropped_message",
    "vocab_mismatch_message",
]

#: A leftover ε at or below this is rounding of the kept log-probabilities' sum (a float64
#: log-sum-exp of k values is off by a few ulps of 1, ~1e-16) and is taken as exactly 0.
#: 2⁻⁴⁶ ≈ 1.4e-14 sits a hundred times above that noise, so implementations that round
#: differently agree on which side of it a row falls (except rows put there on purpose).
SPARSE_EPS_ROUNDING: float = 2.0**-46


class SparseTeacher:
    """A checked sparse teacher: ``indices`` (int64, shape (..., k), −1 at padded or dropped
    slots), ``logprobs`` (float64, shape (..., k), −inf there), ``kept`` (bool, the valid
    slots), ``dropped`` (bool, ids ≥ V dropped by ``vocab_alignment="truncate"``, with their
    log-probabilities in ``dropped_logprobs``) and ``vocab`` (V)."""

    def __init__(self, indices, logprobs, kept, dropped, dropped_logprobs, vocab):
        self.indices = indices
        self.logprobs = logprobs
        self.kept = kept
        self.dropped = dropped
        self.dropped_logprobs = dropped_logprobs
        self.vocab = vocab

    @property
    def counts(self) -> np.ndarray:
        """n, the number of kept ids per row, shape (...)."""
        return self.kept.sum(axis=-1)


def check_teacher_source(teacher_logits, teacher_topk) -> None:
    """Exactly one of ``teacher_logits`` and ``teacher_topk`` is given."""
    if teacher_topk is None and teacher_logits is None:
        raise ValueError(
            "teacher_logits is None and teacher_topk is None: give the teacher as dense "
            "teacher_logits or as teacher_topk=(indices, logprobs)"
        )
    if teacher_topk is not None and teacher_logits is not None:
        raise ValueError(
            "teacher_logits and teacher_topk are both given: pass teacher_logits=None with a "
            "sparse teacher (teacher_topk)"
        )


def check_teacher_topk(teacher_topk, student_shape, vocab_alignment: str) -> SparseTeacher:
    """Check the structure of ``teacher_topk = (indices, logprobs)`` against the student's
    logits of shape ``student_shape`` = (..., V); see the module docstring for the rule.

    Raises ``TypeError``/``ValueError`` naming ``teacher_topk``.
    """
    if not isinstance(teacher_topk, tuple | list) or len(teacher_topk) != 2:
        raise TypeError(
            f"teacher_topk must be a pair (indices, logprobs), got {type(teacher_topk).__name__}"
        )
    raw_idx, raw_lp = teacher_topk
    idx = tensor_to_numpy(raw_idx)
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"teacher_topk indices must be integers, got dtype {idx.dtype}")
    lp = as_float_array(raw_lp, "teacher_topk logprobs", allow_neg_inf=True, allow_empty=True)
    if idx.ndim == 0 or idx.shape != lp.shape:
        raise ValueError(
            f"teacher_topk: indices of shape {idx.shape} and logprobs of shape {lp.shape} "
            "must share one shape (..., k)"
        )
    if lp.shape[-1] == 0:  # zero rows with k ≥ 1 pass (an empty loss); k = 0 does not
        raise ValueError("teacher_topk logprobs is empty")
    leading, vocab = tuple(student_shape[:-1]), int(student_shape[-1])
    if idx.shape[:-1] != leading:
        raise ValueError(
            f"teacher_topk: shape {idx.shape} does not match the student's leading shape "
            f"{leading} (expected {(*leading, 'k')})"
        )
    k = idx.shape[-1]
    if k > vocab:
        raise ValueError(
            f"teacher_topk: k = {k} ids per row exceeds the vocabulary V = {vocab} of "
            "student_logits"
        )
    idx = idx.astype(np.int64)
    padded = idx == -1
    if (padded & ~np.isneginf(lp)).any():
        raise ValueError(
            "teacher_topk: a padded slot (index -1) must have logprob -inf, got a finite one"
        )
    if (idx < -1).any():
        raise ValueError(
            f"teacher_topk: index {int(idx[idx < -1][0])} out of range [0, V = {vocab}) "
            "(-1 marks a padded slot)"
        )
    beyond = idx >= vocab
    if beyond.any() and vocab_alignment != "truncate":
        raise ValueError(
            f"teacher_topk: index {int(idx[beyond][0])} out of range [0, V = {vocab}) of "
            "student_logits (vocab_alignment='truncate' drops the ids beyond the student's)"
        )
    rows = idx.reshape(-1, k)
    keyed = np.where(rows == -1, -1 - np.arange(k), rows)  # padded slots never collide
    ordered = np.sort(keyed, axis=-1)
    same = ordered[:, 1:] == ordered[:, :-1]
    if same.any():
        r, c = np.argwhere(same)[0]
        raise ValueError(
            f"teacher_topk: duplicate index {int(ordered[r, c])} in row {int(r)} "
            "(the ids of a row must be distinct)"
        )
    kept = ~padded & ~beyond
    return SparseTeacher(
        np.where(kept, idx, -1),
        np.where(kept, lp, -np.inf),
        kept,
        beyond,
        np.where(beyond, lp, -np.inf),
        vocab,
    )


def mass_above_one_message(total: float, row) -> str:
    """The error for kept probabilities summing above 1 + SPARSE_MASS_TOL."""
    return (
        f"teacher_topk: the log-probabilities of row {row} sum to P_S = {total:.6g} above 1 "
        f"(beyond SPARSE_MASS_TOL = {SPARSE_MASS_TOL:g}); give log-probabilities of the "
        "teacher's full distribution"
    )


def leftover_needs_mass_message(leftover: str, row, epsilon: float | None = None) -> str:
    """The error for a leftover policy that needs a mass the row lacks."""
    if leftover == "uniform":
        return (
            f"leftover='uniform' needs ids off the top-k to spread the leftover mass over, "
            f"but row {row} keeps every id (k = V) and leaves ε = {epsilon:.3g} "
            "(above SPARSE_MASS_TOL); use leftover='bucket' or 'renormalize'"
        )
    return (
        f"leftover='renormalize' needs a positive kept mass, but the kept ids of row {row} "
        "have probability 0 (P_S = 0); use leftover='bucket' or 'uniform'"
    )


def sparse_transform_message(name: str) -> str:
    """The error for a teacher-side softcap or logit scale with a sparse teacher."""
    return (
        f"{name}: a sparse teacher's log-probabilities are used as given, so a teacher-side "
        f"{name} cannot apply to teacher_topk; pass {name}=(student_value, None)"
    )


def vocab_mismatch_message(v_student: int, v_teacher: int) -> str:
    """The error for vocabularies of different sizes with ``vocab_alignment="error"``."""
    return (
        f"student_logits has V = {v_student} ids and teacher_logits V = {v_teacher}: the "
        "vocabularies differ; with vocab_alignment='pad' the shorter side is extended with "
        "-inf logits (probability 0), with vocab_alignment='truncate' the longer side is cut "
        "to the shared ids"
    )


def truncate_dropped_message(side: str, dropped: float, row, limit: float) -> str:
    """The error for ``vocab_alignment="truncate"`` dropping more than the stated maximum."""
    return (
        f"vocab_alignment='truncate' would drop probability {dropped:.3g} of the {side} on "
        f"row {row} (the ids beyond the shared vocabulary), above "
        f"VOCAB_TRUNCATE_MAX_DROPPED = {limit:g}: the vocabularies differ by more than padding"
    )


def log1p_tol() -> float:
    """``log(1 + SPARSE_MASS_TOL)``, the largest accepted log-sum-exp of kept log-probs.

    The test of a mass above 1 is ``logsumexp(ℓ_S) > log1p_tol()`` in float64, in every
    implementation (not ``expm1(logsumexp) > SPARSE_MASS_TOL``: within an ulp of the
    boundary the two can disagree)."""
    return math.log1p(SPARSE_MASS_TOL)
