"""The RealBlur protocol: intensity matching, ECC homography alignment, scores over the
valid mask; ``sp-adapter eval --dataset realblur`` uses it by default."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from sp_adapter.errors import AlignmentError, OptionalDependencyError
from sp_adapter.metrics import align_to_sharp, psnr, realblur_score, score
from sp_adapter.metrics.realblur import masked_psnr, masked_ssim
from sp_adapter.photos import load_photo

cv2 = pytest.importorskip("cv2", reason="the RealBlur protocol needs sp_adapter[realblur]")

# a small homography: ~1% zoom and shear, a 2 px by -1.5 px shift, a little perspective
APPLIED = np.array([[1.01, 0.008, 2.0], [-0.006, 0.995, -1.5], [2e-5, -1e-5, 1.0]])


def _sharp(small: bool = False) -> np.ndarray:
    """A textured 192 x 256 crop (ECC pins a homography down better on a bigger image),
    or a 96 x 128 one."""
    photo = load_photo("coffee")[:, 50:242, 100:356]
    if small:
        photo = photo[:, 48:144, 64:192]
    return (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _warp(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """``out(H p) = image(p)``: the view of a second camera that moved by ``H``."""
    h, w = image.shape[:2]
    return cv2.warpPerspective(image, homography, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT)


def _mapped(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    ones = np.ones((len(points), 1))
    out = np.hstack([points, ones]) @ homography.T
    return out[:, :2] / out[:, 2:]


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def test_alignment_recovers_a_known_homography() -> None:
    sharp = _sharp()
    restored = _warp(sharp, APPLIED)
    aligned = align_to_sharp(restored, sharp)
    # the recovered warp moves the image's points where the applied one does
    h, w = sharp.shape[:2]
    grid = np.array([(x, y) for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)])
    error = np.abs(_mapped(aligned.homography, grid) - _mapped(APPLIED, grid)).max()
    assert error < 0.2, (error, aligned.homography)
    # aligned PSNR is far above the unaligned one
    unaligned = float(psnr(_tensor(restored), _tensor(sharp)))
    result = realblur_score(restored, sharp)
    assert result.psnr > unaligned + 12, (result.psnr, unaligned)
    assert result.ssim > 0.95
    np.testing.assert_allclose(result.homography, aligned.homography)
    # identical images: identity warp, full mask, perfect scores
    same = align_to_sharp(sharp, sharp)
    assert np.abs(same.homography - np.eye(3)).max() < 1e-4 and same.mask.min() == 1
    assert realblur_score(_tensor(sharp), _tensor(sharp)).psnr == math.inf


def test_pixels_off_the_mask_are_excluded() -> None:
    sharp = _sharp()
    aligned = align_to_sharp(_warp(sharp, APPLIED), sharp)
    mask = aligned.mask
    # the shift brings the top rows and the right columns from outside the restored image
    assert mask[0].mean() < 0.1 and mask[:, -1].mean() < 0.1 and mask[10:-10, 10:-10].min() == 1
    assert 0.9 < mask.mean() < 0.99
    assert not aligned.restored[mask == 0].any() and not aligned.sharp[mask == 0].any()
    # PSNR: the squared error over the mask's pixels only
    err = np.sum((aligned.sharp.astype(np.float64) - aligned.restored) ** 2) / mask.sum()
    ours = masked_psnr(aligned.restored, aligned.sharp, mask)
    assert ours == pytest.approx(10 * math.log10(1 / err), abs=1e-9)
    # SSIM: scikit-image's full map (as the RealBlur scripts call it), cut by the window
    # radius, each channel averaged with the mask as weights, then over channels
    _, full = structural_similarity(
        aligned.sharp.astype(np.float64), aligned.restored.astype(np.float64), channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        full=True)
    cut, weights = full[5:-5, 5:-5], mask[5:-5, 5:-5]
    reference = np.mean((cut * weights).sum(axis=(0, 1)) / weights.sum(axis=(0, 1)))
    assert masked_ssim(aligned.restored, aligned.sharp, mask) == pytest.approx(reference,
                                                                              abs=1e-9)
    # whatever lies off the mask changes neither score
    rng = np.random.default_rng(0)
    hole = np.zeros_like(mask)
    hole[20:40, 30:60] = 1
    noisy = np.where(hole == 1, rng.random(mask.shape, dtype=np.float32), aligned.restored)
    keep = mask * (1 - hole)
    assert masked_psnr(noisy * keep, aligned.sharp * keep, keep) == pytest.approx(
        masked_psnr(aligned.restored * keep, aligned.sharp * keep, keep), abs=1e-9)
    assert masked_psnr(noisy, aligned.sharp, mask) < ours - 3  # but counted on the mask


def test_realblur_convention_scores_a_batch() -> None:
    sharp = _sharp(small=True)
    restored = np.stack([_warp(sharp, APPLIED), sharp])
    batch = torch.from_numpy(restored).permute(0, 3, 1, 2).float() / 255
    targets = _tensor(sharp)[None].expand(2, -1, -1, -1)
    scores = score(batch, targets, "realblur")
    assert scores.psnr.shape == (2,) and scores.psnr[1].item() > 60  # itself: near-exact
    assert scores.psnr[0].item() == pytest.approx(realblur_score(batch[0], targets[0]).psnr)
    assert score(batch[0], targets[0], "realblur").ssim.shape == (1,)


def test_one_unalignable_pair_is_named(monkeypatch) -> None:
    sharp = _tensor(_sharp(small=True))
    restored = torch.stack([sharp, torch.zeros_like(sharp)])  # the second: a blank output
    targets = sharp[None].expand(2, -1, -1, -1)
    with pytest.raises(AlignmentError, match=r"pair 'scene7/blur_2\.png' \(image 1 of the "
                                             r"batch\) could not be aligned.*black restored "
                                             r"image.*leave it out of the test set"):
        score(restored, targets, "realblur", keys=["scene7/blur_1.png", "scene7/blur_2.png"])
    with pytest.raises(AlignmentError, match=r"image 1 of the batch \(pass keys= to name it\)"):
        score(restored, targets, "realblur")


def test_clear_errors(monkeypatch) -> None:
    sharp = _sharp()
    with pytest.raises(AlignmentError, match="black restored image"):
        align_to_sharp(np.zeros_like(sharp), sharp)
    with pytest.raises(AlignmentError, match="too flat"):
        align_to_sharp(np.full_like(sharp, 100), np.full_like(sharp, 100))
    with pytest.raises(ValueError, match="differ in shape"):
        align_to_sharp(sharp[:, :64], sharp)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(OptionalDependencyError, match=r"sp-adapter\[realblur\]") as info:
        realblur_score(sharp, sharp)
    assert isinstance(info.value, ImportError)


def test_eval_without_opencv_says_what_to_install(monkeypatch, tmp_path, capsys) -> None:
    from sp_adapter.cli import main

    monkeypatch.setitem(sys.modules, "cv2", None)
    capsys.readouterr()
    # refused before any model is read (the run folder does not even exist)
    assert main(["eval", "--run-dir", str(tmp_path / "run"), "--convention", "realblur",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sp-adapter[realblur]" in err and "Traceback" not in err


def test_eval_on_realblur_uses_the_protocol(tmp_path, capsys) -> None:
    from sp_adapter.cli import main

    root = tmp_path / "RealBlur"
    lines = []
    for i, (dx, dy) in enumerate(((1.5, -1.0), (-2.0, 0.5))):
        sharp = _sharp(small=True)[::2, ::2].copy()  # 48 x 64
        moved = _warp(sharp, np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]]))
        for folder, image in (("gt", sharp), ("blur", moved)):
            (root / "scene" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "scene" / folder / f"{i}.png")
        lines.append(f"scene/gt/{i}.png scene/blur/{i}.png")
    (root / "RealBlur_J_test_list.txt").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    torch.set_num_threads(1)
    assert main(["train", "--run-dir", str(run), "--steps", "1", "--batch", "1", "--crop",
                 "32", "--length", "2", "--width", "8", "--no-prior", "--alpha", "0",
                 "--perceptual", "none", "--val-limit", "1", "--no-progress"]) == 0
    capsys.readouterr()
    common = ["eval", "--run-dir", str(run), "--dataset", "realblur", "--root", str(root),
              "--other-data", "--no-progress"]  # the run trained on synthetic blur
    assert main([*common, "--json", str(tmp_path / "realblur.json")]) == 0
    out = capsys.readouterr().out
    assert "data: realblur (RealBlur-J) test, 2 images" in out
    assert "convention: realblur (default for --dataset realblur)" in out
    report = json.loads((tmp_path / "realblur.json").read_text())
    aligned = report["models"][0]["blurry_psnr"]
    assert report["convention"]["align"] is True
    # the "blurry" inputs are shifted copies: aligned they score far above unaligned
    assert main([*common, "--convention", "matlab", "--json",
                 str(tmp_path / "matlab.json")]) == 0
    unaligned = json.loads((tmp_path / "matlab.json").read_text())["models"][0]["blurry_psnr"]
    assert aligned > unaligned + 10, (aligned, unaligned)
