"""Atomic writes: all or nothing, with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat

import pytest

from sp_adapter.files.atomic import write_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(tmp_path, umask_022):
    new = write_atomic(tmp_path / "sub" / "new.json", b"{}")
    assert new.read_bytes() == b"{}" and mode(new) == 0o644  # not mkstemp's 0o600
    private = tmp_path / "private.bin"
    private.write_bytes(b"old")
    os.chmod(private, 0o600)
    write_atomic(private, lambda handle: handle.write(b"new"))
    assert private.read_bytes() == b"new" and mode(private) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.bin", "sub"]  # no temp left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.md"
    target.write_bytes(b"kept")

    def dies(handle):
        handle.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomic(target, dies)
    assert target.read_bytes() == b"kept" and list(tmp_path.iterdir()) == [target]
