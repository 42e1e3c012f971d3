"""Where `run` and `resume` were first written; the recipe (explorer/train/recipe.py) now holds them.
Kept so that `from explorer.train.loop import run` in notebooks and scripts keeps working."""

from explorer.train.recipe import (CHECKPOINT, Recipe, Terminated, get_lr, load_checkpoint,  # noqa: F401
                                   make_run_id, resume, run)
