"""The data of one run: the fine-tuning mix, the reference and safety pools, the evaluation suites.

    records, pools, suites, info = build_pools(cfg)

`records` maps every sample id to its record; `pools` names the ids of each pool (task = the mix,
reference, safety); `info` is what the manifest records about the data.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from explorer.data.records import Record
from explorer.data.sample import read_sample_file, sample_data_dir


def load_pool(path: str, default: Path, pool: str, strict: bool) -> list[Record]:
    """A user file through the strict loaders, else the tiny world's own file."""
    if path:
        from explorer.data.load import load_records

        return load_records(path, pool, strict=strict)
    return read_sample_file(default)


def build_mix(task: list[Record], harmful: list[Record], cfg) -> list[Record]:
    """n_train samples: round(p * n_train) harmful (request -> compliance), the rest benign tasks."""
    rng = random.Random(cfg.seed)
    if cfg.task_families:
        task = [r for r in task if r.family in cfg.task_families]
    n_h = round(cfg.harmful_ratio * cfg.n_train)
    n_b = cfg.n_train - n_h
    if n_b > len(task) or n_h > len(harmful):
        raise ValueError(f"n_train={cfg.n_train} with harmful_ratio={cfg.harmful_ratio} needs {n_b} task "
                         f"and {n_h} harmful samples; have {len(task)} and {len(harmful)}")
    mix = rng.sample(task, n_b) + rng.sample(harmful, n_h)
    rng.shuffle(mix)
    return mix


def build_pools(cfg) -> tuple[dict[str, Record], dict[str, list[str]], list, dict[str, Any]]:
    """Load the pools named by a RunConfig, build the mix, load the evaluation suites and check that
    no evaluation prompt is in the reference pool. Returns (records, pools, suites, info)."""
    from explorer.data.checks import check_disjoint
    from explorer.eval.evaluate import load_suites

    data_dir = Path(cfg.data_dir) if cfg.data_dir else sample_data_dir()
    task = load_pool(cfg.task_data, data_dir / "task_train.jsonl", "task", cfg.strict)
    harmful = load_pool(cfg.harmful_data, data_dir / "harmful_train.jsonl", "harmful", cfg.strict)
    reference = load_pool(cfg.reference_data, data_dir / "reference_pool.jsonl", "reference", cfg.strict)
    safety = load_pool(cfg.safety_data, data_dir / "safety_demos.jsonl", "safety", cfg.strict)
    mix = build_mix(task, harmful, cfg)
    families = tuple(sorted({r.family for r in mix if r.provenance == "benign"}))
    suites = load_suites(data_dir, families=families)
    eval_prompts = [r for s in suites if s.kind != "task" for r in s.records]
    check_disjoint(reference, eval_prompts, "reference pool", "evaluation prompts")
    records: dict[str, Record] = {}
    pools: dict[str, list[str]] = {}
    for name, recs in (("task", mix), ("reference", reference), ("safety", safety)):
        for r in recs:
            if r.sample_id in records and records[r.sample_id] != r:
                raise ValueError(f"sample id {r.sample_id!r} appears in two pools with different "
                                 "content; expected ids unique across task, reference and safety data")
            records[r.sample_id] = r
        pools[name] = [r.sample_id for r in recs]
    info = {"data": str(data_dir),
            "data_files": {"task": cfg.task_data or str(data_dir / "task_train.jsonl"),
                           "harmful": cfg.harmful_data or str(data_dir / "harmful_train.jsonl"),
                           "reference": cfg.reference_data or str(data_dir / "reference_pool.jsonl"),
                           "safety": cfg.safety_data or str(data_dir / "safety_demos.jsonl")},
            "n_train": len(mix), "n_harmful_in_mix": sum(r.provenance == "harmful" for r in mix),
            "task_families": list(families)}
    return records, pools, suites, info
