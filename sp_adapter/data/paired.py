"""Paired blurry/sharp folders in the published layouts of GoPro, HIDE and RealBlur.

Layouts (``root`` is the folder you pass):

* GoPro: ``GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png``; ``root`` is
  ``GOPRO_Large`` or its parent. Most published numbers use ``blur`` (the default); pass
  ``gamma=True`` for ``blur_gamma``, which DeepDeblur's own numbers use (the CLI's
  ``--gopro-blur blur_gamma``).
* HIDE: blurred images in ``train/`` and ``test/{test-close-ups,test-long-shot}/``, the
  sharp ones in ``GT/`` under the same file name; ``root`` holds those folders (or is
  the parent of ``HIDE_dataset`` that does).
* RealBlur: ``root`` holds the authors' list files ``RealBlur_J_{train,test}_list.txt``
  (``RealBlur_R_...`` for the raw variant), one pair per line, ``<gt path> <blur path>``
  (ground truth first), relative to ``root``; further columns are ignored.

Every dataset returns ``(blurry, sharp)`` float32 ``(3, H, W)`` RGB tensors in [0, 1]
(8-bit images; anything PIL reads is converted to RGB), optionally with a key, the
blurry file's path relative to ``root``. Pairs come in a deterministic order: sorted by
the blurry file's relative path, with digit runs compared as numbers.

Training mode takes a random ``crop`` (the same box for both images) and random
horizontal/vertical flips (applied to both); evaluation mode returns whole images, or
their centre ``crop`` when given. With ``seed=None`` training draws from torch's global
RNG, which a DataLoader seeds differently per worker and per epoch; with an int seed,
sample ``i`` draws from ``numpy.random.default_rng([seed, epoch, i])`` (see
:meth:`PairedImageDataset.set_epoch`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sp_adapter.errors import DatasetError, DatasetIndexError, OptionError, PathNotFoundError
from sp_adapter.files.image_io import read_rgb8

__all__ = [
    "GoProDataset",
    "HIDEDataset",
    "IMAGE_EXTENSIONS",
    "PairedImageDataset",
    "RealBlurDataset",
    "gopro_pairs",
    "hide_pairs",
    "read_image",
    "realblur_pairs",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_GOPRO_LAYOUT = "GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png"
_HIDE_LAYOUT = "train/*.png, test/{test-close-ups,test-long-shot}/*.png and GT/*.png (same names)"
_HIDE_SUBSETS = {"close-ups": "test-close-ups", "long-shot": "test-long-shot"}

Pair = tuple[Path, Path]


def _natural_key(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: _natural_key(p.name),
    )


def _require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        raise PathNotFoundError(f"{what} folder not found: {path}\nexpected layout: {layout}")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise OptionError(f"split must be 'train' or 'test', got {split!r}")


def gopro_pairs(root: str | Path, split: str = "train", gamma: bool = False) -> list[Pair]:
    """``(blurry, sharp)`` paths of GoPro ``split`` (see the module docstring for the layout).

    Raises:
        FileNotFoundError: missing root, split, scene or ``blur``/``sharp`` folder.
        ValueError: a blurry image without a sharp one of the same name, or the reverse.
    """
    _check_split(split)
    root = Path(root)
    _require_dir(root, "GoPro root", _GOPRO_LAYOUT)
    if (root / "GOPRO_Large").is_dir():
        root = root / "GOPRO_Large"
    split_dir = root / split
    _require_dir(split_dir, f"GoPro {split!r} split", _GOPRO_LAYOUT)
    scenes = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=lambda d: d.name)
    if not scenes:
        raise PathNotFoundError(
            f"no scene folders in {split_dir}\nexpected layout: {_GOPRO_LAYOUT}"
        )
    blur_name = "blur_gamma" if gamma else "blur"
    pairs: list[Pair] = []
    for scene in scenes:
        blur_dir, sharp_dir = scene / blur_name, scene / "sharp"
        _require_dir(blur_dir, f"GoPro scene {scene.name!r}: {blur_name}", _GOPRO_LAYOUT)
        _require_dir(sharp_dir, f"GoPro scene {scene.name!r}: sharp", _GOPRO_LAYOUT)
        blurry = {p.name: p for p in _images_in(blur_dir)}
        sharp = {p.name: p for p in _images_in(sharp_dir)}
        for name in blurry.keys() - sharp.keys():
            raise DatasetError(f"unpaired GoPro image {blurry[name]}: no {sharp_dir / name}")
        for name in sharp.keys() - blurry.keys():
            raise DatasetError(f"unpaired GoPro image {sharp[name]}: no {blur_dir / name}")
        pairs.extend((blurry[n], sharp[n]) for n in blurry)
    if not pairs:
        raise PathNotFoundError(f"no images under {split_dir}\nexpected layout: {_GOPRO_LAYOUT}")
    return pairs


def hide_pairs(root: str | Path, split: str = "test", subset: str = "all") -> list[Pair]:
    """``(blurry, sharp)`` paths of HIDE ``split``; ``subset`` (test only) is ``"all"``,
    ``"close-ups"`` or ``"long-shot"``.

    Raises:
        FileNotFoundError: missing root, ``GT`` or split folders.
        ValueError: a blurry image without ``GT/<same name>``; a bad subset.
    """
    _check_split(split)
    if subset != "all" and subset not in _HIDE_SUBSETS:
        raise OptionError(f"subset must be 'all', 'close-ups' or 'long-shot', got {subset!r}")
    if split == "train" and subset != "all":
        raise OptionError("HIDE subsets exist only in the test split")
    root = Path(root)
    _require_dir(root, "HIDE root", _HIDE_LAYOUT)
    if not (root / "GT").is_dir() and (root / "HIDE_dataset").is_dir():
        root = root / "HIDE_dataset"
    gt_dir = root / "GT"
    _require_dir(gt_dir, "HIDE GT", _HIDE_LAYOUT)
    if split == "train":
        folders = [root / "train"]
    else:
        names = list(_HIDE_SUBSETS.values()) if subset == "all" else [_HIDE_SUBSETS[subset]]
        folders = [root / "test" / name for name in names]
    pairs: list[Pair] = []
    for folder in folders:
        _require_dir(folder, f"HIDE {folder.relative_to(root)}", _HIDE_LAYOUT)
        for blurry in _images_in(folder):
            sharp = gt_dir / blurry.name
            if not sharp.is_file():
                raise DatasetError(f"unpaired HIDE image {blurry}: no {sharp}")
            pairs.append((blurry, sharp))
    if not pairs:
        raise PathNotFoundError(f"no HIDE {split} images under {root}\nexpected: {_HIDE_LAYOUT}")
    return pairs


def realblur_pairs(root: str | Path, split: str = "test", variant: str = "J") -> list[Pair]:
    """``(blurry, sharp)`` paths listed in ``RealBlur_{variant}_{split}_list.txt``.

    Raises:
        FileNotFoundError: missing root or list file; a listed file that does not exist
            (the message gives the list file and line).
        ValueError: a line with fewer than two paths; a bad variant.
    """
    _check_split(split)
    if variant not in ("J", "R"):
        raise OptionError(f"variant must be 'J' or 'R', got {variant!r}")
    root = Path(root)
    list_name = f"RealBlur_{variant}_{split}_list.txt"
    layout = f"{list_name} in root, each line '<gt path> <blur path>' relative to root"
    _require_dir(root, "RealBlur root", layout)
    list_file = root / list_name
    if not list_file.is_file():
        raise PathNotFoundError(f"RealBlur list file not found: {list_file}\nexpected: {layout}")
    pairs: list[Pair] = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DatasetError(
                f"{list_file}:{number}: expected '<gt path> <blur path>', got {line!r}"
            )
        sharp, blurry = root / fields[0], root / fields[1]
        for path in (blurry, sharp):
            if not path.is_file():
                raise PathNotFoundError(f"{list_file}:{number}: listed file not found: {path}")
        pairs.append((blurry, sharp))
    if not pairs:
        raise DatasetError(f"RealBlur list file {list_file} lists no pairs")
    return pairs


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array (16 bits rounded to 8, grey
    repeated); a corrupt or truncated file raises ``ImageFileError`` naming it."""
    return read_rgb8(path)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


class PairedImageDataset(Dataset):
    """``(blurry, sharp)`` tensors from a list of file pairs.

    Args:
        pairs: ``(blurry path, sharp path)`` tuples; sorted here by the blurry path
            relative to ``root`` (digit runs compared as numbers).
        train: random crop + flips when True; whole images or a centre crop when False.
        crop: crop side in pixels; ``None`` keeps whole images (train mode then only flips).
        seed: ``None`` for torch's global RNG, or an int for per-sample generators
            ``default_rng([seed, epoch, index])``.
        return_key: also return the blurry file's path relative to ``root``, as a string.
        root: folder that keys are relative to (default: the pairs' common folder).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        train: bool = False,
        crop: int | None = None,
        seed: int | None = None,
        return_key: bool = False,
        root: str | Path | None = None,
    ) -> None:
        if not pairs:
            raise DatasetError("no image pairs given")
        if crop is not None and crop < 1:
            raise OptionError(f"crop must be positive or None, got {crop}")
        if seed is not None and seed < 0:
            raise OptionError(f"seed must be non-negative or None, got {seed}")
        pairs = [(Path(b), Path(s)) for b, s in pairs]
        if root is None:
            root = os.path.commonpath([str(b.parent) for b, _ in pairs])
        self.root = Path(root)
        self.pairs = sorted(pairs, key=lambda pair: _natural_key(self._key(pair[0])))
        self.train = train
        self.crop = crop
        self.seed = seed
        self.return_key = return_key
        self.epoch = 0

    def _key(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (only matters with an int ``seed``)."""
        if epoch < 0:
            raise OptionError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def _draws(self, index: int, h: int, w: int, c: int) -> tuple[int, int, bool, bool]:
        """Random crop corner and flips of a training sample."""
        if self.seed is None:
            top = int(torch.randint(h - c + 1, ()).item())
            left = int(torch.randint(w - c + 1, ()).item())
            hflip, vflip = (torch.rand(2) < 0.5).tolist()
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            top, left = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            hflip, vflip = (rng.random(2) < 0.5).tolist()
        return top, left, hflip, vflip

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise DatasetIndexError(f"index {index} out of range for {len(self)} pairs")
        index %= len(self)
        blurry_path, sharp_path = self.pairs[index]
        blurry, sharp = read_image(blurry_path), read_image(sharp_path)
        if blurry.shape != sharp.shape:
            raise DatasetError(
                f"size mismatch: {blurry_path} is {blurry.shape[1]}x{blurry.shape[0]} but "
                f"{sharp_path} is {sharp.shape[1]}x{sharp.shape[0]} (width x height)"
            )
        h, w = blurry.shape[:2]
        hflip = vflip = False
        if self.crop is not None:
            c = self.crop
            if c > min(h, w):
                raise DatasetError(f"crop {c} is larger than {blurry_path} ({w}x{h})")
            if self.train:
                top, left, hflip, vflip = self._draws(index, h, w, c)
            else:
                top, left = (h - c) // 2, (w - c) // 2
            blurry = blurry[top : top + c, left : left + c]
            sharp = sharp[top : top + c, left : left + c]
        elif self.train:
            _, _, hflip, vflip = self._draws(index, h, w, min(h, w))
        if hflip:
            blurry, sharp = blurry[:, ::-1], sharp[:, ::-1]
        if vflip:
            blurry, sharp = blurry[::-1], sharp[::-1]
        out = (_to_tensor(blurry), _to_tensor(sharp))
        if self.return_key:
            return (*out, self._key(blurry_path))
        return out


class GoProDataset(PairedImageDataset):
    """GoPro (``GOPRO_Large``) pairs; see :func:`gopro_pairs` and :class:`PairedImageDataset`.

    ``train`` defaults to ``split == "train"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        gamma: bool = False,
        train: bool | None = None,
        crop: int | None = None,
        seed: int | None = None,
        return_key: bool = False,
    ) -> None:
        pairs = gopro_pairs(root, split, gamma)
        super().__init__(
            pairs,
            train=split == "train" if train is None else train,
            crop=crop,
            seed=seed,
            return_key=return_key,
            root=pairs[0][0].parents[2],
        )


class HIDEDataset(PairedImageDataset):
    """HIDE pairs; see :func:`hide_pairs` and :class:`PairedImageDataset`.

    ``train`` defaults to ``split == "train"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        subset: str = "all",
        train: bool | None = None,
        crop: int | None = None,
        seed: int | None = None,
        return_key: bool = False,
    ) -> None:
        pairs = hide_pairs(root, split, subset)
        super().__init__(
            pairs,
            train=split == "train" if train is None else train,
            crop=crop,
            seed=seed,
            return_key=return_key,
            root=pairs[0][1].parent.parent,
        )


class RealBlurDataset(PairedImageDataset):
    """RealBlur pairs from the authors' list files; see :func:`realblur_pairs`.

    ``train`` defaults to ``split == "train"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        variant: str = "J",
        train: bool | None = None,
        crop: int | None = None,
        seed: int | None = None,
        return_key: bool = False,
    ) -> None:
        super().__init__(
            realblur_pairs(root, split, variant),
            train=split == "train" if train is None else train,
            crop=crop,
            seed=seed,
            return_key=return_key,
            root=root,
        )
