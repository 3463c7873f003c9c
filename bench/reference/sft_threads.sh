#!/bin/bash
# Does the thread count change a stage's bytes? SFT's first 150 steps of the default, run by hand at
# --threads 1 and --threads 2 on a finished default run's data and base model, files compared byte for byte.
# usage: bash bench/reference/sft_threads.sh <a default run's results/default> <scratch dir>
set -euo pipefail
results=$1 scratch=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$scratch"
"$root/.venv/bin/python" - "$root" > "$scratch/cfg.json" <<'PY'
import json, sys
sys.path.insert(0, f"{sys.argv[1]}/src")
from podyn import registry
from podyn.config import load_config
cfg = json.loads(registry.stage_config(load_config(f"{sys.argv[1]}/config.yaml"), "sft"))
cfg["sft"]["max_steps"] = 150
print(json.dumps(cfg))
PY
for t in 1 2; do
  rm -rf "$scratch/out$t" "$scratch/work$t"
  /usr/bin/time -f "threads $t: %e s wall, %U s user" "$root/.venv/bin/podyn" sft --config "$(cat "$scratch/cfg.json")" \
    --threads $t --data "$results/data" --base "$results/models/base" --out "$scratch/out$t" --workdir "$scratch/work$t" \
    > "$scratch/log$t" 2>&1 || { tail "$scratch/log$t"; exit 1; }
  tail -1 "$scratch/log$t"
done
for f in "$scratch"/out1/*; do
  if cmp -s "$f" "$scratch/out2/$(basename "$f")"; then echo "same    $(basename "$f")"; else echo "differs $(basename "$f")"; fi
done
