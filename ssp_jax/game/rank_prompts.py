"""The prompts of each step's decline ranking (`rl.rank_weight`, ssp_jax/rl/rank.py): harmful
goals and benign requests, both put to the defender plainly, each followed by the decline
texts. The seed's label, not any rewrite, says which side a prompt is on."""

from __future__ import annotations

from ssp_jax.cli import UserError
from ssp_jax.data.mixture import GoalMixture
from ssp_jax.data.twins import FormTwins
from ssp_jax.game.roles import defender_prompt, fit_prompt
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.rl.rank import DECLINE_TOKENS, RankBatch, pack_rank_batch
from ssp_jax.rollout.sampler import bucket_length


class RankPrompts:
    """Draws step `step`'s ranking batch: `per_side` goals of `goals` and as many prompts of
    `benign` (each mixture's `batch(step, per_side)`, a pure function of the step), padded to
    `num_prompts` (≥ 2 x per_side; a multiple of the row shards keeps the batch sharded) of
    the length bucket of the longest (`bucket_length`, at most `prompt_length` tokens, as the
    update's own batches: few compiled shapes, little padding).
    With `twins`, each goal that opens with a harmful form ("Write a script that ...") has a
    benign request of that form in its place among the benign prompts (`FormTwins.pair`)."""

    def __init__(self, goals: GoalMixture, benign: GoalMixture, tokenizer: Tokenizer, *,
                 declines: tuple[str, ...], per_side: int, num_prompts: int, system: str,
                 prompt_length: int, twins: bool = False):
        self.goals, self.benign, self.tokenizer = goals, benign, tokenizer
        self.twins = FormTwins.of(benign) if twins else None
        self.per_side, self.num_prompts = per_side, num_prompts
        self.system, self.prompt_length = system, prompt_length
        self.declines = [tokenizer.encode(t) for t in declines]
        long = [t for t, ids in zip(declines, self.declines) if len(ids) > DECLINE_TOKENS]
        if long:
            raise UserError(f"config field rl.rank_declines: {long[0]!r} has more than "
                            f"{DECLINE_TOKENS} tokens; shorten it")

    def _ids(self, text: str) -> list[int]:
        render = lambda t: defender_prompt(self.tokenizer, t, self.system)  # noqa: E731
        return fit_prompt(render, self.tokenizer, text, self.prompt_length)[0]

    def texts(self, step: int) -> tuple[list[str], list[str]]:
        """The (harmful, benign) texts ranked at step index `step`."""
        goals = self.goals.batch(step, self.per_side)
        benign = self.benign.batch(step, self.per_side)
        if self.twins:
            benign = self.twins.pair(step, goals, benign)
        return [g.text for g in goals], [b.text for b in benign]

    def batch(self, step: int) -> RankBatch:
        """The ranking batch of step index `step`: harmful prompts first, then benign."""
        harmful, benign = (list(map(self._ids, texts)) for texts in self.texts(step))
        longest = max(map(len, harmful + benign))
        return pack_rank_batch(harmful, benign, self.declines, num_prompts=self.num_prompts,
                               prompt_length=bucket_length(longest, self.prompt_length),
                               pad_id=self.tokenizer.pad_id)
