"""Counterfactual replays and leave-one-out studies as the dashboard and notebooks state them (pure pandas).

A replay (explorer/replay/, docs/why.md §5) trains step S of a run on each arm's share of its batch and
measures after K steps. What a drop did is a paired difference, per seed, against the whole batch:

    drop effect    = metric(kept)   − metric(all)     what the method's drop changed
    random effect  = metric(random) − metric(all)     what a random drop of the same size changed
    dropped effect = metric(dropped) − metric(all)    training on the dropped samples alone instead

Each is given as mean ± sd over the seeds it has (n). No torch here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.runs import schema

#: how each metric is named in a sentence, and its unit
METRIC_WORDS = {"harmful_score": ("held-out harmful score", "points"),
                "refusal_loss": ("held-out refusal loss", "nats"),
                "task_loss": ("held-out task loss", "nats")}
CONTRASTS = {"drop": "kept", "random": "random", "dropped": "dropped"}


def _stats(v: pd.Series) -> tuple[float, float, int]:
    v = pd.to_numeric(v, errors="coerce").dropna()
    if v.empty:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, int(len(v))


def summarize(rows: pd.DataFrame, metrics=schema.REPLAY_METRICS) -> pd.DataFrame:
    """One row per (replay_id, metric): per-arm means and the drop / random / dropped effects against
    the `all` arm, paired by seed (mean, sd, n). Empty when `rows` is."""
    if rows is None or rows.empty:
        return pd.DataFrame()
    out = []
    for rid, g in rows.groupby("replay_id", sort=False):
        head = {"replay_id": rid, "step": int(g["step"].iloc[0]), "horizon": int(g["horizon"].iloc[0]),
                "n_batch": int(g["n_batch"].iloc[0]), "n_dropped": int(g["n_dropped"].iloc[0]),
                "arms": ",".join(sorted(g["arm"].unique()))}
        for metric in metrics:
            if metric not in g or g[metric].isna().all():
                continue
            wide = g.pivot_table(index="seed", columns="arm", values=metric, aggfunc="first")
            r = {**head, "metric": metric}
            for arm in wide.columns:
                r[f"{arm}_mean"], r[f"{arm}_sd"], r[f"{arm}_n"] = _stats(wide[arm])
            for name, arm in CONTRASTS.items():
                if arm in wide and "all" in wide:
                    d = wide[arm] - wide["all"]
                    r[f"{name}_effect"], r[f"{name}_effect_sd"], r[f"{name}_effect_n"] = _stats(d)
                    if name == "random":
                        d = d.dropna()
                        r["random_effect_min"] = float(d.min()) if len(d) else float("nan")
                        r["random_effect_max"] = float(d.max()) if len(d) else float("nan")
            out.append(r)
    return pd.DataFrame(out)


def _pm(mean: float, sd: float, n: int, unit: str) -> str:
    digits = 1 if unit == "points" else 4
    return f"{mean:+.{digits}f} ± {sd:.{digits}f} {unit} ({n} seed{'s' if n != 1 else ''})"


def sentence(row: pd.Series | dict) -> str:
    """"dropping these 16 samples at step 40 changed the held-out harmful score after 20 steps by X
    against Y for a random drop of the same size", with mean ± sd over seeds."""
    row = dict(row)
    word, unit = METRIC_WORDS.get(row["metric"], (row["metric"], ""))
    k = row["horizon"]
    after = f"after {k} step{'s' if k != 1 else ''}"
    if pd.isna(row.get("drop_effect", np.nan)):
        return (f"step {row['step']}: no kept and all arms for the same seeds, so what the drop changed in the "
                f"{word} is not defined")
    text = (f"dropping these {row['n_dropped']} samples at step {row['step']} changed the {word} {after} by "
            f"{_pm(row['drop_effect'], row['drop_effect_sd'], row['drop_effect_n'], unit)}")
    if pd.notna(row.get("random_effect", np.nan)):
        text += (f" against {_pm(row['random_effect'], row['random_effect_sd'], row['random_effect_n'], unit)} "
                 "for a random drop of the same size")
        lo, hi = row.get("random_effect_min"), row.get("random_effect_max")
        if row["random_effect_n"] > 1 and pd.notna(lo):
            inside = lo <= row["drop_effect"] <= hi
            text += (f"; the method's drop is {'inside' if inside else 'outside'} the random drops' range "
                     f"[{lo:+.4g}, {hi:+.4g}]")
    else:
        text += " (no random arm to compare with)"
    return text


def deterministic_note(rows: pd.DataFrame) -> str | None:
    """A note when the arms other than random gave the same result for every seed (a model without
    dropout: only the random arm's draw depends on the seed)."""
    if rows is None or rows.empty or rows["seed"].nunique() < 2:
        return None
    other = rows[rows["arm"] != "random"]
    if other.empty:
        return None
    spread = other.groupby(["replay_id", "arm"])["refusal_loss"].agg(lambda v: v.max() - v.min())
    if (spread.fillna(0) == 0).all():
        return ("the kept, dropped and all arms are deterministic here (the same result for every seed: the model "
                "has no dropout), so their ± is 0; the seeds vary the random arm's draw")
    return None


def loo_comparison(loo_rows: pd.DataFrame, decisions: pd.DataFrame,
                   estimates: dict[str, str] | None = None) -> dict[str, float]:
    """Spearman ρ between one leave-one-out study's exact effect (loo_safety per sample) and each estimate
    of the same samples at the same step: {"rho <label>": ρ(estimate, loo_safety)} for `estimates`
    (label -> column of `decisions`; default effect_safety as "first-order"), and "rho score": ρ(the
    method's preference, −loo_safety) — does the method prefer the samples whose removal raises the
    refusal loss, i.e. those that help safety (chance.preference orients the score; NaN without one)."""
    from explorer.runs.chance import preference, spearman

    estimates = estimates if estimates is not None else {"first-order": "effect_safety"}
    cols = [c for c in decisions.columns if c not in loo_rows.columns or c == "sample_id"]
    d = loo_rows.merge(decisions[cols], on="sample_id", how="left")
    out: dict[str, float] = {"n": int(len(d))}
    for label, col in estimates.items():
        ok = col in d and d[col].notna().sum() > 2
        out[f"rho {label}"] = spearman(d[col], d["loo_safety"]) if ok else float("nan")
    pref = preference(d)
    out["rho score"] = spearman(pref[1], -d["loo_safety"]) if pref is not None else float("nan")
    out["score column"] = pref[0] if pref is not None else None
    return out
