"""DualSelect: the selection kernels on hand-made numbers, the method on the tiny model."""

import json

import pandas as pd
import pytest
import torch

from explorer.methods.dualselect import (DualSelectConfig, jaccard, reference_scores, select_references,
                                         select_task, task_scores)


def parts(d, t):
    return pd.concat([pd.read_parquet(p) for p in sorted((d / t).glob("part-*.parquet"))], ignore_index=True)


@pytest.mark.unit
def test_reference_score_and_hard_soft_selection():
    loss = torch.tensor([0.1, 0.5, 0.2, 0.9])
    cos_d = torch.tensor([0.5, -0.5, -0.9, 0.0])
    conflict, score = reference_scores(loss, cos_d, mu_ref=1.0, nu=1.0)
    torch.testing.assert_close(conflict, torch.tensor([-0.5, 0.5, 0.9, 0.0]))
    torch.testing.assert_close(score, torch.tensor([-0.4, 1.0, 1.1, 0.9]))
    w, rank, sel = select_references(score, 2, "hard", 0.1, False)
    assert sel.tolist() == [False, True, True, False] and w.tolist() == [0, 1, 1, 0]
    assert rank.tolist() == [3, 1, 0, 2]
    w, _, _ = select_references(score, 2, "soft", 0.1, False)
    expect = torch.softmax(score / 0.1, 0)
    torch.testing.assert_close(w, torch.where(sel, expect, torch.zeros(4)))
    w, _, _ = select_references(score, 2, "soft", 0.1, True)  # uniform ablation
    assert w.tolist() == [0, 1, 1, 0]


@pytest.mark.unit
def test_task_filter_hard_soft_and_token_budget():
    s = task_scores(torch.tensor([2.0, 0.1, 0.5, 0.2]), torch.tensor([-0.5, 0.2, 0.0, 0.9]), 1.0, 1.0)
    torch.testing.assert_close(s, torch.tensor([2.5, -0.1, 0.5, -0.7]))
    w, rank = select_task(s, 2, "hard", 0.1)
    assert w.tolist() == [0, 1, 0, 1] and rank.tolist() == [3, 1, 2, 0]
    w, _ = select_task(s, 2, "soft", 0.1)
    soft = torch.softmax(-s / 0.1, 0)
    torch.testing.assert_close(w, torch.tensor([0, soft[1], 0, soft[3]]))
    # token budget 0.9: tokens [10, 1, 1, 1] -> the 3 smallest-s cover 3 of 13 tokens; all 4 needed for 90%
    w, _ = select_task(s, 0, "hard", 0.1, torch.tensor([10, 1, 1, 1]), 0.9)
    assert w.tolist() == [1, 1, 1, 1]
    w, _ = select_task(s, 0, "hard", 0.1, torch.tensor([1, 10, 1, 10]), 0.5)  # 10 of 22 < 11: two kept
    assert w.tolist() == [0, 1, 0, 1]
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)


@pytest.mark.unit
def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="refresh"):
        DualSelectConfig(refresh="sometimes")
    with pytest.raises(ValueError, match="refresh_every"):
        DualSelectConfig(refresh="every_n_steps")


DS = ["method=dualselect", "method.warmup_steps=1", "method.keep_fraction=0.5", "method.k_ref=6",
      "method.ref_cap=24", "method.refresh=every_n_steps", "method.refresh_every=2", "method.chunk_size=12"]


@pytest.mark.integration
@pytest.mark.contract
def test_dualselect_run_records_refreshes_decisions_and_steps(short_config):
    from explorer.train.recipe import run

    d = run(short_config(*DS))
    assert json.loads((d / "run.json").read_text())["status"] == "complete"
    r = parts(d, "refreshes")
    assert set(r["trigger"]) == {"warmup", "every_n_steps"}
    per = r.groupby("refresh_id")
    assert (per["selected"].sum() == 6).all()
    first = r[r.refresh_id == 0]
    assert set(first.loc[first.selected, "change"]) == {"entered"} and first["jaccard_prev"].isna().all()
    later = r[r.refresh_id == 1]
    assert set(later["change"]) <= {"entered", "left", "stayed", "out"}
    # with ref_cap, a reference selected last time but not scored now appears as "left" without scores
    unscored = later[later["score"].isna()]
    assert unscored["change"].eq("left").all()
    later = later[later["score"].notna()]
    assert len(later) == 24
    torch.testing.assert_close(torch.tensor(later["score"].values),
                               torch.tensor((later["loss"] + later["conflict"]).values))
    dec = parts(d, "decisions")
    warm = dec[dec.step == 0]
    assert warm["kept"].all() and warm["compat"].isna().all()
    after = dec[dec.step > 0]
    assert (after.groupby("step")["kept"].sum() == 8).all()
    # kept are exactly the 8 smallest scores of each batch
    for _, g in after.groupby("step"):
        assert set(g.nsmallest(8, "score")["sample_id"]) == set(g.loc[g.kept, "sample_id"])
    steps = parts(d, "steps")
    assert {"cos_task_ref", "g_task_norm", "g_ref_norm", "correction_share", "estimator"} <= set(steps.columns)
    assert steps.loc[steps.step > 0, "estimator"].eq("exact(hooks)").all()


@pytest.mark.integration
def test_selections_with_exact_estimator_equal_the_per_sample_loop(short_config):
    """Same model states, same selections: the batched backend changes speed, not decisions."""
    from explorer.train.recipe import run

    a = run(short_config(*DS, "method.estimator=exact", "run_name=exact"))
    b = run(short_config(*DS, "method.estimator=loop", "run_name=loop"))
    ra, rb = parts(a, "refreshes"), parts(b, "refreshes")
    for (i, ga), (_, gb) in zip(ra.groupby("refresh_id"), rb.groupby("refresh_id")):
        assert set(ga.loc[ga.selected, "sample_id"]) == set(gb.loc[gb.selected, "sample_id"]), i
        torch.testing.assert_close(torch.tensor(ga["cosine"].values), torch.tensor(gb["cosine"].values), equal_nan=True,
                                   atol=1e-4, rtol=1e-3)
    da, db = parts(a, "decisions"), parts(b, "decisions")
    pd.testing.assert_series_equal(da["kept"], db["kept"])
    torch.testing.assert_close(torch.tensor(da["compat"].fillna(0).values), torch.tensor(db["compat"].fillna(0).values),
                               atol=1e-4, rtol=1e-3)


@pytest.mark.integration
@pytest.mark.parametrize("setting,check", [
    ("method.reference_selection=static", "one_refresh"),
    ("method.filter_task=false", "all_kept"),
    ("method.reference_selection=random", "no_cosines"),
    ("method.correction=pcgrad", "pcgrad"),
    ("method.ref_grad=current", "current"),
])
def test_ablations_are_settings(short_config, setting, check):
    from explorer.train.recipe import run

    d = run(short_config(*DS, setting))
    r, dec, steps = parts(d, "refreshes"), parts(d, "decisions"), parts(d, "steps")
    if check == "one_refresh":
        assert r["refresh_id"].nunique() == 1
    elif check == "all_kept":
        assert dec["kept"].all() and r["refresh_id"].nunique() > 1
    elif check == "no_cosines":
        assert r["cosine"].isna().all() and (r.groupby("refresh_id")["selected"].sum() == 6).all()
    elif check == "current":  # the reference loss is re-differentiated (and recorded) every filtered step
        assert (steps.loc[steps.step > 0, "extra_loss"] > 0).all()
    else:
        assert "pcgrad_dot" in steps.columns and "correction_share" not in steps.columns


@pytest.mark.integration
@pytest.mark.parametrize("estimator", ["exact", "loop"])
def test_assembled_update_equals_the_weighted_backward_plus_correction(tiny_paths, estimator):
    """DualSelect builds the update from the per-sample gradients it scored with (the authors' way):
    it must equal ∇(Σ w_i ℓ_i / Σ w_i) from a plain backward, and the correction must add η·g_ref."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from explorer.data.sample import read_sample_file, sample_data_dir
    from explorer.data.tokenize import encode_batch
    from explorer.methods.dualselect import DualSelect
    from explorer.methods.protocol import RunSettings
    from explorer.model.losses import model_nll

    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    model = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"])
    d = sample_data_dir()
    recs = read_sample_file(d / "harmful_train.jsonl")[:4] + read_sample_file(d / "task_train.jsonl")[::400][:6]
    batch = encode_batch(tok, recs, 64)
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)

    cfg = DualSelectConfig(warmup_steps=0, keep=4, reference_selection="static", estimator=estimator, eta=0.3)
    m = DualSelect(cfg)
    ctx = SimpleNamespace(model=model, autocast_dtype=None,
                          settings=RunSettings(seed=0, batch_size=10, max_length=64, base_model="", lora=False),
                          pools={"reference": ["r0"]}, step=5, steps_per_epoch=100)
    m.prepare(ctx)
    g = torch.Generator().manual_seed(0)
    m.state.g_ref_full = torch.randn(P, generator=g) * 1e-2   # a reference direction, as a refresh leaves it
    m.state.g_ref, m.state.ref_loss, m.state.refresh_id = m.state.g_ref_full, 0.0, 0
    dec = m.decide(batch, ctx)
    assert dec.grads is not None and dec.grads.shape == (P,) and int((dec.weights > 0).sum()) == 4

    model.zero_grad(set_to_none=True)
    losses = model_nll(model, batch.input_ids, batch.attention_mask, batch.labels)   # the recipe's loss
    w = dec.weights.float()
    ((w * losses).sum() / w.sum()).backward()
    want = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(dec.losses, losses.detach(), atol=1e-5, rtol=1e-4)
    assert (dec.grads - want).abs().max() <= 1e-5 * want.abs().max()

    off = 0
    for p in params:  # what the loop does with decision.grads, then the method's correction
        p.grad = dec.grads[off:off + p.numel()].view_as(p).clone()
        off += p.numel()
    m.transform_grads(ctx)
    corrected = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(corrected, dec.grads + 0.3 * m.state.g_ref_full)


@pytest.mark.integration
def test_decision_refs_name_each_samples_cosine_with_each_selected_reference(short_config):
    """With one selected reference g_ref = g_r, so the recorded per-reference cosine must equal compat;
    with six, every (sample, reference in force) pair of a recorded step is there."""
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config(*DS, "method.k_ref=1", "method.ref_cosines_every=1", "run_name=one"))
    dr, dec, ref = parts(d, "decision_refs"), parts(d, "decisions"), parts(d, "refreshes")
    m = dr.merge(dec[["step", "sample_id", "compat"]], on=["step", "sample_id"])
    assert len(m) == len(dec[dec.step >= 1]) > 0
    torch.testing.assert_close(torch.tensor(m["cosine"].values), torch.tensor(m["compat"].values), atol=1e-5, rtol=1e-4)
    for step, g in dr.groupby("step"):  # the reference named is the one in force at that step
        force = reader.references_in_force(d, step)
        assert set(g["reference_id"]) == set(force["sample_id"])
    assert set(ref.loc[ref.selected, "sample_id"]) >= set(dr["reference_id"])

    d6 = run(short_config(*DS, "method.ref_cosines_every=2", "run_name=six"))
    dr6 = parts(d6, "decision_refs")
    steps = sorted(dr6["step"].unique())
    assert steps == list(range(1, int(parts(d6, "steps")["step"].max()) + 1, 2))  # every 2nd filtered step
    assert (dr6.groupby(["step", "sample_id"]).size() == 6).all() and dr6["cosine"].between(-1, 1).all()
    top = reader.sample_reference_conflicts(d6, steps[0], dr6["sample_id"].iloc[0], top=3)
    assert len(top) == 3 and top["cosine"].is_monotonic_increasing


@pytest.mark.unit
def test_defaults_keep_the_authors_rate_and_their_yaml_their_count():
    """The authors keep 4 of every mini-batch of 8; the default is that rate at any batch size, and
    configs/dualselect.yaml runs their whole setting."""
    from explorer.config import load_config, method_config
    from explorer.data.sample import repo_root
    from explorer.methods.dualselect import n_keep

    c = DualSelectConfig()
    assert (n_keep(c, 8), n_keep(c, 32)) == (4, 16)
    assert (c.warmup_steps, c.k_ref, c.eta, c.refresh) == (10, 32, 0.2, "epoch")
    assert n_keep(DualSelectConfig(keep=4), 32) == 4          # a count, when given, wins over the rate
    cfg = load_config(repo_root() / "configs" / "dualselect.yaml")
    mc = method_config(cfg)
    assert (cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.lr, cfg.optim.weight_decay) == (8, 1, 2e-5, 0.0)
    assert n_keep(mc, cfg.optim.batch_size) == 4 and mc.warmup_steps == 10 and mc.k_ref == 32
    with pytest.raises(ValueError, match="keep_fraction"):
        DualSelectConfig(keep=0, keep_fraction=0.0)
