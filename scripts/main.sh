#!/usr/bin/env bash
# The main job: set up, then compare every registered method at R=35 on the embedded default
# (tiny random Qwen2.5-Omni, synthetic benchmark), and print the comparison table.
# R=35 is the budget every method can reach (OmniZip: video retention 0.25-0.65; DyCoke's TTM:
# >= 0.25, here with its dynamic pruning in prefill as in the paper's DyCoke row).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
stamp="$(date +%Y-%m-%d_%H-%M-%S)"
sweep_dir="outputs/main/$stamp"
mkdir -p outputs/main
methods=$(.venv/bin/python -c "import methods; print(','.join(m for m in methods.available() if m != 'dycoke'))")
echo "seats-exp main job: every method at R=35 ($methods, dycoke); log in $sweep_dir.log"
.venv/bin/seats-exp -m "method=$methods" schedule=r35 eval.progress=false \
  hydra.sweep.dir="$sweep_dir/methods" "$@" > "$sweep_dir.log" 2>&1 \
  || { tail -n 40 "$sweep_dir.log" >&2; exit 1; }
.venv/bin/seats-exp -m method=dycoke method.dp_in_prefill=true schedule=r35 eval.progress=false \
  hydra.sweep.dir="$sweep_dir/dycoke" "$@" >> "$sweep_dir.log" 2>&1 \
  || { tail -n 40 "$sweep_dir.log" >&2; exit 1; }
echo
echo "== seats-exp main job: tiny Qwen2.5-Omni on the synthetic set, R=35 =="
.venv/bin/seats-exp-report "$sweep_dir/methods" "$sweep_dir/dycoke" --out "$sweep_dir/report"
echo "output folder: $sweep_dir (one sub-folder per run: config.yaml, result.json, samples.jsonl; log: $sweep_dir.log)"
