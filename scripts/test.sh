#!/usr/bin/env bash
# Set up .venv (if needed), lint, and run the test suite offline. Arguments go to pytest,
# e.g. `bash scripts/test.sh tests/test_config.py -k schema`.
case "${1:-}" in -h | --help) sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,bench,slurm  # bench: trl, for the DPO parity test; slurm: the Slurm executor plugin
.venv/bin/python -m ruff check .  # rules in pyproject.toml [tool.ruff]
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
