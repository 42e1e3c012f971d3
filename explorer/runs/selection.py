"""Why a sample was kept or dropped at a step: the cut and its rank in the batch. Pure pandas, no torch."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Cut:
    """The selection boundary of one batch on one score column.

    lower_is_kept: the method keeps the smallest scores (DualSelect's s_i) — inferred from the
    batch itself, so it holds for any method that writes a score; cut: the score of the last kept
    sample (the k-th kept score); rank: 1 = the sample the method likes most."""

    column: str
    lower_is_kept: bool
    cut: float | None
    n_kept: int
    n: int

    def rank(self, value: float, scores: pd.Series) -> int:
        s = scores.dropna()
        return int((s < value).sum() if self.lower_is_kept else (s > value).sum()) + 1

    def margin(self, value: float) -> float | None:
        """How far the sample lies from the cut, positive on the kept side."""
        if self.cut is None:
            return None
        return float(self.cut - value if self.lower_is_kept else value - self.cut)


def batch_cut(batch: pd.DataFrame, column: str = "score") -> Cut | None:
    """The cut of a batch on `column`; None when the column is absent or empty (a warm-up step)."""
    if batch.empty or column not in batch or batch[column].isna().all():
        return None
    d = batch[batch[column].notna()]
    kept = d["kept"].astype(bool)
    if kept.all() or not kept.any():
        return Cut(column, True, None, int(kept.sum()), len(d))
    lower = bool(d.loc[kept, column].mean() <= d.loc[~kept, column].mean())
    cut = float(d.loc[kept, column].max() if lower else d.loc[kept, column].min())
    return Cut(column, lower, cut, int(kept.sum()), len(d))
