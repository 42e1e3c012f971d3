"""`explorer demo` and `explorer sweep`: run methods on a world (tiny, smollm2) and print a comparison table."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from explorer.runs import reader

from explorer.data.sample import repo_root

CONFIG_DIR = repo_root() / "configs"


def demo_config_path(method: str) -> Path | None:
    p = CONFIG_DIR / f"{method}_demo.yaml"
    return p if p.exists() else None


#: reader.compare's columns under the names the printed tables use
#: (per harmful suite, under the run's own suite names: hs_<suite> -> "HS <suite>", win_<suite> -> "win <suite>")
DEMO_NAMES = {"run_id": "run", "method": "method", "harmful_ratio": "p", "seed": "seed",
              "over_refusal": "over-refusal", "task_acc": "task acc", "degenerate": "degenerate", "safety_avg": "Safety Avg",
              "drop_precision": "drop prec", "drop_recall": "drop recall", "drop_note": "drops", "wall_s": "wall s",
              "step_s": "step s", "wall_vs_sft": "wall / SFT", "step_vs_sft": "step / SFT"}


def comparison_table(run_dirs: list[Path], baseline: str = "sft") -> pd.DataFrame:
    """One row per run: the dashboard's comparison table (reader.compare: harmful score per suite,
    over-refusal, task accuracy, win rates vs the SFT run with the same data, ratio and seed, Safety Avg,
    drop precision/recall, wall and step time against SFT) under the printed tables' column names; task
    accuracy per family is "acc <family>"."""
    df = reader.compare([str(d) for d in run_dirs], baseline=baseline)
    if df.empty:
        return df
    per_suite = {c: f"{label} {c[len(prefix):]}" for c in df.columns
                 for prefix, label in (("acc_", "acc"), ("hs_", "HS"), ("win_", "win")) if c.startswith(prefix)}
    names = {**DEMO_NAMES, **per_suite}
    return df[[c for c in df.columns if c in names]].rename(columns=names)


def format_table(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    if df.empty:
        return "(no runs)"
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    if _has_tabulate():
        fmt = ["g" if c in ("p", "seed") else ".1f" for c in cols]
        # unknown or not applicable (drop recall of a method that never drops): blank, never "nan" or 0
        t = df[cols].astype(object)
        return t.where(t.notna(), None).to_markdown(index=False, floatfmt=fmt, missingval="")
    return df[cols].round(1).to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def method_run_config(name: str, harmful_ratio: float, seed: int, runs_dir: str, overrides: list[str],
                      method_overrides: dict[str, list[str]] | None = None):
    """The RunConfig that run_methods runs `name` with: its demo config (with the block for the world
    that `overrides` name, if it has one), then the ratio, seed, `overrides` and `method_overrides[name]`
    (settings for that method only, e.g. a notebook's smaller reference pool for DualSelect)."""
    from explorer.config import load_config

    cfg_path = demo_config_path(name)
    ov = [f"data.harmful_ratio={harmful_ratio}", f"seed={seed}", f"runs_dir={runs_dir}"] + list(overrides)
    ov += list((method_overrides or {}).get(name, []))
    if cfg_path is None:
        ov.append(f"method={name}")
    return load_config(cfg_path, ov)


def _plain(x):
    """JSON's view of a value (tuples become lists), so recorded and expected settings compare alike."""
    return json.loads(json.dumps(x, default=str))


def settings_differ(manifest: dict, cfg) -> list[str]:
    """The settings in which a recorded run differs from what `cfg` would run now: the run config
    (dotted keys; not runs_dir, which says where, not what, nor the raw `method` section) and the method's
    resolved config. A setting the run did not record (it predates the setting) is not compared."""
    from explorer.config import flatten, method_config, to_dict, upgrade

    have = flatten(upgrade(manifest.get("config", {})), "manifest")
    want = flatten(_plain(to_dict(cfg)), "config")
    out = [f"{k}: recorded {have[k]!r}, now {v!r}" for k, v in want.items()
           if k != "runs_dir" and not k.startswith("method.") and k in have and _plain(have[k]) != v]
    have_m, want_m = manifest.get("method_config", {}), _plain(vars(method_config(cfg)))
    out += [f"method.{k}: recorded {have_m[k]!r}, now {v!r}" for k, v in want_m.items()
            if k in have_m and _plain(have_m[k]) != v]
    return out


def matching_run(candidates, cfg) -> Path | None:
    """The folder of the first (folder, manifest) in `candidates` whose recorded settings are the ones
    `cfg` would run (settings_differ); each one passed over is named on stderr with what differs."""
    for d, m in candidates:
        diff = settings_differ(m, cfg)
        if not diff:
            return d
        print(f"  (not reusing {d.name}: made with other settings; {'; '.join(diff[:3])})", file=sys.stderr)
    return None


def run_methods(methods: list[str], harmful_ratio: float, seed: int, runs_dir: str,
                overrides: list[str], method_overrides: dict[str, list[str]] | None = None) -> list[Path]:
    """Run each method from its demo config (configs/<name>_demo.yaml, else the defaults) with the same
    ratio, seed and `overrides` (world=NAME among them picks the world's sizes and the configs' blocks
    for it); `method_overrides[name]` adds settings for that method only."""
    from explorer.train.recipe import run

    dirs = []
    for name in methods:
        cfg = method_run_config(name, harmful_ratio, seed, runs_dir, overrides, method_overrides)
        t = time.time()
        d = run(cfg)
        print(f"  {name:12s} done in {time.time() - t:6.1f} s -> {d}")
        dirs.append(d)
    return dirs


DEMO_COLUMNS = ["method", "p", "seed", "HS hh", "HS hexphi", "over-refusal", "task acc", "acc comparison",
                "Safety Avg", "drop prec", "drop recall", "wall s", "wall / SFT", "step / SFT"]


def demo(harmful_ratio: float = 0.1, seed: int = 0, runs_dir: str = "runs/demo",
         methods: list[str] | None = None, open_app: bool = True, overrides: list[str] | None = None,
         world: str = "tiny") -> int:
    from explorer.methods.registry import load_methods

    t0 = time.time()
    if world == "smollm2":
        from explorer.model import smollm2

        print("preparing SmolLM2-135M-Instruct (and its alignment adapter, when one is committed; cached) ...")
        smollm2.prepare()
    else:
        from explorer.prepare import tiny

        print("preparing the tiny models (cached after the first time) ...")
        tiny.ensure_prepared()
    registry = load_methods()
    methods = methods or ["sft"] + [m for m in registry if m != "sft"]
    print(f"running {len(methods)} methods on the {world} world at harmful ratio {harmful_ratio}, seed {seed}:")
    dirs = run_methods(methods, harmful_ratio, seed, runs_dir, [f"world={world}", *(overrides or [])])
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
    from explorer.prepare import tiny

    tiny.ensure_prepared()
    dirs = []
    for seed in seeds:
        for p in ratios:
            dirs += run_methods([method], p, seed, runs_dir, overrides or [])
    df = comparison_table(dirs)
    print(format_table(df, SWEEP_COLUMNS))
    agg = df.groupby("p")[[c for c in SWEEP_COLUMNS[3:-1] if c in df]].agg(["mean", "std"])
    agg.columns = [f"{a} {b}" for a, b in agg.columns]
    print()
    print(agg.round(1).reset_index().to_markdown(index=False, floatfmt="g") if _has_tabulate() else agg.round(1).to_string())
    return 0
