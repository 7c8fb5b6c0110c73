"""Tiny random model and the built-in goals: a self-play step in well under a second (tests,
smoke runs). Starts from ssp_jax/default_config.py (all fields commented there)."""

import ml_collections

from ssp_jax import default_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config.get_config()
    c.model.spec = "tiny-random"  # random 2-layer llama with a ~100-word tokenizer
    c.model.max_cache_len = 256
    c.selfplay.goals_per_step = 8
    c.selfplay.responses_per_attack = 4  # more samples per step: a denser learning signal
    c.selfplay.attacker_max_tokens = 12
    c.selfplay.defender_max_tokens = 12
    c.selfplay.max_prompt_tokens = 96
    c.selfplay.temperature = 1.0
    c.selfplay.min_attack_chars = 4  # words are tokens here: short texts are still attacks
    c.selfplay.benign_per_step = 6  # a quarter of the defender rows (16 attacks + 2 replayed)
    c.selfplay.min_intent_similarity = 0.0  # no sentence encoder: a random model is off-topic
    c.selfplay.min_on_topic_similarity = 0.0  # every benign answer that is not a decline counts
    c.selfplay.withholding_check = False  # needs the MiniLM encoder: the strict check alone
    c.rl.learning_rate = 3e-2  # a random 2-layer model learns fast
    c.judge.max_tokens = 64
    # the judge's "empty" class scores as compliance: only a real refusal reaches the decline
    # tier (empty text earns the degenerate tier, 0.3, whatever this score)
    c.judge.empty_score = 5.0
    c.replay.capacity = 64
    c.train.sample_every = 5
    c.ckpt.every_steps = 10
    return c
