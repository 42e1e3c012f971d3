"""Chance levels and the independent check as the dashboard reads them: reader aggregates agree with
the rows, the figures show what the numbers say. No torch (fake run folders)."""

import numpy as np
import pandas as pd
import pytest

from _fake_runs import make_runs, open_app, read_all
from explorer import viz
from explorer.runs import chance, reader

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def test_selection_counts_agree_with_the_rows(runs):
    d = runs["dualselect"]
    counts = reader.selection_counts(d)
    dec = read_all(d, "decisions")
    dec = dec[dec["role"] == "task"].merge(pd.read_parquet(d / "samples.parquet")[["sample_id", "provenance"]], on="sample_id")
    assert int(counts["n"].sum()) == len(dec)
    assert int(counts["d"].sum()) == int((~dec["kept"].astype(bool)).sum())
    assert int(counts["hd"].sum()) == int(((~dec["kept"].astype(bool)) & dec["provenance"].eq("harmful")).sum())
    a, b = chance.from_counts(counts), chance.task_selection_chance(dec)
    assert a.recall == pytest.approx(b.recall) and a.p_value == pytest.approx(b.p_value) and a.badge == b.badge


def test_unknown_provenance_counts_make_recall_unknown():
    counts = pd.DataFrame({"step": [0, 1], "n": [10, 10], "h": [2, 1], "d": [3, 3], "hd": [1, 1], "unknown": [0, 4]})
    r = chance.from_counts(counts)
    assert r.recall is None and r.badge == chance.UNKNOWN
    assert chance.from_counts(counts.assign(unknown=0)).badge != chance.UNKNOWN


def test_refresh_chart_carries_the_chance_line(runs):
    summ = chance.refresh_chance(reader.refresh_summary(runs["dualselect"]))
    fig = viz.refresh_jaccard(summ)
    line = [t for t in fig.data if t.name and t.name.startswith("chance (random")]
    assert len(line) == 1
    ys = np.array(line[0].y, dtype=float)
    np.testing.assert_allclose(ys[1:], summ["jaccard_chance"].to_numpy()[1:])
    assert np.isnan(ys[0])        # the first refresh has no previous selection


def test_score_vs_effect_plots_every_recorded_sample_and_names_rho():
    rng = np.random.default_rng(0)
    rows = []
    for s in (0, 4):
        eff = rng.normal(size=16)
        score = eff + rng.normal(scale=0.3, size=16)
        kept = score <= np.sort(score)[7]
        rows += [{"step": s, "sample_id": f"{s}-{i}", "score": score[i], "kept": bool(kept[i]),
                  "effect_safety": eff[i], "provenance": "harmful" if i < 3 else "benign"} for i in range(16)]
    df = pd.DataFrame(rows)
    fig = viz.score_vs_effect(df, selected="0-1")
    pts = sum(len(t.x) for t in fig.data if t.name != "selected")
    assert pts == len(df)
    rho = chance.score_effect_correlation(df)["rho"]
    assert f"{rho:.2f}" in fig.layout.title.text
    assert "−score" in fig.layout.xaxis.title.text     # DualSelect-style: the smallest score is kept


def test_recall_bars_show_recall_and_chance():
    res = pd.DataFrame([{"label": "a", "recall": 0.9, "chance": 0.5, "badge": "clearly better"}])
    fig = viz.recall_chance_bars(res)
    assert [t.y[0] for t in fig.data] == [pytest.approx(90.0), pytest.approx(50.0)]


# -- the dashboard pages (Streamlit AppTest on fake run folders) ---------------------------------------


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def with_effects(runs, tmp_path_factory):
    """The fake DualSelect run with effect columns at step 8 (as influence_every would write them)."""
    import shutil

    d = tmp_path_factory.mktemp("eff") / runs["dualselect"].name
    shutil.copytree(runs["dualselect"], d)
    dec = read_all(d, "decisions")
    rng = np.random.default_rng(0)
    at8 = (dec["step"] == 8) & (dec["role"] == "task")
    dec["effect_safety"] = np.where(at8, rng.normal(size=len(dec)), np.nan)
    dec["effect_task"] = np.where(at8, rng.normal(size=len(dec)), np.nan)
    for p in (d / "decisions").glob("part-*.parquet"):
        p.unlink()
    dec.to_parquet(d / "decisions" / "part-00000.parquet", index=False)
    return d


@pytest.mark.app
def test_task_selection_shows_recall_against_chance_and_the_rule(runs, monkeypatch):
    d = runs["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    r = chance.from_counts(reader.selection_counts(d))
    out = _texts(at)
    assert f"{100 * r.recall:.1f} %" in out and f"{100 * r.chance:.1f} %" in out and r.badge in out
    assert "lift = (recall − chance)" in out
    assert "No independent check in this run" in out


@pytest.mark.app
def test_why_panel_says_what_the_check_found(with_effects, monkeypatch):
    at = open_app(with_effects.parent, monkeypatch, [with_effects], "task_selection")
    at.select_slider(key="step").set_value(8).run()
    dec = read_all(with_effects, "decisions")
    row = dec[(dec.step == 8) & (dec.role == "task")].iloc[0]
    at.selectbox(key="sample").set_value(row["sample_id"]).run()
    assert not at.exception
    out = _texts(at)
    word = "lowered" if row["effect_safety"] > 0 else "raised"
    assert f"**{word} safety**" in out and f"{row['effect_safety']:+.3g}" in out
    at.select_slider(key="step").set_value(5).run()
    assert "not recorded at this step" in _texts(at)


@pytest.mark.app
def test_references_page_states_the_chance_overlap(runs, monkeypatch):
    d = runs["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "references")
    summ = chance.refresh_chance(reader.refresh_summary(d))
    assert f"chance {summ['jaccard_chance'].dropna().mean():.3f}" in _texts(at)
