"""`explorer demo` and `explorer sweep`: run methods on the tiny world and print a comparison table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from explorer.runs import schema
from explorer.runs.compare import drop_precision_recall, metrics_wide, win_rates

from explorer.data.sample import repo_root

CONFIG_DIR = repo_root() / "configs"


def demo_config_path(method: str) -> Path | None:
    p = CONFIG_DIR / f"{method}_demo.yaml"
    return p if p.exists() else None


def _read(run_dir: Path, table: str) -> pd.DataFrame:
    parts = sorted((run_dir / table).glob("part-*.parquet"))
    if not parts:
        p = run_dir / f"{table}.parquet"
        return pd.read_parquet(p) if p.exists() else pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def comparison_table(run_dirs: list[Path], baseline: str = "sft") -> pd.DataFrame:
    """One row per run: harmful score per suite, over-refusal, task accuracy, win rates vs the SFT run
    with the same harmful ratio and seed, Safety Avg, drop precision/recall, wall time."""
    rows, evals = [], {}
    manifests = {d: json.loads((d / schema.MANIFEST).read_text()) for d in run_dirs}
    for d in run_dirs:
        evals[d] = _read(d, "evals")
    sft_for = {(m["harmful_ratio"], m["seed"]): d for d, m in manifests.items() if m["method"] == baseline}
    for d, m in manifests.items():
        mw = metrics_wide(_read(d, "metrics"))
        acc = {k.split("/")[0][len(schema.TASK_SUITE_PREFIX):]: v for k, v in mw.items()
               if k.endswith("/" + schema.M_ACC)}
        row = {"run": d.name, "method": m["method"], "p": m["harmful_ratio"], "seed": m["seed"],
               "HS hh": mw.get(f"{schema.SUITE_HH}/{schema.M_HARMFUL}"),
               "HS hexphi": mw.get(f"{schema.SUITE_HEX}/{schema.M_HARMFUL}"),
               "over-refusal": mw.get(f"{schema.SUITE_OVER}/{schema.M_OVER}"),
               "task acc": sum(acc.values()) / len(acc) if acc else None}
        for fam, v in sorted(acc.items()):
            row[f"acc {fam}"] = v
        sft = sft_for.get((m["harmful_ratio"], m["seed"]))
        if sft is not None:
            wr = win_rates(evals[d], evals[sft])
            row["win hh"] = wr.get(schema.SUITE_HH)
            row["win hexphi"] = wr.get(schema.SUITE_HEX)
            row["Safety Avg"] = wr.get("safety_avg")
        pr = drop_precision_recall(_read(d, "decisions"), _read(d, "samples"))
        row["drop prec"] = pr["precision"]
        row["drop recall"] = pr["recall"]
        row["wall s"] = m.get("wall_seconds")
        st = _read(d, "steps")
        row["step s"] = float(st["time_s"].median()) if "time_s" in st and len(st) else None
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty and baseline in set(df["method"]):
        base_wall = df[df["method"] == baseline].groupby(["p", "seed"])["wall s"].first()
        df["wall / SFT"] = [r["wall s"] / base_wall.get((r["p"], r["seed"]), float("nan"))
                            if r["wall s"] else None for _, r in df.iterrows()]
        base_step = df[df["method"] == baseline].groupby(["p", "seed"])["step s"].first()
        df["step / SFT"] = [r["step s"] / base_step.get((r["p"], r["seed"]), float("nan"))
                            if r["step s"] else None for _, r in df.iterrows()]
    return df


def format_table(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    if df.empty:
        return "(no runs)"
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    if _has_tabulate():
        fmt = ["g" if c in ("p", "seed") else ".1f" for c in cols]
        return df[cols].to_markdown(index=False, floatfmt=fmt)
    return df[cols].round(1).to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def run_methods(methods: list[str], harmful_ratio: float, seed: int, runs_dir: str,
                overrides: list[str], method_overrides: dict[str, list[str]] | None = None) -> list[Path]:
    """Run each method from its demo config (configs/<name>_demo.yaml, else the defaults) with the same
    ratio, seed and `overrides`; `method_overrides[name]` adds settings for that method only."""
    from explorer.config import load_config
    from explorer.train.loop import run

    dirs = []
    for name in methods:
        cfg_path = demo_config_path(name)
        ov = [f"harmful_ratio={harmful_ratio}", f"seed={seed}", f"runs_dir={runs_dir}"] + list(overrides)
        if cfg_path is None:
            ov.append(f"method={name}")
        ov += list((method_overrides or {}).get(name, []))
        cfg = load_config(cfg_path, ov)
        t = time.time()
        d = run(cfg)
        print(f"  {name:12s} done in {time.time() - t:6.1f} s -> {d}")
        dirs.append(d)
    return dirs


DEMO_COLUMNS = ["method", "p", "seed", "HS hh", "HS hexphi", "over-refusal", "task acc", "acc comparison",
                "Safety Avg", "drop prec", "drop recall", "wall s", "wall / SFT", "step / SFT"]


def demo(harmful_ratio: float = 0.1, seed: int = 0, runs_dir: str = "runs/demo",
         methods: list[str] | None = None, open_app: bool = True, overrides: list[str] | None = None) -> int:
    from explorer.methods import load_methods
    from explorer.model import tiny

    t0 = time.time()
    print("preparing the tiny models (cached after the first time) ...")
    tiny.ensure_prepared()
    registry = load_methods()
    methods = methods or ["sft"] + [m for m in registry if m != "sft"]
    print(f"running {len(methods)} methods at harmful ratio {harmful_ratio}, seed {seed}:")
    dirs = run_methods(methods, harmful_ratio, seed, runs_dir, overrides or [])
    df = comparison_table(dirs)
    print()
    print(format_table(df, DEMO_COLUMNS))
    print(f"\ndemo finished in {time.time() - t0:.0f} s; run folders under {runs_dir}")
    if open_app:
        try:
            from explorer.app.launch import launch
        except ModuleNotFoundError:
            print("(the dashboard is not available in this version)")
        else:
            launch(runs_dir, open_browser=True)
    return 0


SWEEP_COLUMNS = ["method", "p", "seed", "HS hh", "HS hexphi", "over-refusal", "task acc", "acc comparison", "wall s"]


def sweep(ratios: list[float], seeds: list[int], runs_dir: str = "runs/sweep", method: str = "sft",
          overrides: list[str] | None = None) -> int:
    from explorer.model import tiny

    tiny.ensure_prepared()
    dirs = []
    for seed in seeds:
        for p in ratios:
            dirs += run_methods([method], p, seed, runs_dir, overrides or [])
    df = comparison_table(dirs)
    print(format_table(df, SWEEP_COLUMNS))
    agg = df.groupby("p")[["HS hh", "HS hexphi", "over-refusal", "task acc", "acc comparison"]].agg(["mean", "std"])
    agg.columns = [f"{a} {b}" for a, b in agg.columns]
    print()
    print(agg.round(1).reset_index().to_markdown(index=False, floatfmt="g") if _has_tabulate() else agg.round(1).to_string())
    return 0
