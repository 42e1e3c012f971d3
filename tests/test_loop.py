"""The loop on the tiny model: parameters change, records match the schema, failures stay readable."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from explorer.runs import schema

pytestmark = pytest.mark.integration


def read_table(run_dir: Path, table: str) -> pd.DataFrame:
    parts = sorted((run_dir / table).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()


def kill_when(cmd: list[str], ready, every: float, timeout: float = 120) -> None:
    """Start `cmd`, poll `ready()` every `every` seconds, then SIGKILL the process (no cleanup runs)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(every)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sft_run_records_everything_and_changes_parameters(short_config, tiny_paths, monkeypatch):
    from transformers import AutoModelForCausalLM

    from explorer.train.recipe import Recipe, run

    captured = {}
    real = Recipe.train

    def spy(self):
        captured["model"] = self.model
        return real(self)

    monkeypatch.setattr(Recipe, "train", spy)
    run_dir = run(short_config("method=sft"))
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    assert m["status"] == "complete" and m["method"] == "sft" and m["seed"] == 0
    assert m["config"]["data"]["n_train"] == 64 and "torch" in m["versions"]
    for table, cols in schema.PART_TABLES.items():
        if table == "refreshes":
            continue
        df = read_table(run_dir, table)
        assert not df.empty, table
        missing = set(cols) - set(df.columns)
        assert not missing, f"{table} lacks {missing}"
    steps = read_table(run_dir, "steps")
    assert list(steps["step"]) == list(range(m["progress"]["total_steps"]))
    dec = read_table(run_dir, "decisions")
    assert len(dec) == 64 and dec["kept"].all() and dec["sample_id"].is_unique
    samples = pd.read_parquet(run_dir / schema.SAMPLES)
    assert set(dec["sample_id"]) <= set(samples["sample_id"])
    assert samples.loc[samples["in_mix"], "provenance"].eq("harmful").sum() == round(0.1 * 64)
    metrics = read_table(run_dir, "metrics")
    assert {0, m["progress"]["total_steps"]} <= set(metrics["step"])
    evals = read_table(run_dir, "evals")
    assert set(evals["suite"]) >= {schema.SUITE_HH, schema.SUITE_HEX, schema.SUITE_OVER}
    # parameters changed relative to the aligned checkpoint
    aligned = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"])
    diffs = [(p - q).abs().max().item() for (n, p), (_, q) in
             zip(captured["model"].named_parameters(), aligned.named_parameters())]
    assert max(diffs) > 1e-4 and sum(d > 0 for d in diffs) >= len(diffs) - 1


@pytest.mark.contract
@pytest.mark.parametrize("method", ["sft", "random", "safeinstr"])
def test_baseline_contract(short_config, method):
    from explorer.train.recipe import run

    run_dir = run(short_config(f"method={method}"))
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    assert m["status"] == "complete"
    dec = read_table(run_dir, "decisions")
    samples = pd.read_parquet(run_dir / schema.SAMPLES)
    if method == "random":  # keeps half of every batch of 16
        per_step = dec.groupby("step")["kept"].sum()
        assert (per_step == 8).all()
    if method == "safeinstr":
        added = samples[samples["in_train"] & (samples["pool"] == "safety")]
        assert len(added) == 2  # ceil(0.03 * 64)
        assert set(added["sample_id"]) <= set(dec["sample_id"])


def test_same_seed_same_decisions_and_metrics(short_config):
    from explorer.train.recipe import run

    a = run(short_config("method=random", "run_name=a"))
    b = run(short_config("method=random", "run_name=b"))
    da, db = read_table(a, "decisions"), read_table(b, "decisions")
    pd.testing.assert_frame_equal(da.drop(columns=["run_id"]), db.drop(columns=["run_id"]))
    ma, mb = read_table(a, "metrics"), read_table(b, "metrics")
    pd.testing.assert_frame_equal(ma.drop(columns=["run_id"]), mb.drop(columns=["run_id"]))


def test_a_crash_inside_a_method_marks_the_run_failed_and_keeps_flushed_parts(short_config, monkeypatch):
    from explorer.methods import sft
    from explorer.train.recipe import run

    calls = {"n": 0}
    real = sft.Sft.decide

    def exploding(self, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom at the third batch")
        return real(self, batch, ctx)

    monkeypatch.setattr(sft.Sft, "decide", exploding)
    with pytest.raises(RuntimeError, match="boom"):
        run(short_config("method=sft"))
    run_dir = next((Path(short_config().runs_dir)).iterdir())
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    assert m["status"] == "failed" and "boom" in m["error"]
    steps = read_table(run_dir, "steps")
    assert list(steps["step"]) == [0, 1]


def test_sigkill_leaves_flushed_parts_readable_and_status_says_so(tmp_path, tiny_paths):
    from explorer.runs.status import effective_status

    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "explorer.cli", "run", f"runs_dir={runs}", "data.n_train=256", "optim.epochs=4",
           "optim.batch_size=8", "record.flush_every=1", "progress=false", "eval.final_n=8", "eval.max_new_tokens=8"]
    kill_when(cmd, lambda: len(list(runs.glob("*/steps/part-*.parquet"))) >= 3, every=0.2)
    run_dir = next(runs.iterdir())
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    assert m["status"] == "running"  # nobody could write anything else ...
    assert effective_status(m) == "failed"  # ... but the reader can tell the process is gone
    for p in sorted(run_dir.glob("*/part-*.parquet")):
        pd.read_parquet(p)  # every flushed part is readable
    steps = read_table(run_dir, "steps")
    assert len(steps) >= 3 and steps["step"].is_monotonic_increasing


@pytest.mark.parametrize("method", ["random"])  # random: the generator state must survive too
def test_resume_after_sigkill_gives_the_same_records_as_an_uninterrupted_run(tmp_path, tiny_paths, method):
    """Kill a run at a random step, resume it from its checkpoint: same decisions, steps and metrics."""
    import random as _random

    from explorer.config import load_config
    from explorer.train.recipe import run

    common = ["data.n_train=96", "optim.epochs=2", "optim.batch_size=8", "record.flush_every=2", "record.checkpoint_every=4",
              "eval.final_n=8", "eval.n=4", "eval.every=8", "eval.max_new_tokens=8", "progress=false",
              f"method={method}"]
    ref_dir = run(load_config(None, [f"runs_dir={tmp_path / 'ref'}", *common]))

    runs = tmp_path / "killed"
    kill_after = _random.Random().randint(2, 4)  # checkpoints written before the kill

    def checkpointed():
        ms = list(runs.glob("*/run.json"))
        return bool(ms) and json.loads(ms[0].read_text()).get("checkpoint_step", 0) >= 4 * kill_after

    kill_when([sys.executable, "-m", "explorer.cli", "run", f"runs_dir={runs}", *common], checkpointed, every=0.05)
    run_dir = next(runs.iterdir())
    assert json.loads((run_dir / schema.MANIFEST).read_text())["status"] == "running"
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "run", "--resume", str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    assert m["status"] == "complete" and m["resumed_from_step"] >= 4
    for table, key in (("decisions", ["step", "sample_id"]), ("steps", ["step"]), ("metrics", ["step", "suite", "metric"])):
        a = read_table(ref_dir, table).drop(columns=["run_id"]).sort_values(key).reset_index(drop=True)
        b = read_table(run_dir, table).drop(columns=["run_id"]).sort_values(key).reset_index(drop=True)
        drop = [c for c in a.columns if c.startswith("time")]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=False, rtol=1e-5)


def test_prompts_longer_than_the_context_are_truncated_skipped_or_refused(tmp_path, short_config):
    """A record that does not fit max_length: truncated (default), skipped, or an error (overlong=)."""
    from explorer.data.tokenize import ContextLengthError
    from explorer.train.recipe import run

    long = tmp_path / "long.jsonl"
    rows = [{"id": f"ok{i}", "prompt": "what is 2 plus 3 ?", "response": "5"} for i in range(70)]
    rows.append({"id": "too-long", "prompt": " ".join(["review"] * 200), "response": "positive"})
    long.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = run(short_config(f"data.task={long}", "data.n_train=71"))
    m = json.loads((d / "run.json").read_text())
    assert m["status"] == "complete" and m["n_skipped_too_long"] == 0
    assert m["overlong"]["policy"] == "truncate" and m["overlong"]["task"] == {"n": 71, "over": 1, "truncated": 1,
                                                                                "skipped": 0}
    assert "too-long" in set(read_table(d, "decisions")["sample_id"])
    d = run(short_config(f"data.task={long}", "data.n_train=71", "data.overlong=skip"))
    m = json.loads((d / "run.json").read_text())
    assert m["status"] == "complete" and m["n_skipped_too_long"] == 1 and m["overlong"]["task"]["skipped"] == 1
    with pytest.raises(ContextLengthError) as e:
        run(short_config(f"data.task={long}", "data.n_train=71", "data.overlong=error"))
    assert "too-long" in str(e.value) and "exceed the context of 64 tokens" in str(e.value)
