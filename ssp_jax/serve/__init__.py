"""`python -m ssp_jax.serve`: an OpenAI-compatible server over our own jitted sampler.

`engine` batches concurrent requests into sampler calls, `logprobs` computes exact next-token
log-probabilities, `api` maps the OpenAI HTTP shapes onto the engine.
"""

from ssp_jax.serve.api import create_app
from ssp_jax.serve.engine import Engine, Sample, Sampling

__all__ = ["Engine", "Sample", "Sampling", "create_app"]
