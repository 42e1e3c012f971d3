"""TRL's SFTTrainer with an explorer method (docs/trl.md): explorer/integrations/hf.py does the work for
both trainers; this module only names TRL's parent, so that `Trainer` works without TRL installed.

    from explorer.integrations import SFTTrainer     # was: from trl import SFTTrainer
    SFTTrainer(model=..., args=SFTConfig(...), train_dataset=ds, processing_class=tok, method="dualselect")

TRL's own SFT example that keeps a sample column and computes a per-sample loss (its TailSFT example:
an SFTTrainer subclass, a collator that keeps the extra column, model_accepts_loss_kwargs = False, no
packing) shows the pattern; here the column is `sample_id`, carried by explorer's collator.
"""

from __future__ import annotations

from trl import SFTTrainer as _TRLSFTTrainer

from explorer.integrations.hf import MethodTrainerMixin


class SFTTrainer(MethodTrainerMixin, _TRLSFTTrainer):
    """trl.SFTTrainer with `method=` (a registered method name or instance), `method_config=` (its config
    dataclass or a dict) and `explorer=` (RunConfig keys: data, evaluation, recording). Without a method
    it is trl.SFTTrainer with an ExplorerCallback recording the run."""

    model_accepts_loss_kwargs = False   # the loss is explorer's weighted mean, not the model's own
