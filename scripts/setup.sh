#!/usr/bin/env bash
# Create .venv and install podyn with its pinned dependencies (torch 2.13.0, CPU build where
# pip finds it). Extra arguments are pip extras, e.g. `scripts/setup.sh dev,bench`.
case "${1:-}" in -h | --help) sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]" "torch==2.13.0" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import podyn, torch, snakemake; print('podyn ready: torch', torch.__version__)"
