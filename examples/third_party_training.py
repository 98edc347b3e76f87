"""A third-party training script, as found in a deblurring repository, plus sp_adapter.

The network, data and loop below are the "existing code"; the two lines marked
``# + sp_adapter`` are all that is added. The network is unknown to sp_adapter, so its
levels are named explicitly: where the decoder adds each encoder skip.

    python examples/third_party_training.py --steps 50
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import sp_adapter
from sp_adapter.data import SyntheticBlurDataset


class TinyUNet(nn.Module):
    """The repository's own network (2 levels, additive skips)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())
        self.bottleneck = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.bottleneck(e2) + e2
        d1 = self.dec1(self.up(d2) + e1)
        return x + self.out(d1)


LEVELS = [  # where f_de + f_en meet: the network adds `skip` right after `site`
    sp_adapter.Level(site="up", skip="enc1", channels=16),
    sp_adapter.Level(site="bottleneck", skip="enc2", channels=32),
]


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--no-prior", action="store_true", help="the script without sp_adapter")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = TinyUNet()
    if not args.no_prior:
        model = sp_adapter.wrap(model, LEVELS)  # + sp_adapter
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    data = SyntheticBlurDataset("train", crop=args.crop, length=args.steps * args.batch)
    losses = []
    for blurry, sharp in DataLoader(data, batch_size=args.batch, shuffle=False):
        loss = F.l1_loss(model(blurry), sharp)
        if not args.no_prior:
            loss = loss + 0.1 * sp_adapter.prior_loss(model, sharp)  # + sp_adapter
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return losses


if __name__ == "__main__":
    main()
