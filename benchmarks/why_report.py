"""Is the why real? For each selection method at p = 0.1 over seeds: does its score track the measured
effect of a sample on the held-out refusal loss, and how far is its selection from chance?

    nice -n 10 python benchmarks/why_report.py --seeds 0 1 2 --methods dualselect random seal

Each run records, every `--influence-every` steps, every task sample's first-order effect on the
held-out refusal loss (effect_safety; explorer/scoring/influence.py). Columns printed, per method
(mean ± sd over seeds; "n/a" where a method has no score or no drop):

  rho safety   Spearman's ρ between the method's preference (its score oriented so that larger = kept;
               ω for SEAL; the keep weight for random) and −effect_safety, averaged over recorded
               steps: +1 = it prefers exactly the samples the check says raise safety, 0 = unrelated.
               SEAL cuts once before training, so its ρ is over the whole mix at the starting model.
  rho task     the same against −effect_task (the held-out task loss).
  recall       harmful-drop recall (% of harmful sample-decisions dropped; SEAL: of harmful samples cut)
  chance       the recall a random drop of the same size per batch (SEAL: over the pool) gives
  lift         (recall − chance) / (1 − chance): 0 = chance, 1 = every harmful sample dropped
  p            the exact permutation p-value of the run (median over seeds)
  badge        the plain-words verdict per seed (explorer/runs/chance.py BADGE_RULE)
  refresh J    (methods with reference refreshes) the mean Jaccard overlap of consecutive refreshes, and in
               brackets the mean overlap two random selections of the same sizes have (exact)
  EK-FAC rho keep       where the run has an ekfac.json (benchmarks/why_ekfac.py, or --ekfac here): Spearman's
               ρ between each mix sample's keep rate and its EK-FAC benefit −ekfac_safety at the final weights
  EK-FAC ~ first-order  ρ between the EK-FAC and the first-order effect on the same samples and weights
  LOO K=k ...  with --loo-step S: the ground truth. Exact leave-one-out over the batch of step S from the run's
               step checkpoint (explorer/replay/): each sample's measured effect on the held-out refusal loss
               after k steps (loo_safety, with it minus without it), and Spearman's ρ of each estimate of the
               same samples with it: the first-order effect_safety recorded at S (SGD's step), the same through
               AdamW's preconditioner at the checkpoint ("Adam first-order": −lr·⟨g_i, ∇L/(√v̂+ε)⟩), EK-FAC fitted at
               the checkpoint's weights (with --ekfac), and the method's preference against the benefit −loo_safety.
               The runs are trained with record.checkpoint_every=S (and --loo-horizons k ... <= the steps after S).

Runs are kept under --runs-dir (with their final weights, for the EK-FAC check); with --reuse an existing
complete run of the same method and seed is read instead of trained again. --write puts the table into
docs/why_results.md between <!-- report:why --> and <!-- /report:why -->.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.runs import chance, reader, schema  # noqa: E402


def _find(runs_dir: Path, method: str, seed: int, p: float, cfg) -> Path | None:
    """The newest complete run of `method`, seed and ratio with the influence probe on, recorded with
    the settings `cfg` would run (explorer.demo.matching_run); those made otherwise are named."""
    from explorer.demo import matching_run

    found = []
    for m in sorted(runs_dir.glob(f"{method}-p{p:g}-s{seed}-*/{schema.MANIFEST}"), reverse=True):
        man = json.loads(m.read_text())
        if man.get("status") == schema.STATUS_COMPLETE and man["config"].get("eval", {}).get("influence_every", 0) > 0:
            found.append((m.parent, man))
    return matching_run(found, cfg)


def run_config(method: str, seed: int, p: float, runs_dir: Path, every: int, n: int, extra: list[str]):
    """The RunConfig a why run of `method` trains with."""
    from explorer.config import load_config
    from explorer.demo import demo_config_path

    cfg_path = demo_config_path(method)
    ov = [f"data.harmful_ratio={p}", f"seed={seed}", f"runs_dir={runs_dir}", f"eval.influence_every={every}",
          f"eval.influence_n={n}", "eval.every=0", "eval.final_n=50", "progress=false"]
    for e in extra:             # "key=value" for every method, "method:key=value" for that method only
        name, sep, kv = e.partition(":")
        if not sep or "=" in name:
            ov.append(e)
        elif name == method:
            ov.append(kv)
    if cfg_path is None:
        ov.append(f"method={method}")
    return load_config(cfg_path, ov)


def train(cfg) -> Path:
    from explorer.train.recipe import Recipe

    t = time.time()
    recipe = Recipe(cfg)
    try:
        d = recipe.setup().train()
    except BaseException as e:      # as recipe.run does: the folder stays readable, marked failed
        if recipe.writer is not None:
            recipe.writer.fail(e)
        raise
    finally:
        if getattr(recipe, "dist", None) is not None:
            recipe.dist.close()
    save_final_weights(recipe.model, d)
    print(f"  {cfg.method_name:11s} seed {cfg.seed} trained in {time.time() - t:6.1f} s -> {d}", file=sys.stderr)
    return d


def save_final_weights(model, run_dir: Path) -> None:
    """The trainable weights at the end of the run (a run folder keeps none once it is complete), so that
    the EK-FAC check (benchmarks/why_ekfac.py) can score the kept and dropped samples at the final model."""
    from safetensors.torch import save_file

    from why_ekfac import FINAL_WEIGHTS

    save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
              str(Path(run_dir) / FINAL_WEIGHTS))


def seal_pool_check(run_dir: Path, n: int) -> tuple[pd.DataFrame, dict]:
    """SEAL decides once, on the whole mix, before training: its ω against each sample's effect at
    the starting model, and the cut's recall against a random cut of the same size. The effects are
    kept in the run folder (seal_pool_effects.parquet) and read from there when the report is rerun."""
    cached = run_dir / "seal_pool_effects.parquet"
    if cached.exists():
        cut = pd.read_parquet(cached)
        return cut, chance.task_selection_chance(cut, by="step").as_dict()
    import torch

    from explorer.config import from_dict
    from explorer.data.tokenize import collate, encode_all, pad_id_of
    from explorer.model.load import load_model
    from explorer.prepare.specs import resolve_spec
    from explorer.scoring.influence import InfluenceProbe
    from explorer.train.assemble import build_pools

    man = reader.manifest(run_dir)
    cfg = from_dict(man["config"], str(run_dir))
    torch.manual_seed(cfg.seed)
    model, tok, _ = load_model(resolve_spec(cfg.model.path), torch.device("cpu"), "float32")
    model.train()
    pad = pad_id_of(tok)

    def encode(recs):
        return collate(encode_all(tok, recs, cfg.data.max_length, strict=False)[0], pad, torch.device("cpu"))

    data = build_pools(cfg)     # the same mix and held-out suites as the run
    mix = data.mix
    probe = InfluenceProbe.for_run(cfg, data.suites, encode)
    batches = [encode(mix[i:i + cfg.optim.batch_size]) for i in range(0, len(mix), cfg.optim.batch_size)]
    eff = probe.pool_effects(model, batches, cfg.optim.lr)
    cut = reader.query(run_dir, "seal_cut", "SELECT sample_id, omega, kept FROM t WHERE step = (SELECT max(step) FROM t)")
    prov = {r.sample_id: r.provenance for r in mix}
    cut = cut.assign(effect_safety=cut["sample_id"].map(lambda s: eff[s]["effect_safety"]),
                     effect_task=cut["sample_id"].map(lambda s: eff[s].get("effect_task", np.nan)),
                     provenance=cut["sample_id"].map(prov), step=0)
    cut.to_parquet(cached, index=False)
    return cut, chance.task_selection_chance(cut, by="step").as_dict()


def analyse(run_dir: Path, n: int, ekfac: bool = False) -> dict:
    man = reader.manifest(run_dir)
    if man["method"] == "seal":
        dec, ch = seal_pool_check(run_dir, n)
    else:
        dec = reader.decisions(run_dir, role="task")
        smp = reader.samples(run_dir)[["sample_id", "provenance"]]
        dec = dec.merge(smp, on="sample_id", how="left")
        ch = chance.task_selection_chance(dec).as_dict()
    rs = chance.score_effect_correlation(dec, "effect_safety")
    rt = chance.score_effect_correlation(dec, "effect_task")
    row = {"method": man["method"], "seed": man["seed"], "rho safety": rs["rho"], "rho task": rt["rho"],
           "score column": rs["column"], "steps": rs["n_steps"], **{k: ch[k] for k in
           ("recall", "chance", "lift", "p_value", "badge", "n_dropped")}, **refresh_overlap(run_dir)}
    row.update(ekfac_check(run_dir, compute=ekfac))
    return row


def loo_check(run_dir: Path, step: int, horizons: list[int], ekfac: bool) -> dict:
    """The ground truth at step `step` (see the module's doc): leave-one-out studies already in the run
    folder are read, missing ones computed (and recorded there); EK-FAC at the checkpoint's weights
    is kept in the run folder as ekfac_step<S>.parquet."""
    from explorer.replay.replay import RunWorld, leave_one_out
    from explorer.runs import replays

    dec = reader.batch_at(run_dir, step)
    world = None
    if ekfac:
        f = run_dir / f"ekfac_step{step}.parquet"
        if not f.exists():
            world = world or RunWorld(run_dir)
            ekfac_at_checkpoint(world, step).to_parquet(f, index=False)
        dec = dec.merge(pd.read_parquet(f), on="sample_id", how="left")
    f = run_dir / f"adam_effect_step{step}.parquet"
    if not f.exists():
        world = world or RunWorld(run_dir)
        adam_first_order(world, step).to_parquet(f, index=False)
    dec = dec.merge(pd.read_parquet(f), on="sample_id", how="left")
    row: dict = {}
    have = reader.loo(run_dir, step)
    for k in horizons:
        loo = have[have["horizon"] == k] if not have.empty else have
        if not loo.empty:
            loo = loo[loo["loo_id"] == loo["loo_id"].iloc[-1]]
        else:
            world = world or RunWorld(run_dir)
            t = time.time()
            loo = leave_one_out(run_dir, step, k, world=world)
            print(f"    leave-one-out at step {step}, horizon {k}: {len(loo)} samples in {time.time() - t:.1f} s",
                  file=sys.stderr, flush=True)
        est = {"first-order": "effect_safety", "Adam first-order": "adam_effect_safety",
               **({"EK-FAC": "ekfac_safety_at_step"} if ekfac else {})}
        cmp = replays.loo_comparison(loo, dec, est)
        row[f"LOO K={k} first-order"] = cmp["rho first-order"]
        row[f"LOO K={k} Adam first-order"] = cmp["rho Adam first-order"]
        row[f"LOO K={k} EK-FAC"] = cmp.get("rho EK-FAC", np.nan)
        row[f"LOO K={k} score"] = cmp["rho score"]
        row[f"LOO K={k} spread"] = float(loo["loo_safety"].std())
        if "noise_floor" in loo and loo["noise_floor"].notna().any():
            row[f"LOO K={k} noise floor"] = float(loo["noise_floor"].iloc[0])
        else:       # a study recorded before the noise floor was: measured now (two replays)
            from explorer.replay.replay import noise_floor

            world = world or RunWorld(run_dir)
            row[f"LOO K={k} noise floor"] = noise_floor(world, step, k)
    return row


def adam_first_order(world, step: int) -> pd.DataFrame:
    """The first-order effect through AdamW's step instead of SGD's, at the step checkpoint:
    adam_effect_safety_i = −lr·⟨g_i, ∇L_refusal / (√v̂ + ε)⟩, with v̂ the bias-corrected second moment AdamW
    would divide by at step S on the whole batch (the checkpoint's v, updated with the batch's mean gradient).
    Linearising the Adam step in the gradient (v held fixed), including sample i in the batch mean moves the
    held-out loss by a positive multiple of this plus a term shared by every sample, so its ranking is the
    one the recorded first-order effect would have if the optimiser were taken into account."""
    import torch

    from explorer.scoring import make_estimator, trainable_params
    from explorer.scoring.influence import heldout_gradient

    opt = world.restore(step).opt
    params = trainable_params(world.model)
    names = list(params)
    batch = world.encode_ids(world.batch(step)["sample_id"].tolist())
    feats = make_estimator("hooks").features(world.model, batch, params).grads            # [B, P]
    heldout = heldout_gradient(world.model, world.safety, params)                          # [P]
    g_mean = feats.mean(dim=0)
    beta1, beta2 = opt.param_groups[0]["betas"]
    eps, lr = opt.param_groups[0]["eps"], world.lr_at(step)
    v, t = [], []
    for n in names:
        st = opt.state.get(params[n], {})
        v.append(st["exp_avg_sq"].reshape(-1) if "exp_avg_sq" in st else torch.zeros(params[n].numel()))
        t.append(torch.full((params[n].numel(),), float(st.get("step", 0))))
    v, t = torch.cat(v), torch.cat(t) + 1
    v_hat = (beta2 * v + (1 - beta2) * g_mean ** 2) / (1 - beta2 ** t)
    pre = heldout / (v_hat.sqrt() + eps)
    eff = -lr * (feats @ pre)
    return pd.DataFrame({"sample_id": batch.sample_ids, "adam_effect_safety": eff.detach().cpu().numpy()})


def ekfac_at_checkpoint(world, step: int) -> pd.DataFrame:
    """EK-FAC influence on the held-out refusal loss of every sample of step `step`'s batch, at the weights
    of the step checkpoint (the weights leave-one-out starts from), G fitted on the run's fine-tuning set."""
    import copy

    from explorer.scoring.ekfac import ekfac_effects

    world.restore(step)
    ids = sorted(reader.decisions(world.run_dir, role="task")["sample_id"].unique())
    train = world.encode_ids(ids)
    eff = ekfac_effects(copy.deepcopy(world.model), train, {"s": world.safety}, batch_size=32)["s"]
    batch = set(world.batch(step)["sample_id"])
    tab = pd.DataFrame({"sample_id": train.sample_ids, "ekfac_safety_at_step": eff})
    return tab[tab["sample_id"].isin(batch)]


def refresh_overlap(run_dir: Path) -> dict:
    """Reference selection against chance: the mean Jaccard overlap of consecutive refreshes, the mean
    overlap two random selections of the same sizes have (exact), and the share of refreshes whose
    overlap is above the 95th percentile of chance. NaN for methods without refreshes."""
    nan = {"jaccard": np.nan, "jaccard chance": np.nan, "refreshes > chance 95%": np.nan, "refreshes": 0}
    if not reader.has_table(run_dir, "refreshes"):
        return nan
    rc = chance.refresh_chance(reader.refresh_summary(run_dir)).dropna(subset=["jaccard_prev", "jaccard_chance"])
    if rc.empty:
        return nan
    return {"jaccard": float(rc["jaccard_prev"].mean()), "jaccard chance": float(rc["jaccard_chance"].mean()),
            "refreshes > chance 95%": float((rc["jaccard_prev"] > rc["jaccard_chance_95"]).mean()),
            "refreshes": int(len(rc))}


def ekfac_check(run_dir: Path, compute: bool) -> dict:
    """The stronger check (benchmarks/why_ekfac.py): the run's ekfac.json when present, else computed
    when `compute` (--ekfac), else NaN."""
    from why_ekfac import run_ekfac

    f = run_dir / "ekfac.json"
    if not f.exists() and not compute:
        return {"ekfac rho keep": np.nan, "ekfac~first-order": np.nan, "ekfac lowers dropped": np.nan,
                "ekfac lowers kept": np.nan}
    s = json.loads(f.read_text()) if f.exists() else run_ekfac(run_dir)[1]
    return {"ekfac rho keep": s["rho_keep_ekfac"], "ekfac~first-order": s["rho_ekfac_tracin"],
            "ekfac lowers dropped": s["lowers_safety_dropped"], "ekfac lowers kept": s["lowers_safety_kept"]}


def _pm(s: pd.Series, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    s = pd.to_numeric(s, errors="coerce").dropna() * scale
    if s.empty:
        return "n/a"
    return fmt.format(s.mean()) + (" ± " + fmt.format(s.std()) if len(s) > 1 else "")


def table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for m, g in rows.groupby("method", sort=False):
        dropped = pd.to_numeric(g["n_dropped"]).fillna(0) > 0
        gg = g[dropped]
        out.append({"method": m, "seeds": len(g), "score": g["score column"].dropna().iloc[0]
                    if g["score column"].notna().any() else "n/a",
                    "rho safety": _pm(g["rho safety"]), "rho task": _pm(g["rho task"]),
                    "recall %": _pm(gg["recall"], 100, "{:.1f}"), "chance %": _pm(gg["chance"], 100, "{:.1f}"),
                    "lift": _pm(gg["lift"]),
                    "p (median)": f"{pd.to_numeric(gg['p_value']).median():.2g}" if not gg.empty else "n/a",
                    "badge per seed": ", ".join(g["badge"]) if dropped.any() else "no drops"})
        if g["refreshes"].fillna(0).gt(0).any():
            out[-1]["refresh J (chance)"] = (f"{_pm(g['jaccard'])} ({_pm(g['jaccard chance'], fmt='{:.3f}')}); "
                                             f"{_pm(g['refreshes > chance 95%'], 100, '{:.0f}')} % above chance's 95th pct")
        if rows["ekfac rho keep"].notna().any():
            n = int(g["ekfac rho keep"].notna().sum())
            out[-1]["EK-FAC rho keep"] = _pm(g["ekfac rho keep"]) + (f" ({n} seed{'s' * (n > 1)})" if n else "")
            out[-1]["EK-FAC ~ first-order"] = _pm(g["ekfac~first-order"])
        for c in [c for c in rows.columns if c.startswith("LOO K=") and not c.endswith(("spread", "noise floor"))]:
            out[-1][c] = _pm(g[c])
    return pd.DataFrame(out).fillna("–")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["dualselect", "random", "seal"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--runs-dir", default="runs/why")
    ap.add_argument("--influence-every", type=int, default=4)
    ap.add_argument("--influence-n", type=int, default=64)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="further run settings (e.g. n_train=64 epochs=1 for a smoke test); "
                         "METHOD:KEY=VALUE applies to that method only (dualselect:method.ref_cap=120)")
    ap.add_argument("--reuse", action="store_true", help="read existing complete runs instead of training")
    ap.add_argument("--only-existing", action="store_true", help="read complete runs only; train none (the "
                    "table then says how many seeds each method has)")
    ap.add_argument("--ekfac", action="store_true", help="add the EK-FAC check at each run's final weights "
                    "(benchmarks/why_ekfac.py; needs kronfluence)")
    ap.add_argument("--loo-step", type=int, default=None, help="the ground truth: exact leave-one-out over the "
                    "batch of this step (runs trained with record.checkpoint_every=STEP); a multiple of "
                    "--influence-every, so that the first-order effect is recorded there")
    ap.add_argument("--loo-horizons", type=int, nargs="+", default=[1, 4], help="steps replayed per leave-one-out")
    ap.add_argument("--write", action="store_true", help="put the table into docs/why_results.md between "
                    f"{MARK_BEGIN} and {MARK_END}")
    a = ap.parse_args(argv)
    if a.ekfac:
        from explorer.scoring.ekfac import INSTALL_HINT, available
        if not available():
            ap.error(f"--ekfac needs kronfluence: {INSTALL_HINT}")
    runs_dir = Path(a.runs_dir)
    rows = []
    for s in a.seeds:           # seeds outer: an interrupted report still has every method for the first seeds
        for m in a.methods:
            extra = a.set + ([f"record.checkpoint_every={a.loo_step}", "record.checkpoint_keep=1000"] if a.loo_step else [])
            cfg = run_config(m, s, a.p, runs_dir, a.influence_every, a.influence_n, extra)
            d = _find(runs_dir, m, s, a.p, cfg) if a.reuse or a.only_existing else None
            if d is None and a.only_existing:
                print(f"  {m} seed {s}: no complete run in {runs_dir}; left out (--only-existing)", file=sys.stderr)
                continue
            d = d or train(cfg)
            rows.append(analyse(d, a.influence_n, a.ekfac))
            if a.loo_step is not None:
                rows[-1].update(loo_check(d, a.loo_step, a.loo_horizons, a.ekfac))
            print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in rows[-1].items()), file=sys.stderr, flush=True)
    per_run = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    head = (f"p = {a.p:g}, seeds {' '.join(map(str, a.seeds))}, effect every {a.influence_every} steps on "
            f"{a.influence_n} held-out prompts per loss" + (f"; settings {' '.join(a.set)}" if a.set else ""))
    md = table(per_run).to_markdown(index=False, disable_numparse=True)
    print(head + "\n")
    print(md)
    if a.write:
        write_page(command(argv), md)
    print("\nper run:")
    print(per_run.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


MARK_BEGIN, MARK_END = "<!-- report:why -->", "<!-- /report:why -->"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "why_results.md"


def command(argv) -> str:
    args = [x for x in (sys.argv[1:] if argv is None else argv) if x != "--write"]
    return "python benchmarks/why_report.py " + " ".join(args)


def write_page(cmd: str, md: str, path: Path = PAGE) -> None:
    """Replace what lies between the report:why markers (and nothing else) with the command and its table."""
    text = path.read_text()
    if text.count(MARK_BEGIN) != 1 or text.count(MARK_END) != 1:
        raise SystemExit(f"{path}: expected exactly one {MARK_BEGIN} and one {MARK_END}")
    i, j = text.index(MARK_BEGIN) + len(MARK_BEGIN), text.index(MARK_END)
    path.write_text(text[:i] + f"\n`{cmd}`:\n\n{md}\n" + text[j:])
    print(f"wrote {path} between {MARK_BEGIN} and {MARK_END}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
