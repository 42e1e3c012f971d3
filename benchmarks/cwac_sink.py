"""CWAC's SAE with and without the first (attention-sink) token, on a world's own prompts.

    python benchmarks/cwac_sink.py [--world smollm2] [--layer -1] [--texts 200] [--steps 300]

Collects the residual stream after one decoder layer (CWAC's `sae_layer`; -1 = the middle) on the
world's benign task prompts and harmful reference prompts (chat template, prompt tokens), prints the
first token's norm against the median, and trains CWAC's TopK SAE (`explorer.interp.sae.train_sae`,
4 x the width, k 16) on every token and on every token but the first (`method.skip_first_tokens=1`):
held-out FVU and dead share each. docs/methods/cwac.md quotes its output for smollm2.
"""

from __future__ import annotations

import argparse

import torch

from explorer.data.load import load_records
from explorer.interp.sae import train_sae
from explorer.model.load import load_model
from explorer.prepare.specs import resolve_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="smollm2", choices=["smollm2", "tiny"])
    ap.add_argument("--layer", type=int, default=-1)
    ap.add_argument("--texts", type=int, default=200, help="prompts per pool (CWAC's sae_texts)")
    ap.add_argument("--steps", type=int, default=300, help="SAE steps (the smollm2 world's sae_steps)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.world == "smollm2":
        from explorer.model import smollm2
        from explorer.worlds import smollm2_data_dir

        smollm2.prepare()
        data = smollm2_data_dir()
    else:
        from explorer.data.sample import sample_data_dir
        from explorer.prepare import tiny

        tiny.ensure_prepared()
        data = sample_data_dir()
    model, tok, _ = load_model(resolve_spec(f"{args.world}:aligned"))
    model.eval()
    layers = model.config.num_hidden_layers
    layer = (layers - 1) // 2 if args.layer < 0 else args.layer
    prompts = [r.prompt for r in load_records(data / "task_train.jsonl", "task")[:args.texts]]
    prompts += [r.prompt for r in load_records(data / "reference_pool.jsonl", "reference")[:args.texts]]
    rows, first, rest = [], [], []
    with torch.no_grad():
        for p in prompts:
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True)
                ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            else:
                ids = tok(p, return_tensors="pt")["input_ids"]
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0].float()
            rows.append(h)
            first.append(float(h[0].norm()))
            rest.append(h[1:].norm(dim=-1))
    rest = torch.cat(rest)
    print(f"{args.world}: layer {layer} of {layers}, {len(prompts)} prompts, {sum(len(r) for r in rows)} tokens")
    print(f"first-token norm: median {torch.tensor(first).median():.1f}; other tokens: median "
          f"{rest.median():.1f}, max {rest.max():.1f}")
    for name, acts in (("every token", torch.cat(rows)), ("first token left out", torch.cat([r[1:] for r in rows]))):
        _, info = train_sae(acts, 4 * acts.shape[-1], 16, steps=args.steps, generator=torch.Generator().manual_seed(0))
        print(f"SAE on {name:21s}: held-out FVU {info['fvu']:.6f}, dead share {info['dead_share']:.4f}, "
              f"{info['n_tokens']} tokens")


if __name__ == "__main__":
    main()
