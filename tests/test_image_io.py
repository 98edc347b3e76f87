"""Image I/O keeps what the user stored: EXIF orientation and camera metadata, every frame
(or a refusal naming the file), and refuses decompression bombs with a limit the caller
can raise."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sp_adapter.errors import ImageFileError, ImageTooLargeError, MultiFrameImageError
from sp_adapter.files.image_io import (
    DEFAULT_MAX_PIXELS,
    ImageData,
    from_network,
    read_image,
    to_network,
    write_image,
)

RNG = np.random.default_rng(0)


def _camera_exif() -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # Orientation: rotate 90 degrees clockwise to display
    exif[271], exif[272] = "Canon", "EOS R5"
    exif[306] = "2024:01:02 03:04:05"
    exif.get_ifd(0x8769)[0x829A] = (1, 250)  # ExposureTime, in the EXIF sub-directory
    return exif.tobytes()


def _deblurred_copy(source: Path, target: Path) -> Path:
    """What ``sp-adapter deblur`` does to a file, with the identity as the network."""
    image = read_image(source)
    return write_image(target, from_network(to_network(image), image))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_orientation_and_camera_metadata_survive_a_deblur(tmp_path, suffix):
    pixels = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    source = tmp_path / f"photo{suffix}"
    Image.fromarray(pixels).save(source, exif=_camera_exif())
    out = _deblurred_copy(source, tmp_path / f"out{suffix}")
    assert read_image(out).pixels.shape == (20, 30, 3)  # pixels as stored, tag kept
    with Image.open(out) as written:
        exif = written.getexif()
    if suffix == ".tif":  # Pillow turns TIFFs as their tag says when it opens them
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].tags["Orientation"].value == 6
    else:
        assert exif.get(274) == 6
    assert (exif.get(271), exif.get(272), exif.get(306)) == ("Canon", "EOS R5",
                                                            "2024:01:02 03:04:05")
    if suffix != ".tif":  # a TIFF keeps the first-directory tags only (documented)
        assert exif.get_ifd(0x8769).get(0x829A) == (1, 250)


def test_a_16_bit_png_keeps_its_exif(tmp_path):
    pixels = RNG.integers(0, 65535, (8, 8, 3)).astype(np.uint16)
    write_image(tmp_path / "a.png", ImageData(pixels, "PNG", None, _camera_exif()))
    back = read_image(tmp_path / "a.png")
    assert back.bits == 16 and np.array_equal(back.pixels, pixels)
    with Image.open(tmp_path / "a.png") as written:
        assert written.getexif().get(274) == 6


def test_an_image_without_exif_gets_none(tmp_path):
    Image.fromarray(RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").exif is None
    _deblurred_copy(tmp_path / "a.png", tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as written:
        assert len(written.getexif()) == 0


def _gif(path: Path, frames: int) -> list[np.ndarray]:
    images = [Image.fromarray(np.full((16, 16, 3), 40 * (i + 1), np.uint8)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return [np.asarray(image) for image in images]


def test_an_animated_gif_is_refused_naming_the_file_unless_a_frame_is_chosen(tmp_path):
    frames = _gif(tmp_path / "clip.gif", 3)
    with pytest.raises(MultiFrameImageError, match=r"clip\.gif holds 3 frames.*"
                                                   r"read_image\(path, frame=i\), 0 <= i < 3"):
        read_image(tmp_path / "clip.gif")
    second = read_image(tmp_path / "clip.gif", frame=1)
    assert np.array_equal(second.pixels, frames[1])
    assert not np.array_equal(second.pixels, frames[0])
    with pytest.raises(ImageFileError, match=r"clip\.gif holds 3 frames; frame 3 does not"):
        read_image(tmp_path / "clip.gif", frame=3)
    _gif(tmp_path / "still.gif", 1)
    assert read_image(tmp_path / "still.gif").pixels.shape == (16, 16, 3)  # one frame: read


def test_a_multi_page_tiff_is_refused_unless_a_page_is_chosen(tmp_path):
    pages = RNG.integers(0, 65535, (2, 16, 16, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scan.tif", pages, photometric="rgb")
    with pytest.raises(MultiFrameImageError, match=r"scan\.tif holds 2 frames"):
        read_image(tmp_path / "scan.tif")
    assert np.array_equal(read_image(tmp_path / "scan.tif", frame=1).pixels, pages[1])


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A 50-byte PNG whose header claims ``width x height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_naming_the_file_and_the_pixel_count(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 10000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png claims 200,000,000 pixels, more "
                                                 r"than the limit of 178,956,970.*max_pixels="
                                                 r"200000000") as info:
        read_image(bomb)
    assert isinstance(info.value, ImageFileError) and isinstance(info.value, ValueError)
    assert DEFAULT_MAX_PIXELS == 178_956_970


def test_the_pixel_limit_can_be_lowered_or_raised_by_the_caller(tmp_path, monkeypatch):
    pixels = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb")
    for name in ("a.png", "a.tif"):  # Pillow's and tifffile's routes
        with pytest.raises(ImageTooLargeError, match=rf"{name} claims 30x20 = 600 pixels, "
                                                     r"more than the limit of 599"):
            read_image(tmp_path / name, max_pixels=599)
        assert np.array_equal(read_image(tmp_path / name, max_pixels=600).pixels, pixels)
    # a limit above Pillow's own (here made tiny) is honoured, and Pillow's is restored
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageTooLargeError, match=r"claims 600 pixels, more than the limit "
                                                 r"of 200"):
        read_image(tmp_path / "a.png", max_pixels=200)
    assert np.array_equal(read_image(tmp_path / "a.png").pixels, pixels)
    assert np.array_equal(read_image(tmp_path / "a.png", max_pixels=None).pixels, pixels)
    assert Image.MAX_IMAGE_PIXELS == 100
