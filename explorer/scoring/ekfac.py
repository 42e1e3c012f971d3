"""The stronger check: EK-FAC influence (kronfluence) of each fine-tuning sample on held-out losses.

The first-order check (influence.py) asks what one SGD step on a sample alone would do to the held-out
refusal loss, −lr·⟨∇ℓ_z, ∇L⟩, and treats every parameter direction alike. An influence function asks
what up-weighting z in the training objective would do at the weights the run ended with, through the
curvature of the training loss (Koh & Liang 2017; Grosse et al. 2023 for language models):

    I(z) = dL_heldout/dε = −∇L_heldout(θ)ᵀ (G + λI)⁻¹ ∇ℓ_z(θ)

with G the Gauss–Newton / Fisher matrix of the training loss, approximated per Linear module by
EK-FAC (George et al. 2018): Kronecker factors of activation and output-gradient covariances, their
eigenbases, and per-eigendirection variances refitted on the data. kronfluence (Bae et al.,
pip `kronfluence`) computes it; explorer supplies the task below.

Sign convention, the same as effect_safety: I(z) is the predicted change of a held-out LOSS when z
gets more weight. ekfac_safety > 0: more of this sample would raise the refusal loss — lower safety.
kronfluence's own pairwise score is ∇fᵀ(G+λI)⁻¹∇ℓ (positive = helpful), so I = −score.

Choices, recorded by the caller:
- G is fitted on the run's fine-tuning mix at the final weights, with labels sampled from the model
  (the true Fisher, kronfluence's default), over every nn.Linear module (attention and MLP
  projections and the LM head; the embedding lookup and RMSNorm weights are not Linear and are left
  out — with tied embeddings the LM head's use of the shared matrix is tracked, the lookup's is not).
- λ: kronfluence's heuristic when `damping` is None (0.1 × the mean eigenvalue per module).
- The held-out loss is the mean over held-out examples, so I(z) is the mean of the per-query
  influences; the held-out sets are InfluenceProbe's (never trained on).

Optional: kronfluence is not a core dependency. On a CPU-only torch, install it without its
torchvision requirement (it never imports torchvision, and PyPI's torchvision wheel is built for CUDA
torch and fails to load beside a CPU torch, breaking transformers' imports):

    pip install "explorer[influence]" && pip install --no-deps "kronfluence>=1.0.1"
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from explorer.data.batch import Batch
from explorer.model.losses import per_sample_nll

EKFAC_SAFETY = "ekfac_safety"
EKFAC_TASK = "ekfac_task"
INSTALL_HINT = ('pip install "explorer[influence]" && pip install --no-deps "kronfluence>=1.0.1" '
                "(kronfluence never imports torchvision; PyPI's torchvision does not load beside a CPU torch)")


def available() -> bool:
    try:
        import kronfluence  # noqa: F401
        return True
    except ImportError:
        return False


def _require():
    try:
        import kronfluence  # noqa: F401
    except ImportError as e:
        raise ImportError(f"EK-FAC influence needs kronfluence, which is not installed ({e}); {INSTALL_HINT}") from e


class _Rows(torch.utils.data.Dataset):
    """A Batch as a map-style dataset of dicts, so kronfluence's DataLoader re-batches it (rows are
    already padded to the batch's length, so the default collate stacks them)."""

    def __init__(self, batch: Batch):
        self.b = batch

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.b.input_ids[i], "attention_mask": self.b.attention_mask[i],
                "labels": self.b.labels[i]}


def _task():
    from kronfluence.task import Task

    class HeldoutNLLTask(Task):
        """Training loss and measurement: explorer's per-sample mean NLL over response tokens, summed
        over the batch (kronfluence differentiates sums to get per-example gradients)."""

        def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
            if sample:      # labels drawn from the model's own predictions: the true Fisher
                with torch.no_grad():
                    drawn = torch.distributions.Categorical(logits=logits[:, :-1].float()).sample()
                    labels = labels.clone()
                    labels[:, 1:] = torch.where(batch["labels"][:, 1:] != -100, drawn, -100)
            return per_sample_nll(logits, labels).sum()

        def compute_measurement(self, batch, model) -> torch.Tensor:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return per_sample_nll(logits, batch["labels"]).sum()

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return HeldoutNLLTask()


def ekfac_effects(model, train: Batch, queries: dict[str, Batch], damping: float | None = None,
                  batch_size: int = 32, workdir: str | Path | None = None) -> dict[str, np.ndarray]:
    """{name: I [N]} for each held-out set in `queries`: the EK-FAC influence of each of the N samples
    of `train` on that set's mean loss, at the model's current weights (see the module's doc).

    The EK-FAC factors are fitted on `train` itself. kronfluence writes factors and scores under
    `workdir` (a temporary folder when None). The model is wrapped in place by kronfluence's
    prepare_model (hooks on every Linear); pass a copy if it is used afterwards."""
    _require()
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    task = _task()
    model.eval()    # no dropout in the tiny Llama; eval keeps any other model's fit deterministic
    model = prepare_model(model, task)
    cpu = next(model.parameters()).device.type != "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(workdir) if workdir is not None else Path(tmp)
        an = Analyzer("explorer", model=model, task=task, cpu=cpu, output_dir=str(out), disable_tqdm=True,
                      log_level=40)
        train_ds = _Rows(train)
        an.fit_all_factors("ekfac", dataset=train_ds, per_device_batch_size=batch_size,
                           factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
        effects = {}
        for name, q in queries.items():
            an.compute_pairwise_scores(f"scores_{name}", factors_name="ekfac", query_dataset=_Rows(q),
                                       train_dataset=train_ds, per_device_query_batch_size=min(len(q), 64),
                                       per_device_train_batch_size=batch_size,
                                       score_args=ScoreArguments(damping_factor=damping), overwrite_output_dir=True)
            scores = an.load_pairwise_scores(f"scores_{name}")["all_modules"]   # [Q, N], positive = helpful
            effects[name] = (-scores.float().mean(dim=0)).cpu().numpy()          # change of the mean loss
    return effects
