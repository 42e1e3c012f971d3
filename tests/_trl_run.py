"""Run by tests/test_integrations.py, also under `accelerate launch` (one process per rank):

    accelerate launch --cpu --num_processes 2 tests/_trl_run.py RUNS_DIR METHOD [PER_DEVICE] [ACCUM] [key=value ...]

trains the tiny world's mix (the one `explorer run` builds with the same settings) through explorer's
SFTTrainer with the recipe's optimiser (torch AdamW, weight_decay 0) and schedule (recipe_scheduler), so
that its decisions can be compared with `explorer run`'s. The key=value pairs are the method's settings.
"""

from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

#: the settings both sides run with (explorer run overrides; the Trainer's are derived from them below)
SHORT = {"data.n_train": 64, "optim.epochs": 1, "optim.batch_size": 16, "eval.final_n": 2, "eval.n": 2,
         "eval.every": 0, "record.flush_every": 1, "eval.max_new_tokens": 2, "seed": 0, "optim.warmup_steps": 1,
         "optim.lr": 2e-4, "optim.lr_schedule": "linear", "optim.lr_min_ratio": 0.0, "model.device": "cpu"}


def method_settings(pairs: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def dataset_of_mix(cfg):
    """The fine-tuning set `explorer run` builds, as a TRL prompt-completion dataset with ids."""
    from datasets import Dataset

    from explorer.train.assemble import build_pools

    return Dataset.from_list([{"sample_id": r.sample_id, "prompt": r.prompt, "completion": r.response,
                               "provenance": r.provenance} for r in build_pools(cfg).mix])


def train(runs_dir: str, method: str, per_device: int, accum: int, mcfg: dict, lora: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from explorer.config import load_config
    from explorer.integrations import SFTTrainer, recipe_scheduler
    from explorer.prepare import tiny

    cfg = load_config(None, [f"{k}={v}" for k, v in SHORT.items()])
    path = tiny.ensure_prepared()["aligned"]
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=os.path.join(runs_dir, "trainer-out"), per_device_train_batch_size=per_device,
                     gradient_accumulation_steps=accum, num_train_epochs=SHORT["optim.epochs"], learning_rate=SHORT["optim.lr"],
                     warmup_steps=SHORT["optim.warmup_steps"], lr_scheduler_type="linear", max_grad_norm=1.0,
                     seed=SHORT["seed"], max_length=64, bf16=False, use_cpu=True, report_to=[], save_strategy="no",
                     logging_steps=1, disable_tqdm=True)
    optimizers = (None, None)
    if not lora:   # the recipe's AdamW and schedule (a LoRA model is wrapped inside the trainer: its own)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=SHORT["optim.lr"], weight_decay=0.0)
        total = SHORT["data.n_train"] // SHORT["optim.batch_size"]
        optimizers = (opt, recipe_scheduler(opt, total, SHORT["optim.warmup_steps"], "linear", 0.0))
    explorer = {k: SHORT[k] for k in ("eval.final_n", "eval.n", "eval.every", "record.flush_every",
                                      "eval.max_new_tokens", "model.device")}
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset_of_mix(cfg), processing_class=tok,
                         optimizers=optimizers, peft_config=peft_config, method=method, method_config=mcfg,
                         explorer={**explorer, "runs_dir": runs_dir, "run_name": f"trl-{method}"})
    trainer.train()
    return trainer


def main() -> int:
    runs_dir, method = sys.argv[1], sys.argv[2]
    per_device = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    accum = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    train(runs_dir, method, per_device, accum, method_settings(sys.argv[5:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
