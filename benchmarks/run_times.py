"""Where each run's time went: wall seconds, the training steps, and the rest (setup and evaluations).

    python benchmarks/run_times.py RUNS_DIR [RUNS_DIR ...] [--limit 600]

One row per complete run folder below the given directories, sorted by method, ratio and seed:
`wall s` is the run's recorded `wall_seconds` (run.json: from the start of `explorer run` to the
folder's completion, both evaluations included), `steps s` the sum of the steps table's `time_s` (each
optimiser step with its method's decide), `median step s` its median, `rest s` = wall − steps (loading,
the method's prepare — SEAL's selector epoch, PACT's stage 1, CWAC's SAE and covariances — and the
start and final evaluations). `within` says whether the run took at most `--limit` seconds (the smollm2
world aims at 10 minutes a run, docs/smollm2.md). PACT runs add the share of steps that read its cached
reference logits (`reference_cached`) and the median step that ran its reference against the median
step that read the cache. Reads run folders only (no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from explorer.runs import reader, schema


def row(d: Path, limit: float) -> dict | None:
    m = reader.manifest(d)
    if m.get("status") != "complete" or m.get("wall_seconds") is None:
        return None
    steps = reader.steps(d)
    t = steps["time_s"] if "time_s" in steps else pd.Series(dtype=float)
    wall = float(m["wall_seconds"])
    out = {"run": d.name, "method": m.get("method", ""), "p": m.get("harmful_ratio"), "seed": m.get("seed"),
           "model": m.get("model", ""), "wall s": round(wall, 1), "steps": int(len(t)),
           "steps s": round(float(t.sum()), 1), "median step s": round(float(t.median()), 2) if len(t) else None,
           "rest s": round(wall - float(t.sum()), 1), "within": "yes" if wall <= limit else "no"}
    if "reference_cached" in steps:
        c = steps["reference_cached"].fillna(0).astype(bool)
        out["reference cached"] = f"{int(c.sum())}/{len(steps)}"
        med = [t[sel].median() for sel in (~c, c)]
        out["median step s, reference run / cached"] = " / ".join("–" if pd.isna(x) else f"{x:.2f}" for x in med)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_dirs", nargs="+", type=Path)
    ap.add_argument("--limit", type=float, default=600.0, help="seconds a run may take (default 600)")
    a = ap.parse_args(argv)
    rows = []
    for root in a.runs_dirs:
        if not root.exists():
            raise SystemExit(f"run_times.py: {root}: no such directory")
        for mpath in sorted(root.rglob(schema.MANIFEST)):
            r = row(mpath.parent, a.limit)
            if r is not None:
                rows.append(r)
    if not rows:
        raise SystemExit(f"run_times.py: no complete run folder below {', '.join(map(str, a.runs_dirs))}")
    df = pd.DataFrame(rows).sort_values(["method", "p", "seed", "run"]).fillna("")
    print(df.drop(columns=["run"]).to_string(index=False))


if __name__ == "__main__":
    main()
