"""Evaluate models or checkpoints on safety benchmarks; calibrate a judge; plot a run.

  python -m ssp_jax.evaluate --model smollm2-135m-instruct --checkpoint runs/demo/checkpoints/2 \\
      --benchmark harmbench_test=data/harmbench/harmbench_behaviors_text_test.csv \\
      --benchmark xstest=data/xstest/xstest_prompts.csv --judge refusal --limit 20 --out eval/demo
  python -m ssp_jax.evaluate calibrate --judge refusal --completions xstest_v2_completions_*.csv
  python -m ssp_jax.evaluate --model M --benchmark ... --judge llama_guard \\
      --judge-model ~/models/Llama-Guard-3-8B --out eval/

A model-based judge is one fixed judge for every model compared: --judge-model SPEC or
--judge-url URL --judge-remote-model NAME; --judge-model self lets each model judge itself.
  python -m ssp_jax.evaluate plot-run --metrics runs/demo/metrics.jsonl --out eval/

`python -m ssp_jax.data.fetch harmbench xstest --dir data/` writes the two files above;
HarmBench's test split and XSTest are never trained on (configs/smollm2_135m.py:recipe trains on
HarmBench val). Models, checkpoints, a judge model or server and --out are checked before any
model loads.

Benchmarks are NAME=PATH; the kind (harmbench, advbench, xstest) is read from the CSV header,
or given as KIND:NAME=PATH (harmbench, harmbench_standard: no contextual rows, advbench,
xstest), or csv:COLUMN:NAME=PATH for any CSV of goals with a text column.
"""

from __future__ import annotations

import argparse
import json
import pathlib


from ssp_jax import cli, preflight
from ssp_jax.checkpoint import load_checkpoint
from ssp_jax.evaluate.benchmarks import benchmark_kind, parse_benchmark  # noqa: F401
from ssp_jax.evaluate.report import plot_comparison, plot_training_curves, write_results
from ssp_jax.evaluate.runner import MODES, evaluate_with_progress, installed_checks
from ssp_jax.judge.base import Judge
from ssp_jax.judge.calibration import calibrate, format_report
from ssp_jax.judge.registry import JudgeModel, check_judge_cache, make_judge, policy_judge
from ssp_jax.metrics import read_metrics
from ssp_jax.models import load
from ssp_jax.paths import as_path
from ssp_jax.sections import JUDGE_NAMES, JudgeSection, judge_section

SELF = "self"  # --judge-model self: each model judges its own answers


def add_judge_args(p: argparse.ArgumentParser) -> None:
    """The judge flags shared by evaluation and calibration (defaults: the default config's
    judge section)."""
    d = judge_section()
    p.add_argument("--judge", choices=JUDGE_NAMES, default=d.name)
    p.add_argument("--judge-model", default="", help="judge model spec (a guard model's folder)")
    p.add_argument("--judge-url", default="", help="OpenAI-compatible judge server .../v1")
    p.add_argument("--judge-remote-model", default="", help="model name on that server")
    p.add_argument("--judge-api-key-env", default="", help="env variable with its API key")
    p.add_argument("--judge-max-cache-len", type=int, default=d.max_cache_len)
    p.add_argument("--judge-max-tokens", type=int, default=d.max_tokens,
                   help="decoded verdict length (rubric, strongreject)")
    p.add_argument("--judge-scoring", choices=["probs", "text"], default=d.scoring)
    p.add_argument("--instruction-source", choices=["goal", "attack"],
                   default=d.instruction_source)


def judge_config(args: argparse.Namespace, *, allow_self: bool) -> JudgeSection:
    """The judge section the flags describe; a model-based judge must be named."""
    c = judge_section(
        name=args.judge, model="" if args.judge_model == SELF else args.judge_model,
        url=args.judge_url, remote_model=args.judge_remote_model,
        api_key_env=args.judge_api_key_env, max_cache_len=args.judge_max_cache_len,
        max_tokens=args.judge_max_tokens, scoring=args.judge_scoring,
        instruction_source=args.instruction_source, batch_size=args.batch_size)
    if c.model_based and not (args.judge_model or args.judge_url):
        raise ValueError(f"--judge {args.judge} needs a fixed judge: --judge-model SPEC or "
                         "--judge-url URL" + (f" (or --judge-model {SELF} to let each model "
                                              "judge itself)" if allow_self else ""))
    if args.judge_model == SELF and not allow_self:
        raise ValueError(f"--judge-model {SELF} has no model to judge with here; give a spec")
    return c


def judge_record(c: JudgeSection) -> dict[str, str]:
    """What results record about the judge: its format and its model or server."""
    if not c.model_based:
        return {"format": c.name}
    if c.url:
        return {"format": c.name, "url": c.url, "model": c.remote_model}
    return {"format": c.name, "model": c.model or f"{SELF} (each model judges itself)"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="model spec (repeatable)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="checkpoint step folder (repeatable)")
    p.add_argument("--benchmark", action="append", required=True, help="NAME=PATH")
    add_judge_args(p)
    p.add_argument("--out", required=True, type=as_path)
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark")
    p.add_argument("--modes", default=",".join(MODES), help="direct,self-attack")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-cache-len", type=int, default=None,
                   help="longest prompt + answer (default: the model's context length; "
                        "HarmBench's contextual behaviours rewritten by the attacker pass 1024)")
    p.add_argument("--asr-threshold", type=float, default=4.0)
    return p.parse_args(argv)


def build_judge(c: JudgeSection, model=None, tokenizer=None, *, max_new_tokens: int) -> Judge:
    """The judge `c` names (on `model` when it is the evaluated model judging itself), checked
    to fit its cache with responses of `max_new_tokens`."""
    judge = policy_judge(c, None if model is None else
                         JudgeModel(model.config, model.params(), tokenizer))
    check_judge_cache(judge, request_tokens=0, request_field="the goal",
                      response_tokens=max_new_tokens, response_field="--max-new-tokens")
    return judge


def check_inputs(args: argparse.Namespace, judge_cfg: JudgeSection) -> None:
    """Every model, checkpoint, judge model and output folder the flags name, before any loads
    (a judge server is checked when the judge is built, before the models)."""
    preflight.check_workdir(args.out, "--out")
    for spec in args.model:
        preflight.check_model_spec(spec, "--model")
    for path in args.checkpoint:
        preflight.check_checkpoint(path)
    if judge_cfg.model:
        preflight.check_model_spec(judge_cfg.model, "--judge-model")


def run_evaluation(args: argparse.Namespace) -> dict:
    if not args.model and not args.checkpoint:
        raise ValueError("give at least one --model or --checkpoint")
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        raise ValueError(f"--modes: unknown {sorted(unknown)}; valid: {', '.join(MODES)}")
    judge_cfg = judge_config(args, allow_self=True)
    check_inputs(args, judge_cfg)
    benchmarks = {}
    for spec in args.benchmark:
        name, kind, items = parse_benchmark(spec, args.limit)
        benchmarks[name] = (kind, items)
    self_judging = judge_cfg.model_based and args.judge_model == SELF
    fixed = None if self_judging else build_judge(judge_cfg, max_new_tokens=args.max_new_tokens)
    candidates = [(m, lambda m=m: (*load(m), None)) for m in args.model]
    candidates += [(c, lambda c=c: load_checkpoint(c)) for c in args.checkpoint]
    results, items, run_dirs = {}, {}, []
    withholds, off_intent = installed_checks()
    for label, loader in candidates:
        model, tokenizer, _ = loader()
        judge = fixed or build_judge(judge_cfg, model, tokenizer,
                                     max_new_tokens=args.max_new_tokens)
        results[label], items[label] = evaluate_with_progress(
            label, model.config, model.params(), tokenizer, judge, benchmarks, modes=modes,
            withholds=withholds, off_intent=off_intent,
            max_new_tokens=args.max_new_tokens, asr_threshold=args.asr_threshold,
            batch_size=args.batch_size,
            max_cache_len=args.max_cache_len or model.config.max_position_embeddings)
        if judge is not fixed:  # each model's own judge
            judge.close()
        run_metrics = as_path(label).parent.parent / "metrics.jsonl"
        if run_metrics.exists():
            run_dirs.append(run_metrics)
    if fixed is not None:
        fixed.close()
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    write_results(args.out, results, items, settings, judge_record(judge_cfg))
    plot_comparison(results, args.out / "comparison.png")
    if run_dirs:
        plot_training_curves(read_metrics(run_dirs[0]), args.out / "training_curves.png")
    print((args.out / "results.md").read_text())
    written = ["results.md", "results.json", "items.jsonl", "comparison.png"]
    written += ["training_curves.png"] * bool(run_dirs)
    print(f"outputs in {args.out}: {', '.join(written)}")
    return results


def calibrate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.evaluate calibrate")
    add_judge_args(p)
    p.add_argument("--completions", nargs="+", required=True, type=pathlib.Path)
    p.add_argument("--out", type=as_path, default=None, help="write results JSON here")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--unsafe-only", action="store_true",
                   help="only XSTest's unsafe (contrast_*) prompts: the fair test of a harm "
                        "classifier")
    args = p.parse_args(argv)
    judge = make_judge(judge_config(args, allow_self=False))
    try:
        results = [calibrate(judge, path, unsafe_only=args.unsafe_only)
                   for path in args.completions]
    finally:
        judge.close()
    print(format_report(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def plot_run_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ssp_jax.evaluate plot-run")
    p.add_argument("--metrics", required=True, type=as_path)
    p.add_argument("--out", required=True, type=as_path)
    args = p.parse_args(argv)
    if not args.metrics.is_file():
        raise FileNotFoundError(f"metrics file not found: {args.metrics}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_training_curves(read_metrics(args.metrics), args.out / "training_curves.png")
    print(f"wrote {args.out / 'training_curves.png'}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["calibrate"]:
        return calibrate_main(argv[1:])
    if argv[:1] == ["plot-run"]:
        return plot_run_main(argv[1:])
    run_evaluation(parse_args(argv))
    return 0


if __name__ == "__main__":
    cli.run(main)
