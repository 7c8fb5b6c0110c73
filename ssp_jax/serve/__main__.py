"""Serve a model (or a training checkpoint) behind an OpenAI-compatible HTTP API.

  python -m ssp_jax.serve --model smollm2-135m-instruct --host 127.0.0.1 --port 8000
  python -m ssp_jax.serve --checkpoint runs/demo/checkpoints/20 --port 8000

Endpoints: /v1/models, /v1/chat/completions, /v1/completions (with logprobs). Concurrent
requests are batched into one sampler call. Any OpenAI client works against it, and so does a
remote judge (`judge.url=http://127.0.0.1:8000/v1`).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
from typing import Sequence

import uvicorn

from ssp_jax.cli import UserError, run
from ssp_jax.checkpoint import load_checkpoint, read_saved_config
from ssp_jax.models import load
from ssp_jax.serve.api import create_app
from ssp_jax.serve.engine import Engine


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="built-in name, local Hugging Face folder, .gguf file or "
                   "tiny-random; with --checkpoint, the base model it was trained from")
    p.add_argument("--checkpoint", help="a training checkpoint step folder whose parameters "
                   "are served (its base model comes from the checkpoint's config)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send (default: --model, else --checkpoint)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="parameter and compute dtype for --model (a checkpoint keeps its own)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most rows (requests x n) in one sampler call")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request reaching an idle server waits for others to batch")
    p.add_argument("--max-cache-len", type=int, default=None,
                   help="longest prompt + max_tokens (default: the model's context length)")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.model is None and args.checkpoint is None:
        raise UserError("give --model SPEC or --checkpoint DIR")
    if args.max_batch < 1:
        raise UserError(f"--max-batch must be ≥ 1, got {args.max_batch}")
    if args.checkpoint is not None:
        saved = read_saved_config(pathlib.Path(args.checkpoint).expanduser().absolute())
        base = saved["model"]["spec"]
        if args.model is not None and args.model != base:
            raise UserError(f"--model {args.model} is not the base model of {args.checkpoint} "
                            f"({base}); leave --model out to use the checkpoint's own")
        model, tokenizer, step = load_checkpoint(args.checkpoint)
        logging.info("serving step %d of %s (base model %s)", step, args.checkpoint, base)
    else:
        model, tokenizer = load(args.model, dtype=args.dtype)
    engine = Engine(model.config, model.params(), tokenizer, max_batch=args.max_batch,
                    max_cache_len=args.max_cache_len, batch_wait_s=args.batch_wait_ms / 1000)
    name = args.served_model_name or args.model or args.checkpoint
    try:
        uvicorn.run(create_app(engine, name), host=args.host, port=args.port, log_level="info")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    run(main)
