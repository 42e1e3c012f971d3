"""Agreement between a run's judges on the same answers: do Llama Guard and the keyword judge call the
same answers harmful? Pure pandas (no torch); reads the evals table's per-judge columns.

Every judge of `eval.judges` leaves `harmful_<name>` in each evals row (explorer/eval/evaluate.py):
True / False on a harmful suite, None where it gave no harmful-or-safe verdict — a degenerate answer
(collapse, neither harmful nor safe for every judge) or an unparsed one (a model judge whose output
matched none of its format's answers). For each pair of judges, over the answers both judged:

    agreement  = share of answers with the same verdict, in %
    kappa      = Cohen's kappa (p_o - p_e) / (1 - p_e), with p_e the agreement expected by chance from
                 each judge's harmful rate (Cohen 1960); NaN when p_e = 1 (both judges gave one and the
                 same verdict to every answer: agreement by chance alone cannot be told from real)
    only_a, only_b   answers only judge a (only judge b) calls harmful
    excluded   answers at least one of the two gave no verdict on (degenerate, unparsed)

Each (step, suite, sample_id) is one answer, so by default every evaluation of the run counts.
Runs recorded before per-judge columns existed carry only the primary judge's verdict: no pairs.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

PREFIX = "harmful_"
COLUMNS = ["suite", "judge_a", "judge_b", "n", "agreement", "kappa", "harmful_a", "harmful_b", "only_a",
           "only_b", "excluded"]
ALL_SUITES = "all harmful suites"


def judges_in(evals: pd.DataFrame) -> list[str]:
    """The judges with harmful verdicts in `evals`, the primary one (column `judge`) first."""
    names = [c[len(PREFIX):] for c in evals.columns if c.startswith(PREFIX)]
    primary = evals["judge"].dropna().iloc[0] if "judge" in evals and evals["judge"].notna().any() else None
    return sorted(names, key=lambda n: (n != primary, names.index(n)))


def cohen_kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa of two boolean verdict series over the same answers (NaN when undefined)."""
    a, b = a.astype(bool).to_numpy(), b.astype(bool).to_numpy()
    if len(a) == 0:
        return float("nan")
    po = float(np.mean(a == b))
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return float("nan") if pe >= 1.0 else (po - pe) / (1.0 - pe)


def _pair_row(rows: pd.DataFrame, a: str, b: str, suite: str) -> dict:
    x, y = rows[PREFIX + a], rows[PREFIX + b]
    both = x.notna() & y.notna()
    xa, yb = x[both].astype(bool), y[both].astype(bool)
    n = int(both.sum())
    pct = (lambda s: 100.0 * float(s.mean())) if n else (lambda s: float("nan"))
    return {"suite": suite, "judge_a": a, "judge_b": b, "n": n, "agreement": pct(xa == yb),
            "kappa": cohen_kappa(xa, yb), "harmful_a": pct(xa), "harmful_b": pct(yb),
            "only_a": int((xa & ~yb).sum()), "only_b": int((~xa & yb).sum()), "excluded": int(len(rows) - n)}


def harmful_rows(evals: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """The rows of harmful suites (those with a harmful verdict), of one step or (None) of every step."""
    if evals.empty or "harmful" not in evals:
        return evals.iloc[0:0]
    e = evals if step is None else evals[evals["step"] == step]
    kind = e.groupby("suite")["harmful"].transform(lambda s: s.notna().any())
    if "correct" in e:   # task suites record harmful False beside their correctness in older runs
        kind &= ~e.groupby("suite")["correct"].transform(lambda s: s.notna().any())
    return e[kind.astype(bool)]


def judge_agreement(evals: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """One row per (suite, pair of judges) plus one per pair over all harmful suites (suite ALL_SUITES).
    Empty (with COLUMNS) when fewer than two judges left harmful verdicts."""
    e = harmful_rows(evals, step)
    judges = judges_in(e) if not e.empty else []
    out = []
    for a, b in combinations(judges, 2):
        for suite, rows in e.groupby("suite", sort=True):
            out.append(_pair_row(rows, a, b, str(suite)))
        if e["suite"].nunique() > 1:
            out.append(_pair_row(e, a, b, ALL_SUITES))
    return pd.DataFrame(out, columns=COLUMNS)


def disagreements(evals: pd.DataFrame, a: str, b: str, step: int | None = None) -> pd.DataFrame:
    """The answers judges a and b both judged and gave different verdicts: step, suite, sample_id, prompt,
    response, harmful_<a>, harmful_<b> (and each model judge's raw output where recorded)."""
    e = harmful_rows(evals, step)
    if e.empty or PREFIX + a not in e or PREFIX + b not in e:
        return e.iloc[0:0]
    x, y = e[PREFIX + a], e[PREFIX + b]
    d = e[x.notna() & y.notna() & (x.astype(object) != y.astype(object))]
    cols = ["step", "suite", "sample_id", "prompt", "response", PREFIX + a, PREFIX + b]
    cols += [c for c in (f"output_{a}", f"output_{b}") if c in d]
    return d[cols].sort_values(["step", "suite", "sample_id"]).reset_index(drop=True)
