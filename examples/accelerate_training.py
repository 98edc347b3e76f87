"""Training with Hugging Face Accelerate: the two sp_adapter lines in an Accelerate script.

``accelerator.prepare`` takes the wrapped network like any other (under several processes
it becomes DDP around it, the prior inside); ``prior_loss`` takes the prepared model;
``save_state`` / ``load_state`` carry the prior with the weights, the optimiser and the
scheduler; ``unwrap_model`` gives back the wrapped network, whose prior
``sp_adapter.save_pretrained`` writes. Needs ``pip install accelerate``.

    python examples/accelerate_training.py --steps 20 --out runs/accelerate
    accelerate launch --num_processes 2 examples/accelerate_training.py   # several processes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.data import SyntheticBlurDataset


def build(accelerator: Accelerator, width: int, total: int, data) -> tuple:
    """The script's set-up: network, optimiser, scheduler, loader, all prepared."""
    model = sp_adapter.wrap(UNet(width=width, blocks=1))  # + sp_adapter
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=1e-6)
    loader = DataLoader(data, batch_size=2)
    return accelerator.prepare(model, optimizer, loader, scheduler)


def train(accelerator: Accelerator, model, optimizer, loader, scheduler, steps: int) -> None:
    model.train()
    done = 0
    while done < steps:
        for blurry, sharp in loader:
            loss = F.l1_loss(model(blurry), sharp)
            loss = loss + 0.1 * sp_adapter.prior_loss(model, sharp)  # + sp_adapter
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                return


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps before save_state")
    parser.add_argument("--more", type=int, default=10, help="steps after load_state")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/accelerate"))
    args = parser.parse_args(argv)
    state_dir, prior_dir = args.out / "state", args.out / "prior"
    for folder in (state_dir, prior_dir):
        if folder.exists():
            raise SystemExit(f"{folder} exists: choose another --out")

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(0)
    total = args.steps + args.more
    data = SyntheticBlurDataset("train", crop=args.crop, length=4 * 2)
    model, optimizer, loader, scheduler = build(accelerator, args.width, total, data)
    train(accelerator, model, optimizer, loader, scheduler, args.steps)
    accelerator.save_state(state_dir)

    # a second run of the script picks the saved state up: prior, optimiser, schedule
    second = Accelerator(cpu=not torch.cuda.is_available())
    again = build(second, args.width, total, data)
    second.load_state(state_dir)
    trained = sp_adapter.prior_state_dict(accelerator.unwrap_model(model))
    loaded = sp_adapter.prior_state_dict(second.unwrap_model(again[0]))
    restored = all(torch.equal(trained[k], loaded[k]) for k in trained)
    train(accelerator, model, optimizer, loader, scheduler, args.more)
    train(second, *again, args.more)
    ours = accelerator.unwrap_model(model).state_dict()
    theirs = second.unwrap_model(again[0]).state_dict()
    continued_alike = all(torch.equal(ours[k], theirs[k]) for k in ours)

    network = second.unwrap_model(again[0])  # the wrapped UNet itself
    if second.is_main_process:
        sp_adapter.save_pretrained(network, prior_dir)
    print(f"prior restored by load_state: {restored}; resumed run continues alike: "
          f"{continued_alike}; prior saved to {prior_dir}")
    return {"restored": restored, "continued_alike": continued_alike, "network": network,
            "prior_dir": prior_dir}


if __name__ == "__main__":
    main()
