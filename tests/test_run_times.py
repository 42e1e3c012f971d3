"""benchmarks/run_times.py: a run's wall seconds split into its steps and the rest, from its folder."""

import pytest

from _fake_runs import edit_manifest, make_pact, make_sft
from _scripts import load_benchmark

pytestmark = pytest.mark.unit


def _load():
    return load_benchmark("run_times")


def test_wall_is_split_into_steps_and_the_rest_and_checked_against_the_limit(tmp_path, capsys):
    rt = _load()
    sft = make_sft(tmp_path)
    edit_manifest(sft, wall_seconds=650.0)
    r = rt.row(sft, limit=600)
    n = r["steps"]
    assert n > 0 and r["steps s"] == pytest.approx(0.1 * n)        # every fake step took 0.1 s
    assert r["rest s"] == pytest.approx(650.0 - 0.1 * n) and r["within"] == "no"
    assert rt.row(sft, limit=700)["within"] == "yes"
    edit_manifest(sft, status="failed")
    assert rt.row(sft, limit=600) is None                           # only complete runs are timed
    pact = make_pact(tmp_path)
    edit_manifest(pact, wall_seconds=10.0)
    # PACT's steps say which read the cached reference logits
    import pandas as pd
    from explorer.runs import reader

    steps = reader.steps(pact)
    assert "reference_cached" not in steps      # the fake run predates the cache: no such columns
    for f in (pact / "steps").glob("part-*.parquet"):
        t = pd.read_parquet(f)
        t["reference_cached"] = (t["step"] >= 4).astype(float)
        t["time_s"] = t["step"].map(lambda s: 0.1 if s >= 4 else 0.3)
        t.to_parquet(f)
    r = rt.row(pact, limit=600)
    n = len(reader.steps(pact))
    assert r["reference cached"] == f"{n - 4}/{n}"
    assert r["median step s, reference run / cached"] == "0.30 / 0.10"
    rt.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "pact" in out and "10.0" in out and "sft" not in out
    with pytest.raises(SystemExit, match="no such directory"):
        rt.main([str(tmp_path / "nowhere")])
