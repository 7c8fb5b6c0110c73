"""SmolLM2-135M-Instruct with LoRA adapters: the base weights stay frozen (and are the KL
reference); only rank-16 adapters on every attention and MLP projection are trained.
Starts from ssp_jax/default_config.py (all fields commented there)."""

import ml_collections

from ssp_jax import default_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config.get_config()
    c.model.lora.rank = 16  # adapter rank
    c.model.lora.alpha = 32.0  # scale alpha / rank = 2
    c.rl.learning_rate = 1e-4  # adapters start at zero and need a larger step than full FT
    c.rl.beta = 0.01  # KL to the base model costs no weight copy with adapters
    return c
