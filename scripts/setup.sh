#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system tools, a virtual environment in .venv, and the
# pinned Python packages (constraints.txt). Re-running it is a no-op once the stamp matches.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg slurmctld slurmd slurm-client munge slurmdbd mariadb-server chromium)
missing=()
for tool in ffmpeg slurmctld slurmd munged slurmdbd mariadbd chromium; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages (${APT_PACKAGES[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  else
    echo "setup: missing system tools: ${missing[*]} (install ffmpeg; slurm, munge, slurmdbd and mariadb are only needed for the SLURM tests, chromium for the report screenshot test)" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp_value=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp_value" ]; then
  echo "setup: installing Python packages into .venv (first time: a few minutes)"
  # --isolated: use the package index only; a local CPU torch wheel cannot run torchvision,
  # the index's CUDA builds of torch/torchvision run fine on CPU (see README).
  .venv/bin/pip --isolated install -q --upgrade pip
  .venv/bin/pip --isolated install -q -c constraints.txt -e ".[test]"
  .venv/bin/pip --isolated check
  echo "$stamp_value" > .venv/.setup-stamp
fi
