"""Training with PyTorch Lightning: the two sp_adapter lines inside a LightningModule.

The module wraps its network where it builds it and adds the prior's loss in
``training_step``; Lightning's checkpoints then hold the prior (``sp_prior.*`` in the
``state_dict``), ``load_from_checkpoint`` brings it back, and ``fit(ckpt_path=...)`` resumes
the optimiser and scheduler with it. Needs ``pip install lightning``.

    python examples/lightning_training.py --steps 20 --out runs/lightning
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.data import SyntheticBlurDataset


class DeblurModule(L.LightningModule):
    """A deblurring LightningModule as a user writes one, plus the two lines."""

    def __init__(self, width: int = 8, lr: float = 1e-3, total_steps: int = 100) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = sp_adapter.wrap(UNet(width=width, blocks=1))  # + sp_adapter

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        return self.net(blurry)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        blurry, sharp = batch
        loss = F.l1_loss(self.net(blurry), sharp)
        loss = loss + 0.1 * sp_adapter.prior_loss(self.net, sharp)  # + sp_adapter
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.hparams.total_steps, eta_min=1e-6)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _trainer(steps: int, devices: int, strategy: str) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_steps=steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps before the checkpoint")
    parser.add_argument("--more", type=int, default=10, help="steps of the resumed run")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--devices", type=int, default=1, help="2 with --strategy ddp_spawn")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/lightning"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "last.ckpt"
    if checkpoint.exists():
        raise SystemExit(f"{checkpoint} exists: choose another --out")

    L.seed_everything(0, verbose=False)
    total = args.steps + args.more
    data = SyntheticBlurDataset("train", crop=args.crop, length=total * args.batch)
    loader = DataLoader(data, batch_size=args.batch)
    module = DeblurModule(width=args.width, total_steps=total)
    start = {k: v.clone() for k, v in sp_adapter.prior_state_dict(module.net).items()}
    trainer = _trainer(args.steps, args.devices, args.strategy)
    trainer.fit(module, loader)
    trainer.save_checkpoint(checkpoint)
    trained = sp_adapter.prior_state_dict(module.net)
    prior_trained = any(not torch.equal(trained[k], start[k]) for k in start)

    # a fresh module from the checkpoint: the prior comes back with the network
    restored = DeblurModule.load_from_checkpoint(checkpoint, map_location="cpu",
                                                weights_only=True)
    blurry = data[0][0][None]
    module.eval()
    restored.eval()
    with torch.no_grad():
        same_output = torch.equal(restored(blurry), module(blurry))

    # resume: the optimiser and the scheduler go on from the checkpoint, the prior with them
    resumed = DeblurModule(width=args.width, total_steps=total)
    trainer = _trainer(total, args.devices, args.strategy)
    trainer.fit(resumed, loader, ckpt_path=checkpoint, weights_only=True)
    print(f"prior trained: {prior_trained}; checkpoint reloads exactly: {same_output}; "
          f"resumed to step {trainer.global_step}")
    return {"prior_trained": prior_trained, "same_output": same_output,
            "global_step": trainer.global_step, "module": resumed, "checkpoint": checkpoint}


if __name__ == "__main__":
    main()
