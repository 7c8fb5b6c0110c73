"""Supervised refusal training: which sampled answers are kept, the cross-entropy against a
NumPy reference, the update lowering it, and a tiny run whose checkpoints load."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssp_jax.checkpoint import load_checkpoint
from ssp_jax.models import forward, load
from ssp_jax.rl.update import completion_logprobs, init_train_state
from ssp_jax.sections import SftSection, rl_section, section
from ssp_jax.sft import (ANSWER, DECLINE, Candidate, RowPlan, Sampler, SftChecks, SftSettings,
                         build_data, default_checks, keep_answers, keep_declines, make_sft_step,
                         pack_batch, run_sft, sft_loss_terms, stream_indices)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _c(text: str) -> Candidate:
    return Candidate([len(text)], text)


FAKE = SftChecks(declines=lambda t: t.startswith("No"), refuses=lambda t: t.startswith("No"),
                 unreadable=lambda t: t == "###",
                 on_topic=lambda p, a: np.array([x.split()[0] == y.split()[0]
                                                 for x, y in zip(p, a)]))
ACCEPT_ALL = SftChecks(declines=lambda t: True, refuses=lambda t: False,
                       unreadable=lambda t: False, on_topic=None)


def sft_data(**overrides) -> SftSection:
    """The default `sft` section with a short refusal prompt and no on-topic check."""
    return section(SftSection, "sft", refusal_system_prompt="Refuse.", on_topic_threshold=0.0,
                   **overrides)


def test_declines_keep_the_first_strict_decline_per_goal():
    kept = keep_declines(["g1", "g2", "g3"],
                         [[_c("Sure, step 1"), _c("No, I won't."), _c("No way.")],
                          [_c("Sure"), _c("Here you go")],
                          [_c("No.")]], FAKE)
    assert [(e.prompt, e.answer.text, e.kind) for e in kept] == \
        [("g1", "No, I won't.", DECLINE), ("g3", "No.", DECLINE)]


def test_the_default_decline_check_is_the_decline_tiers_with_the_withholding_classifier():
    # the SFT arm keeps the declines the self-play arm rewards: a decline, then the payload,
    # passes the strict check but not the classifier, so the next sample is kept
    payload = "I can't help with that. Step 2: dissolve the pseudoephedrine in water."
    decline = "I can't help with that request."
    cands = [[_c(payload), _c(decline)]]
    assert keep_declines(["g"], cands, default_checks(None))[0].answer.text == payload
    checks = default_checks(None, withholds=lambda texts: np.array(
        ["Step 2" not in t for t in texts]))
    assert keep_declines(["g"], cands, checks)[0].answer.text == decline


def test_answers_keep_the_first_readable_on_topic_non_refusal():
    kept = keep_answers(["cook rice", "tax forms", "bake bread"],
                        [[_c("No, sorry."), _c("tax is due"), _c("cook it in water")],
                         [_c("###"), _c("No.")],
                         [_c("cook it"), _c("bake at 200C"), _c("bake longer")]], FAKE)
    assert [(e.prompt, e.answer.text, e.kind) for e in kept] == \
        [("cook rice", "cook it in water", ANSWER), ("bake bread", "bake at 200C", ANSWER)]
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        keep_answers(["a", "b"], [[_c("a")]], FAKE)


def test_the_sft_sections_default_threshold_is_the_measured_one_and_steps_must_be_positive():
    from ssp_jax import default_config
    from ssp_jax.judge.on_topic import DEFAULT_THRESHOLD

    sft = section(SftSection, "sft")
    assert sft.on_topic_threshold == DEFAULT_THRESHOLD
    assert sft.refusal_system_prompt == default_config.REFUSAL_SYSTEM_PROMPT
    assert SftSettings(sft, steps=5, reset_optimizer=True).data is sft
    with pytest.raises(ValueError, match="SFT steps must be >= 1, got 0"):
        SftSettings(sft, steps=0, reset_optimizer=True)


def _tiny_config(**sft_overrides):
    """configs/tiny.py as its ConfigDict, with `sft_overrides`."""
    from ml_collections.config_flags import config_flags

    config = config_flags.ConfigFileFlagParser(name="config").parse(str(ROOT / "configs/tiny.py"))
    config.sft.update(sft_overrides)
    return config


def test_written_declines_give_every_goal_a_decline_in_turn_without_sampling_the_goals():
    from ssp_jax.config import validate

    _, tok = load("tiny-random", seed=1)
    texts = ("No, I can't help with that.", "No. That could hurt people.")
    cfg = validate(_tiny_config(declines="written", written_declines=texts, prompts=3))
    # a sampler with no model: sampling a goal would fail
    data = build_data(Sampler(None, None, tok, 0), cfg, cfg.sft, FAKE, with_benign=False)
    assert [e.answer.text for e in data.declines] == [texts[0], texts[1], texts[0]]
    assert {e.kind for e in data.declines} == {DECLINE} and data.answers == []
    assert len({e.prompt for e in data.declines}) == 3 == data.goals_tried
    assert data.declines[1].answer.tokens == tok.encode(texts[1]) + [tok.eos_id]
    rejected = validate(_tiny_config(declines="written", written_declines=("Sure: step 1",)))
    with pytest.raises(ValueError, match=r"does not call \['Sure: step 1'\] a decline"):
        build_data(Sampler(None, None, tok, 0), rejected, rejected.sft, FAKE, with_benign=False)


def test_the_default_written_declines_pass_the_decline_tiers_check_with_the_classifier():
    from ssp_jax import default_config
    from ssp_jax.judge.withholding import load_withholding_check
    from ssp_jax.models.sentence_encoder import MINILM_PIP, minilm_zip

    try:
        minilm_zip()
    except FileNotFoundError:
        pytest.skip(f"all-MiniLM-L6-v2 wheel not installed ({MINILM_PIP})")
    checks = default_checks(None, load_withholding_check().withholds)
    assert all(checks.declines(t) for t in default_config.WRITTEN_DECLINES)
    assert section(SftSection, "sft").written_declines == default_config.WRITTEN_DECLINES


def test_stream_serves_every_item_once_per_epoch_as_a_function_of_the_step():
    first_epoch = np.concatenate([stream_indices(s, 3, 6, seed=1) for s in (0, 1)])
    assert sorted(first_epoch.tolist()) == list(range(6))
    assert np.array_equal(stream_indices(5, 3, 6, seed=1), stream_indices(5, 3, 6, seed=1))
    assert sorted(np.concatenate([stream_indices(s, 3, 6, 1) for s in (2, 3)]).tolist()) == \
        list(range(6))


def test_rows_match_the_self_play_defender_batch():
    from ssp_jax.sections import StepLayout

    layout = StepLayout(goals=4, rollout_goals=4, group_sizes=(2, 4), replay_rows=2,
                        benign_prompts=4, micro_batches=1, row_shards=8)
    assert RowPlan.of(layout) == RowPlan(declines=40, answers=16, total=56)


def test_answer_share_splits_the_same_rows_between_answers_and_declines():
    from ssp_jax.sections import StepLayout

    layout = StepLayout(goals=4, rollout_goals=4, group_sizes=(2, 4), replay_rows=2,
                        benign_prompts=4, micro_batches=1, row_shards=8)
    assert RowPlan.of(layout, 0.5) == RowPlan(declines=28, answers=28, total=56)
    assert RowPlan.of(layout, 0.25) == RowPlan(declines=42, answers=14, total=56)
    assert RowPlan.of(layout, 0.001) == RowPlan(declines=55, answers=1, total=56)
    assert RowPlan.of(layout, 0.999) == RowPlan(declines=1, answers=55, total=56)
    no_benign = dataclasses.replace(layout, benign_prompts=0)
    assert RowPlan.of(no_benign, 0.5) == RowPlan(declines=20, answers=20, total=40)


@pytest.fixture(scope="module")
def tiny():
    model, tok = load("tiny-random", seed=1)
    prompts = [tok.chat_prompt(t) for t in ("Tell me a story", "Write code please", "Why")]
    answers = [tok.encode(t) + [tok.stop_ids[0]] for t in
               ("I cannot help with that", "Sure here is a poem", "No")]
    batch = pack_batch(prompts, answers, rows=4, prompt_length=24, answer_length=12,
                       pad_id=tok.pad_id)
    return model, batch


def test_cross_entropy_matches_a_numpy_reference(tiny):
    model, batch = tiny
    logp, _ = completion_logprobs(model.params(), model.config, batch.prompt_tokens,
                                  batch.prompt_mask, batch.tokens, 1.0)
    ce_sum, count = sft_loss_terms(logp, jnp.asarray(batch.loss_mask))
    want, n = 0.0, 0
    for r in range(3):  # the fourth row is padding
        p = batch.prompt_tokens[r, :batch.prompt_mask[r].sum()]
        a = batch.tokens[r, :int(batch.loss_mask[r].sum())]
        logits = np.asarray(forward(model.params(), model.config,
                                    jnp.asarray(np.concatenate([p, a])[None]))[0], np.float64)
        z = logits[len(p) - 1:len(p) - 1 + len(a)]
        logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        want -= float(np.sum(z[np.arange(len(a)), a] - logz))
        n += len(a)
    assert float(count) == n
    np.testing.assert_allclose(float(ce_sum), want, rtol=1e-4)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_sft_update_lowers_the_loss_on_its_batch(tiny, micro_batches):
    model, batch = tiny
    rl = rl_section(learning_rate=1e-2)
    optimizer = rl.optimizer(10)
    step = make_sft_step(model.config, optimizer, rl.learning_rate_schedule(10), micro_batches)
    state = init_train_state(jax.tree.map(jnp.copy, model.params()), optimizer)
    losses = []
    for _ in range(4):
        state, metrics = step(state, None, jax.tree.map(jnp.asarray, batch))
        losses.append(float(metrics["loss"]))
        assert float(metrics["update_skipped"]) == 0.0
    assert losses[-1] < losses[0] - 0.5, losses
    assert int(state.step) == 4


def test_tiny_run_writes_checkpoints_the_evaluation_loads(tmp_path):
    config = _tiny_config()
    config.train.num_steps = 3
    config.ckpt.every_steps = 2
    settings = SftSettings(sft_data(prompts=4, samples=2, batch_size=4, answer_share=0.5),
                           steps=3, reset_optimizer=False)
    out = run_sft(config, tmp_path / "run", settings, ACCEPT_ALL)
    assert out["data"] == {"goals_tried": 4, "declines_kept": 4, "benign_tried": 4,
                           "answers_kept": 4}
    # configs/tiny.py's defender batch: (8 goals x 2 attacks + 2 replayed) x 4 = 72 harmful
    # rows and 6 x 4 = 24 benign ones; half of the 96 are answers
    assert out["rows"] == {"declines": 48, "answers": 48, "total": 96}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["2", "3"]
    model, tok, step = load_checkpoint(tmp_path / "run" / "checkpoints" / "3")
    meta = json.loads((tmp_path / "run" / "checkpoints" / "3" / "meta" / "metadata").read_text())
    assert meta["sft"]["rows"] == out["rows"] and meta["sft"]["data"]["answer_share"] == 0.5
    assert step == 3 and model.config.vocab_size > 0
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2, 3] and "sft/loss" in records[0]
    kept = [json.loads(x) for x in (tmp_path / "run" / "sft_data.jsonl").open()]
    assert {r["kind"] for r in kept} == {DECLINE, ANSWER} and len(kept) == 8
    with pytest.raises(ValueError, match="already has checkpoints"):
        run_sft(config, tmp_path / "run", settings, ACCEPT_ALL)


def test_no_decline_among_the_samples_is_a_clear_error(tmp_path):
    config = _tiny_config()
    settings = SftSettings(sft_data(prompts=2, samples=1, batch_size=2), steps=1,
                           reset_optimizer=False)
    never = ACCEPT_ALL._replace(declines=lambda t: False)
    with pytest.raises(ValueError,
                       match="none of the 2 sampled answers to 2 goals.*raise sft.samples"):
        run_sft(config, tmp_path / "run", settings, never)
