# %% [markdown]
# # 6 · CWAC: protect the weights *and* the activations
#
# **What you will learn.** CWAC (ACL 2026) starts from how a layer's output drifts under fine-tuning,
# y = f(W h):
#
#     Δy ≈ f′(W₀h₀) ⊙ (W₀ Δh  +  ΔW h₀)
#              activation term   weight term
#
# and constrains both terms. You will (1) build the harmful-input subspace of an MLP output projection
# and the projector Π that keeps gradient steps out of it, (2) see that this alone leaves the activation
# term free — which is why the paper couples it with (3) a sparse autoencoder's safety latents held at
# their aligned values, and (4) run CWAC on the tiny world.

# %%
import copy
import os

import pandas as pd
import plotly.express as px
import torch

from explorer import viz
from explorer.config import load_config
from explorer.data.sample import read_sample_file, repo_root, sample_data_dir
from explorer.data.tokenize import encode_batch
from explorer.interp.hooks import capture, modules_named
from explorer.interp.sae import encode_batched, train_sae
from explorer.interp.subspace import CovarianceAccumulator, energy_cut, project_right, small_eigen_subspace
from explorer.methods.cwac import pool_codes, prompt_mask, select_safety_latents
from explorer.model.load import load_model
from explorer.model.losses import per_sample_nll
from explorer.model.plumbing import decoder_layers
from explorer.prepare import tiny
from explorer.prepare.specs import resolve_spec
from explorer.runs import reader
from explorer.train.recipe import run

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
RUNS = str(repo_root() / "runs" / "notebooks")
tiny.ensure_prepared()
model, tok, _ = load_model(resolve_spec("tiny:aligned"))
data = sample_data_dir()

def batch(records):
    return encode_batch(tok, records, max_length=64)

harmful = batch(read_sample_file(data / "reference_pool.jsonl")[:128])   # harmful prompt -> refusal
benign = batch(read_sample_file(data / "task_train.jsonl")[::31][:128])  # task samples
down = modules_named(model, "mlp.down_proj")                             # the constrained layers

def down_inputs(m, b):
    """Inputs of every down_proj on the prompt tokens of batch b: name -> [tokens, 384]."""
    mods = modules_named(m, "mlp.down_proj")
    with capture(mods, what="input") as got, torch.no_grad():
        m(input_ids=b.input_ids, attention_mask=b.attention_mask)
    return {n: got[n][0][prompt_mask(b)] for n in mods}

# %% [markdown]
# ## 1. The harmful-input subspace and Π
# For one layer, C = X Xᵀ over its inputs on harmful prompts. Its top eigenvectors hold 99 % of the
# energy Σλ: those directions are *protected*. Π projects onto the small-eigenvalue rest, and every
# gradient is right-multiplied by it, G ← G Π, so a step ΔW = −η G Π satisfies ΔW X ≈ 0 on harmful inputs.

# %%
X = down_inputs(model, harmful)
subspaces = {}
for name, x in X.items():
    acc = CovarianceAccumulator(x.shape[1])
    acc.add(x)
    subspaces[name] = small_eigen_subspace(acc.C, energy=0.99, n_inputs=acc.n)
spectra = pd.concat([pd.DataFrame({"layer": n, "index": range(len(s.evals)), "eigenvalue": s.evals.numpy(),
                                   "energy_cum": s.energy_cum().numpy(),
                                   "in_projector": [i >= s.rank_kept for i in range(len(s.evals))]})
                     for n, s in subspaces.items()])
print({n: f"{s.rank_kept} of {len(s.evals)} directions protected" for n, s in subspaces.items()})
viz.cwac_spectrum(spectra)

# %%
name = list(subspaces)[-1]
sub, Xh, Xb = subspaces[name], X[name], down_inputs(model, benign)[name]
G = torch.randn(128, Xh.shape[1], generator=torch.Generator().manual_seed(0))   # some gradient of W [out, in]
GP = project_right(G, sub.U_top)
Pi = sub.projector()
print("Π idempotent: max |ΠΠ − Π| =", float((Pi @ Pi - Pi).abs().max()))
print("share of G's effect kept on harmful inputs  ‖GΠXᵀ‖/‖GXᵀ‖ =", float((GP @ Xh.T).norm() / (G @ Xh.T).norm()))
print("share of G's effect kept on benign inputs   ‖GΠXᵀ‖/‖GXᵀ‖ =", float((GP @ Xb.T).norm() / (G @ Xb.T).norm()))
print("share of the gradient norm removed          1 − ‖GΠ‖/‖G‖ =", float(1 - GP.norm() / G.norm()))

# %% [markdown]
# The projection nearly silences the update on harmful inputs. Compare its effect on benign inputs:
# where the two input distributions share directions, protecting safety also slows the task.
#
# ## 2. Why the weight constraint is not enough
# Fine-tune a copy on harmful compliance samples with **every** down_proj gradient projected, and
# measure the two terms of Δy at the last layer on harmful prompts.

# %%
ft = copy.deepcopy(model)
opt = torch.optim.SGD(ft.parameters(), lr=0.05)
bad = batch(read_sample_file(data / "harmful_train.jsonl")[:32])        # harmful request -> "[details withheld]"
ft_down = modules_named(ft, "mlp.down_proj")
for step in range(10 if QUICK else 30):
    opt.zero_grad()
    per_sample_nll(ft(input_ids=bad.input_ids, attention_mask=bad.attention_mask).logits, bad.labels).mean().backward()
    for n, m in ft_down.items():
        m.weight.grad = project_right(m.weight.grad, subspaces[n].U_top)
    opt.step()
X1 = down_inputs(ft, harmful)[name]
W0, W1 = down[name].weight.detach(), ft_down[name].weight.detach()
weight_term = float(((W1 - W0) @ Xh.T).norm())
activation_term = float((W0 @ (X1 - Xh).T).norm())
assert weight_term < 0.1 * activation_term   # the lesson of this section, checked
pd.DataFrame({"term": ["weight term ‖ΔW h₀‖", "activation term ‖W₀ Δh‖", "for scale: the output ‖W₀ h₀‖"],
              "size": [weight_term, activation_term, float((W0 @ Xh.T).norm())]})

# %% [markdown]
# The weight term is held near zero, but the layer's *inputs* moved: earlier layers, attention and the
# embeddings are free, and they carry the drift into the protected layer. CWAC's second constraint
# targets that term directly, through features of the residual stream.
#
# ## 3. A sparse autoencoder and its safety latents
# A TopK SAE (k active latents per token) trained on the residual stream after layer 0, on task text and
# refused harmful prompts. The safety latents are those whose mean activation on harmful prompts exceeds
# that on benign inputs the most (the paper does not state its rule; explorer's is recorded).

# %%
layer = decoder_layers(model)[0]
def residual(b):
    with capture({"r": layer}) as got, torch.no_grad():
        model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    return got["r"][0]                                                   # [B, T, 128]

Rh, Rb = residual(harmful), residual(benign)
acts = torch.cat([Rh[harmful.attention_mask.bool()], Rb[benign.attention_mask.bool()]])
sae, quality = train_sae(acts, n_latents=512, k=16, steps=300 if QUICK else 1500)
z = encode_batched(sae, acts)
print(f"{len(acts)} tokens; held-out FVU {quality['fvu']:.3f}; dead latents {quality['dead_share']:.1%}; "
      f"active latents per token: max {int((z != 0).sum(1).max())} (k = {sae.k})")
mean_h = pool_codes(sae.encode(Rh), prompt_mask(harmful), "prompt_mean").mean(0)
mean_b = pool_codes(sae.encode(Rb), prompt_mask(benign), "prompt_mean").mean(0)
top, diff = select_safety_latents(mean_h.detach(), mean_b.detach(), m=16)
px.bar(pd.DataFrame({"latent": [str(i) for i in top.tolist()], "harmful": mean_h[top].detach(),
                     "benign": mean_b[top].detach()}), x="latent", y=["harmful", "benign"], barmode="group",
       title="the 16 safety latents: mean activation on harmful prompts vs benign inputs")

# %% [markdown]
# During fine-tuning CWAC forwards a batch of harmful prompts each step and adds
# λ · mean‖z − z_base‖² over these latents (λ = 0.5), z_base being their values under the aligned model.
#
# ## 4. CWAC on the tiny world
# `configs/cwac_demo.yaml` (sizes scaled to the tiny model; the file says why), next to SFT.

# %%
quick = (["data.n_train=160", "eval.final_n=40", "eval.every=0", "method.sae_steps=200", "method.cov_prompts=128",
          "method.n_base_prompts=64", "method.selection_prompts=128", "method.sae_texts=300"] if QUICK else [])
common = [f"runs_dir={RUNS}", "progress=false", *quick]
cwac = run(load_config(repo_root() / "configs" / "cwac_demo.yaml", common + ["run_name=nb06_cwac"]))
sft = run(load_config(repo_root() / "configs" / "cwac_demo.yaml", common + ["method=sft", "run_name=nb06_sft"]))
viz.cwac_removed_share(reader.table(cwac, "cwac_layers"))

# %%
viz.cwac_latent_drift(reader.table(cwac, "cwac_latents"))

# %%
pd.DataFrame([reader.run_row(r) for r in (sft, cwac)])[["method", "harmful_ratio", "HS hh", "HS hexphi", "task acc"]]

# %% [markdown]
# The full runs (docs/methods/cwac.md, and the methods table in docs/methods/index.md) show how much
# CWAC lowers the harmful score in this world, and the ablations (`method.constraints=weight` or
# `activation`) beside it; the internals above show what to look at: how large the penalty is against
# the task loss, and that in full fine-tuning every weight outside down_proj is free.
# The paper leaves the SAE layer open. In a two-layer model the last layer's output is one norm away
# from the logits, so constraining it is closer to distilling the aligned outputs than to the paper's
# mid-network features.
#
# ## Exercise
# With energy 0.9 instead of 0.99, how many directions r of the layer `name` would be protected? r is the
# smallest number of leading eigenvalues whose sum reaches 90 % of Σλ. Compute it from `sub.evals` with
# a cumulative sum and store it in `r90`.

# %%
share = torch.cumsum(sub.evals, 0) / sub.evals.sum()
r90 = int((share < 0.9).sum()) + 1  # your answer

# %%
expected = energy_cut(sub.evals, 0.9)
assert r90 == expected, f"not quite: {expected} directions hold 90 % of the energy"
print(f"correct: {r90} of {len(sub.evals)} directions hold 90 % of the energy ({sub.rank_kept} hold 99 %)")
