"""Levels found automatically: the skip joins of a U-shaped network, from one probe forward.

For a network that no adapter and no ``sp_backbone_map()`` knows, one forward on a small
random image is traced at two granularities at once: forward hooks on every submodule
record which module produced each tensor (and which module first consumed it), and a
``torch.overrides.TorchFunctionMode`` records every tensor operation, so additions and
concatenations written in ``forward`` code (invisible to module hooks) are seen too.

Each tensor carries its creation time, the time of the latest UP-SAMPLING in its history
(an ``interpolate``/``pixel_shuffle``/``conv_transpose2d`` call or a module whose output
is at least 1.5x larger than its input) and when that up-sampler's coarse input was made.
A *skip join* is an addition of two equal-shaped features, or a channel concatenation of
two, where one operand ``f_de`` was up-sampled after the other, ``f_en``, existed, and
``f_en`` itself saw no up-sampling since the coarse feature that ``f_de`` comes from was
made. This keeps residual additions (both operands share one history), joins at the
start of a later stage (``f_en`` is newer than ``f_de``'s up-sampling) and a later
stage's additions of up-sampled features of an earlier stage (``f_en`` went through a
decoder since) out; a join with a 3-channel tensor (an image, a global residual) is not
a level.

Each join becomes a :class:`~sp_adapter.attach.levels.Level` of one of the three kinds:

* the join is a module's output (MPRNet ``up21``): ``Level(site, channels)``;
* the network adds ``f_en`` right after the module producing ``f_de`` (NAFNet ``ups.i``):
  ``Level(site, skip=..., channels)``;
* the concatenation (or an addition no module returns) is the first input of a module
  (Restormer ``reduce_chan_level3``): ``Level(site, channels, on_input=True)``.

Joins that run more than once per forward (a module run on image patches), or whose
operands are not module outputs, or were modified in place, are reported but not used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sp_adapter.attach.levels import BackboneMap, Level
from sp_adapter.errors import AutoLevelsError, ProbeError

log = logging.getLogger(__name__)

PROBE_SIZE = 64
"""Side of the random probe image: a multiple of 16, as deep backbones need."""

UPSAMPLERS = frozenset({
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pixel_shuffle",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
})
"""Tensor functions that may up-sample (a call counts when its output is larger)."""
ADDS = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_"})
CATS = frozenset({"cat", "concat", "concatenate"})

KINDS = {"output": "join is its output", "after": "skip added after it",
         "input": "join is its input"}
"""How each kind of level reads in the table."""


@dataclass
class _Info:
    created: int
    up: int = -1  # when its latest up-sampling happened (-1: never)
    source: int = -1  # when that up-sampler's coarse input was created


@dataclass(frozen=True)
class Candidate:
    """One skip join seen in the probe forward, usable as a level or not (``reason``).

    Attributes:
        op: ``"add"`` or ``"cat"``.
        kind: ``"output"``, ``"after"`` or ``"input"`` (see the module docstring), or
            ``None`` when no hook can reach the join.
        site, skip: module names for the :class:`Level` (``skip`` for ``"after"`` only).
        channels: channels of the modulated tensor.
        reduction: image pixels per feature pixel at the join.
        decoder, encoder: modules that produced ``f_de`` and ``f_en`` (``None``: not a
            module output).
        reason: why it is not used (``None``: used).
    """

    op: str
    kind: str | None
    site: str | None
    skip: str | None
    channels: int
    reduction: int
    decoder: str | None
    encoder: str | None
    reason: str | None = None

    def level(self) -> Level:
        if self.kind is None or self.site is None:
            raise AutoLevelsError(f"this join cannot be wrapped: {self.reason}")
        return Level(site=self.site, channels=self.channels,
                     skip=self.skip if self.kind == "after" else None,
                     on_input=self.kind == "input", reduction=self.reduction)

    def describe(self) -> str:
        where = self.site or "(no module)"
        kind = KINDS.get(self.kind or "", "no hook reaches it")
        return (f"{self.op} of f_de from {self.decoder or '(forward code)'} and f_en from "
                f"{self.encoder or '(forward code)'} at 1/{self.reduction}, "
                f"{self.channels} channels: site {where} ({kind})")


@dataclass
class AutoLevels:
    """The levels found in a network (finest first) and every join that was seen.

    ``str(found)`` is the table wrap logs; ``list(found)`` the :class:`Level` objects to
    pass as ``levels=``.
    """

    model: str
    levels: dict[str, Level]
    candidates: list[Candidate] = field(default_factory=list)

    def __iter__(self) -> Iterator[Level]:
        return iter(self.levels.values())

    def __len__(self) -> int:
        return len(self.levels)

    def table(self) -> str:
        rows = [f"levels found automatically in {self.model} (finest first):",
                "| level | site | kind | skip | channels | reduction |",
                "|---|---|---|---|---|---|"]
        for name, lv in self.levels.items():
            kind = "input (concatenation)" if lv.on_input else (
                "output + skip after" if lv.skip else "output (the join)")
            rows.append(f"| {name} | {lv.site} | {kind} | {lv.skip or '-'} | {lv.channels} "
                        f"| {lv.reduction} |")
        unused = [c for c in self.candidates if c.reason]
        if unused:
            rows.append("not used:")
            rows += [f"- {c.describe()}: {c.reason}" for c in unused]
        return "\n".join(rows)

    __str__ = table


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _is_upsampling(small: torch.Tensor, big: torch.Tensor) -> bool:
    if small.dim() != 4 or big.dim() != 4:
        return False
    (h, w), (bh, bw) = small.shape[-2:], big.shape[-2:]
    return bh >= h and bw >= w and (bh >= 1.5 * h or bw >= 1.5 * w)


@dataclass
class _Join:
    op: str
    de: torch.Tensor
    en: torch.Tensor
    result: torch.Tensor
    de_version: int
    en_version: int


class _Trace(TorchFunctionMode):
    """Records tensor histories (see the module docstring) and the joins of one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0
        # id -> (tensor kept alive so ids stay unique during the probe, its history)
        self.infos: dict[int, tuple[torch.Tensor, _Info]] = {}
        self.joins: list[_Join] = []
        self.produced: dict[int, str] = {}  # tensor id -> outermost module that returned it
        self.versions: dict[int, int] = {}  # tensor id -> _version when its module returned
        self.consumed: dict[int, str] = {}  # tensor id -> outermost module first called on it
        self.calls: dict[str, int] = {}

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def info(self, t: torch.Tensor) -> _Info:
        found = self.infos.get(id(t))
        return found[1] if found is not None else _Info(created=-1)

    def _made(self, t: torch.Tensor, inputs: Sequence[torch.Tensor], now: int) -> _Info:
        """The history of ``t``, just returned by an operation on ``inputs``."""
        known = self.infos.get(id(t))
        info = known[1] if known is not None else _Info(created=now)
        for parent in inputs:
            p = self.info(parent)
            if p.up > info.up:
                info.up, info.source = p.up, p.source
        self.infos[id(t)] = (t, info)
        return info

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = _tensors(args) + _tensors(kwargs)
        before = [(t, t._version) for t in (args[:2] if name in ADDS else ())
                  if isinstance(t, torch.Tensor)]
        out = func(*args, **kwargs)
        now = self.tick()
        outputs = _tensors(out)
        for t in outputs:
            self._made(t, inputs, now)
        if name in UPSAMPLERS and inputs and len(outputs) == 1:
            small = inputs[0]
            if _is_upsampling(small, outputs[0]):
                info = self.info(outputs[0])
                info.up, info.source = now, self.info(small).created
        if name in ADDS and len(before) == 2 and isinstance(out, torch.Tensor):
            (a, va), (b, vb) = before
            if a.dim() == 4 and a.shape == b.shape:
                self._join("add", a, va, b, vb, out)
        elif name in CATS and isinstance(out, torch.Tensor) and out.dim() == 4:
            parts = args[0] if args else kwargs.get("tensors", ())
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if (dim in (1, -3) and isinstance(parts, (list, tuple)) and len(parts) == 2
                    and all(isinstance(p, torch.Tensor) and p.dim() == 4 for p in parts)):
                a, b = parts
                if a.shape[0] == b.shape[0] and a.shape[-2:] == b.shape[-2:]:
                    self._join("cat", a, a._version, b, b._version, out)
        return out

    def _join(self, op: str, a: torch.Tensor, va: int, b: torch.Tensor, vb: int,
              result: torch.Tensor) -> None:
        ia, ib = self.info(a), self.info(b)
        for de, vd, en, ve, i_de, i_en in ((a, va, b, vb, ia, ib), (b, vb, a, va, ib, ia)):
            # f_de was up-sampled after f_en existed, and f_en saw no up-sampling since
            # the coarse feature f_de comes from was made
            if i_de.up > i_en.created and i_en.up < i_de.source:
                self.joins.append(_Join(op, de, en, result, vd, ve))
                return

    # -- module hooks -------------------------------------------------------------------
    def pre_hook(self, name: str, module: nn.Module, args: tuple) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if args and isinstance(args[0], torch.Tensor):
            self.consumed.setdefault(id(args[0]), name)
            self.infos.setdefault(id(args[0]), (args[0], _Info(created=-1)))  # keep its id

    def post_hook(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        now = self.tick()
        if not isinstance(output, torch.Tensor):
            return
        self._made(output, [], now)
        self.produced[id(output)] = name  # inner modules return first: the outermost wins
        self.versions[id(output)] = output._version
        small = next((a for a in _tensors(args) if a.dim() == 4), None)
        if small is not None and _is_upsampling(small, output):
            info = self.info(output)
            info.up, info.source = now, self.info(small).created


def trace_joins(model: nn.Module, probe: torch.Tensor) -> list[Candidate]:
    """Every skip join of one forward of ``model`` on ``probe``, in execution order."""
    trace = _Trace()
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(
                lambda m, a, name=name: trace.pre_hook(name, m, a)))
            handles.append(module.register_forward_hook(
                lambda m, a, o, name=name: trace.post_hook(name, m, a, o), always_call=True))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), trace:
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    found: dict[tuple, Candidate] = {}
    for join in trace.joins:
        if probe.shape[1] in (join.de.shape[1], join.en.shape[1]):
            continue  # a join with an image (a global residual) is not a level
        c = _candidate(trace, join, probe)
        # a module run several times (on patches) joins once per call: list it once
        found.setdefault((c.op, c.kind, c.site, c.skip, c.decoder, c.encoder), c)
    return list(found.values())


def _candidate(trace: _Trace, join: _Join, probe: torch.Tensor) -> Candidate:
    decoder, encoder = trace.produced.get(id(join.de)), trace.produced.get(id(join.en))
    result_of = trace.produced.get(id(join.result))
    consumer = trace.consumed.get(id(join.result))
    # the smaller ratio: a module run on image halves sees the full width
    reduction = max(1, round(min(probe.shape[-2] / join.result.shape[-2],
                                 probe.shape[-1] / join.result.shape[-1])))
    common = dict(op=join.op, reduction=reduction, decoder=decoder, encoder=encoder)
    # an in-place addition (x += skip) returns f_de itself, not a join a module made
    in_place = join.result is join.de or join.result is join.en
    if join.op == "add" and result_of is not None and not in_place:
        kind, site, skip, channels = "output", result_of, None, join.result.shape[1]
    elif join.op == "add" and decoder is not None and encoder is not None:
        kind, site, skip, channels = "after", decoder, encoder, join.de.shape[1]
    elif consumer is not None:
        kind, site, skip, channels = "input", consumer, None, join.result.shape[1]
    elif result_of is not None:
        kind, site, skip, channels = "output", result_of, None, join.result.shape[1]
    else:
        return Candidate(kind=None, site=None, skip=None, channels=join.result.shape[1],
                         reason="neither its operands nor its result pass through a module "
                         "a hook can reach", **common)
    reason = None
    modules = [site] + ([skip] if skip else [])
    calls = {m: trace.calls.get(m, 0) for m in modules}
    if any(n != 1 for n in calls.values()):
        reason = (f"{', '.join(f'{m} runs {n} times' for m, n in calls.items() if n != 1)} "
                  "per forward (shared, or run on image patches): one Level cannot tell the calls "
                  "apart; give Level(..., regions=...) by hand for patches")
    elif kind == "after" and any(
            trace.versions.get(id(t)) != v for t, v in ((join.de, join.de_version),
                                                        (join.en, join.en_version))):
        reason = "an operand was modified in place after its module returned it"
    return Candidate(kind=kind, site=site, skip=skip, channels=channels, reason=reason,
                     **common)


def _probe(model: nn.Module, size: int) -> torch.Tensor:
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, size, size, generator=g).to(device=device, dtype=dtype)


def _feature_modules(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, int, int]]:
    """``(name, channels, reduction)`` of the modules returning a 4D tensor once per
    forward (the candidates a user picks from when no join is found)."""
    seen: dict[str, list[torch.Size]] = {}
    handles = [m.register_forward_hook(
        lambda _m, _a, out, name=name: seen.setdefault(name, []).append(
            out.shape if isinstance(out, torch.Tensor) else None))
        for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model.eval()
            model(probe)
    except Exception:  # noqa: BLE001 (the listing is best effort inside an error message)
        pass
    finally:
        for h in handles:
            h.remove()
    found = []
    for name, shapes in seen.items():
        if len(shapes) == 1 and shapes[0] is not None and len(shapes[0]) == 4:
            found.append((name, shapes[0][1], max(1, round(probe.shape[-2] / shapes[0][-2]))))
    return found


def _example(levels: Sequence[Level]) -> str:
    parts = []
    for lv in levels:
        args = [f"site={lv.site!r}"]
        if lv.skip:
            args.append(f"skip={lv.skip!r}")
        args.append(f"channels={lv.channels}")
        if lv.on_input:
            args.append("on_input=True")
        parts.append(f"Level({', '.join(args)})")
    return "levels=[" + ", ".join(parts) + "]"


def _no_levels(model: nn.Module, probe: torch.Tensor, candidates: list[Candidate],
               why: str) -> AutoLevelsError:
    name = type(model).__name__
    lines = [f"{why} in {name} (probe forward on a {'x'.join(map(str, probe.shape))} image; "
             "a skip join is an addition or channel concatenation of an encoder feature with "
             "an up-sampled decoder feature at the same resolution)."]
    if candidates:
        lines.append("Joins seen:")
        lines += [f"  - {c.describe()}" + (f": {c.reason}" if c.reason else "")
                  for c in candidates]
        usable = [Level(site=c.site, channels=c.channels,
                        skip=c.skip if c.kind == "after" else None, on_input=c.kind == "input")
                  for c in candidates if c.site is not None]
    else:
        usable = []
    features = _feature_modules(model, probe)
    if features:
        by_scale: dict[int, list[str]] = {}
        for module, channels, reduction in features:
            by_scale.setdefault(reduction, []).append(f"{module} ({channels} ch)")
        lines.append("Modules with a feature-map output, by reduction (see "
                     "model.named_modules()):")
        for reduction in sorted(by_scale):
            names = by_scale[reduction]
            shown = ", ".join(names[-8:]) + (f" and {len(names) - 8} earlier" if len(names) > 8
                                             else "")
            lines.append(f"  1/{reduction}: {shown}")
        if not usable:
            # the last module at each of the three finest reductions, as a starting point
            last = {r: (m, c) for m, c, r in features if c != probe.shape[1]}
            usable = [Level(site=m, channels=c) for r, (m, c) in sorted(last.items())[:3]]
    lines.append("Pass the levels by hand, e.g. sp_adapter.wrap(model, "
                 + (_example(usable) if usable else "levels=[Level(site=..., channels=...)]")
                 + ") (docs/custom_backbone.md says how to pick them).")
    return AutoLevelsError("\n".join(lines))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {'x'.join(map(str, value.shape))}"
    return type(value).__name__


def _checked_probe(model: nn.Module, probe: Any) -> torch.Tensor:
    """``probe`` if it is one ``N x C x H x W`` image tensor; else a :class:`ProbeError`
    saying how to search a network that takes more than the image."""
    if isinstance(probe, torch.Tensor) and probe.dim() == 4:
        return probe
    if isinstance(probe, (tuple, list)):
        given = f"a {type(probe).__name__} of {len(probe)} ({', '.join(map(_describe, probe))})"
    else:
        given = _describe(probe)
    name = type(model).__name__
    raise ProbeError(
        f"find_levels runs {name}(probe) on one N x 3 x H x W image tensor, but the probe is "
        f"{given}. For a network that takes more than the image (e.g. forward(x, sigma)), "
        "search a module that takes the image alone and fixes the rest, e.g. "
        "`class ImageOnly(nn.Module): def __init__(self, net): super().__init__(); "
        "self.net = net` with `def forward(self, x): return self.net(x, sigma)`, then "
        "find_levels(ImageOnly(net), x) and wrap that module; or pass "
        "levels=[sp_adapter.Level(...)] by hand"
    )


def find_levels(
    model: nn.Module, probe: torch.Tensor | None = None, *, size: int = PROBE_SIZE
) -> AutoLevels:
    """The skip joins of ``model`` as levels, finest first, from one forward on ``probe``
    (default: a random ``1 x 3 x size x size`` image).

    Raises:
        AutoLevelsError: no join could be wrapped, or two joins claim the same module;
            the message lists the joins seen, the feature modules, and a ``levels=[...]``
            to pass by hand.
    """
    probe = _probe(model, size) if probe is None else _checked_probe(model, probe)
    try:
        candidates = trace_joins(model, probe)
    except Exception as err:
        raise AutoLevelsError(
            f"finding levels in {type(model).__name__} needs one forward on a "
            f"{'x'.join(map(str, probe.shape))} image, which failed: {err}. Give a probe "
            "input that the network accepts (sp_adapter.find_levels(model, probe)) "
            "or pass levels=[Level(...)] by hand"
        ) from err
    usable = [c for c in candidates if c.reason is None]
    by_site: dict[str, list[Candidate]] = {}
    for c in usable:
        by_site.setdefault(f"{c.site}:{c.kind}", []).append(c)
    clashes = [cs for cs in by_site.values() if len(cs) > 1]
    if clashes:
        raise _no_levels(model, probe, [c for cs in clashes for c in cs],
                         f"cannot decide: {len(clashes[0])} joins reach the same module "
                         f"{clashes[0][0].site!r}")
    if not usable:
        raise _no_levels(model, probe, candidates, "found no skip join that a hook can reach")
    ordered = sorted(usable, key=lambda c: c.reduction)  # stable: execution order per scale
    levels = {f"level{i + 1}": c.level() for i, c in enumerate(ordered)}
    return AutoLevels(type(model).__name__, levels, candidates)


def wanted(levels: Any, backbone: BackboneMap | None) -> bool:
    """Whether ``wrap`` should find the levels itself: ``levels="auto"``, or no levels and
    no level map (an adapter, ``sp_backbone_map()``, ``backbone=``) for the network."""
    return (isinstance(levels, str) and levels == "auto") or (levels is None and backbone is None)


def levels_for_wrap(model: nn.Module) -> dict[str, Level]:
    """:func:`find_levels` for ``wrap``; logs the table it chose (logger
    ``sp_adapter.attach.auto_levels``, level INFO)."""
    found = find_levels(model)
    log.info("%s", found.table())
    return found.levels
