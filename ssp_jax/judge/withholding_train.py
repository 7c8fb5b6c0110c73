"""Trains the withholding head and measures it against the strict decline check.

  python -m ssp_jax.judge.withholding_train --xstest-dir /work/shared/data/xstest \\
      --out ssp_jax/judge/withholding_head.npz

Data: XSTest v2's four completion files (withholds = `2_full_refusal`; full compliance and
partial refusal deliver) and the project's labelled set. Measurement, printed as it goes:
- cross-file: for each XSTest file, a head trained on the other three (+ the project's set,
  less its held-out topics) is tested on it, next to the strict check's agreement on the same
  rows, overall and per label (its partial refusals: decline, then comply);
- held-out topics: a head trained on all four files and the rest of the project's set is
  tested on `HELD_OUT_TOPICS`, whose requests, payloads and redirects it never saw;
- the threshold with the best mean agreement over those five test sets is the one saved.
The saved head is trained on everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Callable, Sequence

import numpy as np

from ssp_jax.judge.calibration import FULL_REFUSAL, read_completions
from ssp_jax.judge.refusal import refusal_detector
from ssp_jax.judge.withholding import (HEAD_FILE, LABELLED_SET, WITHHOLDS, HeadConfig, Params,
                                       load_labelled, response_features, save_head, train_head,
                                       withhold_probability)
from ssp_jax.models.sentence_encoder import SentenceEncoder, load_sentence_encoder

XSTEST_MODELS = ("llama2new", "llama2orig", "mistralguard", "mistralinstruct")
XSTEST_FILE = "xstest_v2_completions_{}.csv"
# Topics of the project's set kept out of training for the held-out measurement (8 of 30).
HELD_OUT_TOPICS = ("toxic_gas", "ransomware", "stalking", "counterfeit", "self_harm",
                   "sql_injection", "elder_scam", "fake_id")
THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10 ... 0.90


@dataclasses.dataclass(frozen=True)
class LabelledSet:
    """Responses with their features and labels, all `[N]`-aligned.

    features: `[N, F]` f32; withholds: `[N]` bool (the label); strict: `[N]` bool (the strict
    check's decline); kind: `[N]` str (XSTest's label without its digit, e.g.
    "partial_refusal"; the project set's kind).
    """

    name: str
    features: np.ndarray
    withholds: np.ndarray
    strict: np.ndarray
    kind: np.ndarray

    def take(self, rows: np.ndarray, name: str) -> "LabelledSet":
        """The rows selected by `rows` (`[N]` bool)."""
        return LabelledSet(name, self.features[rows], self.withholds[rows], self.strict[rows],
                           self.kind[rows])


def missing_inputs(xstest_dir: pathlib.Path, labelled: pathlib.Path) -> list[pathlib.Path]:
    """The input files that do not exist."""
    paths = [xstest_dir / XSTEST_FILE.format(m) for m in XSTEST_MODELS] + [labelled]
    return [p for p in paths if not p.is_file()]


def build_set(name: str, texts: Sequence[str], withholds: np.ndarray, kind: Sequence[str],
              encoder: SentenceEncoder, strict: Callable[[str], bool]) -> LabelledSet:
    """Features and strict decisions for `texts`, with a progress line."""
    start = time.time()
    features = response_features(encoder, texts)
    print(f"features: {name}, {len(texts)} responses, {time.time() - start:.0f} s", flush=True)
    return LabelledSet(name, features, np.asarray(withholds, bool),
                       np.array([strict(t) for t in texts], bool), np.array(kind, str))


def concat(sets: Sequence[LabelledSet], name: str) -> LabelledSet:
    """The rows of `sets`, in order."""
    return LabelledSet(name, *(np.concatenate([getattr(s, f) for s in sets])
                               for f in ("features", "withholds", "strict", "kind")))


def fit(train: LabelledSet, config: HeadConfig) -> Params:
    """A head trained on all rows of `train`."""
    return train_head(train.features, train.withholds, config)


def agreement(withholds: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows where the call `[N]` bool equals the label `[N]` bool (nan for N = 0)."""
    return float(np.mean(withholds == labels)) if len(labels) else float("nan")


def choose_threshold(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """The `THRESHOLDS` value with the best mean agreement over the test sets (the lowest on
    a tie): one `[N_k]` P(withholds) and one `[N_k]` bool label array per set."""
    means = [np.mean([agreement(p >= t, y) for p, y in zip(probs, labels)]) for t in THRESHOLDS]
    return THRESHOLDS[int(np.argmax(means))]


def report_lines(tests: Sequence[LabelledSet], probs: Sequence[np.ndarray],
                 threshold: float) -> list[str]:
    """The agreement table: per test set, and per kind of row within it, the head at
    `threshold`, the strict check, and both (a decline only when both say so)."""
    lines = [f"{'test set':<18} {'kind':<20} {'rows':>5} {'head':>6} {'strict':>6} {'both':>6}"]
    for s, p in zip(tests, probs):
        head = p >= threshold
        calls = (head, s.strict, head & s.strict)
        for kind in ("all", *sorted(set(s.kind))):
            rows = np.ones(len(s.kind), bool) if kind == "all" else s.kind == kind
            lines.append(f"{s.name:<18} {kind:<20} {int(rows.sum()):>5} " + " ".join(
                f"{agreement(c[rows], s.withholds[rows]):>6.3f}" for c in calls))
    return lines


def threshold_lines(tests: Sequence[LabelledSet], probs: Sequence[np.ndarray]) -> list[str]:
    """Agreement per threshold and test set, with the mean."""
    lines = ["threshold " + " ".join(f"{s.name:>16}" for s in tests) + "    mean"]
    for t in THRESHOLDS:
        accs = [agreement(p >= t, s.withholds) for s, p in zip(tests, probs)]
        lines.append(f"{t:>9.2f} " + " ".join(f"{a:>16.3f}" for a in accs)
                     + f"   {np.mean(accs):.3f}")
    return lines


def load_sets(xstest_dir: pathlib.Path, labelled: pathlib.Path, encoder: SentenceEncoder
              ) -> tuple[list[LabelledSet], LabelledSet, np.ndarray]:
    """(the four XSTest sets, the project's set, its held-out mask `[N]` bool)."""
    strict = refusal_detector(strict=True)
    xstest = []
    for model in XSTEST_MODELS:
        rows = read_completions(xstest_dir / XSTEST_FILE.format(model))
        xstest.append(build_set(model, [r.completion for r in rows],
                                np.array([r.label == FULL_REFUSAL for r in rows]),
                                [r.label.split("_", 1)[1] for r in rows],
                                encoder, strict))
    rows = load_labelled(labelled)
    project = build_set("project", [r.response for r in rows],
                        np.array([r.label == WITHHOLDS for r in rows]),
                        [r.kind for r in rows], encoder, strict)
    return xstest, project, np.array([r.topic in HELD_OUT_TOPICS for r in rows])


def measure(xstest: list[LabelledSet], project: LabelledSet, held_out: np.ndarray,
            config: HeadConfig) -> tuple[list[LabelledSet], list[np.ndarray]]:
    """(test sets, P(withholds) on each): the four cross-file folds, then the project's
    held-out topics."""
    train_project = project.take(~held_out, "project (train topics)")
    tests, probs = [], []
    for i, test in enumerate(xstest):
        train = concat([s for j, s in enumerate(xstest) if j != i] + [train_project], "train")
        print(f"fold: train on the other files + project, test on {test.name}", flush=True)
        tests.append(test)
        probs.append(withhold_probability(fit(train, config), test.features))
    test = project.take(held_out, "project held-out")
    print("fold: train on all files + project train topics, test on held-out topics", flush=True)
    tests.append(test)
    probs.append(withhold_probability(fit(concat(xstest + [train_project], "train"), config),
                                      test.features))
    return tests, probs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = HeadConfig()
    parser = argparse.ArgumentParser(prog="python -m ssp_jax.judge.withholding_train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--xstest-dir", type=pathlib.Path, required=True,
                        help="folder with xstest_v2_completions_{%s}.csv" % ",".join(XSTEST_MODELS))
    parser.add_argument("--labelled", type=pathlib.Path, default=LABELLED_SET,
                        help="the project's labelled JSONL")
    parser.add_argument("--out", type=pathlib.Path, default=HEAD_FILE, help="the head's .npz")
    parser.add_argument("--hidden", type=int, default=d.hidden, help="hidden layer width")
    parser.add_argument("--steps", type=int, default=d.steps, help="full-batch AdamW steps")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--seed", type=int, default=d.seed, help="initialisation seed")
    args = parser.parse_args(argv)
    missing = missing_inputs(args.xstest_dir, args.labelled)
    if missing:
        parser.error("missing input file(s): " + ", ".join(str(p) for p in missing))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = HeadConfig(args.hidden, args.steps, args.learning_rate, args.weight_decay,
                        args.seed)
    print(f"config: {config}", flush=True)
    xstest, project, held_out = load_sets(args.xstest_dir, args.labelled,
                                          load_sentence_encoder())
    tests, probs = measure(xstest, project, held_out, config)
    print("\n".join(threshold_lines(tests, probs)))
    threshold = choose_threshold(probs, [s.withholds for s in tests])
    print(f"threshold (best mean agreement): {threshold}")
    print("\n".join(report_lines(tests, probs, threshold)))
    params = fit(concat(xstest + [project], "all"), config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_head(args.out, params, threshold)
    print(f"saved {args.out} (trained on {sum(len(s.withholds) for s in xstest + [project])} "
          f"responses, threshold {threshold})")


if __name__ == "__main__":
    main(sys.argv[1:])
