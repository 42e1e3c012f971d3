"""The data side of a run: every pool loaded, the fine-tuning mix built, the evaluation suites read.

    build_pools(cfg) -> Pools(records, pools, suites, mix, manifest)

`records` holds every sample by id (task mix, reference pool, safety demonstrations), `pools` the
ids of each pool, `suites` the evaluation suites, `manifest` the data fields of the run's manifest.
The training recipe calls it once; nothing here touches the model.

Two ways to build the fine-tuning set:
  mix     the tiny world, or any task_data together with harmful_data: n_train samples (default 1000),
          round(p * n_train) of them harmful, p = harmful_ratio (default 0.1). Provenance is known.
  as-is   a user's task_data without harmful_data: the file is the fine-tuning set (n_train samples
          drawn from it when n_train is set), pre-mixed harmful samples included, nothing added.
          Provenance per record comes from provenance_field=, from harmful_reference=FILE (records
          whose prompt, compared after case and whitespace normalisation, is in FILE are harmful, the
          others benign), from the file's own `provenance` field, or is "unknown".
The manifest says which (`mix`: "mixed" | "as-is"; `provenance`: "mixed" | "field:NAME" |
"reference:FILE" | "file" | "unknown"); `harmful_share` is the measured share of harmful samples in
the fine-tuning set, or "unknown" (then `harmful_ratio` and `n_harmful_in_mix` are null: an unknown
share is never written as 0).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from explorer.config import RunConfig
from explorer.data.checks import check_disjoint, normalise
from explorer.data.load import load_records
from explorer.data.records import UNKNOWN, Record
from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.eval.evaluate import load_suites
from explorer.eval.suites import Suite, parse_suites, tiny_world_suites


DEFAULT_RATIO = 0.1     # harmful_ratio when samples are mixed and none is given
DEFAULT_N_TRAIN = 1000  # n_train of a mix when none is given
log = logging.getLogger(__name__)


def load_pool(path: str, default: Path, pool: str, cfg: RunConfig, provenance: str | None = None,
              provenance_field: str | None = None, optional: bool = False) -> list[Record]:
    """A user file through the strict loaders, else the tiny world's own file (an `optional` one that
    is not there — a data_dir without reference_pool.jsonl — is an empty pool: a method that needs it
    says so)."""
    if path:
        return load_records(path, pool, strict=cfg.data.strict, provenance=provenance, id_field=cfg.data.id_field or None,
                            provenance_field=provenance_field)
    if optional and not default.exists():
        return []
    return read_sample_file(default)


def mix_ratio(cfg: RunConfig) -> float | None:
    """The p that build_mix uses; None when the task file is used as it is."""
    if cfg.data.task and not cfg.data.harmful:
        return None
    return DEFAULT_RATIO if cfg.data.harmful_ratio is None else cfg.data.harmful_ratio


def build_mix(task: list[Record], harmful: list[Record], cfg: RunConfig) -> list[Record]:
    """n_train samples: round(p * n_train) harmful (request -> compliance), the rest benign tasks."""
    rng = random.Random(cfg.seed)
    if cfg.data.task_families:
        task = [r for r in task if r.family in cfg.data.task_families]
    p = mix_ratio(cfg)
    n_train = cfg.data.n_train or DEFAULT_N_TRAIN
    n_h = round(p * n_train)
    n_b = n_train - n_h
    if n_b > len(task) or n_h > len(harmful):
        raise ValueError(f"data.n_train={n_train} with harmful_ratio={p} needs {n_b} task "
                         f"and {n_h} harmful samples; have {len(task)} and {len(harmful)}")
    mix = rng.sample(task, n_b) + rng.sample(harmful, n_h)
    rng.shuffle(mix)
    return mix


def mark_by_reference(task: list[Record], reference: list[Record]) -> list[Record]:
    """harmful when the record's prompt is one of the reference prompts, else benign."""
    harmful = {normalise(r.prompt) for r in reference}
    return [replace(r, provenance="harmful" if normalise(r.prompt) in harmful else "benign") for r in task]


def as_is(task: list[Record], cfg: RunConfig) -> list[Record]:
    """The user's task file as the fine-tuning set (n_train of it, seeded, when n_train is set)."""
    if cfg.data.task_families:
        task = [r for r in task if r.family in cfg.data.task_families]
        if not task:
            raise ValueError(f"data.task_families={list(cfg.data.task_families)}: no record of {cfg.data.task} has one of "
                             "these families")
    if cfg.data.n_train is None:
        return list(task)
    if cfg.data.n_train > len(task):
        raise ValueError(f"data.n_train={cfg.data.n_train}: {cfg.data.task} has {len(task)} records; expected n_train <= "
                         f"{len(task)} (or unset: every record)")
    return random.Random(cfg.seed).sample(task, cfg.data.n_train)


def provenance_source(cfg: RunConfig, mix: list[Record]) -> str:
    if mix_ratio(cfg) is not None:
        return "mixed"
    if cfg.data.harmful_reference:
        return f"reference:{cfg.data.harmful_reference}"
    if any(r.provenance == UNKNOWN for r in mix):
        return UNKNOWN
    return f"field:{cfg.data.provenance_field}" if cfg.data.provenance_field else "file"


def join_pools(named: list[tuple[str, list[Record]]]) -> tuple[dict[str, Record], dict[str, list[str]]]:
    """records by id and the ids of each pool. The same id in two pools is fine when the content (prompt
    and response) is the same — the same file as reference_data and safety_data; else an error."""
    records: dict[str, Record] = {}
    pools: dict[str, list[str]] = {}
    for name, recs in named:
        for r in recs:
            old = records.get(r.sample_id)
            if old is not None and (old.prompt, old.response) != (r.prompt, r.response):
                raise ValueError(f"sample id {r.sample_id!r} appears in the {old.pool} and {name} pools with different "
                                 "content; expected ids unique across task, reference and safety data (id_field=none "
                                 "uses positions, prefixed by the file name)")
            records.setdefault(r.sample_id, r)
        pools[name] = [r.sample_id for r in recs]
    return records, pools


@dataclass
class Pools:
    records: dict[str, Record]            # every sample by id: the mix, references, safety demonstrations
    pools: dict[str, list[str]]           # pool name -> sample ids (task = the fine-tuning mix)
    suites: list[Suite]                   # evaluation suites
    mix: list[Record]                     # the fine-tuning set, in order
    manifest: dict[str, Any] = field(default_factory=dict)  # data fields of the run manifest

    @property
    def run_label(self) -> str:
        """p in the run id: the mixed ratio, the measured share, or "unknown" (never 0 for unknown)."""
        p = self.manifest.get("harmful_ratio")
        return "unknown" if p is None else f"{p:.3g}"


def build_pools(cfg: RunConfig, task: list[Record] | None = None) -> Pools:
    """Load every pool of `cfg`, build the fine-tuning set and the suites, check them against each other.
    `task`: the fine-tuning set itself, used as it is in place of task_data (the records of a Trainer's
    train_dataset: explorer/integrations)."""
    if cfg.data.dir:
        data_dir = Path(cfg.data.dir)
    elif cfg.world == "smollm2":   # the tiny world's records as prose, in the cache (explorer/worlds/)
        from explorer.worlds import smollm2_data_dir

        data_dir = smollm2_data_dir()
    else:
        data_dir = sample_data_dir()
    p = mix_ratio(cfg) if task is None else None
    tiny = lambda name: data_dir / name  # noqa: E731  the tiny world's file of that name
    if task is not None:
        mix = list(task)
    elif p is None:  # a user's task file as it is
        task = load_pool(cfg.data.task, tiny("task_train.jsonl"), "task", cfg, provenance=UNKNOWN,
                         provenance_field=cfg.data.provenance_field or None)
        if cfg.data.harmful_reference:
            ref = load_records(cfg.data.harmful_reference, "harmful_reference", strict=cfg.data.strict, require_response=False)
            task = mark_by_reference(task, ref)
            if not any(r.provenance == "harmful" for r in task):
                log.warning("harmful_reference %s: none of the %d prompts of %s is in it; the run records a harmful "
                            "share of 0", cfg.data.harmful_reference, len(task), cfg.data.task)
        mix = as_is(task, cfg)
    else:
        task = load_pool(cfg.data.task, tiny("task_train.jsonl"), "task", cfg,
                         provenance_field=cfg.data.provenance_field or None)
        harmful = ([] if p == 0 else  # nothing to mix in: the harmful file is not read
                   load_pool(cfg.data.harmful, tiny("harmful_train.jsonl"), "harmful", cfg, provenance="harmful"))
        mix = build_mix(task, harmful, cfg)
    reference = load_pool(cfg.data.reference, tiny("reference_pool.jsonl"), "reference", cfg, optional=True)
    same = cfg.data.safety and Path(cfg.data.safety).expanduser().resolve() == Path(
        cfg.data.reference or tiny("reference_pool.jsonl")).expanduser().resolve()
    # the same file as references and safety demonstrations: read once (one warning), the same ids
    safety = reference if same else load_pool(cfg.data.safety, tiny("safety_demos.jsonl"), "safety", cfg,
                                              optional=True)
    families = tuple(sorted({r.family for r in mix if r.provenance != "harmful"}))

    if cfg.eval.suites:
        specs = parse_suites(cfg.eval.suites)
    else:  # the tiny world's suites; task accuracy for the families it has test records of
        from explorer.worlds import task_scorer

        specs = tiny_world_suites(data_dir, families, task_scorer=task_scorer(cfg.world))
        if cfg.data.task or task is not None:
            have = {s.family for s in tiny_world_suites(data_dir) if s.family}
            specs = [s for s in specs if not s.family or s.family in have]
    suites = load_suites(data_dir, specs=specs, strict=cfg.data.strict)
    eval_prompts = [r for s in suites if s.kind != "task" for r in s.records]
    check_disjoint(reference, eval_prompts, "reference pool", "evaluation prompts")
    records, pools = join_pools([("task", mix), ("reference", reference), ("safety", safety)])

    prov = provenance_source(cfg, mix)
    n_h = None if prov == UNKNOWN or not mix else sum(r.provenance == "harmful" for r in mix)
    share = UNKNOWN if n_h is None else n_h / len(mix)
    files = {"task": "train_dataset" if task is not None else cfg.data.task or str(tiny("task_train.jsonl")),
             "reference": cfg.data.reference or str(tiny("reference_pool.jsonl")),
             "safety": cfg.data.safety or str(tiny("safety_demos.jsonl"))}
    if p:
        files["harmful"] = cfg.data.harmful or str(tiny("harmful_train.jsonl"))
    if cfg.data.harmful_reference:
        files["harmful_reference"] = cfg.data.harmful_reference
    manifest = {
        # harmful_ratio: the p mixed in, else the measured share, else null (unknown: never 0)
        "harmful_ratio": p if p is not None else (None if n_h is None else round(share, 4)),
        "harmful_share": share if n_h is None else round(share, 4),
        "mix": "as-is" if p is None else "mixed", "provenance": prov,
        "data": cfg.data.task or str(data_dir), "data_files": files,
        "n_train": len(mix), "n_harmful_in_mix": n_h,
        "task_families": list(families),
        "eval_suites": [{**s.to_dict(), "n": len(x.records)} for s, x in zip(specs, suites)]}
    return Pools(records, pools, suites, mix, manifest)
