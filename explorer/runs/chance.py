"""Is a selection better than chance? Pure functions (math, numpy, pandas; no torch, no scipy).

Every selection the dashboard shows is compared with what a *random* selection of the same sizes
would give:

- reference refreshes: the Jaccard overlap of two consecutive selections of sizes a and b out of n
  scored references. If both were drawn at random, their intersection X is hypergeometric
  (population n, a marked, b drawn) and E[J] = Σ_x P(X = x) · x / (a + b − x) — exact, no simulation.
- task selection: harmful-drop recall (the share of the harmful samples shown to the method that it
  dropped) against the recall of a random drop of the same size in every batch. Under that null the
  harmful drops of a batch with n samples, h harmful and d dropped are hypergeometric, the batches are
  independent, so the distribution of the run's total harmful drops is the convolution of those
  hypergeometric laws: the permutation p-value P(total ≥ observed) is computed exactly from it (it is
  the share of all within-batch re-shufflings of the drop labels that drop at least as many harmful
  samples — the permutation test without sampling).

The badge rule (stated in the dashboard and docs/why.md):

    no better than chance   p ≥ 0.05 (or the method dropped nothing)
    better than chance      p < 0.05 and lift < 0.5
    clearly better          p < 0.05 and lift ≥ 0.5

with lift = (recall − chance) / (1 − chance): 0 for a random drop, 1 for dropping every harmful sample
shown, negative when the method drops fewer harmful samples than chance.

Provenance is for analysis only: a run whose samples have provenance "unknown" (user data without
labels) gets no recall and the badge "unknown".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: the significance level and the lift threshold of the badge rule
ALPHA = 0.05
CLEAR_LIFT = 0.5
BADGE_RULE = (f"no better than chance: permutation p ≥ {ALPHA:g}; better than chance: p < {ALPHA:g}; "
              f"clearly better: p < {ALPHA:g} and lift ≥ {CLEAR_LIFT:g}, where lift = (recall − chance) / "
              "(1 − chance) is 0 for a random drop of the same size and 1 for dropping every harmful sample")
UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------------------
# the hypergeometric law
# --------------------------------------------------------------------------------------------------

def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_pmf(n: int, k: int, d: int) -> np.ndarray:
    """P(X = x) for x = 0..min(k, d): X marked items among d drawn without replacement from n items
    of which k are marked. Computed in log space (exact up to float rounding for any n)."""
    if not (0 <= k <= n and 0 <= d <= n):
        raise ValueError(f"hypergeometric: expected 0 ≤ k, d ≤ n; got n={n}, k={k}, d={d}")
    lo, hi = max(0, d - (n - k)), min(k, d)
    pmf = np.zeros(min(k, d) + 1)
    base = _log_comb(n, d)
    for x in range(lo, hi + 1):
        pmf[x] = math.exp(_log_comb(k, x) + _log_comb(n - k, d - x) - base)
    return pmf / pmf.sum()


# --------------------------------------------------------------------------------------------------
# reference refreshes: Jaccard of two random selections
# --------------------------------------------------------------------------------------------------

def expected_jaccard(n: int, a: int, b: int) -> float:
    """E[|A ∩ B| / |A ∪ B|] for A, B drawn uniformly at random of sizes a and b from n items.

    E.g. two random draws of 60 of 600 references overlap by ≈ 0.053 on average."""
    if a == 0 and b == 0:
        return float("nan")          # two empty selections: the Jaccard index is undefined
    pmf = hypergeom_pmf(n, a, b)
    x = np.arange(len(pmf))
    return float((pmf * x / (a + b - x)).sum())


def jaccard_quantile(n: int, a: int, b: int, q: float = 0.95) -> float:
    """The q-quantile of that Jaccard index under chance (the top of the chance band)."""
    pmf = hypergeom_pmf(n, a, b)
    x = np.arange(len(pmf))
    j = x / np.maximum(a + b - x, 1)
    i = int(np.searchsorted(np.cumsum(pmf), q - 1e-12))
    return float(j[min(i, len(j) - 1)])


def jaccard_p_value(n: int, a: int, b: int, observed: float) -> float:
    """P(J ≥ observed) when both selections are random: a small value means the consecutive selections
    overlap more than chance (the selection is stable); near 1 means less than chance."""
    pmf = hypergeom_pmf(n, a, b)
    x = np.arange(len(pmf))
    j = x / np.maximum(a + b - x, 1)
    return float(pmf[j >= observed - 1e-12].sum())


def refresh_chance(summary: pd.DataFrame, n_pool: int | None = None) -> pd.DataFrame:
    """The refresh summary (reader.refresh_summary) with, per refresh, the chance Jaccard with the
    previous selection (`jaccard_chance`), the top of the 95 % chance band (`jaccard_chance_95`) and
    the p-value of the observed overlap (`jaccard_p`). n_pool defaults to the references scored."""
    out = summary.copy()
    for c in ("jaccard_chance", "jaccard_chance_95", "jaccard_p"):
        out[c] = np.nan
    if out.empty:
        return out
    out = out.sort_values("refresh_id").reset_index(drop=True)
    prev = None
    for i, r in out.iterrows():
        a = int(r["n_selected"])
        n = int(n_pool if n_pool is not None else r["n_scored"])
        if prev is not None and n > 0:
            out.loc[i, "jaccard_chance"] = expected_jaccard(n, prev, a)
            out.loc[i, "jaccard_chance_95"] = jaccard_quantile(n, prev, a)
            if pd.notna(r.get("jaccard_prev")):
                out.loc[i, "jaccard_p"] = jaccard_p_value(n, prev, a, float(r["jaccard_prev"]))
        prev = a
    return out


# --------------------------------------------------------------------------------------------------
# task selection: harmful-drop recall against a random drop of the same size
# --------------------------------------------------------------------------------------------------

def total_drops_pmf(groups: list[tuple[int, int, int]]) -> np.ndarray:
    """The law of the total harmful drops when each group (n, h, d) — a batch of n samples, h harmful,
    d dropped — drops d samples at random: the convolution of the groups' hypergeometric laws."""
    pmf = np.array([1.0])
    for n, h, d in groups:
        if h == 0 or d == 0:
            continue
        pmf = np.convolve(pmf, hypergeom_pmf(n, h, d))
    return pmf


@dataclass(frozen=True)
class ChanceResult:
    """A selection's harmful-drop recall against chance. recall/chance/lift are None when provenance
    is unknown or no harmful sample was shown."""

    recall: float | None          # harmful samples dropped / harmful samples shown (0..1)
    chance: float | None          # expected recall of a random drop of the same size per group
    lift: float | None            # (recall − chance) / (1 − chance)
    p_value: float | None         # exact permutation p-value, P(total harmful drops ≥ observed)
    n_harmful: int                # harmful sample-decisions shown (a sample seen in 3 epochs counts 3)
    n_harmful_dropped: int
    n_dropped: int
    n: int
    badge: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def badge(p_value: float | None, lift: float | None, n_dropped: int = 1) -> str:
    """The plain-words verdict of the badge rule (module docstring, BADGE_RULE)."""
    if p_value is None or lift is None or (isinstance(p_value, float) and math.isnan(p_value)):
        return UNKNOWN
    if n_dropped == 0 or p_value >= ALPHA:
        return "no better than chance"
    return "clearly better" if lift >= CLEAR_LIFT else "better than chance"


def recall_vs_chance(groups: list[tuple[int, int, int, int]]) -> ChanceResult:
    """From per-group counts (n, h, d, hd): samples, harmful, dropped, harmful dropped.

    chance = Σ d·h/n / Σ h (a random drop of d of n removes d·h/n harmful samples on average)."""
    n_all = sum(g[0] for g in groups)
    h_all = sum(g[1] for g in groups)
    d_all = sum(g[2] for g in groups)
    hd_all = sum(g[3] for g in groups)
    for n, h, d, hd in groups:
        if not (0 <= h <= n and 0 <= d <= n and 0 <= hd <= min(h, d)):
            raise ValueError(f"recall_vs_chance: inconsistent counts n={n}, harmful={h}, dropped={d}, "
                             f"harmful dropped={hd}")
    if h_all == 0:
        return ChanceResult(None, None, None, None, 0, 0, d_all, n_all, UNKNOWN)
    recall = hd_all / h_all
    chance = sum(d * h / n for n, h, d, _ in groups if n) / h_all
    lift = (recall - chance) / (1 - chance) if chance < 1 else 0.0
    pmf = total_drops_pmf([(n, h, d) for n, h, d, _ in groups])
    p = float(pmf[hd_all:].sum()) if hd_all < len(pmf) else 0.0
    p = min(1.0, max(p, 0.0))
    return ChanceResult(recall, chance, lift, p, h_all, hd_all, d_all, n_all, badge(p, lift, d_all))


def selection_groups(decisions: pd.DataFrame, by: str = "step") -> list[tuple[int, int, int, int]]:
    """Per-group counts (n, h, d, hd) from task decision rows joined with provenance (`kept` bool,
    `provenance` benign/harmful). Rows with provenance "unknown" make the whole result unknown
    (raise ValueError naming it) — a partial labelling would bias the recall."""
    if decisions.empty:
        return []
    if "provenance" not in decisions:
        raise ValueError("selection_groups: expected a provenance column (join the samples table)")
    prov = decisions["provenance"].fillna(UNKNOWN).astype(str)
    if (~prov.isin(["benign", "harmful"])).any():
        raise ValueError(f"selection_groups: {int((~prov.isin(['benign', 'harmful'])).sum())} decisions "
                         "have provenance other than benign/harmful (e.g. 'unknown'); recall is undefined")
    h = prov.eq("harmful")
    dropped = ~decisions["kept"].astype(bool)
    d = decisions.assign(_h=h, _d=dropped, _hd=h & dropped)
    g = d.groupby(by).agg(n=("_h", "size"), h=("_h", "sum"), d=("_d", "sum"), hd=("_hd", "sum"))
    return [(int(r.n), int(r.h), int(r.d), int(r.hd)) for r in g.itertuples()]


def task_selection_chance(decisions: pd.DataFrame, by: str = "step") -> ChanceResult:
    """recall_vs_chance over a run's task decisions (one group per step: a random drop of the same
    size in every batch is the null). Unknown provenance → a result with badge "unknown"."""
    try:
        groups = selection_groups(decisions, by)
    except ValueError:
        n = len(decisions)
        nd = int((~decisions["kept"].astype(bool)).sum()) if "kept" in decisions and n else 0
        return ChanceResult(None, None, None, None, 0, 0, nd, n, UNKNOWN)
    return recall_vs_chance(groups)


def permutation_p_value_mc(groups: list[tuple[int, int, int, int]], n_perm: int = 2000, seed: int = 0) -> float:
    """The same p-value by sampling: shuffle the drop labels inside each group n_perm times. Slower,
    only used to check the exact one (tests, notebook 08)."""
    rng = np.random.default_rng(seed)
    obs = sum(g[3] for g in groups)
    total = np.zeros(n_perm)
    for n, h, d, _ in groups:
        if h and d:
            total += rng.hypergeometric(h, n - h, d, size=n_perm)
    return float((1 + (total >= obs).sum()) / (1 + n_perm))


# --------------------------------------------------------------------------------------------------
# the method's score against the measured effect: a rank correlation
# --------------------------------------------------------------------------------------------------

def rank(x) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank (as Spearman's ρ needs)."""
    return pd.Series(np.asarray(x, dtype=float)).rank(method="average").to_numpy()


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equal-length sequences (NaN pairs dropped): the Pearson
    correlation of their average ranks. NaN with fewer than 3 pairs or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"spearman: expected equal lengths, got {a.shape} and {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return float("nan")
    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


#: score columns, in the order they are preferred, and whether larger means "the method likes it more"
PREFERENCE_COLUMNS = (("score", None), ("omega", True), ("token_weight", True), ("weight", True))


def preference(batch: pd.DataFrame) -> tuple[str, pd.Series] | None:
    """The method's preference for each sample of a batch, larger = liked more: its `score` oriented
    by the batch's cut (DualSelect keeps the smallest s_i), else SEAL's ω, else the update weight.
    None when the batch carries none of these or they are constant."""
    from explorer.runs.selection import batch_cut

    for col, larger in PREFERENCE_COLUMNS:
        if col not in batch or batch[col].isna().all() or batch[col].nunique(dropna=True) < 2:
            continue
        if larger is None:
            cut = batch_cut(batch, col)
            larger = not cut.lower_is_kept if cut is not None and cut.cut is not None else True
        s = batch[col].astype(float)
        return col, (s if larger else -s)
    return None


def score_effect_correlation(decisions: pd.DataFrame, effect: str = "effect_safety") -> dict:
    """Per recorded step, Spearman's ρ between the method's preference and the benefit −effect
    (effect = predicted change of the held-out loss; lower loss is better, so −effect is the benefit):
    ρ > 0 the method prefers samples the independent check says help; ρ ≈ 0 unrelated. Returns the
    mean ρ over steps, the steps used, the preference column."""
    if decisions.empty or effect not in decisions or decisions[effect].isna().all():
        return {"rho": float("nan"), "n_steps": 0, "column": None}
    rhos, col = [], None
    for _, b in decisions[decisions[effect].notna()].groupby("step"):
        pref = preference(b)
        if pref is None:
            continue
        col = pref[0]
        r = spearman(pref[1], -b[effect].astype(float))
        if not math.isnan(r):
            rhos.append(r)
    return {"rho": float(np.mean(rhos)) if rhos else float("nan"), "n_steps": len(rhos), "column": col}


def from_counts(counts: pd.DataFrame) -> ChanceResult:
    """recall_vs_chance from reader.selection_counts(run) (columns n, h, d, hd, unknown). Any sample of
    unknown provenance makes the result unknown: recall needs every label."""
    if counts.empty:
        return ChanceResult(None, None, None, None, 0, 0, 0, 0, UNKNOWN)
    if "unknown" in counts and int(counts["unknown"].sum()) > 0:
        return ChanceResult(None, None, None, None, 0, 0, int(counts["d"].sum()), int(counts["n"].sum()), UNKNOWN)
    return recall_vs_chance([(int(r.n), int(r.h), int(r.d), int(r.hd)) for r in counts.itertuples()])
