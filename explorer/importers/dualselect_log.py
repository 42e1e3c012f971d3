"""`explorer import-dualselect`: the DualSelect authors' selection_log.jsonl -> a run folder.

The log (docs/methods/dualselect.md) has one JSON object per line: `epoch`, `kind` ("reference" or
"task_step_<global_step>"), and lists over the *selected* items only — `indices` (into the data
file's records), `weights`, `scores`, `losses`, `cosines` — plus stats (selected_ref_mean_loss,
num_scored_refs, task_loss, task_ref_cosine, num_selected_task ...). Items the log does not name were
either not selected or not logged: the import marks them unknown (absent rows, manifest says so),
never "dropped". No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path

from explorer.data.load import DataError, load_records
from explorer.record.writer import RunWriter
from explorer.runs import schema

LIST_KEYS = ("indices", "weights", "scores", "losses", "cosines")


def read_log(path: Path) -> list[dict]:
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path.name} line {n}: invalid JSON ({e.msg}); expected one log object per line") from None
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if not isinstance(kind, str) or not (kind == "reference" or kind.startswith("task_step_")):
                raise DataError(f"{path.name} line {n}: field 'kind' = {kind!r}; expected 'reference' or 'task_step_<step>'")
            if not isinstance(obj.get("indices"), list):
                raise DataError(f"{path.name} line {n}: field 'indices' missing or not a list; expected indices of selected items")
            for k in LIST_KEYS[1:]:
                if k in obj and (not isinstance(obj[k], list) or len(obj[k]) != len(obj["indices"])):
                    raise DataError(f"{path.name} line {n}: field {k!r} must be a list as long as 'indices' "
                                    f"({len(obj['indices'])})")
            obj["_line"] = n
            entries.append(obj)
    if not entries:
        raise DataError(f"{path}: empty log; expected selection_log.jsonl lines")
    return entries


def import_dualselect(log_path, task_data, reference_data, runs_dir="runs", run_id: str | None = None) -> Path:
    log_path = Path(log_path)
    entries = read_log(log_path)
    task = load_records(task_data, "task", strict=True)
    refs = load_records(reference_data, "reference", strict=True)
    run_id = run_id or f"imported-dualselect-{log_path.parent.name or 'log'}"
    writer = RunWriter.create(runs_dir, run_id, {
        "method": "dualselect", "imported_from": str(log_path), "seed": None, "harmful_ratio": None,
        "model": "(authors' run)", "data_files": {"task": str(task_data), "reference": str(reference_data)},
        "unselected_items": "unknown: the authors' log lists selected items only",
        "config": {"log": str(log_path)}}, status=schema.STATUS_IMPORTED)
    writer.write_samples([{**r.to_row(), "in_train": True, "in_mix": True} for r in task]
                         + [{**r.to_row(), "in_train": False, "in_mix": False} for r in refs])

    def item(pool, idx, where):
        if not isinstance(idx, int) or not 0 <= idx < len(pool):
            raise DataError(f"{log_path.name} line {where}: index {idx!r} outside the data file's "
                            f"{len(pool)} records; expected indices into that file")
        return pool[idx].sample_id

    refresh_id, prev, last_step = -1, set(), 0
    steps = []
    for e in entries:
        vals = {k: e.get(k) or [None] * len(e["indices"]) for k in LIST_KEYS}
        if e["kind"] == "reference":
            refresh_id += 1
            ids = [item(refs, i, e["_line"]) for i in e["indices"]]
            now = set(ids)
            jac = len(now & prev) / len(now | prev) if prev else float("nan")
            rows = [{"refresh_id": refresh_id, "step": last_step, "epoch": e.get("epoch"), "trigger": "epoch",
                     "sample_id": sid, "loss": vals["losses"][k], "cosine": vals["cosines"][k],
                     "conflict": -vals["cosines"][k] if vals["cosines"][k] is not None else None,
                     "score": vals["scores"][k], "weight": vals["weights"][k], "rank": k, "selected": True,
                     "change": "stayed" if sid in prev else "entered", "jaccard_prev": jac, "estimator": "authors"}
                    for k, sid in enumerate(ids)]
            rows += [{"refresh_id": refresh_id, "step": last_step, "epoch": e.get("epoch"), "trigger": "epoch",
                      "sample_id": sid, "selected": None, "change": "left", "jaccard_prev": jac,
                      "estimator": "authors"} for sid in sorted(prev - now)]
            writer.log("refreshes", rows)
            prev = now
        else:
            step = int(e["kind"][len("task_step_"):])
            last_step = step
            ids = [item(task, i, e["_line"]) for i in e["indices"]]
            writer.log("decisions", [{"step": step, "sample_id": sid, "role": "task", "weight": vals["weights"][k],
                                      "kept": True, "loss": vals["losses"][k], "compat": vals["cosines"][k],
                                      "score": vals["scores"][k]} for k, sid in enumerate(ids)])
            steps.append({"step": step, "epoch": e.get("epoch"), "phase": "train", "loss": e.get("task_loss"),
                          "lr": None, "grad_norm": None, "n_batch": None, "n_kept": e.get("num_selected_task", len(ids)),
                          "kept_frac": None, "time_s": None, "task_score": e.get("task_score"),
                          "cos_task_ref": e.get("task_ref_cosine"), "refresh_id": refresh_id})
    writer.log("steps", steps)
    writer.finish(final_status=schema.STATUS_IMPORTED, n_refreshes=refresh_id + 1, n_task_steps=len(steps))
    return writer.run_dir


def add_parser(sub) -> None:
    p = sub.add_parser("import-dualselect", help="import the DualSelect authors' selection_log.jsonl as a run")
    p.add_argument("log")
    p.add_argument("--task-data", required=True, help="the task data file the authors' run used")
    p.add_argument("--reference-data", required=True, help="the reference pool file it used")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=lambda a: print(f"run folder: {import_dualselect(a.log, a.task_data, a.reference_data, a.runs_dir, a.run_id)}") or 0)
