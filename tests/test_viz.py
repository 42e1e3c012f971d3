"""Figures: every one works on an empty frame, and on real records shows what the records say."""

import numpy as np
import pandas as pd
import pytest

from _fake_runs import make_runs
from explorer import viz
from explorer.runs import reader

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


EMPTY_CALLS = {
    "safety_utility": lambda e: viz.safety_utility(e), "metric_curves": lambda e: viz.metric_curves(e),
    "selection_scatter": lambda e: viz.selection_scatter(e), "data_map": lambda e: viz.data_map(e),
    "reference_swimlane": lambda e: viz.reference_swimlane(e), "refresh_timeline": lambda e: viz.refresh_timeline(e),
    "refresh_jaccard": lambda e: viz.refresh_jaccard(e), "step_lines": lambda e: viz.step_lines(e, ["loss"]),
    "method_table": lambda e: viz.method_table(e, "t"),
    "seal_weight_distribution": lambda e: viz.seal_weight_distribution(e, e),
    "seal_ranking": lambda e: viz.seal_ranking(e, e, e), "seal_cut_bars": lambda e: viz.seal_cut_bars(e, e),
    "pact_token_bars": lambda e: viz.pact_token_bars(e), "pact_gates": lambda e: viz.pact_gates(e),
    "pact_kl_by_position": lambda e: viz.pact_kl_by_position(e), "cwac_spectrum": lambda e: viz.cwac_spectrum(e),
    "cwac_removed_share": lambda e: viz.cwac_removed_share(e),
    "cwac_latent_drift": lambda e: viz.cwac_latent_drift(e),
    "score_vs_effect": lambda e: viz.score_vs_effect(e), "recall_chance_bars": lambda e: viz.recall_chance_bars(e),
}


def test_every_exported_figure_is_covered():
    figures = set(viz.__all__) - {"empty", "seal_cut_value", "cwac_sae_checks"}   # the last two are not figures
    assert figures == set(EMPTY_CALLS)


def test_cwac_sae_checks_say_nothing_without_the_tables():
    assert viz.cwac_sae_checks(pd.DataFrame(), pd.DataFrame()) == []


@pytest.mark.parametrize("name", sorted(EMPTY_CALLS))
def test_empty_frame_gives_a_figure_that_says_so(name):
    fig = EMPTY_CALLS[name](pd.DataFrame())
    assert len(fig.data) == 0
    assert fig.layout.annotations and "no" in fig.layout.annotations[0].text


def test_selection_scatter_points_carry_sample_ids_and_decisions(runs):
    batch = reader.batch_at(runs["dualselect"], 5)
    fig = viz.selection_scatter(batch, "compat", "loss")
    seen = {}
    for tr in fig.data:
        for cd, sym in zip(tr.customdata, [tr.marker.symbol] * len(tr.customdata)):
            seen[cd[0]] = sym
    assert set(seen) == set(batch["sample_id"])
    kept = set(batch.loc[batch["kept"], "sample_id"])
    assert {s for s, sym in seen.items() if sym == "circle"} == kept
    assert {s for s, sym in seen.items() if sym == "x"} == set(batch["sample_id"]) - kept


def test_selection_scatter_draws_the_cut_on_the_score_axis(runs):
    batch = reader.batch_at(runs["dualselect"], 5)
    cut = batch.loc[batch["kept"], "score"].max()
    fig = viz.selection_scatter(batch, "compat", "score", cut=cut, selected=batch["sample_id"].iloc[0])
    assert [s.y0 for s in fig.layout.shapes] == [pytest.approx(cut)]
    assert fig.data[-1].name == "selected"


def test_selection_scatter_warmup_step_has_no_scores(runs):
    fig = viz.selection_scatter(reader.batch_at(runs["dualselect"], 0), "compat", "score")
    assert "warm-up" in fig.layout.annotations[0].text


def test_data_map_one_point_per_sample(runs):
    stats = reader.sample_stats(runs["dualselect"])
    fig = viz.data_map(stats)
    ids = [cd[0] for tr in fig.data for cd in tr.customdata]
    assert sorted(ids) == sorted(stats["sample_id"]) and len(ids) == len(set(ids))


def test_safety_utility_marks_sft(runs):
    table = reader.compare([runs["sft"], runs["dualselect"]])
    fig = viz.safety_utility(table)
    by_run = {tr.customdata[0][0]: tr for tr in fig.data}
    assert "SFT" in by_run["sft"].name and "SFT" not in by_run["dualselect"].name
    assert by_run["sft"].x[0] == table.set_index("run_id").loc["sft", "harmful_score"]


def test_swimlane_and_jaccard_match_the_refreshes(runs):
    refs = reader.table(runs["dualselect"], "refreshes")
    fig = viz.reference_swimlane(refs)
    z = np.array(fig.data[0].z)
    assert z.sum() == refs["selected"].sum()
    jac = viz.refresh_jaccard(reader.refresh_summary(runs["dualselect"]))
    ys = {cd[0]: y for tr in jac.data for cd, y in zip(tr.customdata, tr.y)}
    truth = refs.groupby("refresh_id")["jaccard_prev"].first()
    for rid, y in ys.items():
        assert (np.isnan(y) and np.isnan(truth[rid])) or y == pytest.approx(truth[rid])


def test_seal_figures_cut_and_ranking(runs):
    sel, cut = reader.table(runs["seal"], "seal_selector"), reader.table(runs["seal"], "seal_cut")
    c = viz.seal_cut_value(cut)
    assert c == pytest.approx(cut.loc[cut["kept"], "omega"].min())
    assert (cut.loc[~cut["kept"], "omega"] < c).all()
    fig = viz.seal_weight_distribution(sel, cut)
    assert fig.layout.shapes[0].x0 == pytest.approx(c)
    rank = viz.seal_ranking(sel, cut, reader.samples(runs["seal"]))
    assert rank.layout.shapes[0].y0 == pytest.approx(cut["kept"].sum() + 0.5)
    assert {tr.name for tr in rank.data} == {"benign", "harmful"}


def test_pact_and_cwac_figures(runs):
    tok = reader.table(runs["pact"], "pact_tokens")
    bars = viz.pact_token_bars(tok, top=5)
    assert list(bars.data[0].y) == sorted(tok["weight"], reverse=True)[:5]
    gates = viz.pact_gates(reader.table(runs["pact"], "pact_positions"))
    assert {tr.name for tr in gates.data} == {"gate", "I_trained", "I_post"}
    spec = reader.table(runs["cwac"], "cwac_spectra")
    fig = viz.cwac_spectrum(spec)
    n_free = sum(len(tr.x) for tr in fig.data if tr.name.startswith("free"))
    n_protected = sum(len(tr.x) for tr in fig.data if tr.name.startswith("protected"))
    assert n_free == int(spec["in_projector"].sum()) > 0 and n_protected == int((~spec["in_projector"]).sum()) > 0
    share = viz.cwac_removed_share(reader.table(runs["cwac"], "cwac_layers"))
    assert len(share.data) == spec["layer"].nunique()
    drift = viz.cwac_latent_drift(reader.table(runs["cwac"], "cwac_latents"), top=3)
    assert len(drift.data) == 4 and drift.data[-1].name == "mean (all)"
