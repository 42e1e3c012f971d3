"""The stronger check at the end of a run: each fine-tuning sample's EK-FAC influence on the held-out
refusal loss (and task loss) at the run's final weights, beside what the method did with it.

    python benchmarks/why_ekfac.py RUN_DIR [RUN_DIR ...]

Needs a run trained by benchmarks/why_report.py (it keeps the final weights as final_weights.safetensors;
a run folder otherwise keeps none) and kronfluence (explorer/scoring/ekfac.py says how to install it).
Writes RUN_DIR/ekfac.parquet, one row per sample of the fine-tuning mix:

  sample_id, provenance   the sample (provenance is for analysis only; no method reads it)
  keep_rate               the share of the method's decisions on it that kept it (SEAL: its cut, 0 or 1)
  ekfac_safety            EK-FAC influence on the mean held-out refusal loss (> 0: more of it lowers safety)
  ekfac_task              the same on the held-out task loss (with --with-task: it doubles the scoring time)
  tracin_safety           the first-order effect −lr·⟨∇ℓ, ∇L_refusal⟩ at the same final weights (lr = the run's
                          peak lr), to compare the two checks on the same samples

and prints, per run: ρ(keep rate, −ekfac_safety) — does the method keep what the check says helps
safety? —, the mean EK-FAC effect of the dropped and of the kept samples, and ρ(ekfac_safety, tracin_safety).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.runs import chance, reader  # noqa: E402

FINAL_WEIGHTS = "final_weights.safetensors"
EKFAC_TABLE = "ekfac.parquet"


def keep_rates(run_dir: Path, method: str) -> pd.Series:
    """sample_id -> share of the method's decisions that kept it."""
    if method == "seal":
        cut = reader.query(run_dir, "seal_cut", "SELECT sample_id, kept FROM t WHERE step = (SELECT max(step) FROM t)")
        return cut.set_index("sample_id")["kept"].astype(float)
    dec = reader.decisions(run_dir, role="task")
    return dec.groupby("sample_id")["kept"].mean().astype(float)


def run_ekfac(run_dir: Path, damping: float | None = None, with_task: bool = False) -> tuple[pd.DataFrame, dict]:
    """EK-FAC and first-order effects of every mix sample at the run's final weights; writes the table
    into the run folder and returns it with its summary."""
    import torch
    from safetensors.torch import load_file

    from explorer.config import from_dict
    from explorer.data.tokenize import collate, encode_all, pad_id_of
    from explorer.model.load import load_model
    from explorer.prepare.specs import resolve_spec
    from explorer.scoring.ekfac import EKFAC_SAFETY, EKFAC_TASK, ekfac_effects
    from explorer.scoring.influence import EFFECT_SAFETY, InfluenceProbe
    from explorer.train.assemble import build_pools

    run_dir = Path(run_dir)
    wpath = run_dir / FINAL_WEIGHTS
    if not wpath.exists():
        raise FileNotFoundError(f"{run_dir}: no {FINAL_WEIGHTS}; expected a run trained by benchmarks/why_report.py, "
                                "which keeps the final weights")
    man = reader.manifest(run_dir)
    cfg = from_dict(man["config"], str(run_dir))
    torch.manual_seed(cfg.seed)
    model, tok, _ = load_model(resolve_spec(cfg.model.path), torch.device("cpu"), "float32")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in load_file(str(wpath)).items():
            params[n].copy_(v)
    pad = pad_id_of(tok)

    def encode(recs):
        return collate(encode_all(tok, recs, cfg.data.max_length, strict=False)[0], pad, torch.device("cpu"))

    data = build_pools(cfg)
    probe = InfluenceProbe.for_run(cfg, data.suites, encode)        # the same held-out sets as the run's check
    train = encode(data.mix)
    model.train()
    tracin = probe.pool_effects(model, [encode(data.mix[i:i + cfg.optim.batch_size])
                                        for i in range(0, len(data.mix), cfg.optim.batch_size)], cfg.optim.lr)
    t = time.time()
    queries = {EKFAC_SAFETY: probe.safety, **({EKFAC_TASK: probe.task} if with_task and probe.task is not None else {})}
    eff = ekfac_effects(model, train, queries, damping=damping, batch_size=cfg.optim.batch_size)
    secs = time.time() - t
    keep = keep_rates(run_dir, man["method"])
    tab = pd.DataFrame({"sample_id": train.sample_ids, **eff})
    prov = {r.sample_id: r.provenance for r in data.mix}
    tab["provenance"] = tab["sample_id"].map(prov)
    tab["keep_rate"] = tab["sample_id"].map(keep)
    tab["tracin_safety"] = tab["sample_id"].map(lambda s: tracin[s][EFFECT_SAFETY])
    tab.to_parquet(run_dir / EKFAC_TABLE, index=False)
    summary = summarise(tab)
    summary.update(method=man["method"], seed=man["seed"], seconds=round(secs, 1),
                   damping="kronfluence heuristic" if damping is None else damping)
    (run_dir / "ekfac.json").write_text(json.dumps(summary, indent=1, default=float))
    return tab, summary


def summarise(tab: pd.DataFrame) -> dict:
    """ρ(keep rate, benefit), the mean effect of dropped (keep rate < ½) and kept samples, the share of
    dropped and kept samples the check says lower safety, and the agreement of the two checks."""
    seen = tab[tab["keep_rate"].notna()]
    dropped, kept = seen[seen["keep_rate"] < 0.5], seen[seen["keep_rate"] >= 0.5]
    e = "ekfac_safety"
    harmful = (tab["provenance"] == "harmful").astype(float)
    benign = seen[seen["provenance"] == "benign"]
    return {"rho_keep_ekfac": chance.spearman(seen["keep_rate"], -seen[e]),
            "mean_ekfac_dropped": float(dropped[e].mean()) if len(dropped) else float("nan"),
            "mean_ekfac_kept": float(kept[e].mean()) if len(kept) else float("nan"),
            "lowers_safety_dropped": float((dropped[e] > 0).mean()) if len(dropped) else float("nan"),
            "lowers_safety_kept": float((kept[e] > 0).mean()) if len(kept) else float("nan"),
            "rho_ekfac_tracin": chance.spearman(tab[e], tab["tracin_safety"]),
            "rho_ekfac_harmful": chance.spearman(tab[e], harmful),
            "rho_tracin_harmful": chance.spearman(tab["tracin_safety"], harmful),
            "rho_keep_ekfac_benign": chance.spearman(benign["keep_rate"], -benign[e]),
            "median_ekfac_harmful": float(tab.loc[harmful == 1, e].median()),
            "median_ekfac_benign": float(benign[e].median()),
            **({"rho_keep_ekfac_task": chance.spearman(seen["keep_rate"], -seen["ekfac_task"])}
               if "ekfac_task" in tab else {}),
            "n_dropped": int(len(dropped)), "n_kept": int(len(kept))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--damping", type=float, default=None, help="λ; default: kronfluence's heuristic")
    ap.add_argument("--with-task", action="store_true", help="also the influence on the held-out task loss")
    ap.add_argument("--summary-only", action="store_true", help="summarise an existing ekfac.parquet again")
    a = ap.parse_args(argv)
    for d in a.runs:
        if a.summary_only:
            old = json.loads((Path(d) / "ekfac.json").read_text())
            s = {**{k: old[k] for k in ("method", "seed", "seconds", "damping")},
                 **summarise(pd.read_parquet(Path(d) / EKFAC_TABLE))}
            (Path(d) / "ekfac.json").write_text(json.dumps(s, indent=1, default=float))
        else:
            _, s = run_ekfac(Path(d), a.damping, a.with_task)
        print(json.dumps(s, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
