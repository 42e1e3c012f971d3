"""The shared optimiser step and schedule (explorer/model/optim.py) give each loop the numbers its own
code gave: the code each loop had is copied here as it was, and the helper must match it bit for bit
(schedules over every step the loops take; parameters after a few real steps). The tiny world's
preparation records weights_sha256, which these equalities keep."""

from __future__ import annotations

import copy
import functools
import math
import random

import pytest
import torch

from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import collate, encode_all, pad_id_of
from explorer.model.losses import per_sample_nll
from explorer.model.optim import LrSchedule, OptimStep
from explorer.prepare import tiny

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def one_thread():
    """As the tiny world's preparation runs (PREPARE_THREADS), and fast on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(tiny.PREPARE_THREADS)
    yield
    torch.set_num_threads(old)


# -- the code the loops had before the helper (copied verbatim) ------------------------------------

def old_recipe_get_lr(step, total, peak, warmup, schedule="cosine", min_ratio=0.1):
    if step < warmup:
        return peak * (step + 1) / max(1, warmup)
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return peak * (min_ratio + (1 - min_ratio) * (1 - progress))
    if schedule == "cosine":
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(schedule)


def old_tiny_lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def old_seal_warm(step, total, ratio):
    w = math.ceil(ratio * total)
    return min(1.0, (step + 1) / w) if w > 0 else 1.0


def old_tiny_train_stage(model, tokenizer, records, steps, lr, s, seed):
    enc, _ = encode_all(tokenizer, records, s.max_positions, strict=True, source="old")
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    model.train()
    losses, order = [], []
    pad = pad_id_of(tokenizer)
    for step in range(steps):
        if len(order) < s.batch_size:
            more = list(range(len(enc)))
            rng.shuffle(more)
            order += more
        idx, order = order[:s.batch_size], order[s.batch_size:]
        b = collate([enc[i] for i in idx], pad)
        for g in opt.param_groups:
            g["lr"] = old_tiny_lr_at(step, steps, lr, s.warmup)
        out = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        loss = per_sample_nll(out.logits, b.labels).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


# -- schedules: every step of every loop ------------------------------------------------------------

def test_the_recipes_schedule_is_the_one_it_had():
    for shape in ("constant", "linear", "cosine"):
        for peak, total, warmup, floor in [(1e-3, 60, 5, 0.1), (3e-4, 128, 0, 0.0), (2e-5, 7, 10, 0.25)]:
            new = LrSchedule(peak, total, warmup, shape, floor)
            assert [new(s) for s in range(total + 2)] == [old_recipe_get_lr(s, total, peak, warmup, shape, floor)
                                                          for s in range(total + 2)]


def test_the_tiny_worlds_schedule_is_the_one_it_had():
    """TinySettings' two stages (and test_prepare's short ones): cosine to 0 after the warm-up."""
    s = tiny.TinySettings()
    for steps, peak, warmup in [(s.base_steps, s.base_lr, s.warmup), (s.aligned_steps, s.aligned_lr, s.warmup),
                                (12, 2e-3, 3), (6, 1e-3, 3)]:
        new = LrSchedule(peak, steps, warmup, "cosine", 0.0)
        assert [new(i) for i in range(steps)] == [old_tiny_lr_at(i, steps, peak, warmup) for i in range(steps)]


def test_seals_warm_up_factor_is_the_one_it_had():
    for total in (1, 3, 7, 40, 333):
        for ratio in (0.0, 0.01, 0.1, 0.5, 1.0):
            new = LrSchedule(1.0, total, math.ceil(ratio * total), "constant")
            for lr in (5e-5, 1e-3, 0.1):   # each optimiser at its lr times the factor
                assert [lr * new(i) for i in range(total + 1)] == [lr * old_seal_warm(i, total, ratio)
                                                                   for i in range(total + 1)]


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="expected one of constant, linear, cosine"):
        LrSchedule(1e-3, 10, 0, "exponential")


# -- steps: parameters after a few real steps ---------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _tiny_world():
    s = tiny.TinySettings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=8, warmup=3)
    world = read_sample_file(sample_data_dir() / "world_train.jsonl")[:96]
    tok = tiny.train_tokenizer([t for r in world for t in (r.prompt, r.response)])
    return s, tiny.stage_records(world, "base"), tok, tiny.build_model(tok, s)


def _tiny_model():
    s, recs, tok, model = _tiny_world()
    return s, recs, tok, copy.deepcopy(model)


def test_the_tiny_worlds_trainer_gives_the_weights_it_gave():
    s, recs, tok, model = _tiny_model()
    old = copy.deepcopy(model)
    want = old_tiny_train_stage(old, tok, recs, 10, 2e-3, s, seed=5)
    got = tiny.train_stage(model, tok, recs, 10, 2e-3, s, seed=5, desc="new")
    assert got == want
    for (n, a), (_, b) in zip(old.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("make", [lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01),
                                  lambda ps, lr: torch.optim.Adam(ps, lr=lr)], ids=["adamw", "adam"])
def test_a_step_is_the_lr_zero_grad_clip_step_each_loop_wrote(clip, make):
    """The recipe, SEAL's three optimisers, the SmolLM2 adapter's and the SAE's: each set the lr in
    every group, zero_grad(set_to_none), backward, clip_grad_norm_ when clip > 0, step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    ref = copy.deepcopy(net)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    sched = LrSchedule(1e-2, 8, 3, "cosine", 0.1)
    opt_ref = make(list(ref.parameters()), 1e-2)
    step = OptimStep(make(list(net.parameters()), 1e-2), net.parameters(), sched, clip)
    norms = []
    for i in range(8):
        for g in opt_ref.param_groups:
            g["lr"] = old_recipe_get_lr(i, 8, 1e-2, 3, "cosine", 0.1)
        opt_ref.zero_grad(set_to_none=True)
        ((ref(x) - y) ** 2).mean().backward()
        want = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), clip) if clip > 0 else torch.tensor(0.0)
        opt_ref.step()

        step.set_lr(i)
        step.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        norms.append((float(step.step()), float(want)))
    assert all(a == b for a, b in norms) and (clip == 0 or all(b > 0 for _, b in norms))
    for a, b in zip(ref.parameters(), net.parameters()):
        assert torch.equal(a, b)
    assert step.set_lr(lr=0.5) == 0.5 and all(g["lr"] == 0.5 for g in step.opt.param_groups)


def test_the_equalities_would_notice_another_rule():
    """The checks can fail: a warm-up written peak · ((s + 1) / w) differs in the last bit somewhere,
    and one step more changes the weights."""
    peak, w = 3e-4, 7
    assert any(peak * (s + 1) / w != peak * ((s + 1) / w) for s in range(w))
    s, recs, tok, model = _tiny_model()
    other = copy.deepcopy(model)
    tiny.train_stage(model, tok, recs, 4, 2e-3, s, seed=5, desc="a")
    old_tiny_train_stage(other, tok, recs, 5, 2e-3, s, seed=5)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
