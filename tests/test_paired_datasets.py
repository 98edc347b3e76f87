"""GoPro, HIDE and RealBlur folder layouts, written small under tmp_path.

Every blurry file is written as ``sharp // 2`` of its own random sharp image, so a
correct pair (and an identical crop/flip of both) satisfies ``|2 * blurry - sharp| <=
1/255`` everywhere, and a swapped or mismatched pair does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sp_adapter.data.paired import (
    GoProDataset,
    HIDEDataset,
    PairedImageDataset,
    RealBlurDataset,
    gopro_pairs,
    hide_pairs,
    realblur_pairs,
)

H, W = 20, 28
_counter = iter(range(10_000))


def _write_pair(blurry_path: Path, sharp_path: Path, size: tuple[int, int] = (H, W)) -> None:
    rng = np.random.default_rng(next(_counter))
    sharp = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    for path, image in ((sharp_path, sharp), (blurry_path, sharp // 2)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def _is_pair(blurry: torch.Tensor, sharp: torch.Tensor) -> bool:
    return bool((2 * blurry - sharp).abs().max() <= 1.5 / 255)


def _gopro(root: Path) -> Path:
    base = root / "GOPRO_Large"
    for split, scenes in (("train", ("GOPR0372_07_00", "GOPR0374_11_00")), ("test", ("GOPR0384",))):
        for scene in scenes:
            for name in ("000002.png", "000001.png", "000010.png"):
                d = base / split / scene
                _write_pair(d / "blur" / name, d / "sharp" / name)
                (d / "blur_gamma").mkdir(exist_ok=True)
                Image.open(d / "blur" / name).save(d / "blur_gamma" / name)
    return base


def test_gopro_pairs_order_and_eval_mode(tmp_path: Path) -> None:
    base = _gopro(tmp_path)
    assert GoProDataset(tmp_path, "train").train and not GoProDataset(tmp_path, "test").train
    ds = GoProDataset(tmp_path, "train", train=False, return_key=True)  # parent of GOPRO_Large
    assert len(ds) == 6
    keys = [ds[i][2] for i in range(len(ds))]
    assert keys == [
        f"{scene}/blur/{n}"
        for scene in ("GOPR0372_07_00", "GOPR0374_11_00")
        for n in ("000001.png", "000002.png", "000010.png")
    ]
    for i in range(len(ds)):
        blurry, sharp, _ = ds[i]
        assert blurry.shape == sharp.shape == (3, H, W) and blurry.dtype == torch.float32
        assert _is_pair(blurry, sharp)
        assert float(sharp.max()) <= 1.0 and float(sharp.mean()) > float(blurry.mean())
    # same data from GOPRO_Large itself, and the eval order is stable
    again = GoProDataset(base, "train", train=False, return_key=True)
    assert [again[i][2] for i in range(len(again))] == keys
    gamma = GoProDataset(base, "test", gamma=True, return_key=True)
    assert len(gamma) == 3 and all("/blur_gamma/" in gamma[i][2] for i in range(3))
    assert all(p[0].parent.name == "blur" for p in gopro_pairs(base, "test"))


def test_gopro_train_mode_crops_both_identically(tmp_path: Path) -> None:
    base = _gopro(tmp_path)
    ds = GoProDataset(base, "train", crop=8, seed=0)
    assert ds.train
    full = GoProDataset(base, "train", train=False)
    seen_flip = seen_offset = False
    for i in range(len(ds)):
        blurry, sharp = ds[i]
        assert blurry.shape == sharp.shape == (3, 8, 8)
        assert _is_pair(blurry, sharp)
        whole = full[i][1]
        found = [
            (top, left, flips)
            for flips in ([], [-1], [-2], [-1, -2])
            for top in range(H - 7)
            for left in range(W - 7)
            if torch.equal(whole.flip(flips)[:, top : top + 8, left : left + 8], sharp)
        ]
        assert found, "the sharp crop is not a (flipped) crop of the sharp image"
        seen_flip |= any(f for _, _, f in found)
        seen_offset |= any(t or c for t, c, _ in found)
    assert seen_flip and seen_offset
    # seeded: the same crops again; another epoch: other crops
    first = [ds[i][1] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i][1]) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert not all(torch.equal(a, ds[i][1]) for i, a in enumerate(first))
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    blurry, sharp = next(iter(loader))
    assert blurry.shape == (3, 3, 8, 8)


def test_unseeded_train_mode_uses_torch_rng(tmp_path: Path) -> None:
    ds = GoProDataset(_gopro(tmp_path), "train", crop=8)
    torch.manual_seed(0)
    a = [ds[i][1] for i in range(len(ds))]
    torch.manual_seed(0)
    b = [ds[i][1] for i in range(len(ds))]
    c = [ds[i][1] for i in range(len(ds))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_center_crop_in_eval_mode(tmp_path: Path) -> None:
    base = _gopro(tmp_path)
    whole = GoProDataset(base, "test")
    cropped = GoProDataset(base, "test", crop=10)
    blurry, sharp = cropped[1]
    top, left = (H - 10) // 2, (W - 10) // 2
    assert torch.equal(sharp, whole[1][1][:, top : top + 10, left : left + 10])
    assert torch.equal(blurry, whole[1][0][:, top : top + 10, left : left + 10])
    with pytest.raises(ValueError, match="larger than"):
        GoProDataset(base, "test", crop=64)[0]


def test_gopro_errors_name_the_layout_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"GOPRO_Large/\{train,test\}"):
        GoProDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="'train' split"):
        GoProDataset(tmp_path)
    base = _gopro(tmp_path)
    lonely = base / "train" / "GOPR0372_07_00" / "blur" / "000099.png"
    Image.new("RGB", (W, H)).save(lonely)
    with pytest.raises(ValueError, match="unpaired GoPro image .*000099.png"):
        GoProDataset(base, "train")
    lonely.unlink()
    extra_sharp = base / "train" / "GOPR0372_07_00" / "sharp" / "000077.png"
    Image.new("RGB", (W, H)).save(extra_sharp)
    with pytest.raises(ValueError, match="000077.png"):
        gopro_pairs(base, "train")
    extra_sharp.unlink()
    (base / "test" / "NEW_SCENE" / "blur").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="NEW_SCENE.*sharp"):
        gopro_pairs(base, "test")
    with pytest.raises(ValueError, match="split"):
        gopro_pairs(base, "val")


def test_size_mismatch_is_reported_with_both_files(tmp_path: Path) -> None:
    base = _gopro(tmp_path)
    sharp = base / "test" / "GOPR0384" / "sharp" / "000002.png"
    Image.new("RGB", (W + 2, H)).save(sharp)
    ds = GoProDataset(base, "test")
    assert _is_pair(*ds[0])
    with pytest.raises(ValueError, match=r"size mismatch: .*blur/000002.png.*sharp/000002.png"):
        ds[1]


def _hide(root: Path) -> None:
    for folder, names in (
        ("train", ("1fromGOPR0950.png", "10fromGOPR0950.png")),
        ("test/test-close-ups", ("100fromGOPR1037.png",)),
        ("test/test-long-shot", ("2fromGOPR1075.png", "11fromGOPR1075.png")),
    ):
        for name in names:
            _write_pair(root / folder / name, root / "GT" / name)


def test_hide_pairs_subsets_and_errors(tmp_path: Path) -> None:
    _hide(tmp_path)
    train = HIDEDataset(tmp_path, "train", return_key=True)
    assert train.train and len(train) == 2
    test = HIDEDataset(tmp_path, "test", return_key=True)
    assert not test.train
    assert [test[i][2] for i in range(len(test))] == [
        "test/test-close-ups/100fromGOPR1037.png",
        "test/test-long-shot/2fromGOPR1075.png",
        "test/test-long-shot/11fromGOPR1075.png",
    ]
    assert all(_is_pair(*test[i][:2]) for i in range(len(test)))
    assert len(hide_pairs(tmp_path, "test", "close-ups")) == 1
    assert len(hide_pairs(tmp_path, "test", "long-shot")) == 2
    with pytest.raises(ValueError, match="subset"):
        hide_pairs(tmp_path, "test", "portraits")
    (tmp_path / "GT" / "11fromGOPR1075.png").unlink()
    with pytest.raises(ValueError, match=r"unpaired HIDE image .*11fromGOPR1075.png"):
        HIDEDataset(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="GT"):
        HIDEDataset(tmp_path / "test")


def _realblur(root: Path) -> None:
    base = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    lines = {"train": [], "test": []}
    for split, scene, index in (
        ("train", "scene001", 1),
        ("train", "scene001", 2),
        ("test", "scene230", 10),
        ("test", "scene230", 2),
    ):
        gt = f"{base}/{scene}/gt/gt_{index}.png"
        blur = f"{base}/{scene}/blur/blur_{index}.png"
        _write_pair(root / blur, root / gt)
        lines[split].append(f"{gt} {blur}")
    for split, rows in lines.items():
        (root / f"RealBlur_J_{split}_list.txt").write_text("\n".join(rows) + "\n\n")


def test_realblur_list_files_gt_first(tmp_path: Path) -> None:
    _realblur(tmp_path)
    ds = RealBlurDataset(tmp_path, "test", return_key=True)
    assert len(ds) == 2 and not ds.train
    keys = [ds[i][2] for i in range(2)]
    assert keys == [
        "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/blur/blur_2.png",
        "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/blur/blur_10.png",
    ]
    for i in range(2):
        blurry, sharp, _ = ds[i]
        assert _is_pair(blurry, sharp)  # gt (first column) came back as the sharp image
    train = RealBlurDataset(tmp_path, "train", crop=6, seed=1)
    assert train.train and all(_is_pair(*train[i]) for i in range(2))
    assert all(p[1].parent.name == "gt" for p in realblur_pairs(tmp_path, "train"))


def test_realblur_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="RealBlur_J_test_list.txt"):
        RealBlurDataset(tmp_path, "test")
    _realblur(tmp_path)
    listing = tmp_path / "RealBlur_J_test_list.txt"
    listing.write_text(listing.read_text() + "only_one_path.png\n")
    with pytest.raises(ValueError, match=r"RealBlur_J_test_list.txt:4"):
        realblur_pairs(tmp_path, "test")
    listing.write_text("missing/gt.png missing/blur.png\n")
    with pytest.raises(FileNotFoundError, match=r":1: listed file not found: .*missing/blur.png"):
        realblur_pairs(tmp_path, "test")
    with pytest.raises(ValueError, match="variant"):
        realblur_pairs(tmp_path, "test", variant="K")


def test_generic_paired_dataset_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image pairs"):
        PairedImageDataset([])
    _write_pair(tmp_path / "b" / "x.png", tmp_path / "s" / "x.png")
    ds = PairedImageDataset([(tmp_path / "b" / "x.png", tmp_path / "s" / "x.png")])
    assert len(ds) == 1 and _is_pair(*ds[0]) and _is_pair(*ds[-1])
    with pytest.raises(IndexError):
        ds[1]


def test_eval_and_train_read_the_gopro_blur_folder_asked_for(tmp_path: Path, capsys) -> None:
    from sp_adapter.cli import main

    rng = np.random.default_rng(7)
    for split in ("train", "test"):
        for name in ("000001.png", "000002.png"):
            scene = tmp_path / "GOPRO_Large" / split / "GOPR0410_11_00"
            sharp = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            # blur and blur_gamma differ, so scores tell which folder was read
            for folder, image in (("sharp", sharp), ("blur", sharp // 2),
                                  ("blur_gamma", sharp // 4)):
                (scene / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(scene / folder / name)
    run = tmp_path / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--run-dir", str(run), "--dataset", "gopro", "--root",
                     str(tmp_path), "--gopro-blur", "blur_gamma", "--steps", "1", "--batch",
                     "1", "--crop", "16", "--width", "8", "--no-prior", "--alpha", "0",
                     "--perceptual", "none", "--no-progress"]) == 0
        saved = json.loads((run / "run.json").read_text())
        assert saved["data_options"]["gopro_blur"] == "blur_gamma"
        scores = {}
        for folder in ("blur", "blur_gamma"):
            out_file = tmp_path / f"{folder}.json"
            capsys.readouterr()
            assert main(["eval", "--run-dir", str(run), "--dataset", "gopro", "--root",
                         str(tmp_path), "--gopro-blur", folder, "--json", str(out_file),
                         "--other-data", "--no-progress"]) == 0  # blur: not the run's
            assert f"data: gopro ({folder}) test, 2 images" in capsys.readouterr().out
            report = json.loads(out_file.read_text())
            keys = [row["key"] for row in report["models"][0]["per_image"]]
            assert keys == [f"GOPR0410_11_00/{folder}/00000{i}.png" for i in (1, 2)]
            scores[folder] = report["models"][0]["blurry_psnr"]
        # sharp // 4 is further from sharp than sharp // 2
        assert scores["blur_gamma"] < scores["blur"] - 1
    finally:
        torch.set_num_threads(before)
