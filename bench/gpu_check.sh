#!/usr/bin/env bash
# The checks that need CUDA, in one run (issue 14; BENCHMARKS.md "On a GPU"): the gpu-marked tests (every
# training loop's resume with AMP on CUDA under deterministic kernels, Free Mask and the top-k Matrix NMS on
# CUDA), bench/mfu.py on CUDA at the demo's sizes and at configs/coco-full.yaml's (MFU against the measured
# fp16 peaks; bf16 peaks printed too), and SOLO with and without the batch prefetch thread. Logs go to $OUT
# (default /tmp/maskless-gpu). From the repository root:
#     bash bench/gpu_check.sh                     # every section; PY=.venv/bin/python with a venv
#     ONLY="tests mfu_coco" bash bench/gpu_check.sh  # some of: tests mfu mfu_coco prefetch
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
exit $status
