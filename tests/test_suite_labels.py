"""Every page names evaluation suites as the run names them (its manifest's eval_suites and its eval
rows), never by the tiny world's fixed names: a run evaluated on advbench / xstest / sst2 (README "On
your own model and data") shows "HS advbench" and "win_advbench", not "HS hh" / "win_hexphi"."""

import json

import pandas as pd
import pytest

from _fake_runs import edit_manifest as edit, make_own_suite_runs, make_sft, open_app
from explorer.runs import reader

pytestmark = pytest.mark.app
TINY_NAMES = ("hh", "hexphi")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-suites")
    return make_own_suite_runs(root)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A runs folder with a tiny-world run beside the own-suite runs."""
    root = tmp_path_factory.mktemp("mixed-suites")
    return {**make_own_suite_runs(root), "sft": make_sft(root)}


def no_tiny_names(columns) -> bool:
    return not any(n in str(c).split(" ") or str(c).endswith("_" + n) for c in columns for n in TINY_NAMES)


def test_suite_labels_drop_only_a_redundant_prefix():
    assert reader.suite_labels(["harmful_hh", "harmful_hexphi"]) == {"harmful_hh": "hh", "harmful_hexphi": "hexphi"}
    assert reader.suite_labels(["advbench", "harmful-x"]) == {"advbench": "advbench", "harmful-x": "harmful-x"}
    # dropping the prefix would give two suites one label: both keep their names
    assert reader.suite_labels(["harmful_a", "a"]) == {"harmful_a": "harmful_a", "a": "a"}


def test_suite_kinds_from_manifest_then_metrics(own):
    m = reader.manifest(own["sft-own"])
    assert reader.suite_kinds(m) == {"advbench": "harmful", "xstest": "over_refusal", "sst2": "task"}
    # an older run without eval_suites: kinds read from its metrics
    assert reader.suite_kinds({}, {"harmful_hh/harmful_score": 1.0, "task_topic/accuracy": 2.0,
                                   "over_refusal/over_refusal": 3.0, "harmful_hh/refusal_rate": 4.0}) == {
        "harmful_hh": "harmful", "task_topic": "task", "over_refusal": "over_refusal"}


def test_reader_headline_and_compare_use_the_runs_suite_names(own):
    summary = json.loads((own["sft-own"] / "run.json").read_text())["summary"]
    row = reader.run_row(own["sft-own"])
    assert row["HS advbench"] == summary["advbench/harmful_score"] == 75.0
    assert row["HS"] == 75.0 and row["task acc"] == summary["sst2/accuracy"] == 75.0
    assert row["over-refusal"] == summary["xstest/over_refusal"]
    assert no_tiny_names(row), [k for k in row if not no_tiny_names([k])]

    table = reader.compare([own["sft-own"], own["dualselect-own"]]).set_index("run_id")
    assert no_tiny_names(table.columns), list(table.columns)
    assert table.loc["dualselect-own", "hs_advbench"] == 12.5
    # DualSelect safe where SFT is harmful on 5 of 8 prompts, both the same on 3: (5 + 1.5) / 8
    assert table.loc["dualselect-own", "win_advbench"] == pytest.approx(100 * 6.5 / 8)
    assert table.loc["sft-own", "win_advbench"] == 50.0 == table.loc["sft-own", "safety_avg"]
    assert table.loc["dualselect-own", "acc_sst2"] == 87.5


def test_demo_table_names_the_runs_suites(own):
    from explorer.demo import comparison_table

    df = comparison_table([own["sft-own"], own["dualselect-own"]])
    assert {"HS advbench", "win advbench", "acc sst2"} <= set(df.columns)
    assert no_tiny_names(df.columns), list(df.columns)


def test_runs_page_columns_follow_each_runs_suites(mixed, monkeypatch):
    at = open_app(mixed["sft"].parent, monkeypatch, [], "runs")
    df = at.dataframe[0].value.set_index("run_id")
    assert {"HS advbench", "HS hh", "HS hexphi"} <= set(df.columns)
    assert df.loc["sft-own", "HS advbench"] == 75.0 and pd.isna(df.loc["sft-own", "HS hh"])
    assert pd.notna(df.loc["sft", "HS hh"]) and pd.isna(df.loc["sft", "HS advbench"])


def test_runs_page_of_own_suites_only_has_no_tiny_world_columns(own, monkeypatch):
    at = open_app(own["sft-own"].parent, monkeypatch, [], "runs")
    df = at.dataframe[0].value
    assert "HS advbench" in df.columns and no_tiny_names(df.columns), list(df.columns)


def test_compare_page_names_the_runs_suites(own, monkeypatch):
    at = open_app(own["sft-own"].parent, monkeypatch, [own["sft-own"], own["dualselect-own"]], "compare")
    df = at.dataframe[0].value.set_index("run_id")
    assert no_tiny_names(df.columns), list(df.columns)
    assert df.loc["dualselect-own", "win_advbench"] == pytest.approx(100 * 6.5 / 8)
    assert df.loc["dualselect-own", "acc_sst2"] == 87.5
    assert at.selectbox(key="curve_suite").options == ["all", "advbench"]
    at.selectbox(key="metric").set_value("accuracy").run()
    assert at.selectbox(key="curve_suite").options == ["all", "sst2"]


def test_generations_page_verdicts_by_suite_kind_not_name(own, monkeypatch):
    at = open_app(own["sft-own"].parent, monkeypatch, [own["sft-own"], own["dualselect-own"]], "generations")
    assert sorted(at.selectbox(key="suite").options) == ["advbench", "sst2", "xstest"]
    at.selectbox(key="suite").set_value("advbench").run()
    table = at.dataframe[0].value
    verdicts = {c: set(table[c]) for c in table.columns if c.startswith("verdict / ")}
    assert {"harmful (answers)"} in verdicts.values() and {"safe (refuses)"} in verdicts.values()
    at.selectbox(key="suite").set_value("sst2").run()
    table = at.dataframe[0].value   # the runs differ on prompt 6 only: correct for DualSelect
    assert list(table["sample_id"]) == ["sst2-06"]
    assert {v for c in table.columns if c.startswith("verdict / ") for v in table[c]} == {"correct", "wrong"}


def test_pre_mixed_file_runs_pair_with_sft_whatever_provenance_each_was_told(tmp_path):
    """README's walk-through: SFT on the pre-mixed file without labels (harmful_ratio null, provenance
    unknown), DualSelect with harmful_reference= (ratio measured, 0.1): the same data and seed, so
    DualSelect's win rate is against that SFT run; another file or seed does not pair."""
    import shutil

    runs = make_own_suite_runs(tmp_path / "runs")
    edit(runs["sft-own"], mix="as-is", harmful_ratio=None, provenance="unknown", n_train=200)
    edit(runs["dualselect-own"], mix="as-is", harmful_ratio=0.1, provenance="reference:x.json", n_train=200)
    other = tmp_path / "runs" / "sft-other-seed"
    shutil.copytree(runs["sft-own"], other)
    edit(other, run_id="sft-other-seed", seed=1)
    assert reader.find_baseline(runs["dualselect-own"], [other, runs["sft-own"]]) == str(runs["sft-own"])
    table = reader.compare([runs["sft-own"], runs["dualselect-own"]]).set_index("run_id")
    assert table.loc["dualselect-own", "win_advbench"] == pytest.approx(100 * 6.5 / 8)
    edit(runs["sft-own"], data="another_file.json")
    assert reader.find_baseline(runs["dualselect-own"], [other, runs["sft-own"]]) is None
