"""TopK sparse autoencoder: exactly k slots per input, decoder columns at unit norm, training lowers
the fraction of variance unexplained on data with a sparse structure, and safetensors round-trip."""

from __future__ import annotations

import pytest
import torch

from explorer.interp.sae import TopKSAE, fvu, train_sae


@pytest.mark.unit
@pytest.mark.parametrize("k", [1, 3, 8])
def test_topk_keeps_exactly_k_latents_per_input(k):
    g = torch.Generator().manual_seed(k)
    sae = TopKSAE(16, 40, k, generator=g)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)                          # every pre-activation positive: k non-zeros
    x = torch.randn(3, 5, 16, generator=g)
    z = sae.encode(x)
    assert z.shape == (3, 5, 40)
    assert ((z != 0).sum(-1) == k).all()
    # the kept ones are the k largest pre-activations
    pre = sae.pre_activations(x)
    kept = torch.zeros_like(pre, dtype=torch.bool).scatter(-1, pre.topk(k, -1).indices, True)
    assert torch.equal(kept, z != 0)
    # without the bias, negative pre-activations are ReLU'd: at most k, never more
    with torch.no_grad():
        sae.b_enc.zero_()
    assert ((sae.encode(x) != 0).sum(-1) <= k).all()


@pytest.mark.unit
def test_training_reconstructs_sparse_data_and_round_trips(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d, n_feat, N = 16, 24, 3000
    feats = torch.randn(n_feat, d, generator=g)
    # each row: 2 of 24 features with positive magnitudes, plus an offset (what b_pre is for)
    idx = torch.stack([torch.randperm(n_feat, generator=g)[:2] for _ in range(N)])
    mags = torch.rand(N, 2, generator=g) + 0.5
    X = (feats[idx] * mags.unsqueeze(-1)).sum(1) + 3.0
    untrained = TopKSAE(d, 48, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fvu0 = fvu(X, untrained(X)[0])
    sae, info = train_sae(X, 48, 4, steps=400, batch_size=256, lr=3e-3, generator=torch.Generator().manual_seed(2))
    assert info["fvu"] < 0.25 < fvu0, (info, fvu0)
    assert 0.0 <= info["dead_share"] < 1.0 and info["mean_l0"] <= 4
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(48), atol=1e-5)
    path = tmp_path / "sae.safetensors"
    sae.save(path, layer=0)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"       # not a pickle
    back = TopKSAE.load(path)
    assert back.settings == sae.settings
    assert torch.equal(back.encode(X[:10]), sae.encode(X[:10]))


@pytest.mark.unit
def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="k = 0"):
        TopKSAE(4, 8, 0)
    with pytest.raises(ValueError, match="n_latents = 8"):
        TopKSAE(4, 8, 9)
