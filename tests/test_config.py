"""Config: YAML + overrides; unknown keys and wrong types fail loudly, naming the key and the file."""

import pytest

from explorer.config import ConfigError, load_config, method_config

pytestmark = pytest.mark.unit


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("harmful_ratio: 0.2\nmethod:\n  name: random\n  keep: 0.25\n")
    cfg = load_config(p, ["seed=3", "method.keep=0.75", "lora_targets=q_proj,k_proj"])
    assert cfg.harmful_ratio == 0.2 and cfg.seed == 3
    assert cfg.lora_targets == ("q_proj", "k_proj")
    mc = method_config(cfg)
    assert mc.keep == 0.75


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("harmfull_ratio: 0.2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "harmfull_ratio" in str(e.value) and "bad.yaml" in str(e.value)


@pytest.mark.parametrize("override,field", [("batch_size=eight", "batch_size"), ("lr=fast", "lr"),
                                            ("lora=maybe", "lora"), ("epochs=1.5", "epochs")])
def test_wrong_type_names_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert field in str(e.value) and "expected" in str(e.value)


@pytest.mark.parametrize("p", ["-0.1", "1.5"])
def test_harmful_ratio_outside_unit_interval(p):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"harmful_ratio={p}"])
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
    for p in paths:
        cfg = load_config(p)
        method_config(cfg)
        first = p.read_text().splitlines()[0]
        assert first.startswith("# explorer run"), f"{p.name}: first line must be the command that runs it"


@pytest.mark.parametrize("overrides,needle", [
    (["shard=zero3"], "expected one of none, fsdp"),
    (["shard=fsdp"], "expected lora=true"),
    (["shard=fsdp", "lora=true", "method=dualselect"], "expected one of random, safeinstr, sft"),
    (["shard=fsdp", "lora=true", "influence_every=2"], "expected influence_every=0"),
])
def test_shard_settings_that_cannot_run_lockstep_are_refused(overrides, needle):
    """shard=fsdp makes every forward a collective: a setting whose ranks would run different passes
    is a ConfigError before anything loads, naming the setting and what would work."""
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert "shard" in str(e.value) and needle in str(e.value)


def test_shard_fsdp_with_a_lockstep_method_is_accepted():
    for m in ("sft", "random", "safeinstr"):
        assert load_config(None, ["shard=fsdp", "lora=true", f"method={m}"]).shard == "fsdp"
