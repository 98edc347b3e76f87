"""Run folders: never overwritten without asking, resumed past a torn log line or a damaged
checkpoint, cleaned of a killed save's temporaries, and a full disk said in plain words."""

from __future__ import annotations

import errno
import io
import json

import pytest
import torch
from pairs import Pairs

from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import DiskFullError, RunFolderError
from sp_adapter.files import atomic
from sp_adapter.train import TrainConfig, Trainer, list_checkpoints
from sp_adapter.train.trainer import read_log

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, alpha=0.0, perceptual="none", log_every=1,
                progress=False, device="cpu", checkpoint_every=2, keep_checkpoints=3)
    base.update(kw)
    return TrainConfig(**base)


def trainer(run_dir, callbacks=(), **kw) -> Trainer:
    torch.manual_seed(0)
    return Trainer(UNet(width=8, blocks=1), Pairs(8), config(**kw), run_dir=run_dir,
                   callbacks=callbacks)


class Killed(Exception):
    pass


def killed_at(run_dir, step: int) -> None:
    """A run of 6 steps killed after ``step`` (checkpoints every 2 steps)."""

    def kill(t, stats):
        if t.step == step:
            raise Killed

    with pytest.raises(Killed):
        trainer(run_dir, callbacks=[kill]).fit()


def same_weights(a: Trainer, b: Trainer) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- nothing overwritten without asking ------------------------------------------------------
def test_a_run_without_a_checkpoint_yet_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    killed_at(run, 1)  # killed before its first checkpoint: a log and run.json only
    assert list_checkpoints(run) == [] and (run / "run.json").is_file()
    log = (run / "log.jsonl").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a run without a checkpoint yet "
                       r"\(log.jsonl, run.json\).*--resume.*--overwrite"):
        trainer(run).fit()
    assert (run / "log.jsonl").read_text() == log
    # asked: overwrite starts again, resume starts again from step 0 (nothing to load)
    result = trainer(run).fit(overwrite=True)
    assert result.steps == 6 and [s for s, _ in list_checkpoints(run)] == [2, 4, 6]
    with pytest.raises(RunFolderError, match="already holds checkpoints of a run"):
        trainer(run).fit()
    with pytest.raises(ValueError, match="exclude each other"):
        trainer(run).fit(resume=True, overwrite=True)


def test_overwrite_deletes_only_the_runs_files(tmp_path):
    run = tmp_path / "run"
    trainer(run, steps=2).fit()
    (run / "notes.txt").write_text("mine")
    trainer(run, steps=2).fit(overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"
    assert [s for s, _ in list_checkpoints(run)] == [2]


def test_resume_of_a_folder_without_a_run_is_an_error(tmp_path):
    with pytest.raises(RunFolderError, match="holds no run to resume"):
        trainer(tmp_path / "typo").fit(resume=True)
    assert not (tmp_path / "typo").exists()
    run = tmp_path / "run"
    killed_at(run, 1)
    with pytest.warns(UserWarning, match="no checkpoint yet: the run starts again from step 0"):
        result = trainer(run).fit(resume=True)
    assert result.resumed_from is None and result.steps == 6


# -- the log ---------------------------------------------------------------------------------
def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.fit()
    run = tmp_path / "b"
    killed_at(run, 5)
    with open(run / "log.jsonl", "a") as handle:
        handle.write('{"step": 6, "total": 0.0')  # the write a crash cut short
    resumed = trainer(run)
    with pytest.warns(UserWarning, match=r"log.jsonl:6: ignored the last line, cut short"):
        result = resumed.fit(resume=True)
    assert result.resumed_from == 4 and same_weights(straight, resumed)
    steps = [e["step"] for e in read_log(run / "log.jsonl") if "total" in e]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_bad_log_line_before_the_last_names_the_file_and_line(tmp_path):
    run = tmp_path / "run"
    killed_at(run, 5)
    lines = (run / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-3] + "#"
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=rf"{run / 'log.jsonl'}:2: not a JSON line"):
        trainer(run).fit(resume=True)


# -- checkpoints -----------------------------------------------------------------------------
def test_a_damaged_latest_checkpoint_is_skipped_for_the_newest_that_loads(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.fit()
    run = tmp_path / "b"
    killed_at(run, 5)
    latest = run / "checkpoints" / "step_00000004.pt"
    latest.write_bytes(latest.read_bytes()[:4000])  # truncated
    resumed = trainer(run)
    with pytest.warns(UserWarning, match=r"skipped checkpoints that cannot be read: "
                      r"step_00000004.pt \(.*\); resuming from .*step_00000002.pt \(step 2\)"):
        result = resumed.fit(resume=True)
    assert result.resumed_from == 2 and result.steps == 6
    assert same_weights(straight, resumed)  # as if never interrupted
    assert torch.load(latest, weights_only=True)["step"] == 4  # written again


def test_no_readable_checkpoint_is_an_error_listing_them(tmp_path):
    run = tmp_path / "run"
    killed_at(run, 5)
    for _, path in list_checkpoints(run):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunFolderError, match=r"no checkpoint in .* can be read: "
                       r"step_00000004.pt \(.*\); step_00000002.pt"):
        trainer(run).fit(resume=True)


def test_a_killed_saves_temporary_file_is_removed_at_start(tmp_path):
    run = tmp_path / "run"
    killed_at(run, 5)
    stale = run / "checkpoints" / ".step_00000006.pt.k2j4x9.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = run / "checkpoints" / "notes.tmp"
    mine.write_text("not the trainer's")
    with pytest.warns(UserWarning, match=r"removed .*\.step_00000006\.pt\.k2j4x9\.tmp"):
        trainer(run).fit(resume=True)
    assert not stale.exists() and mine.exists()


# -- a full disk -----------------------------------------------------------------------------
class FullDisk(io.RawIOBase):
    """A handle whose disk fills up after ``room`` bytes."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)


def test_a_full_disk_is_said_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    run = tmp_path / "run"
    t = trainer(run, steps=1)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, handle: real_save(obj, FullDisk(handle, 500)))
    target = run / "checkpoints" / "step_00000001.pt"
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {target}"
                       ) as info:
        t.fit()
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert list((run / "checkpoints").iterdir()) == []  # no torn temporary left

    def full_open(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
    with pytest.raises(DiskFullError, match=f"while writing {run / 'log.jsonl'}"):
        atomic.append_text(run / "log.jsonl", json.dumps({"step": 1}) + "\n")
