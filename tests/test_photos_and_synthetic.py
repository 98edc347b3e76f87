"""Built-in photos, their fixed split, and the synthetic blur dataset."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sp_adapter import photos
from sp_adapter.data.blur import MILD, SEVERE, blur_image, camera_shake_kernel
from sp_adapter.data.synthetic import MIN_SCALE, TEST_MIN_DETAIL, SyntheticBlurDataset, detail
from sp_adapter.photos import (
    TEST_PHOTOS,
    available_photos,
    list_photos,
    load_photo,
    photo_array,
    photo_names,
)

SKIMAGE_PHOTOS = {
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
}


@pytest.fixture
def fresh_photo_cache():
    photo_array.cache_clear()
    yield
    photo_array.cache_clear()


def test_bundled_skimage_photos_are_listed_with_a_fixed_disjoint_split() -> None:
    split = list_photos()
    assert set(split) >= SKIMAGE_PHOTOS
    assert TEST_PHOTOS == ("chelsea", "coffee", "rocket", "china")
    assert photo_names("test") == TEST_PHOTOS
    train, test = set(photo_names("train")), set(photo_names("test"))
    assert not train & test
    assert train | test == set(available_photos()) == set(photo_names("all"))
    assert {"astronaut", "stereo_motorcycle", "retina"} <= train
    assert all(split[name] == "test" for name in TEST_PHOTOS)
    with pytest.raises(ValueError):
        photo_names("val")


def test_photos_load_as_rgb_float_tensors() -> None:
    chelsea = load_photo("chelsea")
    assert chelsea.shape == (3, 300, 451) and chelsea.dtype == torch.float32
    assert float(chelsea.min()) >= 0.0 and float(chelsea.max()) <= 1.0
    assert float(chelsea.std()) > 0.05
    moto = load_photo("stereo_motorcycle")
    assert moto.shape == (3, 500, 741)
    import skimage.data

    left = skimage.data.stereo_motorcycle()[0]
    assert torch.equal(moto, torch.from_numpy(left.transpose(2, 0, 1).astype(np.float32) / 255))
    # a fresh copy each time: editing it must not change the cache
    moto[:] = 0
    assert float(load_photo("stereo_motorcycle").max()) > 0
    with pytest.raises(ValueError):
        photo_array("chelsea")[0, 0, 0] = 1  # read-only
    with pytest.raises(KeyError, match="not available offline"):
        load_photo("lena")


def test_photos_that_would_download_are_skipped(monkeypatch, fresh_photo_cache) -> None:
    # cells3d.tif is in scikit-image's registry but fetched with pooch, not bundled
    extended = dict(photos._SKIMAGE, cells3d=("cells3d.tif", "cells3d"))
    monkeypatch.setattr(photos, "_SKIMAGE", extended)
    assert "cells3d" not in available_photos()
    with pytest.raises(KeyError):
        load_photo("cells3d")


def test_sklearn_photos_load_through_their_package(monkeypatch, fresh_photo_cache) -> None:
    fake = types.ModuleType("sklearn")
    fake.__spec__ = importlib.machinery.ModuleSpec("sklearn", None)
    datasets = types.ModuleType("sklearn.datasets")
    image = np.full((30, 40, 3), 200, dtype=np.uint8)
    datasets.load_sample_image = lambda name: image if name == "china.jpg" else image // 2
    fake.datasets = datasets
    monkeypatch.setitem(sys.modules, "sklearn", fake)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", datasets)
    split = list_photos()
    assert split["china"] == "test" and split["flower"] == "train"
    assert photo_names("test") == TEST_PHOTOS
    torch.testing.assert_close(load_photo("china"), torch.full((3, 30, 40), 200 / 255))
    torch.testing.assert_close(load_photo("flower"), torch.full((3, 30, 40), 100 / 255))


def test_test_split_is_fixed_and_identical_across_constructions() -> None:
    a = SyntheticBlurDataset("test", return_key=True)
    b = SyntheticBlurDataset("test", return_key=True)
    assert len(a) == 64
    keys = [a._sample_plan(i)[1] for i in range(len(a))]
    assert keys[:2] == ["chelsea/00", "chelsea/01"] and keys[-1] == "china/15"
    assert len(set(keys)) == 64
    for index in (0, 21, 47):
        blurry_a, sharp_a, key_a = a[index]
        blurry_b, sharp_b, key_b = b[index]
        assert key_a == key_b == keys[index]
        assert torch.equal(blurry_a, blurry_b) and torch.equal(sharp_a, sharp_b)
        assert blurry_a.shape == sharp_a.shape == (3, 128, 128)
        assert float(blurry_a.min()) >= 0 and float(blurry_a.max()) <= 1
        assert float((blurry_a - sharp_a).abs().mean()) > 0.01  # really blurred
    # crops differ from one another
    assert not torch.equal(a[0][1], a[1][1])
    with pytest.raises(ValueError, match="length is fixed"):
        SyntheticBlurDataset("test", length=10)


def test_test_crops_have_valid_borders() -> None:
    """The returned blurry crop equals the blur of the whole photo, cropped."""
    ds = SyntheticBlurDataset("test", crop=64, crops_per_photo=2, blur=MILD)
    index = 3  # coffee, crop 1
    name, _, rng = ds._sample_plan(index)
    assert name == "coffee"
    photo = load_photo(name)
    top = int(rng.integers(photo.shape[1] - ds.region + 1))
    left = int(rng.integers(photo.shape[2] - ds.region + 1))
    kernel = camera_shake_kernel(rng, MILD)
    whole = blur_image(photo, kernel)
    m = MILD.margin
    expected = whole[:, top + m : top + m + 64, left + m : left + m + 64]
    blurry, sharp = ds[index]
    torch.testing.assert_close(blurry, expected, atol=1e-5, rtol=0)
    assert torch.equal(sharp, photo[:, top + m : top + m + 64, left + m : left + m + 64])


def test_whole_test_photos_are_the_photos_less_the_margin_blurred_by_fixed_kernels() -> None:
    ds = SyntheticBlurDataset("test", crop=None, crops_per_photo=2, blur=MILD, return_key=True)
    again = SyntheticBlurDataset("test", crop=None, crops_per_photo=2, blur=MILD)
    assert len(ds) == 2 * len(TEST_PHOTOS)
    m = MILD.margin
    for index, name in ((0, "chelsea"), (3, "coffee")):
        photo = load_photo(name)
        blurry, sharp, key = ds[index]
        assert key == f"{name}/{index % 2:02d}"
        assert sharp.shape == (3, photo.shape[1] - 2 * m, photo.shape[2] - 2 * m)
        assert torch.equal(sharp, photo[:, m:-m, m:-m])
        _, _, rng = ds._sample_plan(index)  # the kernel is the sample's first draw
        expected = blur_image(photo, camera_shake_kernel(rng, MILD))[:, m:-m, m:-m]
        torch.testing.assert_close(blurry, expected, atol=1e-5, rtol=0)
        assert torch.equal(blurry, again[index][0])
    # two kernels of one photo differ; test photos differ in size
    assert not torch.equal(ds[2][0], ds[3][0])
    assert ds[0][1].shape != ds[2][1].shape
    with pytest.raises(ValueError, match="test split"):
        SyntheticBlurDataset("train", crop=None)


def test_detail_of_known_patterns() -> None:
    flat = np.full((8, 8, 3), 128, np.uint8)
    checker = ((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    stripes = ((np.arange(8) % 2) * 255).astype(np.uint8)[None, :, None].repeat(8, 0).repeat(3, 2)
    assert detail(flat) == 0.0
    assert detail(checker) == pytest.approx(1.0)
    assert detail(stripes) == pytest.approx(0.5)  # columns change by 1, rows by 0


def test_test_split_redraws_flat_crops_only() -> None:
    """Flat crops (sky) are redrawn; a crop whose first draw has detail is unchanged."""
    kept = SyntheticBlurDataset("test", blur=SEVERE, return_key=True)
    every = SyntheticBlurDataset("test", blur=SEVERE, return_key=True, min_detail=0)
    assert kept.min_detail == TEST_MIN_DETAIL and every.min_detail == 0
    m, c = SEVERE.margin, kept.crop
    redrawn = 0
    for index in range(len(kept)):
        name, key, rng = kept._sample_plan(index)
        image = photo_array(name)
        top = int(rng.integers(image.shape[0] - kept.region + 1))
        left = int(rng.integers(image.shape[1] - kept.region + 1))
        first = detail(image[top + m : top + m + c, left + m : left + m + c])
        sharp = kept[index][1]
        grey = (sharp.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert detail(grey) >= TEST_MIN_DETAIL, key
        if first < TEST_MIN_DETAIL:
            redrawn += 1
            assert not torch.equal(sharp, every[index][1])
        elif index % 8 == 0:  # spot-check: unchanged samples are bit-identical
            assert torch.equal(sharp, every[index][1])
    assert redrawn >= 3  # the sky of "china" and "rocket"
    assert SyntheticBlurDataset("train", crop=32, length=4).min_detail == 0


def test_flat_photo_gives_a_clear_error(monkeypatch) -> None:
    from sp_adapter.data import synthetic

    monkeypatch.setattr(synthetic, "photo_array", lambda name: np.full((400, 400, 3), 90, np.uint8))
    ds = SyntheticBlurDataset("test", crop=32, crops_per_photo=1, blur=MILD)
    with pytest.raises(RuntimeError, match="lower min_detail"):
        ds[0]
    every = SyntheticBlurDataset("test", crop=32, crops_per_photo=1, blur=MILD, min_detail=0)
    blurry, sharp = every[0]
    assert torch.equal(sharp, torch.full_like(sharp, 90 / 255))
    with pytest.raises(ValueError, match="min_detail"):
        SyntheticBlurDataset("test", min_detail=-1)


def test_train_split_is_reproducible_per_index_and_epoch() -> None:
    ds = SyntheticBlurDataset("train", crop=64, length=20, blur=MILD, seed=3)
    assert len(ds) == 20
    assert not set(ds.photos) & set(TEST_PHOTOS)
    late = ds[7]
    early = ds[2]
    again = SyntheticBlurDataset("train", crop=64, length=20, blur=MILD, seed=3)
    assert torch.equal(again[2][0], early[0]) and torch.equal(again[7][1], late[1])
    other_seed = SyntheticBlurDataset("train", crop=64, length=20, blur=MILD, seed=4)
    assert not torch.equal(other_seed[2][1], early[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[2][1], early[1])
    ds.set_epoch(0)
    assert torch.equal(ds[2][0], early[0])
    assert not torch.equal(ds[2][1], ds[3][1])
    names = {ds._sample_plan(i)[0] for i in range(20)}
    assert names <= set(photo_names("train")) and len(names) >= 3


def test_train_pairs_share_crop_and_flips() -> None:
    """Rebuild a training sample from its documented generator and compare."""
    ds = SyntheticBlurDataset("train", crop=48, length=16, blur=MILD, seed=11)
    flipped = 0
    for index in range(6):
        name, _, rng = ds._sample_plan(index)
        image = photo_array(name)
        top = int(rng.integers(image.shape[0] - ds.region + 1))
        left = int(rng.integers(image.shape[1] - ds.region + 1))
        region = image[top : top + ds.region, left : left + ds.region]
        region = torch.from_numpy(region.transpose(2, 0, 1).astype(np.float32) / 255)
        blurred = blur_image(region, camera_shake_kernel(rng, MILD))
        m = MILD.margin
        blurry, sharp = blurred[:, m : m + 48, m : m + 48], region[:, m : m + 48, m : m + 48]
        dims = [d for d, f in zip((-1, -2), rng.random(2) < 0.5, strict=True) if f]
        flipped += bool(dims)
        if dims:
            blurry, sharp = blurry.flip(dims), sharp.flip(dims)
        got_blurry, got_sharp = ds[index]
        assert torch.equal(got_sharp, sharp)
        torch.testing.assert_close(got_blurry, blurry, atol=1e-6, rtol=0)
    assert flipped > 0


def test_augmented_train_pairs_are_rescaled_and_rotated_together() -> None:
    """augment=True: each sample's region comes from a source region up to 1/MIN_SCALE
    times larger, shrunk before the blur, and the pair turns by the same multiple of 90
    degrees; rebuilt here from the sample's documented generator."""
    ds = SyntheticBlurDataset("train", crop=48, length=16, blur=MILD, seed=11, augment=True)
    plain = SyntheticBlurDataset("train", crop=48, length=16, blur=MILD, seed=11)
    sizes, turned = set(), 0
    for index in range(8):
        name, _, rng = ds._sample_plan(index)
        image = photo_array(name)
        size = min(round(ds.region / rng.uniform(MIN_SCALE, 1.0)), *image.shape[:2])
        sizes.add(size)
        top = int(rng.integers(image.shape[0] - size + 1))
        left = int(rng.integers(image.shape[1] - size + 1))
        source = image[top : top + size, left : left + size]
        region = torch.from_numpy(source.transpose(2, 0, 1).astype(np.float32) / 255)
        region = F.interpolate(region[None], size=(ds.region, ds.region), mode="bilinear",
                               antialias=True, align_corners=False)[0].clamp(0, 1)
        blurred = blur_image(region, camera_shake_kernel(rng, MILD))
        m = MILD.margin
        blurry, sharp = blurred[:, m : m + 48, m : m + 48], region[:, m : m + 48, m : m + 48]
        dims = [d for d, f in zip((-1, -2), rng.random(2) < 0.5, strict=True) if f]
        if dims:
            blurry, sharp = blurry.flip(dims), sharp.flip(dims)
        turns = int(rng.integers(4))
        turned += turns > 0
        blurry, sharp = blurry.rot90(turns, (1, 2)), sharp.rot90(turns, (1, 2))
        got_blurry, got_sharp = ds[index]
        assert got_sharp.shape == (3, 48, 48) and got_sharp.is_contiguous()
        torch.testing.assert_close(got_sharp, sharp, atol=1e-6, rtol=0)
        torch.testing.assert_close(got_blurry, blurry, atol=1e-5, rtol=0)
        assert not torch.equal(got_sharp, plain[index][1])
    assert len(sizes) > 1 and max(sizes) > ds.region and turned > 0
    assert ds[3][1].min() >= 0 and ds[3][1].max() <= 1
    with pytest.raises(ValueError, match="training split"):
        SyntheticBlurDataset("test", augment=True)


def test_dataset_argument_errors() -> None:
    with pytest.raises(ValueError, match="split"):
        SyntheticBlurDataset("val")
    with pytest.raises(ValueError, match="smaller than"):
        SyntheticBlurDataset("test", crop=300, blur=SEVERE)
    ds = SyntheticBlurDataset("test", crop=32, crops_per_photo=1, blur=MILD)
    assert len(ds) == len(TEST_PHOTOS)
    with pytest.raises(IndexError):
        ds[len(TEST_PHOTOS)]
    batch = torch.utils.data.DataLoader(ds, batch_size=3)
    blurry, sharp = next(iter(batch))
    assert blurry.shape == sharp.shape == (3, 3, 32, 32)


def test_broken_optional_package_counts_as_absent(monkeypatch, fresh_photo_cache) -> None:
    fake = types.ModuleType("sklearn")
    fake.__spec__ = importlib.machinery.ModuleSpec("sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn", fake)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # its import fails
    assert "china" not in available_photos()
    assert "astronaut" in available_photos()


def test_grey_extra_photos_load_as_three_equal_channels_outside_the_default_split() -> None:
    from sp_adapter.photos import GREY_PHOTOS, extra_photos, grey_photos

    assert grey_photos() == GREY_PHOTOS  # all bundled in scikit-image's wheel
    assert extra_photos()[:len(GREY_PHOTOS)] == GREY_PHOTOS  # then any colour ones
    assert not set(GREY_PHOTOS) & set(available_photos())  # the default split is unchanged
    for name in GREY_PHOTOS:
        image = photo_array(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        assert image.std() > 10  # a photo, not a flat field


def _fake_wheel(root, package: str, relative: str, image: np.ndarray | None) -> None:
    """An installed-looking ``package`` whose import fails, bundling ``image`` (a JPEG at
    ``relative``; ``None``: no such file)."""
    from PIL import Image

    folder = root / package
    folder.mkdir()
    (folder / "__init__.py").write_text("raise ImportError('this package never imports')\n")
    if image is not None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=95)


def test_colour_extra_photos_are_read_from_wheels_that_bundle_them_never_imported(
        tmp_path, monkeypatch, fresh_photo_cache) -> None:
    """quokka (imgaug) and luispedro (mahotas) are offered where their package's folder
    holds the file, read without importing the package, and stay outside the default
    split; a missing package or file leaves the photo out, and naming it says what to
    install."""
    from sp_adapter.photos import WHEEL_PHOTOS, extra_photos, grey_photos

    for module in ("imgaug", "mahotas"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    colour = np.zeros((90, 120, 3), np.uint8)
    colour[..., 0] = np.linspace(0, 250, 120, dtype=np.uint8)  # a red ramp, blue flat
    colour[..., 2] = 40
    _fake_wheel(tmp_path, "imgaug", "quokka.jpg", colour)
    _fake_wheel(tmp_path, "mahotas", "demos/data/luispedro.jpg", None)

    assert WHEEL_PHOTOS == ("quokka", "luispedro")
    assert extra_photos() == (*grey_photos(), "quokka")
    assert "quokka" not in available_photos() and "quokka" not in photo_names("train")
    image = photo_array("quokka")
    assert image.shape == (90, 120, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - colour).mean() < 3  # the JPEG, as RGB
    assert "imgaug" not in sys.modules  # located, never imported
    data = SyntheticBlurDataset("train", crop=48, length=4, blur=MILD, seed=0,
                                photos=("quokka",))
    assert data[0][1].shape == (3, 48, 48)
    with pytest.raises(KeyError, match=r"'luispedro'.*mahotas wheel: pip install --no-deps "
                                       r"mahotas"):
        photo_array("luispedro")
    with pytest.raises(ValueError, match=r"\['luispedro'\] are not training photos"):
        SyntheticBlurDataset("train", crop=48, length=4, blur=MILD, photos=("luispedro",))


def test_a_training_set_of_named_photos_draws_from_them_alone() -> None:
    """photos=: every sample comes from a named photo (a grey one has equal channels; the
    default set's colour photos do not), and the same seed gives another stream than the
    default set's."""
    grey = SyntheticBlurDataset("train", crop=48, length=12, blur=MILD, seed=5,
                                photos=("camera", "gravel"))
    default = SyntheticBlurDataset("train", crop=48, length=12, blur=MILD, seed=5)
    assert grey.photos == ("camera", "gravel")
    for index in range(len(grey)):
        _, sharp = grey[index]
        torch.testing.assert_close(sharp[0], sharp[1], atol=0, rtol=0)
    colour = [not torch.equal(s[0], s[1]) for _, s in (default[i] for i in range(len(default)))]
    assert any(colour)
    mixed = SyntheticBlurDataset("train", crop=48, length=64, blur=MILD, seed=5,
                                 photos=("astronaut", "moon"))
    channels_equal = [torch.equal(s[0], s[1]) for _, s in (mixed[i] for i in range(64))]
    assert 0 < sum(channels_equal) < 64  # both photos are drawn


@pytest.mark.parametrize("photos_arg, error, message", [
    (("coffee",), ValueError, "test photos and are never used for training"),
    (("astronaut", "nope"), ValueError, r"\['nope'\] are not training photos.*camera"),
    (("moon", "moon"), ValueError, "each once"),
    ((), ValueError, "at least one photo"),
    ("camera", TypeError, "sequence of names"),
])
def test_named_training_photos_are_checked(photos_arg, error, message) -> None:
    with pytest.raises(error, match=message):
        SyntheticBlurDataset("train", crop=48, photos=photos_arg)


def test_named_photos_are_for_the_training_split_only() -> None:
    with pytest.raises(ValueError, match="training split"):
        SyntheticBlurDataset("test", photos=("camera",))
