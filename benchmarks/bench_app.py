"""Scale: a synthetic run folder with 10 million decision rows; time the reader and every page.

    python benchmarks/bench_app.py [--steps 2000] [--batch 5000] [--out /tmp/bigrun]

Server-side timings: the reader queries behind each page, then each page through Streamlit's AppTest
(first render, then a step change), warm cache off (a fresh AppTest each time).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from explorer.runs import reader


def build(out: Path, steps: int, batch: int, n_samples: int = 20_000, parts: int = 20) -> Path:
    run = out / "big-run"
    if (run / "run.json").exists():
        return run
    (run / "decisions").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i:06d}" for i in range(n_samples)])
    prov = np.where(rng.random(n_samples) < 0.1, "harmful", "benign")
    import pandas as pd

    pd.DataFrame({"sample_id": ids, "pool": "task", "family": "f", "category": "c",
                  "prompt": [f"prompt {i}" for i in range(n_samples)], "response": "r",
                  "provenance": prov, "in_train": True, "in_mix": True}).to_parquet(run / "samples.parquet")
    per = steps // parts
    for k in range(parts):
        st = np.repeat(np.arange(k * per, (k + 1) * per), batch)
        n = len(st)
        loss = rng.gamma(2.0, 0.3, n).astype(np.float32)
        compat = rng.normal(0, 0.02, n).astype(np.float32)
        score = loss - compat
        kept = rng.random(n) < 0.5
        pq.write_table(pa.table({"run_id": pa.array(np.full(n, "big-run")).dictionary_encode(), "step": st, "sample_id": ids[rng.integers(0, n_samples, n)],
                                 "role": pa.array(np.full(n, "task")).dictionary_encode(), "weight": kept.astype(np.float32), "kept": kept, "loss": loss,
                                 "compat": compat, "score": score}), run / "decisions" / f"part-{k:05d}.parquet")
    (run / "run.json").write_text(json.dumps({"run_id": "big-run", "method": "dualselect", "status": "complete",
                                              "seed": 0, "harmful_ratio": 0.1, "progress": {"step": steps}}))
    return run


def timed(fn, *a):
    t = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--out", default="/tmp/explorer-bench")
    a = ap.parse_args()
    t0 = time.perf_counter()
    run = build(Path(a.out), a.steps, a.batch)
    print(f"built {a.steps * a.batch:,} decision rows in {time.perf_counter() - t0:.1f} s at {run}")
    rows = []
    for name, fn, args in [("list_runs", reader.list_runs, (str(Path(a.out)),)),
                           ("decision_steps", reader.decision_steps, (run,)),
                           ("batch_at(step 1000)", reader.batch_at, (run, 1000)),
                           ("batch_at(step 1500)", reader.batch_at, (run, 1500)),
                           ("data_map (20k samples)", reader.data_map, (run,)),
                           ("sample_history", reader.sample_history, (run, "s000123"))]:
        t, _ = timed(fn, *args)
        rows.append((f"reader.{name}", t))
    from streamlit.testing.v1 import AppTest

    main_py = str(Path(__file__).resolve().parents[1] / "explorer" / "app" / "main.py")
    os.environ["EXPLORER_RUNS_DIR"] = a.out
    for page in ["runs", "compare", "task_selection", "references", "internals", "generations"]:
        at = AppTest.from_file(main_py, default_timeout=300)
        at.session_state["selected_runs"] = [str(run)]
        at.run()
        t = time.perf_counter()
        at.switch_page(f"views/{page}.py").run()
        rows.append((f"page {page}: first render", time.perf_counter() - t))
        if page == "task_selection":
            t = time.perf_counter()
            at.select_slider(key="step").set_value(1500).run()
            rows.append(("page task_selection: step change", time.perf_counter() - t))
        assert not at.exception, at.exception
    print("| what | seconds |\n|---|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
