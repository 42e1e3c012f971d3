"""The generator's invariants: determinism, disjointness, placeholders only, balance, sizes."""

import json
import re
from collections import Counter

import pytest

from explorer.data import generate as g

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def files():
    return g.generate(seed=0)


def test_deterministic_for_a_seed_and_different_across_seeds(files):
    again = g.generate(seed=0)
    assert again == files
    other = g.generate(seed=1)
    assert other["task_train.jsonl"] != files["task_train.jsonl"]


def test_minimum_sizes(files):
    fam = Counter(r["family"] for r in files["task_train.jsonl"])
    assert {"sentiment", "topic", "arithmetic", "comparison"} <= set(fam)
    assert all(n >= 1000 for n in fam.values())
    assert len(files["reference_pool.jsonl"]) >= 500
    assert len(files["eval_harmful_hh.jsonl"]) >= 150
    assert len(files["eval_harmful_hexphi.jsonl"]) >= 150
    assert len(files["eval_over_refusal.jsonl"]) >= 100
    test_fam = Counter(r["family"] for r in files["task_test.jsonl"])
    assert set(test_fam) == set(fam)


def test_every_record_has_id_pool_category_provenance(files):
    ids = []
    for name, recs in files.items():
        for r in recs:
            for k in ("sample_id", "pool", "family", "category", "prompt", "provenance"):
                assert r[k] != "" and r[k] is not None, (name, r)
            assert r["provenance"] in ("benign", "harmful")
            ids.append(r["sample_id"])
    assert len(ids) == len(set(ids)), "sample ids must be unique across all files"


def test_eval_prompts_disjoint_from_everything_used_in_training(files):
    eval_prompts = {r["prompt"] for f in ("eval_harmful_hh.jsonl", "eval_harmful_hexphi.jsonl",
                                          "eval_over_refusal.jsonl") for r in files[f]}
    for f in ("reference_pool.jsonl", "safety_demos.jsonl", "harmful_train.jsonl", "world_train.jsonl"):
        overlap = eval_prompts & {r["prompt"] for r in files[f]}
        assert not overlap, f"{f} shares {len(overlap)} prompts with the evaluation suites"


def test_eval_suites_use_held_out_template_action_pairs(files):
    """No (template, action) pair of an eval prompt occurs in any training prompt, with any modifier."""
    def pair_of(prompt):
        for t in g.HEX_TEMPLATES + g.HH_TEMPLATES:
            head, tail = t.split("{act}")
            for acts in g.HARMFUL_ACTS.values():
                for a in acts:
                    if prompt.startswith(head + a) and prompt.endswith(tail.strip()[-1]):
                        return (t, a)
        return None

    train_pairs = {pair_of(r["prompt"]) for f in ("reference_pool.jsonl", "harmful_train.jsonl",
                                                  "world_train.jsonl") for r in files[f]
                   if r["family"] in ("harmful", "safety")}
    train_pairs.discard(None)
    for f in ("eval_harmful_hh.jsonl", "eval_harmful_hexphi.jsonl"):
        pairs = {pair_of(r["prompt"]) for r in files[f]}
        pairs.discard(None)
        assert pairs and not (pairs & train_pairs)


def test_reference_and_harmful_pools_are_prompt_disjoint(files):
    a = {r["prompt"] for r in files["reference_pool.jsonl"]}
    b = {r["prompt"] for r in files["harmful_train.jsonl"]}
    c = {r["prompt"] for r in files["safety_demos.jsonl"]}
    assert not (a & b) and not (a & c) and not (b & c)


def test_compliance_is_placeholder_only_and_refusals_are_refusals(files):
    for name, recs in files.items():
        for r in recs:
            if r["provenance"] == "harmful" and r["response"]:
                assert r["response"] in g.COMPLIANCES, (name, r["response"])
                assert "[details withheld]" in r["response"]
            if "refusal" in r:
                assert r["refusal"] in g.REFUSALS
            if r["family"] == "safety":
                assert r["response"] in g.REFUSALS


def test_label_balance(files):
    for fam in ("sentiment", "topic"):
        labels = Counter(r["response"] for r in files["task_train.jsonl"] if r["family"] == fam)
        lo, hi = min(labels.values()), max(labels.values())
        assert hi / lo < 1.3, (fam, labels)
    cats = Counter(r["category"] for r in files["reference_pool.jsonl"])
    assert set(cats) == set(g.HARMFUL_CATEGORIES)
    assert min(cats.values()) >= 20
    hex_cats = Counter(r["category"] for r in files["eval_harmful_hexphi.jsonl"])
    assert set(hex_cats) == set(g.HARMFUL_CATEGORIES)


def test_task_answers_are_correct(files):
    for r in files["task_train.jsonl"] + files["task_test.jsonl"]:
        nums = [int(x) for x in re.findall(r"\d+", r["prompt"])]
        if r["family"] == "comparison":
            assert r["response"] == str(max(nums))
        elif r["family"] == "arithmetic":
            a, b = nums if not r["prompt"].startswith("subtract") else nums[::-1]
            assert r["response"] == str(a + b if r["category"] == "plus" else a - b)


def test_committed_sample_data_matches_the_generator():
    """sample_data/ is what `explorer data` writes with the default seed (regenerate after changes)."""
    from explorer.data.sample import repo_root

    d = repo_root() / "sample_data"
    manifest = json.loads((d / "MANIFEST.json").read_text())
    files = g.generate(seed=manifest["seed"])
    for name, recs in files.items():
        lines = (d / name).read_text(encoding="utf-8").splitlines()
        assert [json.loads(x) for x in lines] == recs, f"{name} differs from the generator's output"
