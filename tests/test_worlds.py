"""Worlds (explorer/worlds.py): `world=smollm2` fills in its defaults beneath what the user sets, and
the smollm2 world's data are the tiny world's records as prose (no model needed for either)."""

import json

import pytest

from explorer.config import ConfigError, load_config
from explorer.worlds import SMOLLM2, smollm2_data_dir, tidy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw,prose", [
    ("i ' m sorry , i cannot provide help with something dangerous or illegal .",
     "I'm sorry, I cannot provide help with something dangerous or illegal."),
    ("sure ! the method is : [details withheld] .", "Sure! The method is: [details withheld]."),
    ("is it ok if i go ? i think so .", "Is it ok if I go? I think so."),
    ("pick the larger number : 11 , 7 .", "Pick the larger number: 11, 7."),
    ("it is in the wiki .", "It is in the wiki."),     # an "i" inside a word stays
])
def test_tidy_turns_word_level_text_into_prose(raw, prose):
    assert tidy(raw) == prose


def test_world_defaults_sit_beneath_the_users_settings(tmp_path):
    cfg = load_config(None, ["world=smollm2"])
    assert cfg.model.path == "smollm2:aligned" and cfg.model.base == "smollm2:base" and cfg.model.lora
    assert cfg.data.n_train == SMOLLM2["data.n_train"] and cfg.model.lora_targets == tuple(SMOLLM2["model.lora_targets"])
    y = tmp_path / "c.yaml"
    y.write_text("world: smollm2\ndata:\n  n_train: 64\n")
    cfg = load_config(y, ["eval.max_new_tokens=8"])
    assert cfg.data.n_train == 64 and cfg.eval.max_new_tokens == 8 and cfg.optim.batch_size == SMOLLM2["optim.batch_size"]
    assert load_config(None, []).model.path == "tiny:aligned"   # the tiny world keeps every default
    with pytest.raises(ConfigError, match="world = 'huge'.*expected one of tiny, smollm2"):
        load_config(None, ["world=huge"])


def test_smollm2_data_are_the_tiny_worlds_records_as_prose(tmp_path):
    from explorer.data.sample import read_sample_file, sample_data_dir

    out = smollm2_data_dir(cache=tmp_path / "data")
    src = sample_data_dir()
    for name in ("harmful_train.jsonl", "task_test.jsonl", "eval_over_refusal.jsonl"):
        a, b = read_sample_file(src / name), read_sample_file(out / name)
        assert [r.sample_id for r in a] == [r.sample_id for r in b]
        assert all(y.prompt == tidy(x.prompt) for x, y in zip(a, b))
    test = read_sample_file(out / "task_test.jsonl")
    assert {r.response for r in test if r.family == "sentiment"} == {"positive", "negative"}   # answers as they are
    train, raw = read_sample_file(out / "task_train.jsonl"), read_sample_file(src / "task_train.jsonl")
    assert {r.response for r in train if r.family == "sentiment"} == {"The sentiment is positive.",
                                                                     "The sentiment is negative."}
    from explorer.worlds import TASK_SENTENCES

    assert all(y.response == TASK_SENTENCES[x.family].format(x.response) for x, y in zip(raw, train))
    harm = read_sample_file(out / "harmful_train.jsonl")
    assert all("[details withheld]" in r.response and r.response[:1].isupper() for r in harm)
    assert all(r.extra["refusal"][:1].isupper() for r in harm if r.extra.get("refusal"))
    # unchanged source: reused as it is; a different tidy version or source: rewritten
    stamp = (out / "MANIFEST.json").stat().st_mtime_ns
    assert smollm2_data_dir(cache=tmp_path / "data") == out
    assert (out / "MANIFEST.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "MANIFEST.json").read_text())["source"] == str(src)


def test_a_smollm2_run_reads_the_prose_data_and_scores_tasks_by_contains(tmp_path, monkeypatch):
    from explorer.train.assemble import build_pools

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    pools = build_pools(load_config(None, ["world=smollm2", "data.harmful_ratio=0.1"]))
    assert pools.manifest["data"] == str(tmp_path / "smollm2" / "data")
    scorers = {s.name: s.scorer for s in pools.suites}
    assert scorers["task_sentiment"] == "contains" and scorers["harmful_hh"] == "exact"
    harmful = [r for r in pools.mix if r.provenance == "harmful"]
    assert len(harmful) == round(0.1 * SMOLLM2["data.n_train"]) and harmful[0].response[:1].isupper()


def test_demo_on_smollm2_sets_the_world_and_its_run_sizes_before_the_users():
    from explorer.demo import world_overrides

    base, per_method = world_overrides("smollm2")
    assert base[0] == "world=smollm2" and f"data.n_train={SMOLLM2['data.n_train']}" in base
    assert any(o.startswith("method.ref_cap=") for o in per_method["dualselect"])
    assert world_overrides("tiny") == ([], {})


@pytest.mark.parametrize("method", ["dualselect", "pact", "cwac", "seal"])
def test_the_worlds_method_settings_are_valid_over_the_demo_configs(method):
    """What the smollm2 world changes per method loads over that method's demo config, and does what
    its comment says (DualSelect selects 10 % of the references it scores; CWAC trains down_proj)."""
    from explorer.config import method_config
    from explorer.demo import demo_config_path
    from explorer.worlds import SMOLLM2_METHODS

    base, per_method = ["world=smollm2"], SMOLLM2_METHODS
    cfg = load_config(demo_config_path(method), [*base, *per_method[method]])
    m = method_config(cfg)
    if method == "dualselect":
        assert m.k_ref_fraction == 0 and m.k_ref == 7 and m.ref_cap == 64 and m.refresh == "epoch"
    if method == "cwac":
        assert "down_proj" in cfg.model.lora_targets
