"""The recipe's pieces on a random tiny Llama: the learning-rate schedules, checkpoints of the optimiser."""

from __future__ import annotations

import math

import pytest
import torch

from _method_helpers import make_context
from explorer.config import ConfigError, RunConfig, load_config
from explorer.methods.base import Decision, MethodBase
from explorer.record.writer import RunWriter
from explorer.train.recipe import Recipe, get_lr, load_checkpoint


@pytest.mark.unit
def test_lr_schedules_warm_up_then_keep_or_decay_to_the_floor():
    total, peak, warm = 20, 1e-3, 4
    for sched in ("constant", "linear", "cosine"):
        ramp = [get_lr(s, total, peak, warm, sched) for s in range(warm)]
        assert ramp == sorted(ramp) and ramp[-1] == pytest.approx(peak) and ramp[0] < peak
    after = range(warm, total)
    assert all(get_lr(s, total, peak, warm, "constant") == peak for s in after)
    for sched in ("linear", "cosine"):
        vals = [get_lr(s, total, peak, warm, sched, min_ratio=0.1) for s in after]
        assert vals == sorted(vals, reverse=True) and vals[0] == pytest.approx(peak)
        assert get_lr(total, total, peak, warm, sched, min_ratio=0.1) == pytest.approx(0.1 * peak)
        assert get_lr(total, total, peak, warm, sched, min_ratio=0.0) == pytest.approx(0.0, abs=1e-15)
    mid = warm + (total - warm) // 2
    assert get_lr(mid, total, peak, warm, "linear", 0.0) == pytest.approx(peak / 2)
    assert get_lr(mid, total, peak, warm, "cosine", 0.0) == pytest.approx(peak / 2)
    quarter = warm + (total - warm) // 4  # cosine stays high longer than linear
    assert get_lr(quarter, total, peak, warm, "cosine") > get_lr(quarter, total, peak, warm, "linear")
    assert RunConfig().lr_schedule == "cosine"  # the default is the schedule runs always had


@pytest.mark.unit
def test_a_bad_lr_schedule_names_the_key():
    assert load_config(None, ["lr_schedule=linear"]).lr_schedule == "linear"
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ["lr_schedule=exponential"])


class _FirstParameterFrozenInPractice(MethodBase):
    """SFT, except that the first trainable parameter never receives a gradient (so AdamW keeps no
    state for it): what a parameter outside every path of the loss looks like to the optimiser."""

    name = "first-frozen"

    def decide(self, batch, ctx):
        return Decision(weights=torch.ones(len(batch)))

    def transform_grads(self, ctx):
        next(p for p in ctx.model.parameters() if p.requires_grad).grad = None

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


def _recipe(tmp_path, seed=0):
    ctx = make_context(seed=seed)
    cfg = RunConfig(lr=1e-2, warmup_steps=0)
    r = Recipe.for_context(_FirstParameterFrozenInPractice(None), ctx, cfg, total_steps=4)
    r.writer = RunWriter.create(tmp_path, f"run-{seed}", {})
    return r, ctx


def test_a_checkpoint_restores_each_parameters_optimizer_state_to_that_parameter(tmp_path):
    r, ctx = _recipe(tmp_path)
    for _ in range(2):
        r.step(ctx.encode([ctx.records[i] for i in ctx.train_ids[:4]]))
    first = next(p for p in ctx.model.parameters() if p.requires_grad)
    assert first not in r.opt.state and len(r.opt.state) == len(r.params) - 1
    r.save_checkpoint()
    fresh, _ = _recipe(tmp_path, seed=1)
    fresh.restore_checkpoint(load_checkpoint(r.writer.run_dir))
    names = {id(p): n for n, p in ctx.model.named_parameters()}
    fresh_params = dict(fresh.model.named_parameters())
    restored = {n for n, p in fresh_params.items() if p in fresh.opt.state}
    assert restored == {names[id(p)] for p in r.opt.state}
    for p, st in r.opt.state.items():
        q = fresh_params[names[id(p)]]
        for k, v in st.items():
            w = fresh.opt.state[q][k]
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(w)), (names[id(p)], k)
    assert fresh.step_no == 2 and math.isfinite(fresh.step(ctx.encode([ctx.records["task-0"]]))["loss"])
