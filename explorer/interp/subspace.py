"""Input covariances of a linear layer and the projector onto their small-eigenvalue directions
(CWAC's weight constraint, docs/methods/cwac.md).

For a layer y = W x with inputs X = [x_1 … x_N] (columns) collected on harmful prompts:

    C = X Xᵀ = U diag(λ) Uᵀ,   λ_1 ≥ … ≥ λ_d ≥ 0
    r = the smallest count with (λ_1 + … + λ_r) / Σλ ≥ energy        (the directions harmful inputs use)
    Û = [u_{r+1} … u_d]   (small eigenvalues)        Π = Û Ûᵀ = I − U_r U_rᵀ

A gradient G [out, in] becomes G Π: every row loses its component along the top directions, so an
SGD step ΔW = −η G Π satisfies ΔW X = −η G Û Ûᵀ X, and
‖Ûᵀ X‖²_F = λ_{r+1} + … + λ_d ≤ (1 − energy)·Σλ.

C is uncentred on purpose: ΔW X ≈ 0 is a statement about the raw inputs, not about their spread.
We keep U_r (usually few columns) and apply Π as G − (G U_r) U_rᵀ, which never forms the d×d
projector — for a real model d is the MLP width (14,336 for Llama-3-8B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class CovarianceAccumulator:
    """Streaming C = Σ_n x_n x_nᵀ over batches of inputs [..., d] (float64 for a stable spectrum)."""

    def __init__(self, dim: int, device=None):
        self.C = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """x: [..., d]; mask: [...] bool, True for the positions to count (e.g. prompt tokens)."""
        x = x.detach().reshape(-1, x.shape[-1])
        if mask is not None:
            x = x[mask.reshape(-1).to(x.device)]
        x = x.to(self.C.device, torch.float64)
        self.C += x.T @ x                                    # [d, d]
        self.n += x.shape[0]


def eigh_descending(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, clipped at 0: C is PSD up to round-off) and eigenvectors as columns."""
    evals, evecs = torch.linalg.eigh(C.double())
    return evals.flip(0).clamp_min(0.0), evecs.flip(1)


def energy_cut(evals: torch.Tensor, energy: float) -> int:
    """r: the number of leading eigenvalues (descending) that hold at least `energy` of Σλ.
    energy = 1 keeps every direction with a non-zero eigenvalue."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy = {energy}: expected a share in (0, 1]")
    total = float(evals.sum())
    if total <= 0:
        return 0
    cum = torch.cumsum(evals, 0) / total
    r = int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1
    return min(r, evals.numel())


@dataclass
class Subspace:
    """The protected subspace of one layer: U_top [d, r] (Π = I − U_top U_topᵀ) and its spectrum."""

    U_top: torch.Tensor          # [d, r] eigenvectors of the r largest eigenvalues
    evals: torch.Tensor          # [d] descending
    energy: float                # the threshold used
    n_inputs: int                # tokens that went into C

    @property
    def rank_kept(self) -> int:
        return self.U_top.shape[1]

    def projector(self) -> torch.Tensor:
        """Π = Û Ûᵀ = I − U_r U_rᵀ as a dense [d, d] matrix (tests and small layers only)."""
        d = self.U_top.shape[0]
        return torch.eye(d, dtype=self.U_top.dtype, device=self.U_top.device) - self.U_top @ self.U_top.T

    def energy_cum(self) -> torch.Tensor:
        tot = self.evals.sum()
        return torch.cumsum(self.evals, 0) / tot if tot > 0 else torch.zeros_like(self.evals)


def small_eigen_subspace(C: torch.Tensor, energy: float, n_inputs: int = 0, dtype=torch.float32) -> Subspace:
    """Eigendecompose C and keep the top directions holding `energy` of the spectrum (their
    complement, the small-eigenvalue directions, is where Π lets gradients through)."""
    evals, evecs = eigh_descending(C)
    r = energy_cut(evals, energy)
    return Subspace(evecs[:, :r].to(dtype).contiguous(), evals.float(), energy, n_inputs)


def project_right(G: torch.Tensor, U_top: torch.Tensor) -> torch.Tensor:
    """G Π = G − (G U_top) U_topᵀ for G [..., d] (right-multiplication on the input dimension)."""
    U = U_top.to(G.dtype)
    return G - (G @ U) @ U.T


def removed_share(G: torch.Tensor, G_proj: torch.Tensor) -> float:
    """1 − ‖G Π‖ / ‖G‖ (0 when G is zero)."""
    g = float(G.float().norm())
    return 0.0 if g == 0 else 1.0 - float(G_proj.float().norm()) / g
