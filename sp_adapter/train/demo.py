"""The demo: the paper's prior against two controls, offline, at a fixed budget.

Trains the paper's UNet on the built-in photos with synthetic camera-shake blur three
times on identical batches with identical seeds (the fine-tuning protocol by default,
see :mod:`sp_adapter.train.protocol`): bare, bare and widened to the wrapped network's
parameter count, and wrapped with the prior (Table 4's Net6 by default); scores them on
the fixed test set and writes a report folder:

* ``README.md``: the command, the protocol, the table (blurry / base / widened base /
  +SP: PSNR, SSIM, parameters, training seconds), the gains with their spread over seeds
  from the committed benchmark, the ``sp-adapter eval`` command that reproduces the
  table, each arm's loss, where ``wrap`` attached the prior, and the commands for a real
  dataset (:mod:`sp_adapter.train.demo_report`);
* ``results.json``: the same numbers, per-image scores, the options;
* ``images/NN_<key>.png``: every row's image with its PSNR, where the prior changed the
  restoration, and an enlarged window where +SP and the base differ most;
* ``priors/NN_<key>.png``: the learned priors ``f_pri^1..3`` (the paper's Fig. 6);
* ``runs/<arm>/``: each arm's log and final checkpoint (``sp-adapter eval --run-dir``).

The options and the benchmark behind the defaults: :mod:`sp_adapter.train.demo_config`.
The demo needs the ``demo`` extra (the built-in photos and the blur synthesis).
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sp_adapter.attach.wrap import wrap
from sp_adapter.data import SyntheticBlurDataset, blur_preset
from sp_adapter.errors import ReportFolderError
from sp_adapter.extras import require_demo_extra
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.teacher import Teacher, load_teacher
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.config import TrainConfig
from sp_adapter.train.control import matched_width
from sp_adapter.train.data import SampleMemo
from sp_adapter.train.demo_config import BENCHMARK, Benchmark, DemoConfig
from sp_adapter.train.demo_report import (
    CHANGE_GAIN,
    arm_loss,
    eval_command,
    readme,
    real_dataset_commands,
    write_pictures,
)
from sp_adapter.train.protocol import Arm, count_parameters, run_arms

__all__ = ["BENCHMARK", "CHANGE_GAIN", "DEMO_OUTPUTS", "Benchmark", "DemoConfig",
           "ReportFolderError", "arm_loss", "eval_command", "prepare_folder",
           "real_dataset_commands", "run_demo", "widened_width"]

DEMO_OUTPUTS = ("README.md", "results.json", "images", "priors", "runs")
"""What the demo writes in its folder (and removes first with ``overwrite``)."""


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove the demo's old files."""
    if out.exists() and not out.is_dir():
        raise ReportFolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ReportFolderError(
                f"the report folder {out} is not empty; pass --overwrite to replace the demo's "
                "files in it, or choose another folder with --out"
            )
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def widened_width(cfg: DemoConfig, teacher: Teacher | None = None) -> tuple[int, int, int]:
    """``(width, its parameters, the +SP network's parameters)``: the bare UNet width
    whose parameter count is nearest the wrapped UNet's."""
    wrapped = wrap(backbone_spec("unet").build(width=cfg.width), teacher=teacher,
                   config=cfg.prior())
    target = count_parameters(wrapped)
    width, params = matched_width(target)
    return width, params, target


def run_demo(cfg: DemoConfig, command: str = "sp-adapter demo") -> dict[str, Any]:
    """Run the demo and write the report; returns the numbers written to results.json."""
    require_demo_extra("the demo")
    out = Path(cfg.out)
    prepare_folder(out, cfg.overwrite)
    started, cpu_started = time.perf_counter(), time.process_time()
    blur = blur_preset(cfg.blur)
    train = SyntheticBlurDataset("train", crop=cfg.crop, length=cfg.train_length, blur=blur,
                                 seed=cfg.seed)
    test = SampleMemo(SyntheticBlurDataset("test", crop=cfg.test_crop, blur=blur,
                                           crops_per_photo=cfg.test_crops_per_photo,
                                           return_key=True))  # synthesised once
    shared, arm_steps = cfg.split()
    config = TrainConfig(
        steps=arm_steps, batch_size=cfg.batch_size, lr=cfg.lr, alpha=0.0, perceptual="none",
        beta=cfg.beta, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
        log_every=10, keep_checkpoints=1,
    )
    prior = cfg.prior()
    teacher = load_teacher(prior.teacher)
    arms = [Arm("base")]
    if cfg.widened:
        width, _, _ = widened_width(cfg, teacher)
        arms.append(Arm("wide", options={"width": width},
                        widen_base=cfg.protocol == "finetune" and shared > 0))
    arms.append(Arm("sp", prior=prior, student_steps=cfg.student_steps_run(),
                    train={"embedding_lr_scale": cfg.embedding_lr_scale}))
    results_list = run_arms(
        arms, train, test, config, backbone="unet", options={"width": cfg.width},
        protocol=cfg.protocol, pretrain_steps=shared, arm_steps=arm_steps, teacher=teacher,
        run_root=out / "runs", keep_outputs=True,
    )
    trained = {r.name: r for r in results_list}
    base = trained["base"]
    device = next(base.model.parameters()).device
    pictures = write_pictures(trained, test, out, cfg.grids, cfg.progress)
    env = {"machine": platform.machine() + " " + platform.system(), "torch": torch.__version__,
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device"] += f" ({torch.cuda.get_device_name(device)})"
    evaluations = {name: r.evaluation for name, r in trained.items()}
    assert all(e is not None for e in evaluations.values()) and base.evaluation is not None
    per_image = []
    for index, row in enumerate(base.evaluation.per_image):
        entry = {"key": row["key"], "blurry_psnr": row["blurry_psnr"]}
        for name, evaluation in evaluations.items():
            entry[f"{name}_psnr"] = evaluation.per_image[index]["psnr"]  # type: ignore[union-attr]
            entry[f"{name}_ssim"] = evaluation.per_image[index]["ssim"]  # type: ignore[union-attr]
        per_image.append(entry)
    results = {
        "command": command,
        "options": asdict(cfg),
        "environment": env,
        "test_count": len(test),
        "blurry": {"psnr": base.evaluation.blurry_psnr, "ssim": base.evaluation.blurry_ssim},
        "arms": {name: {**r.summary(), "loss": arm_loss(name, cfg)}
                 for name, r in trained.items()},
        "eval_command": eval_command(cfg, list(trained)),
        "per_image": per_image,
        "pictures": pictures,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    write_atomic(out / "results.json", (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    text = readme(cfg, command, trained, pictures, len(test), env)
    write_atomic(out / "README.md", text.encode("utf-8"))
    return results
