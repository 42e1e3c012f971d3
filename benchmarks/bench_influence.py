"""What the independent check costs: one recorded step of InfluenceProbe against one plain training step.

    nice -n 10 python benchmarks/bench_influence.py [--batch 32] [--heldout 64] [--repeats 5]

On a model with the tiny world's shape (Llama, hidden 128, 2 layers, 4 heads, 550-word vocabulary,
64 positions; random weights: the cost does not depend on them) it times
  - a plain step: forward + backward + AdamW on one batch (what every run pays anyway);
  - the probe with the exact per-sample gradients (hooks) and with forward-mode products (jvp);
and prints the overhead of a whole run for influence_every = 1, 4, 16 (recorded steps / every).
Peak extra memory of the hooks probe is the [B, P] gradient block: B·P·4 bytes, printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.data.batch import Batch  # noqa: E402
from explorer.model.losses import per_sample_nll  # noqa: E402
from explorer.scoring.influence import InfluenceProbe  # noqa: E402


def tiny_shaped_model(vocab: int = 550):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def random_batch(B: int, T: int, vocab: int, gen: torch.Generator) -> Batch:
    ids = torch.randint(3, vocab, (B, T), generator=gen)
    labels = ids.clone()
    labels[:, : T // 2] = -100          # the prompt half is not supervised
    return Batch(ids, torch.ones_like(ids), labels, [f"s{i}" for i in range(B)], (labels != -100).sum(1))


def timed(fn, repeats: int) -> float:
    fn()                                # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--seq", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=94, help="steps of a run (the README's run: 94)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = tiny_shaped_model().train()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    batch = random_batch(a.batch, a.seq, vocab, gen)
    safety, task = random_batch(a.heldout, a.seq, vocab, gen), random_batch(a.heldout, a.seq, vocab, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)

    def plain_step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        per_sample_nll(out.logits, batch.labels).mean().backward()
        opt.step()

    t_step = timed(plain_step, a.repeats)
    rows = [("plain training step", t_step)]
    for est in ("hooks", "jvp"):
        probe = InfluenceProbe(1, safety, task, estimator=est)
        rows.append((f"probe ({est})", timed(lambda: probe(model, batch, 0, 1e-4), a.repeats)))
    print(f"model: {P:,} trainable parameters; batch {a.batch}, held-out {a.heldout} per loss, {a.seq} tokens; "
          f"{torch.get_num_threads()} threads on {torch.device('cpu')}")
    print(f"{'':24s} {'median s':>9s} {'× step':>7s}")
    for name, t in rows:
        print(f"{name:24s} {t:9.3f} {t / t_step:7.1f}")
    t_probe = rows[1][1]
    print(f"\nwhole run of {a.steps} steps, hooks probe (training steps alone ≈ {a.steps * t_step:.1f} s):")
    for every in (1, 4, 16):
        n = (a.steps + every - 1) // every
        print(f"  influence_every={every:2d}: {n:3d} recorded steps, + {n * t_probe:6.1f} s "
              f"(+{100 * n * t_probe / (a.steps * t_step):.0f} % of the training steps)")
    print(f"\nhooks probe extra memory: the [B, P] gradient block = {a.batch * P * 4 / 2**20:.1f} MiB "
          "(jvp never forms it: one forward with tangents per held-out loss)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
