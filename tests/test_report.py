"""benchmarks/report.py: the docs pages' blocks are replaced between their markers, tables are mean ± std."""

from pathlib import Path

import pandas as pd
import pytest

from _scripts import load_benchmark

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    return load_benchmark("report")


def test_write_replaces_only_the_named_block(report, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- report:a -->\nold a\n<!-- /report:a -->\nmiddle\n"
                    "<!-- report:b -->\nold b\n<!-- /report:b -->\nend\n")
    report.write_block("a", "| new |", page)
    text = page.read_text()
    assert "old a" not in text and "| new |" in text and "old b" in text
    assert text.startswith("intro\n<!-- report:a -->\n| new |\n<!-- /report:a -->\nmiddle")
    with pytest.raises(SystemExit, match="report:c"):
        report.write_block("c", "x", page)


def test_a_block_is_written_into_the_one_page_that_holds_it(report, tmp_path):
    (tmp_path / "methods").mkdir()
    (tmp_path / "a.md").write_text("<!-- report:x -->\n<!-- /report:x -->\n")
    (tmp_path / "methods" / "b.md").write_text("<!-- report:y -->\n<!-- /report:y -->\n")
    assert report.block_page("y", tmp_path) == tmp_path / "methods" / "b.md"
    with pytest.raises(SystemExit, match="found 0"):
        report.block_page("z", tmp_path)
    (tmp_path / "c.md").write_text("<!-- report:x -->\n<!-- /report:x -->\n")
    with pytest.raises(SystemExit, match="found 2"):
        report.block_page("x", tmp_path)


def test_mean_std_over_runs_and_dash_for_empty_columns(report):
    df = pd.DataFrame({"label": ["SFT", "SFT", "SFT", "X"], "HS hh": [100.0, 90.0, 80.0, 5.0],
                       "drop prec": [float("nan")] * 3 + [20.0]})
    out = report.mean_std(df, ["label"], ["HS hh", "drop prec"]).set_index("label")
    assert out.loc["SFT", "HS hh"] == "90.0 ± 10.0" and out.loc["SFT", "drop prec"] == "–"
    assert out.loc["X", "HS hh"] == "5.0" and out.loc["SFT", "runs"] == 3


def test_the_printed_command_names_no_local_folder(report):
    line = report.command_line(["methods", "--runs-dir", "/some/where", "--seeds", "0", "1", "--reuse", "--write"])
    assert line == "python benchmarks/report.py methods --seeds 0 1"


def test_the_printed_command_can_be_pasted_back(report):
    """A setting name with a space stays one argument when the docs' command is pasted into a shell."""
    import shlex

    argv = ["ablations", "dualselect", "--variants", "dualselect", "random refs", "--runs-dir", "/x"]
    line = report.command_line(argv)
    assert shlex.split(line)[2:] == ["ablations", "dualselect", "--variants", "dualselect", "random refs"]


#: the page of docs/ each table's block lives in (report.py finds it; this pins where)
BLOCK_PAGES = {"world": "tiny_world.md", "drift": "tiny_world.md", "methods": "methods/index.md",
               "ablations-dualselect": "methods/dualselect.md", "cosines": "methods/dualselect.md",
               "ablations-cwac": "methods/cwac.md", "drift-smollm2": "smollm2.md",
               "methods-smollm2": "smollm2.md"}


def test_the_docs_have_one_block_for_every_table_the_scripts_write(report):
    for name, page in BLOCK_PAGES.items():
        assert report.block_page(name) == REPO / "docs" / page, name
        text = (REPO / "docs" / page).read_text()
        assert f"<!-- /report:{name} -->" in text, name
    why = load_benchmark("why_report")
    text = why.PAGE.read_text()
    assert text.count(why.MARK_BEGIN) == 1 and text.count(why.MARK_END) == 1
    assert "<!-- report:" not in (REPO / "README.md").read_text()    # README is a guide; the tables are in docs/


def test_rise_is_the_final_harmful_score_minus_the_start_one(report, tmp_path):
    """The smollm2 drift table's "rise HS" columns (issue #15 states its target as a rise): final minus
    the run's own start evaluation; blank for a run that recorded none."""
    import json

    dirs = []
    for name, start in (("a", {"harmful_hh/harmful_score": 6.25, "harmful_hexphi/harmful_score": 0.0}),
                        ("b", None)):
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"run_id": name, "start_metrics": start}))
        dirs.append(d)
    df = pd.DataFrame({"run": ["a", "b"], "HS hh": [81.25, 50.0], "HS hexphi": [68.75, 50.0]})
    assert report.add_rise(df, dirs) == ["rise HS hh", "rise HS hexphi"]
    assert df["rise HS hh"].iloc[0] == 75.0 and df["rise HS hexphi"].iloc[0] == 68.75
    assert df["rise HS hh"].isna().iloc[1] and df["rise HS hexphi"].isna().iloc[1]


def _manifest(cfg):
    """What a complete run records of its settings (explorer/train/recipe.py writes run.json alike)."""
    from explorer.config import method_config, to_dict
    from explorer.runs import schema

    return {"status": schema.STATUS_COMPLETE, "harmful_ratio": cfg.data.harmful_ratio, "seed": cfg.seed,
            "config": to_dict(cfg), "method_config": dict(vars(method_config(cfg)))}


def test_reuse_takes_only_a_run_made_with_the_settings_the_command_would_run(report, tmp_path, monkeypatch):
    """--reuse finds runs by name, ratio, seed and model; a run recorded with other settings (here an
    older DualSelect refresh schedule of the smollm2 world) is named and trained again, not reused."""
    import json

    from explorer.demo import method_run_config, settings_differ
    from explorer.runs import schema

    ov = ["world=smollm2", "progress=false", "eval.every=0", "run_name=dualselect", "model.path=smollm2:aligned",
          "model.base=smollm2:base"]
    now = method_run_config("dualselect", 0.1, 0, str(tmp_path), ov)
    old = method_run_config("dualselect", 0.1, 0, str(tmp_path), ov + ["method.refresh=every_n_steps",
                                                                        "method.refresh_every=8"])
    assert settings_differ(_manifest(now), now) == []
    diff = settings_differ(_manifest(old), now)
    assert diff == ["method.refresh: recorded 'every_n_steps', now 'epoch'"]
    # runs_dir says where a run is, not what it is; a setting the run predates is not compared
    moved = _manifest(now)
    moved["config"]["runs_dir"] = "/elsewhere"
    del moved["config"]["optim"]["lr"]
    assert settings_differ(moved, now) == []

    for name, cfg in (("dualselect-p0.1-s0-1", old), ("dualselect-p0.1-s0-2", now)):
        (tmp_path / name).mkdir()
        (tmp_path / name / schema.MANIFEST).write_text(json.dumps(_manifest(cfg)))
    trained = []

    def fake_run(methods, p, seed, runs_dir, overrides):
        d = tmp_path / f"trained-{len(trained)}"
        d.mkdir()
        (d / schema.MANIFEST).write_text(json.dumps(_manifest(now)))
        trained.append(overrides)
        return [d]

    monkeypatch.setattr(report, "run_methods", fake_run)
    job = {"method": "dualselect", "p": 0.1, "seed": 0, "prep": 0, "name": "dualselect", "world": "smollm2"}
    assert report.get_runs([job], tmp_path, reuse=True) == [tmp_path / "dualselect-p0.1-s0-2"] and not trained
    (tmp_path / "dualselect-p0.1-s0-2" / schema.MANIFEST).unlink()     # only the old-settings run is left
    got = report.get_runs([job, job], tmp_path, reuse=True)
    assert len(trained) == 1 and got == [tmp_path / "trained-0"] * 2    # trained once, then found
