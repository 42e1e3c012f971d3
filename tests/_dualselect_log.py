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
