"""What explorer costs inside TRL's SFTTrainer (docs/trl.md, "The cost"): seconds per optimiser step of

    plain      trl.SFTTrainer
    callback   trl.SFTTrainer + ExplorerCallback (read-only recording)
    dualselect explorer's SFTTrainer with method="dualselect"

and, for comparison, `explorer run` with sft and dualselect on the same model and data, as ratios from one
run of each. Two models: the tiny world's (full fine-tuning) and a randomly initialised Llama of
SmolLM2-135M's shape (built from a config, nothing downloaded) with LoRA r=16 on q_proj, v_proj.
Targets (issue 31): callback/plain <= 1.05; dualselect/plain <= the recipe's dualselect/sft.

    python benchmarks/bench_trl.py [--steps 5] [--batch 8] [--models tiny,135m]

A step's time is the wall time between consecutive ends of optimiser steps (data, decide, forward,
backward, optimiser, recording); the first step is left out (warm-up); the median of the rest is used.
Gradient checkpointing and bf16 are off on every side, as `explorer run` runs on a CPU. On a shared
machine a few steps' ratios are noisy; the callback's own seconds (its forward hook and step end, timed
inside it) are printed too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

#: SmolLM2-135M's shape (its config.json), with random weights
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                    rms_norm_eps=1e-5, rope_theta=100000.0)
#: DualSelect as tests/test_integrations.py runs it, with a smaller reference cap (a short benchmark)
DUALSELECT = {"warmup_steps": 1, "refresh": "every_n_steps", "refresh_every": 2, "ref_cap": 16}


def random_135m(out: Path, tokenizer_dir: str) -> str:
    """A LlamaForCausalLM of SmolLM2-135M's shape with seeded random weights, saved with the tiny world's
    tokenizer (its ids are a subset of the vocabulary)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(**SMOLLM2_135M, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


class StepClock:
    """Wall time between consecutive step ends (the first from on_train_begin)."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, *a, **k):
                clock.last = time.perf_counter()

            def on_step_end(self, *a, **k):
                now = time.perf_counter()
                clock.times.append(now - clock.last)
                clock.last = now

        self.times: list[float] = []
        self.callback = _CB()

    def per_step(self) -> list[float]:
        return self.times[1:] or self.times


#: seconds the ExplorerCallback itself spends (its forward hook and its step end), in the last run
OWN = {"s": 0.0, "steps": 0}


def timed_callback(settings: dict):
    """An ExplorerCallback that counts its own seconds: on a shared machine the step-time ratio is noisy,
    the callback's own time is not."""
    from explorer.integrations import ExplorerCallback

    class Timed(ExplorerCallback):
        def _seen(self, *a):
            t = time.perf_counter()
            super()._seen(*a)
            OWN["s"] += time.perf_counter() - t

        def on_step_end(self, *a, **k):
            t = time.perf_counter()
            super().on_step_end(*a, **k)
            OWN["s"] += time.perf_counter() - t
            OWN["steps"] += 1

    OWN.update(s=0.0, steps=0)
    return Timed(settings)


def trainer_step_seconds(kind: str, model_dir: str, lora: bool, steps: int, batch: int, runs: Path) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig
    from trl import SFTTrainer as PlainSFTTrainer

    from explorer.config import load_config
    from explorer.integrations import SFTTrainer
    from explorer.train.assemble import build_pools
    from datasets import Dataset

    cfg = load_config(None, [f"data.n_train={steps * batch}", "seed=0"])
    ds = Dataset.from_list([{"sample_id": r.sample_id, "prompt": r.prompt, "completion": r.response}
                            for r in build_pools(cfg).mix])
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(runs / "out"), per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=2e-4, bf16=False, use_cpu=True, gradient_checkpointing=False, report_to=[],
                     save_strategy="no", logging_steps=1, disable_tqdm=True, max_length=64, seed=0)
    clock = StepClock()
    settings = {"runs_dir": str(runs), "run_name": f"bench-{kind}", "eval.final_n": 2, "eval.max_new_tokens": 2}
    if kind == "plain":
        t = PlainSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                            callbacks=[clock.callback])
    elif kind == "callback":
        t = PlainSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                            callbacks=[timed_callback(settings), clock.callback])
    else:
        t = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                       callbacks=[clock.callback], method="dualselect", method_config=DUALSELECT, explorer=settings)
    t.train()
    return clock.per_step()


def recipe_step_seconds(method: str, model_spec: str, lora: bool, steps: int, batch: int, runs: Path) -> list[float]:
    from explorer.config import load_config
    from explorer.runs import reader
    from explorer.train.recipe import run

    mcfg = [f"method.{k}={v}" for k, v in DUALSELECT.items()] if method == "dualselect" else []
    d = run(load_config(None, [f"runs_dir={runs}", f"model.path={model_spec}", f"model.lora={str(lora).lower()}",
                               f"data.n_train={steps * batch}", f"optim.batch_size={batch}", "optim.epochs=1", "seed=0",
                               "eval.final_n=2", "eval.max_new_tokens=2", "progress=false", "model.device=cpu",
                               f"method={method}", *mcfg]))
    t = reader.steps(d)["time_s"].tolist()
    return t[1:] or t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="tiny,135m")
    a = p.parse_args(argv)
    from explorer.prepare import tiny

    tiny_dir = tiny.ensure_prepared()["aligned"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {"tiny": (tiny_dir, "tiny:aligned", False)}
        if "135m" in a.models.split(","):
            d = random_135m(tmp / "random-135m", tiny_dir)
            models["135m"] = (d, d, True)
        print(f"torch threads {torch.get_num_threads()}; {a.steps} steps of {a.batch} samples; seconds per step "
              "after the first: median (min)")
        for name in a.models.split(","):
            path, spec, lora = models[name]
            trainer_step_seconds("plain", path, lora, 2, a.batch, tmp / f"{name}-warmup")   # first-use costs
            t = {}
            for k in ("plain", "callback", "dualselect", "recipe sft", "recipe dualselect"):
                if k.startswith("recipe"):
                    t[k] = recipe_step_seconds(k.split()[1], spec, lora, a.steps, a.batch, tmp / f"{name}-{k}")
                else:
                    t[k] = trainer_step_seconds(k, path, lora, a.steps, a.batch, tmp / f"{name}-{k}")
                print(f"  {name} {k}: " + " ".join(f"{x:.3f}" for x in t[k]), flush=True)
            med = {k: statistics.median(v) for k, v in t.items()}
            print(f"{name}{' + LoRA' if lora else ''}: " + " | ".join(
                f"{k} {med[k]:.4f} ({min(v):.4f})" for k, v in t.items()))
            own = OWN["s"] / max(1, OWN["steps"])
            print(f"  the callback's own time: {own * 1e3:.3f} ms per step = {own / med['plain'] * 100:.3f}% of a plain "
                  f"step, i.e. (plain + own) / plain = {(med['plain'] + own) / med['plain']:.4f}")
            print(f"  callback / plain = {med['callback'] / med['plain']:.3f} (target <= 1.05); dualselect / plain = "
                  f"{med['dualselect'] / med['plain']:.3f} (target <= the recipe's dualselect / sft = "
                  f"{med['recipe dualselect'] / med['recipe sft']:.3f})", flush=True)

if __name__ == "__main__":
    main()
