"""Run configuration: nested frozen dataclasses (one per section), read from YAML plus dotted
`key=value` overrides and checked through OmegaConf structured configs. Unknown keys and wrong types
fail loudly, naming the key, where it was set (file or command line) and what was expected.

    explorer run configs/sft.yaml data.harmful_ratio=0.2 seed=1 optim.lr=1e-4 method.eta=0.5

Sections (every field carries its help text: `explorer run --help-config` lists them):

    run_name, runs_dir, seed, world, progress    the run's identity (top level)
    model    which model and how it is adapted (LoRA)
    data     the fine-tuning mix, the reference and safety pools, tokenisation
    optim    epochs, batch size, learning rate and its schedule
    eval     evaluation suites, schedule, judges; the influence check
    record   what is flushed and checkpointed, and when
    dist     settings that only matter under torchrun
    method   {name: ..., the method's own fields}, validated against that method's config dataclass
             (explorer/methods/<name>.py)

A YAML file may nest the sections or write dotted keys (`optim.lr: 1e-3`); both mean the same. The
flat names of earlier versions (`lr`, `harmful_ratio`, ...) are refused with the new name
("unknown key lr; did you mean optim.lr?").

Where a value comes from, lowest first (later layers win; `explorer config show` names the layer of
every value):

    default              the dataclass field below
    world:NAME           explorer/worlds/NAME.yaml `settings`: the world's model pair and run sizes
                         (world=tiny unless the file or the command line says otherwise)
    FILE                 the config file's settings (configs/<method>.yaml): the method's section and
                         whatever the method's recipe fixes on every world (the DualSelect authors' lr)
    FILE worlds.NAME     the file's `worlds: {NAME: {...}}` block, on world NAME only: settings that
                         suit one world (the tiny world's intermediate evaluations, the smollm2 world's
                         smaller SAE) -- so a method file never pins a world's sizes on another world
    command line         key=value overrides; `method=NAME` starts the method section afresh
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def setting(text: str, default=dataclasses.MISSING, *, factory=dataclasses.MISSING, ge=None, gt=None, le=None,
            lt=None, choices=None):
    """A config field with its help text (field metadata "help", as the methods' help_field) and, where
    its meaning fixes one, its range (ge, gt, le, lt: >=, >, <=, <) or its choices, checked by validate."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None}
    meta = {"help": text, **{k: v for k, v in bounds.items() if v is not None}}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_ranges(obj, prefix: str, at) -> None:
    """Every field of the config dataclass `obj` against the range or choices in its metadata (a None
    value, "unset", passes): a ConfigError names the key, the value, where it was set and what was
    expected."""
    for f in fields(obj):
        v, m = getattr(obj, f.name), f.metadata
        if v is None or isinstance(v, bool):
            continue
        key = prefix + f.name
        if "choices" in m and v not in m["choices"]:
            raise ConfigError(f"{at(key)}: {key} = {v!r}: expected one of {', '.join(map(str, m['choices']))}")
        if not isinstance(v, (int, float)):
            continue
        lo = ("[" if "ge" in m else "(" if "gt" in m else None, m.get("ge", m.get("gt")))
        hi = ("]" if "le" in m else ")" if "lt" in m else None, m.get("le", m.get("lt")))
        ok = (("ge" not in m or v >= m["ge"]) and ("gt" not in m or v > m["gt"])
              and ("le" not in m or v <= m["le"]) and ("lt" not in m or v < m["lt"]))
        if ok:
            continue
        if lo[0] and hi[0]:
            want = f"a number in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
        elif lo[0]:
            want = f"a number {'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
        else:
            want = f"a number {'<=' if hi[0] == ']' else '<'} {hi[1]:g}"
        raise ConfigError(f"{at(key)}: {key} = {v!r}: expected {want}")


# --------------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    path: str = setting("the model fine-tuned: tiny:aligned | tiny:base (tiny:aligned@SEED for another "
                        "preparation) | smollm2:aligned | a local Hugging Face checkpoint folder", "tiny:aligned")
    base: str = setting("the un-aligned model of the same family (PACT's safety tokens compare against it)",
                        "tiny:base")
    device: str = setting("auto | cpu | cuda[:N]", "auto")
    dtype: str = setting("auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16 (also fp32, bf16, fp16)",
                         "auto", choices=("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"))
    lora: bool = setting("wrap the model in peft LoRA adapters and train only them (real checkpoints)", False)
    lora_r: int = setting("LoRA rank (the DualSelect authors' default)", 16, gt=0)
    lora_alpha: int = setting("LoRA scaling alpha (the update is scaled by alpha / r)", 32, gt=0)
    lora_dropout: float = setting("dropout on the LoRA branch, in [0, 1)", 0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] = setting("module names that get adapters (Llama names), e.g. "
                                            "q_proj,v_proj", ("q_proj", "v_proj"))


@dataclass(frozen=True)
class DataConfig:
    dir: str = setting("folder of the tiny world's files (\"\": the shipped sample_data/)", "")
    task: str = setting("benign task samples, any supported format (\"\": the tiny world's task_train)", "")
    task_families: tuple[str, ...] = setting("restrict the task samples to these families (empty: all)", ())
    harmful: str = setting("harmful request -> compliance samples mixed in at data.harmful_ratio "
                           "(\"\": the tiny world's)", "")
    harmful_ratio: float | None = setting(
        "p, the share of harmful samples mixed in, in [0, 1]. null: 0.1 when samples are mixed (tiny world, "
        "or data.harmful given); a user data.task without data.harmful is used as it is (a ratio > 0 is "
        "then an error)", None, ge=0, le=1)
    n_train: int | None = setting("size of the fine-tuning set. null: 1000 for a mix, every record of a "
                                  "task file used as it is", None, gt=0)
    provenance_field: str = setting("data.task field saying harmful / benign (true/false, 1/0 ...); for "
                                    "analysis only, never read by a method", "")
    harmful_reference: str = setting("file of harmful prompts: task records whose prompt is there are harmful, "
                                     "the others benign (neither this nor provenance_field: provenance unknown)",
                                     "")
    id_field: str = setting("field holding a record's id (\"\": sample_id, else id; none: positions); a "
                            "non-unique one gives content-hash ids (one warning)", "")
    reference: str = setting("safety reference pool, harmful prompt -> safe response (\"\": the tiny "
                             "world's)", "")
    safety: str = setting("safety demonstrations that SafeInstr mixes in (\"\": the tiny world's)", "")
    strict: bool = setting("bad records stop the run (false: skip and count them)", True)
    max_length: int = setting("tokens per sample, prompt + response", 64, gt=0)
    overlong: str = setting("a sample over data.max_length: truncate (cut the prompt from the left, keep the "
                            "response) | skip | error; counted in the manifest", "truncate",
                            choices=("truncate", "skip", "error"))


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = setting("passes over the fine-tuning set (0 with optim.max_steps > 0: steps only)", 3, ge=0)
    max_steps: int = setting("> 0 caps the number of optimiser steps (0: no cap)", 0, ge=0)
    batch_size: int = setting("samples per optimiser step (the global batch under torchrun)", 32, gt=0)
    lr: float = setting("peak AdamW learning rate, > 0 (docs/tiny_world.md: at 1e-3 even benign "
                        "fine-tuning erases the tiny model's refusals)", 2e-4, gt=0)
    weight_decay: float = setting("AdamW weight decay, >= 0", 0.0, ge=0)
    warmup_steps: int = setting("linear warm-up from lr / warmup_steps to lr over this many steps", 5, ge=0)
    lr_schedule: str = setting("after warm-up: constant | linear | cosine (down to lr_min_ratio * lr)", "cosine",
                               choices=("constant", "linear", "cosine"))
    lr_min_ratio: float = setting("where linear / cosine decay ends, as a share of lr, in [0, 1] (0: Hugging "
                                  "Face's schedulers)", 0.1, ge=0, le=1)
    clip: float = setting("gradient-norm clip, >= 0 (0: no clipping)", 1.0, ge=0)


@dataclass(frozen=True)
class EvalConfig:
    suites: tuple[dict, ...] = setting(
        "[{name, kind: harmful|over_refusal|task, file, scorer: exact|label|contains, labels}] "
        "(explorer/eval/suites.py); empty: the world's suites", ())
    every: int = setting("evaluate every N steps (0: only at the start and the end)", 0, ge=0)
    n: int = setting("prompts per suite for intermediate evaluations (0: all)", 0, ge=0)
    final_n: int = setting("prompts per suite for the start and end evaluations (0: all)", 0, ge=0)
    max_new_tokens: int = setting("greedy generation length per prompt", 24, gt=0)
    batch_size: int = setting("prompts generated at once", 128, gt=0)
    judges: tuple[Any, ...] = setting(
        "judges of the generations, the first is primary: a name (keyword, embedding, <kind>:<path>) or a "
        "mapping ({kind: llama_guard|wildguard|harmbench|classifier, path: <local folder>, ...}; "
        "docs/judges.md)", ("keyword",))
    influence_every: int = setting("> 0: every N steps record each task sample's first-order effect on "
                                   "held-out refusal and task losses (effect_safety, effect_task)", 0, ge=0)
    influence_n: int = setting("held-out prompts per loss for the influence check (0: all)", 64, ge=0)


@dataclass(frozen=True)
class RecordConfig:
    flush_every: int = setting("write Parquet parts every N steps (a crash loses at most N steps)", 10, gt=0)
    checkpoint_every: int = setting("save a resumable checkpoint every N steps (0: never)", 0, ge=0)
    checkpoint_keep: int = setting("of the record.checkpoint_every checkpoints, also keep the last N as step "
                                   "checkpoints (checkpoints/step-S/) for `explorer replay`, besides the resume "
                                   "checkpoint (0: none)", 5, ge=0)


@dataclass(frozen=True)
class DistConfig:
    timeout_s: float = setting("under torchrun: how long a collective waits for the other ranks before the "
                               "run fails (covers rank 0's evaluations: raise it when one evaluation takes "
                               "longer)", 1800.0, gt=0)
    shard: str = setting("under torchrun: none (every rank holds the whole model) | fsdp (FSDP2 shards the "
                         "frozen base weights; the LoRA adapter stays whole on every rank; methods sft, "
                         "safeinstr, random)", "none")


@dataclass(frozen=True)
class RunConfig:
    run_name: str = setting("prefix of the run id (\"\": the method's name)", "")
    runs_dir: str = setting("where run folders are written", "runs")
    seed: int = setting("seeds the data mix, shuffling, the methods and the adapters' initialisation", 0, ge=0)
    world: str = setting("tiny | smollm2: the model pair, data and defaults a run starts from "
                         "(explorer/worlds/NAME.yaml)", "tiny")
    progress: bool = setting("show a progress bar", True)
    model: ModelConfig = setting("which model is fine-tuned and how", factory=ModelConfig)
    data: DataConfig = setting("the fine-tuning mix, the pools and tokenisation", factory=DataConfig)
    optim: OptimConfig = setting("optimisation", factory=OptimConfig)
    eval: EvalConfig = setting("evaluation and the influence check", factory=EvalConfig)
    record: RecordConfig = setting("what is written to the run folder, and when", factory=RecordConfig)
    dist: DistConfig = setting("settings used only under torchrun", factory=DistConfig)
    method: dict = setting("the method: {name: ..., its own fields} (explorer run --help-config METHOD)",
                           factory=lambda: {"name": "sft"})

    @property
    def method_name(self) -> str:
        return self.method.get("name", "sft")


#: section name -> its dataclass (the `method` section is validated against the method's own class)
SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
                             "eval": EvalConfig, "record": RecordConfig, "dist": DistConfig}

#: the flat names of earlier versions -> their dotted names (for "did you mean" and old manifests)
RENAMED: dict[str, str] = {
    "model": "model.path", "base_model": "model.base", "device": "model.device", "dtype": "model.dtype",
    "lora": "model.lora", "lora_r": "model.lora_r", "lora_alpha": "model.lora_alpha",
    "lora_dropout": "model.lora_dropout", "lora_targets": "model.lora_targets",
    "data_dir": "data.dir", "task_data": "data.task", "task_families": "data.task_families",
    "harmful_data": "data.harmful", "harmful_ratio": "data.harmful_ratio", "n_train": "data.n_train",
    "provenance_field": "data.provenance_field", "harmful_reference": "data.harmful_reference",
    "id_field": "data.id_field", "reference_data": "data.reference", "safety_data": "data.safety",
    "strict": "data.strict", "max_length": "data.max_length", "overlong": "data.overlong",
    "epochs": "optim.epochs", "max_steps": "optim.max_steps", "batch_size": "optim.batch_size",
    "lr": "optim.lr", "weight_decay": "optim.weight_decay", "warmup_steps": "optim.warmup_steps",
    "lr_schedule": "optim.lr_schedule", "lr_min_ratio": "optim.lr_min_ratio", "clip": "optim.clip",
    "eval_suites": "eval.suites", "eval_every": "eval.every", "eval_n": "eval.n", "final_eval_n": "eval.final_n",
    "eval_max_new_tokens": "eval.max_new_tokens", "eval_batch_size": "eval.batch_size",
    "judges": "eval.judges", "influence_every": "eval.influence_every", "influence_n": "eval.influence_n",
    "flush_every": "record.flush_every", "checkpoint_every": "record.checkpoint_every",
    "checkpoint_keep": "record.checkpoint_keep",
    "dist_timeout_s": "dist.timeout_s", "shard": "dist.shard",
}


def setting_keys() -> list[str]:
    """Every dotted key of RunConfig outside `method` (top level first, then the sections in order)."""
    top = [f.name for f in fields(RunConfig) if f.name not in SECTIONS and f.name != "method"]
    return top + [k for s in SECTIONS for k in setting_keys_of(s)]


# --------------------------------------------------------------------------------------------------
# building a dataclass from a dict, one key at a time so that an error names the key
# --------------------------------------------------------------------------------------------------

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


def type_name(tp: Any) -> str:
    """A field's type as `--help-config` and the errors say it: int, float, bool, str, list[str] ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{type_name(inner[0])} | null" if len(inner) == 1 else " | ".join(map(type_name, inner))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = type_name(args[0]) if args else "any"
        return f"list[{'str | mapping' if item == 'any' else item}]"
    if tp is dict or origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _expected(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    if typing.get_origin(tp) in (tuple, list):
        return "a list"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_expected(inner[0])} or null" if len(inner) == 1 else type_name(tp)
    return names.get(tp, str(tp))


def _suggest(key: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def build_dataclass(cls, values: dict[str, Any], where: str | Any, prefix: str = ""):
    """Instantiate a flat config dataclass (a section, or a method's config) from a dict through an
    OmegaConf structured config: unknown keys and wrong types raise ConfigError naming the key, the value,
    what was expected and where it was set. `where` is a string, or a function of the dotted key (the
    layer that set it); `prefix` is the section's dotted name ("optim.")."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    at = where if callable(where) else (lambda k: where)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for k in values:
        if k not in known:
            expected = f"expected one of {', '.join(prefix + n for n in known)}" if known else "it has no settings"
            raise ConfigError(f"{at(prefix + k)}: unknown key {prefix}{k}{_suggest(k, known, prefix)} ({expected})")
    values = {k: _normalise(v, hints[k]) for k, v in values.items()}
    schema = OmegaConf.structured(cls)
    for k, v in values.items():  # one key at a time, so that the error names the key and its value
        try:
            OmegaConf.merge(schema, {k: v})
        except OmegaConfBaseException as e:
            reason = str(e).splitlines()[0]
            raise ConfigError(f"{at(prefix + k)}: {prefix}{k} = {v!r}: expected {_expected(hints[k])} "
                              f"({reason})") from None
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, values))
    except ValueError as e:   # the dataclass's own checks (a method config's __post_init__)
        raise ConfigError(f"{_where_named(str(e), at, prefix)}: {e}") from None


def _where_named(message: str, at, prefix: str) -> str:
    """Where the first key a check's message names was set (a key left at its default: where the
    section's name was, e.g. the file that chose the method)."""
    for key in re.findall(r"\b(" + re.escape(prefix) + r"\w+)", message) if prefix else []:
        w = at(key)
        if not w.startswith("default"):
            return w
    return at(prefix + "name") if prefix else at("")


def build_run_config(flat: dict[str, Any], where: str | Any = "config") -> RunConfig:
    """RunConfig from a flat dict of dotted keys (`optim.lr`, `method.eta`, `seed`)."""
    at = where if callable(where) else (lambda k: where)
    nested = nest(flat, at)
    sections = {k: build_dataclass(SECTIONS[k], nested.pop(k), at, prefix=f"{k}.")
                for k in list(nested) if k in SECTIONS}
    method = nested.pop("method", None) or {"name": "sft"}
    top = nested
    cfg = build_dataclass(_top_class(), top, at)
    return RunConfig(**dataclasses.asdict(cfg), **sections, method=method)


def _top_class():
    """RunConfig's top-level scalar fields as a dataclass of their own, built through OmegaConf like a
    section (so that `seed=x` fails as `optim.lr=x` does)."""
    hints = typing.get_type_hints(RunConfig)
    return dataclasses.make_dataclass(
        "RunConfigTop", [(f.name, hints[f.name], field(default=f.default, metadata=f.metadata))
                         for f in fields(RunConfig) if f.name not in SECTIONS and f.name != "method"],
        frozen=True)


def nest(flat: dict[str, Any], at=lambda k: "config") -> dict[str, Any]:
    """{"optim.lr": 1e-3, "seed": 1} -> {"optim": {"lr": 1e-3}, "seed": 1}; a flat key of an earlier
    version, or an unknown one, raises naming the new name."""
    top_names = [f.name for f in fields(_top_class())]
    out: dict[str, Any] = {}
    for key, v in flat.items():
        head, _, rest = key.partition(".")
        if key in RENAMED:
            raise ConfigError(f"{at(key)}: unknown key {key}; did you mean {RENAMED[key]}?")
        if head in SECTIONS or head == "method":
            if not rest:
                raise ConfigError(f"{at(key)}: {key} is a section; expected {key}.KEY=VALUE (one of "
                                  f"{', '.join(setting_keys_of(head))})")
            out.setdefault(head, {})[rest] = v
        elif key in top_names:
            out[key] = v
        else:
            raise ConfigError(f"{at(key)}: unknown key {key}{_suggest(key, setting_keys() + ['method.name'])}")
    return out


def setting_keys_of(section: str) -> list[str]:
    if section == "method":
        return ["method.name"]
    return [f"{section}.{f.name}" for f in fields(SECTIONS[section])]


# --------------------------------------------------------------------------------------------------
# layers: defaults < world < file < command line, as flat dotted dicts
# --------------------------------------------------------------------------------------------------

def flatten(data: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """A YAML mapping (nested sections, dotted keys, or both) -> flat dotted keys. Only the sections
    and `method` are walked into; a value that is a mapping elsewhere (an eval suite) stays whole."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where}: key {k!r}: expected a string")
        key = prefix + k
        head = key.split(".", 1)[0]
        if isinstance(v, dict) and (head in SECTIONS or head == "method") and key.count(".") < 1:
            out.update(flatten(v, where, key + "."))
        else:
            out[key] = v
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` strings -> {dotted key: value} (values parsed as YAML scalars: 1e-3, true, null, [a, b])."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value (e.g. data.harmful_ratio=0.2)")
        key, val = ov.split("=", 1)
        key = key.strip()
        if key == "method":   # method=NAME: that method with its defaults, whatever the file set
            out = {k: v for k, v in out.items() if not k.startswith("method.")}
            out["method"] = val
        else:
            out[key] = _parse_scalar(val)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    return data


@dataclass
class Resolved:
    """What load_config resolved: the flat settings and, per dotted key, the layer that set it."""
    values: dict[str, Any]
    sources: dict[str, str]

    def where(self, key: str) -> str:
        return self.sources.get(key, "default")


def _merge(layers: list[tuple[str, dict[str, Any]]]) -> Resolved:
    """Later layers win; `method` (a bare method name) resets the method section of the layers below."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, flat in layers:
        for k, v in flat.items():
            if k == "method":
                if isinstance(v, dict):
                    for mk, mv in v.items():
                        values[f"method.{mk}"], sources[f"method.{mk}"] = mv, name
                    continue
                for mk in [m for m in values if m.startswith("method.")]:
                    values.pop(mk)
                    sources.pop(mk, None)
                values["method.name"], sources["method.name"] = v, name
                continue
            values[k], sources[k] = v, name
    return Resolved(values, sources)


def resolve(path: str | Path | None = None, overrides: list[str] | None = None) -> Resolved:
    """The layers, merged, later ones winning: the world's settings (explorer/worlds/NAME.yaml), the
    YAML file, the file's `worlds: {NAME: ...}` block for that world, the command line."""
    file: list[tuple[str, dict[str, Any]]] = []
    blocks: dict[str, Any] = {}
    if path:
        data = read_yaml(path)
        blocks = _world_blocks(data.pop("worlds", None) or {}, str(path))
        file.append((str(path), flatten(data, str(path))))
    cli = [("command line", parse_overrides(list(overrides or [])))]
    world = _merge(file + cli).values.get("world", "tiny")
    if world in blocks:
        file.append((f"{path} worlds.{world}", flatten(blocks[world], f"{path} worlds.{world}")))
    return _over_world(file + cli)


def _world_blocks(blocks: Any, where: str) -> dict[str, dict[str, Any]]:
    """A config file's `worlds:` section: world name -> the settings that hold on that world only."""
    from explorer.worlds import WORLDS

    if not isinstance(blocks, dict):
        raise ConfigError(f"{where}: worlds = {blocks!r}: expected a mapping of world name -> settings")
    for name, block in blocks.items():
        if name not in WORLDS:
            raise ConfigError(f"{where}: worlds.{name}: unknown world; expected one of {', '.join(WORLDS)}")
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: worlds.{name} = {block!r}: expected a mapping of settings")
        if "world" in block:
            raise ConfigError(f"{where}: worlds.{name}.world: a world's block cannot choose another world")
    return blocks


def _over_world(layers: list[tuple[str, dict[str, Any]]]) -> Resolved:
    """The flat layers merged over the settings of the world they name (world=, default tiny)."""
    from explorer.worlds import WORLDS, world_defaults

    user = _merge(layers)
    world = user.values.get("world", "tiny")
    if world not in WORLDS:
        raise ConfigError(f"{user.where('world')}: world = {world!r}: expected one of {', '.join(WORLDS)}")
    return _merge([(f"world:{world}", flatten(world_defaults(world), f"explorer/worlds/{world}.yaml")), *layers])


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    r = resolve(path, overrides)
    cfg = build_run_config(r.values, r.where)
    validate(cfg, r.where)
    return cfg


# --------------------------------------------------------------------------------------------------
# checks that the types alone do not make
# --------------------------------------------------------------------------------------------------

def validate(cfg: RunConfig, where: str | Any = "config") -> None:
    """What the types alone do not check: every field's range or choices (setting(ge=, gt=, ...)), the
    data settings against each other, the method section, the judges and dist.shard."""
    at = where if callable(where) else (lambda k: where)
    check_ranges(cfg, "", at)
    for name in SECTIONS:
        check_ranges(getattr(cfg, name), f"{name}.", at)
    validate_data(cfg, at)
    o = cfg.optim
    if o.epochs <= 0 and o.max_steps <= 0:
        raise ConfigError(f"{at('optim.epochs')}: optim.epochs and optim.max_steps are both 0; expected one "
                          "of them positive")
    method_config(cfg, at)  # validates the method section
    validate_judges(cfg, at)
    validate_shard(cfg, at)


def validate_judges(cfg: RunConfig, where: str | Any = "config") -> None:
    """eval.judges, item by item (explorer/eval/judges.py; nothing is loaded here)."""
    from explorer.eval.judges import JudgeConfigError, judge_specs

    at = where if callable(where) else (lambda k: where)
    try:
        judge_specs(cfg.eval.judges, "eval.judges")
    except JudgeConfigError as e:
        raise ConfigError(f"{at('eval.judges')}: {e}") from None


def validate_shard(cfg: RunConfig, where: str | Any = "config") -> None:
    """dist.shard=fsdp runs every forward and backward as collectives, so every rank must run the same
    passes (explorer/model/distributed.py, fsdp_shard): only methods that declare `shardable` qualify."""
    from explorer.methods.registry import REGISTRY
    from explorer.model.distributed import SHARDS

    at = where if callable(where) else (lambda k: where)
    shard = cfg.dist.shard
    w = at("dist.shard")
    if shard not in SHARDS:
        raise ConfigError(f"{w}: dist.shard = {shard!r}: expected one of {', '.join(SHARDS)}")
    if shard == "none":
        return
    if not cfg.model.lora:
        raise ConfigError(f"{w}: dist.shard = fsdp with model.lora = false: expected model.lora=true (FSDP "
                          "shards the frozen base weights and keeps the trainable LoRA adapter whole on every "
                          "rank; sharded trainable weights are not supported)")
    cls = REGISTRY[cfg.method_name][1]
    if not getattr(cls, "shardable", False):
        ok = sorted(n for n, (_, c) in REGISTRY.items() if getattr(c, "shardable", False))
        raise ConfigError(f"{w}: dist.shard = fsdp with method {cfg.method_name!r}: expected one of "
                          f"{', '.join(ok)}. {cfg.method_name} scores per-sample gradients in chunks and "
                          "reference pools in shards whose number differs between ranks, and under FSDP every "
                          "forward is a collective that all ranks must join (README, 'Larger models')")
    if cfg.eval.influence_every:
        raise ConfigError(f"{w}: dist.shard = fsdp with eval.influence_every = {cfg.eval.influence_every}: "
                          "expected eval.influence_every=0 (the influence check scores per-sample gradients "
                          "on rank-local chunks)")


def validate_data(cfg: RunConfig, where: str | Any = "config") -> None:
    """The data settings of explorer/train/assemble.py, checked before anything is loaded."""
    from explorer.eval.suites import SuiteError, parse_suites

    at = where if callable(where) else (lambda k: where)
    d = cfg.data
    if d.task and not d.harmful and d.harmful_ratio:
        raise ConfigError(
            f"{at('data.harmful_ratio')}: data.harmful_ratio = {d.harmful_ratio:g} with data.task = {d.task} and "
            "no data.harmful: there is nothing to mix in. Expected data.harmful_ratio unset (null) to use your "
            "task file as it is (pre-mixed harmful samples included; say which ones with data.provenance_field= "
            "or data.harmful_reference=), or data.harmful=FILE to mix that file's samples in at this ratio")
    if (d.provenance_field or d.harmful_reference) and not d.task:
        raise ConfigError(f"{at('data.provenance_field')}: data.provenance_field / data.harmful_reference "
                          "describe a data.task file; expected data.task=FILE with them")
    try:
        parse_suites(cfg.eval.suites, f"{at('eval.suites')}: eval.suites")
    except SuiteError as e:
        raise ConfigError(str(e)) from None


def method_config(cfg: RunConfig, where: str | Any = "config"):
    """Build the method's frozen config dataclass from the `method:` section."""
    from explorer.methods.registry import REGISTRY, load_methods

    at = where if callable(where) else (lambda k: where)
    load_methods()
    sect = dict(cfg.method)
    name = sect.pop("name", "sft")
    if name not in REGISTRY:
        raise ConfigError(f"{at('method.name')}: method.name = {name!r}: expected one of "
                          f"{', '.join(sorted(REGISTRY))}")
    cls, _ = REGISTRY[name]
    where_m = lambda k: f"{at(k)} [method {name}]"  # noqa: E731
    mcfg = build_dataclass(cls, sect, where_m, prefix="method.")
    check_ranges(mcfg, "method.", where_m)   # the ranges its fields declare (help_field(ge=, ...))
    return mcfg


def run_settings(cfg: RunConfig):
    """The typed view of the run settings a method may read (explorer/methods/protocol.py, RunSettings)."""
    from explorer.methods.protocol import RunSettings

    return RunSettings(seed=cfg.seed, batch_size=cfg.optim.batch_size, max_length=cfg.data.max_length,
                       base_model=cfg.model.base, lora=cfg.model.lora)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested dict the manifest records (tuples as lists)."""
    return _plain(dataclasses.asdict(cfg))


def from_dict(d: dict[str, Any], where: str = "config") -> RunConfig:
    """A RunConfig from a manifest's `config` (nested; a flat one of an earlier version is renamed)."""
    return build_run_config(flatten(upgrade(d), where), where)


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A manifest config of an earlier version (flat keys: lr, harmful_ratio ...) -> the nested shape;
    a nested one is returned as it is."""
    if isinstance(d.get("model"), dict) or not any(k in RENAMED for k in d):
        return d
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in RENAMED:
            sect, name = RENAMED[k].split(".")
            out.setdefault(sect, {})[name] = v
        else:
            out[k] = v
    return out


def compose(layers: list[tuple[str, dict[str, Any]]]) -> RunConfig:
    """A checked RunConfig from named layers of settings (dotted or nested mappings, later ones win) over
    the defaults of the world they name: what load_config does for a file and the command line, for
    callers that hold the settings in code (explorer/integrations builds one from a Trainer's arguments)."""
    r = _over_world([(name, flatten(d, name)) for name, d in layers])
    cfg = build_run_config(r.values, r.where)
    validate(cfg, r.where)
    return cfg


# --------------------------------------------------------------------------------------------------
# what the command line shows: `explorer config show`, `explorer run --help-config [METHOD]`
# --------------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    """A value as YAML writes it on one line (null, true, 0.0002, [q_proj, v_proj], {name: x})."""
    text = yaml.safe_dump(_plain(v), default_flow_style=True, width=10**6).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def range_text(meta) -> str:
    """A field's declared range or choices as --help-config shows them ("in [0, 1]", "> 0", "one of a, b")."""
    if "choices" in meta:
        return "one of " + ", ".join(map(str, meta["choices"]))
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]:g}"
    return ""


def _field_rows(cls, prefix: str) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) of every field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        kind = type_name(hints[f.name]) + (f", {range_text(f.metadata)}" if range_text(f.metadata) else "")
        rows.append((prefix + f.name, kind, _fmt(default), f.metadata.get("help", "")))
    return rows


def help_config(method: str | None = None) -> str:
    """Every key `explorer run` takes, dotted, with its type, default and help; with `method`, that
    method's `method.*` keys too (else the registered methods by name)."""
    import textwrap

    from explorer.methods.registry import REGISTRY, load_methods

    load_methods()
    out = ["Settings of `explorer run CONFIG [key=value ...]` (YAML: nested sections or dotted keys).",
           "Defaults compose: the world's (world=NAME), then the file, then the command line",
           "(explorer config show FILE [key=value ...] prints where each value came from).", ""]
    top = [(k, t, d, h) for k, t, d, h in _field_rows(_top_class(), "")]
    groups = [("run", top)] + [(s, _field_rows(cls, f"{s}.")) for s, cls in SECTIONS.items()]
    if method is not None:
        if method not in REGISTRY:
            raise ConfigError(f"--help-config {method}: unknown method; expected one of "
                              f"{', '.join(sorted(REGISTRY))}")
        rows = _field_rows(REGISTRY[method][0], "method.")
        groups.append((f"method {method} (method.name={method}; {REGISTRY[method][0].__module__})",
                       rows or [("method.*", "", "", "no settings of its own")]))
    for title, rows in groups:
        out.append(f"{title}:")
        for k, t, d, h in rows:
            out.append(f"  {k}  ({t}, default {d})" if t else f"  {k}")
            out += textwrap.wrap(h, 100, initial_indent="      ", subsequent_indent="      ")
        out.append("")
    if method is None:
        out.append("method.name: one of " + ", ".join(sorted(REGISTRY)) +
                   "; `explorer run --help-config NAME` lists that method's method.* keys.")
    return "\n".join(out).rstrip() + "\n"


def show(path: str | Path | None = None, overrides: list[str] | None = None) -> str:
    """The resolved config of `path` + `overrides`, nested as YAML, each value with where it came from
    (default | world:NAME | FILE | FILE worlds.NAME | command line)."""
    r = resolve(path, overrides)
    cfg = build_run_config(r.values, r.where)
    validate(cfg, r.where)
    mcfg = method_config(cfg, r.where)
    rows: list[tuple[str, str]] = []   # (text, source)

    def add(indent: int, key: str, value: Any, dotted: str):
        rows.append((f"{'  ' * indent}{key}: {_fmt(value)}", r.where(dotted)))

    for f in fields(_top_class()):
        add(0, f.name, getattr(cfg, f.name), f.name)
    for s in SECTIONS:
        rows.append((f"{s}:", ""))
        for f in fields(SECTIONS[s]):
            add(1, f.name, getattr(getattr(cfg, s), f.name), f"{s}.{f.name}")
    rows.append(("method:", ""))
    add(1, "name", cfg.method_name, "method.name")
    for f in fields(mcfg):
        add(1, f.name, getattr(mcfg, f.name), f"method.{f.name}")
    width = min(max(len(t) for t, _ in rows) + 2, 72)
    return "\n".join(f"{t:<{width}}# {src}" if src else t for t, src in rows) + "\n"
