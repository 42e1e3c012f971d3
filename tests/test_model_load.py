"""Loading real things: any local HF causal LM directory, with or without a chat template, with LoRA."""

import json
from pathlib import Path

import pytest
import torch

from explorer.model.load import ModelLoadError, load_model, pick_device, pick_dtype

pytestmark = pytest.mark.integration


def test_unknown_model_path_names_it(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_model(str(tmp_path / "nope"))
    assert "nope" in str(e.value) and "does not exist" in str(e.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_model(str(tmp_path))
    assert "config.json" in str(e.value)


def test_directory_without_tokenizer(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        load_model(str(tmp_path))
    assert "tokenizer" in str(e.value) and str(tmp_path) in str(e.value)


def test_auto_device_and_dtype_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pick_device("auto").type == "cpu"
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ModelLoadError):
        pick_dtype("fp8", torch.device("cpu"))


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory, tiny_paths):
    """A 'real' local checkpoint: a fresh Llama with the tiny tokenizer but NO chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tmp_path_factory.mktemp("ckpt")
    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    tok.chat_template = None
    tok.save_pretrained(d)
    cfg_path = Path(d) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    for f in Path(d).glob("chat_template.*"):
        f.unlink()
    AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"]).save_pretrained(d)
    return d


def test_lora_run_on_a_local_checkpoint_trains_only_adapters(plain_checkpoint, short_config, monkeypatch):
    from explorer.train.recipe import Recipe, run

    model, tok, info = load_model(str(plain_checkpoint))
    assert not info["chat_template"]
    captured = {}
    real = Recipe.train

    def spy(self):
        captured["model"] = self.model
        captured["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        return real(self)

    monkeypatch.setattr(Recipe, "train", spy)
    run_dir = run(short_config(f"model.path={plain_checkpoint}", "model.lora=true", "model.lora_r=4", "model.lora_alpha=8",
                               "optim.lr=1e-3", "method=sft"))
    m = json.loads((run_dir / "run.json").read_text())
    assert m["status"] == "complete" and m["model_info"]["lora"]["r"] == 4
    trainable = {n for n, p in captured["model"].named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    changed = {n for n, p in captured["model"].named_parameters()
               if not torch.equal(p.detach(), captured["before"][n])}
    assert changed and changed <= trainable  # base weights untouched, adapters moved
