"""Record the golden decisions of two short runs (SFT and DualSelect) for tests/test_recipe_golden.py.

    PYTHONPATH=. python tests/golden/make_golden.py            # rewrite tests/golden/decisions.json
    PYTHONPATH=. python tests/golden/make_golden.py --check    # compare with the stored file

The model is built here, deterministically and in seconds, instead of using the prepared tiny world
(whose four-minute training may give slightly different floats on another machine): the tiny world's
word-level tokenizer trained on sample_data/ texts and an untrained tiny Llama seeded 0, saved with
save_pretrained. The reference pool is the first 40 of the tiny world's. The runs are short (64 samples, batch 16, 4 steps, warm-up 1 so that the cosine decay is exercised, p = 0.1, seed 0) and skip the
intermediate evaluations, so the file holds only what the training step decides: per step the loss,
task loss, extra loss, learning rate, gradient norm and kept count; per sample the weight, kept flag,
loss and every score column the method records.

Rewrite the file only when a change is meant to alter decisions, and say so in the commit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("decisions.json")
REPO = Path(__file__).resolve().parents[2]

#: the runs recorded: name -> (config file or None, overrides)
RUNS = {
    "sft": (None, ["method=sft"]),
    "dualselect": ("configs/dualselect_demo.yaml", []),
}
SHORT = ["data.n_train=64", "optim.epochs=1", "optim.batch_size=16", "eval.final_n=4", "eval.n=4", "eval.every=0",
         "record.flush_every=1", "optim.warmup_steps=1", "progress=false", "eval.max_new_tokens=1",
         "data.harmful_ratio=0.1", "seed=0", "model.device=cpu"]
STEP_COLUMNS = ["step", "loss", "task_loss", "extra_loss", "lr", "grad_norm", "n_kept"]
#: decision columns that are bookkeeping, not decisions
SKIP_DECISION_COLUMNS = {"run_id", "role"}


def build_model(out: Path) -> Path:
    """The tiny world's tokenizer + an untrained tiny Llama (seed 0), saved to `out`."""
    from explorer.data.sample import read_sample_file, sample_data_dir
    from explorer.prepare.tiny import TinySettings, build_model as build, train_tokenizer

    texts = []
    for f in sorted(sample_data_dir().glob("*.jsonl")):
        for r in read_sample_file(f):
            texts += [r.prompt, r.response, r.extra.get("refusal", "")]
    tok = train_tokenizer(texts)
    model = build(tok, TinySettings(seed=0))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _read(run_dir: Path, table: str):
    import pandas as pd

    parts = sorted((run_dir / table).glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _clean(v):
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def small_reference_pool(out: Path, n: int = 40) -> Path:
    """The first `n` lines of the tiny world's reference pool (DualSelect scores every reference at each
    refresh; 600 of them take minutes on a shared CPU)."""
    from explorer.data.sample import sample_data_dir

    lines = (sample_data_dir() / "reference_pool.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def record(name: str, model_dir: Path, runs_dir: Path, reference: Path) -> dict:
    """Run one of RUNS on the model in `model_dir` and return its steps and decisions."""
    from explorer.config import load_config
    from explorer.train.recipe import run

    config, overrides = RUNS[name]
    cfg = load_config(REPO / config if config else None,
                      [f"runs_dir={runs_dir}", f"model.path={model_dir}", f"model.base={model_dir}",
                       f"data.reference={reference}",
                       *SHORT, *overrides])
    run_dir = run(cfg)
    steps = _read(run_dir, "steps")
    dec = _read(run_dir, "decisions").sort_values(["step", "sample_id"])
    cols = [c for c in dec.columns if c not in SKIP_DECISION_COLUMNS]
    return {"steps": [{c: _clean(r[c]) for c in STEP_COLUMNS} for _, r in steps.iterrows()],
            "decisions": [{c: _clean(r[c]) for c in cols} for _, r in dec.iterrows()]}


def record_all(tmp: Path) -> dict:
    model_dir = build_model(tmp / "model")
    reference = small_reference_pool(tmp / "reference.jsonl")
    return {name: record(name, model_dir, tmp / "runs", reference) for name in RUNS}


def compare(want: dict, got: dict, rel: float = 1e-5, abs_: float = 1e-7) -> list[str]:
    """Differences between two recordings: kept/dropped sets and integer columns exactly, floats within
    a relative tolerance `rel`. Empty when they agree."""
    problems = []
    for name in want:
        if name not in got:
            problems.append(f"{name}: not recorded")
            continue
        for table in ("steps", "decisions"):
            w, g = want[name][table], got[name][table]
            if len(w) != len(g):
                problems.append(f"{name}.{table}: {len(g)} rows, expected {len(w)}")
                continue
            for i, (rw, rg) in enumerate(zip(w, g)):
                if set(rw) != set(rg):
                    problems.append(f"{name}.{table}[{i}]: columns {sorted(set(rg) ^ set(rw))} differ")
                    continue
                for c, vw in rw.items():
                    vg = rg[c]
                    if isinstance(vw, float) and isinstance(vg, (int, float)) and not isinstance(vg, bool):
                        if not math.isclose(vw, vg, rel_tol=rel, abs_tol=abs_):
                            problems.append(f"{name}.{table}[{i}].{c}: {vg!r}, expected {vw!r}")
                    elif vw != vg:
                        problems.append(f"{name}.{table}[{i}].{c}: {vg!r}, expected {vw!r}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored file, write nothing")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        got = record_all(Path(tmp))
    if args.check:
        problems = compare(json.loads(GOLDEN.read_text()), got)
        print("\n".join(problems) if problems else "identical within tolerance")
        return 1 if problems else 0
    GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k}: {len(v['steps'])} steps, {len(v['decisions'])} decisions"
                                          for k, v in got.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
