"""README's "On your own model and data", end to end: a local HF checkpoint with LoRA, files in the
public formats (tests/fixtures/own_data, written by explorer/data/own_data.py), evaluation suites
from the config; SFT and DualSelect short runs; provenance unknown and known; long references."""

import json
from pathlib import Path

import pandas as pd
import pytest

from explorer.runs import schema

pytestmark = pytest.mark.integration

FIX = Path(__file__).resolve().parent / "fixtures" / "own_data"
SHORT = ["optim.epochs=1", "optim.max_steps=3", "optim.batch_size=16", "eval.final_n=12", "eval.n=6", "record.flush_every=1",
         "progress=false", "eval.max_new_tokens=8"]
DS = ["method=dualselect", "method.warmup_steps=1", "method.keep_fraction=0.5", "method.k_ref=6",
      "method.refresh=every_n_steps", "method.refresh_every=2", "method.chunk_size=12"]


def read_table(run_dir: Path, table: str) -> pd.DataFrame:
    parts = sorted((run_dir / table).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()


REPO = FIX.parents[2]


@pytest.fixture
def own(tmp_path, tiny_paths, monkeypatch):
    """load_config of the README's config (tests/fixtures/own_data/own.yaml, paths from the repository
    root) with the tiny aligned model's directory as the user's local checkpoint."""
    from explorer.config import load_config

    monkeypatch.chdir(REPO)

    def make(*overrides):
        return load_config(FIX / "own.yaml", [f"model.path={tiny_paths['aligned']}", f"runs_dir={tmp_path / 'runs'}",
                                              *SHORT, *overrides])

    return make


def test_fixtures_are_what_the_project_writes(tmp_path):
    from explorer.data.own_data import write

    out = write(tmp_path / "own")
    for f in sorted(FIX.iterdir()):
        if f.name == "own.yaml":  # its paths are the ones it was written with
            assert f.read_text() == (out / f.name).read_text().replace(out.as_posix(), "tests/fixtures/own_data")
            continue
        assert (out / f.name).read_bytes() == f.read_bytes(), f"{f.name}: run python -m explorer.data.own_data {FIX}"
    text = "".join(f.read_text() for f in FIX.iterdir()).lower()
    assert "[details withheld]" in text


def test_own_model_and_data_end_to_end(own):
    from explorer.config import ConfigError
    from explorer.runs import reader
    from explorer.train.recipe import run

    # 1. SFT on the pre-mixed file as it is: provenance unknown, never p = 0
    d = run(own())
    m = json.loads((d / schema.MANIFEST).read_text())
    assert m["status"] == "complete" and m["model_info"]["lora"] is not None
    assert m["mix"] == "as-is" and m["provenance"] == "unknown" and m["harmful_share"] == "unknown"
    assert m["harmful_ratio"] is None and m["n_harmful_in_mix"] is None and "-punknown-" in m["run_id"]
    assert m["n_train"] == 200 and set(m["data_files"]) == {"task", "reference", "safety"}  # no harmful file
    assert [s["name"] for s in m["eval_suites"]] == ["advbench", "xstest", "sst2"]
    assert set(m["summary"]) == {"advbench/harmful_score", "advbench/refusal_rate", "advbench/degenerate_rate",
                                 "xstest/over_refusal", "xstest/degenerate_rate", "sst2/accuracy"}
    assert m["overlong"]["reference"] == {"n": 48, "over": 4, "truncated": 4, "skipped": 0}
    samples = pd.read_parquet(d / schema.SAMPLES)
    assert samples.loc[samples["in_mix"], "provenance"].eq("unknown").all()
    # every reference says "id": "user": content ids, one per record; the same file as safety_data is fine
    refs = samples[samples["pool"] == "reference"]
    assert len(refs) == 48 and refs["sample_id"].str.startswith("reference-").all()
    evals = read_table(d, "evals")
    assert set(evals["suite"]) == {"advbench", "xstest", "sst2"}
    assert evals.loc[evals["suite"] == "sst2", "correct"].notna().all()
    assert reader.run_row(d)["harmful_ratio"] is None

    # 2. DualSelect with provenance from a labelled file: the measured share is recorded
    d = run(own(*DS, f"data.harmful_reference={FIX / 'harmful_prompts.json'}"))
    m = json.loads((d / schema.MANIFEST).read_text())
    assert m["status"] == "complete" and m["provenance"].startswith("reference:")
    assert m["n_harmful_in_mix"] == 20 and m["harmful_share"] == 0.1 and m["harmful_ratio"] == 0.1
    assert "-p0.1-" in m["run_id"]
    samples = pd.read_parquet(d / schema.SAMPLES)
    assert samples.loc[samples["in_mix"], "provenance"].value_counts().to_dict() == {"benign": 180, "harmful": 20}
    ref = read_table(d, "refreshes")
    assert not ref.empty and set(ref["sample_id"]) <= set(samples.loc[samples["pool"] == "reference", "sample_id"])
    assert ref["loss"].notna().all()  # truncated long references are scored like the others
    metrics = read_table(d, "metrics")
    assert {f"{s}/{k}" for s, k in zip(metrics["suite"], metrics["metric"])} == set(m["summary"])

    # 3. a ratio with nothing to mix in is an error that says so
    with pytest.raises(ConfigError, match="data.harmful_ratio = 0.1 with data.task = .* and no data.harmful"):
        own("data.harmful_ratio=0.1")


def test_dualselect_skipping_long_references_keeps_ids_aligned(own):
    """Issue 14: with references over max_length skipped, the refresh's scores must stay on their own ids
    (it used to shift them and stop with IndexError). Passes once DualSelect's _refresh aligns by the
    Batch's sample_ids."""
    from explorer.train.recipe import run

    d = run(own(*DS, "data.overlong=skip"))
    m = json.loads((d / schema.MANIFEST).read_text())
    assert m["status"] == "complete" and m["overlong"]["reference"]["skipped"] == 4
    rows = json.loads((FIX / "reference.json").read_text())
    long_prompts = {r["instruction"] + "\n" + r["input"] for r in rows if r["input"]}
    samples = pd.read_parquet(d / schema.SAMPLES)
    long_ids = set(samples.loc[samples["prompt"].isin(long_prompts), "sample_id"])
    assert len(long_ids) == 4
    ref = read_table(d, "refreshes")
    scored = ref[ref["loss"].notna()]
    assert not scored.empty and not (set(scored["sample_id"]) & long_ids)
    assert not (set(ref.loc[ref["selected"], "sample_id"]) & long_ids)


def test_no_file_is_read_that_the_run_does_not_use(tmp_path):
    """A data_dir with only a task file and the eval files the run uses: p = 0 reads no harmful file, and
    no reference or safety file is needed by a method that uses none."""
    import shutil

    from explorer.config import load_config
    from explorer.data.sample import sample_data_dir
    from explorer.train.assemble import build_pools

    d = tmp_path / "mine"
    d.mkdir()
    for f in ("task_train.jsonl", "task_test.jsonl", "eval_harmful_hh.jsonl", "eval_harmful_hexphi.jsonl",
              "eval_over_refusal.jsonl"):
        shutil.copy(sample_data_dir() / f, d / f)
    pools = build_pools(load_config(None, [f"data.dir={d}", "data.harmful_ratio=0", "data.n_train=50"]))
    assert len(pools.pools["task"]) == 50 and pools.pools["reference"] == [] and pools.manifest["n_harmful_in_mix"] == 0
    assert "harmful" not in pools.manifest["data_files"]
    # with its own suites the run reads none of the tiny world's evaluation files
    (d / "eval_harmful_hh.jsonl").unlink()
    p = tmp_path / "c.yaml"
    p.write_text(f"data.dir: {d}\ndata.harmful_ratio: 0\ndata.n_train: 50\neval.suites:\n"
                 f"  - {{name: adv, kind: harmful, file: {FIX / 'advbench.csv'}}}\n")
    pools = build_pools(load_config(p))
    assert [s.name for s in pools.suites] == ["adv"] and pools.manifest["eval_suites"][0]["n"] == 40
