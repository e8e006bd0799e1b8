"""KD, TAID, GKD's JSD and AMiD at equal budget on tiny GPT-2 models: held-out scores.

Run from the repository root (about 30 s on one CPU core)::

    python docs/recipes/compare_methods.py

Each method is a criterion of :class:`gpu.hf.AMiDTrainer`: the presets
``gpu.presets.get("kd")``, ``gpu.presets.get("taid", t=0.4)`` with its t scheduled linearly
from 0.4 to 1 over the run (``gpu.hf.AMiDSchedule(lam=(0.4, 1.0))``: TAID's t is the
preset's λ), ``gpu.presets.get("gkd_jsd", beta=0.5)`` (GKD's generalized JSD on the
training sequences, off-policy), and AMiD at α = −5, λ = 0.1 (KL(p‖r)). Equal budget: the
same student initialization, the same batches in the same order, ``--steps`` AdamW steps
(lr 3e-3, batch 16) for every method and seed.

Teacher: GPT-2, 2 layers, width 64, vocabulary 512, its lm_head scaled by 6 (a peaked,
low-entropy distribution). Data: 256 training and 64 held-out sequences of 32 tokens
*sampled from the teacher*. Student: GPT-2, 1 layer, width 32. Scores, in float64 on the
held-out sequences: forward KL(p‖q) per position and the student's NLL of the sampled
tokens. Everything is built from configs; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: The methods compared; each entry builds the AMiDTrainer keyword arguments.
SETTINGS = ("KD", "TAID (t: 0.4 → 1)", "GKD-JSD (β = 0.5)", "AMiD (α = −5, λ = 0.1)")


def method(name: str) -> dict:
    """``criterion=`` (and ``schedule=``) of one method."""
    import gpu
    from gpu import hf

    if name == "KD":
        return {"criterion": gpu.presets.get("kd")}
    if name.startswith("TAID"):
        return {"criterion": gpu.presets.get("taid", t=0.4),
                "schedule": hf.AMiDSchedule(lam=(0.4, 1.0))}  # fmt: skip
    if name.startswith("GKD"):
        return {"criterion": gpu.presets.get("gkd_jsd", beta=0.5)}
    if name.startswith("AMiD"):
        # shift_labels=True: the Trainer's batches carry Hugging Face's unshifted labels
        return {"criterion": gpu.AMiDLoss(alpha=-5.0, lam=0.1, shift_labels=True)}
    raise ValueError(f"unknown method {name!r}")


def gpt2(seed: int, n_embd: int, n_layer: int, vocab: int, seq: int):
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=seq, n_embd=n_embd, n_layer=n_layer, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


class _Rows:
    """Training rows: ``input_ids`` and Hugging Face's unshifted ``labels`` (the same ids)."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return self.ids.shape[0]

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main(argv: list[str] | None = None) -> list[dict]:
    import torch
    import transformers

    from gpu import hf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vocab, seq = args.vocab, args.seq
    teacher = gpt2(0, 64, 2, vocab, seq).eval()
    with torch.no_grad():
        teacher.lm_head.weight.mul_(6.0)

    def sample(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (n, 1), generator=gen)
        with torch.no_grad():
            for _ in range(seq - 1):
                p = teacher(ids).logits[:, -1].softmax(-1)
                ids = torch.cat([ids, torch.multinomial(p, 1, generator=gen)], 1)
        return ids

    train, held = sample(args.train, 1), sample(args.heldout, 2)

    def scores(student) -> tuple[float, float]:
        with torch.no_grad():
            lq = student(held).logits[:, :-1].double().log_softmax(-1)
            lp = teacher(held).logits[:, :-1].double().log_softmax(-1)
        kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
        nll = float(-lq.gather(-1, held[:, 1:, None]).mean())
        return kl, nll

    rows = []
    for name in SETTINGS:
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            student = gpt2(10 + seed, 32, 1, vocab, seq)
            with tempfile.TemporaryDirectory() as out:
                training = transformers.TrainingArguments(
                    output_dir=out, max_steps=args.steps, per_device_train_batch_size=16,
                    learning_rate=3e-3, lr_scheduler_type="constant", warmup_steps=0,
                    seed=seed, use_cpu=True, report_to=[], save_strategy="no",
                    disable_tqdm=True, logging_strategy="steps",
                    logging_steps=max(1, args.steps // 5), log_level="error",
                )  # fmt: skip
                trainer = hf.AMiDTrainer(model=student, teacher_model=teacher, args=training,
                                         train_dataset=_Rows(train), **method(name))  # fmt: skip
                trainer.remove_callback(transformers.PrinterCallback)
                trainer.train()
            logged = [h for h in trainer.state.log_history if "amid/kd" in h][-1]
            kl, nll = scores(student)
            rows.append({"setting": name, "seed": seed, "kl": kl, "nll": nll, "last_log": logged})
            shown = ", ".join(f"{k[5:]} {v:.3g}" for k, v in logged.items() if k[:5] == "amid/")
            print(
                f"{name:23} seed {seed}: held-out KL(p‖q) {kl:.3f}  NLL {nll:.3f}  "
                f"[last log: {shown}] ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
