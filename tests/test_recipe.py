"""The recipe's pieces on a random tiny Llama: the learning-rate schedules, checkpoints of the optimiser."""

from __future__ import annotations

import math

import pytest
import torch

from _method_helpers import make_context
from explorer.config import ConfigError, OptimConfig, RunConfig, load_config
from explorer.methods.protocol import Decision, MethodBase
from explorer.model.optim import LrSchedule
from explorer.record.writer import RunWriter
from explorer.train.recipe import Recipe, load_checkpoint


def get_lr(step, total, peak, warmup, shape, min_ratio=0.1):
    return LrSchedule(peak, total, warmup, shape, min_ratio)(step)


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
    assert RunConfig().optim.lr_schedule == "cosine"  # the default is the schedule runs always had


@pytest.mark.unit
def test_a_bad_lr_schedule_names_the_key():
    assert load_config(None, ["optim.lr_schedule=linear"]).optim.lr_schedule == "linear"
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ["optim.lr_schedule=exponential"])


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
    cfg = RunConfig(optim=OptimConfig(lr=1e-2, warmup_steps=0))
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


@pytest.mark.integration
def test_a_crashed_run_resumes_to_the_records_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """On the golden test's model (built in seconds, no tiny-world preparation): a run that dies after
    its second checkpoint, resumed with `resume`, ends with the same steps and decisions."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).with_name("golden")))
    import make_golden

    from explorer.methods.random_select import RandomSelect
    from explorer.train.recipe import resume, run

    model = make_golden.build_model(tmp_path / "model")
    common = [f"model.path={model}", "data.n_train=48", "optim.epochs=2", "optim.batch_size=8", "record.flush_every=1", "record.checkpoint_every=2",
              "eval.final_n=2", "eval.max_new_tokens=1", "progress=false", "method=random", "model.device=cpu"]
    ref = run(load_config(None, [f"runs_dir={tmp_path / 'ref'}", *common]))

    real, calls = RandomSelect.decide, {"n": 0}

    def dies_at_step_5(self, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("killed")
        return real(self, batch, ctx)

    monkeypatch.setattr(RandomSelect, "decide", dies_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        run(load_config(None, [f"runs_dir={tmp_path / 'crashed'}", *common]))
    monkeypatch.setattr(RandomSelect, "decide", real)
    crashed = next((tmp_path / "crashed").iterdir())
    assert resume(crashed) == crashed

    def table(d, name, key):
        parts = sorted((d / name).glob("part-*.parquet"))
        df = pd.concat([pd.read_parquet(p) for p in parts]).drop(columns=["run_id"])
        return df[[c for c in df.columns if not c.startswith("time")]].sort_values(key).reset_index(drop=True)

    for name, key in (("steps", ["step"]), ("decisions", ["step", "sample_id"])):
        pd.testing.assert_frame_equal(table(ref, name, key), table(crashed, name, key), check_exact=False, rtol=1e-6)
    assert len(table(crashed, "steps", ["step"])) == 12
