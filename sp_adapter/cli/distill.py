"""``sp-adapter distill``: a trained +SP run distilled into its bare backbone (1.00x cost).

    sp-adapter distill --run-dir runs/unet_sp --out distilled/ --steps 2000
    sp-adapter distill --run-dir runs/unet_sp --out distilled/ --images my_blurry_photos/

Writes ``DIR/model.pt`` in the backbone's own checkpoint format (the official code loads it
with ``strict=True``), ``DIR/distill.json`` (what was done) and, while it runs,
``DIR/distill_state.pt`` (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sp_adapter.cli.common import add_command, add_common
from sp_adapter.errors import CLIError

MODEL_FILE = "model.pt"
REPORT_FILE = "distill.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


DESCRIPTION = """\
Train a copy of the bare network of a +SP run (starting from its trained backbone weights)
to reproduce the +SP network's restorations, so inference costs exactly the bare network
(sp_adapter.distill_to_backbone). Needs no sharp images and no teacher. Writes model.pt in
the backbone's own checkpoint format (its original code loads it with strict=True) and
distill.json. Measured so far, it keeps none of the prior's gain beyond plain extra
training: benchmarks/results/distill.md."""

EXAMPLES = [
    "sp-adapter distill --run-dir runs/unet_sp --out runs/unet_distilled",
    "sp-adapter distill --run-dir runs/unet_sp --out distilled --images my_blurry_photos/",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill`` on the ``sp-adapter`` sub-command parsers."""
    p = add_command(subparsers, "distill", "distil a trained +SP run into its bare network "
                    "(no prior at inference)", DESCRIPTION, EXAMPLES)
    source = p.add_argument_group("model")
    src = source.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", "--run", dest="run_dir",
                     help="a training run folder (its latest checkpoint is used); this or "
                          "--checkpoint is required")
    src.add_argument("--checkpoint", help="a checkpoint file (checkpoints/step_*.pt); this or "
                     "--run-dir is required")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder (model.pt, distill.json); "
                     "required")
    out.add_argument("--overwrite", action="store_true",
                     help="replace model.pt and distill.json in --out")
    data = p.add_argument_group("data")
    data.add_argument("--images", default=None, metavar="DIR",
                      help="blurry photos to distil on (random crops; no sharp images needed); "
                           "default: the built-in synthetic blur on the built-in training "
                           "photos")
    data.add_argument("--crop", type=int, default=128, help="crop side in pixels")
    data.add_argument("--seed", type=int, default=0, help="seed of the crops")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the "
                     "library's recipe)")
    opt.add_argument("--lr", type=float, default=None,
                     help="learning rate at the start (default: the library's recipe)")
    opt.add_argument("--feature-weight", type=float, default=None,
                     help="weight of matching the tensors at the prior's levels (0: outputs "
                          "only; default: the library's recipe)")
    opt.add_argument("--batch", type=int, default=4, help="images per step")
    add_common(p)
    return p


class _FolderCrops(torch.utils.data.IterableDataset):
    """Endless random ``crop`` x ``crop`` crops (multiples of ``multiple``) of the images
    in a folder, in [0, 1]."""

    def __init__(self, files: list[Path], crop: int, seed: int) -> None:
        from sp_adapter.files.image_io import read_image, to_network

        self.images = [to_network(read_image(f))[0] for f in files]
        small = [f for f, x in zip(files, self.images, strict=True) if min(x.shape[-2:]) < crop]
        if small:
            raise CLIError(f"{small[0]} is smaller than --crop {crop}; give a smaller --crop")
        self.crop, self.seed = crop, seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        rng = random.Random(self.seed)
        while True:
            x = self.images[rng.randrange(len(self.images))]
            top = rng.randrange(x.shape[-2] - self.crop + 1)
            left = rng.randrange(x.shape[-1] - self.crop + 1)
            yield x[:, top:top + self.crop, left:left + self.crop]


def _images(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise CLIError(f"--images {folder}: no such folder")
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CLIError(f"--images {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _data(args: argparse.Namespace, info: dict[str, Any], multiple: int):
    crop = args.crop - args.crop % max(1, multiple)
    if crop < max(1, multiple):
        raise CLIError(f"--crop {args.crop} is below the network's size multiple {multiple}")
    if args.images is not None:
        dataset: torch.utils.data.Dataset = _FolderCrops(_images(args.images), crop, args.seed)
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch)
    from sp_adapter.data import SyntheticBlurDataset, blur_preset

    blur = (info.get("data_options") or {}).get("blur") or "severe"
    dataset = SyntheticBlurDataset("train", crop=crop, length=args.batch * 64,
                                   blur=blur_preset(blur), seed=args.seed)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=False)


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--batch", args.batch), ("--crop", args.crop), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be at least 1, got {value}")
    if args.feature_weight is not None and args.feature_weight < 0:
        raise CLIError(f"--feature-weight must be 0 or more, got {args.feature_weight}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder (it is created if missing)")
    taken = [out / name for name in (MODEL_FILE, REPORT_FILE) if (out / name).exists()]
    if taken and not args.overwrite:
        raise CLIError(f"{taken[0]} already exists: pass --overwrite to replace it, or "
                       "choose another --out folder")


def run(args: argparse.Namespace) -> int:
    """Run ``sp-adapter distill``; returns the exit status."""
    from sp_adapter.attach.state import is_wrapped
    from sp_adapter.files.atomic import write_atomic
    from sp_adapter.train.backbones import backbone_spec
    from sp_adapter.train.distill import (
        CHECKPOINT_KEYS,
        STATE_FILE,
        DistillConfig,
        distill_to_backbone,
        save_backbone_checkpoint,
    )
    from sp_adapter.train.distributed import DistInfo
    from sp_adapter.train.model_spec import load_trained, resolve_checkpoint
    from sp_adapter.train.trainer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    _check(args)
    file = resolve_checkpoint(args.run_dir or args.checkpoint)
    model, spec, info = load_trained(file)
    if not is_wrapped(model):
        raise CLIError(f"{file} holds a network trained without the prior: there is nothing "
                       "to distil (its model is already the bare network)")
    backbone = backbone_spec(spec.backbone)
    model.to(resolve_device(args.device, DistInfo()))
    options = {k: v for k, v in (("steps", args.steps), ("lr", args.lr),
                                 ("feature_weight", args.feature_weight)) if v is not None}
    config = DistillConfig(**options)
    data = _data(args, info, backbone.size_multiple)
    if backbone.input_fn is not None:  # the network's own input format (DeepDeblur: a pyramid)
        data = _Mapped(data, backbone.to_input)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bare = distill_to_backbone(model, data, config, run_dir=out, progress=not args.no_progress)
    key = CHECKPOINT_KEYS.get(backbone.name)
    path = save_backbone_checkpoint(bare, out / MODEL_FILE, overwrite=args.overwrite)
    report = {"command": "sp-adapter " + " ".join(sys.argv[1:]), "source": str(file),
              "backbone": backbone.name, "options": spec.options,
              "checkpoint_entry": key, "recipe": asdict(config), "model": str(path)}
    write_atomic(out / REPORT_FILE, (json.dumps(report, indent=2) + "\n").encode())
    (out / STATE_FILE).unlink(missing_ok=True)
    entry = f"checkpoint[{key!r}]" if key else "the file itself (a bare state dict)"
    print(f"wrote {path}: {type(bare).__name__} weights in {entry}, loadable with "
          "load_state_dict(strict=True); no prior at inference")
    return 0


class _Mapped:
    """``data`` with ``fn`` applied to each batch's blurry images."""

    def __init__(self, data: Any, fn: Any) -> None:
        self.data, self.fn = data, fn

    def __iter__(self) -> Iterator[Any]:
        for batch in self.data:
            yield self.fn(batch[0] if isinstance(batch, (list, tuple)) else batch)
