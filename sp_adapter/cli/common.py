"""What the ``sp-adapter`` commands share: option groups, checks, model loading, and the ONE
error path that turns a user's mistake or an environment fault into one ``error:`` line.

Anything the error path does not recognise is a bug and keeps its traceback;
``SP_ADAPTER_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from sp_adapter.errors import CLIError, SPAdapterError
from sp_adapter.prior.config import WHEEL_TEACHERS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEBUG_VARIABLE = "SP_ADAPTER_DEBUG"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, and epilogs (examples) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # a flag (store_true) defaults to off; "(default: False)" says nothing more
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        if action.default is None:
            return action.help  # the help says what leaving it out means (or it is required)
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes (an unknown option, a bad choice or number) are one
    ``error:`` line and exit status 2, as the commands' own errors are."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def add_command(subparsers: Any, name: str, summary: str, description: str,
                examples: Sequence[str]) -> argparse.ArgumentParser:
    """A sub-command's parser, with the shared formatter and an epilog of examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return subparsers.add_parser(name, help=summary, description=description, epilog=epilog,
                                 formatter_class=HelpFormatter)


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed (for reports and for the resume hint)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["sp-adapter", *map(shlex.quote, args)])


# -- checks shared by sub-commands -----------------------------------------------------
def require_positive(value: int | None, flag: str, what: str) -> None:
    """Refuse a flag's value below 1 (``None``: not given)."""
    if value is not None and value < 1:
        raise CLIError(f"{flag} must be at least 1 ({what}), got {value}")


def require_finite(value: float | None, flag: str, what: str, minimum: float | None = 0.0,
                   strict: bool = False) -> None:
    """Refuse a NaN or infinite number, or one below ``minimum`` (``strict``: at or below)."""
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise CLIError(f"{flag} must be a finite number ({what}), got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        bound = f"more than {minimum:g}" if strict else f"{minimum:g} or more"
        raise CLIError(f"{flag} must be {bound} ({what}), got {value:g}")


def check_tile(tile: int | None, overlap: int | None = None) -> None:
    require_positive(tile, "--tile", "the tile side in pixels; leave it out to run whole "
                     "images")
    if overlap is not None and overlap < 0:
        raise CLIError(f"--overlap must be 0 or more pixels, got {overlap}")


def check_tile_fits(tile: int | None, model: torch.nn.Module, backbone: str) -> None:
    """Refuse a ``--tile`` smaller than the network's smallest input, in the flag's words
    (a tile is rounded down to the backbone's side multiple)."""
    if tile is None:
        return
    from sp_adapter.attach.state import get_hook, is_wrapped
    from sp_adapter.attach.wrap import level_map_for
    from sp_adapter.train import backbone_spec

    multiple = max(1, backbone_spec(backbone).size_multiple)
    smallest = multiple
    if is_wrapped(model):
        smallest = max(smallest, get_hook(model).min_size)
    found, _ = level_map_for(model)
    if found is not None:
        smallest = max(smallest, found.min_size)
    if tile // multiple * multiple < smallest:
        raise CLIError(f"--tile {tile}: this {backbone} needs tiles of at least {smallest} "
                       f"pixels (tiles are rounded down to a multiple of {multiple}); give "
                       f"--tile {smallest} or more, e.g. 256, or leave it out")


def check_teacher_levels(levels: Sequence[int] | None, arch: str) -> None:
    """Refuse ``--teacher-levels`` the teacher does not have, before anything is built."""
    if not levels:
        return
    if list(levels) != sorted(set(levels)):
        raise CLIError(f"--teacher-levels {' '.join(map(str, levels))}: give distinct feature "
                       "levels, finest first (e.g. 1 2 3)")
    import timm

    reductions = timm.create_model(arch, pretrained=False, features_only=True
                                   ).feature_info.reduction()
    count = len(reductions)
    wrong = [level for level in levels if not 0 <= level < count]
    if wrong:
        raise CLIError(f"--teacher-levels {' '.join(map(str, wrong))}: the teacher {arch} has "
                       f"feature levels 0-{count - 1} (reductions {reductions[0]} to "
                       f"{reductions[-1]}), finest first")


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device, refusing CUDA where there is none before any work."""
    from sp_adapter.train.distributed import DistInfo
    from sp_adapter.train.trainer import resolve_device as trainer_device

    try:
        device = trainer_device(name, DistInfo())
    except RuntimeError as err:  # torch's own parse error of a device string
        raise CLIError(f"--device {name}: {err}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: CUDA is not available on this machine (no "
                           "NVIDIA driver or a CPU-only torch); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {name}: this machine has {count} CUDA device"
                           f"{'s' * (count != 1)} (cuda:0 to cuda:{count - 1})")
    return device


def check_writable_folder(folder: Path, flag: str) -> None:
    """Refuse an output folder that cannot be written (read-only file system, permissions)
    before any work: the nearest existing ancestor must be a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(f"{flag} {folder}: {existing} is a file, not a folder")
    if os.access(existing, os.W_OK):
        # access() says yes for root on a read-only mount: try a real write
        try:
            import tempfile

            with tempfile.NamedTemporaryFile(dir=existing, prefix=".sp-adapter-probe-"):
                pass
            return
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)
    else:
        reason = "permission denied"
    raise CLIError(f"{flag} {folder}: cannot write in {existing} ({reason.lower()}); choose "
                   "a folder you can write to")


def check_output_file(path: Path, flag: str, overwrite: bool) -> None:
    """An output file: not an existing folder, not existing without ``--overwrite``, and in
    a folder that can be written."""
    if path.is_dir():
        raise CLIError(f"{flag} {path} is a folder; give a file name (e.g. {path / 'x.json'})")
    if path.exists() and not overwrite:
        raise CLIError(f"{flag} {path} exists; pass --overwrite to replace it or choose "
                       "another file")
    check_writable_folder(path.parent if str(path.parent) else Path("."), flag)


# -- loading a trained network -----------------------------------------------------------
def load_model(args: argparse.Namespace, source: str) -> tuple[torch.nn.Module, Any, dict]:
    """The network named by the model group's options (see :mod:`sp_adapter.cli.sources`)."""
    from sp_adapter.cli.sources import load_source

    options = {"width": args.width} if getattr(args, "width", None) is not None else {}
    return load_source(source, getattr(args, "backbone", None), options,
                       getattr(args, "prior_folder", None))


def check_backbone(args: argparse.Namespace, spec: Any, info: dict) -> None:
    """Refuse a --backbone or --width that contradicts a training checkpoint's network."""
    if info.get("step") is None:  # weights saved from Python: built as the options say
        return
    from sp_adapter.train import backbone_spec

    differ = []
    if args.backbone is not None and backbone_spec(args.backbone).name != spec.backbone:
        differ.append(f"--backbone {args.backbone} (the checkpoint: {spec.backbone})")
    width = spec.options.get("width")
    if args.width is not None and args.width != width:
        differ.append(f"--width {args.width} (the checkpoint: {width or 'the default'})")
    if differ:
        raise CLIError(f"{info['path']} was trained by sp-adapter train with another network: "
                       f"{'; '.join(differ)}; leave these out (the checkpoint describes its "
                       "network)")
    if args.prior_folder is not None:
        raise CLIError(f"{info['path']} holds its prior; leave out --prior-folder")


# -- options shared by sub-commands ------------------------------------------------------
def add_teacher(p: Any, default: str) -> None:
    p.add_argument("--teacher", default=default, choices=list(WHEEL_TEACHERS.values()),
                   help="the offline teacher (Lite1 and Lite2 need sp_adapter[teachers])")


def add_prior_kernel_size(p: Any, default: int) -> None:
    p.add_argument("--prior-kernel-size", type=int, default=default,
                   help="kernel of the prior's CLC, MLA and SAT convolutions (odd)")


def add_common(p: argparse.ArgumentParser) -> None:
    """The run group: device, threads, progress bars."""
    group = p.add_argument_group("run")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA if available), cpu, cuda, cuda:1")
    group.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (default: torch's choice)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_model_source(p: argparse.ArgumentParser, many: bool = False) -> Any:
    """The model group: a run folder, a checkpoint or a saved prior folder."""
    group = p.add_argument_group(
        "model", "a run folder or a checkpoint of `sp-adapter train` rebuilds its network by "
        "itself; a checkpoint saved from Python (torch.save(model.state_dict(), FILE), "
        "{'model': state_dict} or a .safetensors file) also needs --backbone (and --width "
        "for a UNet), and --prior-folder for the prior saved with save_pretrained")
    src = group.add_mutually_exclusive_group(required=True)
    nargs = {"nargs": "+"} if many else {}
    src.add_argument("--run-dir", "--run", dest="run_dir", metavar="RUN", **nargs,
                     help="training run folder" + ("s" if many else "")
                     + " (the latest checkpoint is used); this or --checkpoint is required")
    src.add_argument("--checkpoint", metavar="FILE", **nargs,
                     help="checkpoint file" + ("s" if many else "")
                     + " (checkpoints/step_*.pt, or a state dict saved from Python); this "
                     "or --run-dir is required")
    group.add_argument("--prior-folder", metavar="FOLDER", default=None,
                       help="a prior saved by sp_adapter.save_pretrained, attached to the "
                            "network of a Python --checkpoint (needs --backbone; default: "
                            "none, the bare network)")
    group.add_argument("--backbone", default=None,
                       help="the network of a Python checkpoint or save_pretrained folder "
                            "(default: read from a training checkpoint)")
    group.add_argument("--width", type=int, default=None,
                       help="UNet width of such a network (default: the backbone's)")
    return group


def add_dataset(p: Any, default_crop: int) -> None:
    p.add_argument("--dataset", default="synthetic",
                   choices=["synthetic", "gopro", "hide", "realblur"],
                   help="built-in synthetic blur on built-in photos (offline), or a folder")
    p.add_argument("--root", help="dataset folder (GOPRO_Large, HIDE, RealBlur root); required "
                   "by the folder datasets, not by synthetic (no default)")
    p.add_argument("--blur", default="severe", choices=["severe", "mild"],
                   help="synthetic blur strength")
    p.add_argument("--crop", type=int, default=default_crop, help="crop side in pixels")
    p.add_argument("--gopro-blur", default="blur", choices=["blur", "blur_gamma"],
                   help="GoPro's blurry folder: blur (most published tables) or "
                        "blur_gamma (DeepDeblur's own numbers)")
    p.add_argument("--realblur-variant", default="J", choices=["J", "R"],
                   help="RealBlur-J (JPEG) or RealBlur-R (raw)")


def make_dataset(*args: Any, **kwargs: Any):
    """:func:`build_dataset`, with the data classes' refusals of an option (a test photo
    named for training, a split the folder lacks) said as one ``error:`` line."""
    return build_dataset(*args, **kwargs)


def build_dataset(name: str, root: str | None, split: str, crop: int | None, blur: str,
                 seed: int, length: int | None = None, keys: bool = False,
                 training: bool = False, crops_per_photo: int = 16, augment: bool = False,
                 photos: list[str] | None = None, whole: bool = False,
                 gopro_blur: str = "blur", realblur_variant: str = "J"):
    """A training set (random crops, flips, new samples per epoch) or an evaluation set
    (whole images or the fixed synthetic test crops, in a fixed order, with keys).
    ``augment`` and ``photos`` choose the built-in training set's crops and photos;
    ``whole`` makes the built-in test set the whole test photos instead of crops;
    ``gopro_blur`` and ``realblur_variant`` choose GoPro's blurry folder and RealBlur's
    variant."""
    from sp_adapter.data import (
        GoProDataset,
        HIDEDataset,
        RealBlurDataset,
        SyntheticBlurDataset,
        blur_preset,
    )

    if name != "synthetic" and (augment or photos):
        raise CLIError("--augment and --photos are for --dataset synthetic (the "
                       "built-in photos)")
    if name == "synthetic":
        if split == "train":
            return SyntheticBlurDataset("train", crop=crop or 128, length=length,
                                        blur=blur_preset(blur), seed=seed,
                                        return_key=keys or not training,
                                        augment=augment, photos=photos)
        return SyntheticBlurDataset("test", crop=None if whole else crop or 128,
                                    blur=blur_preset(blur),
                                    crops_per_photo=crops_per_photo, return_key=True)
    if root is None:
        raise CLIError(f"--dataset {name} needs --root (the dataset folder)")
    cls = {"gopro": GoProDataset, "hide": HIDEDataset, "realblur": RealBlurDataset}[name]
    extra = {"gopro": {"gamma": gopro_blur == "blur_gamma"},
             "realblur": {"variant": realblur_variant}}.get(name, {})
    if training:
        return cls(root, split=split, train=True, crop=crop, seed=seed, return_key=keys,
                   **extra)
    return cls(root, split=split, train=False, crop=None, return_key=True, **extra)


def add_prior_strength(p: Any) -> None:
    p.add_argument("--prior-strength", type=float, default=None, metavar="S",
                   help="scale the prior's change to each decoder level by S (1: as "
                        "trained, 0: the bare network; default: the strength `calibrate "
                        "--save` recorded for the checkpoint, else 1)")


def apply_prior_strength(model: torch.nn.Module, strength: float | None, info: dict) -> str:
    """Set ``--prior-strength`` if given; describe the strength in use ("" for a model
    without the prior or at 1 by default)."""
    from sp_adapter.attach.state import is_wrapped
    from sp_adapter.attach.wrap import set_prior_strength

    if strength is None:
        loaded = info.get("prior_strength")
        if loaded is None or loaded == 1.0:
            return ""
        return f" at strength {loaded:g} (saved by calibrate --save)"
    require_finite(strength, "--prior-strength", "1: as trained, 0: the bare network",
                   minimum=None)
    if not is_wrapped(model):
        raise CLIError("--prior-strength needs a model trained with the prior; "
                       "this one has none")
    try:
        set_prior_strength(model, strength)
    except SPAdapterError as err:
        raise CLIError(f"--prior-strength: {err}") from None
    return f" at strength {strength:g}"


def add_max_pixels(p: Any) -> None:
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images of more than N pixels (a guard against "
                        "decompression bombs; default: Pillow's limit, about 179 million)")


def apply_max_pixels(value: int | None) -> None:
    """Raise (or lower) Pillow's decompression-bomb limit; it refuses above twice this."""
    if value is None:
        return
    require_positive(value, "--max-pixels", "the largest image in pixels")
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = value // 2
    # the user chose the limit: Pillow's warning at half of it would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


# -- the one error path ------------------------------------------------------------------
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                       errno.ENOENT, errno.EISDIR, errno.ENOTDIR}


def _path_of(err: OSError) -> str:
    return str(err.filename) if err.filename is not None else "a file"


def error_message(err: BaseException) -> str | None:
    """The one line a user sees for ``err``, or ``None`` for a bug (keeps its traceback)."""
    try:
        from PIL.Image import DecompressionBombError
    except ImportError:  # pragma: no cover - Pillow is a dependency
        DecompressionBombError = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(err, SPAdapterError):
        return str(err)
    if isinstance(err, DecompressionBombError):
        return (f"{err}; if you trust the image, raise the limit with --max-pixels "
                "(deblur, eval)")
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; files are written atomically, so none was left half-written"
    if not isinstance(err, OSError) or err.errno not in _ENVIRONMENT_ERRNOS:
        if isinstance(err, FileNotFoundError):  # raised with a message of ours
            return str(err)
        return None
    path = _path_of(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left to write {path} ({os.strerror(err.errno).lower()}); free "
                "some space or choose another folder")
    if err.errno == errno.EROFS:
        return f"cannot write {path}: read-only file system; choose a folder you can write to"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied; choose a file or folder you can read and write"
    if err.errno == errno.EISDIR:
        return f"{path} is a folder; give a file name"
    if err.errno == errno.ENOTDIR:
        return f"{path}: a part of this path is a file, not a folder"
    return f"no such file or folder: {path}"


def run_guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a family error or a named environment fault becomes one ``error:``
    line and exit status 2, anything else keeps its traceback."""
    try:
        return handler(args)
    except (Exception, KeyboardInterrupt) as err:
        message = error_message(err)
        if message is None or os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
