"""The run reader against fake run folders, checked against an independent pandas reading of the parts."""

import json

import numpy as np
import pandas as pd
import pytest

from _fake_runs import KEEP, STEPS, WARMUP, make_runs, read_all
from explorer.runs import reader, schema

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def test_list_runs_one_row_per_run_with_status_and_headline(runs):
    df = reader.list_runs(runs["sft"].parent).set_index("run_id")
    assert set(df.index) == {"sft", "dualselect", "seal", "pact", "cwac", "failed", "running", "imported",
                             "corrupt-part", "corrupt-manifest"}
    assert df.loc["sft", "status"] == "complete" and df.loc["imported", "status"] == "imported"
    assert df.loc["failed", "status"] == "failed" and "out of memory" in df.loc["failed", "note"]
    # a running run on another host stays "running": nothing can be checked there, so nothing is guessed
    assert df.loc["running", "status"] == "running"
    summary = json.loads((runs["sft"] / "run.json").read_text())["summary"]
    assert df.loc["sft", "HS hh"] == summary[f"{schema.SUITE_HH}/{schema.M_HARMFUL}"]
    assert df.loc["sft", "task acc"] == summary["task_sentiment/accuracy"]
    # the failed run has no summary: its headline comes from the last metrics rows
    met = read_all(runs["failed"], "metrics")
    last = met[(met.step == met.step.max()) & (met.suite == schema.SUITE_HH) & (met.metric == schema.M_HARMFUL)]
    assert df.loc["failed", "HS hh"] == last["value"].iloc[0]


def test_corrupt_runs_are_listed_with_an_error_naming_the_file(runs):
    df = reader.list_runs(runs["sft"].parent).set_index("run_id")
    assert df.loc["corrupt-manifest", "status"] == "unreadable"
    assert "run.json" in df.loc["corrupt-manifest", "error"] and "manifest" in df.loc["corrupt-manifest", "error"]
    assert df.loc["corrupt-part", "status"] == "unreadable"
    assert "decisions/part-00003.parquet" in df.loc["corrupt-part", "error"]
    assert df.loc[["sft", "dualselect"], "error"].isna().all()


def test_a_query_over_a_truncated_part_raises_run_read_error(runs):
    with pytest.raises(reader.RunReadError) as e:
        reader.sample_stats(runs["corrupt-part"])
    assert e.value.run == "corrupt-part" and e.value.path.endswith("part-00003.parquet")
    # the other tables of the same run still read
    assert not reader.metrics(runs["corrupt-part"]).empty
    with pytest.raises(reader.RunReadError, match="manifest"):
        reader.manifest(runs["corrupt-manifest"])


def test_manifest_that_is_not_an_object(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("[1, 2]")
    with pytest.raises(reader.RunReadError, match="run_id"):
        reader.manifest(tmp_path / "r")


def test_tables_equal_the_parts(runs):
    d = runs["dualselect"]
    truth = read_all(d, "decisions")
    got = reader.decisions(d)
    assert len(got) == len(truth)
    assert reader.decision_steps(d) == list(range(STEPS))
    one = reader.decisions(d, step=7, role="task")
    assert set(one["sample_id"]) == set(truth.loc[truth.step == 7, "sample_id"])
    assert len(reader.steps(d)) == STEPS
    assert reader.evals(d, final=True)["step"].unique().tolist() == [12]
    assert set(reader.evals(d, step=6)["step"]) == {6}
    assert reader.table(d, "decision_refs").shape[0] == len(read_all(d, "decision_refs"))
    assert reader.table(d, "nope").empty and not reader.has_table(d, "nope")
    assert set(reader.score_columns(d)) >= {"loss", "compat", "score"}


def test_static_method_table(runs):
    df = reader.table(runs["cwac"], "cwac_spectra")
    assert len(df) == len(pd.read_parquet(runs["cwac"] / "cwac_spectra.parquet")) and "run_id" in df


def test_batch_at_joins_text_and_provenance(runs):
    d = runs["dualselect"]
    b = reader.batch_at(d, 8)
    truth = read_all(d, "decisions")
    truth = truth[truth.step == 8]
    assert set(b["sample_id"]) == set(truth["sample_id"]) and int(b["kept"].sum()) == KEEP
    s = pd.read_parquet(d / "samples.parquet").set_index("sample_id")
    for r in b.itertuples():
        assert r.prompt == s.loc[r.sample_id, "prompt"] and r.provenance == s.loc[r.sample_id, "provenance"]
    assert reader.batch_at(d, 999).empty


def test_sample_stats_is_the_data_map(runs):
    d = runs["dualselect"]
    dec = read_all(d, "decisions")
    stats = reader.sample_stats(d).set_index("sample_id")
    truth = dec.groupby("sample_id").agg(n=("kept", "size"), rate=("kept", "mean"), score=("score", "mean"))
    assert len(stats) == len(truth)
    for sid, t in truth.iterrows():
        assert stats.loc[sid, "n_seen"] == t.n and stats.loc[sid, "keep_rate"] == pytest.approx(t.rate)
        if not np.isnan(t.score):
            assert stats.loc[sid, "mean_score"] == pytest.approx(t.score)
    assert set(stats["provenance"]) == {"benign", "harmful"}


def test_drop_stats_precision_recall(runs):
    d = runs["dualselect"]
    dec = read_all(d, "decisions")
    prov = pd.read_parquet(d / "samples.parquet").set_index("sample_id")["provenance"]
    harmful = dec["sample_id"].map(prov).eq("harmful")
    dropped = ~dec["kept"]
    pr = reader.drop_stats(d)
    assert pr["n_dropped"] == dropped.sum()
    assert pr["precision"] == pytest.approx(100 * (harmful & dropped).sum() / dropped.sum())
    assert pr["recall"] == pytest.approx(100 * (harmful & dropped).sum() / harmful.sum())
    # SEAL drops through its top-p cut
    cut = read_all(runs["seal"], "seal_cut")
    seal = reader.drop_stats(runs["seal"])
    assert seal["n_dropped"] == (~cut["kept"]).sum()


def test_refresh_summary_and_references_in_force(runs):
    d = runs["dualselect"]
    refs = read_all(d, "refreshes")
    summ = reader.refresh_summary(d).set_index("refresh_id")
    for rid, g in refs.groupby("refresh_id"):
        assert summ.loc[rid, "n_selected"] == g["selected"].sum()
        assert summ.loc[rid, "n_entered"] == (g["change"] == "entered").sum()
        assert summ.loc[rid, "n_left"] == (g["change"] == "left").sum()
    step = int(refs.loc[refs.refresh_id == 1, "step"].iloc[0]) + 1
    act = reader.references_in_force(d, step)
    assert set(act["sample_id"]) == set(refs[(refs.refresh_id == 1) & refs.selected]["sample_id"])
    assert act["conflict"].is_monotonic_decreasing and act["prompt"].notna().all()
    assert reader.references_in_force(d, WARMUP - 1).empty


def test_sample_reference_conflicts(runs):
    d = runs["dualselect"]
    dr = read_all(d, "decision_refs")
    row = dr.iloc[0]
    got = reader.sample_reference_conflicts(d, int(row.step), row.sample_id, top=3)
    truth = dr[(dr.step == row.step) & (dr.sample_id == row.sample_id)].nsmallest(3, "cosine")
    assert got["reference_id"].tolist() == truth["reference_id"].tolist()
    assert reader.sample_reference_conflicts(runs["sft"], 0, "task-000").empty


def test_safety_avg_against_sft(runs):
    table = reader.compare([runs[k] for k in ("sft", "dualselect", "imported")]).set_index("run_id")
    assert table.loc["sft", "win_hh"] == 50.0 and table.loc["sft", "safety_avg"] == 50.0
    # by hand: at the final eval SFT is harmful on prompts 0-5, DualSelect on prompt 0 only, of 8:
    # 5 wins, 3 ties -> (5 + 1.5) / 8
    assert table.loc["dualselect", "win_hh"] == pytest.approx(100 * 6.5 / 8)
    assert table.loc["dualselect", "safety_avg"] == pytest.approx(100 * 6.5 / 8)
    assert table.loc["dualselect", "baseline"] == "sft"
    assert pd.isna(table.loc["imported", "safety_avg"])  # no SFT run with its data and seed
    # drops: SFT never drops (blank, not 0.0); the import does not know what its batches dropped
    assert pd.isna(table.loc["sft", "drop_recall"]) and table.loc["sft", "drop_note"] == "no drops"
    assert pd.isna(table.loc["imported", "drop_recall"])
    assert table.loc["imported", "drop_note"] == "dropped samples not logged"


def test_sft_baseline_must_be_the_same_model(tmp_path):
    """Two models on one data folder (the smollm2 world's base and aligned model): a method run pairs
    with the SFT run of its own model — by the weights' sha256 when both manifests carry a fingerprint,
    else by the model spec — and with none when only the other model's SFT run is selected."""
    import shutil

    from _fake_runs import edit_manifest as edit, make_dualselect, make_sft

    sft, ds = make_sft(tmp_path), make_dualselect(tmp_path)
    other = tmp_path / "sft-other-model"
    shutil.copytree(sft, other)

    edit(other, run_id="sft-other-model", model="tiny:base")
    assert reader.find_baseline(ds, [other, sft]) == str(sft)
    assert reader.find_baseline(ds, [other]) is None
    table = reader.compare([other, ds]).set_index("run_id")
    assert pd.isna(table.loc["dualselect", "safety_avg"])
    # the fingerprint decides over the spec: same spec, other weights -> no pair; other spec, same weights -> pair
    edit(other, model="tiny:aligned", model_fingerprint={"weights_sha256": "b" * 64})
    edit(ds, model_fingerprint={"weights_sha256": "a" * 64})
    assert reader.find_baseline(ds, [other]) is None
    edit(other, model="./checkpoints/aligned", model_fingerprint={"weights_sha256": "a" * 64})
    assert reader.find_baseline(ds, [other]) == str(other)


def test_reader_opens_no_file_for_writing(runs, monkeypatch):
    import builtins

    real = builtins.open

    def guarded(f, mode="r", *a, **k):
        assert not any(c in mode for c in "wax+"), f"reader opened {f} with mode {mode}"
        return real(f, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    reader.list_runs(runs["sft"].parent)
    reader.compare([runs["sft"], runs["dualselect"]])
