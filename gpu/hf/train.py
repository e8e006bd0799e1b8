r"""Distil a causal LM into another with AMiD: ``python -m gpu.hf.train``.

The objective is a :class:`gpu.hf.AMiDConfig` and the run a ``transformers.TrainingArguments``,
both filled from the command line by ``HfArgumentParser``, next to the script's own
arguments (:class:`ScriptArguments`)::

    python -m gpu.hf.train --teacher TEACHER_DIR --student STUDENT_DIR \
        --train_file train.txt --output_dir out --max_steps 1000 \
        --alpha -5 --lam 0.1 --divergence kl            # AMiD, KL(p‖r)
    ... --preset taid --lam 0.4 --lam_end 1.0           # TAID, t from 0.4 to 1
    ... --preset gkd_jsd --lam 0.5 --ce_weight 0.1      # GKD's JSD(0.5) + 0.1 × CE

``--teacher`` and ``--student`` are anything ``AutoModelForCausalLM.from_pretrained``
loads (a directory or a Hub name; nothing is downloaded when ``HF_HUB_OFFLINE=1``), the
tokenizer is the student's unless ``--tokenizer`` names another, and the training text is
one example per line of ``--train_file`` (``.txt``; ``.jsonl``: a ``"text"`` field per
line), cut to ``--max_length`` tokens, with Hugging Face's unshifted labels (padding
ignored). A number after an option is read whole, ``--alpha -inf`` and ``--alpha -1e3``
included. Every logging step prints and records α, λ, a preset's parameter and the KD and
CE terms (``amid/...`` in ``trainer_state.json``); the student and the trainer's state are
saved to ``--output_dir``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu.hf._config import AMiDConfig

__all__ = ["ScriptArguments", "main"]


@dataclass
class ScriptArguments:
    """The models and data of a run.

    Parameters
    ----------
    teacher : str
        The teacher: a directory or a Hub name for ``AutoModelForCausalLM``.
    student : str
        The student, idem (the model that is trained and saved).
    train_file : str
        Training text: one example per line (``.txt``), or JSON lines with ``"text"``.
    tokenizer : str, optional
        The tokenizer; ``None``: the student's.
    max_length : int
        Tokens per example (longer ones are cut).
    """

    teacher: str = field(metadata={"help": "teacher model: a directory or a Hub name"})
    student: str = field(metadata={"help": "student model (trained and saved)"})
    train_file: str = field(metadata={"help": "one example per line (.txt) or JSON lines"})
    tokenizer: str | None = field(default=None, metadata={"help": "default: the student's"})
    max_length: int = field(default=512, metadata={"help": "tokens per example"})


def _join_numbers(argv: list[str]) -> list[str]:
    """``--opt -inf`` as ``--opt=-inf``: argparse takes a separate ``-inf`` or ``-1e3`` for
    an option (only plain negative decimals are read as values)."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-"):
            try:
                float(token)
            except ValueError:
                pass
            else:
                out[-1] = f"{out[-1]}={token}"
                continue
        out.append(token)
    return out


def _read_texts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--train_file {path!r} does not exist")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if file.suffix == ".jsonl":
        lines = [json.loads(line)["text"] for line in lines]
    if not lines:
        raise ValueError(f"--train_file {path!r} holds no example")
    return lines


class _Examples:
    """Tokenized examples (a map-style dataset of ``input_ids`` lists)."""

    def __init__(self, texts, tokenizer, max_length):
        self.rows = [
            {"input_ids": ids}
            for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) > 1
        ]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def main(argv: list[str] | None = None) -> Any:
    """Parse the arguments, train, save the student; returns the trainer.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; ``None``: ``sys.argv[1:]``.

    Returns
    -------
    gpu.hf.AMiDTrainer
        The trained trainer (``trainer.state.log_history`` holds the logs).
    """
    # transformers: optional (the hf extra), imported when the script runs
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        HfArgumentParser,
        TrainingArguments,
    )

    from gpu.hf import AMiDTrainer  # optional: transformers (the hf extra)

    parser = HfArgumentParser((ScriptArguments, AMiDConfig, TrainingArguments))
    argv = _join_numbers(list(sys.argv[1:] if argv is None else argv))
    script, amid, training = parser.parse_args_into_dataclasses(args=argv)
    tokenizer = AutoTokenizer.from_pretrained(script.tokenizer or script.student)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher = AutoModelForCausalLM.from_pretrained(script.teacher)
    student = AutoModelForCausalLM.from_pretrained(script.student)
    train = _Examples(_read_texts(script.train_file), tokenizer, script.max_length)
    trainer = AMiDTrainer(
        model=student, args=training, teacher_model=teacher, amid_config=amid,
        train_dataset=train, processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()  # trainer_state.json, with the log history
    logged = [h for h in trainer.state.log_history if "amid/lam" in h]
    if logged:
        last = logged[-1]
        values = ", ".join(
            f"{k.split('/', 1)[1]} {v:.4g}" for k, v in last.items() if k.startswith("amid/")
        )
        loss = last.get("loss", math.nan)
        print(f"step {last['step']}: loss {loss:.4g} ({values}); student saved to "
              f"{training.output_dir}")  # fmt: skip
    return trainer


if __name__ == "__main__":
    main()
