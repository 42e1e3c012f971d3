"""Read-only access to run folders: DuckDB over the Parquet globs, returning pandas frames.

Used by the app and the notebooks. Never imports torch. Manifests are read as JSON, tables as Parquet
— nothing else (no pickle). A corrupt or truncated file raises RunReadError naming the run and file,
so that a caller can show it for that run and keep going.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd

from explorer.runs import schema
from explorer.runs.compare import drop_precision_recall, metrics_wide, win_rates
from explorer.runs.status import effective_status, status_note


class RunReadError(RuntimeError):
    pass


def _con():
    return duckdb.connect(database=":memory:")


def manifest(run_dir: str | Path) -> dict:
    p = Path(run_dir) / schema.MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunReadError(f"{run_dir}: no {schema.MANIFEST}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunReadError(f"{p}: unreadable manifest ({e}); expected JSON") from None
    if not isinstance(m, dict) or "run_id" not in m:
        raise RunReadError(f"{p}: not a run manifest (no run_id)")
    return m


def source(run_dir: str | Path, name: str) -> str | None:
    """The Parquet glob (partitioned table) or file (static table) for `name`, or None."""
    d = Path(run_dir)
    if (d / name).is_dir() and any((d / name).glob("part-*.parquet")):
        return str(d / name / "part-*.parquet")
    if (d / f"{name}.parquet").exists():
        return str(d / f"{name}.parquet")
    return None


def query(run_dir: str | Path, name: str, sql: str = "SELECT * FROM t", params: list | None = None) -> pd.DataFrame:
    """Run `sql` over table `name` of a run (exposed as view `t`). Empty frame when the table is absent."""
    src = source(run_dir, name)
    if src is None:
        return pd.DataFrame()
    con = _con()
    try:
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{src}', union_by_name=true)")
        return con.execute(sql, params or []).df()
    except duckdb.Error as e:
        raise RunReadError(f"{Path(run_dir).name}/{name}: unreadable Parquet ({str(e).splitlines()[0][:200]})") from None
    finally:
        con.close()


def table(run_dir, name: str) -> pd.DataFrame:
    return query(run_dir, name)


def samples(run_dir) -> pd.DataFrame:
    return query(run_dir, "samples")


def steps(run_dir) -> pd.DataFrame:
    return query(run_dir, "steps", "SELECT * FROM t ORDER BY step")


def metrics(run_dir) -> pd.DataFrame:
    return query(run_dir, "metrics", "SELECT * FROM t ORDER BY step, suite, metric")


def evals(run_dir, step: int | None = None) -> pd.DataFrame:
    if step is None:
        return query(run_dir, "evals")
    return query(run_dir, "evals", "SELECT * FROM t WHERE step = ?", [step])


def refreshes(run_dir) -> pd.DataFrame:
    return query(run_dir, "refreshes", "SELECT * FROM t ORDER BY refresh_id, rank")


def decision_steps(run_dir) -> list[int]:
    df = query(run_dir, "decisions", "SELECT DISTINCT step FROM t ORDER BY step")
    return df["step"].tolist() if not df.empty else []


def batch_at(run_dir, step: int) -> pd.DataFrame:
    """One step's task decisions joined with the samples' text and provenance."""
    dec = query(run_dir, "decisions", "SELECT * FROM t WHERE step = ? AND role = 'task'", [step])
    if dec.empty:
        return dec
    s = samples(run_dir)
    if not s.empty:
        cols = [c for c in ("sample_id", "prompt", "response", "provenance", "family", "category") if c in s]
        dec = dec.merge(s[cols], on="sample_id", how="left")
    return dec


def data_map(run_dir) -> pd.DataFrame:
    """Per sample over the whole run: times seen, keep rate, mean and std of score and loss (DuckDB)."""
    src = source(run_dir, "decisions")
    if src is None:
        return pd.DataFrame()
    cols = query(run_dir, "decisions", "SELECT * FROM t LIMIT 0").columns
    score = "score" if "score" in cols else "loss"
    return query(run_dir, "decisions", f"""
        SELECT sample_id, count(*) AS n_seen, avg(CAST(kept AS DOUBLE)) AS keep_rate,
               avg({score}) AS mean_score, stddev_samp({score}) AS std_score, avg(loss) AS mean_loss
        FROM t WHERE role = 'task' GROUP BY sample_id""")


def sample_history(run_dir, sample_id: str) -> pd.DataFrame:
    return query(run_dir, "decisions", "SELECT * FROM t WHERE sample_id = ? ORDER BY step", [sample_id])


def drop_stats(run_dir) -> dict[str, float]:
    """Precision/recall of dropped task decisions against the harmful label, aggregated in DuckDB
    (same definition as compare.drop_precision_recall, which it falls back to for pool selectors)."""
    dsrc, ssrc = source(run_dir, "decisions"), source(run_dir, "samples")
    if dsrc is not None and ssrc is not None:
        con = _con()
        try:
            n_drop, hd, h = con.execute(f"""
                SELECT count(*) FILTER (WHERE NOT d.kept),
                       count(*) FILTER (WHERE NOT d.kept AND s.provenance = 'harmful'),
                       count(*) FILTER (WHERE s.provenance = 'harmful')
                FROM read_parquet('{dsrc}', union_by_name=true) d
                JOIN read_parquet('{ssrc}') s USING (sample_id) WHERE d.role = 'task'""").fetchone()
        except duckdb.Error as e:
            raise RunReadError(f"{Path(run_dir).name}: unreadable Parquet ({str(e).splitlines()[0][:200]})") from None
        finally:
            con.close()
        if n_drop:
            return {"precision": 100.0 * hd / n_drop, "recall": 100.0 * hd / h if h else float("nan"),
                    "n_dropped": n_drop}
    return drop_precision_recall(pd.DataFrame(), samples(run_dir))


def list_runs(runs_dir: str | Path) -> pd.DataFrame:
    """Every run folder below `runs_dir` (recursively), one row each; unreadable runs get an error."""
    rows = []
    root = Path(runs_dir)
    for mpath in sorted(root.rglob(schema.MANIFEST)) if root.exists() else []:
        d = mpath.parent
        try:
            m = manifest(d)
            mw = metrics_wide(metrics(d))
            acc = [v for k, v in mw.items() if k.endswith("/" + schema.M_ACC)]
            rows.append({"run_id": m["run_id"], "path": str(d), "method": m.get("method"),
                         "model": m.get("model"), "data": m.get("data", (m.get("data_files") or {}).get("task")),
                         "harmful_ratio": m.get("harmful_ratio"), "seed": m.get("seed"),
                         "status": effective_status(m), "note": status_note(m),
                         "created_at": m.get("created_at"),
                         "step": (m.get("progress") or {}).get("step"),
                         "total_steps": (m.get("progress") or {}).get("total_steps"),
                         "HS hh": mw.get(f"{schema.SUITE_HH}/{schema.M_HARMFUL}"),
                         "HS hexphi": mw.get(f"{schema.SUITE_HEX}/{schema.M_HARMFUL}"),
                         "over-refusal": mw.get(f"{schema.SUITE_OVER}/{schema.M_OVER}"),
                         "task acc": sum(acc) / len(acc) if acc else None, "error": None})
        except RunReadError as e:
            rows.append({"run_id": d.name, "path": str(d), "status": "unreadable", "error": str(e)})
    return pd.DataFrame(rows)


def compare(run_dirs: list[str | Path], baseline: str = "sft") -> pd.DataFrame:
    """Safety–utility summary per run with win rates against the SFT run of the same ratio and seed."""
    rows, ev, ms = [], {}, {}
    for d in run_dirs:
        ms[d] = manifest(d)
        ev[d] = evals(d)
    sft = {(m.get("harmful_ratio"), m.get("seed")): d for d, m in ms.items() if m.get("method") == baseline}
    for d, m in ms.items():
        mw = metrics_wide(metrics(d))
        acc = [v for k, v in mw.items() if k.endswith("/" + schema.M_ACC)]
        hs = [mw.get(f"{s}/{schema.M_HARMFUL}") for s in schema.SAFETY_SUITES]
        hs = [h for h in hs if h is not None]
        row = {"run_id": m["run_id"], "method": m.get("method"), "harmful_ratio": m.get("harmful_ratio"),
               "seed": m.get("seed"), "is_sft": m.get("method") == baseline,
               "harmful_score": sum(hs) / len(hs) if hs else None,
               "task_acc": sum(acc) / len(acc) if acc else None,
               "over_refusal": mw.get(f"{schema.SUITE_OVER}/{schema.M_OVER}")}
        base = sft.get((m.get("harmful_ratio"), m.get("seed")))
        if base is not None and not ev[d].empty and not ev[base].empty:
            wr = win_rates(ev[d], ev[base])
            row.update({"win_hh": wr.get(schema.SUITE_HH), "win_hexphi": wr.get(schema.SUITE_HEX),
                        "safety_avg": wr.get("safety_avg")})
        pr = drop_stats(d)
        row.update({"drop_precision": pr["precision"], "drop_recall": pr["recall"]})
        rows.append(row)
    return pd.DataFrame(rows)
