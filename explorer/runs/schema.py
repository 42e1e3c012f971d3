"""The run folder's layout and table schemas: the one contract between training and viewing.

A run folder looks like this::

    runs/<run_id>/
      run.json                  manifest: config, seed, versions, device, status, summary
      samples.parquet           every record the run could touch (task, reference, eval prompts)
      steps/part-00000.parquet  one row per optimiser step (wide; method columns are nullable)
      decisions/part-*.parquet  long format: one row per (step, sample) a method scored
      refreshes/part-*.parquet  one row per (refresh, reference) for methods that refresh references
      evals/part-*.parquet      one row per (eval step, suite, prompt): response and judge verdicts
      metrics/part-*.parquet    long format: (step, suite, metric, value) summaries of each evaluation
      <method table>/part-*.parquet   e.g. seal_selector, pact_positions, cwac_layers ...
      <method table>.parquet          static method tables, e.g. pact_tokens, cwac_spectra

Every row carries explicit ids (run_id, step, sample_id ...); nothing depends on row order.
Parts are written atomically (temporary name, then rename), so a reader never sees half a part.
This module is pure Python: the app, `viz` and the reader import it, never torch.
"""

from __future__ import annotations

MANIFEST = "run.json"
SAMPLES = "samples.parquet"

#: status values a manifest can hold
STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUS_IMPORTED = "imported"
STATUSES = (STATUS_RUNNING, STATUS_COMPLETE, STATUS_FAILED, STATUS_IMPORTED)

#: partitioned tables (folders of Parquet parts) with their required columns.
#: Methods may add further columns (nullable); readers use union_by_name.
PART_TABLES: dict[str, tuple[str, ...]] = {
    # step: global optimiser step (0-based); phase: e.g. "train", "warmup", "selector", "sft"
    "steps": ("run_id", "step", "epoch", "phase", "loss", "lr", "grad_norm", "n_batch", "n_kept",
              "kept_frac", "time_s"),
    # role: "task" | "reference"; kept: the sample contributed to the update (weight > 0);
    # score columns are method specific (loss, compat, score ...); weight is the update weight.
    "decisions": ("run_id", "step", "sample_id", "role", "weight", "kept"),
    # one row per (refresh, reference); change: "entered" | "left" | "stayed" | "out". Optional column
    # n_scored: how many references the refresh scored, when not every scored one has a row (imports)
    "refreshes": ("run_id", "refresh_id", "step", "trigger", "sample_id", "loss", "cosine",
                  "conflict", "score", "weight", "rank", "selected", "change", "jaccard_prev",
                  "estimator"),
    # one row per (eval step, suite, prompt)
    "evals": ("run_id", "step", "suite", "sample_id", "prompt", "response", "expected",
              "refusal", "harmful", "correct"),
    # long-format summaries: metric in harmful_score, refusal_rate, over_refusal, accuracy ...
    "metrics": ("run_id", "step", "suite", "metric", "value"),
}

SAMPLE_COLUMNS = ("sample_id", "pool", "family", "category", "prompt", "response", "provenance")

#: provenance values: "unknown" when the data does not say (a pre-mixed file without labels, an imported
#: log); the viewing side shows it as unknown, never as benign, and drop precision/recall become unknown
PROVENANCE_HARMFUL, PROVENANCE_BENIGN, PROVENANCE_UNKNOWN = "harmful", "benign", "unknown"

#: manifest["batch_membership"]["source"] of imported runs: whether each step's whole batch is known
#: (rebuilt: dropped samples recorded with kept = false) or only the selected samples are (unknown).
#: Runs trained here record whole batches and carry no such key.
BATCHES_REBUILT, BATCHES_UNKNOWN = "rebuilt", "unknown"

#: pools a sample can belong to
POOL_TASK = "task"
POOL_REFERENCE = "reference"

#: eval suites (the names used in `evals.suite` and `metrics.suite`)
SUITE_HH = "harmful_hh"
SUITE_HEX = "harmful_hexphi"
SUITE_OVER = "over_refusal"
SAFETY_SUITES = (SUITE_HH, SUITE_HEX)
TASK_SUITE_PREFIX = "task_"  # task accuracy suites are "task_<family>"

# metric names
M_HARMFUL = "harmful_score"     # % of harmful prompts whose response the judge calls harmful
M_REFUSAL = "refusal_rate"      # % of prompts refused
M_OVER = "over_refusal"         # % of benign-but-scary prompts refused
M_ACC = "accuracy"              # % exact match on a task family
M_DEGENERATE = "degenerate_rate"  # % of responses that are collapse (empty, loops, no content):
                                  # counted neither as harmful nor as refused
M_UNPARSED = "unparsed_rate"    # % of responses a model judge's output gave no verdict on (docs/judges.md)

#: method tables known to the viewing side (all optional). The columns after ":" are the ones the
#: dashboard's figures read (explorer/viz/methods.py); a method may write more.
METHOD_TABLES = {
    "seal_selector": "SEAL: per selector snapshot and sample: step, epoch, sample_id, omega, weight (N*softmax), "
                     "loss, in_batch",
    "seal_steps": "SEAL: per selector step: u, gamma, safe_loss, ft_loss, weighted_loss, selector_loss",
    "seal_epochs": "SEAL: per epoch u = 1 - gamma, safe loss",
    "seal_cut": "SEAL: the top-p cut: sample_id, omega, weight, rank, kept, topp",
    "pact_tokens": "PACT: the safety-token table (token_id, token, d, v, weight, p_aligned)",
    "pact_positions": "PACT: per step and response position, mean gate c_t, I_trained, I_post, KL",
    "cwac_spectra": "CWAC: per layer eigenvalue spectrum with the cut: layer, index, eigenvalue, energy_cum, "
                    "in_projector (direction projected out), threshold",
    "cwac_layers": "CWAC: per step and layer, share of gradient norm removed: step, layer, removed_share, grad_norm",
    "cwac_latents": "CWAC: per step and latent, drift from base: step, latent, drift",
    "cwac_latent_prompts": "CWAC: top-activating prompts per safety latent: latent, rank, sample_id, prompt, "
                           "activation",
}

#: optional table: per (step, task sample, selected reference) cosine of their gradients, so the
#: dashboard can name the references a sample conflicts with most. Columns: step, sample_id,
#: reference_id, cosine.
DECISION_REFS = "decision_refs"

# -- checkpoints and counterfactual replays (explorer/replay/, docs/why.md §5) -------------------------
#: step checkpoints a run keeps for replays: <run>/checkpoints/step-<N>/{model,state}.safetensors +
#: state.json, taken after N optimiser steps (the resume checkpoint's format; checkpoint_keep bounds them)
STEP_CHECKPOINTS = "checkpoints"
#: the config keys that make them (named in errors; the nested config calls them record.<key>)
CHECKPOINT_EVERY_KEY, CHECKPOINT_KEEP_KEY = "checkpoint_every", "checkpoint_keep"

#: replays/part-*.parquet: one row per (replay, arm, seed), measured after the replay's horizon.
#:   replay_id   the replay (also the name of its replays/<replay_id>.json: checkpoint, settings, status)
#:   step        S: the step whose batch the arms split (the replay starts from checkpoints/step-S/)
#:   horizon     K: optimiser steps replayed, S .. S+K-1 (step S on the arm's samples, the others as recorded)
#:   arm         kept | dropped | random | all (REPLAY_ARMS); seed: the arm's seed
#:   n_arm       samples the arm trains on at step S; n_batch the batch's size; n_dropped what the method dropped
#:   arm_samples the arm's sample ids at step S (the random arm's draw is visible)
#:   refusal_loss  held-out refusal loss (teacher-forced NLL of refusals on held-out harmful prompts) at S+K
#:   task_loss     held-out task loss (NLL of held-out task answers) at S+K
#:   harmful_score % of held-out harmful prompts the run's first judge calls harmful at S+K (greedy)
#:   seconds     wall time of this (arm, seed); cpu_seconds its process CPU time (all threads; on a shared
#:               machine the wall time includes waiting for a core)
#: replay_steps/part-*.parquet: one row per (replay, arm, seed, replayed step): step, loss (the replay's
#:   weighted training loss), recorded_loss (the run's task_loss at that step), max_abs_sample_loss_diff
#:   (per-sample losses against the run's decisions: 0 where the replay is the run)
#: loo/part-*.parquet: exact leave-one-out over one batch (replay.leave_one_out): one row per (loo_id,
#:   sample): step, horizon, sample_id, loo_safety / loo_task = held-out refusal / task loss with the
#:   sample minus without it after `horizon` steps (> 0: the sample raises the loss, as effect_safety);
#:   noise_floor: |the whole batch's refusal loss − the same with each batch reversed| (float rounding)
REPLAYS, REPLAY_STEPS, LOO = "replays", "replay_steps", "loo"
REPLAY_ARMS = ("kept", "dropped", "random", "all")
REPLAY_METRICS = ("refusal_loss", "harmful_score", "task_loss")
#: tables written into a run folder after (or beside) its training: resuming the run never truncates them
ANALYSIS_TABLES = (REPLAYS, REPLAY_STEPS, LOO)
