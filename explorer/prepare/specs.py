"""Model specs -> local checkpoint folders, preparing a world's models on first use.

  "tiny:aligned", "tiny:base"   the tiny world's models (explorer/prepare/tiny.py; cached)
  "tiny:aligned@1"              the same from an independent preparation (`explorer prepare --seed 1`)
  "smollm2:base", "smollm2:aligned"   SmolLM2-135M-Instruct, with the committed alignment adapter
                                merged in for `aligned` (explorer/model/smollm2.py)
  "/path/to/checkpoint"         a local HF directory with config.json, weights and a tokenizer

`load_model(resolve_spec(spec), ...)` (explorer/model/load.py) loads what a spec names.
"""

from __future__ import annotations

from pathlib import Path

from explorer.model.load import ModelLoadError, checkpoint_dir


def resolve_spec(spec: str) -> Path:
    """Turn a model spec into a local directory (preparing the tiny models if needed)."""
    if spec.startswith("tiny:"):
        from explorer.prepare import tiny

        which, _, seed = spec.split(":", 1)[1].partition("@")
        if which not in ("base", "aligned") or (seed and not seed.isdigit()):
            raise ModelLoadError(f"model spec {spec!r}: expected tiny:base or tiny:aligned, optionally "
                                 "with @SEED for an independent preparation (e.g. tiny:aligned@1)")
        paths = tiny.ensure_prepared(seed=int(seed or 0))
        return Path(paths[which])
    if spec.startswith("smollm2:"):
        from explorer.model import smollm2

        which = spec.split(":", 1)[1]
        if which not in ("base", "aligned"):
            raise ModelLoadError(f"model spec {spec!r}: expected smollm2:base or smollm2:aligned")
        try:
            paths = smollm2.prepare()
        except smollm2.WorldNotInstalled as e:
            raise ModelLoadError(f"model spec {spec!r}: {e}") from None
        if which not in paths:
            raise ModelLoadError(f"model spec {spec!r}: no alignment adapter in {smollm2.ADAPTER_DIR}; expected "
                                 "the committed one (python -m explorer.prepare.smollm2_align writes it)")
        return Path(paths[which])
    return checkpoint_dir(spec)
