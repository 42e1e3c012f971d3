"""The independent check (explorer/scoring/influence.py): the recorded effect is what one SGD step on
the sample actually does to the held-out loss, to first order; and the loop records it when asked."""

import copy

import pandas as pd
import pytest
import torch

from _method_helpers import make_context
from explorer.model.losses import per_sample_nll
from explorer.scoring import influence


def _heldout_loss(model, batch):
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return float(per_sample_nll(out.logits, batch.labels).mean())


@pytest.fixture
def setup():
    ctx = make_context(seed=3)
    recs = ctx.records
    task = ctx.encode([recs[i] for i in ctx.pools["task"]])
    heldout = ctx.encode(influence.refusal_records([recs[i] for i in ctx.pools["reference"]]))
    return ctx.model.double(), task, heldout


def test_effect_predicts_the_change_of_the_heldout_loss(setup):
    model, task, heldout = setup
    lr = 1e-3
    d = {"effect_safety": influence.heldout_gradient(model, heldout)}
    eff = influence.first_order_effects(model, task, d, lr)["effect_safety"]
    base = _heldout_loss(model, heldout)
    actual = []
    for i in range(len(task)):
        m = copy.deepcopy(model)
        one = type(task)(**{k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1]) for k, v in task.__dict__.items()})
        out = m(input_ids=one.input_ids, attention_mask=one.attention_mask)
        per_sample_nll(out.logits, one.labels)[0].backward()
        with torch.no_grad():
            for p in m.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
        actual.append(_heldout_loss(m, heldout) - base)
    actual = torch.tensor(actual, dtype=eff.dtype)
    # first order: the error is O(lr²) and far below the effects themselves
    assert torch.allclose(eff, actual, rtol=0.05, atol=1e-3 * float(actual.abs().max()))
    assert (eff.sign() == actual.sign()).all()


def test_refusal_records_keep_the_prompts_and_cycle_refusals(setup):
    ctx = make_context()
    prompts = [ctx.records[i] for i in ctx.pools["task"]]
    out = influence.refusal_records(prompts, ["no .", "never ."])
    assert [r.prompt for r in out] == [r.prompt for r in prompts]
    assert [r.response for r in out][:3] == ["no .", "never .", "no ."]
    with pytest.raises(ValueError, match="refusal"):
        influence.refusal_records(prompts, [])


def test_jvp_and_hooks_agree(setup):
    model, task, heldout = setup
    model = model.float()
    d = {"a": influence.heldout_gradient(model, heldout), "b": influence.heldout_gradient(model, task)}
    h = influence.first_order_effects(model, task, d, 0.1, "hooks")
    j = influence.first_order_effects(model, task, d, 0.1, "jvp")
    for k in d:
        assert torch.allclose(h[k], j[k], rtol=1e-3, atol=1e-6)


def test_probe_is_off_by_default_and_records_only_its_steps(setup):
    model, task, heldout = setup
    probe = influence.InfluenceProbe(every=3, safety=heldout, task=task)
    assert probe(model, task, 1, 1e-3) == {}
    cols = probe(model, task, 3, 1e-3)
    assert set(cols) == {"effect_safety", "effect_task"} and len(cols["effect_safety"]) == len(task)
    from explorer.config import RunConfig

    assert RunConfig().eval.influence_every == 0
    assert influence.InfluenceProbe.for_run(RunConfig(), [], None) is None


def test_the_loop_records_effects_for_every_method(short_config):
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config("method=random", "eval.influence_every=2", "eval.influence_n=8", "eval.every=0"))
    dec = reader.decisions(d)
    rec = dec[dec["step"] % 2 == 0]
    assert rec["effect_safety"].notna().all() and rec["effect_task"].notna().all()
    assert dec.loc[dec["step"] % 2 == 1, "effect_safety"].isna().all()
    # only the mix's samples, each recorded at its own step
    smp = reader.samples(d).set_index("sample_id")
    assert rec["sample_id"].isin(smp.index).all() and not rec.duplicated(["step", "sample_id"]).any()
    assert isinstance(dec, pd.DataFrame)


def test_a_compliance_raises_the_heldout_refusal_loss_where_its_refusal_lowers_it(short_config):
    """What the effect means, on the prepared aligned model: one step on (harmful prompt -> compliance)
    raises the held-out refusal loss, one step on the same prompt -> its refusal lowers it. (The loop
    test above used to compare harmful with benign mix samples: a few harmful samples in four steps,
    which held on README's preparation and not on another CPU's (docs/reproducing.md); this contrast
    holds on both.)"""
    from dataclasses import replace

    from explorer.data.tokenize import encode_batch
    from explorer.model.load import load_model
    from explorer.prepare.specs import resolve_spec
    from explorer.train.assemble import build_pools

    cfg = short_config("method=sft", "data.harmful_ratio=0.5")
    model, tok, _ = load_model(resolve_spec(cfg.model.path), "cpu", cfg.model.dtype)
    data = build_pools(cfg)

    def enc(recs):   # strict: a record too long for the context raises instead of unpairing the rows
        return encode_batch(tok, recs, cfg.data.max_length)

    harmful = [r for r in data.mix if r.provenance == "harmful"][:16]
    assert len(harmful) == 16 and all(r.extra.get("refusal") for r in harmful)
    refused = [replace(r, response=r.extra["refusal"]) for r in harmful]
    held = [r for s in data.suites if s.kind == "harmful" for r in s.records][:32]
    v = {"s": influence.heldout_gradient(model, enc(influence.refusal_records(held)))}
    comply = influence.first_order_effects(model, enc(harmful), v, 1e-3)["s"]
    refuse = influence.first_order_effects(model, enc(refused), v, 1e-3)["s"]
    assert float(comply.mean()) > 0 > float(refuse.mean())
    assert int((comply > refuse).sum()) >= 12          # 14 and 15 of 16 on the two CPUs' preparations
