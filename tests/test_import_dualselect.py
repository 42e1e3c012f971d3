"""Importing the DualSelect authors' selection_log.jsonl as a run folder."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from _dualselect_log import write_fake_log
from explorer.data.load import DataError
from explorer.importers.dualselect_log import import_dualselect

pytestmark = pytest.mark.unit


def parts(d, t):
    return pd.concat([pd.read_parquet(p) for p in sorted((d / t).glob("part-*.parquet"))], ignore_index=True)


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
