"""Load any local Hugging Face causal LM (optionally with LoRA through peft) from its folder.

A world's model spec ("tiny:aligned", "smollm2:base") names a folder that explorer/prepare/specs.py
finds (preparing it on first use); this module takes the folder. Device "auto" picks CUDA when
present, else CPU; dtype "auto" picks bf16 on CUDA, float32 on CPU. Nothing is downloaded: a path
that is not a local directory is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch


class ModelLoadError(ValueError):
    pass


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; "
                             "expected device: auto | cpu | cuda[:N]")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"dtype {dtype!r} unknown; expected one of auto, {', '.join(table)}")
    return table[dtype]


def checkpoint_dir(path: str | Path) -> Path:
    """A local Hugging Face checkpoint folder, checked (nothing is downloaded). A world's model spec
    (tiny:aligned, smollm2:base) becomes such a folder in explorer/prepare/specs.py."""
    spec = str(path)
    path = Path(os.path.expanduser(spec))
    if not path.is_dir():
        raise ModelLoadError(f"model path {spec!r} does not exist or is not a directory; expected a "
                             "local Hugging Face checkpoint directory (config.json + weights + "
                             "tokenizer) or tiny:aligned / tiny:base / smollm2:base. Nothing is downloaded.")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise ModelLoadError(f"model path {spec!r}: no config.json; expected a Hugging Face "
                             "checkpoint directory saved with save_pretrained")
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises several types here
        raise ModelLoadError(f"model path {str(path)!r}: could not load a tokenizer ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); expected tokenizer files "
                             "(tokenizer.json or tokenizer_config.json) in the directory") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")


def load_model(path: str | Path, device: str | torch.device = "auto", dtype: str = "auto",
               lora: LoraSettings | None = None, adapter: str | None = None, trainable: bool = True):
    """Returns (model, tokenizer, info) for the checkpoint folder `path` (a world's model spec is
    resolved first: explorer/prepare/specs.py). With `lora`, wraps the model in fresh peft LoRA
    adapters; with `adapter`, loads saved peft adapters from that directory."""
    from transformers import AutoModelForCausalLM

    path = checkpoint_dir(path)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dt = pick_dtype(dtype, dev)
    tok = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt, local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"model path {str(path)!r}: could not load a causal LM "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    model.to(dev)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=list(lora.targets), task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    if not trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    info = {"model_path": str(path), "device": str(dev), "dtype": str(dt).replace("torch.", ""),
            "n_params": n_all, "n_trainable": n_train, "lora": lora.__dict__ if lora else None,
            "chat_template": bool(getattr(tok, "chat_template", None))}
    return model, tok, info


#: hash weights up to this size when a run starts (a few seconds); larger checkpoints record sizes only
FINGERPRINT_MAX_BYTES = 4 << 30


def model_fingerprint(model_dir: str | Path) -> dict:
    """Which weights a run starts from, for its manifest: the folder, the sha256 of its weights files
    (the tiny world's single model.safetensors hashes to the value its prepare.json records) and, for
    a tiny-world model, the preparation seed and the hash prepare.json recorded."""
    d = Path(model_dir)
    files = sorted(f for f in d.glob("*") if f.suffix in (".safetensors", ".bin") and f.is_file())
    size = sum(f.stat().st_size for f in files)
    out: dict = {"model_path": str(d), "weights_files": [f.name for f in files], "weights_bytes": size,
                 "weights_sha256": None, "preparation_seed": None}
    if files and size <= FINGERPRINT_MAX_BYTES:
        h = hashlib.sha256()
        for f in files:
            if len(files) > 1:
                h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        out["weights_sha256"] = h.hexdigest()
    prep = d.parent / "prepare.json"
    if prep.is_file():  # a tiny-world preparation
        try:
            info = json.loads(prep.read_text())
        except (OSError, ValueError):
            info = {}
        out["preparation_seed"] = info.get("seed", info.get("settings", {}).get("seed"))
        out["prepared_sha256"] = (info.get("weights_sha256") or {}).get(d.name)
    return out
