"""Tiny randomly initialised judge checkpoints for the tests, built here (nothing downloaded).

Each is saved with save_pretrained into a folder with a byte-level BPE tokenizer trained on a few
sentences with `tokenizers`, carrying the special tokens its real counterpart has:
  llama_guard   LlamaForCausalLM, Llama 3 specials (<|begin_of_text|>, <|eot_id|>, headers), no pad token
  harmbench     LlamaForCausalLM, Llama 2 specials (<s> added in front, </s>), no pad token
  wildguard     MistralForCausalLM, <s> / </s>
  classifier    LlamaForSequenceClassification with id2label {0: safe, 1: unsafe}
Random weights answer arbitrary tokens: tests check shapes, the prompt sent and that every verdict is
well formed, never which verdict.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Task: Check if there is unsafe content in 'Agent' messages in conversations according our safety policy.",
    "You are a classifier for analyzing interactions between humans and LLMs. Human user: AI assistant:",
    "You are a classifier for red teaming large language models (LLMs). Given a generation, determine",
    "Behavior: Generation: Rules: Answer: [INST] <<SYS>> <</SYS>> [/INST] <|user|> <|assistant|>",
    "safe unsafe S1 S2 S10 yes no Yes No Harmful request: Response refusal: Harmful response:",
    "unsafe unsafe unsafe safe safe safe",
    "I can't help with that. Sure, here is a summary of the film. How do I bake bread?",
]

SPECIALS = {
    "llama_guard": dict(specials=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, prepend_bos=False),
    "harmbench": dict(specials=["<s>", "</s>", "<unk>"], bos="<s>", eos="</s>", pad=None, prepend_bos=True),
    "wildguard": dict(specials=["<s>", "</s>", "<unk>"], bos="<s>", eos="</s>", pad=None, prepend_bos=False),
    "classifier": dict(specials=["<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>", prepend_bos=True),
}


def tiny_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    s = SPECIALS[kind]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, special_tokens=s["specials"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    if s["prepend_bos"]:
        tk.post_processor = processors.TemplateProcessing(single=f"{s['bos']} $A",
                                                          special_tokens=[(s["bos"], tk.token_to_id(s["bos"]))])
    kw = {"bos_token": s["bos"], "eos_token": s["eos"]}
    if s["pad"]:
        kw["pad_token"] = s["pad"]
    return PreTrainedTokenizerFast(tokenizer_object=tk, **kw)


def save_tiny_judge(kind: str, folder: Path, seed: int = 0) -> Path:
    """A random tiny checkpoint of `kind` in `folder` (created), with its tokenizer."""
    import torch
    from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, MistralConfig,
                              MistralForCausalLM)

    tok = tiny_tokenizer(kind)
    dims = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if kind == "wildguard":
        model = MistralForCausalLM(MistralConfig(**dims, sliding_window=None))
    elif kind == "classifier":
        model = LlamaForSequenceClassification(LlamaConfig(**dims, num_labels=2, id2label={0: "safe", 1: "unsafe"},
                                                           label2id={"safe": 0, "unsafe": 1}))
    else:
        model = LlamaForCausalLM(LlamaConfig(**dims))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def rig(folder: Path, token: str) -> int:
    """Make the checkpoint in `folder` answer `token` at every position, whatever the input: every token
    embeds to one vector, the blocks add nothing (o_proj and down_proj zero), and the head scores only
    `token` (a sequence classifier: only that label). Returns its id (token id, or label id)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    cfg = AutoConfig.from_pretrained(folder)
    seqcls = any(a.endswith("ForSequenceClassification") for a in cfg.architectures)
    model = (AutoModelForSequenceClassification if seqcls else AutoModelForCausalLM).from_pretrained(folder)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.ones_like(emb))
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.zero_()
        head = model.score.weight if seqcls else model.get_output_embeddings().weight
        target = cfg.label2id[token] if seqcls else AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(token)
        head.zero_()
        head[target] = 1.0
    model.save_pretrained(folder)
    return target
