"""Tiny random guard-model folders for judge tests: a llama with a byte-level BPE tokenizer that
has the guard verdict words as single tokens, Llama 3 header specials and a Llama-3-style chat
template. `force` makes one token win every next-token prediction (a judge "forced to answer")."""

from __future__ import annotations

import pathlib

from tests.tiny_models import hf_config

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
VOCAB = 400


def write_guard_tokenizer(out_dir: pathlib.Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_VERDICTS * 50 + _TEXT * 5, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                 eos_token="<|eot_id|>", pad_token="<|endoftext|>",
                                 chat_template=CHAT_TEMPLATE)
    hf.save_pretrained(out_dir)


def write_guard_model(out_dir: pathlib.Path, seed: int = 0, force: str | None = None) -> None:
    """Saves the tiny guard folder; `force`: a string whose first token then wins every
    prediction except the one right after it, where end-of-turn wins (an answer, then stop)."""
    import torch
    import transformers

    write_guard_tokenizer(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    torch.manual_seed(seed)
    config = hf_config("llama", vocab_size=VOCAB + 16, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
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
