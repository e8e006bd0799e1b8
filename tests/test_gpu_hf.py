"""gpu.hf: AMiD in the Hugging Face Trainer, on tiny GPT-2 models built from configs.

Checked: gradient accumulation 2 gives the gradient of accumulation 1 on the same tokens;
the trained positions are exactly those whose *next* label is not -100 (against
:mod:`amid_ref` on the shifted logits); the fused lm_head path equals the logits path;
a checkpoint restores the λ schedule; the student's held-out KL to the teacher falls.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu import hf  # noqa: E402

VOCAB = 97
SEQ = 12


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_gpt2(seed: int, n_embd: int = 32, dtype=torch.float32):
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=n_embd, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).to(dtype)


def batch(seed: int, n: int = 4):
    """Token ids with ragged -100 label padding (prompt masked, tail padded)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=gen)
    labels = ids.clone()
    for i in range(n):
        labels[i, : 1 + i % 3] = -100  # a masked prompt
        labels[i, SEQ - (i % 4) :] = -100  # padding
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return self.data["input_ids"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        max_steps=1, learning_rate=1e-3, max_grad_norm=0.0, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0,
    )  # fmt: skip
    base.update(kw)
    return transformers.TrainingArguments(**base)


class _GradRecorder(transformers.TrainerCallback):
    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _one_step_grads(tmp_path, data, batch_size, accumulation, ddp_backend=None,
                    average_tokens_across_devices=True, **trainer_kw):  # fmt: skip
    rec = _GradRecorder()
    trainer = hf.AMiDTrainer(
        model=tiny_gpt2(1), teacher_model=tiny_gpt2(2, n_embd=48),
        args=_args(tmp_path, per_device_train_batch_size=batch_size,
                   gradient_accumulation_steps=accumulation, ddp_backend=ddp_backend,
                   average_tokens_across_devices=average_tokens_across_devices),
        train_dataset=_Rows(data), callbacks=[rec], **trainer_kw,
    )  # fmt: skip
    trainer.train()
    return rec.grads, trainer


@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
def test_accumulation_two_equals_one(tmp_path, fused):
    data = batch(0)
    kw = dict(criterion=gpu.AMiDLoss(alpha=0.0, lam=0.1), fused=fused, ce_weight=0.5)
    g1, t1 = _one_step_grads(tmp_path / "a1", data, 4, 1, **kw)
    g2, t2 = _one_step_grads(tmp_path / "a2", data, 2, 2, **kw)
    assert t1.last_loss_info["fused"] is fused and t2.last_loss_info["fused"] is fused
    assert t2.last_loss_info["divisor"] == t1.last_loss_info["n_tokens"]  # the step's count
    for name, a in g1.items():
        b = g2[name]
        scale = max(float(a.abs().max()), 1e-30)
        assert float((a - b).abs().max()) <= 1e-5 * scale, name


def _ddp_rank_main(out_path: str) -> None:
    """One rank of a 2-process gloo run of :func:`_one_step_grads` (environment from the
    test); rank 0 saves the step's gradients to ``out_path``."""
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        grads, trainer = _one_step_grads(
            __import__("pathlib").Path(tmp), batch(0), 2, 1,
            criterion=gpu.AMiDLoss(alpha=0.0, lam=0.1), ce_weight=0.5,
            ddp_backend="gloo", average_tokens_across_devices=True,
        )  # fmt: skip
        assert trainer.args.world_size == 2
        if trainer.args.process_index == 0:
            torch.save(grads, out_path)


@pytest.mark.slow
def test_two_processes_give_the_one_process_gradient(tmp_path):
    """DDP over gloo, 2 processes × 2 rows against 1 process × 4 rows: the step's gradient
    is the same (num_items_in_batch is the global count, DDP averages over processes, and
    the loss is scaled back by the process count, as Trainer.compute_loss does)."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp_grads.pt"
    code = (
        f"import sys; sys.path[:0] = [{str(root / 'tests')!r}, {str(root)!r}]; "
        f"import test_gpu_hf; test_gpu_hf._ddp_rank_main({str(out)!r})"
    )
    procs = []
    for rank in range(2):
        env = {
            **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(root), "PYTHONWARNINGS": "ignore",
        }  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    two = torch.load(out)
    one, _ = _one_step_grads(tmp_path / "one", batch(0), 4, 1,
                             criterion=gpu.AMiDLoss(alpha=0.0, lam=0.1), ce_weight=0.5)  # fmt: skip
    assert set(one) == set(two)
    for name, a in one.items():
        scale = max(float(a.abs().max()), 1e-30)
        assert float((a - two[name]).abs().max()) <= 1e-5 * scale, name


def test_masked_positions_are_the_shifted_minus_100():
    student, teacher = tiny_gpt2(1), tiny_gpt2(2, n_embd=48)
    with torch.no_grad():  # a peaked teacher: the per-position losses differ widely
        teacher.lm_head.weight.mul_(10.0)
    data = batch(1)
    crit = gpu.AMiDLoss(alpha=-1.0, lam=0.3, divergence="js")
    loss, info = hf.amid_compute_loss(student, teacher, data, crit, fused=False)
    fused_loss, _ = hf.amid_compute_loss(student, teacher, data, crit, fused=True)
    with torch.no_grad():
        s = student(data["input_ids"]).logits.double().numpy()
        t = teacher(data["input_ids"]).logits.double().numpy()
    labels = data["labels"].numpy()
    valid = np.zeros(labels.shape, dtype=bool)
    valid[:, :-1] = labels[:, 1:] != -100  # position t predicts token t+1
    want = amid_ref.amid_loss(s[valid], t[valid], -1.0, 0.3, "js").mean()
    assert info["n_tokens"] == valid.sum()
    tol = tolerance("gpu", "loss", "float32")
    assert_within(loss.item(), want, tol, what="logits path")
    assert_within(fused_loss.item(), want, tol, what="fused path")
    # one valid label at (b, k): the trained position is exactly (b, k - 1)
    per_pos = amid_ref.amid_loss(s, t, -1.0, 0.3, "js")
    for b, k in ((0, 5), (2, 1), (3, 7)):
        one = {**data, "labels": torch.full_like(data["labels"], -100)}
        one["labels"][b, k] = 3
        got, info = hf.amid_compute_loss(student, teacher, one, crit, fused=False)
        assert info["n_tokens"] == 1
        assert_within(got.item(), per_pos[b, k - 1], tol, what=f"label at {(b, k)}")
        bound = tol.atol + tol.rtol * abs(per_pos[b, k - 1])
        assert abs(per_pos[b, k] - per_pos[b, k - 1]) > 10 * bound  # the test can tell


def test_checkpoint_restores_the_schedule(tmp_path):
    data = batch(2, n=8)

    def run(out, max_steps, resume=None, seen=None):
        sched = hf.AMiDSchedule(lam=(0.1, 0.9), alpha=(-3.0, 0.0), num_steps=4)
        crit = gpu.AMiDLoss(alpha=-3.0, lam=0.1)
        args = _args(out, per_device_train_batch_size=2, max_steps=max_steps, save_strategy="steps",
                     save_steps=2, restore_callback_states_from_checkpoint=True)  # fmt: skip
        trainer = hf.AMiDTrainer(
            model=tiny_gpt2(1), teacher_model=tiny_gpt2(2), args=args,
            train_dataset=_Rows(data), criterion=crit, schedule=sched,
        )  # fmt: skip
        original = trainer.compute_loss

        def spy(model, inputs, *a, **k):
            out_ = original(model, inputs, *a, **k)
            seen.append((trainer.criterion.lam, trainer.criterion.alpha))
            return out_

        trainer.compute_loss = spy
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = []
    run(tmp_path / "full", 4, seen=full)
    assert [round(lam, 12) for lam, _ in full] == [0.1, 0.3, 0.5, 0.7]
    first = []
    run(tmp_path / "cut", 2, seen=first)
    state = json.loads((tmp_path / "cut" / "checkpoint-2" / "trainer_state.json").read_text())
    stored = state["stateful_callbacks"]["AMiDSchedule"]
    assert stored["args"]["lam"] == [0.1, 0.9] and stored["attributes"]["step"] == 1
    resumed = []
    trainer = run(tmp_path / "cut", 4, resume=str(tmp_path / "cut" / "checkpoint-2"), seen=resumed)
    assert first + resumed == full
    assert trainer._amid_schedule().lam_value == pytest.approx(0.7)


def _heldout_kl(student, teacher, data):
    with torch.no_grad():
        s = student(data["input_ids"]).logits.double().numpy()[:, :-1]
        t = teacher(data["input_ids"]).logits.double().numpy()[:, :-1]
    return float(amid_ref.amid_loss(s, t, 0.0, 0.0).mean())  # λ = 0: KL(p‖q)


def test_heldout_kl_to_teacher_falls(tmp_path):
    student, teacher = tiny_gpt2(1), tiny_gpt2(3, n_embd=48)
    with torch.no_grad():  # a teacher with a distinct, peaked distribution
        teacher.lm_head.weight.mul_(8.0)
    train, heldout = batch(4, n=16), batch(5, n=8)
    before = _heldout_kl(student, teacher, heldout)
    trainer = hf.AMiDTrainer(
        model=student, teacher_model=teacher, train_dataset=_Rows(train),
        args=_args(tmp_path, max_steps=25, learning_rate=3e-3),
        criterion=gpu.AMiDFusedLinearLoss(alpha=0.0, lam=0.1),
    )  # fmt: skip
    trainer.train()
    after = _heldout_kl(student, teacher, heldout)
    assert after < 0.8 * before, (before, after)
    metrics = trainer.evaluate(_Rows(heldout))  # the AMiD loss on held-out data
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


#: TRL's GKDConfig and generation still use transformers' renamed ``*gradient_checkpointing*``
#: argument (a FutureWarning inside transformers, not from this project).
GKD_WARNINGS = pytest.mark.filterwarnings("ignore:.*checkpointing.* is deprecated:FutureWarning")


def _gkd_trainer(tmp_path, student, teacher, n_chats, **config):
    """An AMiD GKDTrainer on a word-level tokenizer with a chat template, GKD's own ChatML
    collator and a chat dataset of random words (prompt 4 words, answer 5)."""
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns on import
        from trl.experimental.gkd import GKDConfig

    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="w0", eos_token="w1", unk_token="w0"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}w2 {% endif %}"
    )
    gen = torch.Generator().manual_seed(len(str(tmp_path)))
    chats = []
    for _ in range(n_chats):
        words = [f"w{i}" for i in torch.randint(3, VOCAB, (9,), generator=gen).tolist()]
        turns = [("user", words[:4]), ("assistant", words[4:])]
        chats.append({"messages": [{"role": r, "content": " ".join(w)} for r, w in turns]})
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_new_tokens=4,
        max_length=SEQ, learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=0, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=0.0,
    )  # fmt: skip
    cls = hf.amid_gkd_trainer()
    return cls(
        model=student, teacher_model=teacher, processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(chats), args=GKDConfig(**{**base, **config}),
        criterion=gpu.AMiDLoss(alpha=0.0, lam=0.1),
    )  # fmt: skip


def test_gkd_trainer_class_uses_the_amid_loss():
    pytest.importorskip("trl")
    cls = hf.amid_gkd_trainer()
    assert any(base.__name__ == "GKDTrainer" for base in cls.__mro__)
    assert all(
        c.__name__ != "GKDTrainer" for c in cls.__mro__[: cls.__mro__.index(hf.AMiDTrainerMixin)]
    )


@GKD_WARNINGS
def test_gkd_on_policy_batches_are_normalized_by_their_generated_tokens(tmp_path):
    """lmbda = 1: every batch is generated by the student; the loss is the AMiD mean over
    the generated target tokens (amid_ref on the same logits), not over the collated
    labels' count that the Trainer passed as num_items_in_batch."""
    trainer = _gkd_trainer(tmp_path, tiny_gpt2(1), tiny_gpt2(2, n_embd=48), 8,
                           lmbda=1.0, max_steps=2)  # fmt: skip
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(model, inputs, return_outputs, num_items_in_batch)
        with torch.no_grad():
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            s = model(input_ids=ids, attention_mask=mask).logits.double().numpy()
            t = trainer.teacher_model(input_ids=ids, attention_mask=mask).logits.double().numpy()
        labels = inputs["labels"].numpy()
        valid = np.zeros(labels.shape, dtype=bool)
        valid[:, :-1] = labels[:, 1:] != -100
        want = amid_ref.amid_loss(s[valid], t[valid], 0.0, 0.1).mean()
        seen.append(
            (float(loss.detach()), want, trainer.last_loss_info, num_items_in_batch, valid.sum())
        )
        return loss

    trainer.compute_loss = spy
    trainer.train()
    assert len(seen) == 2
    for got, want, info, num_items, n_valid in seen:
        assert info["n_tokens"] == n_valid > 0 and info["divisor"] == n_valid
        assert num_items is not None and int(num_items) != n_valid  # the stale count
        assert_within(got, want, tolerance("gpu", "loss", "float32"))


@GKD_WARNINGS
def test_gkd_trainer_distills(tmp_path):
    student, teacher = tiny_gpt2(1), tiny_gpt2(3, n_embd=48)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(8.0)
    heldout = batch(5, n=8)
    before = _heldout_kl(student, teacher, heldout)
    trainer = _gkd_trainer(tmp_path, student, teacher, 16, lmbda=0.0, seq_kd=False,
                           max_steps=25, learning_rate=3e-3)  # fmt: skip
    trainer.train()
    assert trainer.last_loss_info["divisor"] == trainer.last_loss_info["n_tokens"]
    after = _heldout_kl(student, teacher, heldout)
    assert after < 0.8 * before, (before, after)


def test_lm_head_detection_and_errors():
    student = tiny_gpt2(1)
    assert hf.lm_head_of(student) is student.lm_head
    student.config.final_logit_softcapping = 30.0
    assert hf.lm_head_of(student) is None
    with pytest.raises(ValueError, match="fused=True"):
        hf.amid_compute_loss(student, tiny_gpt2(2), batch(0), gpu.AMiDLoss(0.0, 0.1), fused=True)
    with pytest.raises(TypeError, match="teacher_model"):
        hf.AMiDTrainer(model=tiny_gpt2(1), args=_args("unused"))
    with pytest.raises(ValueError, match="shape"):
        hf.AMiDSchedule(lam=(0.0, 1.0), shape="step")
