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
from explorer.model import tiny
from explorer.model.load import load_model
from explorer.scoring import cosine, make_estimator

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
N = 16 if QUICK else 48
tiny.ensure_prepared()
model, tok, _ = load_model("tiny:aligned")
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
# Which group has the higher mean loss at the aligned model? Put its name in `answer`.

# %%
answer = df.groupby("group")["loss"].mean().idxmax()  # your answer

# %%
means = df.groupby("group")["loss"].mean()
assert answer == means.idxmax(), f"look again: {means.round(3).to_dict()}"
print("correct:", answer)
