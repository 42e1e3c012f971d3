"""Chance levels (explorer/runs/chance.py) checked against simulation, not against hard-coded numbers."""

import math

import numpy as np
import pandas as pd
import pytest

from explorer.runs import chance


@pytest.mark.parametrize("n,a,b", [(600, 60, 60), (50, 10, 20), (30, 29, 5), (10, 0, 4)])
def test_expected_jaccard_matches_simulation(n, a, b):
    rng = np.random.default_rng(1)
    sims = []
    for _ in range(20_000):
        A = set(rng.choice(n, a, replace=False).tolist())
        B = set(rng.choice(n, b, replace=False).tolist())
        sims.append(len(A & B) / len(A | B))
    exact = chance.expected_jaccard(n, a, b)
    se = np.std(sims) / math.sqrt(len(sims))
    assert abs(exact - np.mean(sims)) < 5 * se + 1e-9
    q95 = chance.jaccard_quantile(n, a, b)
    assert np.mean(np.array(sims) <= q95 + 1e-12) >= 0.94


def test_expected_jaccard_edges():
    assert chance.expected_jaccard(10, 10, 10) == 1.0          # both select everything
    assert chance.expected_jaccard(10, 3, 0) == 0.0
    assert math.isnan(chance.expected_jaccard(10, 0, 0))
    with pytest.raises(ValueError, match="hypergeometric"):
        chance.hypergeom_pmf(5, 6, 2)


def test_refresh_chance_adds_a_line_per_refresh():
    summ = pd.DataFrame({"refresh_id": [0, 1, 2], "step": [0, 10, 20], "jaccard_prev": [np.nan, 0.05, 0.9],
                         "n_selected": [60, 60, 60], "n_scored": [600, 600, 600]})
    out = chance.refresh_chance(summ)
    assert math.isnan(out.loc[0, "jaccard_chance"])
    assert out.loc[1, "jaccard_chance"] == pytest.approx(chance.expected_jaccard(600, 60, 60))
    assert out.loc[1, "jaccard_p"] > 0.3            # 0.05 is what chance gives
    assert out.loc[2, "jaccard_p"] < 1e-6           # 0.9 is far above chance


def _simulate_run(rng, steps=30, n=32, h_rate=0.1, d=8, skill=0.0):
    """Decision rows of a selector that drops harmful samples with extra weight `skill` (0 = random)."""
    rows = []
    for s in range(steps):
        harm = rng.random(n) < h_rate
        key = rng.random(n) - skill * harm       # lowest keys are dropped
        drop = np.argsort(key)[:d]
        kept = np.ones(n, bool)
        kept[drop] = False
        rows += [{"step": s, "sample_id": f"s{s}-{i}", "kept": bool(kept[i]),
                  "provenance": "harmful" if harm[i] else "benign"} for i in range(n)]
    return pd.DataFrame(rows)


def test_random_drops_are_no_better_than_chance_and_p_is_uniformish():
    rng = np.random.default_rng(0)
    ps, recalls, chances = [], [], []
    for _ in range(60):
        r = chance.task_selection_chance(_simulate_run(rng))
        ps.append(r.p_value)
        recalls.append(r.recall)
        chances.append(r.chance)
    # under the null the recall averages its chance value and p < 0.05 happens about 5 % of the time
    assert abs(np.mean(recalls) - np.mean(chances)) < 0.03
    assert np.mean(np.array(ps) < 0.05) <= 0.15


def test_exact_p_value_matches_permutations():
    rng = np.random.default_rng(3)
    for skill in (0.0, 0.3, 0.6):
        dec = _simulate_run(rng, steps=12, skill=skill)
        groups = chance.selection_groups(dec)
        exact = chance.recall_vs_chance(groups).p_value
        mc = chance.permutation_p_value_mc(groups, n_perm=20_000, seed=1)
        assert abs(exact - mc) < 0.02 + 0.1 * exact


def test_a_skilled_selector_is_clearly_better():
    r = chance.task_selection_chance(_simulate_run(np.random.default_rng(5), skill=2.0))
    assert r.recall > 0.9 and r.p_value < 1e-6 and r.badge == "clearly better"
    weak = chance.task_selection_chance(_simulate_run(np.random.default_rng(6), steps=60, skill=0.25))
    assert weak.p_value < 0.05 and 0 < weak.lift < 0.5 and weak.badge == "better than chance"


def test_unknown_provenance_gives_no_recall():
    dec = _simulate_run(np.random.default_rng(0), steps=2)
    dec.loc[dec.index[:3], "provenance"] = "unknown"
    r = chance.task_selection_chance(dec)
    assert r.recall is None and r.badge == "unknown" and r.n_dropped == 16


def test_inconsistent_counts_are_named():
    with pytest.raises(ValueError, match="harmful dropped=5"):
        chance.recall_vs_chance([(10, 2, 3, 5)])


def test_spearman_against_its_definition():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = x ** 3 + rng.normal(scale=0.5, size=200)
    # no ties: ρ = 1 − 6 Σ d² / (n (n² − 1))
    rx, ry = np.argsort(np.argsort(x)) + 1, np.argsort(np.argsort(y)) + 1
    n = len(x)
    assert chance.spearman(x, y) == pytest.approx(1 - 6 * ((rx - ry) ** 2).sum() / (n * (n * n - 1)))
    assert chance.spearman(x, -np.exp(x)) == pytest.approx(-1.0)   # monotone: ρ = −1 whatever the shape
    assert math.isnan(chance.spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    assert chance.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)   # ties share their rank


def test_score_effect_correlation_orients_the_score():
    rng = np.random.default_rng(4)
    rows = []
    for s in range(5):
        eff = rng.normal(size=32)
        score = eff + rng.normal(scale=0.1, size=32)       # DualSelect-like: keeps the smallest score
        kept = score <= np.sort(score)[23]
        rows += [{"step": s, "sample_id": f"{s}-{i}", "score": score[i], "kept": bool(kept[i]),
                  "effect_safety": eff[i]} for i in range(32)]
    res = chance.score_effect_correlation(pd.DataFrame(rows))
    # low score is liked, low effect (the refusal loss falls) is good: the preference tracks the benefit
    assert res["rho"] > 0.9 and res["n_steps"] == 5 and res["column"] == "score"
