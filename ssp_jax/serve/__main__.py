"""Serve a model (or a training checkpoint) behind an OpenAI-compatible HTTP API.

  python -m ssp_jax.serve --model smollm2-135m-instruct --host 127.0.0.1 --port 8000
  python -m ssp_jax.serve --checkpoint runs/demo/checkpoints/2 --port 8000

Endpoints: /v1/models, /v1/chat/completions, /v1/completions (log-probs, stream=true).
Concurrent requests are batched; answers stream as they are generated. Any OpenAI client works
against it, and so does a remote judge (`judge.url=http://127.0.0.1:8000/v1`).

Beyond this machine: give --api-key KEY (or set SSP_API_KEY); clients then send
`Authorization: Bearer KEY`. Binding to a non-loopback address without a key needs
--allow-unauthenticated. Limits (defaults in brackets) answer with OpenAI error bodies.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import pathlib
from typing import Sequence

from ssp_jax import preflight
from ssp_jax.cli import UserError, run
from ssp_jax.serve.api import ServerLimits
from ssp_jax.serve.engine import (DEFAULT_MAX_NUM_SEQS, DEFAULT_PREFILL_CHUNK,
                                  DEFAULT_SEGMENT)

API_KEY_ENV = "SSP_API_KEY"
_LIMITS = ServerLimits()


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
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help="requests must send 'Authorization: Bearer KEY' "
                   f"(default: ${API_KEY_ENV})")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve a non-loopback --host without an API key")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most rows (requests x n) in one batch [16]")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request reaching an idle server waits for others to batch")
    p.add_argument("--max-cache-len", type=int, default=None,
                   help="longest prompt + max_tokens (default: the model's context length)")
    p.add_argument("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS,
                   help="sequences (requests x n) queued or running; more get 429 "
                   f"[{DEFAULT_MAX_NUM_SEQS}]")
    p.add_argument("--max-tokens-in-flight", type=int, default=None,
                   help="KV-cache tokens of a running batch (padding rows included); a "
                   "request needing more gets 400 [the larger of one full-length row and a "
                   "cache the size of the parameters]")
    p.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK,
                   help=f"prompt tokens prefilled per step [{DEFAULT_PREFILL_CHUNK}]")
    p.add_argument("--max-rows-per-request", type=int, default=_LIMITS.max_rows,
                   help=f"prompts x n in one request [{_LIMITS.max_rows}]")
    p.add_argument("--max-tokens-limit", type=int, default=_LIMITS.max_tokens,
                   help=f"largest max_tokens a request may ask for [{_LIMITS.max_tokens}]")
    p.add_argument("--max-body-bytes", type=int, default=_LIMITS.max_body_bytes,
                   help=f"largest request body; larger gets 413 [{_LIMITS.max_body_bytes}]")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_args(args: argparse.Namespace) -> None:
    """Raises UserError naming the first bad flag."""
    if args.model is None and args.checkpoint is None:
        raise UserError("give --model SPEC or --checkpoint DIR")
    for flag in ("max_batch", "max_num_seqs", "prefill_chunk", "max_rows_per_request",
                 "max_tokens_limit", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be ≥ 1, got {getattr(args, flag)}")
    if args.max_tokens_in_flight is not None and args.max_tokens_in_flight < 1:
        raise UserError(f"--max-tokens-in-flight must be ≥ 1, got {args.max_tokens_in_flight}")
    if args.api_key == "":
        raise UserError(f"--api-key (or ${API_KEY_ENV}) is empty")
    if args.api_key is None and not is_loopback(args.host) and not args.allow_unauthenticated:
        raise UserError(f"--host {args.host} accepts connections from other machines: give "
                        f"--api-key KEY (or set {API_KEY_ENV}), or --allow-unauthenticated")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    check_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.api_key is None and not is_loopback(args.host):
        logging.warning("serving %s WITHOUT an API key: anyone who can reach it can use it",
                        args.host)
    if args.checkpoint is not None:  # one line before any model loads (ssp_jax/preflight.py)
        preflight.check_checkpoint(args.checkpoint)
    else:
        preflight.check_model_spec(args.model, "--model")
    import uvicorn

    from ssp_jax.checkpoint import load_checkpoint, read_saved_config
    from ssp_jax.models import load
    from ssp_jax.serve.api import create_app
    from ssp_jax.serve.engine import Engine, kv_bytes_per_token

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
                    max_cache_len=args.max_cache_len, batch_wait_s=args.batch_wait_ms / 1000,
                    max_num_seqs=args.max_num_seqs,
                    max_tokens_in_flight=args.max_tokens_in_flight,
                    prefill_chunk=args.prefill_chunk, segment=DEFAULT_SEGMENT)
    logging.info("budget: %d KV-cache tokens in flight (%.0f MiB), %d sequences queued or "
                 "running", engine.max_tokens_in_flight,
                 engine.max_tokens_in_flight * kv_bytes_per_token(model.config) / 2**20,
                 engine.max_num_seqs)
    limits = ServerLimits(args.max_body_bytes, args.max_rows_per_request, args.max_tokens_limit)
    name = args.served_model_name or args.model or args.checkpoint
    app = create_app(engine, name, api_key=args.api_key, limits=limits)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    run(main)
