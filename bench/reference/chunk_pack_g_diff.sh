#!/bin/bash
# The tiny test config's DAG with and without chunked + packed log-probs, then their differences.
# usage: bash bench/reference/chunk_pack_g_diff.sh OUT   (from the repository root; about 2 minutes)
set -euo pipefail
out=$1
mkdir -p "$out"
.venv/bin/python - "$out" <<'PY'
import sys, yaml
c = yaml.safe_load(open("tests/configs/tiny.yaml"))
open(f"{sys.argv[1]}/tiny_plain.yaml", "w").write(yaml.safe_dump(c, sort_keys=False))
c["trainer"].update(logps_chunk_tokens=16, pack_sequences=True)
open(f"{sys.argv[1]}/tiny_pack.yaml", "w").write(yaml.safe_dump(c, sort_keys=False))
PY
for v in plain pack; do
  .venv/bin/python bench/pipeline.py --config "$out/tiny_$v.yaml" --out "$out/tiny_$v" > "$out/tiny_$v.log" 2>&1
done
.venv/bin/python scripts/compare_results.py "$out/tiny_plain/results/tiny" "$out/tiny_pack/results/tiny" --ignore 'logs/warm_start/*' | grep -v '^differs: work/'
.venv/bin/python bench/reference/chunk_pack_g_diff.py "$out/tiny_plain/results/tiny" "$out/tiny_pack/results/tiny"
