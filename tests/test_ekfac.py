"""The EK-FAC check (explorer/scoring/ekfac.py, optional: kronfluence). With a very large damping λ the
preconditioner (G + λI)⁻¹ is I/λ, so λ·I(z) must equal −⟨∇L_heldout, ∇ℓ_z⟩ over the tracked (Linear)
weights: that pins kronfluence's sign convention, the mean over queries and the data plumbing to a
gradient computed here with plain autograd."""

import pytest
import torch

pytest.importorskip("kronfluence", reason="the [influence] extra (kronfluence) is not installed")

from explorer.data.batch import Batch  # noqa: E402
from explorer.model.losses import per_sample_nll  # noqa: E402
from explorer.scoring import ekfac  # noqa: E402

pytestmark = pytest.mark.unit


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # untied embeddings: every tracked Linear weight is its own parameter, so the reference gradient
    # below covers exactly what kronfluence tracks
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float()


def _batch(n: int, seed: int, T: int = 10) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 37, (n, T), generator=g)
    mask = torch.ones(n, T, dtype=torch.long)
    lens = torch.randint(6, T + 1, (n,), generator=g)
    for i, L in enumerate(lens.tolist()):          # right padding, as collate does
        mask[i, L:] = 0
        ids[i, L:] = 0
    labels = ids.clone()
    labels[:, :3] = -100                            # the "prompt"
    labels[mask == 0] = -100
    return Batch(ids, mask, labels, [f"s{seed}-{i}" for i in range(n)], (labels != -100).sum(1))


def _linear_grad(model, b: Batch, rows) -> torch.Tensor:
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    loss = per_sample_nll(model(input_ids=b.input_ids[rows], attention_mask=b.attention_mask[rows]).logits,
                          b.labels[rows]).mean()
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, ws)])


def test_large_damping_gives_minus_the_gradient_dot_product(tmp_path):
    model = _model()
    train, query = _batch(12, 1), _batch(5, 2)
    gq = _linear_grad(model, query, slice(None))                       # ∇ of the mean held-out loss
    ref = torch.stack([_linear_grad(model, train, slice(i, i + 1)) @ gq for i in range(len(train))])
    lam = 1e4
    got = ekfac.ekfac_effects(model, train, {"q": query}, damping=lam, batch_size=4, workdir=tmp_path)["q"]
    got = torch.as_tensor(got, dtype=torch.float32) * lam
    assert got.shape == (len(train),)
    assert ref.abs().max() > 1e-3                  # the check is not comparing zeros
    torch.testing.assert_close(got, -ref, rtol=2e-2, atol=2e-3 * float(ref.abs().max()))


def test_curvature_changes_the_ranking_at_the_default_damping(tmp_path):
    """At kronfluence's heuristic damping the preconditioner is not a multiple of I: the influences are
    not just a rescaled dot product (otherwise EK-FAC would add nothing to the first-order check)."""
    model = _model()
    train, query = _batch(12, 1), _batch(5, 2)
    gq = _linear_grad(model, query, slice(None))
    ref = torch.stack([_linear_grad(model, train, slice(i, i + 1)) @ gq for i in range(len(train))])
    got = torch.as_tensor(ekfac.ekfac_effects(model, train, {"q": query}, batch_size=4, workdir=tmp_path)["q"])
    ratio = got.float() / -ref
    assert ratio.std() / ratio.abs().mean() > 0.05
