#!/usr/bin/env bash
# G's cost against a training step on a lent GPU, Pythia-410M architecture (random weights),
# float32 and bfloat16 weights. One device call after `bash bench/gpu.sh fetch`:
#     run(command="bash bench/gpu_dynamics.sh", carry=[".whl"], timeout_s=300)
set -u
cd "$(dirname "$0")/.."
out="${OUT:-bench/out/gpu}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
for dtype in float32 bfloat16; do
    timeout 100 python3 bench/dynamics_cost.py --size pythia-410m --device cuda --dtype "$dtype" --batch 16 --list-len 120 --repeats 3 2>&1 \
        | grep -v Warning | tail -12 | tee -a "$out/dynamics_cost.txt"
done
