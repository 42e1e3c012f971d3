# %% [markdown]
# # 2 · Gradients that conflict
#
# **What you will learn.** How per-sample gradients are computed in one batched pass, what the cosine
# between a task sample's gradient and the mean gradient of safety references means, and what it does
# — and does not — tell apart in the tiny world.
#
# A first-order view: after a step −α·g_i on sample i, a reference loss changes by about
# −α⟨g_ref, g_i⟩. A negative cosine means learning the sample would *raise* the loss of the refusals.

# %%
import os

import pandas as pd
import plotly.express as px
import torch

from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import encode_batch
from explorer.model.load import load_model
from explorer.prepare import tiny
from explorer.prepare.specs import resolve_spec
from explorer.scoring import cosine, make_estimator

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
N = 16 if QUICK else 48
tiny.ensure_prepared()
model, tok, _ = load_model(resolve_spec("tiny:aligned"))
data = sample_data_dir()

def batch(records):
    return encode_batch(tok, records, max_length=64)

# %% [markdown]
# ## Per-sample gradients, batched
# `explorer.scoring` computes every sample's gradient over all 512k parameters from ONE forward and
# backward pass (per layer, activations × output gradients), and agrees with a one-sample-at-a-time
# loop to float precision:

# %%
refs = read_sample_file(data / "reference_pool.jsonl")[:N]
harm = read_sample_file(data / "harmful_train.jsonl")[:N]
task = [r for r in read_sample_file(data / "task_train.jsonl") if r.family in ("sentiment", "comparison")][: 2 * N : 2]
b = batch(harm[:8])
fast, slow = make_estimator("hooks").features(model, b), make_estimator("loop").features(model, b)
print("max |hooks - loop| =", float((fast.grads - slow.grads).abs().max()))

# %% [markdown]
# ## Cosines with the reference direction

# %%
est = make_estimator("hooks")
g_ref = est.features(model, batch(refs)).grads.mean(0)
rows = []
for name, recs in [("harmful → compliance", harm), ("benign task", task)]:
    f = est.features(model, batch(recs))
    for r, c, l in zip(recs, cosine(f.grads, g_ref).tolist(), f.losses.tolist()):
        rows.append({"group": name, "family": r.family, "cosine": c, "loss": l})
df = pd.DataFrame(rows)
px.strip(df, x="cosine", y="group", color="family", title="cos(g_i, mean reference gradient) at the aligned model")

# %%
df.groupby("group")[["cosine", "loss"]].agg(["mean", "std"]).round(4)

# %% [markdown]
# In 512k dimensions the cosines are small (|cos| of order 0.01): the reference gradients disagree
# among themselves (the pool's refusals come in six wordings), so their mean is a weak direction. The
# *loss* separates the groups far more clearly: a compliance has a high loss under a model that refuses —
# and so does a sample of a task the model has never seen (`comparison`). This is why DualSelect's task
# score combines both terms, and why in this tiny world it also drops the new task (notebook 3).
#
# ## Exercise
# The loss in these plots is the mean token negative log-likelihood over the *response* tokens only.
# Compute it yourself for the first harmful → compliance sample, from the model's logits: run the model
# on `one`, take the log-probability of each next token (the logit at position j predicts token j + 1),
# keep the positions whose label is not −100, and average. Store the number in `my_loss`; the check
# compares it with the loss the scoring backend computed for that sample.

# %%
one = batch(harm[:1])
with torch.no_grad():
    logits = model(input_ids=one.input_ids, attention_mask=one.attention_mask).logits
logp = torch.log_softmax(logits[0, :-1], dim=-1)           # your answer: position j predicts token j + 1
target = one.labels[0, 1:]
mask = target != -100
my_loss = float(-logp[mask].gather(1, target[mask].unsqueeze(1)).mean())

# %%
backend = float(est.features(model, batch(harm[:1])).losses[0])
assert abs(my_loss - backend) < 1e-4 * max(1.0, backend), f"not quite: the backend has {backend:.4f}, you have {my_loss:.4f}"
print(f"correct: {my_loss:.4f} — a compliance costs this much under the model that refuses")
