"""Wall-time split of a full self-play step (attacker rollout, defender rollout, judge,
update, checkpoint) and the process's peak resident memory.

  python benchmarks/selfplay_step.py --config configs/smollm2_135m.py --steps 3

Runs the real Trainer in a temporary workdir: one warm-up step (compilation), then --steps
timed steps, then one timed checkpoint save (written and waited for). Peak resident memory
is the kernel's high-water mark of the whole process (`VmHWM`), after loading and after the
steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
from ml_collections.config_flags import config_flags

from ssp_jax.train import Trainer

PARTS = ("attacker_rollout", "defender_rollout", "judge", "update")


def peak_rss_gib() -> float:
    """The process's peak resident set size so far (Linux `VmHWM`), GiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/smollm2_135m.py")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    config = config_flags.ConfigFileFlagParser(name="config").parse(args.config)
    config.train.num_steps = args.steps + 1
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        loaded_gib = peak_rss_gib()
        trainer.step(0)  # compiles
        records = [trainer.step(i) for i in range(1, args.steps + 1)]
        start = time.perf_counter()
        trainer.save(args.steps + 1)
        trainer.ckpt.wait()
        save_s = time.perf_counter() - start
        trainer.ckpt.close()
        steps_gib = peak_rss_gib()
    print(f"{args.config} on {jax.devices()[0].device_kind} x{jax.device_count()}; "
          f"mean of {args.steps} steps after a warm-up step")
    total = np.mean([r["time/step"] for r in records])
    for part in PARTS:
        s = np.mean([r[f"time/{part}"] for r in records])
        print(f"  {part:<18}{s:8.2f} s  {s / total:6.1%}")
    print(f"  {'checkpoint save':<18}{save_s:8.2f} s")
    sampled = np.mean([r["tokens_per_second"] for r in records])
    print(f"  {'whole step':<18}{total:8.2f} s  ({sampled:.1f} sampled tokens/s)")
    print(f"  peak resident memory: {loaded_gib:.2f} GiB after start-up, {steps_gib:.2f} GiB "
          "after the steps")


if __name__ == "__main__":
    main()
