"""What the training loop hands to a method: the model, the data pools, the recorder, the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from explorer.data.records import Record
from explorer.methods.base import Batch


@dataclass
class Context:
    """Everything a method may use. Built by the loop; methods read it and may set a few fields.

    Methods may:
      - restrict or extend `train_ids` in `prepare` (the loader is built after `prepare`);
      - call `encode(records)` to tokenise any records into a Batch on `device`;
      - call `log(table, rows)` to record rows (list of dicts) into the run folder; `run_id`
        is added to each row; rows of partitioned tables should carry `step`;
      - call `reference_model()` for a frozen copy of the starting (aligned) model;
      - call `load_model(spec)` for another model (e.g. PACT's base model) in eval mode.
    """

    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    config: Any                       # explorer.config.RunConfig
    records: dict[str, Record]        # every record by sample_id
    pools: dict[str, list[str]]       # pool name -> sample ids: task, reference, safety, eval_* ...
    train_ids: list[str]              # the fine-tuning set the loader draws from
    encode: Callable[[list[Record]], Batch]
    log: Callable[[str, list[dict]], None]
    reference_model: Callable[[], torch.nn.Module]
    load_model: Callable[[str], torch.nn.Module]
    run_dir: str = ""
    step: int = 0                     # global optimiser step about to be taken (0-based)
    epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    optimizer: Any = None
    generator: torch.Generator | None = None   # seeded; use it for any randomness
    autocast_dtype: torch.dtype | None = None  # bf16 on CUDA, None on CPU
    state: dict[str, Any] = field(default_factory=dict)  # scratch space shared within a run

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The parameters being fine-tuned (all of them on the tiny model, LoRA matrices with peft)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def pool_records(self, pool: str) -> list[Record]:
        return [self.records[i] for i in self.pools.get(pool, [])]
