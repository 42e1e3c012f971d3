"""Worlds: a prepared model pair plus the data and settings a run on it starts from (`world=NAME`).

- tiny     the word-level tiny world (explorer/prepare/tiny.py, sample_data/): every default of
           RunConfig is the tiny world's.
- smollm2  SmolLM2-135M-Instruct (explorer/model/smollm2.py) with the committed alignment adapter
           merged in; the tiny world's records rewritten as ordinary prose (`tidy`) into the cache;
           LoRA on q/k/v/o; task suites scored with `contains` (a chat model answers in sentences);
           run sizes chosen for a 2-core CPU (docs/smollm2.md).

`world=smollm2` fills in the settings below wherever the YAML file and the overrides leave them
unset (what a user writes always wins). No torch here: the config module imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

WORLDS = ("tiny", "smollm2")

#: run sizes for a 2-core CPU (docs/smollm2.md "Drift"): 4 epochs of 256 samples in batches of 16 at
#: lr 3e-4 is the setting, of the six tried on seed 0, where p = 0.1 drifts most beyond p = 0
SMOLLM2_SIZES: dict[str, Any] = {
    "data.n_train": 256, "optim.epochs": 4, "optim.batch_size": 16, "optim.lr": 3e-4, "data.max_length": 128,
    "eval.final_n": 16, "eval.n": 16, "eval.every": 0, "eval.max_new_tokens": 32, "eval.batch_size": 32,
}

SMOLLM2: dict[str, Any] = {
    "model.path": "smollm2:aligned", "model.base": "smollm2:base", "model.lora": True,
    "model.lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"], **SMOLLM2_SIZES,
}

DEFAULTS = {"tiny": {}, "smollm2": SMOLLM2}

#: per method, what the smollm2 world's demo and tables change from the demo configs, and why: each
#: reference scored costs a forward and backward of a 135M model, not of a 0.5M one
SMOLLM2_METHODS: dict[str, list[str]] = {
    # 64 of the 600 references scored per refresh (the authors' code caps the pool alike) and the
    # paper's 10 % of them selected: K_ref = ceil(0.1 * 64) = 7 (the demo config's k_ref_fraction is
    # 10 % of the whole pool, 60, which would select almost every reference scored). Refreshes on the
    # authors' schedule, once an epoch (4 here), not the demo config's every 8 steps: scoring 64
    # references costs about four training steps, and 8 refreshes put the run over 10 minutes
    # (docs/smollm2.md, "What a run costs on this CPU")
    "dualselect": ["method.ref_cap=64", "method.k_ref_fraction=0", "method.k_ref=7", "method.warmup_steps=2",
                   "method.refresh=epoch"],
    # stage 1 teacher-forces 128 refusals, not the paper's 512
    "pact": ["method.n_refusals=128"],
    # the SAE (width 576 x 4) trains 300 steps on 200 texts per pool; 128 prompts per covariance and
    # per side of the selection rule, 32 cached base activations
    "cwac": ["model.lora_targets=q_proj,k_proj,v_proj,o_proj,down_proj",   # its weight constraint acts on down_proj
             "method.sae_steps=300", "method.sae_texts=200", "method.cov_prompts=128",
             "method.selection_prompts=128", "method.n_base_prompts=32"],
    # one selector epoch, not the authors' 3
    "seal": ["method.selector_epochs=1"],
}

#: how the task suites of a world's default evaluation are scored
TASK_SCORER = {"tiny": "exact", "smollm2": "contains"}

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


def world_defaults(name: str) -> dict[str, Any]:
    """The settings (dotted keys) that `world=name` sets beneath the YAML file and the command line."""
    return dict(DEFAULTS[name])


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
