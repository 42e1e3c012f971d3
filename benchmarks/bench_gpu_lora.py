"""GPU figures: per-sample scoring and a DualSelect-style step on a randomly initialised ~1B Llama with LoRA.

    python benchmarks/bench_gpu_lora.py [--batches 8 32] [--seq 256]

No checkpoint is needed (random weights; timings do not depend on them). bf16 weights, LoRA r=16,
α=32 on q_proj/v_proj (the DualSelect authors' setting). Median of 5 timed repeats after 2 warm-ups,
with CUDA synchronisation. "DualSelect step" = explorer's own DualSelect.decide on the batch (exact
per-sample gradients by hooks, compat against a reference direction, hard top-half filter, the update
assembled from the kept per-sample gradients) + the correction η·g_ref (transform_grads) + clipping +
AdamW, through explorer's own recipe step: the work a training step does between refreshes. "SFT" is the same
recipe step with the SFT method.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from types import SimpleNamespace

from explorer.config import OptimConfig, RunConfig
from explorer.data.batch import Batch
from explorer.methods.dualselect import DualSelect, DualSelectConfig
from explorer.methods.protocol import RunSettings
from explorer.methods.sft import Sft, SftConfig
from explorer.scoring import directional, make_estimator
from explorer.train.recipe import Recipe


def build(seq: int, device):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=max(2048, seq))
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    return model


def make_batch(B: int, seq: int, device, n_resp: int = 64) -> Batch:
    g = torch.Generator().manual_seed(B)
    ids = torch.randint(0, 32000, (B, seq), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, -n_resp:] = ids[:, -n_resp:]
    return Batch(ids.to(device), torch.ones_like(ids).to(device), labels.to(device), [f"s{i}" for i in range(B)],
                 torch.full((B,), n_resp).to(device))


def bench(fn, repeats=5, warm=2) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--seq", type=int, default=256)
    a = ap.parse_args()
    dev = torch.device("cuda")
    model = build(a.seq, dev)
    params = [p for p in model.parameters() if p.requires_grad]
    n_all = sum(p.numel() for p in model.parameters())
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {n_all / 1e9:.2f} B parameters, "
          f"{sum(p.numel() for p in params) / 1e6:.2f} M LoRA | seq {a.seq}")
    cfg = RunConfig(optim=OptimConfig(lr=2e-5, warmup_steps=0, lr_schedule="constant", clip=1.0))

    def recipe_for(method, ctx):
        """explorer's own training step (explorer/train/recipe.py) around `ctx`; records are dropped."""
        r = Recipe.for_context(method, ctx, cfg, total_steps=10**9)
        r.step_no = 1  # past the epoch boundary: no reference refresh inside the timed steps
        return r

    def context():
        return SimpleNamespace(model=model, device=dev, autocast_dtype=None,
                               settings=RunSettings(seed=0, batch_size=max(a.batches), max_length=a.seq, base_model="",
                                                    lora=True),
                               pools={"reference": ["r0"]}, step=1, steps_per_epoch=10**9,
                               log=lambda table, rows: None, generator=None)

    rows = []
    for B in a.batches:
        b = make_batch(B, a.seq, dev)
        sft_recipe = recipe_for(Sft(SftConfig()), context())

        def sft():
            sft_recipe.step(b)

        ds = DualSelect(DualSelectConfig(warmup_steps=0, keep_fraction=0.5, reference_selection="static"))
        ctx = context()
        ds.prepare(ctx)
        P = sum(p.numel() for p in params)
        ds.state.g_ref_full = torch.randn(P, device=dev) * 1e-3     # a reference direction, as a refresh leaves it
        ds.state.g_ref, ds.state.ref_loss, ds.state.refresh_id = ds.state.g_ref_full, 0.0, 0
        dual_recipe = recipe_for(ds, ctx)

        def dual_step():
            dual_recipe.step(b)

        t_sft = bench(sft)
        rows.append((B, "step: SFT", t_sft, None, 1.0))
        t_loop = bench(lambda: make_estimator("loop").features(model, b), repeats=3, warm=1)
        rows.append((B, "scoring: loop (authors' way)", t_loop, 1.0, None))
        for name in ("hooks", "projected"):
            est = make_estimator(name)
            t = bench(lambda: est.features(model, b))
            rows.append((B, f"scoring: {name}", t, t_loop / t, None))
        try:
            est = make_estimator("vmap", chunk_size=8)
            t = bench(lambda: est.features(model, b), repeats=3, warm=1)
            rows.append((B, "scoring: vmap", t, t_loop / t, None))
        except Exception as e:  # report, do not hide
            rows.append((B, f"scoring: vmap failed ({type(e).__name__})", float("nan"), None, None))
        v = torch.randn(sum(p.numel() for p in params), device=dev)
        t = bench(lambda: directional(model, b, v), repeats=3, warm=1)
        rows.append((B, "scoring: jvp (<g_i, v> only)", t, t_loop / t, None))
        t = bench(dual_step)
        rows.append((B, "step: DualSelect (exact)", t, None, t / t_sft))
        print(f"peak memory after batch {B}: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
    print("| batch | what | seconds | × loop | × SFT step |\n|---:|---|---:|---:|---:|")
    for B, what, t, xl, xs in rows:
        print(f"| {B} | {what} | {t:.4f} | {'' if xl is None else f'{xl:.2f}'} | {'' if xs is None else f'{xs:.2f}'} |")


if __name__ == "__main__":
    main()
