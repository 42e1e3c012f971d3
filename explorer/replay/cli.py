"""`explorer replay RUN --step S [--horizon K] [--arms kept,dropped,random,all] [--seeds 0,1,2] [--loo]`.

Registered by explorer/cli.py the way the dashboard's `app` is (add_parser). Prints one sentence per
metric (explorer.runs.replays.sentence) and where the rows were written.
"""

from __future__ import annotations

import sys


def _cmd(a) -> int:
    from explorer.replay.replay import ReplayError, RunWorld, leave_one_out, replay
    from explorer.runs import replays, schema

    try:
        world = RunWorld(a.run, a.device, a.heldout_n)
        if a.loo:
            df = leave_one_out(a.run, a.step, a.horizon, world=world,
                               progress=lambda r: print(f"  without {r['sample_id']}: loo_safety "
                                                        f"{r['loo_safety']:+.5f}", file=sys.stderr, flush=True))
            print(f"leave-one-out over the {len(df)} samples of step {a.step}, horizon {a.horizon}: "
                  f"{a.run}/{schema.LOO}/ (loo_id {df['loo_id'].iloc[0]})")
            print(df[["sample_id", "kept", "loo_safety", "loo_task"]].to_string(index=False))
            return 0
        r = replay(a.run, a.step, a.horizon, a.arms, a.seeds, eval_n=a.eval_n, generate=not a.no_generate,
                   world=world, progress=lambda row: print(
                       f"  {row['arm']:8s} seed {row['seed']}: refusal loss {row['refusal_loss']:.5f}, harmful "
                       f"{row['harmful_score']:.1f}, task loss {row['task_loss']:.5f} ({row['seconds']:.1f} s)",
                       file=sys.stderr, flush=True))
    except ReplayError as e:
        print(f"explorer replay: error: {e}", file=sys.stderr)
        return 2
    print(f"replay {r.replay_id} of {a.run} from {r.meta['checkpoint']} -> {a.run}/{schema.REPLAYS}/")
    for _, row in replays.summarize(r.rows).iterrows():
        print("  " + replays.sentence(row))
    note = replays.deterministic_note(r.rows)
    if note:
        print("  note: " + note)
    diff = r.meta.get("checkpoint_loss_diff")
    print(f"  checkpoint check: per-sample losses at step {a.step} differ from the run's by at most {diff:.3g}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="counterfactual replay of one step of a run from its step checkpoint")
    p.add_argument("run", help="the run folder (trained with record.checkpoint_every > 0)")
    p.add_argument("--step", type=int, required=True, help="S: the step whose batch the arms split "
                   "(a step with a checkpoint: checkpoints/step-S/)")
    p.add_argument("--horizon", type=int, default=1, help="K: steps replayed, S itself and K-1 recorded ones")
    p.add_argument("--arms", default="kept,dropped,random,all", help="comma-separated: kept, dropped, random, all")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (the random arm's draw; dropout)")
    p.add_argument("--eval-n", type=int, default=50, help="held-out prompts per harmful suite (0: all)")
    p.add_argument("--heldout-n", type=int, default=None,
                   help="prompts per held-out loss (default: the run's influence_n, the first-order check's sets)")
    p.add_argument("--no-generate", action="store_true", help="skip the harmful score (losses only)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] (default: the run's)")
    p.add_argument("--loo", action="store_true", help="exact leave-one-out over the batch of step S instead "
                   "of the arms (one replay per sample; no generation)")
    p.set_defaults(func=_cmd)
