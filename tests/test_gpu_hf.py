"""gpu.hf: AMiD in the Hugging Face Trainer, on tiny GPT-2 models built from configs.

Checked: gradient accumulation 2 gives the gradient of accumulation 1 on the same tokens;
the trained positions are exactly those whose *next* label is not -100 (against
:mod:`amid_ref` on the shifted logits); the criterion's label convention, reduction and
ignore_index are honoured or refused; presets are criteria (against
:mod:`amid_ref.presets`), scheduled; α, λ and the KD and CE terms are logged per logging
step over every micro-batch; the fused lm_head path equals the logits path; a checkpoint
restores the λ schedule; the student's held-out KL to the teacher falls.
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

from _tiny_hf import (  # noqa: E402
    GradRecorder,
    Rows,
    batch,
    heldout_kl,
    tiny_gpt2,
    training_args,
)

import amid_ref  # noqa: E402
import gpu  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402
from gpu import hf  # noqa: E402

TOL = tolerance("gpu", "loss", "float32")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hf_crit(**kw):
    """An AMiD criterion for Hugging Face's unshifted labels."""
    return gpu.AMiDLoss(**{"alpha": 0.0, "lam": 0.1, **kw}, shift_labels=True)


def _one_step_grads(tmp_path, data, batch_size, accumulation, ddp_backend=None,
                    average_tokens_across_devices=True, **trainer_kw):  # fmt: skip
    rec = GradRecorder()
    trainer = hf.AMiDTrainer(
        model=tiny_gpt2(1), teacher_model=tiny_gpt2(2, n_embd=48),
        args=training_args(tmp_path, per_device_train_batch_size=batch_size,
                           gradient_accumulation_steps=accumulation, ddp_backend=ddp_backend,
                           average_tokens_across_devices=average_tokens_across_devices),
        train_dataset=Rows(data), callbacks=[rec], **trainer_kw,
    )  # fmt: skip
    trainer.train()
    return rec.grads, trainer


def _assert_same_grads(a_grads, b_grads, rtol=1e-5):
    assert set(a_grads) == set(b_grads)
    for name, a in a_grads.items():
        scale = max(float(a.abs().max()), 1e-30)
        assert float((a - b_grads[name]).abs().max()) <= rtol * scale, name


@pytest.mark.parametrize("fused", [False, True], ids=["logits", "fused"])
def test_accumulation_two_equals_one(tmp_path, fused):
    data = batch(0)
    kw = dict(criterion=_hf_crit(), fused=fused, ce_weight=0.5)
    g1, t1 = _one_step_grads(tmp_path / "a1", data, 4, 1, **kw)
    g2, t2 = _one_step_grads(tmp_path / "a2", data, 2, 2, **kw)
    assert t1.last_loss_info["fused"] is fused and t2.last_loss_info["fused"] is fused
    assert t2.last_loss_info["divisor"] == t1.last_loss_info["n_tokens"]  # the step's count
    _assert_same_grads(g1, g2)


def test_a_sum_criterion_is_not_normalized(tmp_path):
    """reduction='sum' is honoured: the step's gradient is N times the mean's, with
    accumulation 2 as with 1 (no division by the accumulation steps)."""
    data = batch(0)
    g_mean, t = _one_step_grads(tmp_path / "m", data, 2, 2, criterion=_hf_crit())
    g_sum, _ = _one_step_grads(tmp_path / "s", data, 2, 2, criterion=_hf_crit(reduction="sum"))
    n = t.last_loss_info["divisor"]
    _assert_same_grads({k: v * n for k, v in g_mean.items()}, g_sum)


def _ddp_rank_main(out_path: str) -> None:
    """One rank of a 2-process gloo run of :func:`_one_step_grads` (environment from the
    test); rank 0 saves the step's gradients to ``out_path``."""
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        grads, trainer = _one_step_grads(
            __import__("pathlib").Path(tmp), batch(0), 2, 1, criterion=_hf_crit(), ce_weight=0.5,
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
    one, _ = _one_step_grads(tmp_path / "one", batch(0), 4, 1, criterion=_hf_crit(),
                             ce_weight=0.5)  # fmt: skip
    _assert_same_grads(one, two)


def _models(peaked=10.0):
    student, teacher = tiny_gpt2(1), tiny_gpt2(2, n_embd=48)
    with torch.no_grad():  # a peaked teacher: the per-position losses differ widely
        teacher.lm_head.weight.mul_(peaked)
    return student, teacher


def _logits(student, teacher, data):
    with torch.no_grad():
        s = student(data["input_ids"]).logits.double().numpy()
        t = teacher(data["input_ids"]).logits.double().numpy()
    return s, t


def _shifted_valid(labels: np.ndarray) -> np.ndarray:
    valid = np.zeros(labels.shape, dtype=bool)
    valid[:, :-1] = labels[:, 1:] != -100  # position t predicts token t+1
    return valid


def test_masked_positions_are_the_shifted_minus_100():
    student, teacher = _models()
    data = batch(1)
    crit = gpu.AMiDLoss(alpha=-1.0, lam=0.3, divergence="js", shift_labels=True)
    loss, info = hf.amid_compute_loss(student, teacher, data, crit, fused=False)
    fused_loss, _ = hf.amid_compute_loss(student, teacher, data, crit, fused=True)
    s, t = _logits(student, teacher, data)
    valid = _shifted_valid(data["labels"].numpy())
    want = amid_ref.amid_loss(s[valid], t[valid], -1.0, 0.3, "js").mean()
    assert info["n_tokens"] == valid.sum()
    assert_within(loss.item(), want, TOL, what="logits path")
    assert_within(fused_loss.item(), want, TOL, what="fused path")
    # one valid label at (b, k): the trained position is exactly (b, k - 1)
    per_pos = amid_ref.amid_loss(s, t, -1.0, 0.3, "js")
    for b, k in ((0, 5), (2, 1), (3, 7)):
        one = {**data, "labels": torch.full_like(data["labels"], -100)}
        one["labels"][b, k] = data["input_ids"][b, k]
        got, info = hf.amid_compute_loss(student, teacher, one, crit, fused=False)
        assert info["n_tokens"] == 1
        assert_within(got.item(), per_pos[b, k - 1], TOL, what=f"label at {(b, k)}")
        bound = TOL.atol + TOL.rtol * abs(per_pos[b, k - 1])
        assert abs(per_pos[b, k] - per_pos[b, k - 1]) > 10 * bound  # the test can tell


def test_the_criterions_label_convention_is_honoured_or_refused():
    """shift_labels=False with labels aligned by the caller gives the loss of the shifted
    HF labels; the two contradictions that input_ids reveal are refused (a double shift,
    HF labels read as aligned); labels that are not the input tokens are read as told."""
    student, teacher = _models()
    data = batch(1)
    hf_labels = data["labels"]
    aligned = torch.full_like(hf_labels, -100)
    aligned[:, :-1] = hf_labels[:, 1:]
    shifted_crit = _hf_crit(alpha=-1.0, lam=0.3)
    aligned_crit = gpu.AMiDLoss(alpha=-1.0, lam=0.3)  # torch convention (the default)
    want, _ = hf.amid_compute_loss(student, teacher, data, shifted_crit, ce_weight=0.3)
    got, _ = hf.amid_compute_loss(student, teacher, {**data, "labels": aligned}, aligned_crit,
                                  ce_weight=0.3)  # fmt: skip
    assert_within(got.item(), want.item(), TOL)
    with pytest.raises(ValueError, match="double shift"):
        hf.amid_compute_loss(student, teacher, {**data, "labels": aligned}, shifted_crit)
    with pytest.raises(ValueError, match="shift_labels=True"):
        hf.amid_compute_loss(student, teacher, data, aligned_crit)
    # labels that are not the input tokens: nothing can be told, the criterion decides
    other = hf_labels.masked_fill(hf_labels != -100, 5)
    s, t = _logits(student, teacher, data)
    for crit, valid in ((shifted_crit, _shifted_valid(other.numpy())),
                        (aligned_crit, other.numpy() != -100)):  # fmt: skip
        got, info = hf.amid_compute_loss(student, teacher, {**data, "labels": other}, crit)
        want = amid_ref.amid_loss(s[valid], t[valid], -1.0, 0.3).mean()
        assert info["n_tokens"] == valid.sum()
        assert_within(got.item(), want, TOL)


def test_ignore_index_is_honoured_by_the_loss_and_refused_by_the_trainer(tmp_path):
    student, teacher = _models()
    data = batch(1)
    labels = data["labels"].masked_fill(data["labels"] == -100, -1)
    crit = _hf_crit(alpha=-1.0, lam=0.3, ignore_index=-1)
    got, info = hf.amid_compute_loss(student, teacher, {**data, "labels": labels}, crit,
                                     ce_weight=0.2)  # fmt: skip
    want, want_info = hf.amid_compute_loss(student, teacher, data, _hf_crit(alpha=-1.0, lam=0.3),
                                           ce_weight=0.2)  # fmt: skip
    assert info["n_tokens"] == want_info["n_tokens"]
    assert_within(got.item(), want.item(), TOL)
    with pytest.raises(ValueError, match="ignore_index"):
        hf.AMiDTrainer(model=tiny_gpt2(1), teacher_model=tiny_gpt2(2),
                       args=training_args(tmp_path), criterion=crit)  # fmt: skip
    with pytest.raises(ValueError, match="reduction='none'"):
        hf.AMiDTrainer(model=tiny_gpt2(1), teacher_model=tiny_gpt2(2),
                       args=training_args(tmp_path),
                       criterion=_hf_crit(reduction="none"))  # fmt: skip


PRESET_CASES = [
    ("kd", {}),
    ("rkl", {}),
    ("taid", {"t": 0.4}),
    ("gkd_jsd", {"beta": 0.3}),
    ("distillm_srkl", {}),
    ("abkd", {}),
]


@pytest.mark.parametrize("name,overrides", PRESET_CASES, ids=[c[0] for c in PRESET_CASES])
def test_presets_are_criteria(name, overrides):
    """A preset, its criterion form and a reference preset give amid_ref.presets' loss on
    the shifted positions, on both paths."""
    student, teacher = _models(peaked=4.0)
    data = batch(1)
    s, t = _logits(student, teacher, data)
    valid = _shifted_valid(data["labels"].numpy())
    want = amid_ref.presets.get(name, **overrides).loss(s[valid], t[valid]).mean()
    preset = gpu.presets.get(name, **overrides)
    for crit, fused in ((preset, False), (preset, True), (preset.preset, False),
                        (preset.criterion(shift_labels=True), True)):  # fmt: skip
        got, info = hf.amid_compute_loss(student, teacher, data, crit, fused=fused)
        assert_within(got.item(), want, TOL, what=f"{name} fused={fused}")
        assert info["lam"] == preset.lam


def test_a_scheduled_preset_follows_its_parameter(tmp_path):
    """TAID's t and GKD's β (with its term weights) follow an AMiDSchedule in a Trainer run,
    and every training log carries them: at each step the loss is amid_ref's preset at
    that step's value, on the student of that step."""
    data = batch(3, n=4)
    for name, key in (("taid", "t"), ("gkd_jsd", "beta")):
        student, teacher = tiny_gpt2(1), tiny_gpt2(2, n_embd=48)
        seen = []
        trainer = hf.AMiDTrainer(
            model=student, teacher_model=teacher, train_dataset=Rows(data),
            args=training_args(tmp_path / name, max_steps=3, logging_strategy="steps",
                               logging_steps=1),
            criterion=gpu.presets.get(name, **{key: 0.4}),
            schedule=hf.AMiDSchedule(lam=(0.4, 1.0), num_steps=2),
        )  # fmt: skip
        original = trainer.compute_loss

        def spy(model, inputs, *a, _orig=original, _seen=seen, _teacher=teacher, **k):
            s, t = _logits(model, _teacher, inputs)
            out = _orig(model, inputs, *a, **k)
            _seen.append((float(out.detach()), s, t, _shifted_valid(inputs["labels"].numpy())))
            return out

        trainer.compute_loss = spy
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        assert [h[f"amid/{key}"] for h in logs] == pytest.approx([0.4, 0.7, 1.0])
        assert [h["amid/lam"] for h in logs] == pytest.approx([0.4, 0.7, 1.0])
        for (got, s, t, valid), value in zip(seen, (0.4, 0.7, 1.0), strict=True):
            ref = amid_ref.presets.get(name, **{key: value})
            assert_within(got, ref.loss(s[valid], t[valid]).mean(), TOL, what=f"{name} {value}")


def test_logs_carry_alpha_lambda_and_both_terms_over_every_micro_batch(tmp_path):
    """Accumulation 2, logging every step: amid/kd and amid/ce of the first step are the
    means over *both* micro-batches (amid_ref on the initial student, which the first
    step's batches see), and loss == amid/kd + ce_weight · amid/ce at every step."""
    data = batch(6, n=4)  # one optimizer step sees all four rows, in any order
    student, teacher = _models(peaked=4.0)
    s, t = _logits(student, teacher, data)
    valid = _shifted_valid(data["labels"].numpy())
    want_kd = amid_ref.amid_loss(s[valid], t[valid], -2.0, 0.2).mean()
    targets = np.zeros_like(data["labels"].numpy())
    targets[:, :-1] = data["input_ids"].numpy()[:, 1:]  # the next token
    log_q = s - np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)) - s.max(
        -1, keepdims=True
    )  # fmt: skip
    want_ce = -np.take_along_axis(log_q, targets[..., None], -1)[..., 0][valid].mean()
    trainer = hf.AMiDTrainer(
        model=student, teacher_model=teacher, train_dataset=Rows(data), ce_weight=0.25,
        args=training_args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           max_steps=2, logging_strategy="steps", logging_steps=1),
        criterion=_hf_crit(alpha=-2.0, lam=0.2), schedule=hf.AMiDSchedule(lam=(0.2, 0.6)),
    )  # fmt: skip
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    assert [h["amid/lam"] for h in logs] == pytest.approx([0.2, 0.4])
    assert all(h["amid/alpha"] == -2.0 for h in logs)
    assert_within(logs[0]["amid/kd"], want_kd, TOL, what="KD term of step 1")
    assert_within(logs[0]["amid/ce"], want_ce, TOL, what="CE term of step 1")
    for h in logs:
        assert_within(h["loss"], h["amid/kd"] + 0.25 * h["amid/ce"], TOL, what="loss = kd + w ce")
    # no micro-batch (two of the four rows) alone has the step's mean: the check can tell
    per_pos = amid_ref.amid_loss(s, t, -2.0, 0.2)
    bound = TOL.atol + TOL.rtol * abs(want_kd)
    for rows in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)):
        alone = per_pos[list(rows)][valid[list(rows)]].mean()
        assert abs(alone - want_kd) > 10 * bound, rows


def test_checkpoint_restores_the_schedule(tmp_path):
    data = batch(2, n=8)

    def run(out, max_steps, resume=None, seen=None):
        sched = hf.AMiDSchedule(lam=(0.1, 0.9), alpha=(-3.0, 0.0), num_steps=4)
        args = training_args(out, per_device_train_batch_size=2, max_steps=max_steps,
                             save_strategy="steps", save_steps=2,
                             restore_callback_states_from_checkpoint=True)  # fmt: skip
        trainer = hf.AMiDTrainer(
            model=tiny_gpt2(1), teacher_model=tiny_gpt2(2), args=args,
            train_dataset=Rows(data), criterion=_hf_crit(alpha=-3.0), schedule=sched,
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


def test_heldout_kl_to_teacher_falls(tmp_path):
    student, teacher = tiny_gpt2(1), tiny_gpt2(3, n_embd=48)
    with torch.no_grad():  # a teacher with a distinct, peaked distribution
        teacher.lm_head.weight.mul_(8.0)
    train, heldout = batch(4, n=16), batch(5, n=8)
    before = heldout_kl(student, teacher, heldout)
    trainer = hf.AMiDTrainer(
        model=student, teacher_model=teacher, train_dataset=Rows(train),
        args=training_args(tmp_path, max_steps=25, learning_rate=3e-3),
        criterion=gpu.AMiDFusedLinearLoss(alpha=0.0, lam=0.1, shift_labels=True),
    )  # fmt: skip
    trainer.train()
    after = heldout_kl(student, teacher, heldout)
    assert after < 0.8 * before, (before, after)
    metrics = trainer.evaluate(Rows(heldout))  # the AMiD loss on held-out data
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_lm_head_detection_and_errors():
    student = tiny_gpt2(1)
    assert hf.lm_head_of(student) is student.lm_head
    student.config.final_logit_softcapping = 30.0
    assert hf.lm_head_of(student) is None
    with pytest.raises(ValueError, match="fused=True"):
        hf.amid_compute_loss(student, tiny_gpt2(2), batch(0), _hf_crit(), fused=True)
    with pytest.raises(TypeError, match=r"teacher_model=.*or teacher_topk_columns=.*neither"):
        hf.AMiDTrainer(model=tiny_gpt2(1), args=training_args("unused"))
    with pytest.raises(ValueError, match="shape"):
        hf.AMiDSchedule(lam=(0.0, 1.0), shape="step")


def test_trainer_signature_names_its_parameters():
    import inspect

    params = inspect.signature(hf.AMiDTrainer.__init__).parameters
    names = ("teacher_model", "teacher_topk_columns", "criterion", "schedule", "ce_weight",
             "fused", "vocab_alignment", "amid_config")  # fmt: skip
    for name in names:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    doc = hf.AMiDTrainer.__doc__
    assert all(f"{name} :" in doc for name in names)


def test_schedule_constants_and_infinite_ends():
    """One number is a constant; a constant ±inf α stays ±inf (never inf − inf = NaN); a
    path between an infinite and a finite end is refused."""
    sched = hf.AMiDSchedule(lam=0.5, alpha=-math.inf, num_steps=4)
    for step in range(6):
        assert sched.values_at(step) == (0.5, -math.inf)
    assert hf.AMiDSchedule(lam=(0.0, 1.0), alpha=(-2.0, 2.0)).values_at(1, 4) == (0.25, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        hf.AMiDSchedule(lam=(0.0, 1.0), alpha=(-math.inf, 1.0))
