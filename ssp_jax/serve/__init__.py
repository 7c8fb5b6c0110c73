"""`python -m ssp_jax.serve`: an OpenAI-compatible server over our own jitted programs.

`engine` batches concurrent requests under a memory budget and runs them with `programs`
(chunked prefill, decoding in segments, with log-probs); `detok` turns tokens into text as
they arrive (stop strings, token texts in context); `api` maps the OpenAI HTTP shapes, keys,
limits and streaming onto the engine.
"""

from ssp_jax.serve.api import create_app
from ssp_jax.serve.engine import Engine, Sample, Sampling

__all__ = ["Engine", "Sample", "Sampling", "create_app"]
