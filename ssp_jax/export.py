"""Export a training checkpoint as a Hugging Face folder (for vLLM, lm-eval-harness, HarmBench).

  python -m ssp_jax.export --checkpoint runs/demo/checkpoints/2 --out exported/
  python -m ssp_jax.export --checkpoint runs/lora/checkpoints/2 --out merged/ \\
      --peft-out adapter/

The checkpoint's saved config names the base model (for the architecture and tokenizer);
the trained parameters replace its weights. A LoRA run's adapters are merged into the base
weights; `--peft-out` also writes them as a PEFT adapter folder (`adapter_config.json`,
`adapter_model.safetensors`) for `peft.PeftModel.from_pretrained` on the base model. The
checkpoint and the outputs may be local or `gs://` paths (a remote output is written locally
first, then copied).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
from typing import Callable

import safetensors.numpy
from etils import epath

from ssp_jax import cli, preflight
from ssp_jax.checkpoint import Policy, merged_model, restore_policy
from ssp_jax.models import lora, save_hf
from ssp_jax.paths import PathLike, as_path, copy_tree, is_local


def _write(out: PathLike, write: Callable[[pathlib.Path], None]) -> epath.Path:
    """Runs `write(local_folder)` into `out`, through a local folder when `out` is remote."""
    out = as_path(out)
    if is_local(out):
        write(pathlib.Path(out))
    else:  # safetensors and tokenizers write local files only
        with tempfile.TemporaryDirectory() as tmp:
            write(pathlib.Path(tmp))
            copy_tree(epath.Path(tmp), out)
    return out


def write_peft(policy: Policy, folder: pathlib.Path) -> None:
    """Writes the policy's adapters as a PEFT LoRA folder (local)."""
    if "lora" not in policy.params:
        raise ValueError("--peft-out needs a checkpoint of a LoRA run (model.lora.rank > 0)")
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(lora.peft_tensors(policy.config, policy.params["lora"]),
                                str(folder / "adapter_model.safetensors"),
                                metadata={"format": "pt"})
    config = lora.peft_config(policy.config, policy.base)
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export(checkpoint: PathLike, out: PathLike, peft_out: PathLike | None = None
           ) -> epath.Path:
    """Writes the checkpoint's parameters (adapters merged) with the base model's tokenizer
    to `out`, and the adapters alone to `peft_out` if given."""
    policy = restore_policy(checkpoint)
    if peft_out:
        _write(peft_out, lambda folder: write_peft(policy, folder))
        print(f"wrote the adapters of step {policy.step} to {peft_out}")
    model = merged_model(policy)
    out = _write(out, lambda folder: save_hf(model, policy.tokenizer, folder))
    print(f"exported step {policy.step} of {checkpoint} to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint step folder")
    p.add_argument("--out", required=True, help="output Hugging Face folder")
    p.add_argument("--peft-out", help="also write a LoRA run's adapters as a PEFT folder here")
    args = p.parse_args(argv)
    preflight.check_checkpoint(args.checkpoint)  # before the model loads
    preflight.check_workdir(args.out, "--out")
    if args.peft_out:
        preflight.check_workdir(args.peft_out, "--peft-out")
    export(args.checkpoint, args.out, args.peft_out)
    return 0


if __name__ == "__main__":
    cli.run(main)
