"""The small random model and prompts the sampler tests share."""

from ssp_jax.models import ModelConfig

CFG = ModelConfig("llama", vocab_size=97, hidden_size=64, intermediate_size=128, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256)
PROMPTS = [[5, 6, 7, 8, 9], [10, 11, 12], [40, 41, 42, 43, 44, 45, 46]]  # three lengths
