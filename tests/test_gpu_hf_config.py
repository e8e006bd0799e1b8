"""gpu.hf.AMiDConfig from the command line, and the training script ``python -m gpu.hf.train``
on tiny GPT-2 models saved to disk in the test (nothing is downloaded)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("tokenizers")

from _tiny_hf import tiny_gpt2, word_tokenizer  # noqa: E402

import gpu  # noqa: E402
from gpu import hf  # noqa: E402
from gpu.hf.train import _join_numbers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv):
    (config,) = transformers.HfArgumentParser(hf.AMiDConfig).parse_args_into_dataclasses(argv)
    return config


def test_hf_argument_parser_fills_the_config():
    config = _parse(["--alpha", "-5", "--lam", "0.1", "--divergence", "kl"])
    crit = config.build_criterion()
    assert isinstance(crit, gpu.AMiDLoss) and not isinstance(crit, gpu.presets.PresetLoss)
    assert (crit.alpha, crit.lam, crit.divergence, crit.order) == (-5.0, 0.1, "kl", "pr")
    assert crit.shift_labels is True and crit.ignore_index == -100  # Hugging Face's labels
    assert config.build_schedule() is None
    assert _parse(["--alpha=-inf"]).build_criterion().alpha == -math.inf
    config = _parse(["--divergence", "ab", "--div_params", '{"alpha": 0.2, "beta": 0.7}',
                     "--order", "rq", "--kd_temperature", "2", "--kd_temperature_scaling",
                     "T2", "--ce_weight", "0.25", "--fused", "false"])  # fmt: skip
    crit = config.build_criterion()
    assert crit.div_params == {"alpha": 0.2, "beta": 0.7} and crit.order == "rq"
    assert (crit.temperature, crit.temperature_scaling) == (2.0, "T2")
    assert (config.ce_weight, config.fused) == (0.25, False)


def test_a_preset_with_its_parameter_and_a_schedule():
    config = _parse(["--preset", "taid", "--lam", "0.4", "--lam_end", "1.0",
                     "--schedule_shape", "cosine", "--schedule_steps", "10"])  # fmt: skip
    crit = config.build_criterion()
    assert isinstance(crit, gpu.presets.PresetLoss) and crit.parameter == ("t", 0.4)
    assert crit.preset == gpu.presets.get("taid", t=0.4).preset
    schedule = config.build_schedule()
    assert schedule.lam == [0.4, 1.0] and schedule.num_steps == 10
    assert schedule.values_at(5)[0] == pytest.approx(0.7)  # cosine at the midpoint
    gkd = _parse(["--preset", "gkd_jsd", "--lam", "0.2"]).build_criterion()
    assert gkd.terms == (("pr", 0.2), ("qr", 0.8))
    assert _parse(["--preset", "kd"]).build_criterion().lam == 0.0  # the preset's own λ


def test_the_trainer_takes_the_config(tmp_path):
    config = hf.AMiDConfig(preset="taid", lam=0.4, lam_end=1.0, ce_weight=0.5)
    trainer = hf.AMiDTrainer(
        model=tiny_gpt2(1), teacher_model=tiny_gpt2(2),
        args=transformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to=[]),
        amid_config=config,
    )  # fmt: skip
    assert trainer.criterion.parameter == ("t", 0.4) and trainer.ce_weight == 0.5
    assert trainer._amid_schedule().lam == [0.4, 1.0]


def test_numbers_after_options_are_joined():
    argv = ["--alpha", "-inf", "--lam", "0.1", "--alpha_end", "-1e3", "--x", "-5", "-v"]
    assert _join_numbers(argv) == ["--alpha=-inf", "--lam", "0.1", "--alpha_end=-1e3",
                                   "--x=-5", "-v"]  # fmt: skip


def test_the_training_script_runs(tmp_path):
    """``python -m gpu.hf.train`` as a user runs it, on tiny models saved to disk: it
    parses a negative α written as the docs print it (an infinite one:
    test_numbers_after_options_are_joined), trains with a λ schedule, logs α, λ and the
    KD and CE terms, and saves the student."""
    teacher, student = tiny_gpt2(2, n_embd=48), tiny_gpt2(1)
    teacher.save_pretrained(tmp_path / "teacher")
    student.save_pretrained(tmp_path / "student")
    word_tokenizer().save_pretrained(tmp_path / "student")
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(f"w{i}" for i in torch.randint(3, 97, (8,), generator=gen).tolist())
             for _ in range(8)]  # fmt: skip
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = [
        "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"),
        "--train_file", str(tmp_path / "train.txt"), "--max_length", "12",
        "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "4",
        "--logging_steps", "1", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
        "--alpha", "-5", "--lam", "0.1", "--lam_end", "0.3", "--schedule_steps", "2",
        "--divergence", "kl",
        "--ce_weight", "0.5", "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "gpu.hf.train", *argv], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "student saved to" in run.stdout
    assert (out / "config.json").is_file()
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert [h["amid/lam"] for h in logs] == pytest.approx([0.1, 0.2, 0.3])
    assert all(h["amid/alpha"] == -5.0 for h in logs)
    for h in logs:
        assert h["loss"] == pytest.approx(h["amid/kd"] + 0.5 * h["amid/ce"], rel=1e-5)


@pytest.mark.parametrize("module", ["gpu.hf._config", "gpu.hf._trainer"])
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0, result
