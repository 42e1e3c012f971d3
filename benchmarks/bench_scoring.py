"""Speed of per-sample scoring and of a training step, on the tiny model, on this machine.

    python benchmarks/bench_scoring.py [--batches 8 32] [--steps 20]

1. scoring alone: per-sample losses + gradients for one batch, each estimator vs the authors' way
   (one forward + backward per sample, cloning every gradient: estimator `loop`);
2. a full training step (median over steps, from real runs' `steps.time_s`): SFT, and DualSelect with
   each estimator (the initial refresh is excluded; the median is over filtered steps).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pandas as pd
import torch

from explorer.config import load_config
from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import collate, encode_all
from explorer.model.load import load_model
from explorer.prepare import tiny
from explorer.prepare.specs import resolve_spec
from explorer.runs import reader
from explorer.scoring import directional, make_estimator
from explorer.train.recipe import run


def scoring_times(batch_size: int, repeats: int = 5) -> dict[str, float]:
    model, tok, _ = load_model(resolve_spec("tiny:aligned"))
    d = sample_data_dir()
    recs = (read_sample_file(d / "task_train.jsonl")[::50] + read_sample_file(d / "harmful_train.jsonl"))[:batch_size]
    enc, _ = encode_all(tok, recs, 64)
    b = collate(enc, tok.pad_token_id)
    out = {}
    for name in ("loop", "vmap", "hooks", "projected"):
        est = make_estimator(name)
        est.features(model, b)  # warm
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            est.features(model, b)
            ts.append(time.perf_counter() - t)
        out[name] = statistics.median(ts)
    v = torch.randn(sum(p.numel() for p in model.parameters()))
    directional(model, b, v)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        directional(model, b, v)
        ts.append(time.perf_counter() - t)
    out["jvp (dots only)"] = statistics.median(ts)
    return out


def step_time(batch_size: int, steps: int, overrides: list[str], runs_dir: str) -> float:
    cfg = load_config(None, [f"runs_dir={runs_dir}", f"optim.batch_size={batch_size}", f"optim.max_steps={steps}", "data.n_train=1000",
                             "eval.final_n=4", "eval.max_new_tokens=4", "progress=false", *overrides])
    d = run(cfg)
    s = reader.steps(d)
    s = s[s["phase"] != "warmup"].iloc[1:]  # drop the step that carries the first refresh
    return float(s["time_s"].median())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    tiny.ensure_prepared()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = []
    ds = ["method=dualselect", "method.warmup_steps=1", "method.keep_fraction=0.5", "method.k_ref=16",
          "method.ref_cap=64", "method.refresh=every_n_steps", "method.refresh_every=1000"]
    with tempfile.TemporaryDirectory() as tmp:
        for B in a.batches:
            sc = scoring_times(B)
            for k, v in sc.items():
                rows.append({"batch": B, "what": f"scoring: {k}", "seconds": v, "× loop": sc["loop"] / v})
            sft = step_time(B, a.steps, ["method=sft"], tmp)
            rows.append({"batch": B, "what": "step: SFT", "seconds": sft, "× SFT": 1.0})
            for est in ("exact", "projected", "jvp", "loop"):
                t = step_time(B, a.steps, ds + [f"method.estimator={est}"], tmp)
                rows.append({"batch": B, "what": f"step: DualSelect ({est})", "seconds": t, "× SFT": t / sft})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
