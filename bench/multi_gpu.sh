#!/usr/bin/env bash
# Peak GPU memory and wall time of SFT and DPO steps with a Pythia-2.8B-shaped model
# (hidden 2560, 32 layers, 32 heads, built from scratch on the synthetic task: no hub needed)
# under trainer.strategy ddp and fsdp on the GPUs of one machine. Prints one table row per
# (stage, strategy); GPU memory is sampled with nvidia-smi every 200 ms (the maximum over
# the GPUs). The synthetic task's sequences are short, so this measures weights, gradients
# and optimiser state, not the activations of the paper's 1024-token sequences. Wall time is the whole
# command: start-up, model load, 10 steps and the final Lightning checkpoint (weights and AdamW state).
#
#   bash bench/multi_gpu.sh [N_GPUS] [OUT] [WORK]   # e.g. bash bench/multi_gpu.sh 4 bench/reference/multi_gpu
# OUT (small: config, logs, nvidia-smi samples, table.md) defaults to bench/reference/multi_gpu; WORK holds
# the large files (data, the 2.8B-shaped model, about 10 GB per saved model, work directories) and defaults
# to $TMPDIR/podyn-multi-gpu. N_GPUS may be 1: `ddp` and `fsdp` then run one process (FSDP's wrapping and
# full-state gathering, without sharding), which measures the one-GPU footprint. STRATEGIES="fsdp" (default
# "ddp fsdp") measures only those strategies; MG_ARCH (a YAML mapping) shrinks the model for a quick check. The table is written row by row to OUT/table.md, so a run
# stopped by a time limit keeps the rows it finished.
case "${1:-}" in -h | --help) sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=${1:-$(nvidia-smi -L | wc -l)}
out=${2:-bench/reference/multi_gpu}
work=${3:-${TMPDIR:-/tmp}/podyn-multi-gpu}
mkdir -p "$out" "$work"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
py=${PY:-.venv/bin/python}  # the GPU box of bench/device_session.sh has no venv: it sets PY and PODYN
podyn=${PODYN:-.venv/bin/podyn}

cat > "$out/config.yaml" <<EOF
experiment: multi_gpu
results_dir: $work/results
model:
  init: scratch
  arch: ${MG_ARCH:-{hidden_size: 2560, num_layers: 32, num_heads: 32, max_position_embeddings: 64\}}
trainer: {accelerator: gpu, precision: bf16-mixed, checkpoint_every_n_steps: 1000, log_every_n_steps: 5}
sft: {lr: 1.0e-5, batch_size: 64, max_steps: 10}
dpo: {lr: 5.0e-7, batch_size: 64, max_steps: 10, checkpoint_every: 0, eval_every: 0}
runs: {dpo: {objective: dpo}}
select: [dpo]
EOF
data="$work/data"; base="$work/base"
[ -d "$data" ] || $podyn prepare-data --config "$out/config.yaml" --out "$data"
[ -d "$base" ] || $podyn base-model --config "$out/config.yaml" --out "$base"
[ -f "$work/ref_logps.pt" ] || $podyn reference-logps --config "$out/config.yaml" --data "$data" --sft "$base" \
    --out "$work/ref_logps.pt"

measure() {  # name, then the command; prints "name | wall s | peak GPU MiB"
    local name=$1; shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/$name.smi" &
    local smi=$!
    local start=$(date +%s.%N)
    "$@" > "$out/$name.log" 2>&1 || { echo "$name failed: the end of $out/$name.log:"; tail -n 30 "$out/$name.log"; }
    local end=$(date +%s.%N)
    kill "$smi"
    local peak=$(sort -n "$out/$name.smi" | tail -1)
    printf "| %-22s | %8.1f | %14s |\n" "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$peak"
}

{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -"$gpus" | sed 's/^/# GPU: /'
echo "| run                    |   wall s | peak GPU MiB   |"
echo "|------------------------|----------|----------------|"
for strategy in ${STRATEGIES:-ddp fsdp}; do
    overlay="{\"trainer\": {\"strategy\": \"$strategy\", \"devices\": $gpus}}"
    $py - "$out/config.yaml" "$overlay" "$out/$strategy.yaml" <<'EOF'
import json, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1])); overlay = json.loads(sys.argv[2])
cfg["trainer"].update(overlay["trainer"]); yaml.safe_dump(cfg, open(sys.argv[3], "w"))
EOF
    rm -rf "$work/work_$strategy" "$work/sft_$strategy" "$work/dpo_$strategy"
    measure "sft_${strategy}_x$gpus" $podyn sft --config "$out/$strategy.yaml" --data "$data" --base "$base" \
        --out "$work/sft_$strategy" --workdir "$work/work_$strategy/sft"
    # the SFT model and its last.ckpt (weights and AdamW state, about 40 GB) are not needed by DPO (it starts
    # from the base model): free the disk before DPO writes its own
    rm -rf "$work/work_$strategy/sft" "$work/sft_$strategy"
    measure "dpo_${strategy}_x$gpus" $podyn train --config "$out/$strategy.yaml" --run dpo --seed 0 --data "$data" \
        --sft "$base" --reward "$base" --ref-logps "$work/ref_logps.pt" --workdir "$work/work_$strategy/dpo" \
        --generations "$work/dpo_$strategy/g.jsonl" --checkpoints "$work/dpo_$strategy/c.json" \
        --records "$out/dpo_$strategy/records.csv" --metrics "$out/dpo_$strategy/metrics.csv" \
        --timing "$out/dpo_$strategy/timing.csv"
    rm -rf "$work/work_$strategy"  # DPO's last.ckpt: keep the disk for the next strategy
done
} | tee "$out/table.md"
