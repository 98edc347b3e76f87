"""DDP on the CPU (gloo, 2 processes): gradients equal single-process gradients on the
same global batch; rank 0 alone logs and writes checkpoints; validation is shared out."""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import Dataset

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.train import DistInfo, TrainConfig, Trainer, list_checkpoints, load_checkpoint

WORLD = 2


class Pairs(Dataset):
    def __init__(self, n: int = 8, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.sharp = F.avg_pool2d(torch.rand(n, 3, size, size, generator=g), 3, 1, 1)
        self.blurry = F.avg_pool2d(self.sharp, 7, 1, 3, count_include_pad=False)
        # float64 end to end, so the comparison measures DDP, not float32 summation order
        self.sharp, self.blurry = self.sharp.double(), self.blurry.double()

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int):
        return self.blurry[i], self.sharp[i]


def _config(**kw) -> TrainConfig:
    return TrainConfig(steps=2, batch_size=4, alpha=0.0, perceptual="none", log_every=1,
                       progress=False, device="cpu", **kw)


def _model(teacher):
    torch.manual_seed(0)
    teacher = copy.deepcopy(teacher).double()
    return sp_adapter.wrap(UNet(width=8, blocks=1).double(), teacher=teacher,
                           student="small", small_width=8)


def _gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.backward(next(trainer.stream.batches(0)))
    return {name: p.grad.detach().clone() for name, p in trainer.module.named_parameters()
            if p.grad is not None}


def _worker(rank: int, port: int, teacher, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        info = DistInfo(rank, WORLD, 0)
        trainer = Trainer(_model(teacher), Pairs(), _config(), dist=info)
        grads = _gradients(trainer)
        if rank == 0:
            torch.save(grads, os.path.join(folder, "ddp_grads.pt"))
        run = Trainer(_model(teacher), Pairs(), _config(), dist=info,
                      run_dir=os.path.join(folder, "run"), val_data=Pairs(3))
        run.fit()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_gradients_equal_single_process(teacher, tmp_path):
    mp.spawn(_worker, args=(_free_port(), teacher, str(tmp_path)), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _gradients(Trainer(_model(teacher), Pairs(), _config()))
    finally:
        torch.set_num_threads(before)
    assert ddp.keys() == single.keys() and any(k.startswith("sp_prior.") for k in single)
    for name, g in single.items():
        err = (ddp[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert err < 1e-6, (name, float(err))

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 2]  # one writer: rank 0
    assert log[-1]["val_count"] == 3  # validation shared out, gathered on rank 0
    (step, path), = list_checkpoints(run)
    state = load_checkpoint(path)
    assert step == 2 and state["world_size"] == WORLD and len(state["rng"]) == WORLD
    assert not any(k.startswith("module.") for k in state["model"])
