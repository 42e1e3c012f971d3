"""References longer than max_length: every method keeps scores on the ids they belong to (issue #14 item 4)."""

import json

import pandas as pd
import pytest
import torch

from explorer.data.sample import read_sample_file, sample_data_dir

PAD = " please answer in full detail and explain every step ."   # generic filler that makes a prompt long


def parts(d, t):
    return pd.concat([pd.read_parquet(p) for p in sorted((d / t).glob("part-*.parquet"))], ignore_index=True)


def write_references(path, n=14, long_every=3):
    """n references in the tiny world's format (generic prompts, safe answers); every `long_every`-th
    one (0, 3, 6, ...) gets a prompt far longer than the 64-token context."""
    recs = read_sample_file(sample_data_dir() / "reference_pool.jsonl")[:n]
    long_ids = []
    with open(path, "w") as f:
        for i, r in enumerate(recs):
            row = {"sample_id": f"lref-{i:02d}", "pool": "reference", "family": "safety", "category": r.category,
                   "prompt": r.prompt, "response": r.response, "provenance": "benign"}
            if i % long_every == 0:
                row["prompt"] = r.prompt + PAD * 12
                long_ids.append(row["sample_id"])
            f.write(json.dumps(row) + "\n")
    return long_ids


@pytest.mark.integration
def test_dualselect_refresh_with_overlong_references_keeps_ids_aligned(short_config, tiny_paths, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from explorer.data.load import load_records
    from explorer.data.tokenize import encode_all, encode_batch
    from explorer.model.losses import per_sample_nll
    from explorer.train.recipe import run

    ref_file = tmp_path / "refs.jsonl"
    long_ids = write_references(ref_file)
    refs = {r.sample_id: r for r in load_records(ref_file, "reference", strict=True)}
    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    _, skipped = encode_all(tok, list(refs.values()), 64)
    assert set(skipped) == set(long_ids) and len(long_ids) == 5       # the file really has over-long records
    short = sorted(set(refs) - set(long_ids))

    # warm-up 0: the first refresh scores the starting model (d = none, so score = loss); chunks of 4
    # mix long and short references, so any positional mapping shifts scores onto other ids
    d = run(short_config("method=dualselect", "method.warmup_steps=0", "method.keep_fraction=0.5",
                         "method.k_ref=3", "method.refresh=every_n_steps", "method.refresh_every=1",
                         "method.chunk_size=4", f"data.reference={ref_file}", "data.max_length=64", "data.overlong=skip",
                         "data.n_train=32", "eval.every=0", "eval.final_n=2"))
    assert json.loads((d / "run.json").read_text())["status"] == "complete"
    r = parts(d, "refreshes")
    assert r["refresh_id"].nunique() >= 2
    for _, g in r.groupby("refresh_id"):
        assert sorted(g["sample_id"]) == short                       # every short reference, no long one, once
        assert g["score"].notna().all() and int(g["selected"].sum()) == 3
    # each reference's recorded loss is its own: recomputed alone on the starting model
    model = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"]).eval()
    first = r[r.refresh_id == 0].set_index("sample_id")
    for sid in short:
        b = encode_batch(tok, [refs[sid]], 64)
        with torch.no_grad():
            alone = float(per_sample_nll(model(input_ids=b.input_ids).logits, b.labels)[0])
        assert first.loc[sid, "loss"] == pytest.approx(alone, rel=1e-4, abs=1e-5), sid
        assert first.loc[sid, "score"] == pytest.approx(first.loc[sid, "loss"], rel=1e-6)
    # the selected references are the highest-scoring ones of their refresh
    for _, g in r.groupby("refresh_id"):
        assert set(g.nlargest(3, "score")["sample_id"]) == set(g.loc[g.selected, "sample_id"])


@pytest.mark.unit
def test_chunks_stay_within_the_budget_grouped_by_length():
    from explorer.scoring.chunking import parse_chunk_size, plan_chunks

    lengths = [50, 10, 40, 10, 30, 60, 20]
    chunks = plan_chunks(lengths, budget=100)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))        # every row once
    assert all(len(c) * max(lengths[i] for i in c) <= 100 for c in chunks)          # padded tokens in budget
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(flat)                                                      # shortest first
    # a per-row cost (gradient rows) makes chunks smaller; a row over budget alone is its own chunk
    assert max(len(c) for c in plan_chunks(lengths, 100, per_row=40)) < max(len(c) for c in chunks)
    assert plan_chunks([500, 5], 100) == [[1], [0]]
    assert [len(c) for c in plan_chunks(lengths, float("inf"), max_rows=3)] == [3, 3, 1]
    assert parse_chunk_size("auto") == "auto" and parse_chunk_size(8) == 8
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            parse_chunk_size(bad)
