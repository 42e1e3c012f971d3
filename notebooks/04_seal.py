# %% [markdown]
# # 4 · SEAL: a selector learned by bilevel optimisation
#
# **What you will learn.** SEAL (Shen et al., ICLR 2025) does not score samples with a hand-written
# rule. It *learns* one logit ω_j per fine-tuning sample so that a model trained on the σ(ω)-weighted
# data stays good on safe data — a bilevel problem:
#
#     min_ω  mean ℓ(θ*(ω); z_safe)   s.t.   θ*(ω) = argmin_θ  Σ_j σ_j(ω) ℓ(θ; z_j)
#
# You will see (1) how one selector step moves the weights, (2) the schedule that hands the model
# from the safe data to the weighted task data, (3) the ranking forming over selector training on the
# tiny world, and (4) the top-p cut that decides which samples the final SFT sees.
#
# `QUICK` (`EXPLORER_NB_QUICK=1`, as the test suite sets it) shrinks the run; the code is the same.

# %%
import os

import pandas as pd
import plotly.express as px
import torch

from explorer import viz
from explorer.config import load_config
from explorer.data.sample import repo_root
from explorer.methods.seal import selector_loss, selector_weights, top_p_cut, u_at_epoch
from explorer.prepare import tiny
from explorer.runs import reader
from explorer.train.recipe import run

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
RUNS = str(repo_root() / "runs" / "notebooks")
tiny.ensure_prepared()

# %% [markdown]
# ## 1. One selector step, by hand
# The released code uses mean-one weights σ̃ = N · softmax(ω). In Algorithm 2 (the release) the selector
# descends mean_j σ̃_j(ω) · ℓ(θ; z_j), the losses detached: a sample whose loss stays **high under the
# safety-anchored model** loses weight, and through the softmax every other sample gains a little.
# Five samples, one of them with a high loss:

# %%
omega = torch.full((5,), 0.1, requires_grad=True)          # the authors' initial value
losses = torch.tensor([0.4, 0.5, 3.0, 0.6, 0.4])            # sample 2 does not fit the safe model
opt = torch.optim.Adam([omega], lr=5e-3, betas=(0.9, 0.95))  # the authors' selector optimiser
history = []
for step in range(200):
    opt.zero_grad()
    selector_loss(omega, torch.arange(5), losses).backward()
    opt.step()
    history += [{"step": step, "sample": f"z{j} (ℓ={losses[j]:.1f})", "weight σ̃": float(w)}
                for j, w in enumerate(selector_weights(omega.detach()))]
px.line(pd.DataFrame(history), x="step", y="weight σ̃", color="sample",
        title="σ̃ = N·softmax(ω) under 200 selector steps on fixed losses")

# %% [markdown]
# ## 2. Handing the model over: u = 1 − γ
# While the selector learns, a copy of the model trains on u · ℓ_safe + (1 − u) · mean σ̃_j ℓ_j. u starts
# at 1 (epoch 0 trains on the safe data only, so the losses the selector sees come from a
# *safety-anchored* model) and falls by 0.03 per epoch (the authors' setting):

# %%
pd.DataFrame({"epoch": range(6), "u (safe-loss weight)": [u_at_epoch(e, 1.0, 0.03) for e in range(6)]})

# %% [markdown]
# ## 3. SEAL on the tiny world
# `configs/seal_demo.yaml`: the authors' settings, with the changes the tiny world needs explained in
# the file. Phase 1 (the selector) runs on a copy of the aligned model; the cut keeps the top 80 % by
# ω; phase 2 is ordinary SFT of the original aligned model on the kept samples.

# %%
quick = (["data.n_train=160", "method.selector_epochs=2", "method.record_every=1", "eval.final_n=40", "eval.every=0"]
         if QUICK else [])
seal = run(load_config(repo_root() / "configs" / "seal_demo.yaml",
                       [f"runs_dir={RUNS}", "progress=false", "run_name=nb04_seal", *quick]))
selector = reader.table(seal, "seal_selector")
cut = reader.table(seal, "seal_cut")
samples = reader.samples(seal)
viz.seal_ranking(selector, cut, samples)

# %% [markdown]
# Each line is a sample (coloured by provenance, which SEAL never reads); the dashed line is the cut.
# Harmful samples sink as their loss under the safety-anchored model stays high — but so can benign
# samples of a task the aligned model has never seen (the `comparison` family): the selector cannot tell
# "unsafe" from "unfamiliar", it only sees losses.

# %%
viz.seal_weight_distribution(selector, cut)

# %%
viz.seal_cut_bars(cut, samples)

# %% [markdown]
# ## 4. The cut, and what it removed
# `top_p_cut` ranks by ω and keeps the first ⌈topp · N⌉. Which families lost most?

# %%
c = cut.merge(samples[["sample_id", "provenance", "family"]], on="sample_id")
c.groupby(["provenance", "family"])["kept"].agg(n="size", kept="sum").assign(
    dropped=lambda f: f["n"] - f["kept"])

# %%
rank, kept = top_p_cut(torch.tensor(cut["omega"].values), 0.8)
assert kept.tolist() == cut["kept"].astype(bool).tolist(), "the recorded cut is top_p_cut of the recorded ω"
row = reader.run_row(seal)
print(f"kept {int(kept.sum())} of {len(kept)}; after phase 2: harmful score {row['HS hh']} (HH-like) / "
      f"{row['HS hexphi']} (HEx-PHI-like), task accuracy {row['task acc']:.1f}")

# %% [markdown]
# ## Exercise
# The cut's **recall**: the share of the harmful-provenance samples that the cut removed. Compute it from
# `cut` and `samples` and store it in `recall` (a number between 0 and 1).

# %%
harm = c[c["provenance"] == "harmful"]
recall = float((~harm["kept"].astype(bool)).mean())  # your answer

# %%
ids = set(samples.loc[samples["provenance"] == "harmful", "sample_id"]) & set(cut["sample_id"])
expected = len(ids - set(cut.loc[cut["kept"].astype(bool), "sample_id"])) / len(ids)
assert abs(recall - expected) < 1e-9, f"not quite: the cut removed {expected:.1%} of the harmful samples"
print(f"correct: the cut removed {recall:.1%} of the harmful samples")
