"""The cached or served teacher recipe of :mod:`gpu.hf` on tiny models (no download): top-k
dataset columns, the collator that pads k, :func:`gpu.hf.amid_compute_loss` with no teacher
model; and teacher/student vocabularies of different sizes with ``vocab_alignment``."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import gpu  # noqa: E402
import gpu.hf  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from tests._tiny_hf import VOCAB, batch, tiny_gpt2  # noqa: E402


def _features(teacher, data, k, ragged=True):
    """Per-example dataset rows with the teacher's top-k columns (ragged k: the last
    example keeps one slot fewer, so the collator pads it)."""
    idx, lp = gpu.hf.teacher_topk_of(teacher, data["input_ids"], k)
    rows = []
    for i in range(data["input_ids"].shape[0]):
        kk = k - 1 if ragged and i == data["input_ids"].shape[0] - 1 else k
        rows.append({
            "input_ids": data["input_ids"][i].tolist(),
            "labels": data["labels"][i].tolist(),
            "teacher_topk_indices": idx[i, :, :kk].tolist(),
            "teacher_topk_logprobs": lp[i, :, :kk].tolist(),
        })  # fmt: skip
    return rows


@pytest.mark.parametrize("fused", [False, True])
def test_top_v_equals_the_dense_run(fused):
    """k = V through the collator: the same loss and gradients as the teacher model itself."""
    teacher, data = tiny_gpt2(1), batch(3)
    crit = gpu.AMiDLoss(-5.0, 0.1, shift_labels=True)
    dense = tiny_gpt2(2).double()
    sparse = tiny_gpt2(2).double()
    want, _ = gpu.hf.amid_compute_loss(dense, teacher.double(), data, crit, fused=fused)
    want.backward()
    feats = _features(teacher.double(), data, VOCAB, ragged=False)
    batch_k = gpu.hf.collate_topk(feats, logprob_dtype=torch.float64)
    got, info = gpu.hf.amid_compute_loss(sparse, None, batch_k, crit, fused=fused)
    got.backward()
    assert info["fused"] == fused
    tol = tolerance("gpu", "loss", "float64")
    assert_within(got.item(), want.item(), tol)
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            assert_within(a.grad.numpy(), b.grad.numpy(), tolerance("gpu", "grad", "float64"),
                          what=name)  # fmt: skip


def test_collator_pads_k():
    teacher, data = tiny_gpt2(1), batch(3)
    out = gpu.hf.collate_topk(_features(teacher, data, 8))
    assert out["teacher_topk_indices"].shape == (4, data["input_ids"].shape[1], 8)
    assert bool((out["teacher_topk_indices"][-1, :, -1] == -1).all())
    assert bool((out["teacher_topk_logprobs"][-1, :, -1] == -math.inf).all())


def test_top64_bucket_trains():
    """A student trained on a teacher's cached top-64 (bucket) gets closer to the teacher."""
    teacher, data = tiny_gpt2(1), batch(5)
    student = tiny_gpt2(4)
    batch_k = gpu.hf.collate_topk(_features(teacher, data, 64))
    crit = gpu.AMiDLoss(-1.0, 0.1, shift_labels=True, leftover="bucket")
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss, _ = gpu.hf.amid_compute_loss(student, None, batch_k, crit)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_padded_vocabulary_teacher():
    """A teacher whose vocabulary is padded (more rows, never predicted): refused with the
    parameter named, then aligned by padding the student (fused: per chunk) or truncating."""
    from tests import _tiny_hf

    student = tiny_gpt2(2).double()
    big = _tiny_hf.VOCAB + 7
    old = _tiny_hf.VOCAB
    try:
        _tiny_hf.VOCAB = big
        teacher = tiny_gpt2(1).double()
    finally:
        _tiny_hf.VOCAB = old
    with torch.no_grad():  # padded ids carry no probability
        teacher.lm_head.weight[old:] = 0.0
        teacher.transformer.wte.weight[old:] = 0.0
    data = batch(3)
    crit = gpu.AMiDLoss(-5.0, 0.1, shift_labels=True)
    with pytest.raises(ValueError, match="vocab_alignment"):
        gpu.hf.amid_compute_loss(student, teacher, data, crit, fused=False)
    with pytest.raises(ValueError, match="vocab_alignment"):
        gpu.hf.amid_compute_loss(student, teacher, data, crit, fused=True)
    values = {}
    for fused in (False, True):
        for alignment in ("pad", "truncate"):
            if alignment == "truncate":
                continue  # the padded ids have logit 0 here: real mass, refused (below)
            values[fused, alignment], _ = gpu.hf.amid_compute_loss(
                student, teacher, data, crit, fused=fused, vocab_alignment=alignment
            )
    assert_within(values[True, "pad"].item(), values[False, "pad"].item(),
                  tolerance("gpu", "loss", "float64"))  # fmt: skip
    with pytest.raises(ValueError, match="truncate"):
        gpu.hf.amid_compute_loss(student, teacher, data, crit, fused=True,
                                 vocab_alignment="truncate")  # fmt: skip
