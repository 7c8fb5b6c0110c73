"""Export a training checkpoint as a Hugging Face folder (for vLLM, lm-eval-harness, HarmBench).

  python -m ssp_jax.export --checkpoint runs/demo/checkpoints/20 --out exported/

The checkpoint's saved config names the base model (for the architecture and tokenizer);
the trained parameters replace its weights. The checkpoint and `--out` may be local or
`gs://` paths (a remote `--out` is written locally first, then copied).
"""

from __future__ import annotations

import argparse
import tempfile

from etils import epath

from ssp_jax import cli
from ssp_jax.checkpoint import load_checkpoint
from ssp_jax.models import save_hf
from ssp_jax.paths import PathLike, as_path, copy_tree, is_local


def export(checkpoint: PathLike, out: PathLike) -> epath.Path:
    """Writes the checkpoint's parameters with the base model's tokenizer to `out`."""
    model, tokenizer, step = load_checkpoint(checkpoint)
    out = as_path(out)
    if is_local(out):
        save_hf(model, tokenizer, out)
    else:  # safetensors and tokenizers write local files only
        with tempfile.TemporaryDirectory() as tmp:
            save_hf(model, tokenizer, tmp)
            copy_tree(epath.Path(tmp), out)
    print(f"exported step {step} of {checkpoint} to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint step folder")
    p.add_argument("--out", required=True, help="output Hugging Face folder")
    args = p.parse_args(argv)
    export(args.checkpoint, args.out)
    return 0


if __name__ == "__main__":
    cli.run(main)
