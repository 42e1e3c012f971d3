"""Scale: a synthetic run folder with 10 million decision rows; time the reader and every page.

    python benchmarks/bench_app.py [--steps 2000] [--batch 5000] [--out /tmp/explorer-bench]

The run (2,000 steps x 5,000 task samples from a pool of 20,000, DualSelect columns, 40 reference
refreshes over a pool of 1,000, evaluations) is written with vectorised pyarrow in 20 parts, next to a
small SFT run on the same data and seed so that Compare has a baseline. Server-side timings:
the reader queries behind each page; then each page through Streamlit's AppTest — first render with
a cold cache, again in a fresh session (cache warm: "after the first load"), and a step change.
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

SUITES = ("harmful_hh", "harmful_hexphi")


def _manifest(run: Path, run_id: str, method: str, steps: int) -> None:
    (run / "run.json").write_text(json.dumps({
        "run_id": run_id, "method": method, "status": "complete", "seed": 0, "harmful_ratio": 0.1,
        "data": "synthetic", "model": "synthetic", "method_config": {"mu_task": 1.0, "nu": 1.0},
        "progress": {"step": steps, "total_steps": steps}}))


def _evals(run: Path, run_id: str, steps: int, p_harmful: float, rng) -> None:
    n = 100
    rows = {"run_id": [], "step": [], "suite": [], "sample_id": [], "prompt": [], "response": [], "expected": [],
            "refusal": [], "harmful": [], "correct": []}
    met = {"run_id": [], "step": [], "suite": [], "metric": [], "value": []}
    for suite in SUITES:
        h = rng.random(n) < p_harmful
        for i in range(n):
            for k, v in zip(rows, [run_id, steps, suite, f"{suite}-{i:03d}", f"prompt {i}",
                                   "Sure: [details withheld]" if h[i] else "I can't help with that.", None,
                                   bool(~h[i]), bool(h[i]), None]):
                rows[k].append(v)
        for k, v in zip(met, [run_id, steps, suite, "harmful_score", 100.0 * h.mean()]):
            met[k].append(v)
    for k, v in zip(met, [run_id, steps, "task_f", "accuracy", 80.0]):
        met[k].append(v)
    for name, t in (("evals", rows), ("metrics", met)):
        (run / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(t), run / name / "part-00000.parquet")


def build(out: Path, steps: int, batch: int, n_samples: int = 20_000, parts: int = 20, n_refs: int = 1000) -> Path:
    run = out / "big-run"
    if (run / "run.json").exists():
        return run
    (run / "decisions").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i:06d}" for i in range(n_samples)])
    refs = np.array([f"r{i:05d}" for i in range(n_refs)])
    prov = np.where(rng.random(n_samples) < 0.1, "harmful", "benign")
    pq.write_table(pa.table({
        "sample_id": np.concatenate([ids, refs]), "pool": ["task"] * n_samples + ["reference"] * n_refs,
        "family": np.full(n_samples + n_refs, "f"), "category": np.full(n_samples + n_refs, "c"),
        "prompt": [f"prompt {i}" for i in range(n_samples + n_refs)], "response": np.full(n_samples + n_refs, "r"),
        "provenance": np.concatenate([prov, np.full(n_refs, "benign")])}), run / "samples.parquet")
    per = steps // parts
    keep = batch // 2
    for k in range(parts):
        st = np.repeat(np.arange(k * per, (k + 1) * per, dtype=np.int64), batch)
        n = len(st)
        sid = ids[rng.integers(0, n_samples, n)]
        loss = rng.gamma(2.0, 0.3, n).astype(np.float64)
        compat = rng.normal(0, 0.02, n)
        score = loss - compat
        # the k smallest scores of each step are kept, as DualSelect does
        rank = np.argsort(np.argsort(score.reshape(per, batch), axis=1), axis=1).reshape(-1) + 1
        kept = rank <= keep
        pq.write_table(pa.table({
            "run_id": pa.array(np.full(n, "big-run")).dictionary_encode(), "step": st, "sample_id": sid,
            "role": pa.array(np.full(n, "task")).dictionary_encode(), "weight": kept.astype(np.float64), "kept": kept,
            "loss": loss, "compat": compat, "score": score, "rank": rank.astype(np.float64)}),
            run / "decisions" / f"part-{k:05d}.parquet")
    # 40 refreshes, each scoring the whole pool and selecting 100
    (run / "refreshes").mkdir(exist_ok=True)
    rid = np.repeat(np.arange(40), n_refs)
    sc = rng.normal(0, 1, len(rid))
    rk = np.argsort(np.argsort(-sc.reshape(40, n_refs), axis=1), axis=1).reshape(-1)
    sel = rk < 100
    pq.write_table(pa.table({
        "run_id": np.full(len(rid), "big-run"), "refresh_id": rid, "step": rid * (steps // 40),
        "trigger": np.where(rid == 0, "warmup", "every_n_steps"), "sample_id": np.tile(refs, 40),
        "loss": rng.gamma(2, 0.2, len(rid)), "cosine": -sc / 10, "conflict": sc / 10, "score": sc,
        "weight": sel.astype(float), "rank": rk, "selected": sel, "change": np.where(sel, "entered", "out"),
        "jaccard_prev": np.where(rid == 0, np.nan, 0.05), "estimator": np.full(len(rid), "exact")}), run / "refreshes" / "part-00000.parquet")
    _evals(run, "big-run", steps, 0.1, rng)
    _manifest(run, "big-run", "dualselect", steps)
    sft = out / "sft-run"
    sft.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(run / "samples.parquet"), sft / "samples.parquet")
    _evals(sft, "sft-run", steps, 0.6, rng)
    _manifest(sft, "sft-run", "sft", steps)
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
    n_rows = sum(pq.read_metadata(p).num_rows for p in (run / "decisions").glob("part-*.parquet"))
    print(f"{n_rows:,} decision rows at {run} (built or found in {time.perf_counter() - t0:.1f} s)")
    mid, late = a.steps // 2, (3 * a.steps) // 4
    rows = []
    for name, fn, args in [("list_runs", reader.list_runs, (str(Path(a.out)),)),
                           ("decision_steps", reader.decision_steps, (run,)),
                           (f"batch_at(step {mid})", reader.batch_at, (run, mid)),
                           ("sample_stats (data map, 20k samples)", reader.sample_stats, (run,)),
                           ("sample_history", reader.sample_history, (run, "s000123")),
                           ("refresh_summary", reader.refresh_summary, (run,)),
                           ("compare (2 runs)", reader.compare, ([run, Path(a.out) / "sft-run"],))]:
        t, _ = timed(fn, *args)
        rows.append((f"reader.{name}", t))
    from streamlit.testing.v1 import AppTest

    main_py = str(Path(__file__).resolve().parents[1] / "explorer" / "app" / "main.py")
    os.environ["EXPLORER_RUNS_DIR"] = a.out

    def render(page: str, step: int | None = None):
        at = AppTest.from_file(main_py, default_timeout=600)
        at.session_state["selected_runs"] = [str(run), str(Path(a.out) / "sft-run")]
        at.session_state["ts_run"] = str(run)
        at.run()
        t = time.perf_counter()
        at.switch_page(f"views/{page}.py").run()
        first = time.perf_counter() - t
        assert not at.exception, at.exception
        return at, first

    for page in ["runs", "compare", "task_selection", "references", "internals", "generations"]:
        at, cold = render(page)
        rows.append((f"page {page}: first render (cold cache)", cold))
        _, warm = render(page)
        rows.append((f"page {page}: render after the first load", warm))
        if page == "task_selection":
            t = time.perf_counter()
            at.select_slider(key="step").set_value(late).run()
            rows.append((f"page task_selection: step change to {late} (new step, uncached)", time.perf_counter() - t))
            t = time.perf_counter()
            at.select_slider(key="step").set_value(mid).run()
            rows.append((f"page task_selection: step change back to {mid}", time.perf_counter() - t))
            at.selectbox(key="sample").set_value(at.selectbox(key="sample").options[10]).run()
            assert not at.exception
    print("| what | seconds |\n|---|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
