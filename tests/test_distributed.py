"""More than one process (issue #18): two gloo ranks on CPU, launched by torchrun as a user would.

- SFT, DualSelect and random decide in a 2-process run exactly what a 1-process run with the same
  global batch and seed decides: identical keep/drop sets and weights, scores and losses within
  floating-point tolerance (the ranks pad their shards differently), DualSelect's reference
  refreshes the same.
- every other method completes a 2-process run: one run folder, no duplicate rows, world size and
  backend in the manifest.
- a failure on one rank marks the run failed (naming the rank) and stops the other; resuming after
  that, again with two ranks, finishes the run with the records of an uninterrupted one.

The runs are short (48-64 samples, batch 16, tiny evaluations); each torchrun job pays its start once
(tests/_dist_run.py runs several runs in one job). Every rank uses one thread: the CI machine has two
cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from explorer.runs import reader, schema

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HELPER = Path(__file__).with_name("_dist_run.py")
REPO = Path(__file__).resolve().parents[1]

SHORT = ["data.n_train=64", "optim.epochs=1", "optim.batch_size=16", "eval.final_n=2", "eval.n=2", "eval.every=0",
         "record.flush_every=1", "progress=false", "eval.max_new_tokens=2", "seed=0", "data.harmful_ratio=0.1",
         "optim.warmup_steps=1", "model.device=cpu"]
DUALSELECT = ["method=dualselect", "method.warmup_steps=1", "method.refresh=every_n_steps",
              "method.refresh_every=2", "method.ref_cap=48", "method.ref_cosines_every=1"]
CWAC = ["method=cwac", "method.sae_steps=30", "method.sae_batch_tokens=256", "method.n_safety_latents=8",
        "method.latent_every=2", "method.cov_prompts=64", "method.selection_prompts=64",
        "method.n_base_prompts=32", "method.sae_texts=100"]


def torchrun(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(HELPER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def one_run(runs_dir: Path, method: str) -> Path:
    found = sorted(runs_dir.glob(f"{method}-*"))
    assert len(found) == 1, f"{runs_dir}: expected one {method} run folder, found {[p.name for p in found]}"
    return found[0]


def single_process(runs_dir: Path, overrides: list[str]) -> Path:
    import torch

    from explorer.config import load_config
    from explorer.train.recipe import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as each rank runs: the same kernels, the same sums
    try:
        return run(load_config(None, [f"runs_dir={runs_dir}", *overrides]))
    finally:
        torch.set_num_threads(threads)


def assert_one_clean_run(d: Path, world: int = 2) -> None:
    m = reader.manifest(d)
    assert m["status"] == schema.STATUS_COMPLETE, m.get("error")
    assert m["world_size"] == world and m["backend"] == "gloo" and m["distributed"]["world_size"] == world
    steps, dec = reader.steps(d), reader.decisions(d)
    assert not steps["step"].duplicated().any()
    assert not dec.duplicated(["step", "sample_id"]).any()
    assert len(steps) == m["progress"]["total_steps"]
    # every step's rows are the whole global batch, not one rank's shard
    per_step = dec.groupby("step").size()
    assert (per_step.reindex(steps["step"]).to_numpy() == steps["n_batch"].to_numpy()).all()
    assert steps["n_batch"].max() == 16


def frame(d: Path, table: str, key: list[str]) -> pd.DataFrame:
    df = reader.table(d, table).drop(columns=["run_id"])
    return df.drop(columns=[c for c in df.columns if c.startswith("time")]).sort_values(key).reset_index(drop=True)


def test_two_ranks_decide_as_one_process(tmp_path, tiny_paths):
    """SFT, DualSelect (task selection, reference refreshes, per-reference cosines) and random, two
    gloo ranks vs one process with the same global batches and seed."""
    runs = {"sft": ["method=sft"], "dualselect": DUALSELECT, "random": ["method=random"]}
    out = torchrun([str(tmp_path / "two"), *[" ".join([*o, *SHORT]) for o in runs.values()]])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    for method, overrides in runs.items():
        two = one_run(tmp_path / "two", method)
        one = single_process(tmp_path / "one", [*overrides, *SHORT])
        assert_one_clean_run(two)
        assert reader.manifest(one)["world_size"] == 1
        tables = [("decisions", ["step", "sample_id"]), ("steps", ["step"])]
        if method == "dualselect":
            tables += [("refreshes", ["refresh_id", "sample_id"]), ("decision_refs", ["step", "sample_id", "reference_id"])]
        for table, key in tables:
            a, b = frame(one, table, key), frame(two, table, key)
            assert len(a) == len(b) and len(a) > 0, (method, table)
            assert list(a[key].itertuples(index=False)) == list(b[key].itertuples(index=False)), (method, table)
            for c in a.columns:
                if c in ("kept", "selected", "weight", "rank", "n_kept", "n_batch", "change", "random_rank"):
                    pd.testing.assert_series_equal(a[c], b[c], check_exact=True, check_dtype=False,
                                                   obj=f"{method} {table}.{c} (a decision)")
                elif a[c].dtype.kind == "f":
                    pd.testing.assert_series_equal(a[c], b[c], check_exact=False, rtol=1e-4, atol=1e-5,
                                                   obj=f"{method} {table}.{c}")
        if method in ("dualselect", "random"):   # the test is not trivially met: samples were dropped
            assert (~reader.decisions(two)["kept"]).any()


def test_every_other_method_completes_on_two_ranks(tmp_path, tiny_paths):
    """Safeinstr, tokenwise, PACT, SEAL and CWAC on two ranks: one clean run folder each, and the
    values they reduce across ranks match one process."""
    runs = {"safeinstr": ["method=safeinstr"], "tokenwise": ["method=tokenwise"], "pact": ["method=pact"],
            "seal": ["method=seal", "method.selector_epochs=1"], "cwac": CWAC}
    out = torchrun([str(tmp_path), *[" ".join([*o, *SHORT]) for o in runs.values()]])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    for method in runs:
        d = one_run(tmp_path, method)
        assert_one_clean_run(d)
    # the methods' own tables are written once (by rank 0), not once per rank
    seal = one_run(tmp_path, "seal")
    cut = reader.table(seal, "seal_cut")
    assert not cut["sample_id"].duplicated().any() and len(cut) == reader.samples(seal)["in_mix"].sum()
    pact = reader.table(one_run(tmp_path, "pact"), "pact_positions")
    assert not pact.duplicated(["step", "position"]).any()
    spectra = reader.table(one_run(tmp_path, "cwac"), "cwac_spectra")
    assert not spectra.duplicated(["layer", "index"]).any()
    # what they reduce across ranks gives what one process computes: SEAL's selector and cut, PACT's
    # safety tokens and position means, CWAC's covariance spectra, tokenwise's token-weight means
    # (SEAL's rank is compared as a tie-aware rank of ω: samples whose ω agree to float32 rounding are
    # tied, and the order inside a tie follows the last bit, which the ranks' sums may round differently)
    extra = {"seal": [("seal_cut", ["sample_id"], ["kept", "tied_rank"])],
             "pact": [("pact_tokens", ["rank"], ["token_id"]), ("pact_positions", ["step", "position"], ["n"])],
             "cwac": [("cwac_spectra", ["layer", "index"], ["rank_kept", "n_inputs"])],
             "tokenwise": []}
    for method, tables in extra.items():
        two = one_run(tmp_path, method)
        one = single_process(tmp_path / "one", [*runs[method], *SHORT])
        for table, key, exact in [("decisions", ["step", "sample_id"], ["kept", "weight"]),
                                  ("steps", ["step"], ["n_kept", "n_batch"]), *tables]:
            a, b = frame(one, table, key), frame(two, table, key)
            if table == "seal_cut":
                a, b = (f.assign(tied_rank=(-f["omega"]).round(7).rank(method="min")).drop(columns="rank")
                        for f in (a, b))
            assert len(a) == len(b) > 0 and a[key].equals(b[key]), (method, table)
            for c in a.columns:
                if c in exact:
                    pd.testing.assert_series_equal(a[c], b[c], check_dtype=False, obj=f"{method} {table}.{c}")
                elif a[c].dtype.kind == "f":
                    pd.testing.assert_series_equal(a[c], b[c], check_exact=False, rtol=1e-3, atol=1e-5,
                                                   obj=f"{method} {table}.{c}")


def test_fsdp_shards_the_base_weights_and_trains_as_the_unsharded_run(tmp_path, tiny_paths):
    """dist.shard=fsdp (FSDP2 over the frozen base weights, the LoRA adapter whole on every rank): each
    rank holds half of the frozen weights, and SFT and random take the same steps, decisions and
    generations as two unsharded ranks (evaluation runs on both ranks in lockstep, synced_gpus)."""
    common = [*SHORT, "model.lora=true", "eval.max_new_tokens=8"]
    runs = {f"{m}_{sh}": [f"method={m}", f"run_name={m}_{sh}", f"dist.shard={sh}", *common]
            for m in ("sft", "random") for sh in ("fsdp", "none")}
    out = torchrun([str(tmp_path), *[" ".join(o) for o in runs.values()]])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    for m in ("sft", "random"):
        sharded, plain = one_run(tmp_path, f"{m}_fsdp"), one_run(tmp_path, f"{m}_none")
        assert_one_clean_run(sharded)
        d = reader.manifest(sharded)["distributed"]
        assert d["shard"] == "fsdp" and d["sharded_layers"] == 2 and reader.manifest(plain)["distributed"]["shard"] == "none"
        frozen = d["param_elements"] - d["trainable_elements"]
        assert d["param_elements_local"] == frozen // 2 + d["trainable_elements"], d
        for table, key in [("decisions", ["step", "sample_id"]), ("steps", ["step"]),
                           ("evals", ["step", "suite", "sample_id"])]:
            a, b = frame(plain, table, key), frame(sharded, table, key)
            assert len(a) == len(b) > 0 and a[key].equals(b[key]), (m, table)
            for c in a.columns:
                if a[c].dtype.kind == "f":
                    pd.testing.assert_series_equal(a[c], b[c], check_exact=False, rtol=1e-4, atol=1e-5,
                                                   obj=f"{m} {table}.{c}")
                else:
                    pd.testing.assert_series_equal(a[c], b[c], check_dtype=False, obj=f"{m} {table}.{c}")
        assert reader.table(sharded, "evals")["response"].str.len().max() > 0


def test_a_failing_rank_fails_the_run_and_two_ranks_resume_it(tmp_path, tiny_paths):
    common = ["method=random", *SHORT, "record.checkpoint_every=2"]
    out = torchrun([str(tmp_path / "runs"), "--fail-rank", "1", "--fail-step", "3", " ".join(common)], timeout=300)
    assert out.returncode != 0
    d = one_run(tmp_path / "runs", "random")
    m = reader.manifest(d)
    note = json.loads((d / "failed_rank1.json").read_text())
    assert note["rank"] == 1 and "injected failure at step 3" in note["error"]
    if m["status"] == schema.STATUS_FAILED:   # rank 0 got to write (or rank 1 did): the cause is named
        assert "rank 1" in m["error"] and "injected failure" in m["error"]
    else:   # rank 0 was killed by torchrun mid-collective: the reader tells that its process is gone
        from explorer.runs.status import effective_status

        assert effective_status(m) == schema.STATUS_FAILED
    assert m["checkpoint_step"] == 2
    steps = reader.steps(d)
    assert set(steps["step"]) >= {0, 1, 2} and not steps["step"].duplicated().any()

    out = torchrun([str(tmp_path / "runs"), "--resume", str(d)], timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert not list(d.glob("failed_rank*.json"))
    assert_one_clean_run(d)
    assert reader.manifest(d)["resumed_from_step"] == 2
    ref = single_process(tmp_path / "ref", common[:-1])
    for table, key in (("decisions", ["step", "sample_id"]), ("steps", ["step"])):
        a, b = frame(ref, table, key), frame(d, table, key)
        assert a["step"].tolist() == b["step"].tolist()
        for c in ("kept", "weight", "random_rank") if table == "decisions" else ("n_kept",):
            pd.testing.assert_series_equal(a[c], b[c], check_exact=True, check_dtype=False, obj=f"{table}.{c}")
        pd.testing.assert_series_equal(a["loss"], b["loss"], check_exact=False, rtol=1e-4, atol=1e-5)


def test_shards_cover_the_batch_in_order():
    from explorer.model.distributed import Dist

    for n in range(0, 40):
        for world in (1, 2, 3, 8):
            spans = [Dist(world=world, rank=r).shard(n) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            sizes = [b - a for a, b in spans]
            assert max(sizes) - min(sizes) <= 1


def test_one_process_collectives_hand_their_input_back():
    import torch

    from explorer.model.distributed import SINGLE

    t = torch.arange(5.0)
    assert SINGLE.all_sum(t) is t and SINGLE.gather_cat(t) is t and SINGLE.all_max(t) is t
    assert SINGLE.gather_object({"a": 1}) == [{"a": 1}] and SINGLE.broadcast_object(3) == 3
    assert not SINGLE.enabled and SINGLE.is_main and SINGLE.shard(7) == (0, 7)
