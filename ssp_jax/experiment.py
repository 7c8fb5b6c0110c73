"""Train-then-evaluate experiment (ssp_jax/evaluate/experiment.py does the work).

  python -m ssp_jax.experiment --config configs/smollm2_135m.py:recipe --out runs/exp \\
      --every 15 --benchmark harmbench_test=data/harmbench/harmbench_behaviors_text_test.csv \\
      --benchmark xstest=data/xstest/xstest_prompts.csv --limit 64 \\
      --set train.num_steps=30 [--ablation replay_off|static]

Without --benchmark: the config's held-out goals (data.holdout_fraction) and the built-in
XSTest-style safe prompts. --set SECTION.FIELD=VALUE changes the config (a Python literal, or a
string). The config file, --out, the data files, the model and the judge are checked before any
model loads; checkpoints are evaluated under their step numbers (`run/checkpoints/N` is
"step N").
"""

from __future__ import annotations

import argparse
import ast
import pathlib

from ml_collections.config_flags import config_flags as config_file

from ssp_jax import cli, preflight
from ssp_jax.config import unknown_override, validate
from ssp_jax.evaluate.benchmarks import parse_benchmark
from ssp_jax.evaluate.experiment import ABLATIONS, run_experiment, with_overrides
from ssp_jax.evaluate.report import markdown_table


def parse_set(config, spec: str) -> tuple[str, object]:
    """SECTION.FIELD=VALUE -> (path, value); an unknown field is a ValueError naming it."""
    if "=" not in spec:
        raise ValueError(f"--set {spec!r}: expected SECTION.FIELD=VALUE")
    path, text = spec.split("=", 1)
    if message := unknown_override(config, path):
        raise ValueError(message)
    try:
        return path, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return path, text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="configs/*.py, or configs/FILE.py:ARG for get_config(ARG)")
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.add_argument("--every", type=int, default=10, help="checkpoint / evaluation period")
    p.add_argument("--benchmark", action="append", default=[], help="NAME=PATH (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark")
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default="")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    args = p.parse_args(argv)
    preflight.check_config_file(args.config)
    try:
        config = config_file.ConfigFileFlagParser(name="config").parse(args.config)
    except (TypeError, ValueError) as e:  # get_config raised: ml_collections adds its traceback
        raise cli.UserError(f"--config: {preflight.last_line(str(e))}") from None
    config = with_overrides(config, dict(parse_set(config, s) for s in args.overrides))
    preflight.check_workdir(args.out, "--out")
    preflight.check_training(validate(config), args.out / "run")
    benchmarks = {}
    for spec in args.benchmark:
        name, kind, items = parse_benchmark(spec, args.limit)
        benchmarks[name] = (kind, items)
    results = run_experiment(config, args.out, every=args.every, benchmarks=benchmarks or None,
                             ablation=args.ablation, limit=args.limit,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print(markdown_table(results))
    print(f"report: {args.out / 'results.md'}, {args.out / 'frontier.png'}, "
          f"{args.out / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    cli.run(main)
