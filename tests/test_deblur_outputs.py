"""``sp-adapter deblur`` keeps the user's images: names, formats, modes, bit depths, alpha,
and never writes over a file it was not asked to replace."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sp_adapter.cli import main
from sp_adapter.data import PairedImageDataset
from sp_adapter.errors import ImageFileError
from sp_adapter.files.image_io import ImageData, read_image, read_rgb8, write_image

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A bare UNet (width 8) trained for one step: any network will do for file handling."""
    folder = tmp_path_factory.mktemp("deblur") / "run"
    assert main(["train", "--run-dir", str(folder), "--no-prior", "--width", "8", "--crop",
                 "32", "--batch", "2", "--length", "4", "--steps", "1", "--alpha", "0",
                 "--perceptual", "none", "--val-limit", "1", "--no-progress"]) == 0
    return folder


def deblur(run: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["deblur", *map(str, inputs), "--run-dir", str(run), "--out", str(out),
                 "--no-progress", *extra])


def smooth(h: int, w: int, c: int, high: int = 255) -> np.ndarray:
    """A smooth random image (a network's output stays close to it)."""
    base = RNG.random((h // 4 + 2, w // 4 + 2, c))
    big = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    return np.round(big * 0.6 * high + 0.2 * high).astype(np.uint16 if high > 255 else np.uint8)


def png_bit_depth(path: Path) -> int:
    return path.read_bytes()[24]


# -- names and existing files ------------------------------------------------------------
def test_outputs_keep_each_inputs_name_and_format(run, tmp_path, capsys):
    Image.fromarray(smooth(24, 32, 3)).save(tmp_path / "a.png")
    Image.fromarray(smooth(24, 32, 3)).save(tmp_path / "a.jpg")
    out = tmp_path / "out"
    capsys.readouterr()
    assert deblur(run, out, tmp_path / "a.png", tmp_path / "a.jpg") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.png"]
    with Image.open(out / "a.png") as png, Image.open(out / "a.jpg") as jpg:
        assert (png.format, jpg.format) == ("PNG", "JPEG")
    # one line per file: what was written, in what form, from which input
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"wrote {out / 'a.png'} (RGB, 8-bit) from {tmp_path / 'a.png'}",
                     f"wrote {out / 'a.jpg'} (RGB, 8-bit) from {tmp_path / 'a.jpg'}"]


def test_an_existing_output_is_refused_before_any_work_unless_overwrite(run, tmp_path, capsys):
    for name in ("rgb.png", "other.png"):
        Image.fromarray(smooth(16, 16, 3)).save(tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "rgb.png").write_bytes(b"mine")
    capsys.readouterr()
    assert deblur(run, out, tmp_path / "other.png", tmp_path / "rgb.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{out / 'rgb.png'} already exists" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert (out / "rgb.png").read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == ["rgb.png"]  # nothing else written
    assert deblur(run, out, tmp_path / "other.png", tmp_path / "rgb.png",
                  extra=("--overwrite",)) == 0
    with Image.open(out / "rgb.png") as image:
        assert image.size == (16, 16)


def test_inputs_of_one_name_are_refused_before_any_work(run, tmp_path, capsys):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        Image.fromarray(smooth(16, 16, 3)).save(tmp_path / folder / "a.png")
    out = tmp_path / "out"
    capsys.readouterr()
    assert deblur(run, out, tmp_path / "d1", tmp_path / "d2") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "d1" / "a.png") in err and str(tmp_path / "d2" / "a.png") in err
    assert not out.exists()
    # names that differ only in case are one file on case-insensitive disks
    Image.fromarray(smooth(16, 16, 3)).save(tmp_path / "A.png")
    assert deblur(run, out, tmp_path / "A.png", tmp_path / "d1" / "a.png") == 2
    assert not out.exists()
    # the same file named twice is deblurred once
    assert deblur(run, out, tmp_path / "A.png", tmp_path / "A.png") == 0
    assert [p.name for p in out.iterdir()] == ["A.png"]


def test_an_output_that_is_its_own_input_is_refused(run, tmp_path, capsys):
    Image.fromarray(smooth(16, 16, 3)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    capsys.readouterr()
    assert deblur(run, tmp_path, tmp_path / "a.png", extra=("--overwrite",)) == 2
    assert "would replace it" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


# -- modes and bit depths ------------------------------------------------------------------
def test_alpha_is_carried_through_untouched(run, tmp_path):
    rgba = np.concatenate([smooth(20, 28, 3), RNG.integers(0, 256, (20, 28, 1), np.uint8)], 2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    grey_alpha = np.stack([smooth(20, 28, 1)[..., 0], rgba[..., 3]], axis=2)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    assert deblur(run, tmp_path / "out", tmp_path / "rgba.png", tmp_path / "la.png") == 0
    with Image.open(tmp_path / "out" / "rgba.png") as image:
        assert image.mode == "RGBA"
        assert np.array_equal(np.asarray(image)[..., 3], rgba[..., 3])
    with Image.open(tmp_path / "out" / "la.png") as image:
        assert image.mode == "LA"
        assert np.array_equal(np.asarray(image)[..., 1], rgba[..., 3])


def test_greyscale_is_deblurred_as_greyscale_and_16_bits_are_read_as_16(run, tmp_path):
    grey = smooth(24, 32, 1)[..., 0]
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # same picture
    out = tmp_path / "out"
    assert deblur(run, out, tmp_path / "g8.png", tmp_path / "g16.png") == 0
    with Image.open(out / "g8.png") as image:
        assert image.mode == "L"
        eight = np.asarray(image).astype(np.float64)
    with Image.open(out / "g16.png") as image:
        assert image.mode.startswith("I") and png_bit_depth(out / "g16.png") == 16
        sixteen = np.asarray(image).astype(np.float64)
    # the 16-bit copy deblurs to the 8-bit result (not to a nearly white picture)
    assert np.abs(sixteen / 257 - eight).max() <= 1.0
    assert abs(sixteen.mean() / 257 - grey.mean()) < 40


def test_16_bit_rgb_stays_16_bit(run, tmp_path):
    rgb8 = smooth(20, 24, 3)
    rgb16 = rgb8.astype(np.uint16) * 257  # the same picture in 16 bits
    Image.fromarray(rgb8).save(tmp_path / "rgb8.png")
    write_image(tmp_path / "rgb16.png", ImageData(rgb16, "PNG"))
    write_image(tmp_path / "rgb16.tif", ImageData(rgb16, "TIFF"))
    out = tmp_path / "out"
    assert deblur(run, out, tmp_path / "rgb8.png", tmp_path / "rgb16.png",
                  tmp_path / "rgb16.tif") == 0
    eight = read_image(out / "rgb8.png").pixels.astype(np.float64)
    for name in ("rgb16.png", "rgb16.tif"):
        result = read_image(out / name)
        assert result.pixels.dtype == np.uint16 and result.channels == 3, name
        # values between the 8-bit steps: not an 8-bit image scaled up
        assert np.any(result.pixels % 257 != 0), name
        assert np.abs(result.pixels / 257 - eight).max() <= 1.0, name
    assert png_bit_depth(out / "rgb16.png") == 16


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_image_files_round_trip_exactly(tmp_path, channels, bits, suffix):
    pixels = RNG.integers(0, 2**bits, (5, 7, channels)).astype(np.uint16 if bits == 16
                                                                 else np.uint8)
    path = write_image(tmp_path / f"x{suffix}", ImageData(pixels, "?", icc_profile=None))
    back = read_image(path)
    assert back.pixels.dtype == pixels.dtype and np.array_equal(back.pixels, pixels)
    if suffix == ".png" and bits == 16 and channels in (3, 4):
        # what other readers see: Pillow reads 16-bit colour as its high bytes
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image), (pixels >> 8).astype(np.uint8))


def test_an_icc_profile_is_kept(run, tmp_path):
    profile = b"\x00" * 16 + b"a colour profile"
    Image.fromarray(smooth(16, 16, 3)).save(tmp_path / "p.png", icc_profile=profile)
    assert deblur(run, tmp_path / "out", tmp_path / "p.png") == 0
    with Image.open(tmp_path / "out" / "p.png") as image:
        assert image.info.get("icc_profile") == profile


# -- damaged images ------------------------------------------------------------------------
def damaged_images(folder: Path) -> dict[str, Path]:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), np.uint8)).save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "junk.png").write_bytes(data[:40])
    return {"image file is truncated": folder / "cut.png",
            "cannot identify image file": folder / "junk.png"}


def test_a_damaged_image_is_an_error_naming_it(run, tmp_path, capsys):
    for reason, path in damaged_images(tmp_path).items():
        with pytest.raises(ImageFileError, match=re.escape(str(path))):
            read_image(path)
        capsys.readouterr()
        assert deblur(run, tmp_path / "out", path) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot read the image {path}: {reason}"), err


def test_a_damaged_image_in_a_dataset_is_an_error_naming_it(tmp_path):
    damaged = damaged_images(tmp_path)
    data = PairedImageDataset([(tmp_path / "full.png", damaged["image file is truncated"])])
    with pytest.raises(ImageFileError, match=re.escape(str(tmp_path / "cut.png"))):
        data[0]
    grey16 = smooth(8, 8, 1, high=65535)
    Image.fromarray(grey16[..., 0]).save(tmp_path / "g16.png")
    rgb = read_rgb8(tmp_path / "g16.png")  # 16-bit grey read as grey, not clipped to white
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - np.round(grey16[..., 0] / 257)).max() <= 1
