"""SmolLM2-135M-Instruct safety recipe for a 2-core CPU (about an hour): the defaults of
ssp_jax/default_config.py (every field commented there) with the settings below. With the
recipe's data, the 30 steps are 6 supervised updates (`sft.warm_start_steps`) and then 24
self-play steps.

The data comes from the config argument, never from what is in the working folder:

  --config configs/smollm2_135m.py              the built-in goals (no data files needed)
  --config configs/smollm2_135m.py:recipe       AdvBench and HarmBench val (standard
                                                behaviours) from data/
  --config configs/smollm2_135m.py:recipe=DIR   the same files under DIR instead of data/

`python -m ssp_jax.data.fetch harmbench advbench --dir data/` writes the two files
(data/advbench/harmful_behaviors.csv, data/harmbench/harmbench_behaviors_text_val.csv); a
missing one stops the run before the model loads. HarmBench's test split and XSTest stay out
of training, for evaluation.

The base model almost never declines (0-2% of sampled answers to AdvBench goals pass the strict
decline check), so most defender groups would have equal rewards. The strict judge therefore
gives graded credit (score 3) to what only the lenient detector calls a refusal, and such an
apology or hedged decline that the withholding classifier says gives nothing away is a soft
decline (0.6): more than degenerate text (0.3) or compliance (0), less than a real decline
(1.0); an apology followed by content earns 0.15. The defender's tiers are in
ssp_jax/rl/assemble.py."""

import posixpath

import ml_collections

from ssp_jax import default_config

RECIPE = "recipe"
DEFAULT_DATA_ROOT = "data"


def recipe_sources(root: str) -> list[dict]:
    """AdvBench (520 goals) and HarmBench val standard behaviours (41) under `root`."""
    return [
        dict(name="advbench", kind="advbench",
             path=posixpath.join(root, "advbench", "harmful_behaviors.csv"), weight=1.0),
        # the attacker copies contextual rows' long context: standard behaviours only
        dict(name="harmbench", kind="harmbench",
             path=posixpath.join(root, "harmbench", "harmbench_behaviors_text_val.csv"),
             weight=1.0, include_contextual=False),
    ]


def data_root(arg: str) -> str | None:
    """The recipe's data folder named by the config argument; None for the built-in goals."""
    if not arg:
        return None
    name, sep, root = arg.partition("=")
    if name != RECIPE or (sep and not root):
        raise ValueError(f"configs/smollm2_135m.py: unknown argument {arg!r}; valid: none "
                         f"(built-in goals), {RECIPE}, {RECIPE}=DIR")
    return root or DEFAULT_DATA_ROOT


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config.get_config()
    root = data_root(arg)
    if root is not None:
        c.data.sources = recipe_sources(root)
        # 6 supervised updates on the base model's own declines and answers first
        # (ssp_jax/sft.py), so that defender groups hold both a decline and an answer; the
        # built-in goals (a short demo) start from the base model
        c.sft.warm_start_steps = 6
    c.selfplay.goals_per_step = 3
    c.selfplay.attacks_per_goal = 3
    # one of the three slots puts the goal itself to the defender (held-out goals are asked
    # directly); the attacker trains on the other two
    c.selfplay.direct_attacks_per_goal = 1
    c.selfplay.responses_per_attack = 4  # larger defender groups for a rarely refusing model
    c.selfplay.benign_per_step = 4  # 16 of 60 defender rows (with 2 replayed attacks x 4)
    # more benign rows or lookalike prompts alone did not keep XSTest refusal down (RESULTS.md,
    # runs 2 and 3); a benign row's loss counts six times a harmful one's (3 after the warm
    # start over-refused: RESULTS.md, `sft_then_selfplay`)
    c.selfplay.benign_weight = 6.0
    c.selfplay.attacker_max_tokens = 48
    c.selfplay.defender_max_tokens = 48
    c.selfplay.temperature = 0.8
    c.judge.strict = True  # train against the decline check apologies cannot fake
    c.judge.partial_refusal_score = 3.0  # graded credit for an apology opener (docstring)
    c.rl.learning_rate = 2e-5
    c.rl.beta = 0.04  # KL to the reference keeps the text from degenerating (0.02: loops, run 3)
    # the KL reference is the policy self-play starts from: after the warm start its weights
    # (three seeds: strict attack success 0.81 -> 0.73 at XSTest refusal 0.065 -> 0.032;
    # RESULTS.md); without a warm start the loaded model, as before
    c.rl.reference = "warm_start"
    c.train.num_steps = 30
    c.ckpt.every_steps = 15
    return c
