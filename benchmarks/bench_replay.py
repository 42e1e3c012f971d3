"""How long a counterfactual replay takes: seconds per step-arm (one arm of one step, one seed) on the tiny world.

    nice -n 10 python benchmarks/bench_replay.py [--run RUN_DIR] [--step 40] [--horizon 20] [--seeds 0]

Without --run it trains the run first: the tiny world, Random (half of each batch of 32 dropped), 1,000
samples for 2 epochs (64 steps) with a step checkpoint every 20 steps (record.checkpoint_every=20). Then it
replays step `--step` under every arm for `--horizon` steps and prints, per arm and seed, the wall seconds
(the replay's own steps, the held-out losses and the harmful score's generation on `--eval-n` prompts per
harmful suite), the sentence the dashboard shows, and the budget check: under 2 minutes per step-arm
(issue 33). The model and data are loaded once (RunWorld) and not counted per arm; their time is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGET_S = 120.0
TRAIN = ["method=random", "data.n_train=1000", "optim.epochs=2", "optim.batch_size=32", "eval.every=0", "eval.final_n=50",
         "record.checkpoint_every=20", "record.checkpoint_keep=5", "eval.influence_every=20", "eval.influence_n=64", "progress=false"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="an existing run folder with a step checkpoint at --step")
    ap.add_argument("--runs-dir", default="runs/bench_replay")
    ap.add_argument("--step", type=int, default=40)
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--eval-n", type=int, default=50)
    a = ap.parse_args(argv)

    import torch

    from explorer.replay.replay import RunWorld, replay
    from explorer.runs import replays

    run_dir = a.run
    if run_dir is None:
        from explorer.config import load_config
        from explorer.train.recipe import run

        t = time.time()
        run_dir = run(load_config(None, [f"runs_dir={a.runs_dir}", *TRAIN]))
        print(f"trained {run_dir} in {time.time() - t:.1f} s")
    t = time.time()
    world = RunWorld(run_dir)
    print(f"loaded the run (model, data, held-out sets) in {time.time() - t:.1f} s; torch threads "
          f"{torch.get_num_threads()}")
    r = replay(run_dir, a.step, a.horizon, seeds=a.seeds, eval_n=a.eval_n, world=world)
    print(f"\nreplay {r.replay_id}: step {a.step}, horizon {a.horizon}, {r.meta['n_batch']} samples, "
          f"{r.meta['n_dropped']} dropped; {r.meta['n_refusal_prompts']} refusal prompts, eval_n {a.eval_n}")
    print(r.rows[["arm", "seed", "n_arm", "refusal_loss", "harmful_score", "task_loss", "seconds", "cpu_seconds"]]
          .to_string(index=False))
    worst = float(r.rows["seconds"].max())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nwall seconds per step-arm: mean {r.rows['seconds'].mean():.1f}, max {worst:.1f} "
          f"({'under' if worst < BUDGET_S else 'OVER'} the {BUDGET_S:.0f} s budget); CPU seconds per step-arm: mean "
          f"{r.rows['cpu_seconds'].mean():.1f} over {torch.get_num_threads()} threads; load average {load:.1f} on "
          f"{os.cpu_count()} cores (a shared machine's wall time includes the wait for a core)")
    for _, s in replays.summarize(r.rows).iterrows():
        print("  " + replays.sentence(s))
    return 0 if worst < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
