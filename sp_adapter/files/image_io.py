"""Image files in and out, keeping what the user stored: mode, bit depth, alpha, colour profile.

A file is read into :class:`ImageData`: its pixels as stored (8 or 16 bits; grey, grey and
alpha, RGB or RGBA) and what is needed to write a result back in the same form. Pillow
reads 16-bit colour only as 8 bits and writes no 16-bit colour PNG, so 16-bit colour PNGs
are decoded with torchvision and encoded here, and TIFFs go through tifffile. A file that
cannot be read raises :class:`~sp_adapter.errors.ImageFileError` naming it.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sp_adapter.errors import ImageFileError, ImageInputError, PathNotFoundError, SPAdapterError
from sp_adapter.files.atomic import write_atomic

__all__ = ["ImageData", "from_network", "read_image", "read_rgb8", "to_network",
           "write_image", "writable_suffix"]

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
    2 (grey, alpha), 3 (RGB) or 4 (RGBA), and its Pillow format name and colour profile."""

    pixels: np.ndarray
    format: str
    icc_profile: bytes | None = None

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


def _read_tiff(path: Path) -> np.ndarray | None:
    """A grey or RGB(A) TIFF's 8- or 16-bit pixels read by tifffile (Pillow reads 16-bit
    colour as 8 bits and no grey+alpha); ``None`` for any other TIFF, left to Pillow."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if (page.dtype not in (np.uint8, np.uint16)
                    or int(page.photometric) not in (1, 2)):  # 1: grey (0 is black), 2: RGB
                return None
            pixels = page.asarray()
    except Exception:  # a compression tifffile cannot decode without imagecodecs, ...
        return None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] > 4:
        return None
    return pixels


def _tiff_icc(path: Path) -> bytes | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags.get("InterColorProfile")
        return bytes(tag.value) if tag is not None else None


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


def _decode(path: Path) -> ImageData:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic in (b"II*\x00", b"MM\x00*"):
        pixels = _read_tiff(path)
        if pixels is not None:
            return ImageData(np.ascontiguousarray(pixels), "TIFF", _tiff_icc(path))
    with Image.open(path) as image:
        fmt = image.format or path.suffix.lstrip(".").upper()
        icc = image.info.get("icc_profile")
        pixels = None
        # Pillow reads 16-bit grey ("I;16") but 16-bit colour and grey+alpha only as 8 bits
        if fmt == "PNG" and _png_header(path)[0] == 16 and _png_header(path)[1] != 0:
            pixels = _read_png16(path)
        if pixels is None:
            image.load()  # decode now, so a truncated file fails here, with its name
            pixels = _pillow_pixels(image, path)
    return ImageData(np.ascontiguousarray(pixels), fmt, icc or None)


def read_image(path: str | Path) -> ImageData:
    """Read an image file as stored (see :class:`ImageData`); a file that is not an image,
    or is truncated or corrupt, raises :class:`~sp_adapter.errors.ImageFileError`."""
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError(f"no such image file: {path}")
    try:
        return _decode(path)
    except SPAdapterError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError, struct.error,
            zlib.error) as err:
        # Pillow's UnidentifiedImageError and "image file is truncated" are OSErrors
        raise ImageFileError(
            f"cannot read the image {path}: {err} (the file is not an image, or it is "
            "truncated or corrupt; check it opens in an image viewer, or re-copy it)"
        ) from None


def read_rgb8(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB: 16 bits rounded to 8, grey repeated in the
    three channels, alpha dropped (the form the datasets train and score on)."""
    image = read_image(path)
    pixels = image.pixels
    if image.bits == 16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    colour = pixels[..., :1] if image.channels <= 2 else pixels[..., :3]
    return np.ascontiguousarray(np.broadcast_to(colour, (*pixels.shape[:2], 3)))


# -- to and from the network ---------------------------------------------------------------
def to_network(image: ImageData) -> torch.Tensor:
    """The ``(1, 3, H, W)`` float input in [0, 1]: grey is repeated in the three channels
    and alpha left out (:func:`from_network` puts it back)."""
    scale = 65535.0 if image.bits == 16 else 255.0
    colour = image.pixels[..., :1] if image.channels <= 2 else image.pixels[..., :3]
    x = torch.from_numpy(colour.astype(np.float32) / scale).permute(2, 0, 1)
    return x.expand(3, -1, -1).contiguous()[None]


def from_network(output: torch.Tensor, like: ImageData) -> ImageData:
    """The network's ``(1, 3, H, W)`` output as an image stored like ``like``: the same
    bit depth and channels, grey as the mean of the three channels, ``like``'s alpha
    untouched."""
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
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return _PNG_SIGNATURE + b"".join(chunks)


def _tiff_bytes(image: ImageData) -> bytes:
    import tifffile

    buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare handle
    c = image.channels
    tifffile.imwrite(buffer, image.pixels if c > 1 else image.pixels[..., 0],
                     photometric="rgb" if c >= 3 else "minisblack",
                     extrasamples=["unassalpha"] if image.has_alpha else None,
                     iccprofile=image.icc_profile)
    return buffer.getvalue()


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
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95

    def write(handle) -> None:
        picture.save(handle, format=fmt, **options)
    return write


def write_image(path: str | Path, image: ImageData) -> Path:
    """Write ``image`` atomically in the format its extension names, keeping its bit depth,
    channels and colour profile (16-bit only as PNG or TIFF)."""
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
