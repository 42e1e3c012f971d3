"""A method and its ablations on the tiny world against SFT (the tables of docs/methods/dualselect.md and cwac.md).

    python benchmarks/ablations.py dualselect --ratios 0.1 0.2 --seeds 0 --runs-dir runs/ablations
    python benchmarks/ablations.py cwac --ratios 0.1 0.2 --seeds 0 1 --runs-dir runs/cwac

Every variant is a setting of the same method (configs/<method>_demo.yaml plus overrides). With
several seeds a second table gives the mean over seeds per variant and ratio.
"""

from __future__ import annotations

import argparse

from explorer.demo import comparison_table, format_table, run_methods

VARIANTS = {
    "dualselect": {
        "dualselect": [],
        "token budget 0.9": ["method.keep_fraction=0", "method.token_budget=0.9"],
        "epoch refresh (authors')": ["method.refresh=epoch"],
        "static refs": ["method.reference_selection=static"],
        "random refs": ["method.reference_selection=random"],
        "uniform ref weights": ["method.ref_mode=soft", "method.uniform_ref_weights=true"],
        "soft (τ=0.1)": ["method.ref_mode=soft", "method.task_mode=soft"],
        "task-only filter": ["method.correction=none"],
        "correction-only": ["method.filter_task=false"],
        "pcgrad": ["method.correction=pcgrad"],
        "current g_ref": ["method.ref_grad=current"],
        "projected D=512": ["method.estimator=projected"],
        "jvp compat": ["method.estimator=jvp"],
        # off by default (run with --variants): is a stale g_ref what breaks the static and per-epoch
        # schedules? The same schedules with the reference gradient re-taken every step.
        "static refs, current g_ref": ["method.reference_selection=static", "method.ref_grad=current"],
        "epoch refresh, current g_ref": ["method.refresh=epoch", "method.ref_grad=current"],
    },
    "cwac": {
        "cwac (both)": [],
        "weight only": ["method.constraints=weight"],
        "activation only": ["method.constraints=activation"],
        # settings, not ablations (run with --variants): where the activation constraint might bite harder
        "sae layer 1": ["method.sae_layer=1"],
        "activation only, sae layer 1": ["method.constraints=activation", "method.sae_layer=1"],
        "last prompt token": ["method.position=last_prompt"],
        "relu codes": ["method.activation=relu"],
        "lambda 5": ["method.lam=5"],
    },
}
#: variants that run only when named with --variants (the follow-up questions marked above)
OPT_IN = {"static refs, current g_ref", "epoch refresh, current g_ref",
          "sae layer 1", "activation only, sae layer 1", "last prompt token", "relu codes", "lambda 5"}
#: what runs without --variants: every ablation of DualSelect, the paper's ablation for CWAC
DEFAULT = {method: [v for v in variants if v not in OPT_IN] for method, variants in VARIANTS.items()}
COLUMNS = ["method", "p", "seed", "HS hh", "HS hexphi", "Safety Avg", "over-refusal", "task acc", "acc comparison",
           "drop prec", "drop recall", "wall / SFT", "step / SFT"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=list(VARIANTS))
    ap.add_argument("--ratios", type=float, nargs="*", default=[0.1, 0.2])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--runs-dir", default="runs/ablations")
    ap.add_argument("--variants", nargs="*", default=None, help="names from VARIANTS (default: DEFAULT)")
    args = ap.parse_args()
    variants = VARIANTS[args.method]
    dirs, names = [], {}
    for seed in args.seeds:
        for p in args.ratios:
            dirs += run_methods(["sft"], p, seed, args.runs_dir, ["progress=false"])
            names[dirs[-1].name] = "SFT"
            for v in args.variants or DEFAULT[args.method]:
                tag = "".join(ch if ch.isalnum() else "-" for ch in v.split()[0])
                d = run_methods([args.method], p, seed, args.runs_dir,
                                ["progress=false", f"run_name={args.method}-{tag}"] + variants[v])[0]
                dirs.append(d)
                names[d.name] = v
    df = comparison_table(dirs)
    df["method"] = df["run"].map(names)
    print(format_table(df, COLUMNS))
    if len(args.seeds) > 1:
        num = [c for c in COLUMNS if c not in ("method", "p", "seed") and c in df]
        mean = df.groupby(["method", "p"], sort=False)[num].mean().reset_index()
        mean.insert(2, "seeds", len(args.seeds))
        print(f"\nmean over seeds {args.seeds}:\n")
        print(format_table(mean.sort_values("p", kind="stable"), ["method", "p", "seeds", *num]))


if __name__ == "__main__":
    main()
