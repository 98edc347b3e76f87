"""Image files in and out, keeping what the user stored: mode, bit depth, alpha, colour
profile and camera metadata (EXIF).

A file is read into :class:`ImageData`: its pixels as stored (8 or 16 bits; grey, grey and
alpha, RGB or RGBA) and what is needed to write a result back in the same form. Pillow
reads 16-bit colour only as 8 bits and writes no 16-bit colour PNG, so 16-bit colour PNGs
are decoded with torchvision and encoded here, and TIFFs go through tifffile. A file that
cannot be read raises :class:`~sp_adapter.errors.ImageFileError` naming it.

What reading promises, so nothing of the user's is lost without a word:

* EXIF orientation is kept, not applied: the pixels stay as stored and the orientation tag
  is written back with them, so the result displays turned exactly as the input does.
  The rest of the EXIF block (camera, lens, exposure, date) is written back too (to a TIFF
  only its first-directory tags: orientation, make, model, date, artist, copyright).
* A file with several frames (an animated GIF, APNG or WebP, a multi-page TIFF) is
  refused with :class:`~sp_adapter.errors.MultiFrameImageError` naming it, unless a
  ``frame`` is chosen: deblurring the first frame alone would drop the others. A camera's
  MPO file (a JPEG with a second, preview picture) is read as its main picture.
* A file claiming more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`,
  Pillow's own decompression-bomb limit) is refused with
  :class:`~sp_adapter.errors.ImageTooLargeError` naming it and its pixel count before
  anything is decoded; the caller can raise the limit, or lift it with ``None``.

Example: deblur one photo with any network taking ``(1, 3, H, W)`` images in [0, 1]
(:func:`sp_adapter.inference.run_padded` pads it to the network's size multiple)::

    from sp_adapter.files.image_io import from_network, read_image, to_network, write_image
    from sp_adapter.inference import run_padded

    image = read_image("photo.jpg")            # 8 or 16 bits, alpha, profile, EXIF kept
    with torch.inference_mode():
        restored = run_padded(net, to_network(image), multiple=8)
    write_image("photo_deblurred.jpg", from_network(restored, image))
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sp_adapter.errors import (
    ImageFileError,
    ImageInputError,
    ImageTooLargeError,
    MultiFrameImageError,
    PathNotFoundError,
    SPAdapterError,
)
from sp_adapter.files.atomic import write_atomic

__all__ = ["DEFAULT_MAX_PIXELS", "ImageData", "from_network", "read_image", "read_rgb8",
           "to_network", "write_image", "writable_suffix"]

DEFAULT_MAX_PIXELS = 178_956_970
"""The most pixels (width x height) :func:`read_image` reads unless told otherwise:
Pillow's decompression-bomb limit (twice its ``Image.MAX_IMAGE_PIXELS`` of 89,478,485),
about 13,000 x 13,000. A genuine larger photo is read with a higher ``max_pixels``."""
_PILLOW_LIMIT = threading.Lock()
_EXIF_PREFIX = b"Exif\x00\x00"
# first-directory EXIF tags a TIFF written by tifffile keeps: ASCII ones, then Orientation
_TIFF_TEXT_TAGS = {271: "Make", 272: "Model", 315: "Artist", 33432: "Copyright"}
_ORIENTATION, _DATETIME = 274, 306

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNEL_NAMES = {1: "greyscale", 2: "greyscale+alpha", 3: "RGB", 4: "RGBA"}
# Pillow modes read as they are, and those converted first (the file's mode is then lost:
# palettes become truecolour, CMYK/YCbCr/LAB become RGB)
_DIRECT = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB",
            "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


@dataclass(frozen=True)
class ImageData:
    """An image file's pixels as stored, ``(H, W, C)`` uint8 or uint16 with ``C`` 1 (grey),
    2 (grey, alpha), 3 (RGB) or 4 (RGBA), its Pillow format name, colour profile and EXIF
    block (``b"Exif\\0\\0"`` and a TIFF-structured block, as JPEG stores it; ``None``
    when the file has none).

    Example::

        image = read_image("scan.tif")
        image.describe()          # "RGB, 16-bit"
        image.pixels.shape        # (H, W, 3), uint16
    """

    pixels: np.ndarray
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    def describe(self) -> str:
        """E.g. ``"RGBA, 16-bit"``."""
        return f"{_CHANNEL_NAMES[self.channels]}, {self.bits}-bit"


# -- reading -----------------------------------------------------------------------------
def _png_header(path: Path) -> tuple[int, int]:
    """A PNG's bit depth and colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return 8, 2
    return head[24], head[25]


def _read_png16(path: Path) -> np.ndarray | None:
    """A 16-bit colour PNG's pixels, decoded by torchvision (``None`` where this torchvision
    decodes no PNGs: Pillow then reads 8 bits, with a warning)."""
    try:
        from torchvision.io import ImageReadMode, decode_png, read_file
    except ImportError:
        warnings.warn(f"{path}: this torchvision decodes no PNGs, so the 16-bit image is "
                      "read (and written) as 8 bits", stacklevel=3)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's move to torchcodec
        decoded = decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
    return decoded.permute(1, 2, 0).contiguous().numpy().astype(np.uint16)


def _tiff_pages(tif) -> list:
    """The full-resolution pages of a TIFF (reduced-resolution previews left out)."""
    return [page for page in tif.pages if not getattr(page, "is_reduced", False)]


def _tiff_exif(page) -> bytes | None:
    """The first-directory EXIF tags of a TIFF page (orientation, make, model, ...)."""
    exif = Image.Exif()
    for code in (*_TIFF_TEXT_TAGS, _ORIENTATION, _DATETIME):
        tag = page.tags.get(code)
        if tag is not None:
            exif[code] = tag.value
    return exif.tobytes() if len(exif) else None


def _read_tiff(path: Path, frame: int | None, max_pixels: int | None) -> ImageData | None:
    """A grey or RGB(A) TIFF's 8- or 16-bit pixels read by tifffile (Pillow reads 16-bit
    colour as 8 bits and no grey+alpha); ``None`` for any other TIFF, left to Pillow. The
    frame count and the pixel limit are checked before any pixel is decoded."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = _tiff_pages(tif)
            page = pages[_chosen_frame(path, frame, len(pages))]
            height, width = page.shape[:2] if page.ndim >= 2 else (1, 1)
            _check_pixels(path, width, height, max_pixels)
            if (page.dtype not in (np.uint8, np.uint16)
                    or int(page.photometric) not in (1, 2)):  # 1: grey (0 is black), 2: RGB
                return None
            pixels = page.asarray()
            tag = page.tags.get("InterColorProfile")
            icc = bytes(tag.value) if tag is not None else None
            exif = _tiff_exif(page)
    except SPAdapterError:
        raise
    except Exception:  # a compression tifffile cannot decode without imagecodecs, ...
        return None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] > 4:
        return None
    return ImageData(np.ascontiguousarray(pixels), "TIFF", icc, exif)


def _pillow_pixels(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode in _CONVERT:
        mode = _CONVERT[mode]
        image = image.convert(mode)
    if mode in _DIRECT:
        pixels = np.asarray(image)
        return pixels.reshape(*pixels.shape[:2], _DIRECT[mode])
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)[..., None]
    if mode == "I":
        values = np.asarray(image)
        if values.min() >= 0 and values.max() <= 65535:
            return values.astype(np.uint16)[..., None]
    raise ImageFileError(
        f"{path}: pixels of mode {image.mode!r} are not supported (8- or 16-bit greyscale, "
        "RGB or RGBA are); convert the image to one of those first")


def _chosen_frame(path: Path, frame: int | None, count: int) -> int:
    """The index of the frame to read from a file of ``count`` frames."""
    if frame is None:
        if count > 1:
            raise MultiFrameImageError(
                f"{path} holds {count} frames (an animated or multi-page image); deblurring "
                "its first frame alone would drop the others, so it is refused: choose one "
                f"with read_image(path, frame=i), 0 <= i < {count}, or split the frames into "
                "separate image files first"
            )
        return 0
    if not 0 <= frame < count:
        raise ImageFileError(f"{path} holds {count} frame{'s' if count > 1 else ''}; frame "
                             f"{frame} does not exist (0 <= frame < {count})")
    return frame


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        _refuse_size(path, width * height, max_pixels, f"{width}x{height} = ")


def _refuse_size(path: Path, pixels: int, max_pixels: int, size: str = "") -> None:
    raise ImageTooLargeError(
        f"{path} claims {size}{pixels:,} pixels, more than the limit of {max_pixels:,} (a "
        "guard against decompression bombs: small files whose header claims a huge image); "
        "if the image is genuine, raise the limit: read_image(path, "
        f"max_pixels={pixels}), or max_pixels=None for none"
    )


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Let Pillow open images up to ``max_pixels`` (``None``: any size). Its own check
    (a module-wide setting) is lifted only while a file above it is read with a limit the
    caller raised; :func:`read_image` checks ``max_pixels`` itself."""
    threshold = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if threshold is None or (max_pixels is not None and max_pixels <= 2 * threshold):
            yield
            return
        with _PILLOW_LIMIT:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = previous


def _pillow_exif(image: Image.Image) -> bytes | None:
    raw = image.info.get("exif")
    if isinstance(raw, bytes) and raw:
        return raw if raw.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + raw
    exif = image.getexif()
    return exif.tobytes() if len(exif) else None


def _decode(path: Path, frame: int | None, max_pixels: int | None) -> ImageData:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic in (b"II*\x00", b"MM\x00*"):
        data = _read_tiff(path, frame, max_pixels)
        if data is not None:
            return data
    with Image.open(path) as image:
        _check_pixels(path, image.width, image.height, max_pixels)
        fmt = image.format or path.suffix.lstrip(".").upper()
        # an MPO (camera JPEG with a preview picture) is its main picture
        count = 1 if fmt == "MPO" else int(getattr(image, "n_frames", 1))
        index = _chosen_frame(path, frame, count)
        if index:
            image.seek(index)
        icc = image.info.get("icc_profile")
        pixels = None
        # Pillow reads 16-bit grey ("I;16") but 16-bit colour and grey+alpha only as 8 bits
        if (fmt == "PNG" and count == 1 and _png_header(path)[0] == 16
                and _png_header(path)[1] != 0):
            pixels = _read_png16(path)
        if pixels is None:
            image.load()  # decode now, so a truncated file fails here, with its name
            pixels = _pillow_pixels(image, path)
        exif = _pillow_exif(image)
        fmt = "JPEG" if fmt == "MPO" else fmt
    return ImageData(np.ascontiguousarray(pixels), fmt, icc or None, exif)


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               frame: int | None = None) -> ImageData:
    """Read an image file as stored (see :class:`ImageData` and the module docstring).

    Args:
        path: the image file (PNG, JPEG, TIFF, WebP, GIF, BMP, ...).
        max_pixels: refuse files claiming more pixels (width x height) than this, before
            decoding them (:data:`DEFAULT_MAX_PIXELS`, Pillow's decompression-bomb limit);
            ``None`` lifts the limit.
        frame: which frame of an animated or multi-page file to read (from 0). ``None``
            (the default) refuses a file with several frames.

    Raises:
        ImageFileError: not an image, truncated or corrupt (naming the file).
        ImageTooLargeError: more than ``max_pixels`` pixels (naming the file and count).
        MultiFrameImageError: several frames and no ``frame`` chosen.

    Example::

        image = read_image("photo.jpg")
        huge = read_image("panorama.tif", max_pixels=400_000_000)
        second = read_image("clip.gif", frame=1)
    """
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError(f"no such image file: {path}")
    try:
        with _pillow_limit(max_pixels):
            return _decode(path, frame, max_pixels)
    except SPAdapterError:
        raise
    except Image.DecompressionBombError as err:
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        _refuse_size(path, int(claimed.group(1)) if claimed else 0,
                     max_pixels if max_pixels is not None else DEFAULT_MAX_PIXELS)
        raise  # not reached: _refuse_size raises
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError, struct.error,
            zlib.error) as err:
        # Pillow's UnidentifiedImageError and "image file is truncated" are OSErrors
        raise ImageFileError(
            f"cannot read the image {path}: {err} (the file is not an image, or it is "
            "truncated or corrupt; check it opens in an image viewer, or re-copy it)"
        ) from None


def read_rgb8(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB: 16 bits rounded to 8, grey repeated in the
    three channels, alpha dropped (the form the datasets train and score on).

    Example::

        rgb = read_rgb8("sharp/0001.png")   # (H, W, 3) uint8
    """
    image = read_image(path, max_pixels=max_pixels)
    pixels = image.pixels
    if image.bits == 16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    colour = pixels[..., :1] if image.channels <= 2 else pixels[..., :3]
    return np.ascontiguousarray(np.broadcast_to(colour, (*pixels.shape[:2], 3)))


# -- to and from the network ---------------------------------------------------------------
def to_network(image: ImageData) -> torch.Tensor:
    """The ``(1, 3, H, W)`` float input in [0, 1]: grey is repeated in the three channels
    and alpha left out (:func:`from_network` puts it back).

    Example::

        x = to_network(read_image("photo.png"))   # (1, 3, H, W) float32 in [0, 1]
    """
    scale = 65535.0 if image.bits == 16 else 255.0
    colour = image.pixels[..., :1] if image.channels <= 2 else image.pixels[..., :3]
    x = torch.from_numpy(colour.astype(np.float32) / scale).permute(2, 0, 1)
    return x.expand(3, -1, -1).contiguous()[None]


def from_network(output: torch.Tensor, like: ImageData) -> ImageData:
    """The network's ``(1, 3, H, W)`` output as an image stored like ``like``: the same
    bit depth and channels, grey as the mean of the three channels, ``like``'s alpha,
    colour profile and EXIF untouched.

    Example::

        image = read_image("photo.png")
        write_image("out.png", from_network(net(to_network(image)).clamp(0, 1), image))
    """
    y = output.detach().float().clamp(0, 1)[0].cpu()
    if like.channels <= 2:
        y = y.mean(0, keepdim=True)
    scale = 65535.0 if like.bits == 16 else 255.0
    colour = y.mul(scale).round().permute(1, 2, 0).numpy().astype(like.pixels.dtype)
    if colour.shape[:2] != like.pixels.shape[:2]:
        raise ImageInputError(f"the output is {colour.shape[1]}x{colour.shape[0]}, the image "
                              f"{like.pixels.shape[1]}x{like.pixels.shape[0]} (width x height)")
    if like.has_alpha:
        colour = np.concatenate([colour, like.pixels[..., -1:]], axis=2)
    return replace(like, pixels=np.ascontiguousarray(colour))


# -- writing ---------------------------------------------------------------------------------
def writable_suffix(suffix: str) -> bool:
    """Whether an image can be written to a file with this extension (e.g. ``".png"``)."""
    Image.init()
    return suffix.lower() in Image.registered_extensions()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png16_bytes(image: ImageData) -> bytes:
    """A 16-bit PNG of ``image`` (no row filters; Pillow writes no 16-bit colour PNGs)."""
    h, w, c = image.pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = image.pixels.astype(">u2").reshape(h, w * c).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter byte 0
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if image.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(image.icc_profile)))
    if image.exif:
        exif = image.exif
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(_EXIF_PREFIX) else exif))
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return _PNG_SIGNATURE + b"".join(chunks)


def _tiff_bytes(image: ImageData) -> bytes:
    import tifffile

    buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare handle
    c = image.channels
    extratags, stamp = _tiff_exif_tags(image.exif)
    tifffile.imwrite(buffer, image.pixels if c > 1 else image.pixels[..., 0],
                     photometric="rgb" if c >= 3 else "minisblack",
                     extrasamples=["unassalpha"] if image.has_alpha else None,
                     iccprofile=image.icc_profile, extratags=extratags,
                     datetime=stamp)
    return buffer.getvalue()


def _tiff_exif_tags(exif_bytes: bytes | None) -> tuple[list[tuple], str | None]:
    """tifffile ``extratags`` for the first-directory EXIF tags a TIFF keeps, and the
    EXIF date (``None``: tifffile writes none)."""
    if not exif_bytes:
        return [], None
    exif = Image.Exif()
    exif.load(exif_bytes)
    tags: list[tuple] = []
    for code in _TIFF_TEXT_TAGS:
        value = exif.get(code)
        if isinstance(value, str) and value:
            tags.append((code, "s", 0, value, True))
    orientation = exif.get(_ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        tags.append((_ORIENTATION, "H", 1, orientation, True))
    stamp = exif.get(_DATETIME)
    return tags, stamp if isinstance(stamp, str) and stamp else None


def _pillow_writer(image: ImageData, fmt: str):
    pixels = image.pixels
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.channels]
    if image.bits == 16:
        if image.channels != 1:
            raise ImageFileError(f"{fmt} cannot store 16-bit {_CHANNEL_NAMES[image.channels]} "
                                 "pixels; write PNG or TIFF")
        picture = Image.fromarray(pixels[..., 0].astype("<u2"), mode="I;16")
    else:
        picture = Image.fromarray(pixels if image.channels > 1 else pixels[..., 0], mode=mode)
    options: dict = {"icc_profile": image.icc_profile} if image.icc_profile else {}
    if image.exif and fmt in ("JPEG", "PNG", "WEBP"):
        options["exif"] = image.exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95

    def write(handle) -> None:
        picture.save(handle, format=fmt, **options)
    return write


def write_image(path: str | Path, image: ImageData) -> Path:
    """Write ``image`` atomically in the format its extension names, keeping its bit depth,
    channels, colour profile and EXIF (16-bit only as PNG or TIFF; EXIF in JPEG, PNG, WebP
    and, its first-directory tags, TIFF).

    Example::

        image = read_image("photo.png")
        write_image("copy.png", image)   # same pixels, bit depth, alpha, profile, EXIF
    """
    path = Path(path)
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageFileError(f"cannot write {path}: {path.suffix!r} is no image format known "
                             "to Pillow (write .png, .jpg, .tif, ...)")
    if fmt == "PNG" and image.bits == 16:
        return write_atomic(path, _png16_bytes(image))
    if fmt == "TIFF":
        return write_atomic(path, _tiff_bytes(image))
    return write_atomic(path, _pillow_writer(image, fmt))
