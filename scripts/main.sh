#!/usr/bin/env bash
# The main job: set up, then compare full tokens, Random and SEATS at R=10 on the embedded default
# (tiny random Qwen2.5-Omni, synthetic benchmark), and print the comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
sweep_dir="outputs/main/$(date +%Y-%m-%d_%H-%M-%S)"
mkdir -p outputs/main
echo "seats-exp main job: 3 runs (full_tokens, random, seats at R=10); log in $sweep_dir.log"
.venv/bin/seats-exp -m method=full_tokens,random,seats schedule=r10 eval.progress=false \
  hydra.sweep.dir="$sweep_dir" "$@" > "$sweep_dir.log" 2>&1 \
  || { tail -n 40 "$sweep_dir.log" >&2; exit 1; }
echo
echo "== seats-exp main job: tiny Qwen2.5-Omni on the synthetic set, R=10 =="
.venv/bin/seats-exp-report "$sweep_dir" --out "$sweep_dir/report"
echo "output folder: $sweep_dir (one sub-folder per run: config.yaml, result.json, samples.jsonl; log: $sweep_dir.log)"
