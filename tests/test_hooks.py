"""Scoped hooks: captured activations are the real ones, every hook is gone after the block — also
when the block raises — and forward_to stops the model after the named layer."""

from __future__ import annotations

import pytest
import torch

from explorer.interp.hooks import capture, forward_to, hooks, modules_named
from explorer.model.plumbing import decoder_layers

from _method_helpers import make_model, make_tokenizer


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(make_tokenizer()).eval()


def _ids(model, B=2, T=7):
    return torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.unit
def test_capture_records_layer_outputs_and_inputs_then_removes_hooks(model):
    ids = _ids(model)
    layers = decoder_layers(model)
    downs = modules_named(model, "mlp.down_proj")
    assert sorted(downs) == [f"model.layers.{i}.mlp.down_proj" for i in range(len(layers))]
    before = _n_hooks(model)
    with torch.no_grad(), capture({"l0": layers[0]}) as out, capture(downs, what="input") as inp:
        model(input_ids=ids)
    assert _n_hooks(model) == before
    # output_hidden_states[1] is the output of layer 0: the captured tensor must equal it
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(out["l0"][0], hs[1])
    name = "model.layers.0.mlp.down_proj"
    x = inp[name][0]
    assert x.shape == (2, 7, model.config.intermediate_size)
    # the captured input, through the layer, is its output
    with torch.no_grad(), capture({"d": downs[name]}) as y:
        model(input_ids=ids)
    assert torch.allclose(downs[name](x), y["d"][0], atol=1e-6)


@pytest.mark.unit
def test_hooks_are_removed_when_the_block_raises(model):
    before = _n_hooks(model)
    layer = decoder_layers(model)[0]
    with pytest.raises(RuntimeError, match="boom"):
        with capture({"l": layer}, what="output"), capture({"l": layer}, what="input"):
            assert _n_hooks(model) == before + 2
            raise RuntimeError("boom")
    assert _n_hooks(model) == before
    # and when a hook itself raises inside the forward pass
    def bad(m, args, out):
        raise ValueError("hook failed")

    with pytest.raises(ValueError, match="hook failed"):
        with hooks(forward=[(layer, bad)]):
            model(input_ids=_ids(model))
    assert _n_hooks(model) == before
    # hooks that were registered still come off if a later registration fails
    with pytest.raises(AttributeError):
        with hooks(forward=[(layer, bad), (object(), bad)]):
            pass
    assert _n_hooks(model) == before


@pytest.mark.unit
def test_forward_to_stops_after_the_layer_and_keeps_the_graph(model):
    ids = _ids(model)
    layers = decoder_layers(model)
    before = _n_hooks(model)     # transformers registers a few hooks of its own
    seen = []
    with hooks(forward=[(layers[1], lambda m, a, o: seen.append(1))]):
        h = forward_to(model, layers[0], input_ids=ids)
    assert seen == []                                   # layer 1 never ran
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(h, hs[1])
    h.sum().backward()                                  # a graph back into the embedding
    assert model.get_input_embeddings().weight.grad is not None
    model.zero_grad(set_to_none=True)
    assert _n_hooks(model) == before
