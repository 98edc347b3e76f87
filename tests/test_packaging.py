"""adapters/ sits at the top of the repository and installs as ``sp_adapter.adapters``: a
regular and an editable install give that package and never a top-level ``adapters``
(the name of an unrelated distribution on PyPI)."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_for_installation():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in
               (ROOT / "sp_adapter").rglob("__init__.py")}
    assert listed == on_disk | {"sp_adapter.adapters"}
    assert config["options"]["package_dir"].split() == ["sp_adapter.adapters", "=", "adapters"]


def test_the_installed_package_has_adapters_inside_and_none_at_the_top(tmp_path):
    code = ("import importlib.util, sp_adapter.adapters as a; "
            "print(a.__name__, len(a.BACKBONES), importlib.util.find_spec('adapters'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name, count, top = done.stdout.split()
    assert name == "sp_adapter.adapters" and int(count) >= 12 and top == "None"


@pytest.mark.slow
def test_a_built_wheel_holds_sp_adapter_adapters_and_no_top_level_adapters(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("sp_adapter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sp_adapter/adapters/__init__.py" in names and "sp_adapter/adapters/unet.py" in names
    assert not [n for n in names if n.startswith("adapters/")]
    tops = {n.split("/")[0] for n in names if not n.startswith("sp_adapter-")}
    assert tops == {"sp_adapter"}
