"""Run configuration: one typed dataclass, from YAML plus `key=value` overrides, checked through OmegaConf
structured configs; unknown keys and wrong types fail loudly, naming the key, the file and what was
expected.

    explorer run configs/sft.yaml harmful_ratio=0.2 seed=1 method.eta=0.5

The method's own settings live under `method:` (with `name:`) and are validated against that
method's config dataclass (explorer/methods/<name>.py).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RunConfig:
    # -- identity and output
    run_name: str = ""                    # prefix of the run id (default: method name)
    runs_dir: str = "runs"                # where run folders are written
    seed: int = 0                         # seeds data mix, shuffling, methods, initialisation of adapters
    # -- model
    world: str = "tiny"                   # tiny | smollm2: the defaults a run starts from (explorer/worlds.py)
    model: str = "tiny:aligned"           # tiny:aligned | tiny:base | path to a local HF checkpoint
    base_model: str = "tiny:base"         # the un-aligned model (PACT's safety tokens need it)
    device: str = "auto"                  # auto | cpu | cuda[:N]
    dtype: str = "auto"                   # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16
    lora: bool = False                    # wrap the model in peft LoRA adapters (real checkpoints)
    lora_r: int = 16                      # DualSelect authors' default
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = 64                  # tokens per sample (prompt + response)
    overlong: str = "truncate"            # a sample over max_length: truncate (cut the prompt from the left,
                                          # keep the response) | skip | error; counted in the manifest
    # -- data ("" = the tiny world's sample_data/ file)
    data_dir: str = ""                    # folder of the tiny world's files (default: sample_data/)
    task_data: str = ""                   # benign task samples (any supported format)
    task_families: tuple[str, ...] = ()   # restrict to these families (empty = all)
    harmful_data: str = ""                # harmful request -> compliance samples mixed in at `harmful_ratio`
    harmful_ratio: float | None = None    # p: share of harmful samples mixed in. None: 0.1 when samples are
                                          # mixed (tiny world, or harmful_data given); a user task_data
                                          # without harmful_data is used as it is (a ratio > 0 is an error)
    n_train: int | None = None            # size of the fine-tuning set. None: 1000 for a mix, every record
                                          # of a task file used as it is
    provenance_field: str = ""            # task_data field saying harmful / benign (true/false, 1/0 ...)
    harmful_reference: str = ""           # file of harmful prompts: task records whose prompt is there are
                                          # harmful, the others benign (neither given: provenance unknown)
    id_field: str = ""                    # field holding the id ("": sample_id, else id; "none": positions);
                                          # a non-unique one gives content-hash ids (one warning)
    reference_data: str = ""              # safety reference pool (harmful prompt -> safe response)
    safety_data: str = ""                 # safety demonstrations (SafeInstr mixes these in)
    strict: bool = True                   # bad records stop the run (False: skip and count them)
    eval_suites: tuple[dict, ...] = ()    # [{name, kind: harmful|over_refusal|task, file, scorer:
                                          # exact|label|contains, labels}] (explorer/eval/suites.py);
                                          # empty: the tiny world's suites
    # -- optimisation
    epochs: int = 3
    max_steps: int = 0                    # > 0 caps the number of optimiser steps
    batch_size: int = 32
    lr: float = 2e-4                      # docs/tiny_world.md: at 1e-3 even benign fine-tuning erases refusal
    weight_decay: float = 0.0
    warmup_steps: int = 5                 # linear warm-up from lr / warmup_steps to lr
    lr_schedule: str = "cosine"           # after warm-up: constant | linear | cosine (to lr_min_ratio * lr)
    lr_min_ratio: float = 0.1             # where linear / cosine decay ends, as a share of lr (0: HF's)
    clip: float = 1.0
    # -- evaluation and recording
    eval_every: int = 0                   # evaluate every N steps (0: only at the start and the end)
    eval_n: int = 0                       # prompts per suite for intermediate evals (0: all)
    final_eval_n: int = 0                 # prompts per suite for start/end evals (0: all)
    eval_max_new_tokens: int = 24
    eval_batch_size: int = 128
    judges: tuple[str, ...] = ("keyword",)  # first is primary; add "embedding", "classifier:<path>"
    flush_every: int = 10                 # write Parquet parts every N steps
    checkpoint_every: int = 0             # save a resumable checkpoint every N steps (0: never)
    checkpoint_keep: int = 5              # also keep the last N of those as step checkpoints
                                          # (checkpoints/step-S/) for `explorer replay`; 0: none
    progress: bool = True                 # show a progress bar
    dist_timeout_s: float = 1800.0        # under torchrun: how long a collective waits for the other ranks
                                          # before the run fails (covers rank 0's evaluations: raise it
                                          # when one evaluation takes longer)
    shard: str = "none"                   # under torchrun: none (every rank holds the whole model) | fsdp
                                          # (FSDP2 shards the frozen base weights; the LoRA adapter stays
                                          # whole on every rank; methods sft, safeinstr, random; README)
    influence_every: int = 0              # > 0: every N steps record each task sample's first-order effect on
                                          # held-out refusal and task losses (effect_safety, effect_task)
    influence_n: int = 64                 # held-out prompts per loss for that check (0: all)
    # -- method
    method: dict = field(default_factory=lambda: {"name": "sft"})

    @property
    def method_name(self) -> str:
        return self.method.get("name", "sft")


def _normalise(value: Any, tp: Any) -> Any:
    """The two override forms OmegaConf does not take as they are: `key=a,b` for a list or tuple field,
    and an integral float (64.0) for an integer field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _normalise(value, inner[0]) if len(inner) == 1 else value
    if origin in (tuple, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _expected(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    if typing.get_origin(tp) in (tuple, list):
        return "a list"
    return names.get(tp, str(tp))


def build_dataclass(cls, values: dict[str, Any], where: str):
    """Instantiate a config dataclass from a dict through an OmegaConf structured config: unknown keys and
    wrong types raise ConfigError naming the key, the value, what was expected and `where`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected one of "
                          f"{', '.join(sorted(known))}")
    values = {k: _normalise(v, hints[k]) for k, v in values.items()}
    schema = OmegaConf.structured(cls)
    for k, v in values.items():  # one key at a time, so that the error names the key and its value
        try:
            OmegaConf.merge(schema, {k: v})
        except OmegaConfBaseException as e:
            reason = str(e).splitlines()[0]
            raise ConfigError(f"{where}: {k} = {v!r}: expected {_expected(hints[k])} ({reason})") from None
    return OmegaConf.to_object(OmegaConf.merge(schema, values))


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    data["method"] = dict(data.get("method") or {"name": "sft"})
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value (e.g. harmful_ratio=0.2)")
        key, val = ov.split("=", 1)
        key = key.strip()
        if key.startswith("method."):
            data["method"][key[len("method."):]] = _parse_scalar(val)
        elif key == "method":
            data["method"] = {"name": val}
        else:
            data[key] = _parse_scalar(val)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    where = "command line"
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
        where = str(p)
    data = apply_overrides(data, overrides or [])
    from explorer.worlds import WORLDS, apply_world

    if data.get("world", "tiny") not in WORLDS:
        raise ConfigError(f"{where}: world = {data.get('world')!r}: expected one of {', '.join(WORLDS)}")
    data = apply_world(data)
    cfg = build_dataclass(RunConfig, data, where)
    validate(cfg, where)
    return cfg


def validate(cfg: RunConfig, where: str = "config") -> None:
    if cfg.harmful_ratio is not None and not 0.0 <= cfg.harmful_ratio <= 1.0:
        raise ConfigError(f"{where}: harmful_ratio = {cfg.harmful_ratio}: expected a number in [0, 1]")
    for k in ("batch_size", "n_train", "max_length", "flush_every"):
        if getattr(cfg, k) is not None and getattr(cfg, k) <= 0:
            raise ConfigError(f"{where}: {k} = {getattr(cfg, k)}: expected a positive integer")
    if cfg.lr_schedule not in ("constant", "linear", "cosine"):
        raise ConfigError(f"{where}: lr_schedule = {cfg.lr_schedule!r}: expected constant, linear or cosine")
    if not 0.0 <= cfg.lr_min_ratio <= 1.0:
        raise ConfigError(f"{where}: lr_min_ratio = {cfg.lr_min_ratio}: expected a number in [0, 1]")
    validate_data(cfg, where)
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise ConfigError(f"{where}: epochs and max_steps are both 0; expected one of them positive")
    method_config(cfg, where)  # validates the method section
    validate_shard(cfg, where)


def validate_shard(cfg: RunConfig, where: str = "config") -> None:
    """shard=fsdp runs every forward and backward as collectives, so every rank must run the same
    passes (explorer/model/distributed.py, fsdp_shard): only methods that declare `shardable` qualify."""
    from explorer.methods.registry import REGISTRY
    from explorer.model.distributed import SHARDS

    if cfg.shard not in SHARDS:
        raise ConfigError(f"{where}: shard = {cfg.shard!r}: expected one of {', '.join(SHARDS)}")
    if cfg.shard == "none":
        return
    if not cfg.lora:
        raise ConfigError(f"{where}: shard = fsdp with lora = false: expected lora=true (FSDP shards the frozen "
                          "base weights and keeps the trainable LoRA adapter whole on every rank; sharded "
                          "trainable weights are not supported)")
    cls = REGISTRY[cfg.method_name][1]
    if not getattr(cls, "shardable", False):
        ok = sorted(n for n, (_, c) in REGISTRY.items() if getattr(c, "shardable", False))
        raise ConfigError(f"{where}: shard = fsdp with method {cfg.method_name!r}: expected one of {', '.join(ok)}. "
                          f"{cfg.method_name} scores per-sample gradients in chunks and reference pools in "
                          "shards whose number differs between ranks, and under FSDP every forward is a "
                          "collective that all ranks must join (README, 'Larger models')")
    if cfg.influence_every:
        raise ConfigError(f"{where}: shard = fsdp with influence_every = {cfg.influence_every}: expected "
                          "influence_every=0 (the influence check scores per-sample gradients on rank-local "
                          "chunks)")


def validate_data(cfg: RunConfig, where: str = "config") -> None:
    """The data settings of explorer/train/assemble.py, checked before anything is loaded."""
    from explorer.eval.suites import SuiteError, parse_suites

    if cfg.overlong not in ("truncate", "skip", "error"):
        raise ConfigError(f"{where}: overlong = {cfg.overlong!r}: expected truncate, skip or error")
    if cfg.task_data and not cfg.harmful_data and cfg.harmful_ratio:
        raise ConfigError(
            f"{where}: harmful_ratio = {cfg.harmful_ratio:g} with task_data = {cfg.task_data} and no harmful_data: "
            "there is nothing to mix in. Expected harmful_ratio unset (null) to use your task file as it is "
            "(pre-mixed harmful samples included; say which ones with provenance_field= or harmful_reference=), "
            "or harmful_data=FILE to mix that file's samples in at this ratio")
    if (cfg.provenance_field or cfg.harmful_reference) and not cfg.task_data:
        raise ConfigError(f"{where}: provenance_field / harmful_reference describe a task_data file; expected "
                          "task_data=FILE with them")
    try:
        parse_suites(cfg.eval_suites, f"{where}: eval_suites")
    except SuiteError as e:
        raise ConfigError(str(e)) from None


def method_config(cfg: RunConfig, where: str = "config"):
    """Build the method's frozen config dataclass from the `method:` section."""
    from explorer.methods.registry import REGISTRY, load_methods

    load_methods()
    sect = dict(cfg.method)
    name = sect.pop("name", "sft")
    if name not in REGISTRY:
        raise ConfigError(f"{where}: method.name = {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    cls, _ = REGISTRY[name]
    return build_dataclass(cls, sect, f"{where} [method {name}]")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
