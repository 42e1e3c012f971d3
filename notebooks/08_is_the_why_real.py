# %% [markdown]
# # 8 · Is the why real? Testing a selection score against chance and against its measured effect
#
# **What you will learn.** The dashboard explains every decision with the method's own score. That
# explanation is only worth something if the score carries signal. You will learn two honest tests:
#
# 1. **against chance** — what would a *random* selection of the same sizes give? The Jaccard overlap of
#    two random reference selections, and the harmful-drop recall of a random drop, have exact expected
#    values; a permutation test says how surprising the observed value is;
# 2. **against the measured effect** — an independent check that reads no method score: the
#    first-order (TracIn-style) effect of one step on each sample on a *held-out* refusal loss,
#    compared with the method's preference by a rank correlation.
#
# A score that passes neither test explains nothing, however precise its numbers look. Both tests still
# rest on estimates, so the notebook ends with the ground truth: **replaying** a step of the run from its
# checkpoint with another set of samples, and exact **leave-one-out** over one batch.
#
# `QUICK` (`EXPLORER_NB_QUICK=1`, as the test suite sets it) trains on 160 samples for one epoch; the
# full notebook uses the demo configs' setting (1,000 samples, p = 0.1, 3 epochs); docs/why_results.md has
# the same checks over seeds.

# %%
import os

import numpy as np
import pandas as pd
import torch

from explorer import viz
from explorer.config import load_config
from explorer.data.sample import repo_root
from explorer.prepare import tiny
from explorer.runs import chance, reader
from explorer.train.recipe import run

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
RUNS = str(repo_root() / "runs" / "notebooks" / "why")
tiny.ensure_prepared()

# %% [markdown]
# ## 1. How much do two random selections overlap?
# DualSelect re-selects its K_ref safety references every few steps. If two consecutive selections of
# 60 out of 600 overlap by 0.05, is that stable or random? Two random draws A, B of sizes a and b share
# X items, X hypergeometric, so E[J] = Σ_x P(X = x) · x / (a + b − x) — exact. Check it by simulation:

# %%
rng = np.random.default_rng(0)
sims = [len(set(rng.choice(600, 60, replace=False)) & set(rng.choice(600, 60, replace=False))) for _ in range(5000)]
sim_j = np.mean([x / (120 - x) for x in sims])
print(f"exact E[J] = {chance.expected_jaccard(600, 60, 60):.4f}, simulated {sim_j:.4f}, "
      f"95 % of random pairs overlap less than {chance.jaccard_quantile(600, 60, 60):.3f}")

# %% [markdown]
# ## 2. Two tiny-world runs that record the independent check
# DualSelect (its demo settings) and Random (keeps the same half of every batch, at random), both with
# `influence_every`: every few steps each task sample's effect on the held-out refusal loss
# (`effect_safety`) and on a held-out task loss (`effect_task`) is recorded beside the method's scores.

# %%
common = ["progress=false", "eval.every=0", f"runs_dir={RUNS}", "eval.influence_n=32"]
common += (["data.n_train=160", "optim.epochs=1", "eval.final_n=20", "eval.influence_every=1", "method.warmup_steps=1",
            "method.refresh_every=2", "method.ref_cap=120"] if QUICK else ["eval.final_n=50", "eval.influence_every=4"])
# checkpoint_every: step checkpoints (checkpoints/step-N/) for the replays of section 5; saving them draws no
# random number, so DualSelect decides exactly as without them
ds = run(load_config(repo_root() / "configs" / "dualselect_demo.yaml",
                     [*common, "run_name=nb08_dualselect", f"record.checkpoint_every={2 if QUICK else 16}"]))
rnd = run(load_config(None, [*[c for c in common if not c.startswith("method.")], "method=random",
                             "run_name=nb08_random"]))

# %% [markdown]
# The refresh chart with its chance line: bars are the observed overlaps, the dashed line what two random
# selections of the same sizes give on average. Bars at the line mean the selection keeps no more of its
# references than a coin would.

# %%
summary = chance.refresh_chance(reader.refresh_summary(ds))
viz.refresh_jaccard(summary)

# %%
summary[["refresh_id", "step", "n_selected", "jaccard_prev", "jaccard_chance", "jaccard_p"]]

# %% [markdown]
# ## 3. Task selection against chance
# Provenance (benign / harmful) is for analysis only; no method reads it. With it we can ask: of the
# harmful samples the method was shown, what share did it drop (**recall**)? A random drop of d of the n
# samples of a batch removes d·h/n of its h harmful samples on average: that is the **chance** recall.
# Under that null the harmful drops of each batch are hypergeometric and independent, so the law of the
# run's total is their convolution, and the **permutation p-value** — the share of all re-shufflings of
# the drop labels inside each batch that drop at least as many harmful samples — is exact.

# %%
results = []
for name, d in (("dualselect", ds), ("random", rnd)):
    r = chance.from_counts(reader.selection_counts(d))
    results.append({"label": name, **r.as_dict()})
results = pd.DataFrame(results)
print("badge rule:", chance.BADGE_RULE)
results[["label", "recall", "chance", "lift", "p_value", "badge", "n_harmful", "n_dropped"]]

# %%
viz.recall_chance_bars(results)

# %% [markdown]
# ## 4. Does the independent check measure what it says?
# For a training sample z and a held-out loss L, one SGD step of size η on z alone changes L by
# −η·⟨∇ℓ_z, ∇L⟩ + O(η²). Sign convention: **effect > 0 means the held-out loss rises**; for the refusal
# loss that means the sample would **lower safety**. Take one batch of the run's data at the starting model
# and compare the predicted change with the change one real step causes.

# %%
from explorer.data.sample import read_sample_file, sample_data_dir  # noqa: E402
from explorer.data.tokenize import collate, encode_all, pad_id_of  # noqa: E402
from explorer.eval.evaluate import load_suites  # noqa: E402
from explorer.model.load import load_model  # noqa: E402
from explorer.model.losses import per_sample_nll  # noqa: E402
from explorer.prepare.specs import resolve_spec  # noqa: E402
from explorer.scoring import influence  # noqa: E402

model, tok, _ = load_model(resolve_spec("tiny:aligned"), torch.device("cpu"), "float32")
pad = pad_id_of(tok)


def encode(recs):
    return collate(encode_all(tok, recs, 64, strict=False)[0], pad, torch.device("cpu"))


data = sample_data_dir()
held = [r for s in load_suites(data, n_per_suite=32) if s.kind == "harmful" for r in s.records]
heldout = encode(influence.refusal_records(held))
pool = read_sample_file(data / "harmful_train.jsonl")[:4] + read_sample_file(data / "task_train.jsonl")[:4]
batch = encode(pool)
lr = 1e-3
pred = influence.first_order_effects(model, batch, {"s": influence.heldout_gradient(model, heldout)}, lr)["s"]


def heldout_loss(m):
    with torch.no_grad():
        out = m(input_ids=heldout.input_ids, attention_mask=heldout.attention_mask)
        return float(per_sample_nll(out.logits, heldout.labels).mean())


base, actual = heldout_loss(model), []
for i in range(len(batch)):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(input_ids=batch.input_ids[i:i + 1], attention_mask=batch.attention_mask[i:i + 1])
    grads = torch.autograd.grad(per_sample_nll(out.logits, batch.labels[i:i + 1])[0], list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= lr * g
    actual.append(heldout_loss(model) - base)
    model.load_state_dict(state)
pd.DataFrame({"sample": [r.sample_id for r in pool], "provenance": [r.provenance for r in pool],
              "predicted effect_safety": pred.numpy(), "actual change": actual})

# %% [markdown]
# Read the two columns against each other: the prediction should match the real step closely (the
# error is O(lr²)), and a harmful compliance should raise the held-out refusal loss more than a benign
# task sample does — if not, the check itself would need explaining before it can judge a method.
# Now the question the dashboard asks at every recorded step: does the
# method **prefer** the samples the check says help? Spearman's ρ between the method's preference (its
# score oriented so that larger = kept) and −effect: +1 perfect agreement, 0 unrelated.

# %%
rows_ds = reader.effect_rows(ds)
viz.score_vs_effect(rows_ds, "effect_safety")

# %%
pd.DataFrame([{"method": name, **{f"ρ {e}": chance.score_effect_correlation(reader.effect_rows(d), e)["rho"]
                                  for e in ("effect_safety", "effect_task")}}
              for name, d in (("dualselect", ds), ("random", rnd))])

# %% [markdown]
# Random's "preference" is its keep weight, drawn at random: its ρ scatters around 0 — what a score that
# carries no signal looks like. A method earns the sentence "it chose this sample for a reason" only when
# it beats chance *and* its preference tracks the measured effect, over several seeds
# (`benchmarks/why_report.py` prints both for every method).

# %% [markdown]
# ## 5. The ground truth: replay a step
# Every number so far is an estimate. A **replay** measures instead: from the run's checkpoint at step S
# it trains step S again on one *arm* of that step's batch — what DualSelect **kept**, what it
# **dropped**, a **random** drop of the same size, or **all** of it — then the next K−1 steps exactly as
# the run recorded them, and measures the held-out refusal loss, the harmful score and the task loss.
# Only step S differs between arms, so `kept − all` is what DualSelect's drop did, and `random − all`
# what dropping as many samples at random does. The seeds vary the random arm's draw (the tiny model has
# no dropout, so the other arms are deterministic: their ± is 0).

# %%
from explorer.replay.replay import RunWorld, leave_one_out, replay  # noqa: E402
from explorer.runs import replays  # noqa: E402
from explorer.viz.why import estimate_vs_loo  # noqa: E402

S = reader.step_checkpoints(ds)[0]
world = RunWorld(ds)                  # the run's model, data and held-out sets, loaded once
rep = replay(ds, step=S, horizon=2 if QUICK else 8, seeds=(0, 1) if QUICK else (0, 1, 2),
             eval_n=10 if QUICK else 50, world=world)
for _, s in replays.summarize(rep.rows).iterrows():
    print(replays.sentence(s))
print(replays.deterministic_note(rep.rows) or "")
print(f"checkpoint check: per-sample losses at step {S} differ from the run's by {rep.meta['checkpoint_loss_diff']:.2g}")
rep.rows[["arm", "seed", "n_arm", "refusal_loss", "harmful_score", "task_loss"]]

# %% [markdown]
# With a handful of prompts the harmful score moves in steps of several points and one step rarely moves it;
# the refusal loss is continuous, and the place to read a single step's effect. Now per sample: **exact
# leave-one-out** trains step S on the whole batch less one sample, for each sample, and measures the
# refusal loss. `loo_safety` = loss with the sample − loss without it: > 0 means the sample lowers safety,
# the same sign as `effect_safety`. How well do the estimates rank the samples as the truth does?

# %%
batch = reader.batch_at(ds, S)
# QUICK leaves out 10 of the batch's samples (one replay each); the full notebook every one of them
loo = leave_one_out(ds, S, horizon=1, world=world, samples=batch["sample_id"].tolist()[:10] if QUICK else None)
both = loo.merge(batch.drop(columns=["kept"]), on="sample_id")
cmp = replays.loo_comparison(loo, batch)
print(f"step {S}, {cmp['n']} samples: ρ(first-order effect_safety, leave-one-out) = {cmp['rho first-order']:.2f}; "
      f"ρ(DualSelect's preference ({cmp['score column']}), −leave-one-out) = {cmp['rho score']:.2f}")
estimate_vs_loo(both, "effect_safety")

# %% [markdown]
# Read it as a test of the explanations, not of the method: a ρ near 1 for the first-order effect means
# its per-sample story is the one the model tells when retrained; a ρ near 0 means the estimate, however
# principled, does not say what a sample does at this step. `benchmarks/why_report.py --loo-step S --ekfac`
# runs the same comparison over seeds with EK-FAC at the checkpoint's weights too; docs/why.md reports what holds.

# %% [markdown]
# ## Exercise
# Compute, **by hand** from DualSelect's decision rows, (a) `chance_recall`: the recall a random drop of
# the same size in every batch would achieve on average, and (b) `p_shuffled`: the permutation p-value by
# simulation — shuffle the dropped/kept labels inside every batch 2,000 times and count how often at least
# as many harmful samples are dropped as DualSelect dropped. The check compares your numbers with the
# exact ones, which `explorer.runs.chance` computes from counts taken in DuckDB.

# %%
dec = reader.decisions(ds, role="task").merge(reader.samples(ds)[["sample_id", "provenance"]], on="sample_id")
dec = dec.assign(harmful=dec["provenance"].eq("harmful"), dropped=~dec["kept"].astype(bool))
per_step = dec.groupby("step").agg(n=("harmful", "size"), h=("harmful", "sum"), d=("dropped", "sum"))
chance_recall = float((per_step["d"] * per_step["h"] / per_step["n"]).sum() / per_step["h"].sum())  # your answer
observed = int((dec["harmful"] & dec["dropped"]).sum())
gen = np.random.default_rng(0)
totals = np.zeros(2000)
for _, g in dec.groupby("step"):
    h, d = g["harmful"].to_numpy(), int(g["dropped"].sum())
    for k in range(2000):
        totals[k] += h[gen.permutation(len(h))[:d]].sum()
p_shuffled = float((totals >= observed).mean())  # your answer

# %%
exact = chance.from_counts(reader.selection_counts(ds))
assert abs(chance_recall - exact.chance) < 1e-9, f"not quite: a random drop's recall is {exact.chance:.4f}"
assert abs(p_shuffled - exact.p_value) < 0.02 + 0.2 * exact.p_value, (
    f"your shuffled p-value {p_shuffled:.4f} is far from the exact {exact.p_value:.4f}")
print(f"correct: chance recall {chance_recall:.3f}, shuffled p {p_shuffled:.4f} (exact {exact.p_value:.4f}) — "
      f"DualSelect is '{exact.badge}'")
