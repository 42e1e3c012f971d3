"""Evaluation suites as configuration: parsing, scorers, files in the public formats."""

import json

import pytest

from explorer.eval.suites import (SuiteError, SuiteSpec, first_label, load_suite, parse_suites, score_task,
                                  tiny_world_suites)

pytestmark = pytest.mark.unit


def test_parse_suites_accepts_any_number_of_named_suites():
    specs = parse_suites([{"name": "advbench", "kind": "harmful", "file": "a.csv"},
                          {"name": "xs", "kind": "over_refusal", "file": "x.json"},
                          {"name": "sst2", "kind": "task", "file": "s.json", "scorer": "label",
                           "labels": ["positive", "negative"]}])
    assert [(s.name, s.kind, s.scorer, s.labels) for s in specs] == [
        ("advbench", "harmful", "exact", ()), ("xs", "over_refusal", "exact", ()),
        ("sst2", "task", "label", ("positive", "negative"))]
    assert specs[2].to_dict() == {"name": "sst2", "kind": "task", "file": "s.json", "scorer": "label",
                                  "labels": ["positive", "negative"]}


@pytest.mark.parametrize("items,needles", [
    ([{"name": "a", "kind": "harmfull", "file": "f"}], ["eval_suites[0] (a)", "kind = 'harmfull'", "harmful"]),
    ([{"name": "a", "kind": "task", "file": "f", "scorer": "fuzzy"}], ["scorer = 'fuzzy'", "exact, label, contains"]),
    ([{"name": "a", "kind": "task", "file": "f", "scorer": "label"}], ["scorer label needs labels"]),
    ([{"name": "a/b", "kind": "harmful", "file": "f"}], ["name 'a/b'", "metric key"]),
    ([{"name": "a", "kind": "harmful", "file": "f"}, {"name": "a", "kind": "task", "file": "g"}], ["used twice"]),
    ([{"name": "a", "kind": "harmful"}], ["eval_suites[0]: file = None", "expected text"]),
    ([{"name": "a", "kind": "harmful", "file": "f", "path": "g"}], ["unknown key(s) path"]),
    ([{"name": "a", "kind": "harmful", "file": "f", "scorer": "exact"}], ["scorer given for a harmful suite"]),
    ({"name": "a"}, ["expected a list of suites"]),
])
def test_parse_suites_errors_name_the_entry_and_key(items, needles):
    with pytest.raises(SuiteError) as e:
        parse_suites(items)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_config_carries_suites_through_to_dict_and_back(tmp_path):
    from explorer.config import ConfigError, from_dict, load_config, to_dict

    p = tmp_path / "c.yaml"
    p.write_text("eval.suites:\n  - {name: advbench, kind: harmful, file: a.csv}\n"
                 "  - {name: sst2, kind: task, file: s.json, scorer: label, labels: [positive, negative]}\n")
    cfg = load_config(p)
    d = json.loads(json.dumps(to_dict(cfg)))  # what the manifest holds
    again = from_dict(d, "manifest")
    assert again.eval.suites == cfg.eval.suites and again.data.harmful_ratio is None and again.data.n_train is None
    p.write_text("eval.suites:\n  - {name: x, kind: task, file: s.json, scorer: label}\n")
    with pytest.raises(ConfigError, match="c.yaml: eval.suites\\[0\\] \\(x\\): scorer label needs labels"):
        load_config(p)


def test_label_scorer_takes_the_first_label_word_in_the_answer():
    labels = ("positive", "negative")
    assert first_label("The sentiment is positive.", labels) == "positive"
    assert first_label("Negative, not positive", labels) == "negative"
    assert first_label("It is unpositive", labels) is None  # whole words only
    assert score_task("The sentiment is positive.", "positive", "label", labels)
    assert not score_task("The sentiment is positive.", "negative", "label", labels)
    assert not score_task("I cannot tell.", "negative", "label", labels)
    # exact match is the tiny world's: the sentence scores 0
    assert not score_task("The sentiment is positive.", "positive", "exact")
    assert score_task(" Positive ", "positive", "exact")
    assert score_task("The answer is 12.", "12", "contains") and not score_task("The answer is 123.", "12", "contains")


def test_load_suite_reads_public_formats_and_checks_labels(tmp_path):
    c = tmp_path / "adv.csv"
    c.write_text("goal,target\nGive a generic harmful request,Sure here is [details withheld]\n"
                 "Another generic harmful request,Sure here is [details withheld]\n")
    s = load_suite(SuiteSpec("advbench", "harmful", str(c)))
    assert s.name == "advbench" and [r.sample_id for r in s.records] == ["advbench-00000", "advbench-00001"]
    assert all(r.response == "" and r.pool == "eval_advbench" for r in s.records)
    t = tmp_path / "sst2.json"
    t.write_text(json.dumps([{"instruction": "Sentiment?", "input": "a fine film", "output": "positive"},
                             {"instruction": "Sentiment?", "input": "a dull film", "output": "neutral"}]))
    with pytest.raises(ValueError, match=r"suite sst2: sst2.json: 1 of 2 expected answers are not among the labels"):
        load_suite(SuiteSpec("sst2", "task", str(t), "label", ("positive", "negative")))
    with pytest.raises(ValueError, match="no such file"):
        load_suite(SuiteSpec("gone", "harmful", str(tmp_path / "gone.csv")))


def test_tiny_world_default_suites():
    from explorer.data.sample import sample_data_dir

    names = [s.name for s in tiny_world_suites(sample_data_dir(), ("sentiment",))]
    assert names == ["harmful_hh", "harmful_hexphi", "over_refusal", "task_sentiment"]
