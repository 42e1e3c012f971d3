"""Launched by tests/test_distributed.py under torchrun (one process per rank):

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/_dist_run.py RUNS_DIR \
        [--fail-rank R --fail-step S] -- "method=sft ..." "method=dualselect ..."

runs each quoted set of overrides as one run, in turn, through the same entry point as
`explorer run` (explorer.cli.main), in the same torchrun job, so that several short runs pay for one
start. --fail-rank/--fail-step make that rank's method raise at that step (a failure on one rank)."""

import argparse
import os
import sys

import torch

torch.set_num_threads(1)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("runs_dir")
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-step", type=int, default=-1)
    p.add_argument("--resume", default="")
    p.add_argument("runs", nargs="*")
    a = p.parse_intermixed_args()
    if a.fail_rank == int(os.environ.get("RANK", "0")):
        from explorer.train import recipe

        real = recipe.Recipe.step

        def failing(self, batch):
            if self.step_no == a.fail_step:
                raise RuntimeError(f"injected failure at step {a.fail_step}")
            return real(self, batch)

        recipe.Recipe.step = failing
    from explorer.cli import main as cli

    if a.resume:
        return cli(["run", "--resume", a.resume])
    # one process group for all the runs of this job (each run reuses it and leaves it open)
    import datetime

    import torch.distributed as td

    if len(a.runs) == 1:   # the recipe opens and closes the process group itself, as under `explorer run`
        return cli(["run", f"runs_dir={a.runs_dir}", *a.runs[0].split()])
    td.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    try:
        for spec in a.runs:
            rc = cli(["run", f"runs_dir={a.runs_dir}", *spec.split()])
            if rc:
                return rc
    finally:
        td.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
