"""Tiny Hugging Face models, batches, tokenizers and chat data built in code for the gpu.hf
tests (nothing is downloaded)."""

from __future__ import annotations

import os

import torch
import transformers

import amid_ref

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB = 97
SEQ = 12


def tiny_gpt2(seed: int, n_embd: int = 32, dtype=torch.float32):
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=n_embd, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1,
        pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).to(dtype)


def batch(seed: int, n: int = 4):
    """Token ids with ragged -100 label padding (prompt masked, tail padded): Hugging
    Face's unshifted labels (``labels == input_ids`` where not ignored)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=gen)
    labels = ids.clone()
    for i in range(n):
        labels[i, : 1 + i % 3] = -100  # a masked prompt
        labels[i, SEQ - (i % 4) :] = -100  # padding
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


class Rows(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return self.data["input_ids"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def training_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        max_steps=1, learning_rate=1e-3, max_grad_norm=0.0, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0,
    )  # fmt: skip
    base.update(kw)
    return transformers.TrainingArguments(**base)


class GradRecorder(transformers.TrainerCallback):
    """The gradients of every optimizer step, before the step."""

    def __init__(self):
        self.steps = []

    @property
    def grads(self):
        return self.steps[0] if self.steps else None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})


def heldout_kl(student, teacher, data) -> float:
    """Mean KL(p‖q) over every position but the last, by amid_ref in float64."""
    with torch.no_grad():
        s = student(data["input_ids"]).logits.double().numpy()[:, :-1]
        t = teacher(data["input_ids"]).logits.double().numpy()[:, :-1]
    return float(amid_ref.amid_loss(s, t, 0.0, 0.0).mean())  # λ = 0: KL(p‖q)


#: Special tokens that are not prefixes of any word ("w1" as the end of sequence would be
#: matched inside "w17", which then reads as two tokens), and an assistant marker that the
#: template writes both in the full conversation and as the generation prompt, so that the
#: prompt is a prefix of the conversation (the collator splits them by that prefix).
SPECIALS = {"<pad>": 0, "</s>": 1, "<|assistant|>": 2}


def word_tokenizer():
    """A word-level tokenizer over ``w3 .. w96`` with a minimal chat template."""
    tokenizers = __import__("tokenizers")
    vocab = {**SPECIALS, **{f"w{i}": i for i in range(len(SPECIALS), VOCAB)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<pad>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|> {% endif %}"
        "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    return tokenizer


def chats(n: int, seed: int) -> list[dict]:
    """Conversations of random words: a 4-word prompt and a 5-word answer."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(len(SPECIALS), VOCAB, (9,), generator=gen).tolist()
        words = [f"w{i}" for i in ids]
        turns = [("user", words[:4]), ("assistant", words[4:])]
        out.append({"messages": [{"role": r, "content": " ".join(w)} for r, w in turns]})
    return out
