#!/usr/bin/env bash
# The GPU checks of one lent machine, in one command (device time is short):
#   1. the CUDA tests (tests/test_cuda.py),
#   2. the overhead benchmark on CUDA (every backbone, 256 and 512 px),
#   3. a from-scratch quality run sized to the time left (benchmarks/gpu_scratch.py):
#      Net0, Net6 and Net0* (3 seeds each) on severe blur, 256 px crops, batch 8.
# Usage: bash benchmarks/gpu_session.sh OUT_DIR SECONDS
# OUT_DIR gets session.log, overhead_cuda.{md,json}, the merged quality table and
# scratch.tgz (every per-process file, log and the driver's record); the work happens in
# a temporary folder, so OUT_DIR holds only those files.
set -u
out=${1:?OUT_DIR}
total=${2:?SECONDS}
start=$SECONDS
mkdir -p "$out"
work=$(mktemp -d)
exec > >(tee "$out/session.log") 2>&1

left() { echo $((total - (SECONDS - start))); }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'timm', timm.__version__, torch.cuda.get_device_name())"
nproc

echo "== CUDA tests ($(left) s left)"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
echo "pytest exit $?"

echo "== overhead on CUDA ($(left) s left)"
timeout 80 python3 benchmarks/overhead.py --backbones all --sizes 256 512 --device cuda \
    --out "$work/overhead_cuda"
echo "overhead exit $?"
cp "$work"/overhead_cuda.* "$out"/ 2>/dev/null

echo "== from-scratch quality run ($(left) s left)"
python3 benchmarks/gpu_scratch.py --out "$work/scratch" --seconds $(($(left) - 20)) -- \
    --crop 256 --batch 8 --lr 1e-3 --blur severe --test-crop 192 --test-crops-per-photo 8 \
    --device cuda
echo "gpu_scratch exit $?"
cp "$work"/scratch/quality_*.md "$work"/scratch/quality_*.json "$out"/ 2>/dev/null
tar czf "$out/scratch.tgz" -C "$work" scratch
echo "== done in $((SECONDS - start)) s"
