#!/usr/bin/env bash
# Every GPU check of podyn in one or two device calls (H100/H200, no network there).
#
# Here, once: fetch the wheels the GPU image lacks and stage the HH-RLHF file beside them
# (both ignored by git; they travel through `carry`):
#     bash bench/device_session.sh fetch
# Then, on the device (each part prints a table and leaves its logs under $OUT):
#     run(command="bash bench/device_session.sh speed", carry=[".whl", ".gpudata"], timeout_s=420)
#     run(command="bash bench/device_session.sh scale", carry=[".whl", ".gpudata"], timeout_s=420)
#
# speed: issue 11 on the GPU: bench/trl_dpo.py (Pythia-1.4B architecture, bf16, real HH-RLHF
#        pairs, 4 per step, TRL with precomputed reference vs podyn chunked + packed, isolated
#        processes), then bench/dynamics_cost.py (G's cost against a training step, DPO and
#        PPO, Pythia-410M architecture, $DYN_DTYPE weights, default bfloat16).
# dynamics: bench/dynamics_cost.py alone, float32 and bfloat16 weights.
# synthetic: bench/trl_dpo.py on 8 x 512 synthetic tokens, TRL (reference forward each step and
#        precomputed) and podyn chunked + packed, in one process, no parity.
# scale: issue 9 on the GPU: bench/multi_gpu.sh over the GPUs present (ddp and fsdp, a
#        Pythia-2.8B-shaped model: peak GPU memory and wall time of SFT and DPO).
# paper: issue 7 on the GPU: bench/paper_gpu.py (the paper config's whole DAG at Pythia-410M
#        size on the offline fixtures, through Snakemake's gpu profile).
# all:   speed, then scale, in one call (timeout_s=560).
set -uo pipefail
cd "$(dirname "$0")/.."
HH_STAGED=.gpudata/harmless-base-test.jsonl.gz

fetch() {
    # The closure of podyn's and the benches' dependencies minus what the GPU image has.
    local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    rm -rf .whl && mkdir -p .whl .gpudata
    local pkg
    for pkg in $(grep -v '^#' bench/device_wheels.txt); do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d .whl "$pkg" 2>/dev/null \
            || python3 -m pip wheel -q --no-deps -w .whl "$pkg"  # pure-Python packages published as sdists only
    done
    cp ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz "$HH_STAGED"
    du -sh .whl .gpudata
}

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || return 2
    mkdir -p /tmp/bin
    printf '#!/bin/sh\nexec python3 -m podyn.cli "$@"\n' > /tmp/bin/podyn && chmod +x /tmp/bin/podyn
    export PATH="/tmp/bin:$PATH" PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
        HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PODYN=/tmp/bin/podyn PY=python3
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import torch, transformers, lightning, trl, pydantic, snakemake, podyn.cli
print("torch", torch.__version__, "transformers", transformers.__version__, "lightning", lightning.__version__,
      "trl", trl.__version__, "cuda", torch.cuda.get_device_name())' || return 2
}

speed() {
    local status=0
    echo "== trl_dpo: Pythia-1.4B architecture, bf16, HH-RLHF 4 pairs/step, TRL precomputed vs podyn chunked + packed"
    timeout "${TRL_DPO_TIMEOUT:-240}" python3 bench/trl_dpo.py --device cuda --model-size pythia-1.4b --pairs 4 --max-tokens 1024 --bf16 \
        --steps 20 --warmup 3 --data hh-rlhf --hh-file "$HH_STAGED" --chunk-tokens 1024 --pack --max-grad-norm 1.0 \
        --isolate --trl-only-precomputed ${TRL_DPO_EXTRA:-} --out /tmp/dev/trl_dpo 2>&1 | grep -v -i warn | tee "$OUT/trl_dpo_h.log" || status=1
    dynamics "${DYN_DTYPE:-bfloat16}" || status=1
    return $status
}

dynamics() {  # dtypes (default: float32 bfloat16)
    local status=0 dtype dtypes=("$@")
    [ $# -gt 0 ] || dtypes=(float32 bfloat16)
    for dtype in "${dtypes[@]}"; do
        echo "== dynamics_cost: G (6 components) against one training step, Pythia-410M architecture, $dtype"
        timeout "${DYN_TIMEOUT:-120}" python3 bench/dynamics_cost.py --size pythia-410m --device cuda --dtype "$dtype" \
            --batch 16 --list-len 120 --repeats 3 2>&1 | grep -v -i warn | tee -a "$OUT/dynamics_cost.txt" || status=1
    done
    return $status
}

synthetic() {
    echo "== trl_dpo: 8 x 512 synthetic tokens, Pythia-1.4B architecture, bf16, podyn chunked + packed, all three implementations"
    timeout 150 python3 bench/trl_dpo.py --device cuda --model-size pythia-1.4b --pairs 8 --seq-len 512 --bf16 --steps 20 \
        --warmup 3 --chunk-tokens 1024 --pack --max-grad-norm 1.0 --skip-parity --out /tmp/dev/trl_dpo_synthetic 2>&1 \
        | grep -v -i warn | tee "$OUT/trl_dpo_synthetic.log"
}

scale() {
    local status=0 gpus
    gpus=$(nvidia-smi -L | wc -l)
    echo "== multi_gpu: Pythia-2.8B shape, ddp and fsdp over $gpus GPU(s)"
    timeout 300 bash bench/multi_gpu.sh "$gpus" /tmp/dev/multi_gpu /tmp/dev/multi_gpu_work 2>&1 | tee "$OUT/multi_gpu.md" || status=1
    return $status
}

paper() {
    local status=0
    echo "== paper_gpu: the paper config's DAG, Pythia-410M architecture, offline fixtures"
    timeout "${PAPER_TIMEOUT:-420}" python3 bench/paper_gpu.py "$HH_STAGED" --size 410m --out /tmp/dev/paper_gpu 2>&1 \
        | tee "$OUT/paper_gpu.md" || status=1
    tail -40 /tmp/dev/paper_gpu/snakemake.log > "$OUT/paper_gpu_snakemake_tail.log" 2>/dev/null
    return $status
}

case "${1:-}" in
    fetch) fetch ;;
    speed | dynamics | synthetic | scale | paper | all)
        OUT="${OUT:-bench/out/device}"; mkdir -p "$OUT" /tmp/dev
        if [ "$1" = all ]; then parts=(speed scale); else parts=("$1"); fi
        { setup && for part in "${parts[@]}"; do "$part"; done; } 2>&1 | tee "$OUT/device_$1.log"
        exit "${PIPESTATUS[0]}" ;;
    *) echo "usage: bash bench/device_session.sh fetch|speed|dynamics|synthetic|scale|paper|all"; exit 2 ;;
esac
