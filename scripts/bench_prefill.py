#!/usr/bin/env python
"""Thin alias of ``seats-exp mode=bench`` (docs/benchmarks.md); arguments are Hydra overrides.

    python scripts/bench_prefill.py                                # bench=cpu_scaled, every method
    python scripts/bench_prefill.py bench=tiny                     # seconds
    python scripts/bench_prefill.py bench=gpu_qwen2_5_omni_7b      # on a GPU
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    from seats_exp.cli import main

    preset = [] if any(a.startswith("bench=") for a in sys.argv[1:]) else ["bench=cpu_scaled"]
    sys.argv = [sys.argv[0], "mode=bench", *preset, *sys.argv[1:]]
    main()
