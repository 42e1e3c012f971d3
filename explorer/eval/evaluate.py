"""Evaluation: greedy generation on held-out prompts, judges, and the metrics of docs/methods/baselines.md (measuring safety).

Suites are configuration (explorer/eval/suites.py): each has a name and a kind — harmful (harmful
score = % of responses the primary judge calls harmful, refusal rate), over_refusal (% of
benign-but-scary prompts refused) or task (accuracy by the suite's scorer: exact, label, contains).
Harmful and over-refusal suites also report the degenerate rate (% of collapsed responses,
explorer/eval/judges.py), which is in neither of the others.
The tiny world's default suites are harmful_hh, harmful_hexphi, over_refusal and task_<family>.
Rows go to the run's `evals` table, summaries ("<suite>/<metric>") to `metrics`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explorer.data.records import Record
from explorer.data.tokenize import pad_id_of, render_prompt
from explorer.eval.judges import Judge, KeywordJudge, normalize
from explorer.runs import schema


from explorer.eval.suites import Suite, SuiteSpec, load_suite, score_task, tiny_world_suites


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 24, batch_size: int = 64,
             device=None, synced_gpus: bool = False) -> list[str]:
    """Greedy decoding with left padding; returns the decoded continuations. `synced_gpus`: every
    rank of a sharded model calls this with the same prompts, and each keeps stepping until all are
    done (transformers' flag for FSDP / ZeRO-3, whose forwards are collectives)."""
    device = device or next(model.parameters()).device
    pad = pad_id_of(tokenizer)
    was_training = model.training
    model.eval()
    outs: list[str] = []
    enc = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(enc[i]))  # similar lengths together
    results: dict[int, str] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        T = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, T - len(enc[i]):] = torch.tensor(enc[i])
            attn[r, T - len(enc[i]):] = 1
        max_pos = getattr(model.config, "max_position_embeddings", None)
        n_new = max_new_tokens if not max_pos else max(1, min(max_new_tokens, max_pos - T))
        gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                             max_new_tokens=n_new, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, synced_gpus=synced_gpus)
        for r, i in enumerate(idx):
            results[i] = tokenizer.decode(gen[r, T:], skip_special_tokens=True).strip()
    if was_training:
        model.train()
    outs = [results[i] for i in range(len(prompts))]
    return outs


def task_correct(response: str, expected: str, scorer: str = "exact", labels: tuple[str, ...] = ()) -> bool:
    return score_task(response, expected, scorer, labels)


def load_suites(data_dir: str | Path, n_per_suite: int | None = None, seed: int = 0,
                families: tuple[str, ...] | None = None, specs: list[SuiteSpec] | None = None,
                strict: bool = True) -> list[Suite]:
    """The suites of `specs` (default: the tiny world's held-out suites in `data_dir`), a seeded
    subset of n_per_suite each."""
    rng = random.Random(seed)

    def take(recs):
        if n_per_suite and len(recs) > n_per_suite:
            recs = sorted(rng.sample(recs, n_per_suite), key=lambda r: r.sample_id)
        return recs

    specs = specs if specs is not None else tiny_world_suites(data_dir, families)
    suites = []
    for spec in specs:
        s = load_suite(spec, strict=strict)
        s.records = take(s.records)
        suites.append(s)
    return suites


def evaluate(model, tokenizer, suites: list[Suite], judges: list[Judge] | None = None, step: int = 0,
             max_new_tokens: int = 24, batch_size: int = 64,
             synced_gpus: bool = False) -> tuple[list[dict], list[dict]]:
    """Generate on every suite and judge. Returns (eval rows, metric rows)."""
    judges = judges or [KeywordJudge()]
    primary = judges[0]
    rows, metrics = [], []
    for suite in suites:
        if not suite.records:
            continue
        prompts = [r.prompt for r in suite.records]
        responses = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             synced_gpus=synced_gpus)
        verdicts = {j.name: j.judge(prompts, responses) for j in judges}
        for k, (rec, resp) in enumerate(zip(suite.records, responses)):
            v = verdicts[primary.name][k]
            row = {"step": step, "suite": suite.name, "sample_id": rec.sample_id, "prompt": rec.prompt,
                   "response": resp, "expected": rec.response, "category": rec.category,
                   "refusal": v.refusal,
                   "harmful": bool(v.harmful) if suite.kind == "harmful" else None,
                   "degenerate": bool(v.degenerate) if suite.kind != "task" else None,
                   "correct": task_correct(resp, rec.response, getattr(suite, "scorer", "exact"),
                                           getattr(suite, "labels", ())) if suite.kind == "task" else None,
                   "judge": primary.name}
            for j in judges[1:]:
                vj = verdicts[j.name][k]
                row[f"refusal_{j.name}"] = vj.refusal
                row[f"score_{j.name}"] = vj.score
            rows.append(row)
        n = len(responses)
        srows = rows[-n:]
        if suite.kind == "harmful":
            # harmful + refusal + degenerate = 100: a collapsed answer is neither
            harm = 100.0 * sum(r["harmful"] for r in srows) / n
            metrics += [{"step": step, "suite": suite.name, "metric": schema.M_HARMFUL, "value": harm},
                        {"step": step, "suite": suite.name, "metric": schema.M_REFUSAL,
                         "value": 100.0 * sum(r["refusal"] for r in srows) / n},
                        {"step": step, "suite": suite.name, "metric": schema.M_DEGENERATE,
                         "value": 100.0 * sum(r["degenerate"] for r in srows) / n}]
            for j in judges[1:]:
                metrics.append({"step": step, "suite": suite.name, "metric": f"{schema.M_HARMFUL}_{j.name}",
                                "value": 100.0 * sum(v.harmful for v in verdicts[j.name]) / n})
        elif suite.kind == "over_refusal":
            metrics += [{"step": step, "suite": suite.name, "metric": schema.M_OVER,
                         "value": 100.0 * sum(r["refusal"] for r in srows) / n},
                        {"step": step, "suite": suite.name, "metric": schema.M_DEGENERATE,
                         "value": 100.0 * sum(r["degenerate"] for r in srows) / n}]
            for j in judges[1:]:
                metrics.append({"step": step, "suite": suite.name, "metric": f"{schema.M_OVER}_{j.name}",
                                "value": 100.0 * sum(r[f"refusal_{j.name}"] for r in srows) / n})
        else:
            metrics.append({"step": step, "suite": suite.name, "metric": schema.M_ACC,
                            "value": 100.0 * sum(r["correct"] for r in srows) / n})
    return rows, metrics


def summarize(metrics: list[dict]) -> dict[str, float]:
    """Flat {suite/metric: value} of the latest step in `metrics`."""
    if not metrics:
        return {}
    last = max(m["step"] for m in metrics)
    return {f"{m['suite']}/{m['metric']}": round(float(m["value"]), 2) for m in metrics if m["step"] == last}
