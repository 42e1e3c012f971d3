# %% [markdown]
# # 3 · DualSelect by hand
#
# **What you will learn.** The two coupled selections of DualSelect (Chen et al., 2026) on one batch:
# reference scores, entropy-regularised reference weights and what the temperature does, task filtering,
# the corrected update — then the full method and its refresh history, as the dashboard shows it.

# %%
import math
import os

import pandas as pd
import plotly.express as px
import torch

from explorer import viz
from explorer.config import load_config
from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import encode_batch
from explorer.methods.dualselect import reference_scores, select_references, select_task, task_scores
from explorer.model.load import load_model
from explorer.prepare import tiny
from explorer.prepare.specs import resolve_spec
from explorer.runs import reader
from explorer.scoring import cosine, make_estimator, weighted_mean
from explorer.train.recipe import run

QUICK = os.environ.get("EXPLORER_NB_QUICK") == "1"
tiny.ensure_prepared()
model, tok, _ = load_model(resolve_spec("tiny:aligned"))
data = sample_data_dir()
est = make_estimator("hooks")

def batch(records):
    return encode_batch(tok, records, max_length=64)

# %% [markdown]
# ## 1. A task direction d and the reference scores
# score_r = μ_ref·ℓ_r + ν·conflict_r with conflict_r = −cos(g_r, d): references the task is damaging
# (negative cosine) and whose loss is already high score highest.

# %%
task = read_sample_file(data / "task_train.jsonl")[::97][:24] + read_sample_file(data / "harmful_train.jsonl")[:8]
tb = batch(task)
tf = est.features(model, tb)
d = tf.grads.mean(0)                                   # the task direction (here: one batch)
refs = read_sample_file(data / "reference_pool.jsonl")[:64]
rf = est.features(model, batch(refs))
conflict, score = reference_scores(rf.losses, cosine(rf.grads, d), mu_ref=1.0, nu=1.0)
pd.DataFrame({"ref": [r.sample_id for r in refs], "loss": rf.losses, "conflict": conflict, "score": score}).sort_values("score", ascending=False).head()

# %% [markdown]
# ## 2. Soft selection and the temperature τ_ref
# w = softmax(score/τ_ref) over the top-K: a low τ puts all the weight on the best few references
# (entropy → 0); a high τ spreads it evenly (entropy → log K).

# %%
K = 16
ent = []
for tau in [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]:
    w, _, sel = select_references(score, K, "soft", tau, False)
    p = w[sel] / w[sel].sum()
    ent.append({"tau": tau, "entropy": float(-(p * p.clamp_min(1e-12).log()).sum()), "log K": math.log(K)})
px.line(pd.DataFrame(ent), x="tau", y=["entropy", "log K"], log_x=True, markers=True,
        title="entropy of the reference weights against τ_ref")

# %% [markdown]
# ## 3. Task filtering and the corrected update
# compat_i = cos(g_i, g_ref); s_i = μ_task·ℓ_i − ν·compat_i; keep the half with the smallest s.

# %%
w_ref, _, sel = select_references(score, K, "hard", 0.1, False)
g_ref = weighted_mean(rf.grads, w_ref)
compat = cosine(tf.grads, g_ref)
s = task_scores(tf.losses, compat, 1.0, 1.0)
w_task, rank = select_task(s, len(task) // 2, "hard", 0.1)
table = pd.DataFrame({"sample": [r.sample_id for r in task], "provenance": [r.provenance for r in task],
                      "loss": tf.losses, "compat": compat, "s": s, "kept": (w_task > 0).tolist()})
g_task = weighted_mean(tf.grads, w_task)
eta = 0.2
print("cos(g_task, g_ref) =", float(cosine(g_task, g_ref)),
      "| share of the update due to η·g_ref =", float((eta * g_ref).norm() / (g_task + eta * g_ref).norm()))
table.groupby(["provenance", "kept"]).size()

# %% [markdown]
# ## 4. The full method, with its refresh history
# `configs/dualselect_demo.yaml` (the authors' defaults, adapted only where the tiny world needs it;
# each change is commented there).

# %%
steps = ["optim.max_steps=16", "data.n_train=320", "eval.final_n=40", "eval.every=0", "method.ref_cap=120"] if QUICK else []
from explorer.data.sample import repo_root

ds = run(load_config(repo_root() / "configs" / "dualselect_demo.yaml", [f"runs_dir={repo_root() / 'runs' / 'notebooks'}", "progress=false", *steps]))
refreshes = reader.refreshes(ds)
viz.refresh_timeline(refreshes)

# %%
viz.reference_swimlane(refreshes)

# %%
b = reader.batch_at(ds, reader.decision_steps(ds)[-1])
viz.selection_scatter(b, "compat", "loss")

# %% [markdown]
# ## Exercise
# As τ_ref grows, the entropy of the soft weights approaches log K. Compute the entropy at τ = 100
# for K = 16 and store it in `h`.

# %%
w, _, sel = select_references(score, K, "soft", 100.0, False)
p = w[sel] / w[sel].sum()
h = float(-(p * p.log()).sum())  # your answer

# %%
assert abs(h - math.log(K)) < 0.05, f"entropy {h:.3f} should be close to log K = {math.log(K):.3f}"
print(f"correct: {h:.4f} ≈ log {K} = {math.log(K):.4f}")
