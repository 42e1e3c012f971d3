"""Do two sets of runs make the same decisions? A regression check for changes meant to keep behaviour.

    python benchmarks/decisions_equal.py RUNS_BEFORE RUNS_AFTER [--rtol 1e-5]

Runs are paired by (method, harmful ratio, seed) from their manifests. For each pair it compares the
`decisions` table (same rows by step, sample id and role; identical kept flags; weights, losses and
every score column within `rtol`), the `refreshes` table where there is one (identical selected
references per refresh), the step losses and the final metrics. Prints one line per pair and exits 1
if any pair differs. Reads run folders only through explorer.runs.reader (no torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.runs import reader


def _runs(folder: Path) -> dict[tuple, Path]:
    out = {}
    for d in sorted(p.parent for p in folder.rglob("run.json")):
        m = reader.manifest(d)
        out[(m["method"], m.get("run_name") or m["config"].get("run_name", ""), m["harmful_ratio"], m["seed"])] = d
    return out


def _numeric_diff(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], rtol: float) -> list[str]:
    problems = []
    if len(a) != len(b):
        return [f"{len(a)} vs {len(b)} rows"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    for k in keys:
        if not (a[k].astype(str) == b[k].astype(str)).all():
            return [f"rows differ in {k}"]
    for c in sorted(set(a.columns) & set(b.columns) - set(keys) - {"run_id"}):
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and x.dtype != bool:
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            ok = np.isclose(xv, yv, rtol=rtol, atol=rtol, equal_nan=True)
            if not ok.all():
                i = int(np.argmax(~ok))
                problems.append(f"{c}: {int((~ok).sum())} values differ (first: {xv[i]!r} vs {yv[i]!r})")
        elif not (x.astype(str) == y.astype(str)).all():
            problems.append(f"{c}: {int((x.astype(str) != y.astype(str)).sum())} values differ")
    for c in sorted(set(a.columns) ^ set(b.columns)):
        problems.append(f"column {c} only in {'before' if c in a.columns else 'after'}")
    return problems


def compare_pair(before: Path, after: Path, rtol: float, notes: list[str] | None = None) -> list[str]:
    """Differences between two runs (empty = identical); `notes` collects what is news, not a difference."""
    problems, notes = [], notes if notes is not None else []
    for table, keys in (("decisions", ["step", "sample_id", "role"]), ("steps", ["step"]),
                        ("metrics", ["step", "suite", "metric"])):
        if reader.has_table(before, table) or reader.has_table(after, table):
            a, b = reader.table(before, table), reader.table(after, table)
            if table == "steps":  # wall-clock columns differ by nature
                a = a.drop(columns=[c for c in a.columns if c.startswith("time")])
                b = b.drop(columns=[c for c in b.columns if c.startswith("time")])
            keys = [k for k in keys if k in a.columns]
            if table == "metrics":  # a metric added by a change (a new verdict) is news, not a difference
                ka, kb = (set(map(tuple, df[keys].astype(str).to_numpy())) for df in (a, b))
                for side, extra in (("before", ka - kb), ("after", kb - ka)):
                    if extra:
                        notes.append(f"metrics: {len(extra)} rows only {side} "
                                     f"(e.g. {sorted(extra)[0]}); compared on the {len(ka & kb)} shared")
                on = lambda df: df[[tuple(r) in (ka & kb) for r in df[keys].astype(str).to_numpy()]]  # noqa: E731
                a, b = on(a), on(b)
            problems += [f"{table}: {p}" for p in _numeric_diff(a, b, keys, rtol)]
    if reader.has_table(before, "refreshes"):
        a, b = reader.refreshes(before), reader.refreshes(after)
        sel = lambda df: df[df["selected"]].groupby("refresh_id")["sample_id"].apply(frozenset).to_dict()  # noqa: E731
        if sel(a) != sel(b):
            problems.append("refreshes: selected references differ")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rtol", type=float, default=1e-5)
    args = p.parse_args(argv)
    a, b = _runs(args.before), _runs(args.after)
    bad = 0
    for key in sorted(set(a) | set(b), key=str):
        if key not in a or key not in b:
            print(f"{key}: only in {'before' if key in a else 'after'}")
            bad += 1
            continue
        notes: list[str] = []
        problems = compare_pair(a[key], b[key], args.rtol, notes)
        print(f"{key}: {'identical' if not problems else 'DIFFERENT'}")
        for q in problems:
            print(f"    {q}")
        for q in notes:
            print(f"    note: {q}")
        bad += bool(problems)
    print(f"{len(set(a) & set(b)) - bad} of {len(set(a) | set(b))} run pairs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
