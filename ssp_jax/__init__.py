"""ssp_jax: Safety Self-Play (attacker and defender in one policy) in JAX/Flax."""

import os

# transformers serves only tokenizers and chat templates here (no torch): silence its advice to
# install PyTorch, printed on import, before any module of ours imports it.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
