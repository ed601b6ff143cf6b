#!/usr/bin/env bash
# The checks that need CUDA, in one run (issue 14; BENCHMARKS.md "On a GPU"): the gpu-marked tests (every
# training loop's resume with AMP on CUDA under deterministic kernels, Free Mask and the top-k Matrix NMS on
# CUDA), bench/mfu.py on CUDA at the demo's sizes and at configs/coco-full.yaml's (MFU against the measured
# fp16 peaks; bf16 peaks printed too), SOLO with and without the batch prefetch thread, and (not by default)
# SOLO at configs/coco-full.yaml's sizes with and without 12 batch-building worker processes, 60 steps (the
# fifth session's 10 steps were inconclusive: the workers' start-up was as long as the run). Logs go to $OUT
# (default /tmp/maskless-gpu). One device call runs at most 10 minutes: pick sections with ONLY. From the
# repository root:
#     bash bench/gpu_check.sh                     # the default sections; PY=.venv/bin/python with a venv
#     ONLY="tests mfu_coco" bash bench/gpu_check.sh  # some of: tests mfu mfu_coco prefetch workers
set -uo pipefail
OUT=${OUT:-/tmp/maskless-gpu}
PY=${PY:-python3}
THREADS=${THREADS:-8}
ONLY=${ONLY:-tests mfu mfu_coco prefetch}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
want() { [[ " $ONLY " == *" $1 "* ]] && echo "== $1"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$OUT/gpu.txt"
if want tests; then
    timeout 150 "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" || status=1
fi
if want mfu; then
    timeout 200 "$PY" bench/mfu.py --device cuda --threads "$THREADS" --steps 20 2>&1 | tee "$OUT/mfu.log" || status=1
fi
if want mfu_coco; then
    timeout 300 "$PY" bench/mfu.py --device cuda --threads "$THREADS" --steps 10 --images 32 \
        --config configs/coco-full.yaml 2>&1 | tee "$OUT/mfu_coco.log" || status=1
fi
if want prefetch; then
    timeout 100 "$PY" bench/solo_train.py --device cuda --threads "$THREADS" --steps 40 --compare-prefetch 2>&1 \
        | tee "$OUT/prefetch.log" || status=1
fi
if want workers; then
    timeout 420 "$PY" bench/solo_train.py --device cuda --threads "$THREADS" --config configs/coco-full.yaml \
        --steps 60 --compare-workers 12 2>&1 | tee "$OUT/workers.log" || status=1
fi
exit $status
