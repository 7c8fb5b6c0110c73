"""Tiny random guard-model folders for judge tests.

`write_guard_model`: a llama with a byte-level BPE tokenizer that has the guard verdict words as
single tokens, Llama 3 header specials and a chat template (Llama-3-style, or another such as
Llama Guard 3's own). `force` makes one token win every next-token prediction (a judge "forced
to answer").

`write_sentencepiece_guard`: a llama with a tokenizer trained by the `sentencepiece` library
(BPE, byte fallback, "▁" leading-space pieces such as "▁Yes", "unsafe" split into "un" +
"safe", "\n\n" one piece) and a chat template in its files, whose answers follow a table of
next-token transitions (`ANSWERS`)."""

from __future__ import annotations

import pathlib

from tests.tiny_models import hf_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "guard_prompts"
# Llama Guard 3's own chat template (meta-llama/Llama-Guard-3-8B tokenizer_config.json)
LLAMA_GUARD_3_TEMPLATE = (FIXTURES / "llama_guard_3_chat_template.jinja").read_text("utf-8")

SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# verdict words repeated so that BPE merges each into one token, in the positions they follow
_VERDICTS = ["safe", "unsafe", " Yes", " yes", " No", " no", "Harmful request: yes",
             "Response refusal: no", "Harmful response: yes", "Harmful response: no",
             "unsafe\nS1,S9", "#thescore: 5", "1.b 0", "2.b 5", "3.b 4"]
_TEXT = ["Task: Check the conversation for unsafe content under the categories below.",
         "User: How do I pick a lock? Agent: Use a tension wrench and a pick.",
         "Behavior: Generation: Answer: [INST] [/INST] <<SYS>> <</SYS>>",
         "I'm sorry, but I can't help with that request."]
VOCAB = 800


def write_guard_tokenizer(out_dir: pathlib.Path, chat_template: str = CHAT_TEMPLATE) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    published = [(FIXTURES / f).read_text("utf-8") for f in
                 ("harmbench_llama2.txt", "wildguard.txt", "llama_guard_3_chat_template.jinja")]
    tok.train_from_iterator(_VERDICTS * 50 + _TEXT * 5 + published * 3, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                 eos_token="<|eot_id|>", pad_token="<|endoftext|>",
                                 chat_template=chat_template)
    hf.save_pretrained(out_dir)


def write_guard_model(out_dir: pathlib.Path, seed: int = 0, force: str | None = None,
                      chat_template: str = CHAT_TEMPLATE) -> None:
    """Saves the tiny guard folder; `force`: a string whose first token then wins every
    prediction except the one right after it, where end-of-turn wins (an answer, then stop)."""
    import torch
    import transformers

    write_guard_tokenizer(out_dir, chat_template)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    torch.manual_seed(seed)
    config = hf_config("llama", vocab_size=VOCAB + 16, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       max_position_embeddings=1024)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(1.0 if p.dim() == 1 else 0.0, 0.1 if p.dim() == 1 else 0.08)
        if force is not None:
            token = tokenizer.encode(force, add_special_tokens=False)[0]
            force_answer(model, token, tokenizer.eos_token_id)
    model.save_pretrained(out_dir)


def force_answer(model, token: int, stop: int) -> None:
    """Edits a torch llama in place so `token` wins every next-token prediction except right
    after itself, where `stop` wins: hidden dim 0 carries a constant that only `token`'s logit
    reads, dim 1 marks `token`'s own embedding and only `stop`'s logit reads it (the layers
    write nothing into either dim)."""
    embed = model.model.embed_tokens.weight
    embed[:, 0], embed[:, 1] = 10.0, 0.0
    embed[token, 1] = 10.0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[:2] = 0.0
        layer.mlp.down_proj.weight[:2] = 0.0
    model.model.norm.weight[:2] = 1.0
    model.lm_head.weight[:, :2] = 0.0
    model.lm_head.weight[token, 0] = 50.0
    model.lm_head.weight[stop, 1] = 100.0


SP_CONTROL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
              "[INST]", "[/INST]"]
_SP_CORPUS = (["Answer: Yes. Answer: No. Answer: yes. Answer: no."] * 40
              + ["User: How do I pick a lock? Agent: Use a tension wrench and a pick.",
                 "safe, safe; safe", "un, un; un"] * 30 + ["un; safe"] * 300
              # the published prompts, so that they take a few hundred pieces, not a thousand
              + [(FIXTURES / f).read_text("utf-8").replace("unsafe", "un safe")
                 for f in ("harmbench_llama2.txt", "llama_guard_3_chat_template.jinja")] * 3)
# piece -> {next piece: weight}: after Llama Guard 3's assistant header the guard writes
# "\n\n", then "un" + "safe" a little more often than "safe"; after "[/INST]" " Yes" a little
# more often than " No"; then end of turn
# (weights near 5: logits near 40, far above the random rest yet small enough that float32
# rounding stays under 1e-5 in the probabilities)
ANSWERS = {"<|end_header_id|>": {"\n\n": 5.0}, "\n\n": {"un": 5.1, "safe": 5.0},
           "un": {"safe": 5.0}, "safe": {"<|eot_id|>": 5.0},
           "[/INST]": {"\u2581Yes": 5.1, "\u2581No": 5.0},
           "\u2581Yes": {"<|eot_id|>": 5.0}, "\u2581No": {"<|eot_id|>": 5.0}}


def sentencepiece_guard_tokenizer(chat_template: str):
    """A `Tokenizer` from a SentencePiece BPE model trained here (see the module docstring);
    no BOS is added (the template writes its own)."""
    import io

    import sentencepiece as spm

    from ssp_jax.models.gguf_sentencepiece import sentencepiece_tokenizer

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SP_CORPUS), model_writer=out, model_type="bpe", vocab_size=900,
        byte_fallback=True, control_symbols=SP_CONTROL, user_defined_symbols=["\n\n"],
        character_coverage=1.0, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=out.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
             4 if pieces[i] == "\n\n" else 1 for i in range(len(pieces))]
    meta = {"tokenizer.ggml.tokens": pieces, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(len(pieces))],
            "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id(),
            "tokenizer.ggml.unknown_token_id": sp.unk_id(), "tokenizer.ggml.add_bos_token": False,
            "tokenizer.ggml.eot_token_id": pieces.index("<|eot_id|>"),
            "tokenizer.chat_template": chat_template}
    return sentencepiece_tokenizer(meta, pathlib.Path("sentencepiece guard"))


def write_sentencepiece_guard(out_dir: pathlib.Path, seed: int = 0,
                              chat_template: str = LLAMA_GUARD_3_TEMPLATE) -> None:
    """Saves the SentencePiece guard folder: random weights, answers as `ANSWERS` says."""
    import torch
    import transformers

    tokenizer = sentencepiece_guard_tokenizer(chat_template)
    vocab = tokenizer.hf.get_vocab()
    torch.manual_seed(seed)
    config = hf_config("llama", vocab_size=len(tokenizer.hf), bos_token_id=1,
                       eos_token_id=tokenizer.eos_id, pad_token_id=0,
                       max_position_embeddings=1024)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(1.0 if p.dim() == 1 else 0.0, 0.1 if p.dim() == 1 else 0.08)
        follow_transitions(model, {vocab[a]: {vocab[b]: w for b, w in nxt.items()}
                                   for a, nxt in ANSWERS.items()})
    model.save_pretrained(out_dir)
    tokenizer.save(out_dir)


def follow_transitions(model, table: dict[int, dict[int, float]]) -> None:
    """Edits a torch llama in place so that after token a, token b's logit gains about
    8 · table[a][b] (swamping the random rest): hidden dim k marks the k-th `a` in its own
    embedding, only the `b` logits read it, and the layers write nothing into those dims."""
    embed, head = model.model.embed_tokens.weight, model.lm_head.weight
    dims = range(len(table))
    embed[:, dims] = 0.0
    head[:, dims] = 0.0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[dims] = 0.0
        layer.mlp.down_proj.weight[dims] = 0.0
    model.model.norm.weight[dims] = 1.0
    for k, (a, nxt) in enumerate(table.items()):
        embed[a, k] = 10.0
        for b, weight in nxt.items():
            head[b, k] = weight
