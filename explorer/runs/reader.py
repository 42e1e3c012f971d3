"""Read-only access to run folders: DuckDB over the Parquet globs, returning pandas frames.

Used by the app and the notebooks. Never imports torch. Manifests are read as JSON and tables as
Parquet — nothing else (no pickle, nothing executed). A corrupt or truncated file raises RunReadError
naming the run and the file, so that a caller can show it for that run and keep going.

Aggregates over the decision table (which reaches 10^7 rows: 2,000 steps x 5,000 samples) are
computed inside DuckDB; only their small results become pandas frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pandas as pd

from explorer.runs import schema
from explorer.runs.compare import (DROP_BATCHES_UNKNOWN, DROP_PROVENANCE_UNKNOWN, drop_precision_recall,
                                   metrics_wide, provenance_known, win_rates)
from explorer.runs.status import effective_status, status_note


#: decision columns that are ids or bookkeeping, not scores
_DECISION_IDS = ("run_id", "step", "sample_id", "role", "kept", "epoch", "phase", "estimator")


class RunReadError(RuntimeError):
    """A run folder (or one file in it) that cannot be read. `run` and `path` name the culprit."""

    def __init__(self, run: str, path: str | Path, problem: str):
        self.run, self.path, self.problem = run, str(path), problem
        super().__init__(f"run {run}: {path}: {problem}")


def _run_name(run_dir) -> str:
    return Path(run_dir).name


def _con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(database=":memory:")


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


# -- manifest ----------------------------------------------------------------------------------------
def manifest(run_dir: str | Path) -> dict:
    """run.json as a dict (JSON only)."""
    p = Path(run_dir) / schema.MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunReadError(_run_name(run_dir), p, f"no {schema.MANIFEST}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunReadError(_run_name(run_dir), p, f"unreadable manifest ({e}); expected a JSON object") from None
    if not isinstance(m, dict) or "run_id" not in m:
        raise RunReadError(_run_name(run_dir), p, "not a run manifest (expected a JSON object with run_id)")
    return m


# -- tables ------------------------------------------------------------------------------------------
def source(run_dir: str | Path, name: str) -> str | None:
    """The Parquet glob (partitioned table) or file (static table) for `name`, or None when absent."""
    d = Path(run_dir)
    if (d / name).is_dir() and any((d / name).glob("part-*.parquet")):
        return str(d / name / "part-*.parquet")
    if (d / f"{name}.parquet").exists():
        return str(d / f"{name}.parquet")
    return None


def _bad_file(run_dir, names: list[str], err: duckdb.Error) -> RunReadError:
    """Find which file of tables `names` is damaged (Parquet footers only) and say so."""
    import pyarrow.parquet as pq

    d = Path(run_dir)
    files = []
    for name in names:
        files += sorted((d / name).glob("part-*.parquet")) if (d / name).is_dir() else [d / f"{name}.parquet"]
    for f in files:
        if not f.exists():
            continue
        try:
            pq.read_metadata(f)
        except Exception as e:  # noqa: BLE001 - any failure to read a footer means this file is bad
            return RunReadError(_run_name(run_dir), f, f"unreadable Parquet (truncated or corrupt: {e})")
    first = str(err).splitlines()[0][:300]
    return RunReadError(_run_name(run_dir), d / names[0], f"unreadable Parquet ({first})")


def _view(con, run_dir, name: str, alias: str) -> bool:
    src = source(run_dir, name)
    if src is None:
        return False
    con.execute(f"CREATE VIEW {alias} AS SELECT * FROM read_parquet({_sql_str(src)}, union_by_name=true)")
    return True


def query(run_dir: str | Path, name: str, sql: str = "SELECT * FROM t", params: list | None = None) -> pd.DataFrame:
    """Run `sql` over table `name` of a run (exposed as view `t`; the samples table is view `s`
    when the query joins it). Empty frame when the table is absent."""
    if source(run_dir, name) is None:
        return pd.DataFrame()
    names = [name]
    con = _con()
    try:
        _view(con, run_dir, name, "t")
        if name != "samples" and re.search(r"\bJOIN s\b", sql) and _view(con, run_dir, "samples", "s"):
            names.append("samples")
        return con.execute(sql, params or []).df()
    except duckdb.Error as e:
        if isinstance(e, (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException)):
            raise  # a bug in the query, not in the run folder
        raise _bad_file(run_dir, names, e) from None
    finally:
        con.close()


def columns(run_dir, name: str) -> list[str]:
    """Column names of a table (union over its parts); [] when absent."""
    return list(query(run_dir, name, "SELECT * FROM t LIMIT 0").columns)


def n_rows(run_dir, name: str) -> int:
    """Rows of a table from the Parquet footers alone (no data read); 0 when absent."""
    import pyarrow.parquet as pq

    d = Path(run_dir)
    files = sorted((d / name).glob("part-*.parquet")) if (d / name).is_dir() else [d / f"{name}.parquet"]
    total = 0
    for f in files:
        if not f.exists():
            continue
        try:
            total += pq.read_metadata(f).num_rows
        except Exception as e:  # noqa: BLE001 - any unreadable footer
            raise RunReadError(_run_name(d), f, f"unreadable Parquet (truncated or corrupt: {e})") from None
    return total


def table(run_dir, name: str) -> pd.DataFrame:
    """Any table by name: a folder of parts or a single <name>.parquet (method tables)."""
    return query(run_dir, name)


def has_table(run_dir, name: str) -> bool:
    return source(run_dir, name) is not None


def samples(run_dir) -> pd.DataFrame:
    return query(run_dir, "samples")


def steps(run_dir) -> pd.DataFrame:
    return query(run_dir, "steps", "SELECT * FROM t ORDER BY step")


def metrics(run_dir) -> pd.DataFrame:
    return query(run_dir, "metrics", "SELECT * FROM t ORDER BY step, suite, metric")


def evals(run_dir, step: int | None = None, final: bool = False) -> pd.DataFrame:
    """Evaluation rows; `step` picks one evaluation, `final=True` the last one."""
    if final:
        return query(run_dir, "evals", "SELECT * FROM t WHERE step = (SELECT max(step) FROM t) ORDER BY suite, sample_id")
    if step is None:
        return query(run_dir, "evals", "SELECT * FROM t ORDER BY step, suite, sample_id")
    return query(run_dir, "evals", "SELECT * FROM t WHERE step = ? ORDER BY suite, sample_id", [int(step)])


def refreshes(run_dir, refresh_id: int | None = None) -> pd.DataFrame:
    if refresh_id is None:
        return query(run_dir, "refreshes", "SELECT * FROM t ORDER BY refresh_id, rank NULLS LAST, sample_id")
    return query(run_dir, "refreshes", "SELECT * FROM t WHERE refresh_id = ? ORDER BY rank NULLS LAST, sample_id",
                 [int(refresh_id)])


def decisions(run_dir, step: int | None = None, role: str | None = None) -> pd.DataFrame:
    """Decision rows, optionally of one step and/or one role (filtered inside DuckDB)."""
    where, params = [], []
    if step is not None:
        where.append("step = ?")
        params.append(int(step))
    if role is not None:
        where.append("role = ?")
        params.append(role)
    w = f"WHERE {' AND '.join(where)}" if where else ""
    return query(run_dir, "decisions", f"SELECT * FROM t {w} ORDER BY step, sample_id", params)


def score_columns(run_dir) -> list[str]:
    """The numeric score columns the run's method wrote into its decisions (loss, compat, score ...)."""
    df = query(run_dir, "decisions", "SELECT * FROM t LIMIT 0")
    return [c for c in df.columns if c not in _DECISION_IDS and pd.api.types.is_numeric_dtype(df[c])]


# -- aggregates the pages need (computed in DuckDB) ---------------------------------------------------
def decision_steps(run_dir) -> list[int]:
    """The steps at which task decisions were recorded, ascending."""
    df = query(run_dir, "decisions", "SELECT DISTINCT step FROM t WHERE role = 'task' ORDER BY step")
    return [int(s) for s in df["step"]] if not df.empty else []


def batch_at(run_dir, step: int) -> pd.DataFrame:
    """One step's task decisions joined with the samples' text and provenance (joined in DuckDB)."""
    if source(run_dir, "decisions") is None:
        return pd.DataFrame()
    scols, dcols = set(columns(run_dir, "samples")), set(columns(run_dir, "decisions"))
    extra = [c for c in ("prompt", "response", "provenance", "family", "category") if c in scols and c not in dcols]
    if "sample_id" in scols and extra:
        sel = ", ".join(f"s.{c}" for c in extra)
        sql = f"""SELECT t.*, {sel} FROM t LEFT JOIN s USING (sample_id)
                  WHERE t.step = ? AND t.role = 'task' ORDER BY t.sample_id"""
    else:
        sql = "SELECT * FROM t WHERE step = ? AND role = 'task' ORDER BY sample_id"
    return query(run_dir, "decisions", sql, [int(step)])


def sample_stats(run_dir) -> pd.DataFrame:
    """Per task sample over the whole run (the data map, in the manner of dataset cartography):
    times seen, times kept, keep rate, mean/std of its selection score (`score` when the method
    writes one, else `loss`), mean loss, mean weight; joined with provenance and family."""
    cols = columns(run_dir, "decisions")
    if not cols:
        return pd.DataFrame()
    score = "score" if "score" in cols else "loss"
    has_loss = "loss" in cols
    scols = set(columns(run_dir, "samples"))
    extra = [c for c in ("provenance", "family") if c in scols and "sample_id" in scols]
    join = f", {', '.join('s.' + c for c in extra)} FROM agg LEFT JOIN s USING (sample_id)" if extra else " FROM agg"
    return query(run_dir, "decisions", f"""
        WITH agg AS (
          SELECT sample_id, count(*) AS n_seen, count(*) FILTER (WHERE kept) AS n_kept,
                 avg(CAST(kept AS DOUBLE)) AS keep_rate,
                 avg({score}) AS mean_score, stddev_samp({score}) AS std_score,
                 {'avg(loss)' if has_loss else 'NULL'} AS mean_loss, avg(weight) AS mean_weight
          FROM t WHERE role = 'task' GROUP BY sample_id)
        SELECT agg.*{join} ORDER BY sample_id""")


def data_map(run_dir) -> pd.DataFrame:
    """Alias of sample_stats (the dashboard's and notebooks' name for it)."""
    return sample_stats(run_dir)


def sample_history(run_dir, sample_id: str) -> pd.DataFrame:
    """Every decision about one sample, by step."""
    return query(run_dir, "decisions", "SELECT * FROM t WHERE sample_id = ? ORDER BY step", [sample_id])


def references_in_force(run_dir, step: int) -> pd.DataFrame:
    """The selected references of the last refresh at or before `step`, with their text."""
    if source(run_dir, "refreshes") is None:
        return pd.DataFrame()
    scols = set(columns(run_dir, "samples"))
    text = ", s.prompt, s.response FROM t LEFT JOIN s USING (sample_id)" if {"prompt", "response"} <= scols else " FROM t"
    return query(run_dir, "refreshes", f"""
        SELECT t.*{text}
        WHERE t.selected AND t.refresh_id = (SELECT max(refresh_id) FROM t WHERE step <= ?)
        ORDER BY t.conflict DESC NULLS LAST, t.sample_id""", [int(step)])


def sample_reference_conflicts(run_dir, step: int, sample_id: str, top: int = 5) -> pd.DataFrame:
    """The references a task sample's gradient conflicts with most at a step (most negative cosine),
    from the optional `decision_refs` table; empty when the run did not record it."""
    if source(run_dir, schema.DECISION_REFS) is None:
        return pd.DataFrame()
    return query(run_dir, schema.DECISION_REFS, """
        SELECT reference_id, cosine, -cosine AS conflict FROM t WHERE step = ? AND sample_id = ?
        ORDER BY cosine ASC LIMIT ?""", [int(step), sample_id, int(top)])


def refresh_summary(run_dir) -> pd.DataFrame:
    """One row per refresh: step, trigger, Jaccard with the previous one, selected/entered/left counts and
    n_scored — the references the refresh scored: its `n_scored` column when the run records one (an
    import whose log lists the selected references only), else its rows other than those that left."""
    n_scored = ("coalesce(max(n_scored), count(*) FILTER (WHERE change IS DISTINCT FROM 'left'))"
                if "n_scored" in columns(run_dir, "refreshes") else "count(*)")
    return query(run_dir, "refreshes", f"""
        SELECT refresh_id, min(step) AS step, any_value(trigger) AS trigger, any_value(jaccard_prev) AS jaccard_prev,
               count(*) FILTER (WHERE selected) AS n_selected,
               count(*) FILTER (WHERE change = 'entered') AS n_entered,
               count(*) FILTER (WHERE change = 'left') AS n_left, CAST({n_scored} AS BIGINT) AS n_scored
        FROM t GROUP BY refresh_id ORDER BY refresh_id""")


def batch_membership(m: dict) -> str | None:
    """An imported run's manifest["batch_membership"]["source"] ("rebuilt" | "unknown"); None for runs
    trained here, which record every sample of every batch."""
    bm = m.get("batch_membership")
    return bm.get("source") if isinstance(bm, dict) else None


def drop_stats(run_dir, stats: pd.DataFrame | None = None) -> dict:
    """Precision/recall of dropped task decisions against the harmful label (analysis only).

    Same definition as compare.drop_precision_recall, computed from the per-sample aggregate
    (`stats`, i.e. sample_stats(run), passed in when the caller has it cached) instead of the rows;
    pool selectors (no drops in the decisions, e.g. SEAL's top-p cut) fall back to in_mix/in_train.
    Blank (NaN, never 0) with a `note` when nothing was dropped, when a sample's provenance is unknown,
    or when the run does not know what was dropped (an import whose batches could not be rebuilt)."""
    unknown = {"precision": float("nan"), "recall": float("nan"), "n_dropped": 0}
    if batch_membership(manifest(run_dir)) == schema.BATCHES_UNKNOWN:
        return {**unknown, "note": DROP_BATCHES_UNKNOWN}
    stats = sample_stats(run_dir) if stats is None else stats
    if not stats.empty and "provenance" in stats:
        dropped = stats["n_seen"] - stats["n_kept"]
        n_drop = int(dropped.sum())
        if n_drop:
            if not provenance_known(stats["provenance"]):
                return {**unknown, "n_dropped": n_drop, "note": DROP_PROVENANCE_UNKNOWN}
            harmful = stats["provenance"].eq(schema.PROVENANCE_HARMFUL)
            h = int(stats.loc[harmful, "n_seen"].sum())
            hd = int(dropped[harmful].sum())
            return {"precision": 100.0 * hd / n_drop, "recall": 100.0 * hd / h if h else float("nan"),
                    "n_dropped": n_drop, "note": ""}
    smp = samples(run_dir)
    if source(run_dir, "seal_cut") is not None and not smp.empty:
        # SEAL's top-p cut decides which samples of the mix are trained on
        cut = query(run_dir, "seal_cut", "SELECT sample_id, kept FROM t WHERE step = (SELECT max(step) FROM t)")
        smp = smp.drop(columns=[c for c in ("in_mix", "in_train") if c in smp]).merge(
            cut.rename(columns={"kept": "in_train"}).assign(in_mix=True), on="sample_id", how="inner")
    return drop_precision_recall(pd.DataFrame(), smp)


# -- across runs -------------------------------------------------------------------------------------
_KIND_OF_METRIC = {schema.M_HARMFUL: "harmful", schema.M_OVER: "over_refusal", schema.M_ACC: "task"}


def suite_kinds(m: dict, mw: dict | None = None) -> dict[str, str]:
    """{suite name: kind} of a run, in the run's own order: the manifest's `eval_suites` (name, kind) when
    it records them, then any other suite its metrics name, its kind read from its metric (harmful_score:
    harmful, over_refusal: over_refusal, accuracy: task). Older runs and imports have only the metrics."""
    out: dict[str, str] = {}
    for s in m.get("eval_suites") or []:
        if isinstance(s, dict) and isinstance(s.get("name"), str) and s.get("kind") in ("harmful", "over_refusal", "task"):
            out[s["name"]] = s["kind"]
    for k in mw or {}:
        suite, _, metric = k.rpartition("/")
        if suite and suite not in out and metric in _KIND_OF_METRIC:
            out[suite] = _KIND_OF_METRIC[metric]
    return out


def suite_labels(names) -> dict[str, str]:
    """{suite name: its short label in column headers}: the name itself, less a "harmful_" prefix (the
    header already says HS or win: the tiny world's harmful_hh shows as "HS hh", a suite named advbench
    as "HS advbench"); the prefix stays where dropping it would give two suites one label."""
    names = list(names)
    out = {}
    for n in names:
        short = n.removeprefix("harmful_")
        out[n] = short if short and (short == n or short not in names) else n
    return out


def _headline(m: dict, run_dir) -> dict:
    """Headline metrics: the manifest's `summary` ({suite/metric: value}) when the run finished,
    else the last evaluation in the metrics table (a running run). `hs_by_suite` and `acc_by_family`
    are keyed by the run's own suite names (eval_suites), never by the tiny world's."""
    mw = m.get("summary") if isinstance(m.get("summary"), dict) and m.get("summary") else None
    if mw is None:
        mw = metrics_wide(metrics(run_dir))
    kinds = suite_kinds(m, mw)
    harmful_suites = [s for s, k in kinds.items() if k == "harmful" and f"{s}/{schema.M_HARMFUL}" in mw]

    def mean_of(metric, suites=None):  # over every suite of that kind, whatever its name (eval_suites)
        vals = [float(v) for k, v in mw.items() if k.endswith("/" + metric) and v is not None
                and (suites is None or k.rsplit("/", 1)[0] in suites)]
        return sum(vals) / len(vals) if vals else None

    fams = {k.split("/")[0].removeprefix(schema.TASK_SUITE_PREFIX): float(v) for k, v in mw.items()
            if k.endswith("/" + schema.M_ACC) and v is not None}
    hs = {s: (None if mw.get(f"{s}/{schema.M_HARMFUL}") is None else float(mw[f"{s}/{schema.M_HARMFUL}"]))
          for s in harmful_suites}
    return {"hs_by_suite": hs,
            "HS": mean_of(schema.M_HARMFUL), "over-refusal": mean_of(schema.M_OVER),
            "task acc": mean_of(schema.M_ACC), "acc_by_family": fams,
            # collapsed answers on the harmful suites (neither in HS nor refused); None for older runs
            "degenerate": mean_of(schema.M_DEGENERATE, set(harmful_suites))}


def check_files(run_dir) -> None:
    """Cheap integrity check of every Parquet file of a run: both 'PAR1' magics present (a truncated
    or half-copied part loses its footer). Raises RunReadError naming the first bad file. Damage
    inside a file is caught later, when a query reads it."""
    d = Path(run_dir)
    for f in sorted(d.glob("*.parquet")) + sorted(d.glob("*/part-*.parquet")):
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(4)
                fh.seek(max(size - 4, 0))
                tail = fh.read(4)
        except OSError as e:
            raise RunReadError(_run_name(d), f, f"unreadable file ({e})") from None
        if size < 12 or head != b"PAR1" or tail != b"PAR1":
            raise RunReadError(_run_name(d), f, f"unreadable Parquet (truncated or not Parquet: {size} bytes, "
                                                 "no PAR1 footer)")


def run_row(run_dir, check: bool = True) -> dict:
    """One row of the runs table; raises RunReadError for an unreadable run (manifest, or with
    `check` any Parquet file without its footer)."""
    d = Path(run_dir)
    m = manifest(d)
    if check:
        check_files(d)
    progress = m.get("progress") if isinstance(m.get("progress"), dict) else {}
    data = m.get("data") or (m.get("data_files") or {}).get("task")
    return {"run_id": m["run_id"], "path": str(d), "method": m.get("method"), "model": m.get("model"),
            "model_sha256": (m.get("model_fingerprint") or {}).get("weights_sha256"), "data": data,
            "harmful_ratio": m.get("harmful_ratio"), "seed": m.get("seed"),
            "status": effective_status(m), "note": status_note(m), "created_at": m.get("created_at"),
            "updated_at": m.get("updated_at"), "step": progress.get("step"),
            "total_steps": progress.get("total_steps"),
            **_flat_headline(_headline(m, d)), "error": None}


def _flat_headline(head: dict) -> dict:
    """The runs table's headline columns: "HS <suite>" per harmful suite of the run (suite_labels), then
    the means."""
    labels = suite_labels(head["hs_by_suite"])
    return {**{f"HS {labels[s]}": v for s, v in head["hs_by_suite"].items()},
            **{k: v for k, v in head.items() if k not in ("acc_by_family", "hs_by_suite")}}


def list_runs(runs_dir: str | Path) -> pd.DataFrame:
    """Every run folder below `runs_dir` (recursively), one row each. An unreadable run gets status
    "unreadable" and its error instead of failing the listing."""
    rows = []
    root = Path(runs_dir)
    for mpath in sorted(root.rglob(schema.MANIFEST)) if root.exists() else []:
        d = mpath.parent
        try:
            rows.append(run_row(d))
        except RunReadError as e:
            rows.append({"run_id": d.name, "path": str(d), "status": "unreadable", "error": str(e)})
    return pd.DataFrame(rows)


def same_model(a: dict, b: dict) -> bool:
    """Whether two manifests trained the same starting model: the weights' sha256 when both recorded a
    model_fingerprint, else the model spec (e.g. "smollm2:aligned" vs "smollm2:base"); manifests that
    recorded neither are not told apart (runs written before the fingerprint existed). Rows of `list_runs`
    work too: they carry the hash as "model_sha256"."""
    fa, fb = ({"weights_sha256": _present(x.get("model_sha256"))} if "model_sha256" in x
              else x.get("model_fingerprint") or {} for x in (a, b))
    if fa.get("weights_sha256") and fb.get("weights_sha256"):
        return fa["weights_sha256"] == fb["weights_sha256"]
    if _present(a.get("model")) and _present(b.get("model")):
        return a["model"] == b["model"]
    return True


def _present(v):
    """`v`, or None where a table cell is empty (NaN/None)."""
    return None if pd.isna(v) else v


def find_baseline(run_dir, candidates: list, baseline: str = "sft") -> str | None:
    """The SFT run on the same model, data, harmful ratio and seed as `run_dir` among `candidates`.

    The model must match (`same_model`): a selection may hold runs of two models on one data folder (the
    smollm2 world's base and aligned model), and a win rate against the other model's SFT run says
    nothing about the method. A task file used as it is (manifest mix "as-is": a pre-mixed file) has no
    ratio setting: its harmful share is measured when provenance is known and null when not, so two runs
    of the same file are the same data whatever provenance each was told; they pair on the file, n_train
    and the seed."""
    m = manifest(run_dir)
    key = (m.get("harmful_ratio"), m.get("seed"))
    data = m.get("data") or (m.get("data_files") or {}).get("task")
    best = None
    for c in candidates:
        try:
            cm = manifest(c)
        except RunReadError:
            continue
        if cm.get("method") != baseline or not same_model(m, cm):
            continue
        cdata = cm.get("data") or (cm.get("data_files") or {}).get("task")
        if m.get("mix") == "as-is" and cm.get("mix") == "as-is":
            if cdata == data and cm.get("seed") == m.get("seed") and cm.get("n_train") == m.get("n_train"):
                return str(c)
            continue
        if (cm.get("harmful_ratio"), cm.get("seed")) != key or key == (None, None):
            continue
        if cdata == data:
            return str(c)
        best = best or str(c)
    return best


def safety_win_rates(run_dir, sft_dir) -> dict[str, float]:
    """{suite: win rate against SFT, "safety_avg": mean} at each run's final evaluation (docs/methods/baselines.md)."""
    return win_rates(evals(run_dir, final=True), evals(sft_dir, final=True))


def median_step_seconds(run_dir) -> float | None:
    """The median wall time of one optimiser step (steps.time_s); None when not recorded."""
    if "time_s" not in columns(run_dir, "steps"):
        return None
    v = query(run_dir, "steps", "SELECT median(time_s) AS t FROM t")["t"].iloc[0]
    return None if pd.isna(v) else float(v)


def compare(run_dirs: list[str | Path], baseline: str = "sft", stats_of=None) -> pd.DataFrame:
    """The one comparison table (the dashboard's Compare page, `explorer demo`, sweeps and ablations):
    per run the headline metrics (harmful score per safety suite and their mean, task accuracy overall and
    per family as acc_<family>, over-refusal), win rates against the SFT run of the same data, ratio and
    seed (among `run_dirs`), drop precision/recall with drop_note, wall and median step seconds and both
    as ratios to that SFT run. `stats_of(run)` supplies sample_stats (the app passes its cached one)."""
    stats_of = stats_of or sample_stats
    rows = []
    for d in run_dirs:
        m = manifest(d)
        head = _headline(m, d)
        row = {"run_id": m["run_id"], "path": str(d), "method": m.get("method"),
               "harmful_ratio": m.get("harmful_ratio"), "seed": m.get("seed"), "status": effective_status(m),
               "is_sft": m.get("method") == baseline,
               "harmful_score": head["HS"]}
        labels = suite_labels(head["hs_by_suite"])
        row.update({f"hs_{labels[s]}": v for s, v in head["hs_by_suite"].items()})
        row.update({"task_acc": head["task acc"], "over_refusal": head["over-refusal"], "degenerate": head["degenerate"]})
        row.update({f"win_{labels[s]}": None for s in head["hs_by_suite"]})
        row.update({"safety_avg": None, "baseline": None, "baseline_path": None, "wall_s": m.get("wall_seconds"),
                    "step_s": median_step_seconds(d)})
        row.update({f"acc_{fam}": v for fam, v in sorted(head["acc_by_family"].items())})
        base = find_baseline(d, run_dirs, baseline)
        if base is not None:
            wr = safety_win_rates(d, base)
            row.update({f"win_{labels.get(s, s)}": v for s, v in wr.items() if s != "safety_avg"})
            row.update({"safety_avg": wr.get("safety_avg"), "baseline": Path(base).name, "baseline_path": str(base)})
        pr = drop_stats(d, stats_of(d))
        row.update({"drop_precision": pr["precision"], "drop_recall": pr["recall"], "drop_note": pr.get("note", "")})
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        by_path = df.set_index("path")
        for col, ratio in (("wall_s", "wall_vs_sft"), ("step_s", "step_vs_sft")):
            df[ratio] = [r[col] / by_path.loc[r["baseline_path"], col]
                         if r["baseline_path"] in by_path.index and pd.notna(r[col])
                         and pd.notna(by_path.loc[r["baseline_path"], col]) and by_path.loc[r["baseline_path"], col]
                         else None for _, r in df.iterrows()]
    return df


# -- is the why real? chance levels and the independent check (issue 19; explorer/runs/chance.py) ------
def selection_counts(run_dir) -> pd.DataFrame:
    """Per step of task decisions: n, harmful (h), dropped (d), harmful dropped (hd) and `unknown`
    (provenance neither benign nor harmful), counted in DuckDB — chance.recall_vs_chance's groups.
    A pool selector that drops nothing inside its batches (SEAL's one-off top-p cut) gives one row for
    its cut over the mix instead. Empty when the run recorded no decisions."""
    has_s = "provenance" in set(columns(run_dir, "samples"))
    prov = "s.provenance" if has_s else "NULL"
    join = "LEFT JOIN s USING (sample_id)" if has_s else ""
    agg = f"""count(*) AS n, count(*) FILTER (WHERE {prov} = 'harmful') AS h,
              count(*) FILTER (WHERE NOT t.kept) AS d,
              count(*) FILTER (WHERE NOT t.kept AND {prov} = 'harmful') AS hd,
              count(*) FILTER (WHERE {prov} IS NULL OR {prov} NOT IN ('benign', 'harmful')) AS unknown"""
    df = query(run_dir, "decisions", f"SELECT t.step, {agg} FROM t {join} WHERE t.role = 'task' "
                                     "GROUP BY t.step ORDER BY t.step")
    if (df.empty or int(df["d"].sum()) == 0) and source(run_dir, "seal_cut") is not None:
        cut = query(run_dir, "seal_cut", f"""SELECT max(t.step) AS step, {agg} FROM t {join}
                    WHERE t.step = (SELECT max(step) FROM t)""")
        if not cut.empty and int(cut["d"].sum()) > 0:
            return cut.assign(scope="pool")
    return df.assign(scope="batch") if not df.empty else df


def effect_rows(run_dir) -> pd.DataFrame:
    """Task decisions at the steps where the independent check was recorded (effect_safety present),
    with provenance; empty when the run did not record it (eval.influence_every = 0)."""
    if "effect_safety" not in set(columns(run_dir, "decisions")):
        return pd.DataFrame()
    has_s = "provenance" in set(columns(run_dir, "samples"))
    sel, join = (", s.provenance", "LEFT JOIN s USING (sample_id)") if has_s else ("", "")
    return query(run_dir, "decisions", f"""SELECT t.*{sel} FROM t {join}
                 WHERE t.role = 'task' AND t.effect_safety IS NOT NULL ORDER BY t.step, t.sample_id""")


# -- step checkpoints and counterfactual replays (explorer/replay/; schema.REPLAYS) -------------------
def step_checkpoints(run_dir) -> list[int]:
    """The steps a run kept a step checkpoint of (checkpoints/step-N/ with its state.json), ascending."""
    d = Path(run_dir) / schema.STEP_CHECKPOINTS
    if not d.is_dir():
        return []
    return sorted(int(p.name.split("-", 1)[1]) for p in d.glob("step-*")
                  if p.name.split("-", 1)[1].isdigit() and (p / "state.json").exists())


def _json_records(run_dir, table: str) -> list[dict]:
    """The <table>/<id>.json records of replays or leave-one-out studies (settings, status), oldest first."""
    out = []
    for p in sorted((Path(run_dir) / table).glob("*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunReadError(_run_name(run_dir), p, f"unreadable replay record ({e}); expected a JSON object") from None
    return sorted(out, key=lambda m: str(m.get("created_at", "")))


def replay_records(run_dir) -> list[dict]:
    """Every replay's JSON record (checkpoint, arms, seeds, status, the measurement at the checkpoint)."""
    return _json_records(run_dir, schema.REPLAYS)


def replays(run_dir, step: int | None = None) -> pd.DataFrame:
    """Replay rows (one per replay, arm and seed), optionally of one step; empty when none."""
    if step is None:
        return query(run_dir, schema.REPLAYS, "SELECT * FROM t ORDER BY replay_id, arm, seed")
    return query(run_dir, schema.REPLAYS, "SELECT * FROM t WHERE step = ? ORDER BY replay_id, arm, seed", [int(step)])


def replay_steps(run_dir) -> pd.DataFrame:
    return query(run_dir, schema.REPLAY_STEPS, "SELECT * FROM t ORDER BY replay_id, arm, seed, step")


def loo(run_dir, step: int | None = None) -> pd.DataFrame:
    """Leave-one-out rows (one per study and sample), optionally of one step; empty when none."""
    if step is None:
        return query(run_dir, schema.LOO, "SELECT * FROM t ORDER BY loo_id, sample_id")
    return query(run_dir, schema.LOO, "SELECT * FROM t WHERE step = ? ORDER BY loo_id, sample_id", [int(step)])
