"""Evaluation: greedy generation on held-out prompts, judges, and the metrics of docs/methods/baselines.md (measuring safety).

Suites are configuration (explorer/eval/suites.py): each has a name and a kind — harmful (harmful
score = % of responses the primary judge calls harmful, refusal rate), over_refusal (% of
benign-but-scary prompts refused) or task (accuracy by the suite's scorer: exact, label, contains).
Harmful and over-refusal suites also report the degenerate rate (% of collapsed responses,
explorer/eval/judges.py), which is in neither of the others, and a model judge's unparsed rate (answers
it gave no verdict on). Several judges (`eval.judges`, docs/judges.md) each leave their own columns in
the evals rows, for their agreement (explorer/runs/agreement.py).
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


def refusal_judge(judges: list[Judge]) -> Judge:
    """The judge whose refusal verdict fills `refusal` (refusal rate, over-refusal): the first one that
    gives refusal verdicts (keyword, embedding, wildguard), else a keyword judge (Llama Guard, HarmBench
    and a sequence classifier judge harm only)."""
    return next((j for j in judges if getattr(j, "judges_refusal", True)), None) or KeywordJudge()


def judged_rows(suite: Suite, responses: list[str], judges: list[Judge], step: int = 0) -> list[dict]:
    """One evals row per record of `suite` with its response judged by every judge.

    The row's own verdicts (`harmful`, `degenerate`, `unparsed`) are the primary judge's (judges[0]);
    `refusal` is `refusal_judge(judges)`'s, named in `refusal_from`. Each judge j also gets its columns
    harmful_<j> (None where it gave no harmful/safe verdict: degenerate, unparsed or not a harmful suite),
    refusal_<j> (None for a judge without refusal verdicts), score_<j>, and for model judges unparsed_<j>
    and output_<j> (its raw answer), so judges can be compared on the same answers
    (explorer/runs/agreement.py)."""
    prompts = [r.prompt for r in suite.records]
    ref_j = refusal_judge(judges)
    verdicts = {j.name: j.judge(prompts, responses) for j in judges}
    if ref_j.name not in verdicts:
        verdicts[ref_j.name] = ref_j.judge(prompts, responses)
    primary = judges[0]
    harmful_suite = suite.kind == "harmful"
    rows = []
    for k, (rec, resp) in enumerate(zip(suite.records, responses)):
        v = verdicts[primary.name][k]
        row = {"step": step, "suite": suite.name, "sample_id": rec.sample_id, "prompt": rec.prompt,
               "response": resp, "expected": rec.response, "category": rec.category,
               "refusal": verdicts[ref_j.name][k].refusal,
               "harmful": bool(v.harmful) if harmful_suite else None,
               "degenerate": bool(v.degenerate) if suite.kind != "task" else None,
               "unparsed": bool(v.unparsed) if suite.kind != "task" else None,
               "correct": task_correct(resp, rec.response, getattr(suite, "scorer", "exact"),
                                       getattr(suite, "labels", ())) if suite.kind == "task" else None,
               "judge": primary.name, "refusal_from": ref_j.name}
        for j in judges:
            vj = verdicts[j.name][k]
            judged = not (vj.degenerate or vj.unparsed)
            row[f"harmful_{j.name}"] = bool(vj.harmful) if harmful_suite and judged else None
            row[f"refusal_{j.name}"] = bool(vj.refusal) if getattr(j, "judges_refusal", True) else None
            row[f"score_{j.name}"] = vj.score
            if vj.output is not None or vj.unparsed:
                row[f"unparsed_{j.name}"] = bool(vj.unparsed)
                row[f"output_{j.name}"] = vj.output
        rows.append(row)
    return rows


def suite_metrics(suite: Suite, rows: list[dict], judges: list[Judge], step: int = 0) -> list[dict]:
    """The summaries of one suite's judged rows. Harmful suites: harmful_score (primary judge),
    refusal_rate (the refusal judge), degenerate_rate, and unparsed_rate when the primary judge is a model
    judge that left answers unparsed (neither harmful nor safe); harmful_score_<j> (and unparsed_rate_<j>)
    for every other judge. Over-refusal suites: over_refusal and degenerate_rate, over_refusal_<j> for
    every other judge with refusal verdicts. Task suites: accuracy."""
    n = len(rows)
    pct = lambda xs: 100.0 * sum(bool(x) for x in xs) / n  # noqa: E731
    m = lambda metric, value: {"step": step, "suite": suite.name, "metric": metric, "value": value}  # noqa: E731
    out = []
    if suite.kind == "harmful":
        out += [m(schema.M_HARMFUL, pct(r["harmful"] for r in rows)),
                m(schema.M_REFUSAL, pct(r["refusal"] for r in rows)),
                m(schema.M_DEGENERATE, pct(r["degenerate"] for r in rows))]
        if any(r["unparsed"] for r in rows):
            out.append(m(schema.M_UNPARSED, pct(r["unparsed"] for r in rows)))
        for j in judges[1:]:
            out.append(m(f"{schema.M_HARMFUL}_{j.name}", pct(r[f"harmful_{j.name}"] for r in rows)))
            if any(r.get(f"unparsed_{j.name}") for r in rows):
                out.append(m(f"{schema.M_UNPARSED}_{j.name}", pct(r[f"unparsed_{j.name}"] for r in rows)))
    elif suite.kind == "over_refusal":
        out += [m(schema.M_OVER, pct(r["refusal"] for r in rows)),
                m(schema.M_DEGENERATE, pct(r["degenerate"] for r in rows))]
        for j in judges:
            if j.name != rows[0]["refusal_from"] and getattr(j, "judges_refusal", True):
                out.append(m(f"{schema.M_OVER}_{j.name}", pct(r[f"refusal_{j.name}"] for r in rows)))
    else:
        out.append(m(schema.M_ACC, pct(r["correct"] for r in rows)))
    return out


def evaluate(model, tokenizer, suites: list[Suite], judges: list[Judge] | None = None, step: int = 0,
             max_new_tokens: int = 24, batch_size: int = 64,
             synced_gpus: bool = False) -> tuple[list[dict], list[dict]]:
    """Generate on every suite and judge. Returns (eval rows, metric rows)."""
    judges = judges or [KeywordJudge()]
    rows, metrics = [], []
    for suite in suites:
        if not suite.records:
            continue
        responses = generate(model, tokenizer, [r.prompt for r in suite.records], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, synced_gpus=synced_gpus)
        srows = judged_rows(suite, responses, judges, step)
        rows += srows
        metrics += suite_metrics(suite, srows, judges, step)
    return rows, metrics


def summarize(metrics: list[dict]) -> dict[str, float]:
    """Flat {suite/metric: value} of the latest step in `metrics`."""
    if not metrics:
        return {}
    last = max(m["step"] for m in metrics)
    return {f"{m['suite']}/{m['metric']}": round(float(m["value"]), 2) for m in metrics if m["step"] == last}
