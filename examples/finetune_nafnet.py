"""Fine-tune a published NAFNet checkpoint (BasicSR format) with the semantic prior.

1. load the checkpoint (``{'params': state_dict}``, e.g. ``NAFNet-GoPro-width64.pth``)
   safely and strictly;
2. wrap it and check that at step 0 it reproduces the published model exactly (on a crop
   whose size is no multiple of 16: NAFNet pads inside its own forward);
3. train the prior (the backbone frozen, or not) with NAFNet's own PSNR loss plus 0.1
   times the prior loss;
4. save only the prior's weights (config.json + model.safetensors), ready for
   ``sp_adapter.from_pretrained(folder, model=NAFNetLocal(...))`` (the test-time network of the
   published numbers) or ``push_to_hub``.

    python examples/finetune_nafnet.py --checkpoint NAFNet-GoPro-width64.pth --out prior/
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import sp_adapter
from sp_adapter.backbones.nafnet import NAFNet
from sp_adapter.data import SyntheticBlurDataset
from sp_adapter.files.checkpoints import load_backbone_checkpoint


def psnr_loss(out: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """NAFNet's training loss: minus the PSNR (dB) of each image, averaged."""
    mse = (out - sharp).pow(2).mean(dim=(1, 2, 3))
    return (10 / math.log(10)) * torch.log(mse + 1e-8).mean()


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="BasicSR .pth ({'params': ...})")
    parser.add_argument("--out", required=True, help="folder for the prior's weights")
    parser.add_argument("--width", type=int, default=64, help="64 or 32 (published GoPro)")
    parser.add_argument("--enc-blk-nums", type=int, nargs="+", default=[1, 1, 1, 28])
    parser.add_argument("--dec-blk-nums", type=int, nargs="+", default=[1, 1, 1, 1])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--train-backbone", action="store_true",
                        help="fine-tune the backbone too (default: frozen, prior only)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = NAFNet(width=args.width, enc_blk_nums=args.enc_blk_nums,
                   dec_blk_nums=args.dec_blk_nums)
    load_backbone_checkpoint(model, args.checkpoint)  # weights_only, strict, finds 'params'
    model.to(device).eval()

    data = SyntheticBlurDataset("train", crop=args.crop, length=args.steps * args.batch)
    probe = data[0][0][None, :, : args.crop - 3, : args.crop - 5].to(device)
    with torch.no_grad():
        published = model(probe)
    sp_adapter.wrap(model)
    with torch.no_grad():
        wrapped = model(probe)
    exact = torch.equal(wrapped, published)
    print(f"step 0: wrapped output equals the published model's: {exact}")
    if not exact:
        raise RuntimeError("the wrapped model does not reproduce the published one at step 0")

    model.train()
    if not args.train_backbone:
        prior_ids = {id(p) for p in model.sp_prior.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in prior_ids)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.999))
    losses = []
    for blurry, sharp in DataLoader(data, batch_size=args.batch):
        blurry, sharp = blurry.to(device), sharp.to(device)
        loss = psnr_loss(model(blurry), sharp) + 0.1 * sp_adapter.prior_loss(model, sharp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}")

    folder = sp_adapter.save_pretrained(
        model, Path(args.out), overwrite=args.overwrite,
        data="built-in synthetic severe blur (fine-tuning)",
    )
    print(f"prior weights saved to {folder}")
    return {"exact_at_step0": exact, "losses": losses, "folder": folder, "model": model}


if __name__ == "__main__":
    main()
