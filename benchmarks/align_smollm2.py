"""Align SmolLM2-135M-Instruct once (the smollm2 world's committed LoRA adapter).

The script lives in the package so that `explorer prepare --world smollm2 --retrain` can run it;
this file keeps the benchmarks/ entry point:

    nice -n 19 python benchmarks/align_smollm2.py --out runs/align_smollm2    # = python -m explorer.prepare.smollm2_align
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.prepare.smollm2_align import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
