"""per_sample_nll lives in explorer/model/losses.py (below model, scoring and methods); re-exported
for old imports (notebooks)."""

from explorer.model.losses import model_nll, per_sample_nll  # noqa: F401
