"""What computing logits only where the loss reads them buys: one training step's forward + backward.

    python benchmarks/bench_logits.py [--world smollm2] [--threads 2] [--batch-size 16] [--repeats 5]

The loss l(theta; z) reads the logits only at positions that predict a response token; `model_nll`
(explorer/model/losses.py) asks the model for those positions alone (`logits_to_keep`). This times one
step on a real batch of the world's fine-tuning set both ways -- `full`: the whole [B, T, V] logits
and per_sample_nll over them, as every run did before; `kept`: model_nll -- and prints the median
seconds, the ratio, and how far the two losses differ. On smollm2 (a 49k vocabulary) the logits and
their log-softmax are a large part of a LoRA step on a CPU; on the tiny world (a vocabulary of a few
hundred words) they are not.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explorer.config import load_config
from explorer.data.tokenize import collate, encode_all, pad_id_of
from explorer.model.load import LoraSettings, load_model
from explorer.model.losses import loss_positions, model_nll, per_sample_nll
from explorer.prepare.specs import resolve_spec
from explorer.train.assemble import build_pools


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="smollm2", choices=["tiny", "smollm2"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load_config(None, [f"world={a.world}", "method=sft", "data.harmful_ratio=0.1"])
    lora = LoraSettings(cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout, cfg.model.lora_targets) if cfg.model.lora else None
    model, tok, _ = load_model(resolve_spec(cfg.model.path), "cpu", cfg.model.dtype, lora=lora)
    data = build_pools(cfg)
    recs = [data.records[i] for i in data.pools["task"]][:a.batch_size]
    enc, _ = encode_all(tok, recs, cfg.data.max_length, overlong=cfg.data.overlong)
    b = collate(enc, pad_id_of(tok))

    def full():
        out = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        return per_sample_nll(out.logits, b.labels)

    def kept():
        return model_nll(model, b.input_ids, b.attention_mask, b.labels)

    times = {}
    for name, f in (("full", full), ("kept", kept)) * 2:       # interleaved, the first round warms up
        ts = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            f().mean().backward()
            model.zero_grad(set_to_none=True)
            ts.append(time.perf_counter() - t)
        times[name] = statistics.median(ts)
    with torch.no_grad():
        diff = float((full() - kept()).abs().max())
    T = b.input_ids.shape[1]
    print(f"world {a.world}: model {cfg.model.path} (vocabulary {len(tok)}), batch {len(b)} x {T} "
          f"tokens, {int(b.attention_mask.sum())} real, {int(b.n_target_tokens.sum())} supervised; logits kept at "
          f"{len(loss_positions(b.labels))} of {T - 1} positions; {a.threads} thread(s)")
    print(f"step (forward + backward), median of {a.repeats}: full {times['full']:.2f} s   kept {times['kept']:.2f} s"
          f"   kept / full = {times['kept'] / times['full']:.2f}")
    print(f"largest difference between the two per-sample losses: {diff:.2e}")


if __name__ == "__main__":
    main()
