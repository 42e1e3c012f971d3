"""Worlds (explorer/worlds/NAME.yaml): `world=smollm2` fills in its settings beneath the config file and
the command line, a config file's `worlds:` block holds for its world only, and the smollm2 world's data
are the tiny world's records as prose (no model needed for any of it)."""

import json
from pathlib import Path

import pytest

from explorer.config import ConfigError, load_config
from explorer.worlds import smollm2_data_dir, tidy, world_defaults

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


def _smollm2(key: str):
    """A setting of explorer/worlds/smollm2.yaml, by dotted key."""
    from explorer.config import flatten

    return flatten(world_defaults("smollm2"), "smollm2.yaml")[key]


def test_world_defaults_sit_beneath_the_users_settings(tmp_path):
    cfg = load_config(None, ["world=smollm2"])
    assert cfg.model.path == "smollm2:aligned" and cfg.model.base == "smollm2:base" and cfg.model.lora
    assert cfg.data.n_train == _smollm2("data.n_train") and cfg.model.lora_targets == tuple(_smollm2("model.lora_targets"))
    y = tmp_path / "c.yaml"
    y.write_text("world: smollm2\ndata:\n  n_train: 64\n")
    cfg = load_config(y, ["eval.max_new_tokens=8"])
    assert cfg.data.n_train == 64 and cfg.eval.max_new_tokens == 8 and cfg.optim.batch_size == _smollm2("optim.batch_size")
    assert load_config(None, []).model.path == "tiny:aligned"   # the tiny world keeps every default
    with pytest.raises(ConfigError, match="world = 'huge'.*expected one of tiny, smollm2"):
        load_config(None, ["world=huge"])


@pytest.mark.parametrize("name", ["sft", "pact", "seal", "tokenwise", "cwac"])
def test_a_method_file_on_another_world_takes_that_worlds_sizes(name):
    """configs/<method>.yaml holds method settings; the run sizes are the world's, so the same file on
    world=smollm2 trains at smollm2's lr, n_train, epochs and batch size (issue 32); the tiny-world-only
    block (intermediate evaluations) stays on the tiny world."""
    from explorer.data.sample import repo_root

    f = repo_root() / "configs" / f"{name}.yaml"
    tiny, small = load_config(f), load_config(f, ["world=smollm2"])
    for key in ("optim.lr", "data.n_train", "optim.epochs", "optim.batch_size", "data.max_length"):
        sect, field = key.split(".")
        assert getattr(getattr(small, sect), field) == _smollm2(key), key
    assert (tiny.optim.lr, tiny.optim.epochs, tiny.optim.batch_size) == (2e-4, 3, 32)
    assert (tiny.eval.every, tiny.eval.n) == (24, 50) and (small.eval.every, small.eval.n) == (0, 16)
    # what the user sets still wins over the world's sizes
    assert load_config(f, ["world=smollm2", "optim.lr=1e-5"]).optim.lr == 1e-5


def test_a_method_files_own_run_settings_hold_on_every_world():
    """configs/dualselect.yaml is the authors' run (lr 2e-5, batch 8, 1 epoch): a setting of the file
    itself, not a tiny-world size, so it holds on smollm2 too."""
    from explorer.data.sample import repo_root

    cfg = load_config(repo_root() / "configs" / "dualselect.yaml", ["world=smollm2"])
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == (2e-5, 8, 1)
    assert cfg.data.n_train == _smollm2("data.n_train")


def test_a_worlds_block_applies_on_its_world_only_and_is_checked(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("method: {name: random}\nworlds:\n  smollm2:\n    method: {keep: 0.25}\n    optim: {lr: 1.0e-5}\n")
    from explorer.config import method_config, resolve

    assert method_config(load_config(y)).keep == 0.5 and load_config(y).optim.lr == 2e-4
    on = load_config(y, ["world=smollm2"])
    assert method_config(on).keep == 0.25 and on.optim.lr == 1e-5
    assert resolve(y, ["world=smollm2"]).where("optim.lr") == f"{y} worlds.smollm2"
    assert method_config(load_config(y, ["world=smollm2", "method.keep=0.75"])).keep == 0.75   # the command line wins
    y.write_text("worlds:\n  huge: {optim: {lr: 1.0e-5}}\n")
    with pytest.raises(ConfigError, match="m.yaml: worlds.huge: unknown world; expected one of tiny, smollm2"):
        load_config(y)
    y.write_text("worlds:\n  smollm2: {lr: 1.0e-5}\n")
    with pytest.raises(ConfigError, match="m.yaml worlds.smollm2: unknown key lr; did you mean optim.lr"):
        load_config(y, ["world=smollm2"])


def test_worlds_ship_as_package_data():
    """The world files are found beside the package's module (an installed package has no configs/),
    and pyproject ships them."""
    import explorer.worlds as w
    from explorer.data.sample import repo_root

    assert w.WORLDS == ("tiny", "smollm2")
    assert all((Path(w.__file__).parent / f"{n}.yaml").exists() for n in w.WORLDS)
    assert '"explorer.worlds" = ["*.yaml"]' in (repo_root() / "pyproject.toml").read_text()
    assert w.task_scorer("tiny") == "exact" and w.task_scorer("smollm2") == "contains"


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
    assert len(harmful) == round(0.1 * _smollm2("data.n_train")) and harmful[0].response[:1].isupper()


def test_demo_on_smollm2_runs_each_demo_config_with_its_smollm2_block():
    """`explorer demo --world smollm2`: each method's demo config on the smollm2 world, whose sizes and
    the config's `worlds.smollm2` block apply beneath the demo's ratio, seed and --set."""
    from explorer.demo import method_run_config

    cfg = method_run_config("dualselect", 0.1, 0, "runs", ["world=smollm2", "method.k_ref=9"])
    assert cfg.world == "smollm2" and cfg.data.n_train == _smollm2("data.n_train")
    assert cfg.method["ref_cap"] == 64 and cfg.method["k_ref"] == 9            # --set wins over the block
    assert "ref_cap" not in method_run_config("dualselect", 0.1, 0, "runs", []).method
    # per-method settings (notebook 07's smaller preparations) reach that method only, after the shared ones
    per = {"dualselect": ["method.ref_cap=120"], "pact": ["method.n_refusals=64"]}
    assert method_run_config("dualselect", 0.1, 0, "runs", ["world=smollm2"], per).method["ref_cap"] == 120
    assert "n_refusals" not in method_run_config("dualselect", 0.1, 0, "runs", [], per).method


@pytest.mark.parametrize("method", ["dualselect", "pact", "cwac", "seal"])
def test_the_worlds_method_settings_are_valid_over_the_demo_configs(method):
    """What the smollm2 block of each demo config changes loads, and does what its comment says
    (DualSelect selects 10 % of the references it scores; CWAC trains down_proj)."""
    from explorer.config import method_config
    from explorer.demo import demo_config_path

    cfg = load_config(demo_config_path(method), ["world=smollm2"])
    m = method_config(cfg)
    if method == "dualselect":
        assert m.k_ref_fraction == 0 and m.k_ref == 7 and m.ref_cap == 64 and m.refresh == "epoch"
    if method == "cwac":
        assert "down_proj" in cfg.model.lora_targets and m.sae_steps == 300
    if method == "pact":
        assert m.n_refusals == 128
    if method == "seal":
        assert m.selector_epochs == 1
