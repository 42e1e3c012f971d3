"""Shared fixtures. The tiny models are prepared once per machine (cached under $EXPLORER_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: settings of a short run on the tiny model (seconds, not minutes)
SHORT_RUN = ["n_train=64", "epochs=1", "batch_size=16", "final_eval_n=16", "eval_n=8", "eval_every=2",
             "flush_every=1", "progress=false", "eval_max_new_tokens=12"]


@pytest.fixture(scope="session")
def tiny_paths():
    from explorer.model import tiny

    return tiny.ensure_prepared()


@pytest.fixture
def short_config(tmp_path, tiny_paths):
    """Build a RunConfig for a short tiny-model run: short_config("method=random", "seed=1")."""
    from explorer.config import load_config

    def make(*overrides, config=None):
        return load_config(config, [f"runs_dir={tmp_path / 'runs'}", *SHORT_RUN, *overrides])

    return make
