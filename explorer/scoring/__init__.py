"""Batched per-sample scoring: losses, gradient features, cosines (the GPU backend)."""

from explorer.scoring.estimators import (ESTIMATORS, CountSketch, Features, HooksEstimator, LoopEstimator,
                                         ProjectedEstimator, VmapEstimator, cosine, directional, flatten,
                                         make_estimator, trainable_params, unflatten, weighted_mean)

__all__ = ["ESTIMATORS", "CountSketch", "Features", "HooksEstimator", "LoopEstimator", "ProjectedEstimator",
           "VmapEstimator", "cosine", "directional", "flatten", "make_estimator", "trainable_params",
           "unflatten", "weighted_mean"]
