"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv 2406.04093), trained on residual-stream activations.

    z     = TopK( W_enc (x − b_pre) + b_enc )        keep the k largest pre-activations, ReLU them,
                                                     zero the rest: exactly k slots per input
    x_hat = W_dec z + b_pre

The pre-bias b_pre is subtracted before encoding and added back after decoding (initialised at the
data mean, a cheap stand-in for the paper's geometric median); W_enc starts as W_decᵀ; decoder
columns are kept at unit norm, so a latent's value is its contribution's length. Loss: MSE, plus the
paper's AuxK term (coefficient 1/32): the k_aux largest pre-activations among latents that have not
fired for `dead_after` batches reconstruct the residual x − x_hat, which gives dead latents a
gradient. Quality: FVU = Σ‖x − x_hat‖² / Σ‖x − mean x‖² on held-out tokens; dead share = latents that
never fire on any collected token.

Weights are saved with safetensors (never pickle) with the settings in the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from explorer.model.optim import OptimStep


@dataclass(frozen=True)
class SaeSettings:
    d_model: int
    n_latents: int
    k: int


class TopKSAE(torch.nn.Module):
    def __init__(self, d_model: int, n_latents: int, k: int, generator: torch.Generator | None = None):
        super().__init__()
        if not 1 <= k <= n_latents:
            raise ValueError(f"TopK SAE: k = {k}: expected 1 <= k <= n_latents = {n_latents}")
        self.settings = SaeSettings(d_model, n_latents, k)
        W = torch.randn(d_model, n_latents, generator=generator)
        W = W / W.norm(dim=0, keepdim=True)
        self.W_dec = torch.nn.Parameter(W)                       # [d, n] unit columns
        self.W_enc = torch.nn.Parameter(W.T.clone())             # [n, d]
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_pre = torch.nn.Parameter(torch.zeros(d_model))

    @property
    def k(self) -> int:
        return self.settings.k

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., n] before the TopK."""
        return (x.to(self.W_enc.dtype) - self.b_pre) @ self.W_enc.T + self.b_enc

    @staticmethod
    def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
        """Keep the k largest entries of the last dimension (ReLU'd), zero elsewhere: [..., n]."""
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.topk(self.pre_activations(x), self.k)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec.T + self.b_pre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path, **meta) -> None:
        from safetensors.torch import save_file

        tensors = {n: p.detach().cpu().contiguous() for n, p in self.named_parameters()}
        save_file(tensors, str(path), metadata={"settings": json.dumps(asdict(self.settings)),
                                                "meta": json.dumps(meta, default=str)})

    @classmethod
    def load(cls, path) -> "TopKSAE":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            s = json.loads(f.metadata()["settings"])
        sae = cls(s["d_model"], s["n_latents"], s["k"])
        sae.load_state_dict(load_file(str(path)))
        return sae


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: Σ‖x − x_hat‖² / Σ‖x − mean x‖² over rows of [N, d]."""
    x, x_hat = x.double(), x_hat.double()
    den = float(((x - x.mean(0)) ** 2).sum())
    return float(((x - x_hat) ** 2).sum()) / den if den > 0 else float("nan")


@torch.no_grad()
def encode_batched(sae: TopKSAE, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    return torch.cat([sae.encode(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else \
        torch.zeros(0, sae.settings.n_latents)


def train_sae(acts: torch.Tensor, n_latents: int, k: int, steps: int = 1000, batch_size: int = 1024,
              lr: float = 1e-3, auxk_coef: float = 1 / 32, auxk_k: int = 0, dead_after: int = 200,
              val_share: float = 0.1, generator: torch.Generator | None = None) -> tuple[TopKSAE, dict]:
    """Train a TopK SAE on activations [N, d] (float32, CPU or GPU). Returns the SAE and its quality:
    fvu (held-out), fvu_train, dead_share (latents never active on any token), n_tokens, steps.

    auxk_k = 0 means d_model // 2, Gao et al.'s rule of thumb at their scale."""
    g = generator or torch.Generator().manual_seed(0)
    acts = acts.float()
    N, d = acts.shape
    if N < 2:
        raise ValueError(f"train_sae: {N} activation rows; expected at least 2")
    perm = torch.randperm(N, generator=g).to(acts.device)
    n_val = max(1, int(N * val_share)) if N >= 10 else 0
    val, train = acts[perm[:n_val]], acts[perm[n_val:]]
    sae = TopKSAE(d, n_latents, k, generator=g).to(acts.device)
    with torch.no_grad():
        sae.b_pre.copy_(train.mean(0))
    opt = OptimStep(torch.optim.Adam(sae.parameters(), lr=lr), sae.parameters())   # constant lr, no clipping
    auxk_k = auxk_k or max(1, d // 2)
    since_fired = torch.zeros(n_latents, dtype=torch.long, device=acts.device)  # batches since last fired
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(train), (min(batch_size, len(train)),), generator=g).to(acts.device)
        x = train[idx]                                                   # [b, d]
        pre = sae.pre_activations(x)                                     # [b, n]
        z = sae.topk(pre, k)
        x_hat = sae.decode(z)
        loss = ((x_hat - x) ** 2).sum(-1).mean() / ((x - x.mean(0)) ** 2).sum(-1).mean().clamp_min(1e-8)
        fired = (z > 0).any(0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + 1)
        dead = since_fired > dead_after
        if auxk_coef > 0 and bool(dead.any()):
            # AuxK: only dead latents may reconstruct what the live ones missed
            k_aux = min(auxk_k, int(dead.sum()))
            z_aux = sae.topk(pre.masked_fill(~dead, float("-inf")), k_aux).nan_to_num(0.0)
            e = (x - x_hat).detach()
            e_hat = z_aux @ sae.W_dec.T
            aux = ((e_hat - e) ** 2).sum(-1).mean() / ((e - e.mean(0)) ** 2).sum(-1).mean().clamp_min(1e-8)
            loss = loss + auxk_coef * aux.nan_to_num(0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sae.normalize_decoder()
        losses.append(float(loss.detach()))
    sae.eval()
    with torch.no_grad():
        z_all = encode_batched(sae, acts)
        ever = (z_all > 0).any(0)
        info = {"fvu": fvu(val, sae.decode(encode_batched(sae, val))) if n_val else float("nan"),
                "fvu_train": fvu(train, sae.decode(encode_batched(sae, train))),
                "dead_share": 1.0 - float(ever.float().mean()),
                "n_tokens": N, "n_val_tokens": n_val, "steps": steps, "final_loss": losses[-1] if losses else None,
                "mean_l0": float((z_all > 0).sum(-1).float().mean())}
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae, info
