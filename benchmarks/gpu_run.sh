#!/usr/bin/env bash
# The quality benchmark on a lent GPU machine (torch + transformers + sentence-transformers, no internet), one
# process a collection, side by side, in one command. Build the bundle here first (ignored by git, about 50 MiB):
#   .venv/bin/python benchmarks/gpu_bundle.py
# then carry `.gpu` and run, on the machine, with its output folder in $OUT:
#   bash benchmarks/gpu_run.sh [COLLECTIONS] [quality.py options...]
#   e.g. bash benchmarks/gpu_run.sh scifact,cranfield,cisi,medline --tune-bi-encoder --distill
# Each collection writes $OUT/quality-NAME.json and $OUT/quality-NAME.log (8 files for the four collections).
# BUDGET (seconds, default 420) stops starting new folds; every process is killed at BUDGET + 60 s, so the command
# ends within 8 minutes; a process cut short still leaves its JSON of the folds done ("finished": false).
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/finerank-gpu}
BUDGET=${BUDGET:-420}
COLLS=${1:-scifact,cranfield,cisi,medline}
shift || true
mkdir -p "$OUT" /tmp/fr-gpu/data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fr-gpu/site .gpu/whl/*.whl \
  || exit 3
tar -xJf .gpu/data.tar.xz -C /tmp/fr-gpu/data || exit 3
# the backbone travels in fp16 (64 MiB a call): widen it to fp32 here, the weights finerank starts from
python3 - <<'EOF' || exit 4
import shutil, torch
from safetensors.torch import load_file, save_file
shutil.copytree(".gpu/minilm", "/tmp/fr-gpu/minilm", dirs_exist_ok=True)
w = load_file(".gpu/minilm/model.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, "/tmp/fr-gpu/minilm/model.safetensors",
          metadata={"format": "pt"})
print(f"backbone widened to fp32: {len(w)} tensors")
EOF
export PYTHONPATH=/tmp/fr-gpu/site:$PWD FINERANK_MINILM_L6=/tmp/fr-gpu/minilm HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, sentence_transformers, datasets, bm25s, ir_measures; print(torch.__version__, transformers.__version__, sentence_transformers.__version__)" \
  || exit 4
pids=()
for c in ${COLLS//,/ }; do
  timeout -s INT $((BUDGET + 60)) python3 benchmarks/quality.py --data /tmp/fr-gpu/data --collections "$c" \
    --budget-seconds "$BUDGET" --out "$OUT/quality-$c.json" "$@" > "$OUT/quality-$c.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
echo "total $(( $(date +%s) - T0 ))s, last failing exit status $rc"
tail -n 3 "$OUT"/quality-*.log
exit $rc
