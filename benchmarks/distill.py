"""How much of the prior's gain survives distillation into the bare network.

On the demo's protocol (``sp_adapter.train.demo.DemoConfig``: UNet, mild synthetic blur,
the teacher-initialised student at teacher levels 0-2, 3x3 prior convolutions, fine-tuning
from a shared base), for each seed:

* ``base`` and ``+SP``: :func:`sp_adapter.train.run_arms` (identical batches);
* ``distilled`` (one row per recipe): :func:`sp_adapter.distill_to_backbone` of the +SP
  network on a fixed pool of blurry training crops (its outputs cached after one pass);
* ``base + N``: the control, the base network trained N more steps (L1 to the sharp
  crops of the same pool, the same learning-rate schedule), so extra training alone is
  not credited to distillation.

Scores: PSNR/SSIM on the demo's test crops (test photos) and on crops of photos no run
trained on (the extra photos); the share of the +SP gain kept, ``(distilled - base) /
(+SP - base)``, and beyond the control, ``(distilled - (base + N)) / (+SP - base)``;
inference time per 256 px image (one thread, medians of interleaved runs).

    OMP_NUM_THREADS=1 python benchmarks/distill.py --seeds 0 1 2 --out benchmarks/results/distill
    OMP_NUM_THREADS=1 python benchmarks/distill.py --backbone nafnet --seeds 0 \
        --out benchmarks/results/distill_nafnet
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scratch import OUT_HELP, scratch

import sp_adapter as sp
from sp_adapter.data import SyntheticBlurDataset, blur_preset
from sp_adapter.files.atomic import write_atomic
from sp_adapter.photos import extra_photos
from sp_adapter.train import Arm, TrainConfig, evaluate, run_arms
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.demo import DemoConfig
from sp_adapter.train.distill import DistillConfig

BACKBONE_OPTIONS = {
    "unet": {"width": 16},  # the demo's
    "nafnet": {"width": 8, "enc_blk_nums": [1, 1, 1, 1], "dec_blk_nums": [1, 1, 1, 1],
               "middle_blk_num": 1},
}


def _pool(seed: int, batches: int, batch: int, crop: int, blur: str) -> list[tuple]:
    data = SyntheticBlurDataset("train", crop=crop, length=batches * batch,
                                blur=blur_preset(blur), seed=1000 + seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    return [(b[0], b[1]) for b in loader]


def _control(base: torch.nn.Module, pool: list[tuple], recipe: DistillConfig) -> torch.nn.Module:
    """The base network trained ``recipe.steps`` more steps with L1 to the sharp crops,
    on the pool's batches in the pool's order, at the recipe's learning rates."""
    model = copy.deepcopy(base).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    for step in range(recipe.steps):
        blurry, sharp = pool[step % len(pool)]
        for group in opt.param_groups:
            group["lr"] = recipe.lr_at(step)
        out = model(blurry)
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = F.l1_loss(outs[-1], sharp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def _score(model, data, backbone) -> dict[str, float]:
    result = evaluate(model, data, backbone, batch_size=8)
    return {"psnr": result.psnr, "ssim": result.ssim}


def _times(models: dict[str, torch.nn.Module], side: int, repeats: int) -> dict[str, float]:
    """Median seconds per forward of a 1 x 3 x side x side image, the models interleaved."""
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    seen: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()(x)
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                seen[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in seen.items()}


def run(args: argparse.Namespace, after_seed=None) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    demo = DemoConfig(steps=args.steps, progress=False, device="cpu", width=16)
    shared, arm_steps = demo.split()
    blur = blur_preset(demo.blur)
    backbone = backbone_spec(args.backbone)
    options = BACKBONE_OPTIONS[args.backbone]
    test = SyntheticBlurDataset("test", crop=demo.test_crop, blur=blur,
                                crops_per_photo=demo.test_crops_per_photo, return_key=True)
    unseen = SyntheticBlurDataset("train", crop=demo.test_crop, length=args.unseen, blur=blur,
                                  seed=777, photos=list(extra_photos()), return_key=True)
    recipes = {
        "outputs": DistillConfig(steps=args.distill_steps, lr=args.lr, cache_targets=True),
        "outputs+features": DistillConfig(steps=args.distill_steps, lr=args.lr,
                                          feature_weight=args.feature_weight,
                                          cache_targets=True),
        "outputs, 2x steps": DistillConfig(steps=2 * args.distill_steps, lr=args.lr,
                                           cache_targets=True),
    }
    seeds = []
    started = time.perf_counter()
    for seed in args.seeds:
        t0 = time.perf_counter()
        train = SyntheticBlurDataset("train", crop=demo.crop, length=demo.train_length,
                                     blur=blur, seed=seed)
        config = TrainConfig(steps=arm_steps, batch_size=demo.batch_size, lr=demo.lr,
                             alpha=0.0, perceptual="none", beta=demo.beta, seed=seed,
                             device="cpu", progress=False, log_every=50, keep_checkpoints=1)
        base, plus = run_arms([Arm("base"), Arm("sp", prior=demo.prior())], train, None,
                              config, backbone=backbone, options=options,
                              pretrain_steps=shared, arm_steps=arm_steps)
        sp.get_hook(plus.model).teacher = None  # inference from here on
        pool = _pool(seed, args.pool, demo.batch_size, demo.crop, demo.blur)
        rows: dict[str, Any] = {"base": {"model": base.model}, "+SP": {"model": plus.model}}
        controls: dict[int, torch.nn.Module] = {}
        for name, recipe in recipes.items():
            r0 = time.perf_counter()
            blurry = [b for b, _ in pool]
            model = sp.distill_to_backbone(plus.model, blurry, recipe, progress=False)
            rows[f"distilled ({name})"] = {"model": model,
                                           "seconds": time.perf_counter() - r0,
                                           "steps": recipe.steps}
            if recipe.steps not in controls:
                controls[recipe.steps] = _control(base.model, pool, recipe)
                rows[f"base + {recipe.steps} steps"] = {"model": controls[recipe.steps]}
        for row in rows.values():
            row["test"] = _score(row["model"], test, backbone)
            row["unseen"] = _score(row["model"], unseen, backbone)
        timed = {k: rows[k]["model"] for k in ("base", "+SP", "distilled (outputs)")}
        for name, seconds in _times(timed, 256, args.repeats).items():
            rows[name]["seconds_per_image"] = seconds
        seeds.append({"seed": seed, "seconds": time.perf_counter() - t0,
                      "rows": {k: {kk: vv for kk, vv in v.items() if kk != "model"}
                               for k, v in rows.items()}})
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if after_seed is not None:
            after_seed(_results(args, demo, shared, arm_steps, options, test, unseen, recipes,
                                seeds, started))
    return _results(args, demo, shared, arm_steps, options, test, unseen, recipes, seeds,
                    started)


def _results(args, demo, shared, arm_steps, options, test, unseen, recipes, seeds,
             started) -> dict[str, Any]:
    return {
        "command": "python benchmarks/distill.py " + " ".join(sys.argv[1:]),
        "environment": {"machine": platform.machine() + " " + platform.system(),
                        "torch": torch.__version__, "threads": args.threads,
                        "note": "a CPU shared with other jobs: times are indicative, "
                                "ratios from interleaved runs"},
        "protocol": {"demo": asdict(replace(demo)), "backbone": args.backbone,
                     "options": options, "shared_steps": shared, "arm_steps": arm_steps,
                     "pool_batches": args.pool, "test_count": len(test),
                     "unseen_count": len(unseen), "unseen_photos": list(extra_photos())},
        "recipes": {k: asdict(v) for k, v in recipes.items()},
        "seeds": seeds,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict[str, Any]) -> str:
    seeds = results["seeds"]
    names = list(seeds[0]["rows"])
    lines = ["| network | test PSNR | test SSIM | unseen PSNR | unseen SSIM | gain kept "
             "(test) | beyond control (test) | gain kept (unseen) | s / 256 px image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        def vals(split: str, key: str, name=name) -> list[float]:
            return [s["rows"][name][split][key] for s in seeds]

        kept, beyond, kept_unseen = [], [], []
        if name.startswith("distilled"):
            steps = seeds[0]["rows"][name]["steps"]
            for s in seeds:
                r = s["rows"]
                for split, out in (("test", kept), ("unseen", kept_unseen)):
                    gain = r["+SP"][split]["psnr"] - r["base"][split]["psnr"]
                    out.append((r[name][split]["psnr"] - r["base"][split]["psnr"]) / gain
                               if gain else float("nan"))
                gain = r["+SP"]["test"]["psnr"] - r["base"]["test"]["psnr"]
                control = r[f"base + {steps} steps"]["test"]["psnr"]
                beyond.append((r[name]["test"]["psnr"] - control) / gain if gain else float("nan"))
        t = [s["rows"][name].get("seconds_per_image") for s in seeds]
        t = [v for v in t if v is not None]
        lines.append(
            f"| {name} | {_mean_sd(vals('test', 'psnr'))} | {_mean_sd(vals('test', 'ssim'))} | "
            f"{_mean_sd(vals('unseen', 'psnr'))} | {_mean_sd(vals('unseen', 'ssim'))} | "
            f"{_mean_sd(kept) if kept else ''} | {_mean_sd(beyond) if beyond else ''} | "
            f"{_mean_sd(kept_unseen) if kept_unseen else ''} | "
            f"{_mean_sd(t) if t else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="unet", choices=list(BACKBONE_OPTIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=DemoConfig.steps,
                   help="the demo's steps (shared pre-training + one arm)")
    p.add_argument("--distill-steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--feature-weight", type=float, default=0.1)
    p.add_argument("--pool", type=int, default=50, help="fixed batches distilled on")
    p.add_argument("--unseen", type=int, default=24, help="crops of the unseen photos")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(scratch("distill")),
                   help="<out>.md and <out>.json; " + OUT_HELP)
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge the seeds of earlier runs' .json files (one seed per process "
                        "on a shared machine) into --out")
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = dict(parts[0])
        merged["seeds"] = [s for part in parts for s in part["seeds"]]
        merged["command"] = "python benchmarks/distill.py " + " ".join(sys.argv[1:])
        merged["merged_from"] = [part["command"] for part in parts]
        args.backbone = merged["protocol"]["backbone"]
        args.threads = merged["environment"]["threads"]
        print(table(merged))
        write(args, merged)
        return
    results = run(args, after_seed=lambda r: write(args, r))
    print(table(results))
    write(args, results)


def write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``<out>.md`` and ``<out>.json`` (rewritten after every seed)."""
    text = table(results)
    md = (f"# Distillation into the bare network ({args.backbone})\n\n"
          f"Command: `{results['command']}`\n\n"
          f"Machine: {results['environment']['machine']}, torch "
          f"{results['environment']['torch']}, {args.threads} thread(s); "
          f"{results['environment']['note']}.\n\n"
          f"Seeds done: {[s['seed'] for s in results['seeds']]}\n\n"
          + "".join(f"- part: `{c}`\n" for c in results.get("merged_from", []))
          + "\n"
          f"Protocol: {json.dumps(results['protocol'])}\n\n"
          f"Recipes: {json.dumps(results['recipes'])}\n\n{text}\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_name(out.name + ".md"), md.encode())
    write_atomic(out.with_name(out.name + ".json"),
                 (json.dumps(results, indent=2) + "\n").encode())

if __name__ == "__main__":
    main()
