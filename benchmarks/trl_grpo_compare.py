"""Seconds per GRPO step and peak resident memory: ssp_jax vs Hugging Face TRL's GRPOTrainer
(PyTorch), same CPU.

  pip install trl==1.16.0 peft      # benchmark only; keeps the installed torch
  python benchmarks/trl_grpo_compare.py --steps 3
  python benchmarks/trl_grpo_compare.py --steps 3 --lora 16     # adapters on both sides

Matched setting on both sides: SmolLM2-135M-Instruct (the GGUF dequantized to float32 and
written once as a Hugging Face folder that both sides load),
4 chat prompts per step x 4 samples each, 64 new tokens at temperature 0.7 (ours never stops
early; TRL's completions all ran to the 64-token limit in our runs), reward 1
for a refusal (ssp_jax's refusal detector) else 0, group-normalised advantages, one AdamW
update on the 16 completions, no KL term. Ours runs the library's own pieces (sampler,
grouped packing: each prompt once per group, jitted update); TRL runs `GRPOTrainer.train()`.
The first step of each (compilation / warm-up) is reported separately; the figure is the mean
of the following steps. With `--lora R` both train rank-R adapters (alpha 2R, all attention
and MLP projections, no dropout; TRL through peft) at learning rate 1e-4. Each side runs in
its own process; its peak resident memory is that process's high-water mark (`VmHWM`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from ssp_jax.data.builtin import builtin_items
from ssp_jax.default_config import get_config
from ssp_jax.judge.refusal import refusal_detector
from ssp_jax.models import load, lora, save_hf
from ssp_jax.models.config import LoraConfig
from ssp_jax.rl.advantages import group_advantages
from ssp_jax.rl.batch import pack_groups
from ssp_jax.rl.update import init_train_state, make_train_step
from ssp_jax.sections import rl_section
from ssp_jax.rollout.sampler import bucket_length, generate_with_params

PROMPTS_PER_STEP, SAMPLES, NEW_TOKENS, TEMPERATURE = 4, 4, 64, 0.7
LR, LORA_LR = 1e-6, 1e-4


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (Linux `VmHWM`), GiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def ours(folder: pathlib.Path, goals: list[str], steps: int, rank: int
         ) -> tuple[list[float], list[float]]:
    """Seconds of each step (sample, score, advantages, update) with ssp_jax, and of the
    update alone."""
    model, tok = load(folder)
    # rematerialized blocks, as the trainer's default config runs them
    model_cfg, base = model.config.replace(remat=get_config().model.remat), model.params()
    del model
    cfg = rl_section(learning_rate=LORA_LR if rank else LR)
    is_refusal = refusal_detector()
    opt = cfg.optimizer(num_steps=steps + 1)
    if rank:  # adapters trained, base frozen
        model_cfg = model_cfg.replace(lora=LoraConfig(rank=rank, alpha=2.0 * rank))
        state = init_train_state(lora.init_adapters(model_cfg, jax.random.key(0)), opt)
    else:
        state = init_train_state(base, opt)
    policy = lambda: lora.with_adapters(base, state.params) if rank else state.params  # noqa
    train_step = make_train_step(model_cfg, cfg, opt, temperature=TEMPERATURE,
                                 num_steps=steps + 1)
    times, updates = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        prompts = [tok.chat_prompt(g) for g in
                   goals[step * PROMPTS_PER_STEP:(step + 1) * PROMPTS_PER_STEP]]
        out = generate_with_params(model_cfg, policy(), prompts, NEW_TOKENS,
                                   temperature=TEMPERATURE, num_samples=SAMPLES, seed=step,
                                   stop_ids=(), pad_id=tok.pad_id, max_cache_len=512)
        rewards = np.array([is_refusal(tok.decode(t)) for t in out.tokens], np.float32)
        adv = group_advantages(rewards, np.arange(len(rewards)) // SAMPLES, scale_by_std=True)
        batch = pack_groups(prompts, out.tokens, out.logprobs, adv,
                            np.ones(len(out.tokens), np.float32), group_size=SAMPLES,
                            num_groups=len(prompts),
                            prompt_length=bucket_length(max(map(len, prompts)), 512),
                            completion_length=NEW_TOKENS, pad_id=tok.pad_id)
        update_start = time.perf_counter()
        state, metrics = train_step(state, base if rank else None, (jax.device_put(batch),), None)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        updates.append(time.perf_counter() - update_start)
    return times, updates


def trl(folder: pathlib.Path, goals: list[str], steps: int, rank: int) -> list[float]:
    """Seconds of each GRPOTrainer step (generation, reward, loss, update)."""
    import datasets
    import torch
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    is_refusal = refusal_detector()

    def refusal_reward(completions, **_):
        return [float(is_refusal(c[0]["content"] if isinstance(c, list) else c))
                for c in completions]

    data = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": g}]} for g in goals])
    stamps: list[float] = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *_, **__):
            stamps.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    config = GRPOConfig(
        output_dir="/tmp/trl_grpo_compare", per_device_train_batch_size=PROMPTS_PER_STEP * SAMPLES,
        num_generations=SAMPLES, max_completion_length=NEW_TOKENS, temperature=TEMPERATURE,
        learning_rate=LORA_LR if rank else LR, beta=0.0, max_steps=steps + 1, use_cpu=True, report_to=[],
        save_strategy="no", logging_steps=1, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=1.0, seed=0)
    peft_config = None
    if rank:
        import peft

        peft_config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                      target_modules=list(LoraConfig().targets),
                                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=refusal_reward, args=config,
                          train_dataset=data, processing_class=tokenizer, callbacks=[Timer()],
                          peft_config=peft_config)
    trainer.train()
    return [end - begin for begin, end in zip(stamps[::2], stamps[1::2])]


def run_side(side: str, folder: pathlib.Path, steps: int, rank: int) -> dict:
    """Runs one side in a fresh process; its step times and peak resident memory."""
    cmd = [sys.executable, __file__, "--side", side, "--folder", str(folder),
           "--steps", str(steps), "--lora", str(rank)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up step")
    p.add_argument("--lora", type=int, default=0, help="adapter rank on both sides (0 = off)")
    p.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    goals = [item.text for item in builtin_items()] * 4
    if args.side == "ours":
        times, updates = ours(args.folder, goals, args.steps, args.lora)
        print(json.dumps({"times": times, "updates": updates, "peak_gib": peak_rss_gib()}))
        return
    if args.side == "trl":
        times = trl(args.folder, goals, args.steps, args.lora)
        print(json.dumps({"times": times, "peak_gib": peak_rss_gib()}))
        return
    # transformers marks GGUF-loaded models as quantized and refuses to train them, so both
    # sides read the same float32 weights from our Hugging Face export
    folder = pathlib.Path(tempfile.mkdtemp())
    save_hf(*load("smollm2-135m-instruct"), folder)
    theirs = run_side("trl", folder, args.steps, args.lora)
    mine = run_side("ours", folder, args.steps, args.lora)
    print(f"LoRA rank {args.lora}" if args.lora else "full fine-tuning")
    print(f"{'':<10}{'first step':>12}{'mean of next':>14}{'peak memory':>14}")
    for name, r in (("ssp_jax", mine), ("TRL", theirs)):
        t = r["times"]
        print(f"{name:<10}{t[0]:>11.1f}s{np.mean(t[1:]):>13.1f}s{r['peak_gib']:>10.2f} GiB")
    u = mine["updates"]
    print(f"ssp_jax update alone: first {u[0]:.1f}s, mean of next {np.mean(u[1:]):.1f}s")
    print(f"TRL / ssp_jax seconds per step: "
          f"{np.mean(theirs['times'][1:]) / np.mean(mine['times'][1:]):.2f}")


if __name__ == "__main__":
    main()
