"""The error family is true: every error the library raises on purpose is an
``SPAdapterError`` that keeps its builtin parent, so ``except SPAdapterError`` catches the
library's errors and ``except ValueError`` in a caller's code still catches what it did."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest
import torch

import sp_adapter as sp
import sp_adapter.errors as errors
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import (
    DatasetIndexError,
    ImageInputError,
    LevelError,
    OptionError,
    SPAdapterError,
    WrapError,
)
from sp_adapter.prior.config import PriorConfig, TeacherSpec

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_ERRORS = {
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
EXCLUDED: tuple[str, ...] = ()


def _sources() -> list[Path]:
    files = sorted((ROOT / "sp_adapter").rglob("*.py")) + sorted((ROOT / "adapters").rglob("*.py"))
    return [p for p in files
            if not p.relative_to(ROOT).as_posix().startswith(EXCLUDED)]


def _bare_raises(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: Name`` for each ``raise`` of a builtin exception class (called or not);
    a bare ``raise`` and re-raising a caught name (``raise err``) pass."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and target.id in BUILTIN_ERRORS:
            found.append((node.lineno, target.id))
    return [f"{path.relative_to(root)}:{line}: {name}" for line, name in sorted(found)]


def test_the_scan_finds_a_bare_raise(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError('bad')\n"
        "    try:\n"
        "        pass\n"
        "    except OSError as err:\n"
        "        raise err\n"
        "    raise KeyError\n"
    )
    assert _bare_raises(sample, tmp_path) == ["sample.py:3: ValueError", "sample.py:8: KeyError"]


def test_the_package_raises_no_bare_builtin_error():
    sources = _sources()
    assert any(p.name == "hook.py" for p in sources) and any(
        p.parent.name == "adapters" for p in sources
    )
    bare = [hit for path in sources for hit in _bare_raises(path)]
    assert bare == [], (
        "raise a class of sp_adapter.errors (add one there if none fits) instead of:\n"
        + "\n".join(bare)
    )


def _family() -> list[type]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if c.__module__ == errors.__name__]


def test_every_error_class_is_in_the_family_and_keeps_a_builtin_parent():
    classes = _family()
    assert len(classes) > 20 and SPAdapterError in classes
    for cls in classes:
        if cls is SPAdapterError:
            continue
        assert issubclass(cls, SPAdapterError), cls
        kinds = [b for b in cls.__mro__ if b.__module__ == "builtins"
                 and b not in (Exception, BaseException, object)]
        assert kinds, f"{cls.__name__} has no builtin parent besides Exception"
        assert cls.__doc__, f"{cls.__name__} has no docstring saying when it is raised"


def test_errors_module_imports_nothing_from_the_package():
    tree = ast.parse((ROOT / "sp_adapter" / "errors.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] in ("sp_adapter", "adapters")]


# -- errors that used to be bare builtins --------------------------------------------------
@pytest.mark.parametrize(
    ("build", "said"),
    [
        (lambda: PriorConfig(fusion="mul"), r"fusion must be 'sat', 'add' or 'concat'"),
        (lambda: PriorConfig(kernel_size=2), r"kernel_size must be a positive odd number"),
        (lambda: TeacherSpec(out_indices=(3, 1)), r"out_indices must be distinct"),
        (lambda: PriorConfig.from_dict({"fusoin": "sat"}), r"unknown PriorConfig keys"),
    ],
)
def test_an_invalid_prior_config_is_an_option_error_and_a_value_error(build, said):
    with pytest.raises(OptionError, match=said) as info:
        build()
    assert isinstance(info.value, SPAdapterError) and isinstance(info.value, ValueError)


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(width=8, blocks=1)


def test_a_malformed_level_tuple_is_a_wrap_error_and_a_type_error():
    with pytest.raises(LevelError, match=r"levels\[0\] is \('up1', 'enc1', 16, 1\): give a "
                                         r"level name") as info:
        sp.wrap(_unet(), levels=[("up1", "enc1", 16, 1)], teacher=None, student="small")
    assert isinstance(info.value, WrapError) and isinstance(info.value, TypeError)


def test_a_channel_mismatch_at_a_level_is_a_level_error_at_the_first_forward():
    net = sp.wrap(_unet(), [sp.Level(site="up1", skip="enc1", channels=17)], teacher=None,
                  student="small")
    with pytest.raises(LevelError, match=r"level 'level1' \(output of 'up1'\) has 8 "
                                         r"channels but the level was declared with 17") as info:
        net(torch.rand(1, 3, 32, 32))
    assert isinstance(info.value, SPAdapterError) and isinstance(info.value, ValueError)


def test_a_twin_given_an_image_of_the_wrong_size_says_so_in_the_family():
    from sp_adapter.backbones.restormer import SIZE_MULTIPLE, Restormer

    net = Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1))
    with pytest.raises(ImageInputError, match=rf"multiples of {SIZE_MULTIPLE}; got 20x20"):
        net(torch.rand(1, 3, 20, 20))


def test_a_dataset_index_past_the_end_is_still_an_index_error(tmp_path):
    from sp_adapter.data.paired import PairedImageDataset

    dataset = PairedImageDataset([(tmp_path / "b.png", tmp_path / "s.png")])
    with pytest.raises(DatasetIndexError) as info:
        dataset[1]
    assert isinstance(info.value, IndexError) and isinstance(info.value, SPAdapterError)
