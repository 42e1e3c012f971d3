"""DualSelect and its ablations on the tiny world against SFT (README table).

    python benchmarks/dualselect_ablations.py --ratios 0.1 0.2 --seeds 0 --runs-dir runs/ablations

Every variant is a setting of the same method (configs/dualselect_demo.yaml plus overrides).
"""

from __future__ import annotations

import argparse

from explorer.demo import comparison_table, format_table, run_methods

VARIANTS = {
    "dualselect": [],
    "token budget 0.9": ["method.keep_fraction=0", "method.token_budget=0.9"],
    "static refs": ["method.reference_selection=static"],
    "random refs": ["method.reference_selection=random"],
    "uniform ref weights": ["method.ref_mode=soft", "method.uniform_ref_weights=true"],
    "soft (τ=0.1)": ["method.ref_mode=soft", "method.task_mode=soft"],
    "task-only filter": ["method.correction=none"],
    "correction-only": ["method.filter_task=false"],
    "pcgrad": ["method.correction=pcgrad"],
    "projected D=512": ["method.estimator=projected"],
    "jvp compat": ["method.estimator=jvp"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", type=float, nargs="*", default=[0.1, 0.2])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--runs-dir", default="runs/ablations")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    dirs, names = [], {}
    for seed in args.seeds:
        for p in args.ratios:
            dirs += run_methods(["sft"], p, seed, args.runs_dir, ["progress=false"])
            names[dirs[-1].name] = "sft"
            for v in args.variants:
                d = run_methods(["dualselect"], p, seed, args.runs_dir,
                                ["progress=false", f"run_name=ds-{v.split()[0]}"] + VARIANTS[v])[0]
                dirs.append(d)
                names[d.name] = v
    df = comparison_table(dirs)
    df["method"] = df["run"].map(names)
    print(format_table(df, ["method", "p", "seed", "HS hh", "HS hexphi", "Safety Avg", "over-refusal",
                            "task acc", "acc comparison", "drop prec", "drop recall", "wall / SFT"]))


if __name__ == "__main__":
    main()
