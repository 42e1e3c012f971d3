"""Figures shared by the dashboard and the notebooks: pure DataFrame -> plotly Figure (no torch)."""

from explorer.viz.figures import (data_map, empty, method_table, metric_curves, reference_swimlane, refresh_timeline,
                                  safety_utility, selection_scatter, step_lines)

__all__ = ["data_map", "empty", "method_table", "metric_curves", "reference_swimlane", "refresh_timeline",
           "safety_utility", "selection_scatter", "step_lines"]
