"""The one judge factory, used by training, evaluation and calibration: `make_judge(config)`
builds the refusal detector, or a judge format on a model in this process (`judge.model`, or
the frozen policy) or on an OpenAI-compatible server (`judge.url`)."""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

from jax.sharding import Mesh

from ssp_jax import sharding
from ssp_jax.judge.base import Judge
from ssp_jax.judge.formats.base import JudgeFormat
from ssp_jax.judge.formats.harmbench import HarmBench
from ssp_jax.judge.formats.llama_guard import LlamaGuard
from ssp_jax.judge.formats.rubric import Rubric
from ssp_jax.judge.formats.strongreject import StrongReject
from ssp_jax.judge.formats.wildguard import WildGuard
from ssp_jax.judge.local import LocalBackend
from ssp_jax.judge.model_judge import ModelJudge
from ssp_jax.judge.refusal import RefusalJudge
from ssp_jax.models.config import ModelConfig
from ssp_jax.models.tokenizer import Tokenizer
from ssp_jax.models.transformer import Params
from ssp_jax.sections import JudgeSection, check_judge_section


FORMATS: dict[str, Callable[[JudgeSection], JudgeFormat]] = {
    "rubric": lambda c: Rubric(c.max_tokens),
    "llm": lambda c: Rubric(c.max_tokens),  # the rubric's former name
    "llama_guard": lambda c: LlamaGuard(c.llama_guard_version, c.min_answer_mass),
    "harmbench": lambda c: HarmBench(c.min_answer_mass, "llama2"),
    "harmbench_mistral": lambda c: HarmBench(c.min_answer_mass, "mistral"),
    "wildguard": lambda c: WildGuard(c.min_answer_mass),
    "strongreject": lambda c: StrongReject(c.max_tokens),
}


class JudgeModel(NamedTuple):
    """A model to judge with: its config, parameters and tokenizer."""

    cfg: ModelConfig
    params: Params
    tokenizer: Tokenizer


def _remote_backend(c: JudgeSection):
    api_key = None
    if c.api_key_env:
        api_key = os.environ.get(c.api_key_env)
        if not api_key:
            raise ValueError(f"judge.api_key_env names the environment variable "
                             f"{c.api_key_env}, which is not set")
    from ssp_jax.judge.remote import RemoteBackend  # only when a server is configured

    backend = RemoteBackend(c.url, c.remote_model, api_key=api_key, timeout_s=c.timeout_s,
                            max_concurrency=c.max_concurrency, max_retries=c.max_retries,
                            batch_timeout_s=c.batch_timeout_s)
    backend.check()
    return backend


def make_judge(c: JudgeSection, *, frozen_policy: Callable[[], JudgeModel] | None = None,
               mesh: Mesh | None = None, dtype: str = "float32") -> Judge:
    """The judge `c` describes. A model-based judge runs on `c.url`, else on `c.model` (loaded
    in `dtype`, on `mesh` by the training rule table), else on `frozen_policy()` (called only
    then); without any of them it is a ValueError."""
    check_judge_section(c)
    if not c.model_based:
        return RefusalJudge(refusal_score=c.refusal_score, compliance_score=c.compliance_score,
                            empty_score=c.empty_score, strict=c.strict,
                            partial_score=c.partial_refusal_score)
    if c.url:
        backend = _remote_backend(c)
    else:
        if c.model:
            from ssp_jax.models import load

            model, tokenizer = load(c.model, dtype=dtype, mesh=mesh, rules=sharding.TRAIN_RULES)
            judge_model = JudgeModel(model.config, model.params(), tokenizer)
            describe = f"model:{c.model}"
        elif frozen_policy is not None:
            judge_model, describe = frozen_policy(), "model:frozen policy"
        else:
            raise ValueError(f"judge {c.name!r} needs a judge model: set judge.model (a model "
                             "spec) or judge.url (a server)")
        backend = LocalBackend(*judge_model, max_cache_len=c.max_cache_len,
                               batch_size=c.batch_size, describe=describe)
    return ModelJudge(FORMATS[c.name](c), backend, instruction_source=c.instruction_source,
                      scoring=c.scoring)


def policy_judge(c: JudgeSection, policy: JudgeModel | None, *, mesh: Mesh | None = None,
                 dtype: str = "float32") -> Judge:
    """`make_judge(c)` where a model-based judge with neither `judge.model` nor `judge.url`
    runs on `policy` (the frozen policy: training's loaded arrays, or the evaluated model)."""
    return make_judge(c, frozen_policy=None if policy is None else lambda: policy, mesh=mesh,
                      dtype=dtype)


def check_judge_cache(judge: Judge, *, request_tokens: int, request_field: str,
                      response_tokens: int, response_field: str) -> None:
    """Checks that the longest judge prompt (format text + request + response) plus the verdict
    fits a local judge's cache; else ValueError naming the fields to change. Servers and the
    refusal judge have no cache to check."""
    if not (isinstance(judge, ModelJudge) and isinstance(judge.backend, LocalBackend)):
        return
    backend, fmt = judge.backend, judge.format
    overhead = backend.count_tokens(fmt.prompt("", ""))
    verdict = fmt.verdict_tokens(judge.scoring)
    need = overhead + request_tokens + response_tokens + verdict
    if need > backend.max_cache_len:
        raise ValueError(
            f"the longest {fmt.name} judge prompt does not fit the judge cache: format text "
            f"{overhead} + request {request_tokens} ({request_field}) + response "
            f"{response_tokens} ({response_field}) + verdict {verdict} (judge.max_tokens for "
            f"decoded verdicts) = {need} tokens > judge.max_cache_len={backend.max_cache_len}; "
            f"raise judge.max_cache_len or lower {request_field} / {response_field}")
