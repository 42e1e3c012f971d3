# %% [markdown]
# # 5 · PACT: a few safety tokens, constrained
#
# **What you will learn.** PACT ("Few Tokens, Big Leverage", KDD 2026) mixes in no safety data. It finds
# the handful of tokens on which alignment shows — where the aligned model is more confident than the
# base model while refusing — and, while fine-tuning, pulls the model's distribution over *those tokens
# only* towards a frozen aligned reference with a gated KL. Every other token is left free.
#
# You will (1) pick a safety set by the paper's rule on a toy vocabulary, (2) see what the gate does at
# each response position, (3) check which logits the KL pulls and which it leaves alone, and (4) run PACT
# on the tiny world next to plain SFT.

# %%
import os

import pandas as pd
import plotly.express as px
import torch

from explorer import viz
from explorer.config import load_config
from explorer.data.sample import repo_root
from explorer.methods.pact import competitive_index, gate, mixed_target, pact_kl, safety_set
from explorer.prepare import tiny
from explorer.runs import reader
from explorer.train.recipe import run

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
RUNS = str(repo_root() / "runs" / "notebooks")
tiny.ensure_prepared()

# %% [markdown]
# ## 1. The safety set S
# Stage 1 teacher-forces refusals through the aligned model π_A and the base model π_B and averages
# their next-token distributions: d = p̄_A − p̄_B. S is the top-k tokens by p̄_A; on S, d is z-scored and
# L2-normalised to v, and the weights are w = max(v, 0). A toy vocabulary of eight words:

# %%
vocab = ["i", "cannot", "sorry", "help", "sure", "here", "the", "step"]
p_A = torch.tensor([0.22, 0.20, 0.18, 0.12, 0.02, 0.03, 0.13, 0.10])   # aligned, while refusing
p_B = torch.tensor([0.05, 0.01, 0.01, 0.08, 0.20, 0.20, 0.25, 0.20])   # base, same positions
S, v, w = safety_set(p_A - p_B, p_A, k=5)
pd.DataFrame({"token": [vocab[i] for i in S], "p̄_A": p_A[S], "d": (p_A - p_B)[S], "v": v[S], "w": w[S]})

# %% [markdown]
# "the" is in S (the aligned model uses it a lot) but gets weight 0: the base model uses it even more.
# "sure" and "here" — compliance openers — are not in S at all, so PACT never sees them. The method
# constrains refusal words, not compliance words.
#
# ## 2. The gate c_t
# At response position t the target mixes the reference's full-context logits z_full with its logits
# *without the prompt*, z_post: z_mix = (1 − c_t) z_full + c_t z_post. The gate opens when the model being
# fine-tuned has become less decided over S than the prompt-free reference — I is the share of S needed
# to reach 90 % of the mass — and it closes after the first N = 8 positions.

# %%
peaked, flat = torch.tensor([6.0, 1, 0, 0, 0]), torch.zeros(5)
print("I(peaked) =", float(competitive_index(peaked)), " I(flat) =", float(competitive_index(flat)))
t = torch.arange(32)
rows = [{"t": int(i), "c_t": float(c), "I_trained − I_post": dI}
        for dI in (-0.4, 0.0, 0.4) for i, c in zip(t, gate(torch.full((32,), dI), torch.zeros(32), t))]
px.line(pd.DataFrame(rows), x="t", y="c_t", color="I_trained − I_post", markers=True,
        title="the gate over response positions (α = 2, b = 0, N = 8, τ_d = 8)")

# %% [markdown]
# ## 3. What the KL pulls, and what it leaves free
# L_PACT = T² · KL(q_t ‖ softmax(z_θ,S / T)) with q_t ∝ softmax(z_mix,S / T) ⊙ w. Take a model's logits
# over the whole toy vocabulary and look at the gradient of the loss on each of them:

# %%
z_theta = torch.tensor([0.5, 0.2, 0.1, 0.3, 2.5, 1.5, 0.8, 0.4], requires_grad=True)  # drifting towards "sure"
z_ref = torch.log(p_A)                                                                  # the aligned reference
q = mixed_target(z_ref[S], z_ref[S], torch.tensor(0.0), w[S])
pact_kl(q, z_theta[S]).backward()
g = pd.DataFrame({"token": vocab, "in S": [i in S.tolist() for i in range(len(vocab))],
                  "w": [float(w[i]) for i in range(len(vocab))], "∂L/∂z": z_theta.grad.tolist()})
g

# %%
assert (g.loc[~g["in S"], "∂L/∂z"] == 0).all()   # tokens outside S: exactly no gradient
print("descending the loss raises the logits with ∂L/∂z < 0:", ", ".join(g.loc[g["∂L/∂z"] < 0, "token"]))

# %% [markdown]
# "sure" keeps all its probability: the KL is renormalised over S, so the total mass the model puts on S
# is not constrained. The model can move mass to a compliance opener outside S at no cost — one
# possible reason why PACT weakens at higher harmful ratios in the tiny world (docs/methods/pact.md).
#
# ## 4. PACT on the tiny world, next to SFT
# `configs/pact_demo.yaml` (k = 20 safety tokens for a ~550-word vocabulary; the file says why).

# %%
quick = ["data.n_train=160", "eval.final_n=40", "eval.every=0", "method.n_refusals=64"] if QUICK else []
common = [f"runs_dir={RUNS}", "progress=false", "data.harmful_ratio=0.2", *quick]
pact = run(load_config(repo_root() / "configs" / "pact_demo.yaml", common + ["run_name=nb05_pact"]))
sft = run(load_config(repo_root() / "configs" / "pact_demo.yaml", common + ["method=sft", "run_name=nb05_sft"]))
tokens = reader.table(pact, "pact_tokens")
viz.pact_token_bars(tokens)

# %%
positions = reader.table(pact, "pact_positions")
viz.pact_gates(positions)

# %%
viz.pact_kl_by_position(positions)

# %%
pd.DataFrame([reader.run_row(r) for r in (sft, pact)])[["method", "harmful_ratio", "HS hh", "HS hexphi", "task acc"]]

# %% [markdown]
# ## Exercise
# How many of the k safety tokens of the tiny aligned model get a **positive** weight w_s (the others are
# in S but carry no target mass)? Count them from `tokens` and store the number in `n_positive`.

# %%
n_positive = int((tokens["weight"] > 0).sum())  # your answer

# %%
expected = int((tokens["v"] > 0).sum())   # w = max(v, 0)
assert n_positive == expected, f"not quite: {expected} of the {len(tokens)} tokens have w > 0"
print(f"correct: {n_positive} of {len(tokens)} safety tokens carry weight")
