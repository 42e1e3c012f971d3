"""Config: YAML + overrides; unknown keys and wrong types fail loudly, naming the key and the file."""

import pytest

from explorer.config import ConfigError, load_config, method_config

pytestmark = pytest.mark.unit


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  harmful_ratio: 0.2\nmethod:\n  name: random\n  keep: 0.25\n")
    cfg = load_config(p, ["seed=3", "method.keep=0.75", "model.lora_targets=q_proj,k_proj"])
    assert cfg.data.harmful_ratio == 0.2 and cfg.seed == 3
    assert cfg.model.lora_targets == ("q_proj", "k_proj")
    mc = method_config(cfg)
    assert mc.keep == 0.75


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data.harmfull_ratio: 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "harmfull_ratio" in str(e.value) and "bad.yaml" in str(e.value)


@pytest.mark.parametrize("override,field", [("optim.batch_size=eight", "batch_size"), ("optim.lr=fast", "lr"),
                                            ("model.lora=maybe", "lora"), ("optim.epochs=1.5", "epochs")])
def test_wrong_type_names_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert field in str(e.value) and "expected" in str(e.value)


@pytest.mark.parametrize("p", ["-0.1", "1.5"])
def test_harmful_ratio_outside_unit_interval(p):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"data.harmful_ratio={p}"])
    assert "harmful_ratio" in str(e.value) and "[0, 1]" in str(e.value)


def test_unknown_method_and_unknown_method_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["method=nonexistent"])
    assert "nonexistent" in str(e.value) and "sft" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["method=random", "method.kep=0.5"])
    assert "kep" in str(e.value) and "keep" in str(e.value)


def test_override_without_equals():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["harmful_ratio"])
    assert "key=value" in str(e.value)


def test_shipped_configs_are_valid():
    from explorer.data.sample import repo_root

    paths = sorted((repo_root() / "configs").glob("*.yaml"))
    assert paths
    from explorer.worlds import WORLDS

    for p in paths:
        for world in WORLDS:   # every file loads on every world (its worlds: blocks included)
            method_config(load_config(p, [f"world={world}"]))
        first = p.read_text().splitlines()[0]
        assert first.startswith("# explorer run"), f"{p.name}: first line must be the command that runs it"


@pytest.mark.parametrize("overrides,needle", [
    (["dist.shard=zero3"], "expected one of none, fsdp"),
    (["dist.shard=fsdp"], "expected model.lora=true"),
    (["dist.shard=fsdp", "model.lora=true", "method=dualselect"], "expected one of random, safeinstr, sft"),
    (["dist.shard=fsdp", "model.lora=true", "eval.influence_every=2"], "expected eval.influence_every=0"),
])
def test_shard_settings_that_cannot_run_lockstep_are_refused(overrides, needle):
    """dist.shard=fsdp makes every forward a collective: a setting whose ranks would run different passes
    is a ConfigError before anything loads, naming the setting and what would work."""
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert "shard" in str(e.value) and needle in str(e.value)


def test_shard_fsdp_with_a_lockstep_method_is_accepted():
    for m in ("sft", "random", "safeinstr"):
        assert load_config(None, ["dist.shard=fsdp", "model.lora=true", f"method={m}"]).dist.shard == "fsdp"


@pytest.mark.parametrize("old,new", [("lr", "optim.lr"), ("harmful_ratio", "data.harmful_ratio"),
                                     ("model", "model.path"), ("eval_every", "eval.every"),
                                     ("dist_timeout_s", "dist.timeout_s")])
def test_a_flat_key_of_an_earlier_version_names_its_new_name(tmp_path, old, new):
    with pytest.raises(ConfigError, match=f"unknown key {old}; did you mean {new}\\?"):
        load_config(None, [f"{old}=1"])
    p = tmp_path / "old.yaml"
    p.write_text(f"{old}: 1\n")
    with pytest.raises(ConfigError, match=f"old.yaml: unknown key {old}; did you mean {new}\\?"):
        load_config(p)


def test_nested_sections_and_dotted_keys_in_yaml_mean_the_same(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("optim:\n  lr: 1.0e-3\n  epochs: 2\ndata:\n  n_train: 50\n")
    b.write_text("optim.lr: 1.0e-3\noptim.epochs: 2\ndata.n_train: 50\n")
    assert load_config(a) == load_config(b)
    cfg = load_config(a, ["optim.lr=5e-4"])
    assert cfg.optim.lr == 5e-4 and cfg.optim.epochs == 2 and cfg.data.n_train == 50


def test_a_misspelt_section_key_suggests_the_dotted_name():
    with pytest.raises(ConfigError, match="unknown key optim.lrr; did you mean optim.lr\\?"):
        load_config(None, ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match="optim is a section; expected optim.KEY=VALUE"):
        load_config(None, ["optim=1"])


def test_judges_take_names_and_mappings():
    cfg = load_config(None, ["eval.judges=[keyword, {kind: llama_guard, path: /models/guard}]"])
    assert cfg.eval.judges == ("keyword", {"kind": "llama_guard", "path": "/models/guard"})


def test_the_manifest_config_is_nested_and_reads_back(tmp_path):
    import json

    from explorer.config import from_dict, to_dict

    cfg = load_config(None, ["optim.lr=3e-4", "record.checkpoint_keep=2", "method=random", "method.keep=0.25"])
    d = json.loads(json.dumps(to_dict(cfg)))
    assert d["optim"]["lr"] == 3e-4 and d["record"]["checkpoint_keep"] == 2 and d["method"] == {"name": "random",
                                                                                                   "keep": 0.25}
    assert from_dict(d) == cfg
    # a manifest of an earlier version (flat keys) reads back into the same settings
    flat = {"lr": 3e-4, "n_train": 64, "method": {"name": "random"}}
    old = from_dict(flat)
    assert old.optim.lr == 3e-4 and old.data.n_train == 64 and old.method_name == "random"


def test_every_setting_has_help_text():
    import dataclasses

    from explorer.config import SECTIONS, RunConfig

    for cls in (RunConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_methods_read_run_settings_not_the_run_config():
    """Context carries a small typed RunSettings, filled from the run config; no method reads ctx.config."""
    import dataclasses
    from pathlib import Path

    from explorer.config import run_settings
    from explorer.methods.protocol import Context, RunSettings

    assert "config" not in {f.name for f in dataclasses.fields(Context)}
    s = run_settings(load_config(None, ["seed=4", "optim.batch_size=8", "data.max_length=96", "model.lora=true"]))
    assert s == RunSettings(seed=4, batch_size=8, max_length=96, base_model="tiny:base", lora=True)
    methods = Path(__file__).resolve().parents[1] / "explorer" / "methods"
    for f in methods.glob("*.py"):
        assert "ctx.config" not in f.read_text(), f"{f.name} reads ctx.config"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from explorer.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _shown(text: str) -> dict[str, tuple[str, str]]:
    """`explorer config show`'s lines -> {dotted key: (value, source)}."""
    got, section = {}, ""
    for line in text.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            section = line[:-1] + "."
            continue
        body, _, src = line.partition("# ")
        key, _, value = body.strip().partition(": ")
        got[(section if line.startswith(" ") else "") + key] = (value.strip(), src.strip())
    return got


def test_config_show_names_where_each_value_came_from(capsys, tmp_path):
    from explorer.config import setting_keys

    p = tmp_path / "m.yaml"
    p.write_text("method: {name: random, keep: 0.25}\noptim: {epochs: 2}\nworlds:\n  smollm2:\n    eval: {n: 4}\n")
    rc, out, _ = _cli(capsys, "config", "show", str(p), "world=smollm2", "optim.lr=1e-3")
    got = _shown(out)
    assert rc == 0 and set(setting_keys()) <= set(got)          # every key is shown, nested
    assert got["optim.lr"] == ("0.001", "command line") and got["world"] == ("smollm2", "command line")
    assert got["optim.epochs"] == ("2", str(p)) and got["eval.n"] == ("4", f"{p} worlds.smollm2")
    assert got["data.n_train"] == ("256", "world:smollm2") and got["optim.clip"] == ("1.0", "default")
    assert got["method.name"] == ("random", str(p)) and got["method.keep"] == ("0.25", str(p))
    assert got["method.scope"] == ("batch", "default")          # the method's own defaults too
    rc, out, _ = _cli(capsys, "config", "show", "optim.lr=2e-3")  # no file: only overrides
    assert _shown(out)["optim.lr"] == ("0.002", "command line") and _shown(out)["world"][1] == "default"


def test_config_show_refuses_what_run_would_refuse(capsys):
    rc, _, err = _cli(capsys, "config", "show", "lr=1e-3")
    assert rc == 2 and "unknown key lr; did you mean optim.lr?" in err


def test_help_config_lists_every_key_with_type_default_and_help(capsys):
    import dataclasses

    from explorer.config import setting_keys
    from explorer.methods.registry import REGISTRY, load_methods

    rc, out, _ = _cli(capsys, "run", "--help-config")
    assert rc == 0
    for key in setting_keys():
        assert f"  {key}  (" in out, key
    assert "  optim.lr  (float, > 0, default 0.0002)" in out
    assert "  data.harmful_ratio  (float | null, in [0, 1], default null)" in out
    load_methods()
    assert all(name in out.splitlines()[-1] for name in REGISTRY)   # the methods, by name
    rc, out, _ = _cli(capsys, "run", "--help-config", "dualselect")
    for f in dataclasses.fields(REGISTRY["dualselect"][0]):
        assert f"  method.{f.name}  (" in out, f.name
    assert "  method.eta  (float, >= 0, default 0.2)" in out
    rc, _, err = _cli(capsys, "run", "--help-config", "nope")
    assert rc == 2 and "unknown method" in err and "dualselect" in err


def test_run_help_names_both_ways_to_see_the_settings(capsys):
    from explorer.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "--help-config" in text and "explorer config show" in text and "method.eta=0.5" in text


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=0", "optim.lr = 0.0: expected a number > 0"),
    ("optim.lr=-1e-4", "optim.lr = -0.0001: expected a number > 0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps = -1: expected a number >= 0"),
    ("optim.clip=-0.5", "optim.clip = -0.5: expected a number >= 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay = -0.1: expected a number >= 0"),
    ("optim.lr_min_ratio=1.5", "optim.lr_min_ratio = 1.5: expected a number in [0, 1]"),
    ("optim.batch_size=0", "optim.batch_size = 0: expected a number > 0"),
    ("optim.max_steps=-2", "optim.max_steps = -2: expected a number >= 0"),
    ("data.harmful_ratio=1.5", "data.harmful_ratio = 1.5: expected a number in [0, 1]"),
    ("data.harmful_ratio=-0.1", "data.harmful_ratio = -0.1: expected a number in [0, 1]"),
    ("data.n_train=0", "data.n_train = 0: expected a number > 0"),
    ("data.max_length=0", "data.max_length = 0: expected a number > 0"),
    ("model.lora_dropout=1", "model.lora_dropout = 1.0: expected a number in [0, 1)"),
    ("model.lora_r=0", "model.lora_r = 0: expected a number > 0"),
    ("eval.every=-1", "eval.every = -1: expected a number >= 0"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens = 0: expected a number > 0"),
    ("record.flush_every=0", "record.flush_every = 0: expected a number > 0"),
    ("record.checkpoint_keep=-1", "record.checkpoint_keep = -1: expected a number >= 0"),
    ("dist.timeout_s=0", "dist.timeout_s = 0.0: expected a number > 0"),
    ("seed=-1", "seed = -1: expected a number >= 0"),
])
def test_a_value_out_of_its_range_names_key_value_and_range(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == f"command line: {expected}"


@pytest.mark.parametrize("override,expected", [
    ("optim.lr_schedule=exponential", "optim.lr_schedule = 'exponential': expected one of constant, linear, cosine"),
    ("data.overlong=cut", "data.overlong = 'cut': expected one of truncate, skip, error"),
    ("model.dtype=float8", "model.dtype = 'float8': expected one of auto, float32, fp32, bfloat16, bf16"),
])
def test_a_value_outside_its_choices_lists_them(override, expected):
    with pytest.raises(ConfigError, match="^command line: " + expected.replace("(", "\\(").replace(")", "\\)")):
        load_config(None, [override])


@pytest.mark.parametrize("settings,key,expected", [
    ("method: {name: dualselect, keep_fraction: 1.5}", "method.keep_fraction = 1.5", "expected each a number in [0, 1]"),
    ("method: {name: dualselect, tau_task: 0}", "method.tau_task", "expected a number > 0"),
    ("method: {name: dualselect, eta: -0.2}", "method.eta", "expected a number >= 0"),
    ("method: {name: dualselect, task_mode: firm}", "method.task_mode", "expected one of hard, soft"),
    ("method: {name: seal, topp: 2}", "method.topp", "expected a share in (0, 1]"),
    ("method: {name: seal, u_decay: 1.5}", "method.u_decay", "expected a number in [0, 1]"),
    ("method: {name: pact, n_refusals: 0}", "method.n_refusals = 0", "expected >= 1"),
    ("method: {name: pact, stage1_batch_size: 0}", "method.stage1_batch_size = 0", "expected a number > 0"),
    ("method: {name: cwac, energy: 1.2}", "method.energy", "expected a share in (0, 1]"),
    ("method: {name: random, keep: 0}", "method.keep", "expected a share in (0, 1]"),
    ("method: {name: tokenwise, bias_factor: -1}", "method.bias_factor", "expected a number >= 0"),
])
def test_a_method_setting_out_of_range_names_the_file_the_method_and_the_key(tmp_path, settings, key, expected):
    """Ranges declared on the method's fields (help_field(ge=...)) and its own __post_init__ checks both
    fail as a ConfigError naming the file that set the value."""
    p = tmp_path / "m.yaml"
    p.write_text(settings + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p} [method ") and key in msg and expected in msg, msg


def test_a_check_on_a_default_names_the_file_that_chose_the_method(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("method: {name: dualselect, refresh: every_n_steps}\n")   # refresh_every left at 0
    with pytest.raises(ConfigError, match=f"^{p} \\[method dualselect\\]: method.refresh_every must be > 0"):
        load_config(p)


def test_every_default_lies_in_its_declared_range():
    """The defaults pass the ranges declared beside them (a typo in a bound would refuse every run)."""
    from explorer.config import SECTIONS, RunConfig, check_ranges
    from explorer.methods.registry import REGISTRY, load_methods

    cfg = RunConfig()
    check_ranges(cfg, "", lambda k: "default")
    for name in SECTIONS:
        check_ranges(getattr(cfg, name), f"{name}.", lambda k: "default")
    load_methods()
    for name, (cls, _) in REGISTRY.items():
        check_ranges(cls(), "method.", lambda k: f"default [method {name}]")
