"""Counterfactual replays of a run's decisions: a ground truth for "why" (docs/why.md §5).

The dashboard explains a decision with the method's own score and two estimates of each sample's
effect (first order, EK-FAC). A replay measures the effect instead: from the run's step checkpoint
at step S it trains on, and measures, what would have happened had step S used another set:

    from explorer.replay.replay import replay, leave_one_out
    replay(run_dir, step=S, horizon=K, arms=("kept", "dropped", "random", "all"), seeds=(0, 1, 2))
    leave_one_out(run_dir, step=S, horizon=K)        # exact per-sample ground truth over one batch

`explorer replay RUN --step S [--horizon K] [--arms ...] [--seeds ...] [--loo]` is the command line.
Results land in the run folder (replays/, replay_steps/, loo/; explorer/runs/schema.py) and are read
without torch by explorer.runs.reader and explorer.runs.replays.
"""
