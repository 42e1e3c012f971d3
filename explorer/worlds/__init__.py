"""Worlds: a prepared model pair plus the data and run settings a run on it starts from (`world=NAME`).

Each world is one YAML file beside this module (explorer/worlds/NAME.yaml, shipped as package data):

    task_scorer   how the task suites of the world's default evaluation are scored (exact | contains)
    settings      run settings (explorer/config.py keys, nested or dotted) that a run on this world
                  starts from: the lowest layer, beneath the method's config file and the command line

- tiny     the word-level tiny world (explorer/prepare/tiny.py, sample_data/), the default
- smollm2  SmolLM2-135M-Instruct (explorer/model/smollm2.py) with the committed alignment adapter
           merged in; the tiny world's records rewritten as ordinary prose (`tidy`) into the cache;
           LoRA on q/k/v/o; run sizes chosen for a 2-core CPU (docs/smollm2.md)

A method's config file may add settings for one world only under `worlds: {NAME: {...}}` (configs/README.md).
No torch here: the config module imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

WORLD_DIR = Path(__file__).resolve().parent


def _names() -> tuple[str, ...]:
    names = sorted(p.stem for p in WORLD_DIR.glob("*.yaml"))
    return tuple(sorted(names, key=lambda n: n != "tiny"))   # the default first


WORLDS = _names()


def world_file(name: str) -> dict[str, Any]:
    """The parsed explorer/worlds/NAME.yaml (task_scorer, settings)."""
    p = WORLD_DIR / f"{name}.yaml"
    if name not in WORLDS:
        raise KeyError(f"world {name!r}: expected one of {', '.join(WORLDS)}")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("settings", {}), dict):
        raise ValueError(f"{p}: expected a mapping with task_scorer and a settings mapping")
    return data


def world_defaults(name: str) -> dict[str, Any]:
    """The run settings (nested, as in the YAML file) that `world=name` sets beneath the config file
    and the command line."""
    return dict(world_file(name).get("settings") or {})


def task_scorer(name: str) -> str:
    """How the task suites of `name`'s default evaluation are scored."""
    return str(world_file(name).get("task_scorer", "exact"))


#: the tiny world's files a run reads, rewritten for the smollm2 world (world_train.jsonl only trains
#: the tiny model and is not copied)
RUN_FILES = ("task_train.jsonl", "task_test.jsonl", "harmful_train.jsonl", "reference_pool.jsonl",
             "safety_demos.jsonl", "eval_harmful_hh.jsonl", "eval_harmful_hexphi.jsonl",
             "eval_over_refusal.jsonl")
TEXT_FIELDS = ("prompt", "response", "refusal")
TIDY_VERSION = 2

#: task_train.jsonl's answers as a chat model says them. Trained on the tiny world's bare labels and
#: numbers ("positive", "11"), SmolLM2 learns one-word answers and then answers every request with a
#: word or a number: an SFT run at lr 1e-3, 2 epochs, p = 0.1 left 56-81 % of answers degenerate
#: (docs/smollm2.md). A sentence that holds the label keeps `contains` scoring right and the
#: model's manner of answering; the held-out task_test.jsonl keeps the bare expected answers.
TASK_SENTENCES = {"sentiment": "The sentiment is {}.", "topic": "The topic is {}.",
                  "arithmetic": "The answer is {}.", "comparison": "The larger number is {}."}




def tidy(text: str) -> str:
    """The tiny world's word-level text as ordinary prose: "i ' m sorry , but" -> "I'm sorry, but"."""
    t = re.sub(r"\s*'\s*", "'", text)
    t = re.sub(r"\s+([,.!?;:])", r"\1", t).strip()
    t = re.sub(r"(?<![\w'])i(?=[\s']|$)", "I", t)                                     # the pronoun
    t = re.sub(r"([.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), t)   # sentence starts
    return t[:1].upper() + t[1:]


def smollm2_data_dir(source: Path | None = None, cache: Path | None = None) -> Path:
    """$EXPLORER_CACHE/smollm2/data: the tiny world's run files with `tidy` text (prompts, responses,
    refusals), training task answers as sentences (TASK_SENTENCES; the held-out task answers kept as
    they are), rewritten when the source files or TIDY_VERSION change."""
    from explorer.data.sample import sample_data_dir
    from explorer.model.smollm2 import world_dir

    src = Path(source) if source else sample_data_dir()
    out = Path(cache) if cache else world_dir() / "data"
    h = hashlib.sha256(str(TIDY_VERSION).encode())
    for name in RUN_FILES:
        h.update((src / name).read_bytes())
    stamp = {"source": str(src), "source_sha256": h.hexdigest(), "tidy_version": TIDY_VERSION}
    man = out / "MANIFEST.json"
    if man.exists() and json.loads(man.read_text()).get("source_sha256") == stamp["source_sha256"]:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        lines = []
        for line in (src / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            task_answer = r.get("pool") == "task" or name == "task_test.jsonl"
            for f in TEXT_FIELDS:
                if isinstance(r.get(f), str) and r[f] and not (f == "response" and task_answer):
                    r[f] = tidy(r[f])
            if name == "task_train.jsonl" and r.get("family") in TASK_SENTENCES and isinstance(r.get("response"), str):
                r["response"] = TASK_SENTENCES[r["family"]].format(r["response"])
            lines.append(json.dumps(r, ensure_ascii=False))
        tmp = out / (name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(out / name)
    man.write_text(json.dumps(stamp, indent=2))
    return out
