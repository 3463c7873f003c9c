#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,bench,slurm  # bench: trl, for the DPO parity test; slurm: the Slurm executor plugin
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
