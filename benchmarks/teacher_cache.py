"""What the teacher-feature cache saves per training step (UNet + SP, fixed samples).

Two trainers with identical weights train on the same fixed samples (the same crops
every epoch), one computing the teacher's features of every sharp batch, one reading
them from :class:`~sp_adapter.train.TeacherFeatureCache`. Their steps are interleaved
(A, B, A, B, ...) so machine noise hits both alike; steps of the first epoch (when the
cache fills) are left out; medians are reported. Samples are synthesised once, before
timing, so blur synthesis is not part of the step.

    python benchmarks/teacher_cache.py --crop 64 --batch 8
    python benchmarks/teacher_cache.py --crop 256 --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from scratch import OUT_HELP, scratch
from torch.utils.data import Dataset

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.data import SyntheticBlurDataset
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.teacher import load_teacher
from sp_adapter.train import TrainConfig, Trainer


class Fixed(Dataset):
    """Samples of another dataset, materialised once."""

    def __init__(self, source: Dataset, n: int) -> None:
        self.samples = [source[i] for i in range(n)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--student", default="teacher", choices=["teacher", "small"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(scratch()), help=OUT_HELP)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(["python", "benchmarks/teacher_cache.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    data = Fixed(SyntheticBlurDataset("train", crop=args.crop, length=args.samples,
                                      return_key=True), args.samples)
    teacher = load_teacher(PriorConfig().teacher)
    trainers = {}
    for cached in (False, True):
        torch.manual_seed(0)
        model = sp_adapter.wrap(UNet(), teacher=teacher, student=args.student)
        config = TrainConfig(steps=args.epochs * args.samples // args.batch,
                             batch_size=args.batch, alpha=0.0, perceptual="none",
                             cache_teacher=cached, new_samples_each_epoch=False,
                             device=args.device, progress=False)
        trainers["cached" if cached else "plain"] = Trainer(model, data, config)
    device = trainers["plain"].device
    per_epoch = trainers["plain"].stream.batches_per_epoch
    streams = {k: t.stream.batches(0) for k, t in trainers.items()}
    times: dict[str, list[float]] = {k: [] for k in trainers}
    losses: dict[str, list[float]] = {k: [] for k in trainers}
    for step in range(trainers["plain"].config.steps):
        for name, trainer in trainers.items():
            batch = next(streams[name])
            _sync(device)
            start = time.perf_counter()
            stats = trainer.train_step(batch)
            _sync(device)
            if step >= per_epoch:
                times[name].append(time.perf_counter() - start)
            losses[name].append(stats["total"])
    teacher_times = []
    sharp = torch.stack([data[i][1] for i in range(args.batch)]).to(device)
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        teacher(sharp)
        _sync(device)
        teacher_times.append(time.perf_counter() - start)
    plain, cached = statistics.median(times["plain"]), statistics.median(times["cached"])
    result = {
        "command": command,
        "crop": args.crop, "batch": args.batch, "student": args.student,
        "device": str(device), "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.system()}", "torch": torch.__version__,
        "timed_steps": len(times["plain"]),
        "step_s_plain": plain, "step_s_cached": cached,
        "saving": 1 - cached / plain,
        "teacher_forward_s": statistics.median(teacher_times),
        "max_loss_difference": max(abs(a - b) for a, b in
                                   zip(losses["plain"], losses["cached"], strict=True)),
        "cache_hits": trainers["cached"].cache.hits,  # type: ignore[union-attr]
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"teacher_cache_{args.crop}px_b{args.batch}_{device.type}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
