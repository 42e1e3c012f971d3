"""The comparison table that `explorer demo`, `sweep` and the ablation benchmarks print, on fake runs:
it must agree with the dashboard's reader.compare and compute the step-time ratio against SFT."""

import pytest

from _fake_runs import make_dualselect, make_sft
from explorer.demo import DEMO_COLUMNS, comparison_table, format_table
from explorer.runs import reader

pytestmark = pytest.mark.contract


def test_comparison_table_agrees_with_the_dashboard(tmp_path):
    sft, ds = make_sft(tmp_path), make_dualselect(tmp_path)
    df = comparison_table([sft, ds]).set_index("method")
    cmp = reader.compare([sft, ds]).set_index("method")
    for col, other in [("Safety Avg", "safety_avg"), ("win hh", "win_hh"), ("win hexphi", "win_hexphi"),
                       ("task acc", "task_acc"), ("drop prec", "drop_precision"), ("drop recall", "drop_recall")]:
        assert df.loc["dualselect", col] == pytest.approx(cmp.loc["dualselect", other]), col
    assert df.loc["sft", "Safety Avg"] == pytest.approx(50.0)
    # the fake SFT steps take 0.1 s, DualSelect's 0.2 s
    assert df.loc["dualselect", "step / SFT"] == pytest.approx(2.0) and df.loc["sft", "step / SFT"] == 1.0
    text = format_table(df.reset_index(), DEMO_COLUMNS)
    assert "dualselect" in text and "step / SFT" in text


def test_printed_table_leaves_unknown_drop_recall_blank(tmp_path):
    sft, ds = make_sft(tmp_path), make_dualselect(tmp_path)
    df = comparison_table([sft, ds])
    assert df.set_index("method").loc["sft", "drops"] == "no drops"
    sft_line = next(ln for ln in format_table(df, DEMO_COLUMNS).splitlines() if "| sft" in ln)
    assert "nan" not in sft_line.lower()
