"""The shared plumbing (explorer/model/plumbing.py, MethodBase's default state_dict) on a random tiny Llama."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from _method_helpers import make_context, make_model, make_tokenizer
from explorer.methods.protocol import MethodBase
from explorer.model.plumbing import (add_flat_grad, eval_mode, flat_grad, pick_reference, reference_logits,
                                     set_flat_grad)


def _params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]


@pytest.mark.unit
def test_flat_gradients_get_set_add_round_trip():
    ps = _params()
    assert torch.equal(flat_grad(ps), torch.zeros(10))            # no .grad yet: zeros
    v = torch.arange(10.0)
    set_flat_grad(ps, v)
    assert torch.equal(ps[0].grad, v[:6].view(3, 2)) and torch.equal(flat_grad(ps), v)
    add_flat_grad(ps, torch.ones(10), scale=2.0)
    assert torch.equal(flat_grad(ps), v + 2)
    ps[1].grad = None
    add_flat_grad(ps, torch.ones(10), scale=-1.0, only_existing=True)
    assert ps[1].grad is None and torch.equal(ps[0].grad.reshape(-1), v[:6] + 1)
    add_flat_grad(ps, torch.ones(10))
    assert torch.equal(ps[1].grad, torch.ones(4))


@pytest.mark.unit
def test_eval_mode_restores_the_previous_mode_also_on_error():
    m = torch.nn.Dropout()
    m.train()
    with pytest.raises(RuntimeError), eval_mode(m):
        assert not m.training
        raise RuntimeError("inside")
    assert m.training
    m.eval()
    with eval_mode(m):
        pass
    assert not m.training


def test_reference_logits_adapter_off_equal_the_frozen_copy():
    """With LoRA, switching the adapters off gives the starting model: the same logits as a copy."""
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    base = make_model(tok, seed=0)
    copy = make_model(tok, seed=0).eval()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, init_lora_weights=False))  # non-zero B
    ctx = make_context(model, tok)
    b = ctx.encode([ctx.records["task-0"], ctx.records["task-1"]])
    model.train()
    mode, ref = pick_reference(model, "auto", "test", lambda: copy)
    assert mode == "adapter_off" and ref is None
    off = reference_logits(model, None, b.input_ids, b.attention_mask, None)
    assert model.training                                        # its mode came back
    assert torch.allclose(off, reference_logits(model, copy, b.input_ids, b.attention_mask, None), atol=1e-5)
    assert not torch.allclose(off, model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, atol=1e-3)
    with pytest.raises(ValueError, match="adapter_off"):
        pick_reference(make_model(tok), "adapter_off", "test", lambda: copy)


@dataclass
class _State:
    d: torch.Tensor | None = None
    n: int = 0
    ids: list = field(default_factory=list)


class _Stateful(MethodBase):
    def __init__(self, config=None):
        super().__init__(config)
        self.state = _State()


@pytest.mark.unit
def test_the_default_state_dict_round_trips_a_state_dataclass():
    a = _Stateful()
    assert a.state_dict() == {"n": 0, "ids": []}                 # None fields are left out
    a.state.d, a.state.n, a.state.ids = torch.ones(2), 3, ["x", "y"]
    b = _Stateful()
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.state.d, a.state.d) and b.state.n == 3 and b.state.ids == ["x", "y"]
    assert MethodBase(None).state_dict() == {}


def _llama(n_layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=n_layers,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))


@pytest.mark.unit
def test_decoder_layers_of_a_plain_and_a_peft_wrapped_llama():
    from peft import LoraConfig, get_peft_model

    from explorer.model.plumbing import decoder_layers

    plain = _llama(3)
    assert decoder_layers(plain) is plain.model.layers and len(decoder_layers(plain)) == 3
    wrapped = get_peft_model(_llama(3), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    layers = decoder_layers(wrapped)
    assert layers is wrapped.get_base_model().model.layers and len(layers) == 3


@pytest.mark.unit
def test_decoder_layers_is_the_longest_list_of_one_block_class_and_refuses_a_tie():
    from explorer.model.plumbing import decoder_layers

    class WithTower(torch.nn.Module):   # a vision tower's shorter `layers` comes first in named_modules
        def __init__(self):
            super().__init__()
            self.vision = torch.nn.Module()
            self.vision.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
            self.lm = _llama(2)
            self.mixed = torch.nn.Module()
            self.mixed.h = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Tanh()])

    m = WithTower()
    assert decoder_layers(m) is m.lm.model.layers          # not the tower's, not the mixed list of 3
    m.vision.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="two lists of 2 decoder layers"):
        decoder_layers(m)
    with pytest.raises(ValueError, match="found no decoder layers"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
