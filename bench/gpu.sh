#!/usr/bin/env bash
# The TRL peer comparison on a lent GPU (H100/H200), in one call of a few minutes.
#
# Here, once (needs PyPI; ~15 MB into .whl/, which .gitignore excludes):
#     bash bench/gpu.sh fetch
# Then one device call:
#     run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=540)
#
# The GPU box has no network. Its image already holds torch, accelerate, lightning,
# huggingface-hub, tokenizers, safetensors, pyarrow, pandas, xxhash (KINDS.md); it lacks
# trl, datasets and datasets' dill and multiprocess, which travel as wheels. transformers
# travels too, so that the box runs the version tested here (its image has 5.17). podyn
# itself comes from src/ on PYTHONPATH; nothing is downloaded and no model is loaded from a
# hub (the Pythia size is Pythia's architecture with random weights).
#
# It runs bench/trl_dpo.py with Pythia-1.4B's architecture, bf16 autocast (parity float32):
#   1. issue 11's acceptance run: HH-RLHF pairs (4 per step; $HH_FILE, default the shared
#      harmless-base test split beside the checkout; synthetic 512-token pairs when absent), TRL with
#      precomputed reference log-probs against podyn chunked + packed, each in its own subprocess
#      (peak GPU memory each); the last line printed is `speedup <ratio> memory <ratio>`;
#   2. bench/dynamics_cost.py: G's cost (DPO and PPO) against a training step, Pythia-410M, bf16;
#   3. the earlier 8 x 512-token synthetic comparison (all three implementations, one process).
# Output: printed, and under $OUT (hh/, main/, gpu.log, dynamics_cost.txt) when $OUT is set,
# else under bench/out/gpu/. bench/device_session.sh supersedes it (one call, the paper-setting wheels too).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0)

fetch() {
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" || return 1
    ls -l .whl && du -sh .whl
}

install() {
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run 'bash bench/gpu.sh fetch' here and carry .whl"; return 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

report_environment() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c '
import importlib, torch
for name in ("torch", "transformers", "trl", "datasets", "accelerate", "lightning", "pyarrow", "tokenizers", "huggingface_hub", "triton"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:  # list every missing piece before failing
        print(name, "MISSING:", err)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
import podyn.training.dpo, trl  # fail here, not minutes in
'
}

run_all() {
    local common=(--device cuda --model-size pythia-1.4b --pairs 8 --seq-len 512 --bf16 --steps 20 --warmup 3)
    local hh_file="${HH_FILE:-../shared/data/hh-rlhf/harmless-base-test.jsonl.gz}" data=(--data hh-rlhf --hh-file "$hh_file")
    [ -f "$hh_file" ] || { echo "no $hh_file: step 1 uses synthetic 512-token pairs"; data=(--data synthetic --seq-len 512); }
    local fast=(--chunk-tokens 1024 --pack --max-grad-norm 1.0)
    local status=0
    echo "== install (offline, from .whl/)"
    install || return 2
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    echo "== environment"
    report_environment || return 2
    echo "== 1/3: HH-RLHF, 4 pairs per step: parity (float32), then TRL precomputed vs podyn chunked + packed (bf16), isolated"
    timeout 240 python3 bench/trl_dpo.py --device cuda --model-size pythia-1.4b --pairs 4 --max-tokens 1024 --bf16 --steps 20 --warmup 3 \
        "${data[@]}" "${fast[@]}" --isolate --trl-only-precomputed --out "$out/hh" || status=$?
    echo "== 2/3: cost of G (6 components) against one training step, DPO and PPO, Pythia-410M architecture, bf16 weights"
    timeout 120 python3 bench/dynamics_cost.py --size pythia-410m --device cuda --dtype bfloat16 --batch 16 --list-len 120 --repeats 3 \
        | tee "$out/dynamics_cost.txt" || status=$?
    echo "== 3/3: 8 x 512 synthetic tokens, podyn chunked + packed, all three implementations, no parity"
    timeout 150 python3 bench/trl_dpo.py "${common[@]}" "${fast[@]}" --skip-parity --out "$out/main" || status=$?
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
    echo "== done (exit $status)"
    return "$status"
}

if [ "${1:-}" = fetch ]; then
    fetch
    exit $?
fi
out="${OUT:-bench/out/gpu}"
mkdir -p "$out/main" "$out/hh"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
run_all 2>&1 | tee "$out/gpu.log"
exit "${PIPESTATUS[0]}"
