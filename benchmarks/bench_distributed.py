"""Throughput with 1 and 2 processes (torchrun, gloo on CPU / NCCL on CUDA), and what the cross-rank
gathers cost in a DualSelect step.

    python benchmarks/bench_distributed.py [--procs 1 2] [--n-train 512] [--batch 32] [--device cpu]

For each method (SFT, DualSelect) and each number of processes it launches one torchrun job
(`python -m torch.distributed.run --nproc_per_node=N --standalone -m explorer run ...`) of one epoch
on the tiny world, with the same global batches whatever N, and reads back from the run folder:

- step time: the median of steps.time_s over the steps after the first (DualSelect: filtered steps
  without a reference refresh, and separately the refresh steps);
- samples/s: the global batch over that median;
- collectives: the median of steps.time_collectives_s, the seconds a step spent in collectives (the
  score gathers, the all-reduce of the assembled update and of g_ref, the global weight sum) --
  waiting for the slower rank included, which is most of it when the ranks share a loaded CPU.

Each rank runs one thread (OMP_NUM_THREADS=1), so N processes use N cores. The numbers are this
machine's: on a shared, loaded 2-core machine two processes cannot reach twice one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from explorer.runs import reader  # noqa: E402

METHODS = {
    "sft": ["method=sft"],
    # the demo's DualSelect (configs/dualselect_demo.yaml) without the per-reference cosine records
    "dualselect": ["method=dualselect", "method.warmup_steps=2", "method.keep_fraction=0.5",
                   "method.k_ref_fraction=0.1", "method.refresh=every_n_steps", "method.refresh_every=8"],
}


def launch(procs: int, runs_dir: Path, overrides: list[str], timeout: int) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--standalone",
           "-m", "explorer", "run", f"runs_dir={runs_dir}", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return run_dir


def median(xs) -> float:
    xs = [float(x) for x in xs]
    return statistics.median(xs) if xs else float("nan")


def measure(run_dir: Path, batch: int) -> dict[str, float]:
    steps = reader.steps(run_dir).sort_values("step")
    steps = steps[steps["step"] > 0]
    refresh = set()
    if reader.has_table(run_dir, "refreshes"):
        refresh = set(reader.refreshes(run_dir)["step"].unique())
    plain = steps[~steps["step"].isin(refresh) & (steps["phase"] != "warmup" if "phase" in steps else True)]
    out = {"step_s": median(plain["time_s"]), "n_steps": len(plain)}
    out["samples_per_s"] = batch / out["step_s"]
    if "time_collectives_s" in steps:
        out["collectives_s"] = median(plain["time_collectives_s"])
    if refresh:
        r = steps[steps["step"].isin(refresh)]
        out["refresh_step_s"] = median(r["time_s"])
        if "time_collectives_s" in r:
            out["refresh_collectives_s"] = median(r["time_collectives_s"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args()
    common = [f"data.n_train={a.n_train}", "optim.epochs=1", f"optim.batch_size={a.batch}", "eval.final_n=2",
              "eval.max_new_tokens=2", "eval.every=0", "record.flush_every=4", "progress=false", "seed=0",
              "data.harmful_ratio=0.1", f"model.device={a.device}"]
    print(f"tiny world, {a.n_train} samples, global batch {a.batch}, one epoch, device {a.device}, "
          f"one thread per process")
    print(f"{'method':<11}{'procs':>6}{'step s':>9}{'samples/s':>11}{'collectives s':>15}"
          f"{'refresh step s':>16}{'refresh coll. s':>17}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.methods:
            for n in a.procs:
                d = launch(n, Path(tmp) / f"{m}-{n}", [*METHODS[m], *common], a.timeout)
                r = measure(d, a.batch)
                results[(m, n)] = r
                print(f"{m:<11}{n:>6}{r['step_s']:>9.3f}{r['samples_per_s']:>11.1f}"
                      f"{r.get('collectives_s', 0.0):>15.3f}{r.get('refresh_step_s', float('nan')):>16.3f}"
                      f"{r.get('refresh_collectives_s', 0.0 if n == 1 else float('nan')):>17.3f}", flush=True)
    for m in a.methods:
        if (m, 1) in results and (m, 2) in results:
            one, two = results[(m, 1)], results[(m, 2)]
            print(f"{m}: 2 processes give {two['samples_per_s'] / one['samples_per_s']:.2f}x the samples/s of 1; "
                  f"collectives take {two.get('collectives_s', 0) / two['step_s']:.0%} of a 2-process step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
