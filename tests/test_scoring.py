"""The scoring backend: every exact estimator equals a one-sample-at-a-time backward loop."""

import pytest
import torch

from explorer.scoring import CountSketch, cosine, directional, make_estimator, weighted_mean

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tiny_paths):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from explorer.data.sample import read_sample_file, sample_data_dir
    from explorer.data.tokenize import collate, encode_all

    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    model = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"])
    d = sample_data_dir()
    recs = read_sample_file(d / "harmful_train.jsonl")[:6] + read_sample_file(d / "task_train.jsonl")[::500][:6]
    enc, _ = encode_all(tok, recs, 64)
    return model, collate(enc, tok.pad_token_id)  # mixed lengths: right padding is exercised


@pytest.mark.parametrize("name", ["hooks", "vmap"])
def test_exact_estimators_equal_the_loop(tiny, name):
    model, batch = tiny
    ref = make_estimator("loop").features(model, batch)
    got = make_estimator(name).features(model, batch)
    torch.testing.assert_close(got.losses, ref.losses, atol=1e-5, rtol=1e-4)
    scale = ref.grads.abs().max()
    assert (got.grads - ref.grads).abs().max() <= 1e-5 * scale + 1e-6
    assert ref.grads.norm(dim=1).min() > 0


def test_hooks_on_lora_adapters(tiny):
    from peft import LoraConfig, get_peft_model
    import copy

    model, batch = tiny
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # B starts at zero; make the adapters non-trivial
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    ref = make_estimator("loop").features(pm, batch)
    got = make_estimator("hooks").features(pm, batch)
    assert got.grads.shape[1] == sum(p.numel() for p in pm.parameters() if p.requires_grad)
    assert (got.grads - ref.grads).abs().max() <= 1e-5 * ref.grads.abs().max() + 1e-7


def test_jvp_directional_products(tiny):
    model, batch = tiny
    ref = make_estimator("loop").features(model, batch)
    v = torch.randn(ref.grads.shape[1], generator=torch.Generator().manual_seed(0))
    losses, dots = directional(model, batch, v)
    torch.testing.assert_close(dots, ref.grads @ v, atol=1e-3 * (ref.grads @ v).abs().max().item(), rtol=1e-3)
    torch.testing.assert_close(losses, ref.losses, atol=1e-5, rtol=1e-4)


def test_projected_cosines_track_exact_ones(tiny):
    model, batch = tiny
    exact = make_estimator("hooks").features(model, batch)
    proj_est = make_estimator("projected", projection_dim=512, seed=0)
    proj = proj_est.features(model, batch)
    direction = weighted_mean(exact.grads, torch.ones(len(exact.losses)))
    c_exact = cosine(exact.grads, direction)
    c_proj = cosine(proj.grads, proj_est.to_feature(direction))
    corr = torch.corrcoef(torch.stack([c_exact, c_proj]))[0, 1]
    assert corr > 0.9, corr


def test_count_sketch_is_linear_and_seeded():
    s1, s2 = CountSketch(1000, 16, 3, "cpu"), CountSketch(1000, 16, 3, "cpu")
    x, y = torch.randn(1000), torch.randn(1000)
    torch.testing.assert_close(s1(x + 2 * y), s1(x) + 2 * s1(y))
    torch.testing.assert_close(s1(x), s2(x))
    torch.testing.assert_close(s1(torch.stack([x, y]))[1], s1(y))
