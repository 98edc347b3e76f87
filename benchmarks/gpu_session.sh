#!/usr/bin/env bash
# The GPU checks of one lent machine, in one command (device time is short):
#   1. the CUDA tests (tests/test_cuda.py: CPU parity, AMP, the compiled prior path on
#      every backbone, the lean modulation's memory),
#   2. the prior's overhead on CUDA, every backbone (benchmarks/overhead.py), each row
#      with the eager wrapped model and the compiled prior path ("optimized", CUDA graphs):
#        a. inference at 256, batch 1, fp32 and bf16 autocast,
#        b. inference at 256, batch 8, fp32 and bf16 autocast,
#        c. the training step with the teacher at 256, batch 8 (fp32),
#        d. peak inference memory at 512, batch 1 (wrapped and the reference modulation),
#   3. with time left, a from-scratch quality run sized to it (benchmarks/gpu_scratch.py).
# Each stage has its own time limit and keeps the rows it measured when cut off.
# Usage: bash benchmarks/gpu_session.sh OUT_DIR SECONDS
#        SP_GPU_SESSION_DRY=1 bash benchmarks/gpu_session.sh OUT_DIR SECONDS
# (the dry run: CPU, UNet only, 32 px, one repeat, no tests and no quality run; it checks
# that every stage's command runs). OUT_DIR gets session.log, overhead_cuda_*.{md,json}
# and, if it ran, the quality table and scratch.tgz.
set -u
out=${1:?OUT_DIR}
total=${2:?SECONDS}
start=$SECONDS
mkdir -p "$out"
work=$(mktemp -d)
exec > >(tee "$out/session.log") 2>&1

left() { echo $((total - (SECONDS - start))); }
# a stage's limit: its share, never more than the time left minus a margin
limit() {
    local want=$1 rest=$(( $(left) - 15 ))
    rest=$(( rest > 1 ? rest : 1 ))
    echo $(( want < rest ? want : rest ))
}

dry=${SP_GPU_SESSION_DRY:-0}
if [ "$dry" = 1 ]; then
    common=(--device cpu --backbones UNet --repeats 1 --warmup 1 --train-repeats 1
            --threads 1 --no-machinery)
    compiled=(--compile-prior eager)
    small=32; large=32; big_batch=2
else
    common=(--device cuda --backbones all --repeats 7 --warmup 3 --train-repeats 5
            --no-machinery)
    compiled=(--compile-prior)
    small=256; large=512; big_batch=8
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, timm; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'timm', timm.__version__, torch.cuda.get_device_name())"
    nproc
    echo "== CUDA tests ($(left) s left)"
    timeout "$(limit 120)" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
    echo "pytest exit $?"
fi

overhead() {  # overhead NAME SECONDS ARGS...: one table, copied to OUT_DIR
    local name=$1 seconds=$2
    shift 2
    echo "== overhead $name ($(left) s left, limit $(limit "$seconds") s)"
    timeout "$(limit "$seconds")" python3 benchmarks/overhead.py "${common[@]}" "$@" \
        --out "$work/overhead_cuda_$name"
    echo "overhead $name exit $?"
    cp "$work"/overhead_cuda_"$name".* "$out"/ 2>/dev/null
}

# the compiled variant's first call per backbone compiles (inductor caches what repeats)
overhead b1_fp32 100 "${compiled[@]}" --sizes $small --batch 1 --no-train --no-memory
overhead b1_bf16 60 "${compiled[@]}" --sizes $small --batch 1 --no-train --no-memory --amp bf16
overhead b8_fp32 60 "${compiled[@]}" --sizes $small --batch $big_batch --no-train --no-memory
overhead b8_bf16 50 "${compiled[@]}" --sizes $small --batch $big_batch --no-train --no-memory \
    --amp bf16
overhead train_b8 90 "${compiled[@]}" --sizes $small --batch $big_batch --no-memory
# memory without compiling: CUDA graphs keep their own pool
overhead memory_512 40 --sizes $large --batch 1 --repeats 0 --no-train --reference

if [ "$dry" != 1 ] && [ "$(left)" -gt 180 ]; then
    echo "== from-scratch quality run ($(left) s left)"
    python3 benchmarks/gpu_scratch.py --out "$work/scratch" --seconds $(($(left) - 20)) -- \
        --crop 256 --batch 8 --lr 1e-3 --blur severe --test-crop 192 --test-crops-per-photo 8 \
        --device cuda
    echo "gpu_scratch exit $?"
    cp "$work"/scratch/quality_*.md "$work"/scratch/quality_*.json "$out"/ 2>/dev/null
    tar czf "$out/scratch.tgz" -C "$work" scratch
fi
echo "== done in $((SECONDS - start)) s"
