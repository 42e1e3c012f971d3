"""Memory and time of DualSelect's reference refresh against an SFT step (issue #14 item 5).

A ~135M-parameter Llama-architecture model (SmolLM2-135M's shape: hidden 576, 30 layers, 9 heads,
3 kv heads, intermediate 1536, vocabulary 49152, tied embeddings), randomly initialised from
LlamaConfig (nothing is downloaded), with LoRA r=16 on q_proj, v_proj, on CPU. References are 64
sequences of random token ids, 230-256 tokens each, the last 48 supervised (lengths vary so that
padding is realistic). Each phase runs in a fresh subprocess and reports its peak RSS
(getrusage ru_maxrss) and wall time:

  sft       one SFT step (forward, backward, AdamW) on `--batch` references
  fwdbwd    one forward + backward over all 64 references, in batches of `--batch` (the cost unit)
  refresh   DualSelect's `_refresh` over the 64 references (exact per-sample gradients, K_ref = 32),
            with `--chunk` (auto = sized from the memory budget; an int = the old fixed chunks)

Targets: refresh peak RSS <= 1.5 x sft's; refresh time <= 1.5 x fwdbwd's.

    nice -n 10 python benchmarks/bench_memory.py                      # auto chunks (the default)
    nice -n 10 python benchmarks/bench_memory.py --chunk 8 --phases refresh   # the old fixed chunks

Times on a shared machine vary with its load; compare phases of the same invocation. BENCH_LAYERS=4
builds the same shape with 4 layers instead of 30 (a quicker check of the same code path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

N_REFS, T_MIN, T_MAX, N_SUP = 64, 230, 256, 48


def build(attn: str, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=576, num_hidden_layers=int(os.environ.get("BENCH_LAYERS", "30")), num_attention_heads=9, num_key_value_heads=3,
                      intermediate_size=1536, vocab_size=49152, max_position_embeddings=2048,
                      tie_word_embeddings=True, rms_norm_eps=1e-5)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    return model


def references(seed: int = 0):
    """64 (sample_id, token ids) pairs, 230-256 tokens, the last N_SUP supervised."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for i in range(N_REFS):
        n = int(torch.randint(T_MIN, T_MAX + 1, (1,), generator=g))
        out[f"ref-{i:03d}"] = torch.randint(0, 49152, (n,), generator=g)
    return out


def encoder(refs):
    """ctx.encode for the stand-in records: right-padded Batch, labels on the last N_SUP tokens."""
    import torch

    from explorer.data.batch import Batch

    def encode(recs):
        seqs = [refs[r.sample_id] for r in recs]
        T = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            attn[i, :len(s)] = 1
            labels[i, len(s) - N_SUP:len(s)] = s[-N_SUP:]
        return Batch(ids, attn, labels, [r.sample_id for r in recs], (labels != -100).sum(1))

    return encode


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def phase(name: str, args) -> dict:
    import torch

    from explorer.model.losses import per_sample_nll

    torch.set_num_threads(args.threads)
    model = build(args.attn)
    refs = references()
    encode = encoder(refs)
    recs = {sid: SimpleNamespace(sample_id=sid) for sid in refs}
    ids = list(refs)
    base = rss_mb()
    t0 = time.perf_counter()
    if name == "sft":
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        model.train()
        b = encode([recs[i] for i in ids[:args.batch]])
        loss = per_sample_nll(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels).mean()
        loss.backward()
        opt.step()
    elif name == "fwdbwd":
        model.train()
        for s in range(0, N_REFS, args.batch):
            b = encode([recs[i] for i in ids[s:s + args.batch]])
            out = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            per_sample_nll(out.logits, b.labels).mean().backward()
            del out
    elif name == "refresh":
        from explorer.methods.dualselect import DualSelect, DualSelectConfig
        from explorer.methods.protocol import RunSettings

        chunk = args.chunk if args.chunk == "auto" else int(args.chunk)
        m = DualSelect(DualSelectConfig(k_ref=32, chunk_size=chunk, chunk_memory_mb=args.budget_mb))
        logged = {}
        ctx = SimpleNamespace(model=model,
                              settings=RunSettings(seed=0, batch_size=args.batch, max_length=T_MAX, base_model="",
                                                   lora=True),
                              autocast_dtype=None, pools={"reference": ids}, records=recs, encode=encode,
                              generator=torch.Generator().manual_seed(0), step=10, steps_per_epoch=100,
                              log=lambda table, rows: logged.setdefault(table, rows))
        m.prepare(ctx)
        m.d_ = torch.randn(m.n_params_, generator=torch.Generator().manual_seed(2))
        model.train()
        m._refresh(ctx, "bench")
        rows = logged["refreshes"]
        assert len(rows) == N_REFS and sum(r["selected"] for r in rows) == 32
    else:
        raise SystemExit(f"unknown phase {name!r}")
    wall = time.perf_counter() - t0
    return {"phase": name, "peak_rss_mb": rss_mb(), "model_rss_mb": base, "wall_s": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="sft,fwdbwd,refresh")
    p.add_argument("--batch", type=int, default=8, help="SFT batch (the authors' 8); also the auto budget's step")
    p.add_argument("--chunk", default="auto", help="refresh chunk_size: auto or an int")
    p.add_argument("--budget-mb", type=float, default=0.0, help="chunk_memory_mb (0 = one training step)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | eager")
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(phase(args.one, args)))
        return 0
    res = {}
    for name in args.phases.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--batch", str(args.batch), "--chunk", args.chunk,
               "--budget-mb", str(args.budget_mb), "--attn", args.attn, "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[name]
        print(f"  {name:8s} peak RSS {r['peak_rss_mb']:8.0f} MB (model built: {r['model_rss_mb']:6.0f} MB)"
              f"   wall {r['wall_s']:7.1f} s", flush=True)
    print(f"\n135M Llama shape, LoRA r16 q,v, CPU, attn={args.attn}, batch {args.batch}, refresh chunk={args.chunk}"
          f", budget={args.budget_mb or 'one training step'}")
    print(f"{'phase':10s}{'peak RSS MB':>14s}{'wall s':>10s}")
    for name, r in res.items():
        print(f"{name:10s}{r['peak_rss_mb']:14.0f}{r['wall_s']:10.1f}")
    if "refresh" in res and "sft" in res:
        print(f"refresh / sft peak RSS      = {res['refresh']['peak_rss_mb'] / res['sft']['peak_rss_mb']:.2f}"
              "  (target <= 1.5)")
    if "refresh" in res and "fwdbwd" in res:
        print(f"refresh / fwd+bwd wall time = {res['refresh']['wall_s'] / res['fwdbwd']['wall_s']:.2f}"
              "  (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
