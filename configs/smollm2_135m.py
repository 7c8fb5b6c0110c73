"""SmolLM2-135M-Instruct safety recipe for a CPU: the defaults of ssp_jax/default_config.py
(every field commented there) with AdvBench and HarmBench (val) goals when their files are in
`$SSP_DATA` (default `data/`, fetched with `python -m ssp_jax.data.fetch harmbench advbench
--dir data/`); without them it trains on the built-in goals. HarmBench's test split and XSTest
stay out of training, for evaluation."""

import os
import pathlib

from ssp_jax import default_config


def get_config():
    c = default_config.get_config()
    root = pathlib.Path(os.environ.get("SSP_DATA", "data"))
    files = {"advbench": root / "advbench" / "harmful_behaviors.csv",
             "harmbench": root / "harmbench" / "harmbench_behaviors_text_val.csv"}
    present = [dict(name=name, kind=name, path=str(path), weight=1.0)
               for name, path in files.items() if path.is_file()]
    if present:
        c.data.sources = present  # AdvBench (520 goals) and HarmBench val (80)
    c.selfplay.responses_per_attack = 4  # larger defender groups: a rarely refusing model
    # still gets groups with a refusal in them (benign rows: 2 x 4 of 32 defender rows)
    c.selfplay.defender_max_tokens = 64
    c.judge.strict = True  # train against the decline check apologies cannot fake
    c.rl.learning_rate = 1e-5
    c.rl.beta = 0.04  # KL to the reference keeps the text from degenerating
    c.train.num_steps = 12
    c.ckpt.every_steps = 6
    return c
