#!/usr/bin/env bash
# The first GPU numbers of wsol-jax in one command (about 8 minutes on one H100):
#
#   bash benchmarks/gpu_check.sh OUTDIR            # the paper's sizes: batch 128, 224 px
#   bash benchmarks/gpu_check.sh OUTDIR --small    # tiny sizes, any machine (CPU: tested in the suite)
#
# Prints and writes to OUTDIR/gpu_check.txt: the device, benchmarks/throughput.py in bfloat16 and
# float32 (f, g Method I, g Method II, map inference: ms/step, images/s, MFU, peak memory; a real
# epoch's share of the bare step; the input pipeline alone, raw and JPEG cache), the evaluation's contour work
# (benchmarks/eval_speed.py), and the synthetic demo's wall time end to end.
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUTDIR [--small]}
SMALL=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
: > "$LOG"
cd "$HERE"
say() { echo "$@" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" 2>&1 | { grep -v -i "warning" || true; } | tee -a "$LOG"; }

say "# wsol-jax gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi > /dev/null; then
  run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
run python -c "import jax; print('jax', jax.__version__, jax.devices())"

if [ "$SMALL" = "--small" ]; then
  BATCH=6; SIZE=32; STEPS=2; WARM=1; MAPS=8; DTYPES="float32"
  NET="--config.f.width=0.125 --config.g.width=0.125 --config.f.embed_dim=8"
  DEMO="--config.data.num_train=24 --config.data.num_val=8 --config.data.num_test=8 --config.data.image_size=32
        --config.data.crop_size=32 --config.data.num_classes=4 --config.f.width=0.125 --config.f.max_epochs=1
        --config.f.batch_size=8 --config.f.allow_weak=True --config.g.width=0.125 --config.g.max_epochs=1
        --config.g.batch_size=8 --config.eval.batch_size=8 --config.eval.max_coverage=1.0"
else
  BATCH=128; SIZE=224; STEPS=20; WARM=3; MAPS=200; DTYPES="bfloat16 float32"
  NET=""
  DEMO=""
fi

for DTYPE in $DTYPES; do
  # shellcheck disable=SC2086
  run python benchmarks/throughput.py --config=configs/cub.py:method1 --config.dtype="$DTYPE" $NET \
      --batch="$BATCH" --size="$SIZE" --steps="$STEPS" --warmup="$WARM" \
      --what=f,g_method1,g_method2,maps,epoch,input
done
# the input pipeline alone from a JPEG record cache (the ImageNet config's codec: decode per read)
run python benchmarks/throughput.py --config=configs/cub.py:method1 $NET --batch="$BATCH" --size="$SIZE" \
    --steps="$STEPS" --warmup="$WARM" --what=input --codec=jpeg
run python benchmarks/eval_speed.py --maps="$MAPS"
START=$(date +%s)
# shellcheck disable=SC2086
run python main.py --config=configs/synthetic.py:method1 --workdir="$OUT/demo" $DEMO
say "synthetic demo end to end: $(( $(date +%s) - START )) s wall"
say "# written to $LOG"
