"""The method contract (explorer/methods/protocol.py), one test per clause, parametrised over every
registered method: decide returns non-negative weights of the batch's shape and score columns of its
length; state_dict survives the recipe's checkpoint format (safetensors + JSON); a run checkpointed after
two steps and resumed (a fresh method, prepare, then the checkpoint) decides the next steps exactly as
the uninterrupted run. On the random tiny Llama of tests/_method_helpers.py: nothing here needs the
prepared tiny world."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from _cwac_helpers import small_config
from _method_helpers import make_context, make_tokenizer
from explorer.config import OptimConfig, RunConfig
from explorer.methods.registry import REGISTRY, load_methods, make_method

pytestmark = pytest.mark.contract

#: per method, settings small enough for the toy model and a dozen records (each a setting of the
#: method's own config; a method added to the registry must say here how it runs small)
SMALL = {
    "sft": {},
    "random": {"keep": 0.5},
    "safeinstr": {},
    "tokenwise": {},
    "pact": {"k": 10, "n_refusals": 4},
    "dualselect": {"warmup_steps": 1, "keep": 2, "k_ref": 2, "refresh": "every_n_steps", "refresh_every": 2},
    "seal": {"selector_epochs": 1, "model_lr": 1e-3, "zip_mode": "cycle_safe", "selector_batch_size": 4},
    "cwac": "small_config",
}
N_STEPS, SPLIT, B = 4, 2, 4


def methods() -> list[str]:
    load_methods()
    return sorted(REGISTRY)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def new_method(name: str):
    cls = REGISTRY[name][0]
    cfg = small_config(sae_steps=10) if SMALL[name] == "small_config" else cls(**SMALL[name])
    return make_method(name, cfg)


def batches(ctx) -> list[list[str]]:
    ids = ctx.train_ids
    return [(ids[(s * B) % len(ids):] + ids)[:B] for s in range(N_STEPS)]


def recipe_for(method, ctx):
    from explorer.train.recipe import Recipe

    cfg = RunConfig(optim=OptimConfig(lr=1e-2, warmup_steps=0))
    r = Recipe.for_context(method, ctx, cfg, total_steps=N_STEPS)
    r.writer = SimpleNamespace(next_parts=lambda: {})   # _write_checkpoint records where the parts stand
    return r


def decisions(ctx, steps) -> list[dict]:
    return sorted((d for d in ctx.logged["decisions"] if d["step"] in steps), key=lambda d: (d["step"], d["sample_id"]))


def test_every_registered_method_is_covered():
    assert set(methods()) == set(SMALL), "add the new method's small settings to SMALL"


@pytest.mark.parametrize("name", methods())
def test_decide_returns_non_negative_weights_of_the_batchs_shape(name, tok):
    ctx = make_context(tok=tok)
    m = new_method(name)
    assert m.name == name and isinstance(m.shardable, bool)
    m.prepare(ctx)
    batch = ctx.encode([ctx.records[i] for i in batches(ctx)[0]])
    d = m.decide(batch, ctx)
    w = d.weights.detach()
    assert w.shape == (len(batch),) and torch.isfinite(w).all() and (w >= 0).all(), w
    for col, v in d.scores.items():
        assert len(v) == len(batch), f"{name}: score column {col} has {len(v)} values for {len(batch)} samples"
    assert d.extra_loss is None or d.extra_loss.dim() == 0


@pytest.mark.parametrize("name", methods())
def test_checkpoint_and_resume_decide_as_the_uninterrupted_run(name, tok, tmp_path):
    from explorer.train.recipe import CHECKPOINT, load_checkpoint

    # the uninterrupted run, writing the recipe's checkpoint after SPLIT steps on the way
    ctx = make_context(tok=tok)
    m = new_method(name)
    m.prepare(ctx)
    r = recipe_for(m, ctx)
    plan = batches(ctx)
    for s, ids in enumerate(plan):
        if s == SPLIT:
            r._write_checkpoint(tmp_path / CHECKPOINT)
            state = m.state_dict()
        r.step(ctx.encode([ctx.records[i] for i in ids]))
    want = decisions(ctx, range(SPLIT, N_STEPS))

    # resumed as `explorer run --resume` does: a fresh model and method, prepare, then the checkpoint
    ctx = make_context(tok=tok)
    fresh = new_method(name)
    fresh.prepare(ctx)
    r = recipe_for(fresh, ctx)
    r.restore_checkpoint(load_checkpoint(tmp_path))
    back = fresh.state_dict()
    assert set(back) == set(state), f"{name}: state_dict keys changed in the round trip"
    for k, v in state.items():
        if torch.is_tensor(v):
            assert torch.equal(back[k].cpu(), v.detach().cpu()), k
        else:
            assert back[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(back[k])), k
    assert r.step_no == SPLIT
    for ids in plan[SPLIT:]:
        r.step(ctx.encode([ctx.records[i] for i in ids]))
    got = decisions(ctx, range(SPLIT, N_STEPS))
    assert len(got) == len(want) and [d["sample_id"] for d in got] == [d["sample_id"] for d in want]
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for col, va in a.items():
            vb = b[col]
            if isinstance(va, float):
                assert math.isclose(va, vb, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(va) and math.isnan(vb)), \
                    f"{name} step {a['step']} {a['sample_id']} {col}: resumed {va}, uninterrupted {vb}"
            else:
                assert va == vb, f"{name} step {a['step']} {a['sample_id']} {col}: resumed {va!r}, uninterrupted {vb!r}"
