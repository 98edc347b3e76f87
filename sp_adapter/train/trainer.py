"""``Trainer``: trains a deblurring network with or without the semantic prior.

One loop for both arms of every comparison: the unwrapped backbone trains on Eq. (7)
without the prior term, a wrapped one (``sp_adapter.wrap``) adds ``beta * L_prior``.
Around it: AdamW + warm-up/cosine (Sec. 4.1), mixed precision on CUDA, gradient
clipping, periodic validation, atomic checkpoints that resume a killed run exactly, a
JSON-lines log, tqdm bars, DDP under torchrun, and an optional teacher-feature cache.

    trainer = Trainer(model, SyntheticBlurDataset("train", crop=128), TrainConfig(steps=2000),
                      run_dir="runs/unet_sp", val_data=SyntheticBlurDataset("test"))
    result = trainer.fit(resume=True)
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.state import PRIOR_ATTR, base_model, get_hook, get_prior, is_wrapped
from sp_adapter.errors import CheckpointFormatError, OptionError, RunFolderError
from sp_adapter.files.atomic import append_text, write_atomic
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.cache import TeacherFeatureCache
from sp_adapter.train.checkpoint import (
    UNREADABLE,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
    rng_state,
    save_atomic,
    set_rng_state,
    short_reason,
    strength_path,
)
from sp_adapter.train.config import TrainConfig
from sp_adapter.train.data import BatchStream
from sp_adapter.train.distributed import (
    DistInfo,
    barrier,
    dist_info,
    gather_objects,
    mean_across,
    wrap_ddp,
)
from sp_adapter.train.evaluate import EvalResult, evaluate
from sp_adapter.train.losses import LossTerms, TotalLoss, build_perceptual, full
from sp_adapter.train.model_spec import ModelSpec
from sp_adapter.train.schedule import STUDENT_PREFIX, WarmupCosine, build_optimizer

LOG_NAME = "log.jsonl"
RUN_NAME = "run.json"
CHECKPOINT_FORMAT = "sp_adapter.train"

# Options that may change when a run is resumed; any other difference is an error.
# ``steps`` may grow: the cosine schedule is stretched to the new total (see ``resume``).
_RESUMABLE_CHANGES = {"progress", "val_every", "log_every", "checkpoint_every",
                      "keep_checkpoints", "num_workers", "device", "val_batch_size", "steps"}

Callback = Callable[["Trainer", dict[str, float]], None]


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``"auto"``: this process's GPU if CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{info.local_rank}")
    return device


def _run_files(run_dir: Path) -> list[str]:
    """The names of the run's files that ``run_dir`` holds (log, run.json, checkpoints)."""
    names = [name for name in (LOG_NAME, RUN_NAME) if (run_dir / name).is_file()]
    found = list_checkpoints(run_dir)
    if found:
        names.append(f"{len(found)} checkpoint{'s' * (len(found) > 1)}")
    return names


def check_run_folder(run_dir: str | os.PathLike, resume: bool, overwrite: bool = False) -> None:
    """Refuse to start a run over another one (unless ``overwrite``) and to resume a
    folder that holds no run (a mistyped name would otherwise train from step 0)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise OptionError("resume and overwrite exclude each other: resume continues the run "
                          "in the folder, overwrite replaces it")
    held = _run_files(run_dir)
    if resume and not held:
        raise RunFolderError(
            f"{run_dir} holds no run to resume (no {LOG_NAME}, {RUN_NAME} or checkpoints/"
            "step_*.pt): check the folder's name, or leave out resume=True (CLI: --resume) "
            "to start a new run there")
    if not resume and not overwrite and held:
        what = ("checkpoints of a run" if list_checkpoints(run_dir)
                else "a run without a checkpoint yet")
        raise RunFolderError(
            f"{run_dir} already holds {what} ({', '.join(held)}): pass resume=True (CLI: "
            "--resume) to continue it, overwrite=True (CLI: --overwrite) to start it again "
            "(its log and checkpoints are deleted), or choose another run folder")


def remove_run(run_dir: str | os.PathLike) -> None:
    """Delete a run's files (log, run.json, checkpoints and their saved strengths); other
    files in the folder are left alone."""
    run_dir = Path(run_dir)
    for _, path in list_checkpoints(run_dir):
        path.unlink(missing_ok=True)
        strength_path(path).unlink(missing_ok=True)
    for name in (LOG_NAME, RUN_NAME):
        (run_dir / name).unlink(missing_ok=True)


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a ``log.jsonl``. A last line cut short (a crash while it was written)
    is dropped with a warning; any other line that is no JSON object is an error naming the
    file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    entries = []
    for index, (number, line) in enumerate(numbered):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(numbered) - 1:
                warnings.warn(f"{path}:{number}: ignored the last line, cut short (as by a "
                              f"crash while it was written): {line[:60]!r}", stacklevel=2)
                break
            raise RunFolderError(
                f"{path}:{number}: not a JSON line ({err.msg}, column {err.colno}): fix or "
                "delete that line, then resume again") from None
        if not isinstance(entry, dict):
            raise RunFolderError(f"{path}:{number}: expected a JSON object, got {line[:60]!r}")
        entries.append(entry)
    return entries


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _freeze(model: nn.Module, selected: Callable[[str], bool]) -> list[str]:
    """Turn off gradients of the parameters whose names are ``selected``; their names."""
    frozen = []
    for name, p in base_model(model).named_parameters():
        if selected(name):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_backbone(model: nn.Module) -> list[str]:
    """Turn off gradients of every parameter outside the prior; returns their names."""
    return _freeze(model, lambda name: not name.startswith(PRIOR_ATTR + "."))


def freeze_student(model: nn.Module) -> list[str]:
    """Turn off gradients of the prior's student F_S; returns their names (its batch-norm
    statistics are frozen already, see :class:`~sp_adapter.prior.student.TeacherInitStudent`)."""
    return _freeze(model, lambda name: name.startswith(STUDENT_PREFIX))


def _to_float(out: Any) -> Any:
    """Half-precision outputs (autocast) to float32 for the losses."""
    if isinstance(out, torch.Tensor):
        return full(out)
    if isinstance(out, (list, tuple)):
        return [_to_float(o) for o in out]
    return out


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: ``seconds`` is the time spent in training steps
    (forward, loss, backward, optimiser), ``data_seconds`` the time spent waiting for
    batches (loading or synthesising samples)."""

    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: EvalResult | None = None
    data_seconds: float = 0.0
    checkpoint: Path | None = None
    resumed_from: int | None = None


class Trainer:
    """Train ``model`` on ``train_data``; see the module docstring.

    Args:
        model: the backbone, wrapped or not (on any device; moved to the config's).
        train_data: map-style dataset of ``(blurry, sharp)`` or ``(blurry, sharp, key)``
            tensors in [0, 1] (keys are needed by the teacher cache).
        config: the options.
        run_dir: where the log, ``run.json`` and checkpoints go (``None``: nowhere).
        val_data: scored (PSNR/SSIM) every ``val_every`` steps and at the end.
        backbone: name or :class:`Backbone`: input conversion, final image, default
            reconstruction loss.
        model_spec: how to rebuild the model (stored in checkpoints for the CLI).
        data_options: how the training data was made (the CLI passes its dataset, crop,
            blur, photos, ...; not the folder, so a moved dataset resumes); stored in
            ``run.json`` and checkpoints, and a resume with other data options is refused,
            like one with other training options.
        perceptual: a perceptual module to use instead of ``config.perceptual``.
        callbacks: called as ``fn(trainer, stats)`` after every step.
        dist: the process's rank and world (default: the current process group).
        name: the label of the progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        config: TrainConfig | None = None,
        *,
        run_dir: str | os.PathLike | None = None,
        val_data: Dataset | None = None,
        backbone: str | Backbone = "unet",
        model_spec: ModelSpec | None = None,
        data_options: dict[str, Any] | None = None,
        perceptual: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        dist: DistInfo | None = None,
        name: str = "train",
    ) -> None:
        self.config = config = config or TrainConfig()
        self.info = dist or dist_info()
        self.device = resolve_device(config.device, self.info)
        self.spec = backbone_spec(backbone)
        self.model_spec = model_spec
        self.data_options = dict(data_options) if data_options is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.val_data = val_data
        self.callbacks = list(callbacks)
        self.name = name
        self.wrapped = is_wrapped(model)

        inner = base_model(model).to(self.device)
        if self.wrapped and get_prior(inner).strength != 1.0:
            warnings.warn(
                f"training with the prior at strength {get_prior(inner).strength:g} (a "
                "calibrated prior, e.g. loaded with wrap(prior=...)): the SPEs learn a change "
                "that is scaled at every step; call sp_adapter.set_prior_strength(model, 1) "
                "first to train the prior as Eq. 6 has it", stacklevel=2)
        if config.prior_only:
            if not self.wrapped:
                raise OptionError("prior_only=True needs a wrapped model (sp_adapter.wrap)")
            freeze_backbone(inner)
        if config.student_lr_scale == 0 and self.wrapped:
            freeze_student(inner)
        if config.backbone_lr_scale == 0 and self.wrapped:
            freeze_backbone(inner)
        self.optimizer, self.scheduler = build_optimizer(inner.named_parameters(), config)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        teacher = get_hook(inner).teacher if self.wrapped else None
        if config.alpha > 0 and perceptual is None:
            perceptual = build_perceptual(config.perceptual, teacher=teacher)
        if perceptual is not None:
            perceptual = perceptual.to(self.device)
        self.loss = TotalLoss(
            config.loss or self.spec.loss, final=self.spec.final, alpha=config.alpha,
            beta=config.beta if self.wrapped else 0.0, perceptual=perceptual,
        )
        self.cache: TeacherFeatureCache | None = None
        if config.cache_teacher:
            self._check_cache(train_data, teacher)
            self.cache = TeacherFeatureCache(teacher)  # type: ignore[arg-type]

        self.model: nn.Module = inner
        if self.info.enabled:
            find_unused = config.find_unused_parameters
            if find_unused is None:
                find_unused = self.wrapped
            self.model = wrap_ddp(inner, self.device, find_unused)
        self.stream = BatchStream(
            train_data, config.batch_size, self.info, seed=config.seed,
            new_samples_each_epoch=config.new_samples_each_epoch,
            num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
        )
        self.step = 0
        self.elapsed = 0.0  # seconds in train_step (compute), summed over resumes
        self.data_seconds = 0.0  # seconds waiting for batches
        self.history: list[dict[str, Any]] = []
        self.last_validation: EvalResult | None = None

    # -- set-up helpers -----------------------------------------------------------------
    def _amp_dtype(self) -> torch.dtype | None:
        mode = self.config.amp
        if self.device.type != "cuda" or mode == "off":
            return None
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if mode == "bf16" else torch.float16

    def _check_cache(self, data: Dataset, teacher: nn.Module | None) -> None:
        if not self.wrapped or teacher is None:
            raise OptionError("cache_teacher=True needs a model wrapped with a teacher")
        if self.config.new_samples_each_epoch and hasattr(data, "set_epoch"):
            raise OptionError(
                "cache_teacher=True only pays when samples repeat, but this dataset draws new "
                "samples every epoch: set new_samples_each_epoch=False (CLI: --fixed-samples; "
                "a fixed-crop dataset) or turn the cache off"
            )
        sample = data[0]
        if not (isinstance(sample, (tuple, list)) and len(sample) >= 3):
            raise OptionError(
                "cache_teacher=True needs samples (blurry, sharp, key): build the dataset "
                "with return_key=True (the CLI does)"
            )

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def module(self) -> nn.Module:
        """The model without DDP around it."""
        return base_model(self.model)

    # -- one step -------------------------------------------------------------------------
    def backward(self, batch: Sequence[Any]) -> LossTerms:
        """Forward, Eq. (7) and backward on one batch (gradients accumulate in ``.grad``,
        all-reduced across processes under DDP). Does not step the optimiser."""
        blurry = batch[0].to(self.device, non_blocking=True)
        sharp = batch[1].to(self.device, non_blocking=True)
        targets = None
        if self.cache is not None:
            targets = self.cache.targets(sharp, batch[2])
        self.model.train()
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else nullcontext())
        with autocast:
            out = self.model(self.spec.to_input(blurry))
        terms = self.loss(_to_float(out), sharp, model=self.model, prior_targets=targets)
        self.scaler.scale(terms.total).backward()
        return terms

    def train_step(self, batch: Sequence[Any]) -> dict[str, float]:
        """One optimiser step; returns the loss terms, learning rate and gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.backward(batch)
        stats = terms.as_floats()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            stats["grad_norm"] = float(norm)
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return stats

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train until ``config.steps``; with ``resume`` first load the latest checkpoint
        of ``run_dir`` that can be read and continue exactly where it was written. A
        folder that holds a run is refused unless ``resume`` or ``overwrite`` (which
        deletes that run's log and checkpoints first)."""
        config = self.config
        if self.run_dir is not None:
            if resume or self.step == 0:
                check_run_folder(self.run_dir, resume, overwrite)
            if self.is_main:
                for path in remove_stale_temporaries(self.run_dir):
                    warnings.warn(f"removed {path}, left by a run killed while saving a "
                                  "checkpoint", stacklevel=2)
                if overwrite and not resume:
                    remove_run(self.run_dir)
            barrier(self.info)
        resumed_from = self.resume() if resume else None
        if resumed_from is None and self.step == 0:
            seed_everything(config.seed * 1000 + self.info.rank)
        self._start_log(resumed_from)
        bar = tqdm(total=config.steps, initial=self.step, desc=self.name, unit="step",
                   disable=not (config.progress and self.is_main), dynamic_ncols=True)
        window: dict[str, float] = {}
        count = 0
        batches = self.stream.batches(config.data_start + self.step)
        try:
            while self.step < config.steps:
                start = time.perf_counter()
                batch = next(batches)
                loaded = time.perf_counter()
                stats = self.train_step(batch)
                self.elapsed += time.perf_counter() - loaded
                self.data_seconds += loaded - start
                self.step += 1
                for k, v in stats.items():
                    window[k] = window.get(k, 0.0) + v
                count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['total']:.4f}", refresh=False)
                if config.log_every and (self.step % config.log_every == 0
                                         or self.step == config.steps):
                    self._log_window(window, count)
                    window, count = {}, 0
                for callback in self.callbacks:
                    callback(self, stats)
                if (config.val_every and self.step % config.val_every == 0
                        and self.step < config.steps):
                    self.validate()
                if (config.checkpoint_every and self.step % config.checkpoint_every == 0
                        and self.step < config.steps):
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.val_data is not None:
            self.validate()
        final = self.save_checkpoint() if self.run_dir is not None else None
        return TrainResult(steps=self.step, seconds=self.elapsed, data_seconds=self.data_seconds,
                           history=list(self.history),
                           validation=self.last_validation, checkpoint=final,
                           resumed_from=resumed_from)

    # -- validation and logs ---------------------------------------------------------------
    def validate(self) -> EvalResult | None:
        """PSNR/SSIM on ``val_data``; under DDP each process scores every ``W``-th image
        and rank 0 logs the mean over all of them."""
        if self.val_data is None:
            return None
        data: Dataset = self.val_data
        if self.info.enabled:
            data = Subset(data, range(self.info.rank, len(data), self.info.world_size))
        rows: list[dict[str, Any]] = []
        if len(data):
            part = evaluate(self.module, data, self.spec, device=self.device,
                            batch_size=self.config.val_batch_size,
                            progress=self.config.progress and self.is_main)
            rows = part.per_image
        rows = [row for part_rows in gather_objects(rows, self.info) for row in part_rows]
        result = EvalResult(
            psnr=sum(float(r["psnr"]) for r in rows) / len(rows),
            ssim=sum(float(r["ssim"]) for r in rows) / len(rows),
            count=len(rows), per_image=rows,
        )
        self.last_validation = result
        self._write_log({"step": self.step, "val_psnr": result.psnr,
                         "val_ssim": result.ssim, "val_count": result.count})
        return result

    def _log_window(self, window: dict[str, float], count: int) -> None:
        means = {k: v / count for k, v in window.items()}
        means = mean_across(means, self.info, self.device)
        entry = {"step": self.step, **{k: round(v, 8) for k, v in sorted(means.items())},
                 "seconds": round(self.elapsed, 3)}
        if self.cache is not None:
            entry.update(cache_hits=self.cache.hits, cache_misses=self.cache.misses)
        self._write_log(entry)

    def _write_log(self, entry: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.history.append(entry)
        if self.run_dir is not None:
            append_text(self.run_dir / LOG_NAME, json.dumps(entry) + "\n")

    def _start_log(self, resumed_from: int | None) -> None:
        if not self.is_main or self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.run_dir / LOG_NAME
        if resumed_from is not None and log.exists():
            # drop what the killed run logged after its last checkpoint
            kept = [entry for entry in read_log(log) if entry.get("step", 0) <= resumed_from]
            write_atomic(log, "".join(json.dumps(entry) + "\n" for entry in kept).encode())
        elif resumed_from is None and self.step == 0 and log.exists():
            log.unlink()
        run = {"config": self.config.to_dict(), "backbone": self.spec.name,
               "model_spec": self.model_spec.to_dict() if self.model_spec else None,
               "data_options": self.data_options,
               "wrapped": self.wrapped, "world_size": self.info.world_size}
        write_atomic(self.run_dir / RUN_NAME, (json.dumps(run, indent=2) + "\n").encode())

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (RNGs of every process)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "elapsed": self.elapsed,
            "data_seconds": self.data_seconds,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": self.config.to_dict(),
            "backbone": self.spec.name,
            "model_spec": self.model_spec.to_dict() if self.model_spec else None,
            "data_options": self.data_options,
            "wrapped": self.wrapped,
            "world_size": self.info.world_size,
            "rng": gather_objects(rng_state(), self.info),
            "metrics": self.last_validation.as_dict() if self.last_validation else None,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.pt`` atomically (rank 0) and prune old ones."""
        if self.run_dir is None:
            raise RunFolderError("no run_dir: checkpoints need a folder")
        state = self.state_dict()  # collective under DDP: every rank takes part
        path = None
        if self.is_main:
            path = save_atomic(state, checkpoint_path(self.run_dir, self.step))
            prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        barrier(self.info)
        return path if path is not None else checkpoint_path(self.run_dir, self.step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`: the config must match (see
        ``_RESUMABLE_CHANGES``), and so must the data options where both the checkpoint
        and this trainer have them."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointFormatError("not a training checkpoint of sp_adapter.train")
        saved = state["config"]
        ours = self.config.to_dict()
        differ = sorted(k for k in ours if k not in _RESUMABLE_CHANGES
                        and _plain(saved.get(k)) != _plain(ours[k]))
        if differ:
            raise RunFolderError(
                "the checkpoint was written with other training options: "
                + ", ".join(f"{k}={saved.get(k)!r} (now {ours[k]!r})" for k in differ)
                + "; resume with the same options or start a new run folder"
            )
        saved_data = state.get("data_options")
        if saved_data is not None and self.data_options is not None:
            keys = sorted(set(saved_data) | set(self.data_options))
            differ = [k for k in keys
                      if _plain(saved_data.get(k)) != _plain(self.data_options.get(k))]
            if differ:
                raise RunFolderError(
                    "the checkpoint was trained on other data: "
                    + ", ".join(f"{k}={saved_data.get(k)!r} (now "
                                f"{self.data_options.get(k)!r})" for k in differ)
                    + "; resume with the same data options or start a new run folder"
                )
        try:
            self.module.load_state_dict(state["model"], strict=True)
        except RuntimeError as err:  # torch lists every key; say what differs instead
            ours, theirs = set(self.module.state_dict()), set(state["model"])
            raise RunFolderError(
                f"the checkpoint holds another network ({len(theirs - ours)} of its tensors "
                f"are not in this model, {len(ours - theirs)} of this model's are not in it"
                f"{'; shapes differ' if ours == theirs else ''}): resume with the backbone, "
                "prior and levels it was trained with, or start a new run folder") from err
        self.optimizer.load_state_dict(state["optimizer"])
        if self.config.steps < int(state["step"]):
            raise RunFolderError(
                f"the checkpoint is at step {state['step']}, beyond steps={self.config.steps} "
                f"(CLI: --steps): give steps of {state['step']} or more to resume it")
        self.scheduler.load_state_dict(state["scheduler"])
        self._extend_schedule()
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.data_seconds = float(state.get("data_seconds", 0.0))
        rngs = state.get("rng") or []
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            warnings.warn(
                f"the checkpoint holds RNG states of {len(rngs)} processes, this run has "
                f"{self.info.world_size}: generators are re-seeded (resume is not bit-exact)",
                stacklevel=2,
            )
            seed_everything(self.config.seed * 1000 + self.step + self.info.rank)

    def _extend_schedule(self) -> None:
        """Give the loaded schedule this run's total steps: a resume with more steps
        stretches the cosine over the new total (the loaded state holds the old one)."""
        for factor in self.scheduler.lr_lambdas:
            if isinstance(factor, WarmupCosine):
                factor.total = int(self.config.steps)
        # the learning rates of the resumed step under the stretched schedule
        step = self.scheduler.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def resume(self) -> int | None:
        """Load the newest checkpoint of ``run_dir`` that can be read (a damaged one is
        skipped with a warning); returns its step (``None``: the run has no checkpoint
        yet, so it starts again from step 0)."""
        if self.run_dir is None:
            raise RunFolderError("resume=True needs a run_dir")
        found = list_checkpoints(self.run_dir)
        if not found:
            check_run_folder(self.run_dir, resume=True)
            warnings.warn(f"{self.run_dir} holds no checkpoint yet: the run starts again "
                          "from step 0", stacklevel=2)
            return None
        skipped = []
        for _, path in reversed(found):
            try:
                state = load_checkpoint(path)
            except UNREADABLE as err:
                skipped.append(f"{path.name} ({short_reason(err)})")
                continue
            self.load_state_dict(state)
            if skipped:
                warnings.warn(
                    f"skipped checkpoints that cannot be read: {'; '.join(skipped)}; resuming "
                    f"from {path} (step {self.step}); the damaged files are replaced as the "
                    "run reaches their steps again", stacklevel=2)
            return self.step
        raise RunFolderError(
            f"no checkpoint in {self.run_dir / 'checkpoints'} can be read: "
            + "; ".join(skipped) + ". Start a new run (CLI: --overwrite, or another --run-dir)")


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal (JSON round trips turn one into the other)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
