"""Safety Self-Play training entry point.

  python -m ssp_jax.main --config configs/smollm2_135m.py --workdir runs/demo \
      --config.train.num_steps=2 --config.rl.beta=0.02

The config file, the workdir, the data files, the model, the judge and `ckpt.restore_from`
are checked (ssp_jax/preflight.py) before the model loads; a run of N steps ends with the
checkpoint `WORKDIR/checkpoints/N`.
"""

import logging
import sys
from typing import Sequence

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_file

from ssp_jax import cli, distributed, preflight, train
from ssp_jax.config import unknown_override, validate
from ssp_jax.evaluate.runner import held_out_evaluation

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, samples.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing; a bad flag, or an override of a field the config does not have, is a
    user error (for the latter naming the field and the valid keys, where ml_collections raises
    a bare AttributeError)."""
    config_path = _config_path(argv)
    if config_path is not None:  # absl names a missing --config itself
        preflight.check_config_file(config_path)
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:  # a missing or malformed flag, or a config file that raised
        raise cli.UserError(_last_line(str(e))) from None
    except (AttributeError, KeyError, TypeError):
        overrides = [a[len("--config."):].split("=", 1)[0] for a in argv
                     if a.startswith("--config.")]
        config = config_file.ConfigFileFlagParser(name="config").parse(config_path)
        for path in overrides:
            if message := unknown_override(config, path):
                raise cli.UserError(message) from None
        raise


def _config_path(argv: Sequence[str]) -> str | None:
    """The value of --config in `argv` (`path.py` or `path.py:ARG`), or None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _last_line(message: str) -> str:
    """A flag error as one line (a config file's `get_config` error comes with its traceback)."""
    if "Error whilst parsing config file" not in message:
        return message
    return f"--config: {preflight.last_line(message)}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # library chatter (orbax, jax)
    cli.setup_logging()  # again: app.run has put absl's handler on the root logger
    config, workdir = _CONFIG.value, _WORKDIR.value
    validated = validate(config)
    preflight.check_training(validated, workdir)  # before any model loads
    distributed.initialize()
    if jax.process_index() != 0:  # one console log per job
        logging.getLogger("ssp_jax").setLevel(logging.WARNING)
    train.train(config, workdir, evaluate_held_out=held_out_evaluation(validated))
    return 0


if __name__ == "__main__":
    cli.run(lambda argv: app.run(main, argv=[sys.argv[0], *argv], flags_parser=parse_flags))
