"""The prior at zero inference cost: distil a wrapped network back into its bare backbone.

A network trained with the prior (Eq. 7) restores images better, but its student F_S and
the SPEs run on every image. :func:`distill_to_backbone` trains a copy of the BARE network
(no hooks, no prior), starting from the wrapped network's own backbone weights, to
reproduce the wrapped network's restorations: the target is the +SP network's output on
the same blurry batch, so neither sharp images nor the teacher are needed, and any blurry
photos serve. Optionally it also matches the network's own tensors at the prior's levels
(the decoder features that Eq. (6) modulates: the student's tensor there, without the
prior, is pulled towards the wrapped network's, with it). The result is the user's own
class with its own ``state_dict`` keys, so their loading code takes it with
``strict=True`` (:func:`save_backbone_checkpoint` writes it in the backbone's own
checkpoint format) and it costs exactly the original network at inference.

Measured so far (``benchmarks/results/distill.md``, ``benchmarks/RESULTS.md``; short CPU
schedules on the demo's protocol): the distilled network keeps NONE of the prior's gain
beyond what the same number of extra training steps gives the bare network on its own;
matching the level tensors too adds nothing. The defaults are that file's chosen recipe
(outputs only). Distil when 1.00x inference matters more than the prior's gain; otherwise
keep the prior.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.attach.levels import find_module
from sp_adapter.attach.state import base_model, get_hook, wrapped_module
from sp_adapter.attach.wrap import unwrap
from sp_adapter.errors import DistillError
from sp_adapter.train.checkpoint import (
    UNREADABLE,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)

STATE_FILE = "distill_state.pt"
"""The resumable state of a distillation in its ``run_dir``."""

CHECKPOINT_KEYS: dict[str, str | None] = {
    "unet": None,
    "mimo-unet": "model",
    "mimo-unet-plus": "model",
    "mprnet": "state_dict",
    "mprnet-stage1": "state_dict",
    "mssnet": "model_state_dict",
    "deepdeblur": "G",
    "nafnet": "params",
    "nafnet-64": "params",
    "restormer": "params",
}
"""The entry under which each backbone's official code keeps its weights (``None``: a bare
state dict); see :mod:`sp_adapter.files.checkpoints` for who publishes which. A backbone
absent here (MSSNet's sizes share ``"mssnet"``) is written as a bare state dict."""


@dataclass
class DistillConfig:
    """The recipe of :func:`distill_to_backbone`.

    Attributes:
        steps: optimiser steps (one batch each).
        lr: Adam's learning rate at the start; it decays on a cosine to ``lr * min_lr_ratio``.
        min_lr_ratio: the last step's learning rate over ``lr``.
        feature_weight: weight of the level-feature term next to the output term (0: match
            the outputs alone).
        cache_targets: keep the wrapped network's outputs (and features) of each batch
            after the first pass over ``data``: only for data that yields the same batches
            on every pass (a fixed list of tensors), never for random crops.
        save_every: steps between saves of the resumable state (with a ``run_dir``).
    """

    steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.01
    feature_weight: float = 0.0
    cache_targets: bool = False
    save_every: int = 200

    def check(self) -> None:
        if self.steps < 1:
            raise DistillError(f"steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise DistillError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise DistillError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.feature_weight < 0:
            raise DistillError(f"feature_weight must be 0 or more, got {self.feature_weight}")
        if self.save_every < 1:
            raise DistillError(f"save_every must be at least 1, got {self.save_every}")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): a cosine from ``lr``."""
        t = step / max(1, self.steps - 1)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


# -- capturing the level tensors ----------------------------------------------------------
class LevelTaps:
    """Forward hooks recording the tensor at each prior level of ``network`` (the site's
    output, or its first input for a level that modulates the input), every call of a
    forward; registered after the prior's own hooks, so on a wrapped network they see
    the modulated tensors. :meth:`remove` takes them all off again."""

    def __init__(self, network: nn.Module, levels: dict[str, Any]) -> None:
        self.tensors: dict[str, list[torch.Tensor]] = {name: [] for name in levels}
        self._handles = []
        for name, level in levels.items():
            site = find_module(network, level.site, f"level {name!r}: site")
            if level.on_input:
                self._handles.append(site.register_forward_pre_hook(
                    lambda m, args, name=name: self.tensors[name].append(args[0])))
            else:
                self._handles.append(site.register_forward_hook(
                    lambda m, args, out, name=name: self.tensors[name].append(out)))

    def take(self) -> dict[str, list[torch.Tensor]]:
        """The tensors recorded since the last call (and forget them)."""
        taken = self.tensors
        self.tensors = {name: [] for name in taken}
        return taken

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _carrier_path(container: nn.Module, carrier: nn.Module) -> str:
    """The path of the wrapped network inside the network the user passed ('' : itself)."""
    for path, module in container.named_modules():
        if module is carrier:
            return path
    raise DistillError("the wrapped network is not inside the model given")  # unreachable


# -- data ----------------------------------------------------------------------------------
def _network_input(batch: Any) -> Any:
    """The network's input in a batch: the batch itself (a tensor), or the first item of a
    ``(blurry, sharp, ...)`` tuple or list (the sharp image is never used)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise DistillError(
        f"each batch of data must be the network's input (a tensor) or a (blurry, ...) tuple "
        f"whose first item is; got {type(batch).__name__}"
    )


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


def _passes(data: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """``(index within the pass, batch)`` over ``data`` again and again."""
    while True:
        empty = True
        for index, batch in enumerate(data):
            empty = False
            yield index, batch
        if empty:
            raise DistillError("data yielded no batch: give at least one blurry batch")


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    raise DistillError(f"the network returned a {type(out).__name__}; distillation needs a "
                       "tensor or a list/tuple of tensors")


# -- the loss --------------------------------------------------------------------------------
def output_loss(student: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance over every output of the network (all scales of a multi-output
    network such as MIMO-UNet)."""
    return sum(F.l1_loss(s, t) for s, t in zip(student, target, strict=True)) / len(student)


def feature_loss(student: dict[str, list[torch.Tensor]],
                 target: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 distance of the tensors at the prior's levels (every call of each level)."""
    terms = [F.l1_loss(s, t) for name in target
             for s, t in zip(student[name], target[name], strict=True)]
    if not terms:
        raise DistillError("no level ran in the forward: the level sites were not called")
    return sum(terms) / len(terms)


# -- checkpoints -----------------------------------------------------------------------------
def backbone_name(model: nn.Module) -> str | None:
    """The adapters' name of ``model``'s backbone (``None``: a network no adapter knows)."""
    from sp_adapter.adapters import match

    found = match(base_model(model))
    return found[0].name if found is not None else None


OWN_FORMAT = "<own>"
"""``save_backbone_checkpoint(key=OWN_FORMAT)``: the backbone's own entry."""


def save_backbone_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                             key: str | None = OWN_FORMAT, overwrite: bool = False) -> Path:
    """Write ``model``'s ``state_dict`` the way the backbone's official code saves it
    (``{key: state_dict}``, :data:`CHECKPOINT_KEYS`; a bare state dict for a network no
    adapter knows), atomically, so that code loads it with ``strict=True``.

    Args:
        key: the entry to use (``None``: a bare state dict); default: the backbone's own.
        overwrite: replace an existing file (refused otherwise).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DistillError(f"{path} exists: pass overwrite=True (--overwrite) to replace it, "
                           "or choose another file")
    if key == OWN_FORMAT:
        key = CHECKPOINT_KEYS.get(backbone_name(model) or "")
    state = {k: v.detach().cpu() for k, v in base_model(model).state_dict().items()}
    return save_atomic(state if key is None else {key: state}, path)


def _read_state(path: Path, config: DistillConfig) -> dict[str, Any]:
    try:
        state = load_checkpoint(path)
    except UNREADABLE as err:
        raise DistillError(f"cannot read the distillation state {path} ({err}); delete it "
                           "to start again") from None
    saved = dict(state.get("config", {}))
    ours = asdict(config)
    differ = [k for k in ours if k not in ("steps", "save_every") and saved.get(k) != ours[k]]
    if differ:
        listed = ", ".join(f"{k}={saved.get(k)!r} (now {ours[k]!r})" for k in differ)
        raise DistillError(f"{path} holds a distillation with other settings: {listed}; "
                           "use the same settings to resume, or another run_dir")
    return state


# -- the distillation ------------------------------------------------------------------------
def distill_to_backbone(
    model: nn.Module,
    data: Iterable[Any],
    config: DistillConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    **options: Any,
) -> nn.Module:
    """Train the bare network to do what the wrapped one does: the prior's gain at the
    original network's inference cost.

    The bare copy starts from ``model``'s own backbone weights; each step it sees a batch
    of ``data`` and minimises the L1 distance of its outputs to the wrapped network's
    (run in eval mode, without gradients), plus ``feature_weight`` times that of its
    tensors at the prior's levels to the wrapped network's modulated ones (Eq. 6's
    ``f_sa``). ``model`` itself is not changed.

    In the measurements so far (``benchmarks/results/distill.md``, summarised in
    ``benchmarks/RESULTS.md``) the distilled network kept none of the prior's gain beyond
    what as many extra training steps give the bare network: it costs 1.00x, but do not
    expect it to restore as well as the wrapped network.

    Args:
        model: a wrapped network (:func:`sp_adapter.wrap`), trained.
        data: blurry batches in the network's input format, re-iterated as often as the
            steps need: tensors, or ``(blurry, ...)`` tuples (a ``DataLoader`` of
            ``(blurry, sharp)`` pairs works; the sharp image is not used).
        config: the recipe (:class:`DistillConfig`); keyword ``options`` override its
            fields (``steps=500, feature_weight=0.1``).
        run_dir: a folder for the resumable state (``distill_state.pt``, written
            atomically every ``save_every`` steps and at the end); ``None``: nothing saved.
        resume: continue from the state in ``run_dir`` if there is one (the data is
            replayed up to the saved step, so a resumed run matches an uninterrupted one
            on data that yields the same batches in the same order).
        progress: show a progress bar.
        on_step: called with ``(step, loss)`` after every step.

    Returns:
        The bare network: ``model``'s own class (the container the user wrapped, when
        ``wrap`` was given one), its own ``state_dict`` keys, no hooks, in eval mode, on
        ``model``'s device.
    """
    from tqdm.auto import tqdm

    config = DistillConfig(**{**asdict(config or DistillConfig()), **options}) if options \
        else (config or DistillConfig())
    config.check()
    hook = get_hook(model)  # a WrapError for a model without a prior
    teacher = base_model(model)
    carrier = wrapped_module(teacher)
    path = _carrier_path(teacher, carrier)
    was_training = teacher.training
    student = unwrap(copy.deepcopy(teacher))
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise DistillError(f"{type(student).__name__} has no trainable parameters to distil "
                           "into")
    optimizer = torch.optim.Adam(params, lr=config.lr)
    device = params[0].device
    start = 0
    state_path = Path(run_dir) / STATE_FILE if run_dir is not None else None
    if state_path is not None and state_path.exists():
        if not resume:
            raise DistillError(f"{state_path} exists: resume it (resume=True), or choose "
                               "another run_dir")
        saved = _read_state(state_path, config)
        student.load_state_dict(saved["student"], strict=True)
        optimizer.load_state_dict(saved["optimizer"])
        start = int(saved["step"])

    def save(step: int) -> None:
        if state_path is not None:
            save_atomic({"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                         "step": step, "rng": rng_state(), "config": asdict(config)},
                        state_path)

    levels = hook.levels if config.feature_weight > 0 else {}
    teacher_taps = LevelTaps(carrier, levels)
    student_taps = LevelTaps(student.get_submodule(path) if path else student, levels)
    cache: dict[int, tuple[list[torch.Tensor], dict[str, list[torch.Tensor]]]] = {}
    batches = _passes(data)
    teacher.eval()
    bar = tqdm(total=config.steps, initial=start, desc="distil", disable=not progress)
    try:
        for _ in range(start):  # replay the data up to the saved step
            next(batches)
        if start:
            set_rng_state(saved["rng"])
        for step in range(start, config.steps):
            index, batch = next(batches)
            x = _to(_network_input(batch), device)
            if config.cache_targets and index in cache:
                target, target_levels = cache[index]
            else:
                with torch.no_grad():
                    target = [t.detach() for t in _outputs(teacher(x))]
                target_levels = {k: [t.detach() for t in v]
                                 for k, v in teacher_taps.take().items()}
                if config.cache_targets:
                    cache[index] = (target, target_levels)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            loss = output_loss(_outputs(student(x)), target)
            taken = student_taps.take()
            if levels:
                loss = loss + config.feature_weight * feature_loss(taken, target_levels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}")
            if on_step is not None:
                on_step(step, value)
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                save(step + 1)
    finally:
        bar.close()
        teacher_taps.remove()
        student_taps.remove()
        teacher.train(was_training)
    return student.eval()
