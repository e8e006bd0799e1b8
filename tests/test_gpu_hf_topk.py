"""The cached or served teacher recipe of :mod:`gpu.hf` on tiny models (no download): top-k
dataset columns, the collator that pads k, :func:`gpu.hf.amid_compute_loss` with no teacher
model; and teacher/student vocabularies of different sizes with ``vocab_alignment``."""

from __future__ import annotations

import functools
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


# --- AMiDTrainer with a cached or served teacher ------------------------------------------


def _trainer_args(tmp_path, **kw):
    from tests._tiny_hf import training_args

    return training_args(tmp_path, **kw)


def _one_step(tmp_path, student, data, **teacher):
    """One optimizer step of AMiDTrainer (batch of 4, no clipping): the loss of the step and
    the gradients before it."""
    from tests._tiny_hf import GradRecorder

    grads = GradRecorder()
    trainer = gpu.hf.AMiDTrainer(
        model=student, args=_trainer_args(tmp_path, logging_strategy="steps", logging_steps=1),
        train_dataset=data, callbacks=[grads],
        criterion=gpu.AMiDLoss(-5.0, 0.1, shift_labels=True, leftover="uniform"), **teacher,
    )  # fmt: skip
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "loss" in h]
    return trainer, log, grads.grads


@pytest.mark.parametrize("fused", [False, True])
def test_trainer_top_v_equals_the_dense_teacher_trainer(tmp_path, fused):
    """AMiDTrainer on dataset rows carrying the teacher's full distribution (k = V, in
    columns of other names than the default) takes the same step as AMiDTrainer with the
    teacher model: the same loss and gradients, float64 models."""
    import functools

    from tests._tiny_hf import Rows

    teacher, data = tiny_gpt2(1).double(), batch(3)
    _, dense_log, dense_grads = _one_step(
        tmp_path / "dense", tiny_gpt2(2).double(), Rows(data), teacher_model=teacher,
        fused=fused,
    )  # fmt: skip
    columns = ("ids_k", "logprobs_k")
    feats = [
        {"input_ids": f["input_ids"], "labels": f["labels"],
         columns[0]: f["teacher_topk_indices"], columns[1]: f["teacher_topk_logprobs"]}
        for f in _features(teacher, data, VOCAB, ragged=False)
    ]  # fmt: skip
    trainer, log, grads = _one_step(
        tmp_path / "sparse", tiny_gpt2(2).double(), feats, teacher_topk_columns=columns,
        fused=fused, data_collator=functools.partial(
            gpu.hf.collate_topk, logprob_dtype=torch.float64, columns=columns),
    )  # fmt: skip
    assert trainer.teacher_model is None and trainer.last_loss_info["fused"] == fused
    tol = tolerance("gpu", "loss", "float64")
    assert_within(log["amid/kd"], dense_log["amid/kd"], tol)
    assert_within(log["loss"], dense_log["loss"], tolerance("gpu", "loss", "float32"))  # logged
    for name, g in grads.items():  # as a float32 number
        assert_within(g.numpy(), dense_grads[name].numpy(), tolerance("gpu", "grad", "float64"),
                      what=name)  # fmt: skip


def test_trainer_top64_bucket_trains_from_dataset_columns(tmp_path):
    """A datasets.Dataset whose rows carry the teacher's top-64 (float32 columns of the
    default names, remove_unused_columns on, the default collator padding ragged k):
    AMiDTrainer with leftover="bucket" from the config brings the student closer to the
    teacher, on the fused path (the student has a plain lm_head) and the unfused one."""
    datasets = pytest.importorskip("datasets")
    from tests._tiny_hf import heldout_kl

    teacher, data, held = tiny_gpt2(1), batch(5, n=8), batch(6, n=8)
    rows = datasets.Dataset.from_list(_features(teacher, data, 64))
    for fused in (True, False):
        student = tiny_gpt2(4)
        before = heldout_kl(student, teacher, held)
        config = gpu.hf.AMiDConfig(alpha=-1.0, lam=0.1, leftover="bucket", fused=fused)
        trainer = gpu.hf.AMiDTrainer(
            model=student, teacher_topk_columns=True, train_dataset=rows, amid_config=config,
            args=_trainer_args(tmp_path / str(fused), max_steps=12, learning_rate=3e-3,
                               per_device_train_batch_size=8, logging_strategy="steps",
                               logging_steps=1),
        )  # fmt: skip
        assert trainer.teaching == {"leftover": "bucket"}
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert trainer.last_loss_info["fused"] == fused
        assert losses[-1] < 0.8 * losses[0], losses
        assert heldout_kl(student, teacher, held) < 0.8 * before


def test_trainer_teacher_errors(tmp_path):
    """Neither or both of teacher_model and teacher_topk_columns, bad column names, a
    batch without the columns, and ids beyond the student's vocabulary (named
    vocab_alignment; "truncate" drops them when they carry no probability)."""
    from tests._tiny_hf import Rows

    args = _trainer_args(tmp_path)
    with pytest.raises(TypeError, match=r"teacher_model=.*teacher_topk_columns="):
        gpu.hf.AMiDTrainer(model=tiny_gpt2(1), args=args)
    with pytest.raises(ValueError, match=r"teacher_model=.*teacher_topk_columns=.*both"):
        gpu.hf.AMiDTrainer(model=tiny_gpt2(1), args=args, teacher_model=tiny_gpt2(2),
                           teacher_topk_columns=True)  # fmt: skip
    for bad in (False, "ids", ("a", "a"), ("a", 1)):
        with pytest.raises(TypeError, match="teacher_topk_columns"):
            gpu.hf.AMiDTrainer(model=tiny_gpt2(1), args=args, teacher_topk_columns=bad)
    with pytest.raises(ValueError, match="vocab_alignment"):
        gpu.hf.AMiDTrainer(model=tiny_gpt2(1), args=args, teacher_topk_columns=True,
                           vocab_alignment="trim")  # fmt: skip
    with pytest.raises(TypeError, match=r"amid_config.*vocab_alignment"):
        gpu.hf.AMiDTrainer(model=tiny_gpt2(1), args=args, teacher_topk_columns=True,
                           vocab_alignment="pad", amid_config=gpu.hf.AMiDConfig())  # fmt: skip
    with pytest.raises(ValueError, match="leftover"):
        gpu.hf.AMiDConfig(leftover="zero")

    teacher, data = tiny_gpt2(1).double(), batch(3)
    trainer = gpu.hf.AMiDTrainer(model=tiny_gpt2(2).double(), args=args,
                                 teacher_topk_columns=("a", "b"),
                                 train_dataset=Rows(data))  # fmt: skip
    with pytest.raises(ValueError, match=r"\('a', 'b'\)"):
        trainer.compute_loss(trainer.model, data)

    # a teacher of V + 7 ids whose padded ids carry ~e^-40 each: its top-(V − 7) and the
    # padded ids, cached; "truncate" drops them (their mass is below the limit): the loss
    # of the top-(V − 7) alone
    collate = functools.partial(gpu.hf.collate_topk, logprob_dtype=torch.float64)
    feats = _features(teacher, data, VOCAB - 7, ragged=False)
    want_k = collate(feats)
    for f in feats:
        for ids, lps in zip(f["teacher_topk_indices"], f["teacher_topk_logprobs"], strict=True):
            ids += list(range(VOCAB, VOCAB + 7))
            lps += [-40.0] * 7
    batch_k = collate(feats)
    crit = gpu.AMiDLoss(-5.0, 0.1, shift_labels=True)
    student = tiny_gpt2(2).double()
    with pytest.raises(ValueError, match="vocab_alignment='truncate'"):
        gpu.hf.amid_compute_loss(student, None, batch_k, crit)
    trainer = gpu.hf.AMiDTrainer(model=student, args=args, teacher_topk_columns=True,
                                 criterion=crit, vocab_alignment="truncate")  # fmt: skip
    got = trainer.compute_loss(student, batch_k)
    want, _ = gpu.hf.amid_compute_loss(student, None, want_k, crit)
    assert_within(got.item(), want.item(), tolerance("gpu", "loss", "float64"))
