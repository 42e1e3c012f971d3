"""Importing the DualSelect authors' selection_log.jsonl as a run folder."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from _dualselect_log import write_fake_log
from explorer.data.load import DataError
from explorer.importers.dualselect_log import import_dualselect
from explorer.runs import reader

pytestmark = pytest.mark.unit


def parts(d, t):
    return reader.table(d, t)


def test_import_writes_a_run_with_selected_items_only(tmp_path):
    log, task, refs, lines = write_fake_log(tmp_path)
    run = import_dualselect(log, task, refs, tmp_path / "runs", "imp")
    m = json.loads((run / "run.json").read_text())
    assert m["status"] == "imported" and m["method"] == "dualselect" and "unknown" in m["unselected_items"]
    r = parts(run, "refreshes")
    ref0 = lines[0]
    sel0 = r[(r.refresh_id == 0) & (r.selected == True)]  # noqa: E712
    assert list(sel0["sample_id"]) == [f"refs-{i:05d}" for i in ref0["indices"]]
    assert list(sel0["score"]) == ref0["scores"] and list(sel0["cosine"]) == ref0["cosines"]
    # the second refresh: who left is recorded with selected unknown (None), not False
    left = r[(r.refresh_id == 1) & (r.change == "left")]
    assert left["selected"].isna().all()
    assert len(left) == len(set(ref0["indices"]) - set(lines[6]["indices"]))
    dec = parts(run, "decisions")
    step3 = lines[4]
    d3 = dec[dec.step == 3]
    assert list(d3["sample_id"]) == [f"task-{i:05d}" for i in step3["indices"]] and d3["kept"].all()
    assert len(dec) == 10 * 4  # only logged (selected) items: unselected ones are absent, not dropped
    steps = parts(run, "steps")
    assert list(steps["step"]) == list(range(10))


def test_cli_import(tmp_path):
    log, task, refs, _ = write_fake_log(tmp_path)
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "import-dualselect", str(log), "--task-data", str(task),
                          "--reference-data", str(refs), "--runs-dir", str(tmp_path / "runs"), "--run-id", "x"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs" / "x" / "run.json").exists()


@pytest.mark.parametrize("line,needle", [('{"kind": "other", "indices": []}', "expected 'reference' or 'task_step_<step>'"),
                                         ('{"kind": "reference", "indices": [0], "scores": [1, 2]}', "as long as 'indices'"),
                                         ('{"kind": "task_step_0", "indices": [999]}', "index 999 outside"),
                                         ('{"kind": ', "invalid JSON")])
def test_bad_log_lines(tmp_path, line, needle):
    log, task, refs, _ = write_fake_log(tmp_path)
    log.write_text(log.read_text() + line + "\n")
    with pytest.raises(DataError) as e:
        import_dualselect(log, task, refs, tmp_path / "runs", "bad")
    assert "selection_log.jsonl line 13" in str(e.value) and needle in str(e.value)


# -- a log in the authors' format, with the samples each batch dropped ------------------------------
from _dualselect_log import write_authors_log  # noqa: E402


@pytest.fixture
def authors(tmp_path):
    log, task, refs, lines, batches = write_authors_log(tmp_path, n_task=100, batch_size=32, top_k=16, n_ref=600)
    run = import_dualselect(log, task, refs, tmp_path / "runs", "authors", seed=42, batch_size=32, warmup_steps=10)
    return run, lines, batches


def test_authors_log_dropped_samples_are_recorded_from_the_rebuilt_batches(authors):
    run, lines, batches = authors
    m = reader.manifest(run)
    assert m["batch_membership"]["source"] == "rebuilt"
    dec = reader.decisions(run)
    task_lines = [x for x in lines if x["kind"].startswith("task_step_")]
    assert sorted(dec["step"].unique()) == list(range(len(task_lines)))
    for x in task_lines:
        step = int(x["kind"].rsplit("_", 1)[1])
        d = dec[dec.step == step]
        assert set(d["sample_id"]) == {f"task-{i:05d}" for i in batches[step]}  # the whole batch, no more
        assert set(d.loc[d.kept, "sample_id"]) == {f"task-{i:05d}" for i in x["indices"]}
        assert (d.loc[~d.kept, "weight"] == 0).all() and d.loc[~d.kept, "score"].isna().all()
    first = dec[dec.step == 0]
    assert (int(first["kept"].sum()), len(first)) == (16, 32)  # not "16 of 16 kept"
    steps = reader.steps(run)
    assert steps.loc[steps.step == 0, "n_batch"].item() == 32 and steps.loc[steps.step == 0, "kept_frac"].item() == 0.5
    # keep rate per sample: times selected / times in a batch, counted from the log and the batches directly
    stats = reader.sample_stats(run).set_index("sample_id")
    for i in (0, 1, 2, 50, 99):
        seen = sum(i in b for b in batches[:len(task_lines)])
        kept = sum(i in x["indices"] for x in task_lines)
        sid = f"task-{i:05d}"
        assert (stats.loc[sid, "n_seen"], stats.loc[sid, "n_kept"]) == (seen, kept)
        assert stats.loc[sid, "keep_rate"] == pytest.approx(kept / seen)
    assert stats["keep_rate"].lt(1).any()


def test_authors_log_refreshes_are_in_force_from_the_next_update(authors):
    run, lines, batches = authors
    per_epoch = len(batches) // 2
    summary = reader.refresh_summary(run)
    assert list(summary["step"]) == [0, per_epoch]  # before epoch 1's first update, before epoch 2's
    assert list(summary["n_scored"]) == [600, 600]  # the pool size the log reports, not the 32 selected
    assert list(summary["n_selected"]) == [32, 32]
    second = {f"refs-{i:05d}" for i in lines[per_epoch + 1]["indices"]}
    assert lines[per_epoch + 1]["kind"] == "reference"
    before = set(reader.references_in_force(run, per_epoch - 1)["sample_id"])
    after = set(reader.references_in_force(run, per_epoch)["sample_id"])
    assert after == second and before == {f"refs-{i:05d}" for i in lines[0]["indices"]} and before != after


def test_authors_log_without_provenance_leaves_drop_recall_unknown(authors):
    run, _, _ = authors
    smp = reader.samples(run)
    assert (smp.loc[smp.pool == "task", "provenance"] == "unknown").all()
    pr = reader.drop_stats(run)
    assert pr["n_dropped"] > 0 and math.isnan(pr["recall"]) and math.isnan(pr["precision"])
    row = reader.compare([run]).iloc[0]
    assert math.isnan(row["drop_recall"]) and row["drop_note"] == "provenance unknown"


def test_authors_log_with_provenance_gives_drop_recall_from_the_rebuilt_batches(tmp_path):
    log, task, refs, lines, batches = write_authors_log(tmp_path, n_task=100, batch_size=32, top_k=16, harmful_every=5)
    run = import_dualselect(log, task, refs, tmp_path / "runs", "labelled", seed=42, batch_size=32, warmup_steps=10)
    task_lines = [x for x in lines if x["kind"].startswith("task_step_")]
    harmful_seen = harmful_dropped = dropped = 0
    for x in task_lines:
        batch = batches[int(x["kind"].rsplit("_", 1)[1])]
        for i in batch:
            out = i not in x["indices"]
            dropped += out
            harmful_seen += i % 5 == 0
            harmful_dropped += out and i % 5 == 0
    pr = reader.drop_stats(run)
    assert pr["n_dropped"] == dropped
    assert pr["recall"] == pytest.approx(100 * harmful_dropped / harmful_seen)
    assert pr["precision"] == pytest.approx(100 * harmful_dropped / dropped)


def test_authors_log_with_the_wrong_seed_keeps_batches_unknown(tmp_path):
    log, task, refs, lines, _ = write_authors_log(tmp_path, n_task=100, batch_size=32, top_k=16)
    run = import_dualselect(log, task, refs, tmp_path / "runs", "wrong", seed=7, batch_size=32, warmup_steps=10)
    m = reader.manifest(run)
    assert m["batch_membership"]["source"] == "unknown" and "--seed" in m["batch_membership"]["detail"]
    dec = reader.decisions(run)
    assert dec["kept"].all() and len(dec) == sum(len(x["indices"]) for x in lines if x["kind"] != "reference")
    pr = reader.drop_stats(run)
    assert math.isnan(pr["recall"]) and pr["note"] == "dropped samples not logged"


def test_cli_import_takes_the_authors_batching(tmp_path):
    log, task, refs, _, _ = write_authors_log(tmp_path, n_task=60, batch_size=16, top_k=4, n_ref=50, k_ref=8,
                                              warmup_steps=0, seed=3)
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "import-dualselect", str(log), "--task-data", str(task),
                          "--reference-data", str(refs), "--runs-dir", str(tmp_path / "runs"), "--run-id", "y",
                          "--seed", "3", "--batch-size", "16", "--warmup-steps", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert reader.manifest(tmp_path / "runs" / "y")["batch_membership"]["source"] == "rebuilt"
