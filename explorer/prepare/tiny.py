"""The tiny world's models (`explorer prepare`): a word-level tokenizer and a Llama trained from scratch.

Two stages on sample_data/world_train.jsonl (docs/tiny_world.md says why these settings):
  base     harmful requests -> placeholder compliance, everything else answered (answers everything)
  aligned  continues from base on the same mix with harmful requests -> refusal
Both are saved with `save_pretrained` (with the tokenizer and its chat template) and load with
`AutoModelForCausalLM`. The result is cached under $EXPLORER_CACHE (default ~/.cache/explorer) in a
folder named by a hash of the settings (the preparation seed included) and the data, so later
commands reuse it. `explorer prepare --seed N` makes an independent preparation (another
initialisation and data order) in its own folder; runs name it with the model spec `tiny:aligned@N`.

Reproducibility: preparation runs with a fixed number of CPU threads (`PREPARE_THREADS`; the order of
a parallel reduction depends on it) and `torch.use_deterministic_algorithms`, seeded from the
preparation seed; prepare.json records the sha256 of each stage's weights, so two preparations can
be compared and every run's manifest names the weights it started from (`model_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock

from explorer.data.records import Record
from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import collate, encode_all
from explorer.model.optim import LrSchedule, OptimStep
from explorer.model.plumbing import cpu_info

log = logging.getLogger(__name__)

SPECIAL = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "user": "<|user|>",
           "assistant": "<|assistant|>"}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|> {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }}{{ eos_token }}\n"
    "{% elif m['role'] == 'system' %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinySettings:
    """Architecture and the two training stages. Defaults follow the feasibility probe."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 64
    base_steps: int = 1500        # stage 1: answers everything
    base_lr: float = 2e-3
    aligned_steps: int = 800      # stage 2: refuses harmful requests
    aligned_lr: float = 1e-3
    batch_size: int = 64
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0


#: CPU threads during preparation: a float reduction split over threads sums in another order, so
#: the same seed gives other weights with another thread count. One thread runs anywhere.
PREPARE_THREADS = 1
WEIGHTS_FILE = "model.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("EXPLORER_CACHE", Path.home() / ".cache" / "explorer"))


def _data_fingerprint(data_dir: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in data_dir.glob("*.jsonl")):
        h.update(name.encode())
        h.update((data_dir / name).read_bytes())
    return h.hexdigest()[:16]


def cache_dir_for(settings: TinySettings, data_dir: Path) -> Path:
    key = json.dumps({"settings": asdict(settings), "data": _data_fingerprint(data_dir), "v": 1},
                     sort_keys=True)
    return cache_root() / "tiny" / hashlib.sha256(key.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str]):
    """A word-level `tokenizers` model wrapped as a Hugging Face fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk"]))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL.values()), min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIAL["pad"],
                                   unk_token=SPECIAL["unk"], bos_token=SPECIAL["bos"],
                                   eos_token=SPECIAL["eos"],
                                   additional_special_tokens=[SPECIAL["user"], SPECIAL["assistant"]])
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

def build_model(tokenizer, s: TinySettings):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                      num_attention_heads=s.num_heads, num_key_value_heads=s.num_heads,
                      max_position_embeddings=s.max_positions, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5)
    torch.manual_seed(s.seed)
    return LlamaForCausalLM(cfg)


def stage_records(world: list[Record], stage: str) -> list[Record]:
    """The world mix for a stage: `aligned` swaps each harmful compliance for its refusal."""
    if stage == "base":
        return world
    out = []
    for r in world:
        if r.provenance == "harmful":
            out.append(Record(r.sample_id, r.pool, r.family, r.category, r.prompt, r.extra["refusal"],
                              "benign", {}))
        else:
            out.append(r)
    return out


def train_stage(model, tokenizer, records: list[Record], steps: int, lr: float, s: TinySettings,
                seed: int, desc: str) -> list[float]:
    from tqdm.auto import tqdm

    from explorer.data.tokenize import pad_id_of
    from explorer.model.losses import per_sample_nll

    enc, skipped = encode_all(tokenizer, records, s.max_positions, strict=True, source=desc)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    # warm-up, then cosine down to 0 at the last step; gradients clipped to norm 1
    optim = OptimStep(opt, model.parameters(), LrSchedule(lr, steps, s.warmup, "cosine", 0.0), clip=1.0)
    model.train()
    losses = []
    order: list[int] = []
    pad = pad_id_of(tokenizer)
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2, disable=None)
    for step in bar:
        if len(order) < s.batch_size:
            more = list(range(len(enc)))
            rng.shuffle(more)
            order += more
        idx, order = order[:s.batch_size], order[s.batch_size:]
        b = collate([enc[i] for i in idx], pad)
        optim.set_lr(step)
        out = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        loss = per_sample_nll(out.logits, b.labels).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def weights_sha256(model_dir: str | Path) -> str | None:
    """sha256 of a saved model's weights file (None when the folder has no single safetensors file)."""
    f = Path(model_dir) / WEIGHTS_FILE
    if not f.is_file():
        return None
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _reproducible(seed: int, threads: int = PREPARE_THREADS):
    """Fixed thread count, deterministic algorithms and seeded generators for the duration of a
    preparation; the caller's settings are restored afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    # warn_only: an op without a deterministic kernel warns instead of stopping the preparation
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def prepare(data_dir: Path | None = None, settings: TinySettings = TinySettings(),
            force: bool = False, evaluate_models: bool = True) -> dict[str, str]:
    """Train (or reuse) the tiny base and aligned models. Returns {"base": dir, "aligned": dir, ...}."""
    data_dir = Path(data_dir) if data_dir else sample_data_dir()
    out = cache_dir_for(settings, data_dir)
    paths = {"base": str(out / "base"), "aligned": str(out / "aligned"), "dir": str(out)}
    if (out / "prepare.json").exists() and not force:
        return paths
    out.mkdir(parents=True, exist_ok=True)
    # One preparer at a time: parallel test workers, or the ranks of a torchrun launch, would otherwise
    # each train into the same folder. Whoever waited finds prepare.json written and reuses it.
    with FileLock(str(out) + ".lock"):
        if (out / "prepare.json").exists() and not force:
            return paths
        with _reproducible(settings.seed):
            _prepare(out, paths, data_dir, settings, evaluate_models)
    return paths


def _prepare(out: Path, paths: dict[str, str], data_dir: Path, settings: TinySettings,
             evaluate_models: bool) -> None:
    t0 = time.time()
    world = read_sample_file(data_dir / "world_train.jsonl")
    texts = []
    for f in sorted(data_dir.glob("*.jsonl")):
        for r in read_sample_file(f):
            texts += [r.prompt, r.response, r.extra.get("refusal", "")]
    tokenizer = train_tokenizer(texts)
    model = build_model(tokenizer, settings)
    info = {"settings": asdict(settings), "seed": settings.seed, "data_dir": str(data_dir),
            "vocab_size": len(tokenizer), "n_params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_info(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    t = time.time()
    base_losses = train_stage(model, tokenizer, stage_records(world, "base"), settings.base_steps,
                              settings.base_lr, settings, settings.seed, "tiny base")
    info["base_seconds"] = round(time.time() - t, 1)
    model.save_pretrained(out / "base")
    tokenizer.save_pretrained(out / "base")
    t = time.time()
    aligned_losses = train_stage(model, tokenizer, stage_records(world, "aligned"), settings.aligned_steps,
                                 settings.aligned_lr, settings, settings.seed + 1, "tiny aligned")
    info["aligned_seconds"] = round(time.time() - t, 1)
    model.save_pretrained(out / "aligned")
    tokenizer.save_pretrained(out / "aligned")
    info["final_loss"] = {"base": round(sum(base_losses[-50:]) / 50, 4),
                          "aligned": round(sum(aligned_losses[-50:]) / 50, 4)}
    info["train_seconds"] = round(time.time() - t0, 1)
    if evaluate_models:
        info["metrics"] = evaluate_prepared(paths, data_dir)
    info["weights_sha256"] = {which: weights_sha256(out / which) for which in ("base", "aligned")}
    info["total_seconds"] = round(time.time() - t0, 1)
    with open(out / "prepare.json", "w") as f:
        json.dump(info, f, indent=2)


def evaluate_prepared(paths: dict[str, str], data_dir: Path) -> dict[str, dict[str, float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from explorer.eval.evaluate import evaluate, load_suites, summarize

    suites = load_suites(data_dir)
    res = {}
    for which in ("base", "aligned"):
        tok = AutoTokenizer.from_pretrained(paths[which], local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(paths[which], local_files_only=True)
        _, metrics = evaluate(model, tok, suites, batch_size=128)
        res[which] = summarize(metrics)
    return res


def ensure_prepared(data_dir: Path | None = None, seed: int = 0) -> dict[str, str]:
    return prepare(data_dir, TinySettings(seed=seed))


def prepared_info(data_dir: Path | None = None, seed: int = 0) -> dict:
    data_dir = Path(data_dir) if data_dir else sample_data_dir()
    p = cache_dir_for(TinySettings(seed=seed), data_dir) / "prepare.json"
    return json.loads(p.read_text()) if p.exists() else {}
