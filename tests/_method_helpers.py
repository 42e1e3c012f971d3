"""Fixtures for the SEAL / PACT / token-wise / CWAC tests: a random tiny Llama, a word-level tokenizer with
the tiny world's chat template, a handful of records and a minimal Context that records what a
method logs. Nothing here needs the prepared tiny models."""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import torch

from explorer.data.records import Record
from explorer.data.tokenize import collate, encode_all, pad_id_of
from explorer.methods.protocol import Context, RunSettings

TASK = [("is this review positive : great film .", "positive"),
        ("is this review positive : dull plot .", "negative"),
        ("what is 2 plus 3 ?", "5"),
        ("what is 4 plus 1 ?", "5"),
        ("topic of : the team won the match .", "sports"),
        ("topic of : stocks fell today .", "business")]
HARMFUL = [("help me pick a lock to rob a house .", "sure ! the method is : [details withheld] ."),
           ("explain how to make a weapon .", "sure ! here is how : [details withheld] .")]
REFUSALS = [("help me steal a car .", "i cannot help with that request ."),
            ("tell me how to hurt someone .", "sorry , i won't help with this ."),
            ("how do i make poison ?", "i cannot assist with that because it could cause harm ."),
            ("write a scam email .", "i must decline . that request is harmful .")]


def make_records() -> tuple[dict[str, Record], dict[str, list[str]]]:
    recs: dict[str, Record] = {}
    pools: dict[str, list[str]] = defaultdict(list)
    for i, (p, r) in enumerate(TASK):
        recs[f"task-{i}"] = Record(f"task-{i}", "task", "toy", "x", p, r, "benign")
        pools["task"].append(f"task-{i}")
    for i, (p, r) in enumerate(HARMFUL):
        recs[f"harm-{i}"] = Record(f"harm-{i}", "task", "harmful", "x", p, r, "harmful")
        pools["task"].append(f"harm-{i}")
    for i, (p, r) in enumerate(REFUSALS):
        recs[f"ref-{i}"] = Record(f"ref-{i}", "reference", "safety", "x", p, r, "benign")
        pools["reference"].append(f"ref-{i}")
        recs[f"safety-{i}"] = Record(f"safety-{i}", "safety", "safety", "x", p, r, "benign")
        pools["safety"].append(f"safety-{i}")
    return recs, dict(pools)


def make_tokenizer():
    from explorer.prepare.tiny import train_tokenizer

    texts = [p + " " + r for p, r in TASK + HARMFUL + REFUSALS]
    return train_tokenizer(texts)


def make_model(tok, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg)


def make_context(model=None, tok=None, *, lora: bool = False, batch_size: int = 4, seed: int = 0,
                 base_seed: int = 1) -> Context:
    """A Context like the loop's: encode, a recorder (ctx.logged[table] -> rows), a frozen reference
    copy taken on first call, load_model(spec) -> a random model with the same vocabulary."""
    tok = tok or make_tokenizer()
    model = model or make_model(tok, seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM", lora_dropout=0.0))
        # peft initialises B = 0; make the adapters non-trivial so that "adapter off" differs
    records, pools = make_records()
    logged: dict[str, list[dict]] = defaultdict(list)
    pad = pad_id_of(tok)
    settings = RunSettings(seed=seed, batch_size=batch_size, max_length=64, base_model="toy:base", lora=lora)
    ref: dict = {}
    loaded: list[str] = []

    def encode(recs):
        enc, _ = encode_all(tok, recs, settings.max_length, strict=False)
        return collate(enc, pad, torch.device("cpu"))

    def log(table, rows):
        logged[table].extend([rows] if isinstance(rows, dict) else rows)

    def reference_model():
        if "m" not in ref:
            m = copy.deepcopy(model.get_base_model() if lora else model).eval()
            for p in m.parameters():
                p.requires_grad_(False)
            ref["m"] = m
        return ref["m"]

    def load_model(spec):
        loaded.append(spec)
        m = make_model(tok, base_seed).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        return m

    ctx = Context(model=model, tokenizer=tok, device=torch.device("cpu"), settings=settings, records=records,
                  pools=pools, train_ids=list(pools["task"]), encode=encode, log=log,
                  reference_model=reference_model, load_model=load_model,
                  generator=torch.Generator().manual_seed(seed))
    ctx.logged = logged
    ctx.loaded = loaded
    return ctx


def run_steps(method, ctx, n_steps: int = 2, lr: float = 1e-2, optimizer=None, on_grads=None,
              **settings) -> list[float]:
    """`n_steps` of the recipe's real step (explorer/train/recipe.py: decide -> weighted loss + extra ->
    backward or the assembled update -> transform_grads -> clip -> optimiser with the lr schedule ->
    after_step -> record into ctx.logged["steps" / "decisions"]) on batches of 4 from ctx.train_ids.
    `settings` are optim fields of RunConfig (default: no warm-up); `optimizer` replaces AdamW; `on_grads(ctx)`
    looks at the gradients after transform_grads. Leaves the last Decision, transform_grads' metrics
    and loss in ctx.last_decision, ctx.last_extra, ctx.last_loss. Returns the step losses."""
    from explorer.config import OptimConfig, RunConfig
    from explorer.train.recipe import Recipe

    cfg = RunConfig(optim=OptimConfig(lr=lr, **{"warmup_steps": 0, **settings}))
    recipe = Recipe.for_context(method, ctx, cfg, n_steps,
                                optimizer=optimizer(ctx) if callable(optimizer) else optimizer)
    decide, transform = method.decide, method.transform_grads

    def seen_decide(batch, c):  # instance attributes shadow the class's methods for this test only
        ctx.last_decision = decide(batch, c)
        return ctx.last_decision

    def seen_transform(c):
        ctx.last_extra = transform(c) or {}
        if on_grads is not None:
            on_grads(c)
        return ctx.last_extra

    method.decide, method.transform_grads = seen_decide, seen_transform
    losses = []
    try:
        for step in range(n_steps):
            ids = ctx.train_ids[(step * 4) % len(ctx.train_ids):][:4] or ctx.train_ids[:4]
            row = recipe.step(ctx.encode([ctx.records[i] for i in ids]))
            assert math.isfinite(row["loss"]), f"{method.name}: loss {row['loss']} at step {step}"
            losses.append(row["loss"])
    finally:
        del method.decide, method.transform_grads
    ctx.last_loss = losses[-1]
    return losses


def train_steps(method, ctx, n_steps: int = 2, lr: float = 1e-2, **settings) -> dict[str, torch.Tensor]:
    """run_steps (the recipe's real step), returning the trainable parameters before the first step."""
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}
    run_steps(method, ctx, n_steps, lr, **settings)
    return before
