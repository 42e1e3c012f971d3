"""Figures shared by the dashboard and the notebooks: pure DataFrame -> plotly Figure (no torch)."""

from explorer.viz.figures import (data_map, empty, method_table, metric_curves, reference_swimlane, refresh_jaccard,
                                  refresh_timeline, safety_utility, selection_scatter, step_lines)
from explorer.viz.methods import (cwac_latent_drift, cwac_removed_share, cwac_sae_checks, cwac_spectrum,
                                  pact_gates, pact_kl_by_position, pact_token_bars, seal_cut_bars, seal_cut_value,
                                  seal_ranking, seal_weight_distribution)
from explorer.viz.why import recall_chance_bars, score_vs_effect

__all__ = ["data_map", "empty", "method_table", "metric_curves", "reference_swimlane", "refresh_jaccard",
           "refresh_timeline", "safety_utility", "selection_scatter", "step_lines",
           "cwac_latent_drift", "cwac_removed_share", "cwac_sae_checks", "cwac_spectrum", "pact_gates",
           "pact_kl_by_position",
           "pact_token_bars", "seal_cut_bars", "seal_cut_value", "seal_ranking", "seal_weight_distribution",
           "recall_chance_bars", "score_vs_effect"]
