"""Replays and leave-one-out as the dashboard states them: the summary's paired effects agree with the
rows, the sentence says what they say, and the Task selection page shows them (fake run folders, no torch)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from _fake_runs import make_runs, open_app, read_all
from explorer.runs import reader, replays, schema

pytestmark = pytest.mark.unit

STEP, K = 8, 3


def replay_rows(rng, step=STEP, seeds=(0, 1, 2), n_batch=8, n_dropped=4) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for arm in schema.REPLAY_ARMS:
            n_arm = {"kept": n_batch - n_dropped, "dropped": n_dropped, "random": n_batch - n_dropped}.get(arm, n_batch)
            rows.append({"run_id": "dualselect", "replay_id": f"s{step}-k{K}-x", "step": step, "horizon": K, "arm": arm,
                         "seed": seed, "n_arm": n_arm, "n_batch": n_batch, "n_dropped": n_dropped,
                         "arm_samples": [f"t{i}" for i in range(n_arm)],
                         "refusal_loss": 0.5 + rng.normal(scale=0.01), "task_loss": 1.0 + rng.normal(scale=0.01),
                         "harmful_score": float(rng.integers(0, 10)), "seconds": 1.0})
    return pd.DataFrame(rows)


def test_summary_pairs_each_arm_with_the_whole_batch_by_seed():
    rows = replay_rows(np.random.default_rng(0))
    summ = replays.summarize(rows)
    assert set(summ["metric"]) == set(schema.REPLAY_METRICS)
    for metric in schema.REPLAY_METRICS:
        s = summ[summ["metric"] == metric].iloc[0]
        w = rows.pivot_table(index="seed", columns="arm", values=metric)
        drop, rand = w["kept"] - w["all"], w["random"] - w["all"]
        assert s["drop_effect"] == pytest.approx(drop.mean()) and s["drop_effect_sd"] == pytest.approx(drop.std())
        assert s["random_effect"] == pytest.approx(rand.mean()) and s["random_effect_n"] == 3
        assert s["random_effect_min"] == pytest.approx(rand.min()) and s["random_effect_max"] == pytest.approx(rand.max())
        text = replays.sentence(s)
        assert text.startswith(f"dropping these 4 samples at step {STEP} changed the")
        assert f"after {K} steps by {drop.mean():+.{1 if metric == 'harmful_score' else 4}f}" in text
        assert "for a random drop of the same size" in text and "(3 seeds)" in text


def test_summary_without_the_all_arm_says_the_change_is_undefined():
    rows = replay_rows(np.random.default_rng(1))
    summ = replays.summarize(rows[rows["arm"] != "all"])
    assert "drop_effect" not in summ or summ["drop_effect"].isna().all()
    assert "is not defined" in replays.sentence(summ.iloc[0])


def test_deterministic_arms_are_named_as_such():
    rows = replay_rows(np.random.default_rng(2))
    assert replays.deterministic_note(rows) is None           # every arm moves with the seed here
    fixed = rows.copy()
    for arm in ("kept", "dropped", "all"):
        m = fixed["arm"] == arm
        fixed.loc[m, "refusal_loss"] = fixed.loc[m, "refusal_loss"].iloc[0]
    assert "deterministic" in replays.deterministic_note(fixed)


def test_loo_comparison_ranks_estimates_against_the_exact_effect():
    rng = np.random.default_rng(3)
    loo = pd.DataFrame({"sample_id": [f"t{i}" for i in range(12)], "loo_safety": rng.normal(size=12),
                        "kept": [True] * 6 + [False] * 6})
    dec = pd.DataFrame({"sample_id": loo["sample_id"], "effect_safety": loo["loo_safety"] * 2 + 0.1,
                        "score": loo["loo_safety"], "kept": loo["kept"]})
    out = replays.loo_comparison(loo, dec)
    assert out["rho first-order"] == pytest.approx(1.0)
    # score: the smallest is kept here only if kept lines up with it; a score equal to the effect means the method
    # prefers (keeps the smallest) samples whose removal lowers the loss: ρ(preference, −loo) is ±1, never 0
    assert abs(out["rho score"]) == pytest.approx(1.0) and out["score column"] == "score"
    noisy = dec.assign(effect_safety=rng.normal(size=12))
    assert abs(replays.loo_comparison(loo, noisy)["rho first-order"]) < 0.9


# -- the dashboard (Streamlit AppTest) ----------------------------------------------------------------

def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The fake DualSelect run with one replay of step 8 (3 seeds) and a leave-one-out study of step 8."""
    runs = make_runs(tmp_path_factory.mktemp("runs"))
    d = tmp_path_factory.mktemp("rep") / runs["dualselect"].name
    shutil.copytree(runs["dualselect"], d)
    dec = read_all(d, "decisions")
    batch = dec[(dec["step"] == STEP) & (dec["role"] == "task")]
    rows = replay_rows(np.random.default_rng(4), n_batch=len(batch), n_dropped=int((~batch["kept"]).sum()))
    (d / schema.REPLAYS).mkdir()
    rows.to_parquet(d / schema.REPLAYS / "part-00000.parquet", index=False)
    (d / schema.REPLAYS / "s8-k3-x.json").write_text(json.dumps(
        {"replay_id": "s8-k3-x", "status": "complete", "step": STEP, "horizon": K, "arms": list(schema.REPLAY_ARMS),
         "seeds": [0, 1, 2], "checkpoint": "checkpoints/step-8", "created_at": "2026-01-01T00:00:00"}))
    loo = pd.DataFrame({"run_id": "dualselect", "loo_id": "s8-k1-x", "step": STEP, "horizon": 1,
                        "sample_id": batch["sample_id"].tolist(), "kept": batch["kept"].tolist(),
                        "loo_safety": np.linspace(-0.01, 0.01, len(batch)), "loo_task": 0.0})
    (d / schema.LOO).mkdir()
    loo.to_parquet(d / schema.LOO / "part-00000.parquet", index=False)
    return d, rows, loo


def test_the_reader_gives_the_replay_rows_back(replayed):
    d, rows, loo = replayed
    got = reader.replays(d)
    assert len(got) == len(rows) and set(got["arm"]) == set(schema.REPLAY_ARMS)
    assert reader.replays(d, STEP + 1).empty and len(reader.loo(d, STEP)) == len(loo)
    assert reader.replay_records(d)[0]["replay_id"] == "s8-k3-x"
    assert reader.step_checkpoints(d) == []


@pytest.mark.app
def test_task_selection_states_the_replay_and_the_leave_one_out(replayed, monkeypatch):
    d, rows, loo = replayed
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    out = _texts(at)
    summ = replays.summarize(rows)
    harm = summ[summ["metric"] == "harmful_score"].iloc[0]
    assert replays.sentence(harm) in out                       # the run-level list
    assert "Exact leave-one-out" in out
    at.select_slider(key="step").set_value(STEP).run()
    sid = loo["sample_id"].iloc[-1]
    at.selectbox(key="sample").set_value(sid).run()
    assert not at.exception
    out = _texts(at)
    assert "**Replayed**: " + replays.sentence(harm) in out    # the why panel, at the replayed step
    assert "**lowered safety**" in out and f"{loo['loo_safety'].iloc[-1]:+.3g}" in out
    at.select_slider(key="step").set_value(STEP - 1).run()
    assert "no replay of step" in _texts(at) and "record.checkpoint_every" in _texts(at)


@pytest.mark.app
def test_a_run_without_replays_says_how_to_make_one(monkeypatch, tmp_path):
    runs = make_runs(tmp_path)
    d = runs["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    assert "No counterfactual replay of this run yet" in _texts(at)


def test_why_report_gives_each_leave_one_out_column_over_seeds():
    from _scripts import load_benchmark

    why = load_benchmark("why_report")
    rows = pd.DataFrame([{"method": "dualselect", "seed": s, "score column": "score", "rho safety": 0.1, "rho task": 0.0,
                          "n_dropped": 4, "recall": 0.5, "chance": 0.5, "lift": 0.0, "p_value": 0.5, "badge": "b",
                          "refreshes": 0, "ekfac rho keep": np.nan, "LOO K=1 first-order": v, "LOO K=1 score": -v,
                          "LOO K=1 spread": 1e-4} for s, v in ((0, 0.2), (1, 0.4), (2, 0.6))])
    t = why.table(rows).iloc[0]
    assert t["LOO K=1 first-order"] == "0.40 ± 0.20" and t["LOO K=1 score"] == "-0.40 ± 0.20"
    assert "LOO K=1 spread" not in t
