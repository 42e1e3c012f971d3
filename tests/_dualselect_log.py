"""A synthetic selection_log.jsonl in the authors' format (no authors' data exists here)."""

import json
import random
from pathlib import Path


def write_fake_log(d: Path, n_task=40, n_ref=30, epochs=2, steps_per_epoch=5, k=4, k_ref=8, seed=0):
    rng = random.Random(seed)
    task = [{"instruction": f"task prompt {i}", "output": f"answer {i}"} for i in range(n_task)]
    refs = [{"prompt": f"harmful request {i}", "response": "I can't help with that."} for i in range(n_ref)]
    (d / "task.json").write_text(json.dumps(task))
    (d / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    lines, step = [], 0
    for ep in range(epochs):
        sel = rng.sample(range(n_ref), k_ref)
        lines.append({"epoch": ep, "kind": "reference", "indices": sel, "weights": [1.0] * k_ref,
                      "scores": [round(rng.random(), 4) for _ in sel], "losses": [round(rng.random(), 4) for _ in sel],
                      "cosines": [round(rng.uniform(-1, 1), 4) for _ in sel], "selected_ref_mean_loss": 0.5,
                      "num_scored_refs": n_ref, "num_selected_refs": k_ref})
        for _ in range(steps_per_epoch):
            idx = rng.sample(range(n_task), k)
            lines.append({"epoch": ep, "kind": f"task_step_{step}", "indices": idx, "weights": [1.0] * k,
                          "scores": [round(rng.random(), 4) for _ in idx], "losses": [round(rng.random(), 4) for _ in idx],
                          "cosines": [round(rng.uniform(-1, 1), 4) for _ in idx], "task_loss": 1.0,
                          "task_score": 0.3, "task_ref_cosine": 0.1, "num_selected_task": k})
            step += 1
    (d / "selection_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d / "selection_log.jsonl", d / "task.json", d / "refs.jsonl", lines


def authors_batches(n_task: int, batch_size: int, seed: int, warmup_steps: int, epochs: int) -> list[list[int]]:
    """The task batches of the authors' train_dualselect.py, written out independently of the importer: one
    random.Random(seed) shuffles range(n) once for the warm-up (when it has steps) and once per epoch, and
    each shuffled order is cut into consecutive batches (the last one shorter)."""
    rng = random.Random(seed)
    if warmup_steps > 0:
        rng.shuffle(list(range(n_task)))
    out = []
    for _ in range(epochs):
        order = list(range(n_task))
        rng.shuffle(order)
        out += [order[i:i + batch_size] for i in range(0, n_task, batch_size)]
    return out


def write_authors_log(d: Path, n_task=100, batch_size=32, top_k=16, n_ref=600, k_ref=32, epochs=2, warmup_steps=10,
                      seed=42, harmful_every: int | None = None):
    """A selection_log.jsonl as the authors' code writes it with --save-task-selection (hard mode): epochs from 1;
    before each epoch one "reference" line with the K_ref selected of `n_ref` scored references; then one
    "task_step_<global step>" line per batch naming the `top_k` samples kept (smallest score) out of the batch —
    the dropped ones are not in the log. Task records carry no provenance unless `harmful_every` marks every
    n-th one harmful (a "provenance" field). Returns (log, task file, reference file, lines, batches)."""
    score_rng = random.Random(seed + 1)  # the model's scores; the batching rng is the authors' own
    task = []
    for i in range(n_task):
        rec = {"instruction": f"task prompt {i}", "output": f"answer {i}"}
        if harmful_every:
            rec["provenance"] = "harmful" if i % harmful_every == 0 else "benign"
        task.append(rec)
    refs = [{"prompt": f"reference request {i}", "response": "I can't help with that."} for i in range(n_ref)]
    (d / "task.json").write_text(json.dumps(task))
    (d / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    batches = authors_batches(n_task, batch_size, seed, warmup_steps, epochs)
    per_epoch = len(batches) // epochs
    lines, step = [], 0
    for ep in range(1, epochs + 1):
        scored = [(score_rng.random(), score_rng.uniform(-1, 1), i) for i in range(n_ref)]
        sel = sorted(scored, key=lambda t: t[0] - t[1], reverse=True)[:k_ref]
        lines.append({"epoch": ep, "kind": "reference", "indices": [t[2] for t in sel], "weights": [1.0] * len(sel),
                      "scores": [t[0] - t[1] for t in sel], "losses": [t[0] for t in sel],
                      "cosines": [t[1] for t in sel], "selected_ref_mean_loss": 0.5, "selected_ref_mean_score": 0.5,
                      "selected_ref_mean_cosine": 0.0, "num_scored_refs": n_ref, "num_selected_refs": len(sel)})
        for batch in batches[(ep - 1) * per_epoch: ep * per_epoch]:
            cand = [(score_rng.random(), score_rng.uniform(-1, 1), i) for i in batch]
            k = min(max(1, top_k), len(cand))
            sel = sorted(cand, key=lambda t: t[0] - t[1])[:k]
            lines.append({"epoch": ep, "kind": f"task_step_{step}", "indices": [t[2] for t in sel],
                          "weights": [1.0] * k, "scores": [t[0] - t[1] for t in sel], "losses": [t[0] for t in sel],
                          "cosines": [t[1] for t in sel], "task_loss": 1.0, "task_score": 0.3,
                          "task_ref_cosine": 0.1, "num_selected_task": k})
            step += 1
    (d / "selection_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d / "selection_log.jsonl", d / "task.json", d / "refs.jsonl", lines, batches
