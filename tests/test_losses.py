"""model_nll computes logits only at the positions that predict a response token (explorer/model/losses.py);
it must give the per-sample losses and gradients of the full-logits path."""

import pytest
import torch

from explorer.model.losses import keeps_logits, loss_kwargs, loss_positions, model_nll, per_sample_nll

pytestmark = pytest.mark.integration   # small random Llama models, built in the test


def small_llama(vocab: int = 97):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def batch(vocab: int = 97):
    """Three right-padded rows with prompts of different lengths; -100 on prompt and padding."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    labels = ids.clone()
    for row, (n_prompt, n) in enumerate([(4, 9), (6, 12), (5, 7)]):
        labels[row, :n_prompt] = -100
        labels[row, n:] = -100
        attn[row, n:] = 0
        ids[row, n:] = 0
    return ids, attn, labels


@pytest.mark.unit
def test_positions_are_the_union_of_the_rows_response_predictors():
    _, _, labels = batch()
    # row 0 supervises tokens 4..8 (predicted from 3..7), row 1 6..11 (5..10), row 2 5..6 (4..5)
    assert loss_positions(labels).tolist() == list(range(3, 11))


def test_kept_logits_give_the_full_logits_losses_and_gradients():
    model = small_llama()
    ids, attn, labels = batch()
    kw = loss_kwargs(model, labels)
    assert keeps_logits(model) and len(kw["logits_to_keep"]) == 8 < ids.shape[1] - 1

    full = per_sample_nll(model(input_ids=ids, attention_mask=attn).logits, labels)
    g_full = torch.autograd.grad(full.sum(), list(model.parameters()))
    kept = model_nll(model, ids, attn, labels)
    g_kept = torch.autograd.grad(kept.sum(), list(model.parameters()))
    assert torch.allclose(kept, full, rtol=1e-6, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g_kept, g_full))
    # and the kept path did compute fewer logits
    out = model(input_ids=ids, attention_mask=attn, **kw)
    assert out.logits.shape[1] == 8


def test_a_peft_model_passes_the_positions_through():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(small_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    ids, attn, labels = batch()
    assert keeps_logits(model)
    full = per_sample_nll(model(input_ids=ids, attention_mask=attn).logits, labels)
    assert torch.allclose(model_nll(model, ids, attn, labels), full, rtol=1e-6, atol=1e-6)


def test_a_model_without_logits_to_keep_gets_the_full_logits():
    inner = small_llama()

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return inner(input_ids=input_ids, attention_mask=attention_mask)

    model = Plain()
    ids, attn, labels = batch()
    assert not keeps_logits(model) and loss_kwargs(model, labels) == {}
    full = per_sample_nll(inner(input_ids=ids, attention_mask=attn).logits, labels)
    assert torch.equal(model_nll(model, ids, attn, labels), full)


def test_a_batch_supervised_everywhere_keeps_every_logit():
    model = small_llama()
    ids = torch.randint(1, 97, (2, 6))
    labels = ids.clone()
    assert loss_kwargs(model, labels) == {}          # nothing to leave out
    labels[:] = -100
    assert loss_kwargs(model, labels) == {}          # no supervised token: the full path, loss 0
    assert model_nll(model, ids, None, labels).tolist() == [0.0, 0.0]
