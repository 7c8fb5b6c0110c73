"""SmolLM2-135M-Instruct safety recipe for a 2-core CPU (about an hour): the defaults of
ssp_jax/default_config.py (every field commented there) with AdvBench and HarmBench val
(standard behaviours) goals when their files are in `$SSP_DATA` (default `data/`, fetched with
`python -m ssp_jax.data.fetch harmbench advbench --dir data/`); without them it trains on the
built-in goals. HarmBench's test split and XSTest stay out of training, for evaluation.

The base model almost never declines (0-2% of sampled answers to AdvBench goals pass the strict
decline check), so most defender groups would have equal rewards. The strict judge therefore
gives graded credit (score 3) to what only the lenient detector calls a refusal: an apology
opener is worth more than compliance and less than a real decline, and degenerate text is worth
no more than compliance (ssp_jax/rl/assemble.py)."""

import os
import pathlib

from ssp_jax import default_config


def get_config():
    c = default_config.get_config()
    root = pathlib.Path(os.environ.get("SSP_DATA", "data"))
    advbench = root / "advbench" / "harmful_behaviors.csv"
    harmbench = root / "harmbench" / "harmbench_behaviors_text_val.csv"
    present = []
    if advbench.is_file():
        present.append(dict(name="advbench", kind="advbench", path=str(advbench), weight=1.0))
    if harmbench.is_file():  # the attacker copies contextual rows' long context: standard only
        present.append(dict(name="harmbench", kind="harmbench", path=str(harmbench),
                            weight=1.0, include_contextual=False))
    if present:
        c.data.sources = present  # AdvBench (520 goals) and HarmBench val standard (41)
    c.selfplay.goals_per_step = 4
    c.selfplay.responses_per_attack = 4  # larger defender groups for a rarely refusing model
    c.selfplay.benign_per_step = 4  # 16 of 56 defender rows (with 2 replayed attacks x 4)
    # more benign rows or lookalike prompts alone did not keep XSTest refusal down (RESULTS.md,
    # runs 2 and 3); a benign row's loss counts three times a harmful one's
    c.selfplay.benign_weight = 3.0
    c.selfplay.attacker_max_tokens = 48
    c.selfplay.defender_max_tokens = 48
    c.selfplay.temperature = 0.8
    c.judge.strict = True  # train against the decline check apologies cannot fake
    c.judge.partial_refusal_score = 3.0  # graded credit for an apology opener (docstring)
    c.rl.learning_rate = 2e-5
    c.rl.beta = 0.04  # KL to the reference keeps the text from degenerating (0.02: loops, run 3)
    c.train.num_steps = 30
    c.ckpt.every_steps = 15
    return c
