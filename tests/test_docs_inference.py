"""docs/inference.md runs as written: its two code blocks deblur folders of photos."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.files.image_io import ImageData, read_image, write_image

DOC = Path(__file__).resolve().parents[1] / "docs" / "inference.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_docs_deblur_a_folder_with_a_saved_prior_keeping_each_files_form(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(UNet().state_dict(), "unet.pt")
    sp.save_pretrained(sp.wrap(UNet(), teacher=None), "unet-prior")
    rng = np.random.default_rng(0)
    for folder in ("blurry", "huge"):
        Path(folder).mkdir()
        write_image(f"{folder}/grey16.png",
                    ImageData(rng.integers(0, 65535, (21, 30, 1)).astype(np.uint16), "PNG"))
        Image.fromarray(rng.integers(0, 255, (19, 26, 3), dtype=np.uint8)).save(
            f"{folder}/photo.jpg")
        Path(f"{folder}/notes.txt").write_text("not an image")
    namespace: dict = {}
    for block in _blocks():
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the docs' own code
    for folder in ("deblurred", "huge-deblurred"):
        assert sorted(p.name for p in Path(folder).iterdir()) == ["grey16.png", "photo.jpg"]
        grey = read_image(f"{folder}/grey16.png")
        assert grey.pixels.shape == (21, 30, 1) and grey.bits == 16
        assert read_image(f"{folder}/photo.jpg").pixels.shape == (19, 26, 3)
    with pytest.raises(FileExistsError, match="exists: choose another output folder"):
        namespace["deblur_folder"](namespace["net"], "blurry", "deblurred")
