"""Step checkpoints and counterfactual replays on the tiny model: checkpoints leave the decisions as they
were and stay bounded; a replay of the kept arm of a pure selection method is the run itself; arms that
train on other samples end elsewhere; bad requests fail naming what to do; a crashed replay stays readable."""

import json

import pandas as pd
import pytest

from explorer.runs import reader, schema

pytestmark = pytest.mark.integration

#: a short Random run: 48 samples in batches of 8 = 6 steps, half of each batch dropped at random
COMMON = ["data.n_train=48", "optim.epochs=1", "optim.batch_size=8", "eval.final_n=4", "eval.n=4", "eval.every=0", "record.flush_every=1",
          "progress=false", "eval.max_new_tokens=4", "method=random", "eval.influence_n=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_paths):
    from explorer.config import load_config
    from explorer.train.recipe import run

    root = tmp_path_factory.mktemp("replay")
    with_ck = run(load_config(None, [f"runs_dir={root / 'ck'}", *COMMON, "record.checkpoint_every=1", "record.checkpoint_keep=2",
                                     "eval.influence_every=4"]))
    plain = run(load_config(None, [f"runs_dir={root / 'plain'}", *COMMON, "eval.influence_every=4"]))
    return with_ck, plain


def test_step_checkpoints_are_bounded_and_leave_the_decisions_unchanged(runs):
    with_ck, plain = runs
    assert reader.step_checkpoints(with_ck) == [4, 5]             # steps 1..5 saved, the newest 2 kept
    assert reader.manifest(with_ck)["step_checkpoints"] == [4, 5]
    assert (with_ck / "checkpoint" / "state.json").exists()       # the resume checkpoint beside them
    assert json.loads((with_ck / "checkpoints" / "step-4" / "state.json").read_text())["step"] == 4
    assert reader.step_checkpoints(plain) == []
    a = reader.decisions(with_ck).drop(columns=["run_id"])
    b = reader.decisions(plain).drop(columns=["run_id"])
    pd.testing.assert_frame_equal(a, b)                           # saving read no random number


@pytest.fixture(scope="module")
def replayed(runs):
    from explorer.replay.replay import replay

    return replay(runs[0], step=4, horizon=2, seeds=(0, 1), eval_n=4)


def test_the_kept_arm_of_a_pure_selection_method_replays_the_run(replayed):
    r = replayed
    st = r.steps
    kept = st[st["arm"] == "kept"]
    assert sorted(kept["step"].unique()) == [4, 5]
    # per-sample losses at step 4 (the checkpoint) and step 5 (after the replayed step 4) are the run's
    assert kept["max_abs_sample_loss_diff"].max() < 1e-5
    assert r.meta["checkpoint_loss_diff"] < 1e-5
    # the other arms trained on other samples at step 4, so their step-5 losses are not the run's
    at5 = st[(st["step"] == 5) & (st["arm"] == "dropped")]
    assert at5["max_abs_sample_loss_diff"].min() > 1e-6


def test_arms_train_on_their_share_and_only_the_random_draw_moves_with_the_seed(replayed, runs):
    rows = replayed.rows
    batch = reader.decisions(runs[0], step=4, role="task")
    n, d = len(batch), int((~batch["kept"]).sum())
    assert d > 0
    got = rows.set_index(["arm", "seed"])
    assert got.loc[("kept", 0), "n_arm"] == n - d and got.loc[("dropped", 0), "n_arm"] == d
    assert got.loc[("random", 0), "n_arm"] == n - d and got.loc[("all", 0), "n_arm"] == n
    assert set(got.loc[("kept", 0), "arm_samples"]) == set(batch.loc[batch["kept"], "sample_id"])
    for arm in ("kept", "dropped", "all"):       # no dropout in the tiny model: the same for every seed
        assert got.loc[(arm, 0), "refusal_loss"] == got.loc[(arm, 1), "refusal_loss"]
    assert got.loc[("kept", 0), "refusal_loss"] != got.loc[("all", 0), "refusal_loss"]
    assert rows[schema.REPLAY_METRICS[0]].notna().all() and rows["harmful_score"].between(0, 100).all()
    # recorded in the run folder, read back without torch
    back = reader.replays(runs[0])
    assert set(back["replay_id"]) == {replayed.replay_id} and len(back) == len(rows)
    rec = reader.replay_records(runs[0])[-1]
    assert rec["status"] == "complete" and rec["checkpoint"] == "checkpoints/step-4" and rec["seeds"] == [0, 1]


def test_replays_that_cannot_run_say_what_to_do(runs):
    from explorer.replay.replay import ReplayError, replay

    with_ck, plain = runs
    with pytest.raises(ReplayError, match="record.checkpoint_every"):
        replay(plain, step=4)
    with pytest.raises(ReplayError, match="no step checkpoint at step 2; it has 4, 5"):
        replay(with_ck, step=2)
    with pytest.raises(ReplayError, match="no task decisions recorded at step 6"):
        replay(with_ck, step=5, horizon=2)
    with pytest.raises(ReplayError, match="arms: best unknown"):
        replay(with_ck, step=4, arms="kept,best")


def test_a_crashed_replay_leaves_what_it_measured_readable(runs, monkeypatch):
    from explorer.replay.replay import RunWorld, replay

    world = RunWorld(runs[0])
    calls = {"n": 0}
    real = world.measure

    def measure(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:                         # the checkpoint, the first arm, then a crash
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(world, "measure", measure)
    with pytest.raises(RuntimeError, match="killed"):
        replay(runs[0], step=5, arms="kept,all", generate=False, world=world)
    rec = [m for m in reader.replay_records(runs[0]) if m["step"] == 5][-1]
    assert rec["status"] == "failed" and "killed" in rec["error"]
    rows = reader.replays(runs[0], 5)
    assert list(rows.loc[rows["replay_id"] == rec["replay_id"], "arm"]) == ["kept"]


def test_leave_one_out_is_the_all_arm_less_one_sample(runs):
    from explorer.replay.replay import RunWorld, leave_one_out, replay

    world = RunWorld(runs[0])
    loo = leave_one_out(runs[0], step=5, world=world)
    batch = reader.decisions(runs[0], step=5, role="task")
    assert sorted(loo["sample_id"]) == sorted(batch["sample_id"]) and loo["loo_safety"].abs().gt(0).all()
    # with sample i minus without it: the all arm's loss minus that of an arm that leaves i out
    base = replay(runs[0], step=5, arms="all", generate=False, world=world).rows["refusal_loss"].iloc[0]
    i = loo["sample_id"].iloc[0]
    world.run_arm(5, 1, {s: 1.0 for s in batch["sample_id"] if s != i}, 0)
    without = world.heldout_losses()["refusal_loss"]
    assert loo["loo_safety"].iloc[0] == pytest.approx(base - without, abs=1e-7)
    assert len(reader.loo(runs[0], 5)) == len(loo)
    # the rounding a replay carries (the batch reversed) is recorded, and the effects stand above it
    floor = loo["noise_floor"].iloc[0]
    assert 0 <= floor < loo["loo_safety"].abs().median()


def test_the_command_line_names_the_problem(runs, capsys):
    from explorer.cli import main

    assert main(["replay", str(runs[1]), "--step", "4"]) == 2
    assert "record.checkpoint_every" in capsys.readouterr().err
