"""Sharp colour photos that ship inside installed wheels, loaded offline.

Sources, in this order:

* scikit-image (of the ``demo`` extra): ``astronaut``, ``chelsea``, ``coffee``, ``rocket``,
  ``stereo_motorcycle`` (its left view), ``hubble_deep_field``, ``immunohistochemistry``,
  ``retina``. A photo is offered only if its file is bundled inside the installed
  ``skimage/data`` folder, so listing or loading never triggers a download.
* scikit-learn (of the ``demo`` extra): ``china``, ``flower`` (``load_sample_image``).
* matplotlib (of the ``demo`` extra): ``grace_hopper`` (``cbook.get_sample_data``).

Extra training photos, outside the default split and used only where named
(``SyntheticBlurDataset(photos=...)``):

* greyscale (given as three equal channels), :data:`GREY_PHOTOS` = ``camera``, ``coins``,
  ``brick``, ``grass``, ``gravel``, ``moon`` (scikit-image, bundled);
* colour, :data:`WHEEL_PHOTOS` = ``quokka`` (an animal outdoors, bundled in the imgaug
  wheel) and ``luispedro`` (a portrait, bundled in the mahotas wheel). Neither package is
  a dependency or ever imported: only its bundled file is read, so
  ``pip install --no-deps imgaug mahotas`` is enough to offer them.

The split is fixed by name: :data:`TEST_PHOTOS` = ``chelsea``, ``coffee``, ``rocket``,
``china`` (four natural scenes: fur, an indoor still life, an outdoor scene with sky, a
building among trees); the other seven photos are for training. All eleven are required
(a missing test photo is an error), so the split is the same on every installation, and
no test photo is ever used for training. Without the ``demo`` extra
(``pip install "sp-adapter[demo]"``) every function here raises
:class:`~sp_adapter.errors.MissingExtraError`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from sp_adapter.errors import ImageTypeError, OptionError, PhotoError, PhotoNotFoundError
from sp_adapter.extras import import_extra

__all__ = [
    "GREY_PHOTOS",
    "TEST_PHOTOS",
    "WHEEL_PHOTOS",
    "available_photos",
    "extra_photos",
    "grey_photos",
    "list_photos",
    "load_photo",
    "photo_array",
    "photo_names",
]

TEST_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "rocket", "china")

# name -> file bundled in skimage/data (checked before loading) and the loader's name.
_SKIMAGE: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.png", "astronaut"),
    "chelsea": ("chelsea.png", "chelsea"),
    "coffee": ("coffee.png", "coffee"),
    "rocket": ("rocket.jpg", "rocket"),
    "stereo_motorcycle": ("motorcycle_left.png", "stereo_motorcycle"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "hubble_deep_field"),
    "immunohistochemistry": ("ihc.png", "immunohistochemistry"),
    "retina": ("retina.jpg", "retina"),
}
# Greyscale skimage photos of natural scenes and textures: extra training photos only.
_SKIMAGE_GREY: dict[str, tuple[str, str]] = {
    "camera": ("camera.png", "camera"),
    "coins": ("coins.png", "coins"),
    "brick": ("brick.png", "brick"),
    "grass": ("grass.png", "grass"),
    "gravel": ("gravel.png", "gravel"),
    "moon": ("moon.png", "moon"),
}
GREY_PHOTOS: tuple[str, ...] = tuple(_SKIMAGE_GREY)
_SKIMAGE_ALL = {**_SKIMAGE, **_SKIMAGE_GREY}
_SKLEARN: dict[str, str] = {"china": "china.jpg", "flower": "flower.jpg"}
_MATPLOTLIB: dict[str, str] = {"grace_hopper": "grace_hopper.jpg"}
# Extra colour photos: name -> (the package whose wheel bundles it, its path inside).
_WHEEL_FILES: dict[str, tuple[str, str]] = {
    "quokka": ("imgaug", "quokka.jpg"),
    "luispedro": ("mahotas", "demos/data/luispedro.jpg"),
}
WHEEL_PHOTOS: tuple[str, ...] = tuple(_WHEEL_FILES)


def _skimage_bundled(filename: str) -> bool:
    import_extra("skimage", "loading the built-in photos")  # the photos' main source
    spec = importlib.util.find_spec("skimage.data")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        os.path.isfile(os.path.join(folder, filename)) for folder in spec.submodule_search_locations
    )


def _wheel_file(name: str) -> str | None:
    """The path of extra photo ``name`` inside its installed package, or ``None``. The
    package is only located, never imported (its own imports may not work here)."""
    package, relative = _WHEEL_FILES[name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        path = os.path.join(folder, *relative.split("/"))
        if os.path.isfile(path):
            return path
    return None


def _wheel_photos() -> list[str]:
    """The extra colour photos whose files are installed here, in a fixed order."""
    return [name for name in _WHEEL_FILES if _wheel_file(name) is not None]


def _importable(module: str) -> bool:
    """Whether an optional source imports cleanly (a broken install counts as absent)."""
    try:
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            return False
        importlib.import_module(module)
    except Exception:  # ImportError, or anything a broken optional package raises
        return False
    return True


def _load_skimage(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, _SKIMAGE_ALL[name][1])()
    return image[0] if isinstance(image, tuple) else image  # stereo: (left, right, disp)


def _load_sklearn(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(_SKLEARN[name])


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _load_matplotlib(name: str) -> np.ndarray:
    from matplotlib import cbook

    return _read_rgb(cbook.get_sample_data(_MATPLOTLIB[name], asfileobj=False))


def _load_wheel_file(name: str) -> np.ndarray:
    path = _wheel_file(name)
    if path is None:  # uninstalled since it was listed
        raise PhotoNotFoundError(f"photo {name!r}: {_WHEEL_FILES[name][0]} is no longer installed")
    return _read_rgb(path)


def _bundled_skimage(table: dict[str, tuple[str, str]]) -> list[str]:
    """The names of ``table`` whose files are bundled in scikit-image, in its order."""
    return [name for name, (filename, _) in table.items() if _skimage_bundled(filename)]


def _sources(extra: bool = False) -> dict[str, Callable[[str], np.ndarray]]:
    """Loaders of the photos available here, in a fixed order (``extra``: the extra
    training photos too, greyscale then colour, after the others)."""
    found: dict[str, Callable[[str], np.ndarray]] = dict.fromkeys(
        _bundled_skimage(_SKIMAGE), _load_skimage)
    if _importable("sklearn.datasets"):
        found.update(dict.fromkeys(_SKLEARN, _load_sklearn))
    if _importable("matplotlib.cbook"):
        found.update(dict.fromkeys(_MATPLOTLIB, _load_matplotlib))
    if extra:
        found.update(dict.fromkeys(grey_photos(), _load_skimage))
        found.update(dict.fromkeys(_wheel_photos(), _load_wheel_file))
    return found


def available_photos() -> tuple[str, ...]:
    """Names of every photo that loads offline on this installation, in a fixed order."""
    return tuple(_sources())


def extra_photos() -> tuple[str, ...]:
    """Names of the extra training photos (greyscale, then colour) that load offline
    here: outside the default split, used only where a training set names them."""
    return (*grey_photos(), *_wheel_photos())


def grey_photos() -> tuple[str, ...]:
    """Names of the greyscale extra photos bundled here (:data:`GREY_PHOTOS`): the
    held-out set of ``sp-adapter calibrate``, whatever else is installed."""
    return tuple(_bundled_skimage(_SKIMAGE_GREY))


def list_photos() -> dict[str, str]:
    """Map each available photo name to its split, ``"train"`` or ``"test"``."""
    return {name: "test" if name in TEST_PHOTOS else "train" for name in available_photos()}


def photo_names(split: str) -> tuple[str, ...]:
    """Names in ``split`` (``"train"``, ``"test"`` or ``"all"``), in a fixed order.

    Raises:
        RuntimeError: for ``"test"`` when a test photo is missing (a broken scikit-image
            install): the test set must not silently shrink.
    """
    if split not in ("train", "test", "all"):
        raise OptionError(f"split must be 'train', 'test' or 'all', got {split!r}")
    names = list_photos()
    if split == "all":
        return tuple(names)
    if split == "test":
        missing = [n for n in TEST_PHOTOS if n not in names]
        if missing:
            raise PhotoError(
                f"test photos {missing} are not available: reinstall scikit-image and "
                "scikit-learn (their wheels ship them)"
            )
        return TEST_PHOTOS
    return tuple(n for n, s in names.items() if s == "train")


@lru_cache(maxsize=32)
def photo_array(name: str) -> np.ndarray:
    """Photo ``name`` as a cached, read-only ``(H, W, 3)`` uint8 RGB array (a greyscale
    photo as three equal channels)."""
    sources = _sources(extra=True)
    if name not in sources:
        known = [*_SKIMAGE, *_SKLEARN, *_MATPLOTLIB, *GREY_PHOTOS, *WHEEL_PHOTOS]
        hint = (f"; it ships in the {_WHEEL_FILES[name][0]} wheel: pip install --no-deps "
                f"{_WHEEL_FILES[name][0]}" if name in _WHEEL_FILES
                else "" if name in known else f"; known names: {known}")
        raise PhotoNotFoundError(
            f"photo {name!r} is not available offline here (available: {list(sources)}){hint}"
        )
    image = np.asarray(sources[name](name))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        raise ImageTypeError(f"photo {name!r} has dtype {image.dtype}, expected uint8")
    image = np.ascontiguousarray(image)
    image.setflags(write=False)
    return image


def load_photo(name: str) -> torch.Tensor:
    """Load photo ``name`` as a ``(3, H, W)`` float32 RGB tensor in [0, 1] (a fresh copy)."""
    image = photo_array(name)
    return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)
