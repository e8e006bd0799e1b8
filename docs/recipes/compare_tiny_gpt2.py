"""Distil a tiny GPT-2 teacher into a smaller GPT-2 with several AMiD settings; held-out scores.

Run from the repository root (about a minute on one CPU core)::

    python docs/recipes/compare_tiny_gpt2.py

Teacher: GPT-2, 2 layers, width 64, vocabulary 512, its lm_head scaled by 6 (a peaked,
low-entropy distribution). Data: 256 training and 64 held-out sequences of 32 tokens
*sampled from the teacher*. Student: GPT-2, 1 layer, width 32. Each setting trains
``--steps`` AdamW steps (lr 3e-3, batch 16) with :func:`gpu.hf.amid_compute_loss` (fused
lm_head path), the same initialization and batches per seed. Scores, in float64 on the
held-out sequences: forward KL(p‖q) per position and the student's NLL of the sampled
tokens. Everything is built from configs; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: name -> (alpha, lam); KL(p‖r) (order "pr") throughout, λ = 0 is plain KD.
SETTINGS = {
    "KD (λ = 0)": (0.0, 0.0),
    "α = −5, λ = 0.1": (-5.0, 0.1),
    "α = 0, λ = 0.1": (0.0, 0.1),
}


def gpt2(seed: int, n_embd: int, n_layer: int, vocab: int, seq: int):
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=seq, n_embd=n_embd, n_layer=n_layer, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    import gpu
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
    for name, (alpha, lam) in SETTINGS.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            student = gpt2(10 + seed, 32, 1, vocab, seq)
            opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
            crit = gpu.AMiDFusedLinearLoss(alpha, lam, shift_labels=True)  # HF labels
            gen = torch.Generator().manual_seed(seed)
            for _ in range(args.steps):
                idx = torch.randint(0, train.shape[0], (16,), generator=gen)
                batch = {"input_ids": train[idx], "labels": train[idx]}
                loss, _ = hf.amid_compute_loss(student, teacher, batch, crit)
                opt.zero_grad()
                loss.backward()
                opt.step()
            kl, nll = scores(student)
            rows.append({"setting": name, "seed": seed, "kl": kl, "nll": nll})
            print(
                f"{name:17} seed {seed}: held-out KL(p‖q) {kl:.3f}  NLL {nll:.3f}  "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
