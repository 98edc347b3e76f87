"""``sp-adapter deblur``: deblur image files with a trained network, each written under its
own name in its own format, mode and bit depth."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sp_adapter.cli.common import (
    IMAGE_SUFFIXES,
    add_command,
    add_common,
    add_max_pixels,
    add_model_source,
    add_prior_strength,
    apply_max_pixels,
    apply_prior_strength,
    check_backbone,
    check_tile,
    check_tile_fits,
    check_writable_folder,
    load_model,
    resolve_device,
)
from sp_adapter.errors import CLIError

DESCRIPTION = """\
Deblur image files with a trained network. Each output keeps its input's name, format,
mode (grey, RGB, alpha) and bit depth. The network comes from a run folder or checkpoint
of `sp-adapter train` (which holds the backbone and the prior), or from weights saved from
Python with --backbone (and --prior-folder for a prior saved with save_pretrained).
Everything is checked before the first image is deblurred: the inputs, the --out folder
(writable, no name clashes, nothing replaced without --overwrite) and the device."""

EXAMPLES = [
    "sp-adapter deblur photo.jpg more/ --run-dir runs/unet_sp --out deblurred/",
    "sp-adapter deblur big.tif --run-dir runs/unet_sp --out out/ --tile 512",
    "sp-adapter deblur photo.png --checkpoint net.pt --backbone unet --width 32 --out out/",
    "sp-adapter deblur photo.png --checkpoint net.pt --backbone mimo-unet "
    "--prior-folder my-prior --out out/",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "deblur", "deblur image files with a trained network",
                    DESCRIPTION, EXAMPLES)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    add_model_source(p)
    prior = p.add_argument_group("prior")
    add_prior_strength(prior)
    inference = p.add_argument_group("inference")
    inference.add_argument("--tile", type=int, default=None,
                           help="deblur big images in tiles of this side (default: whole)")
    inference.add_argument("--overlap", type=int, default=32,
                           help="overlap of neighbouring tiles in pixels")
    add_max_pixels(inference)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True,
                     help="output folder: each image is written under its own name, in its "
                          "own format, mode and bit depth (created if missing; required)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace files of the same names in --out")
    add_common(p)
    return p


def image_files(inputs: Sequence[str]) -> list[Path]:
    """The image files named or held by the inputs (a file named twice counts once)."""
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            raise CLIError(f"no such image or folder: {path}")
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    if not files:
        raise CLIError("no images found in the inputs (looked for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def check_sizes(files: Sequence[Path]) -> None:
    """Read each image's header now (not its pixels), so one whose size passes Pillow's
    decompression-bomb limit is named before the network is loaded."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path):
                pass
        except Image.DecompressionBombError as err:
            raise CLIError(f"{path}: {err.args[0].rstrip('.')}; if you trust the image, raise "
                           "the limit with --max-pixels") from None
        except (OSError, SyntaxError, ValueError):
            pass  # not an image Pillow knows: read_image names the file with its reason


def deblur_targets(files: Sequence[Path], out_dir: Path, overwrite: bool) -> list[Path]:
    """Where each input is written: ``out_dir`` / its own name. Refused before any work:
    an --out that cannot be written, two inputs of one name (or names differing only in
    case), an output that is its own input or an existing folder, a format that cannot be
    written, and (without ``--overwrite``) existing files."""
    from sp_adapter.files.image_io import writable_suffix

    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    check_writable_folder(out_dir, "--out")
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name.casefold(), []).append(path)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(str, paths)) for paths in clashes[:3])
        raise CLIError(f"inputs of the same name would be written to one file in {out_dir}: "
                       f"{listed}; deblur them into separate --out folders")
    targets = [out_dir / path.name for path in files]
    for path, target in zip(files, targets, strict=True):
        if not writable_suffix(path.suffix):
            raise CLIError(f"{path}: cannot write {path.suffix!r} files; convert it to PNG")
        if target.is_dir():
            raise CLIError(f"{target} is a folder, so {path} cannot be written there; "
                           "choose another --out folder")
        if target.exists() and target.resolve() == path.resolve():
            raise CLIError(f"{target} is an input: the output would replace it; choose "
                           "another --out folder")
    existing = [target for target in targets if target.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        one = len(existing) == 1
        raise CLIError(f"{', '.join(map(str, existing[:3]))}{more} already exist"
                       f"{'s' if one else ''}: pass --overwrite to replace "
                       f"{'it' if one else 'them'}, or choose another --out folder")
    return targets


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from sp_adapter.files.image_io import (
        DEFAULT_MAX_PIXELS,
        from_network,
        read_image,
        to_network,
        write_image,
    )
    from sp_adapter.train import deblur

    check_tile(args.tile, args.overlap)
    apply_max_pixels(args.max_pixels)
    files = image_files(args.inputs)
    out_dir = Path(args.out)
    targets = deblur_targets(files, out_dir, args.overwrite)
    check_sizes(files)
    device = resolve_device(args.device)
    model, spec, info = load_model(args, args.run_dir or args.checkpoint)
    check_backbone(args, spec, info)
    check_tile_fits(args.tile, model, spec.backbone)
    model.to(device)
    strength = apply_prior_strength(model, args.prior_strength, info)
    if strength:
        print(f"prior{strength}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(list(zip(files, targets, strict=True)), desc="deblur",
               disable=args.no_progress)
    for path, target in bar:
        image = read_image(path, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
        y = deblur(model, to_network(image).to(device), spec.backbone, tile=args.tile,
                   overlap=args.overlap)
        result = from_network(y, image)
        write_image(target, result)
        alpha = ", alpha kept" if result.has_alpha else ""
        bar.write(f"wrote {target} ({result.describe()}{alpha}) from {path}")
    return 0
