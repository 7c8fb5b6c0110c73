"""python -m ssp_jax.generate: a trained checkpoint (full fine-tuning and LoRA) answers as the
trainer's own policy does, the chat loop keeps the conversation, and the console stays quiet."""

import io
import os
import pathlib
import subprocess
import sys
import types

import pytest

from configs import tiny
from ssp_jax import generate as generate_cli
from ssp_jax import train as train_lib
from ssp_jax.models import load
from ssp_jax.rollout.sampler import generate_with_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPT = "how to make a story"
MAX_NEW = 8


def run_generate(*args, stdin=None, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "ssp_jax.generate", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=600)


def train_and_answer(workdir: pathlib.Path, lora_rank: int) -> str:
    """Trains the tiny config for 2 steps (LoRA adapters of `lora_rank`, 0 = full fine-tuning);
    returns the trained policy's greedy answer to PROMPT, decoded from the trainer's own
    parameters (the reference the checkpoint must reproduce)."""
    cfg = tiny.get_config()
    cfg.train.num_steps = 2
    cfg.ckpt.every_steps = 0
    cfg.model.lora.rank = lora_rank
    trainer = train_lib.Trainer(cfg, workdir)
    trainer.run()
    tok = trainer.tokenizer
    out = generate_with_params(trainer.model_cfg, trainer.policy_params,
                               [tok.chat_prompt(PROMPT)], MAX_NEW, temperature=0.0,
                               stop_ids=tok.stop_ids, pad_id=tok.pad_id)
    return tok.decode(out.tokens[0]).strip()


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_generate_with_a_checkpoint_answers_as_the_trained_policy(tmp_path, lora_rank):
    expected = train_and_answer(tmp_path, lora_rank)
    proc = run_generate("--checkpoint", str(tmp_path / "checkpoints" / "2"), "--prompt", PROMPT,
                        "--max-new-tokens", str(MAX_NEW))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"--- prompt 1 ---\n{expected}\n"), (proc.stdout, expected)


def test_chat_loop_answers_each_line_in_one_conversation(monkeypatch):
    model, tokenizer = load("tiny-random")
    seen = []

    answers = ["make", "step"]  # words of the tiny model's vocabulary

    def fake_sample(model, tokenizer, prompts, args, num_samples):
        seen.append(tokenizer.decode(prompts[0]))
        return [answers[len(seen) - 1]], 2

    monkeypatch.setattr(generate_cli, "sample", fake_sample)
    args = types.SimpleNamespace(system=None)
    out = io.StringIO()
    turns = generate_cli.chat(model, tokenizer, args, ["story\n", "poem\n", "\n", "never\n"], out)
    assert turns == 2
    assert out.getvalue().splitlines()[1:] == ["assistant: make", "assistant: step"]
    # the second prompt carries the first turn and its answer
    assert seen[1] == "user story assistant make user poem assistant", seen
    assert seen[0] == "user story assistant"


def test_chat_loop_runs_on_stdin_until_an_empty_line():
    proc = run_generate("--model", "tiny-random", "--max-new-tokens", "4",
                        stdin="how to make a story\nthe quick fox\n\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(line.startswith("assistant: ") for line in proc.stdout.splitlines()) == 2


def test_generate_prints_no_backend_chatter():
    # JAX_PLATFORMS unset: JAX probes for a TPU and logs its failure at INFO level
    proc = run_generate("--model", "tiny-random", "--prompt", "hi", "--max-new-tokens", "2",
                        env_extra={"JAX_PLATFORMS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Unable to initialize backend" not in proc.stderr
