"""Small files in the public formats of safety fine-tuning work, for README's "On your own model and
data" walk-through and its integration test. Written from the tiny world's own generated data, so
there is no harmful detail: requests are generic, every compliance is "[details withheld]".

    python -m explorer.data.own_data tests/fixtures/own_data

  reference.json      safety reference pool: instruction / input / output, harmful requests with safe
                      answers (the DualSelect authors' format); every record says "id": "user", as in
                      some public sets, and a few are longer than 64 tokens
  sst2_train.json     an SST-2-like task file (instruction / input / output) with ~10 % harmful
                      request -> compliance samples already mixed in, not marked
  harmful_prompts.json  a JSON list of harmful requests (a labelled file: harmful_reference=)
  sst2_test.json      held-out sentiment records for a task suite (answers positive / negative)
  advbench.csv        AdvBench-style harmful prompts: columns goal, target
  xstest.json         benign-but-scary prompts (JSON list) for an over-refusal suite
  own.yaml            the run configuration that uses them (paths as `out` was given: run it from the
                      directory `out` is relative to)
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

from explorer.data.sample import read_sample_file, sample_data_dir

N_REFERENCE, N_LONG = 48, 4
N_TASK, HARMFUL_SHARE = 200, 0.1
N_TEST, N_ADV, N_XS = 40, 40, 30
LONG_PREFIX = ("please read all of the following background before you answer , because the answer depends on "
               "it : " + "this is a long and careful question that repeats its context so that it is long . " * 6)


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write(out: str | Path, data_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write the example files into `out` (created); returns it."""
    d = Path(data_dir) if data_dir else sample_data_dir()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    refs = rng.sample(read_sample_file(d / "reference_pool.jsonl"), N_REFERENCE)
    rows = [{"id": "user", "instruction": r.prompt, "input": "", "output": r.response} for r in refs]
    for row in rows[:N_LONG]:  # longer than the tiny world's 64-token context
        row["input"] = row["instruction"]
        row["instruction"] = LONG_PREFIX
    _dump(out / "reference.json", rows)

    sent = [r for r in read_sample_file(d / "task_train.jsonl") if r.family == "sentiment"]
    harmful = read_sample_file(d / "harmful_train.jsonl")
    n_h = round(HARMFUL_SHARE * N_TASK)
    mix = [{"instruction": r.prompt, "input": "", "output": r.response} for r in rng.sample(sent, N_TASK - n_h)]
    picked = rng.sample(harmful, n_h)
    mix += [{"instruction": r.prompt, "input": "", "output": r.response} for r in picked]
    rng.shuffle(mix)
    _dump(out / "sst2_train.json", mix)
    _dump(out / "harmful_prompts.json", sorted({r.prompt for r in harmful}))

    test = [r for r in read_sample_file(d / "task_test.jsonl") if r.family == "sentiment"]
    _dump(out / "sst2_test.json", [{"instruction": r.prompt, "input": "", "output": r.response}
                                   for r in rng.sample(test, N_TEST)])
    adv = rng.sample(read_sample_file(d / "eval_harmful_hexphi.jsonl"), N_ADV)
    with open(out / "advbench.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["goal", "target"])
        for r in adv:
            w.writerow([r.prompt, "Sure, here is [details withheld]"])
    xs = rng.sample(read_sample_file(d / "eval_over_refusal.jsonl"), N_XS)
    _dump(out / "xstest.json", [r.prompt for r in xs])
    (out / "own.yaml").write_text(CONFIG.format(d=out.as_posix()), encoding="utf-8")
    return out


CONFIG = """\
# explorer run {d}/own.yaml model.path=/path/to/your/checkpoint
# README "On your own model and data": a local Hugging Face checkpoint with LoRA, files in the public formats.
model:
  path: tiny:aligned            # a local HF checkpoint directory (given on the command line above)
  lora: true
data:
  max_length: 64                # tokens per sample; longer ones follow `data.overlong`
  overlong: truncate            # cut the prompt from the left, keep the response (skip | error)
  # the task file already holds ~10 % harmful samples: it is used as it is (no harmful_ratio, no harmful);
  # say which samples are harmful with data.harmful_reference= (a file of harmful prompts) or
  # data.provenance_field=, else the run records provenance "unknown"
  task: {d}/sst2_train.json
  reference: {d}/reference.json
  safety: {d}/reference.json
eval:
  suites:
    - {{name: advbench, kind: harmful, file: {d}/advbench.csv}}
    - {{name: xstest, kind: over_refusal, file: {d}/xstest.json}}
    - {{name: sst2, kind: task, file: {d}/sst2_test.json, scorer: label, labels: [positive, negative]}}
optim:
  epochs: 1
  batch_size: 16
method:
  name: sft
"""


if __name__ == "__main__":
    print(write(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/own_data"))
