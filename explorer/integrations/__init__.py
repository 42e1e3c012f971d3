"""explorer inside a researcher's own Hugging Face training script (docs/trl.md).

    from explorer.integrations import SFTTrainer      # was: from trl import SFTTrainer
    trainer = SFTTrainer(..., method="dualselect")    # the one new argument; a run folder appears

`SFTTrainer` and `Trainer` run an explorer method through the recipe's protocol inside TRL's and
transformers' trainers; `ExplorerCallback` records an ordinary run (no method) read-only.
`recipe_scheduler` gives `explorer run`'s learning-rate schedule to a Trainer.

Names are imported on first use, so that `import explorer.integrations` costs nothing and `Trainer`
works without TRL installed.
"""

from __future__ import annotations

__all__ = ["SFTTrainer", "Trainer", "ExplorerCallback", "recipe_scheduler", "records_from_dataset"]


def __getattr__(name: str):
    if name == "SFTTrainer":
        from explorer.integrations.trl import SFTTrainer

        return SFTTrainer
    if name in ("Trainer", "ExplorerCallback", "recipe_scheduler", "records_from_dataset"):
        from explorer.integrations import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'explorer.integrations' has no attribute {name!r}")
