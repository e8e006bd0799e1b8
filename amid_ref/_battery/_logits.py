"""Reproducible student/teacher logit pairs (NumPy only): the generators of the input domains.

:func:`logits_pair` turns ``(kind, shape, seed)`` into a pair of float64 logits; a battery
case (:class:`amid_ref._battery._case.Case`) stores only those three values, so a failing case is
rebuilt exactly from what a report prints. :mod:`amid_ref.strategies` re-exports both names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOGIT_KINDS", "logits_pair"]


#: Kinds of student/teacher logit pairs understood by :func:`logits_pair`.
LOGIT_KINDS: tuple[str, ...] = (
    "realistic",
    "flat",
    "peaked",
    "extreme",
    "huge_offset",
    "underflow",
    "masked",
    "teacher_masked",
    "one_hot",
    "near_one_hot",
    "disjoint_peaks",
    "equal",
    "bf16_grid",
    "fp16_grid",
)


def _realistic(rng: np.random.Generator, shape: tuple[int, ...], scale: float):
    """Correlated teacher/student logits with an LLM-like heavy tail.

    A shared token-frequency bias ``−log(rank)`` (Zipf) plus a row-specific Gaussian part;
    the student is a shrunk, noisy copy of the teacher, as after some training.
    """
    v = shape[-1]
    ranks = rng.permutation(v) + 1.0
    bias = -np.log(ranks)
    teacher = bias + scale * rng.standard_normal(shape)
    student = 0.7 * teacher + 0.5 * scale * rng.standard_normal(shape)
    return student, teacher


def _round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float64 values to bfloat16 (round to nearest even, via float32), as float64."""
    f = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32).astype(np.float64)
    return np.where(np.isnan(f), np.nan, out)


def logits_pair(
    kind: str, shape: Sequence[int], seed: int, *, scale: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible ``(student_logits, teacher_logits)`` pair of one of :data:`LOGIT_KINDS`.

    Parameters
    ----------
    kind : str
        * ``"realistic"``: correlated teacher/student with a Zipf token bias (typical LM rows).
        * ``"flat"``: all logits within ±0.1 (near-uniform rows; r ≈ p ≈ q).
        * ``"peaked"``: the teacher's top token 15 nats above the rest (confident teacher).
        * ``"extreme"``: logits uniform in ±5000, a spread of 1e4: every probability but a few
          underflows; log-softmax must not go through probabilities.
        * ``"huge_offset"``: realistic rows shifted by +2e4 (shift invariance; fp32 spacing 2e-3).
        * ``"underflow"``: a quarter of the entries ~1000 nats below the rest in *both* rows, so
          p and q underflow to 0 even in float64 (a mixture formed in probability space and
          then logged gives −inf, then NaN).
        * ``"masked"``: padded vocabulary: the last quarter of entries is −inf in both rows,
          plus a few random −inf entries in both (masked tokens).
        * ``"teacher_masked"``: −inf only in the teacher (a top-k truncated teacher).
        * ``"one_hot"``: teacher −inf except one token (exact one-hot p).
        * ``"near_one_hot"``: teacher 60 nats above on one token (p elsewhere ~1e-26).
        * ``"disjoint_peaks"``: teacher and student confident on different tokens (large loss).
        * ``"equal"``: student = teacher (every divergence and the loss are 0 for any α, λ).
        * ``"bf16_grid"``/``"fp16_grid"``: realistic rows of scale 5 rounded to bfloat16 /
          float16 values (what a mixed-precision model emits).
    shape : sequence of int
        ``(..., V)`` with V ≥ 2.
    seed : int
        Seed of ``numpy.random.default_rng``; the pair is a function of (kind, shape, seed, scale).
    scale : float, optional
        Standard deviation of the Gaussian part for the realistic-type kinds.

    Returns
    -------
    student, teacher : numpy.ndarray
        float64 arrays of shape ``shape``; entries may be −inf (masked), never NaN or +inf.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0 or shape[-1] < 2:
        raise ValueError(f"shape: need (..., V) with V >= 2, got {shape}")
    if kind not in LOGIT_KINDS:
        raise ValueError(f"kind: unknown logits kind {kind!r}; expected one of {LOGIT_KINDS}")
    rng = np.random.default_rng(seed)
    v = shape[-1]
    student, teacher = _realistic(rng, shape, scale)
    if kind == "flat":
        teacher = 0.1 * rng.uniform(-1.0, 1.0, shape)
        student = 0.1 * rng.uniform(-1.0, 1.0, shape)
    elif kind == "peaked":
        top = rng.integers(0, v, shape[:-1])
        np.put_along_axis(teacher, top[..., None], teacher.max(axis=-1, keepdims=True) + 15.0, -1)
    elif kind == "extreme":
        teacher = rng.uniform(-5000.0, 5000.0, shape)
        student = rng.uniform(-5000.0, 5000.0, shape)
    elif kind == "huge_offset":
        teacher = teacher + 2e4
        student = student + 2e4
    elif kind == "underflow":
        low = rng.random(shape) < 0.25
        low[..., 0] = True  # at least one such entry per row
        low[..., 1] = False  # and at least one ordinary entry
        teacher = np.where(low, teacher - 1000.0, teacher)
        student = np.where(low, student - 1000.0 + rng.uniform(-5, 5, shape), student)
    elif kind == "masked":
        pad = np.zeros(shape, dtype=bool)
        pad[..., v - max(1, v // 4) :] = True
        pad |= rng.random(shape) < 0.05
        pad[..., 0] = False  # keep at least one live entry
        teacher = np.where(pad, -np.inf, teacher)
        student = np.where(pad, -np.inf, student)
    elif kind == "teacher_masked":
        cut = rng.random(shape) < 0.3
        cut[..., np.argmax(teacher.reshape(-1, v).sum(axis=0))] = False
        teacher = np.where(cut, -np.inf, teacher)
    elif kind in ("one_hot", "near_one_hot"):
        top = rng.integers(0, v, shape[:-1])[..., None]
        if kind == "one_hot":
            teacher = np.full(shape, -np.inf)
            np.put_along_axis(teacher, top, 2.0, -1)
        else:
            np.put_along_axis(teacher, top, teacher.max(axis=-1, keepdims=True) + 60.0, -1)
    elif kind == "disjoint_peaks":
        top = rng.integers(0, v, shape[:-1])[..., None]
        other = (top + 1 + rng.integers(0, v - 1, top.shape)) % v
        np.put_along_axis(teacher, top, teacher.max(axis=-1, keepdims=True) + 12.0, -1)
        np.put_along_axis(student, other, student.max(axis=-1, keepdims=True) + 12.0, -1)
    elif kind == "equal":
        student = teacher.copy()
    elif kind in ("bf16_grid", "fp16_grid"):
        student, teacher = _realistic(rng, shape, 5.0)
        if kind == "bf16_grid":
            student, teacher = _round_bf16(student), _round_bf16(teacher)
        else:
            student = student.astype(np.float16).astype(np.float64)
            teacher = teacher.astype(np.float16).astype(np.float64)
    return np.ascontiguousarray(student), np.ascontiguousarray(teacher)
