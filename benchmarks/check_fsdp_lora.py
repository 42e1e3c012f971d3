"""Does torch's FSDP (FSDP2, fully_shard) run a LoRA model here, sharding the adapter too? A bare
torch check, not the training path: the recipe's `shard=fsdp` (explorer/model/distributed.py, fsdp_shard)
shards only the frozen base weights and keeps the adapter whole (README, "On more than one device").

    python -m torch.distributed.run --nproc_per_node=2 --standalone benchmarks/check_fsdp_lora.py

Each rank loads the tiny aligned model with LoRA on q_proj and v_proj, shards every decoder layer and
the whole model with fully_shard (gloo on CPU, NCCL on CUDA), runs one forward and backward, and
prints its loss, how many of the LoRA parameters' elements it holds and whether their gradients
arrived sharded (DTensor) -- what a sharded per-sample scorer would have to gather.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as td

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from torch.distributed.fsdp import fully_shard

    from explorer.model.load import LoraSettings, load_model
    from explorer.prepare import tiny
    from explorer.prepare.specs import resolve_spec

    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    td.init_process_group("nccl" if cuda else "gloo")
    rank = td.get_rank()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if rank == 0:
        tiny.ensure_prepared()
    td.barrier()
    model, tok, _ = load_model(resolve_spec("tiny:aligned"), device, "float32",
                               lora=LoraSettings(8, 16, 0.0, ("q_proj", "v_proj")))
    for layer in model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(5, 100, (2, 12), generator=g).to(device)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    lora = [p for p in model.parameters() if p.requires_grad]
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in lora)
    full = sum(p.numel() for p in lora)
    kinds = {type(p.grad).__name__ for p in lora if p.grad is not None}
    print(f"rank {rank}: fully_shard + LoRA forward/backward ok on {device} ({td.get_backend()}); loss "
          f"{float(out.loss):.3f}; holds {local} of {full} LoRA elements; gradients: {', '.join(sorted(kinds))}",
          flush=True)
    td.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
