"""`explorer import-dualselect`: the DualSelect authors' selection_log.jsonl -> a run folder.

The authors' train_dualselect.py writes one JSON object per line: `epoch` (from 1), `kind` ("reference"
before each epoch's updates, "task_step_<global_step>" per update with --save-task-selection), and
lists over the *selected* items only — `indices` (into the data file's records), `weights`, `scores`,
`losses`, `cosines` — plus stats (num_scored_refs, num_selected_refs, task_loss, task_ref_cosine,
num_selected_task ...).

What the log does not say is not invented:
- the samples a step dropped are not logged; their batch is rebuilt from the run's seed, batch size and
  warm-up (the authors' batching is one seeded shuffle per epoch) and checked against every logged
  selection. When it fits, dropped samples are recorded with kept = false and no scores; when it does
  not, the batches stay unknown (manifest `batch_membership`), and the dashboard says so;
- task records without a `provenance` field get provenance "unknown", never "benign";
- a refresh is stamped at the step from which it is in force (the next update), and its `n_scored` is
  the pool size the log reports, not the number of selected rows.
No torch here.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from explorer.data.load import DataError, load_records
from explorer.data.sample import json_lines
from explorer.record.writer import RunWriter
from explorer.runs import schema

LIST_KEYS = ("indices", "weights", "scores", "losses", "cosines")
BATCHES_REBUILT, BATCHES_UNKNOWN = schema.BATCHES_REBUILT, schema.BATCHES_UNKNOWN


def read_log(path: Path) -> list[dict]:
    entries = []
    for n, obj in json_lines(path, path.name, "one log object per line", DataError):
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


#: the authors' defaults (train_dualselect.py): --seed 42, --train-batch-size 8, --warmup-steps 10
AUTHORS_SEED, AUTHORS_BATCH_SIZE, AUTHORS_WARMUP_STEPS = 42, 8, 10


def rebuild_batches(n_task: int, n_steps: int, batch_size: int, seed: int, warmup_steps: int) -> list[list[int]]:
    """The task batches of the authors' run, step by step: their code draws every batch from one
    random.Random(seed) — one shuffle of range(n) for the warm-up (when it has steps; its batches are
    reused), then one per epoch, each cut into consecutive batches of `batch_size` (the last one shorter).
    Nothing else draws from that generator, so the seed, batch size and warm-up rebuild each batch."""
    rng = random.Random(seed)
    if warmup_steps > 0:
        rng.shuffle(list(range(n_task)))
    out: list[list[int]] = []
    while len(out) < n_steps:
        order = list(range(n_task))
        rng.shuffle(order)
        out += [order[i:i + batch_size] for i in range(0, n_task, batch_size)]
    return out


def _check_batches(task_entries: list[dict], batches: list[list[int]], per_epoch: int) -> str | None:
    """None when every logged selection lies inside its rebuilt batch (and in its epoch), else why not."""
    for e in task_entries:
        step = e["_step"]
        batch = set(batches[step])
        outside = [i for i in e["indices"] if i not in batch]
        if outside:
            return (f"line {e['_line']}: step {step} selects index {outside[0]}, which is not in the batch rebuilt "
                    "for that step")
        if isinstance(e.get("epoch"), int) and e["epoch"] != step // per_epoch + 1:
            return f"line {e['_line']}: step {step} is logged in epoch {e['epoch']}, the rebuild puts it in epoch " \
                   f"{step // per_epoch + 1}"
    return None


def _task_provenance(task_data) -> list[str]:
    """Each task record's provenance when the file states it (a `provenance` field), else "unknown": the
    authors' files carry none, and an unlabelled sample must not count as benign."""
    as_benign = load_records(task_data, "task", strict=True, provenance="benign")
    as_harmful = load_records(task_data, "task", strict=True, provenance="harmful")
    return [a.provenance if a.provenance == b.provenance else schema.PROVENANCE_UNKNOWN
            for a, b in zip(as_benign, as_harmful)]


def import_dualselect(log_path, task_data, reference_data, runs_dir="runs", run_id: str | None = None,
                      seed: int = AUTHORS_SEED, batch_size: int = AUTHORS_BATCH_SIZE,
                      warmup_steps: int = AUTHORS_WARMUP_STEPS) -> Path:
    """Import the log as a run folder. `seed`, `batch_size` and `warmup_steps` are the authors' run's
    --seed, --train-batch-size and --warmup-steps (their defaults when not given): with them the task
    batches are rebuilt and the samples each step dropped are recorded (kept = False, their scores not
    logged). When a logged selection does not fit the rebuilt batches, the batches stay unknown: only
    the selected samples are recorded and the manifest says so."""
    log_path = Path(log_path)
    if batch_size < 1:
        raise DataError(f"batch_size = {batch_size}; expected the authors' --train-batch-size (>= 1)")
    entries = read_log(log_path)
    task = load_records(task_data, "task", strict=True)
    refs = load_records(reference_data, "reference", strict=True)
    prov = _task_provenance(task_data)
    run_id = run_id or f"imported-dualselect-{log_path.parent.name or 'log'}"

    def item(pool, idx, where):
        if not isinstance(idx, int) or not 0 <= idx < len(pool):
            raise DataError(f"{log_path.name} line {where}: index {idx!r} outside the data file's "
                            f"{len(pool)} records; expected indices into that file")
        return pool[idx].sample_id

    task_entries = [e for e in entries if e["kind"] != "reference"]
    for e in task_entries:
        try:
            e["_step"] = int(e["kind"][len("task_step_"):])
        except ValueError:
            raise DataError(f"{log_path.name} line {e['_line']}: field 'kind' = {e['kind']!r}; expected "
                            "'task_step_<integer step>'") from None
        for i in e["indices"]:
            item(task, i, e["_line"])
    per_epoch = math.ceil(len(task) / batch_size)
    n_steps = max((e["_step"] for e in task_entries), default=-1) + 1
    batches = rebuild_batches(len(task), n_steps, batch_size, seed, warmup_steps)
    why_not = _check_batches(task_entries, batches, per_epoch) if task_entries else "the log has no task steps"
    how = f"seed {seed}, batch size {batch_size}, warm-up steps {warmup_steps}"
    if why_not is None:
        membership = {"source": BATCHES_REBUILT, "seed": seed, "batch_size": batch_size, "warmup_steps": warmup_steps,
                      "detail": f"rebuilt from the authors' batching with {how}; every logged selection lies in "
                                "its rebuilt batch. Dropped samples are recorded with kept = false; the log "
                                "records the scores of selected samples only."}
    else:
        membership = {"source": BATCHES_UNKNOWN, "seed": seed, "batch_size": batch_size, "warmup_steps": warmup_steps,
                      "detail": f"unknown: the log lists selected samples only, and the batches rebuilt with {how} "
                                f"do not fit it ({why_not}); pass the run's --seed, --batch-size and "
                                "--warmup-steps to rebuild them"}
        print(f"import-dualselect: batches not rebuilt ({why_not}); recording the selected samples only")
    n_unknown = sum(p == schema.PROVENANCE_UNKNOWN for p in prov)
    writer = RunWriter.create(runs_dir, run_id, {
        "method": "dualselect", "imported_from": str(log_path), "seed": None, "harmful_ratio": None,
        "model": "(authors' run)", "data_files": {"task": str(task_data), "reference": str(reference_data)},
        "batch_membership": membership,
        "unselected_items": membership["detail"],
        "task_provenance": (schema.PROVENANCE_UNKNOWN if n_unknown == len(prov) else
                            "known" if n_unknown == 0 else f"{n_unknown} of {len(prov)} records unknown"),
        # the import's own settings, in the shape of a run's config (explorer/config.py)
        "config": {"log": str(log_path), "seed": seed, "optim": {"batch_size": batch_size},
                   "method": {"name": "dualselect", "warmup_steps": warmup_steps}}},
        status=schema.STATUS_IMPORTED)
    writer.write_samples([{**r.to_row(), "provenance": p, "in_train": True, "in_mix": True} for r, p in zip(task, prov)]
                         + [{**r.to_row(), "in_train": False, "in_mix": False} for r in refs])

    # a refresh happens before the update of the next logged task step (the authors refresh at the start of
    # an epoch), so it is in force from that step on; without task lines, from the epoch's first step
    next_step: dict[int, int] = {}
    upcoming = None
    for k in range(len(entries) - 1, -1, -1):
        if entries[k]["kind"] == "reference":
            ep = entries[k].get("epoch")
            next_step[k] = upcoming if upcoming is not None else (
                (ep - 1) * per_epoch if isinstance(ep, int) and ep >= 1 else n_steps)
        else:
            upcoming = entries[k]["_step"]

    refresh_id, prev = -1, set()
    steps = []
    for k, e in enumerate(entries):
        vals = {c: e.get(c) or [None] * len(e["indices"]) for c in LIST_KEYS}
        if e["kind"] == "reference":
            refresh_id += 1
            at = next_step[k]
            ids = [item(refs, i, e["_line"]) for i in e["indices"]]
            now = set(ids)
            jac = len(now & prev) / len(now | prev) if prev else float("nan")
            common = {"refresh_id": refresh_id, "step": at, "epoch": e.get("epoch"), "trigger": "epoch",
                      "jaccard_prev": jac, "estimator": "authors", "n_scored": e.get("num_scored_refs")}
            rows = [{**common, "sample_id": sid, "loss": vals["losses"][j], "cosine": vals["cosines"][j],
                     "conflict": -vals["cosines"][j] if vals["cosines"][j] is not None else None,
                     "score": vals["scores"][j], "weight": vals["weights"][j], "rank": j, "selected": True,
                     "change": "stayed" if sid in prev else "entered"}
                    for j, sid in enumerate(ids)]
            # who left: the log has no score for them at this refresh (selected items only), so selected
            # stays unknown (None) and their scores are blank
            rows += [{**common, "sample_id": sid, "selected": None, "change": "left"} for sid in sorted(prev - now)]
            writer.log("refreshes", rows)
            prev = now
        else:
            step = e["_step"]
            ids = [item(task, i, e["_line"]) for i in e["indices"]]
            rows = [{"step": step, "sample_id": sid, "role": "task", "weight": vals["weights"][j], "kept": True,
                     "loss": vals["losses"][j], "compat": vals["cosines"][j], "score": vals["scores"][j]}
                    for j, sid in enumerate(ids)]
            n_batch = None
            if why_not is None:
                batch = batches[step]
                n_batch = len(batch)
                chosen = set(e["indices"])
                rows += [{"step": step, "sample_id": task[i].sample_id, "role": "task", "weight": 0.0, "kept": False,
                          "loss": None, "compat": None, "score": None} for i in batch if i not in chosen]
            writer.log("decisions", rows)
            n_kept = e.get("num_selected_task", len(ids))
            steps.append({"step": step, "epoch": e.get("epoch"), "phase": "train", "loss": e.get("task_loss"),
                          "lr": None, "grad_norm": None, "n_batch": n_batch, "n_kept": n_kept,
                          "kept_frac": n_kept / n_batch if n_batch else None, "time_s": None,
                          "task_score": e.get("task_score"), "cos_task_ref": e.get("task_ref_cosine"),
                          "refresh_id": refresh_id})
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
    p.add_argument("--seed", type=int, default=AUTHORS_SEED, help="the authors' run's --seed (rebuilds its batches)")
    p.add_argument("--batch-size", type=int, default=AUTHORS_BATCH_SIZE, help="its --train-batch-size")
    p.add_argument("--warmup-steps", type=int, default=AUTHORS_WARMUP_STEPS, help="its --warmup-steps")
    p.set_defaults(func=lambda a: print("run folder: " + str(import_dualselect(
        a.log, a.task_data, a.reference_data, a.runs_dir, a.run_id, a.seed, a.batch_size, a.warmup_steps))) or 0)
