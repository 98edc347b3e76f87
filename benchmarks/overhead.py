"""Inference and training-step overhead of the semantic prior, wrapped vs unwrapped.

Both variants are timed in the same process, interleaved (A, B, A, B, ...) so machine
noise hits both alike; medians are reported. Writes a Markdown table and a JSON file to
the ``--out`` stem: by default a scratch folder (``benchmarks/scratch.py``); ``--out
benchmarks/results/overhead`` updates the committed record. ``--backbones`` takes this
script's names or the CLI's (``mimo-unet``), in any case.

    python benchmarks/overhead.py                      # UNet at 256x256, CPU
    python benchmarks/overhead.py --backbones all --sizes 256 512 --device cuda
    python benchmarks/overhead.py --backbones MPRNet --levels s1_level1 s1_level2 s1_level3
    python benchmarks/overhead.py --kernel-size 1 3    # CLC/MLA/SAT with 1x1, then 3x3

Peak memory: the most tensor memory allocated during one forward (or training step)
beyond what was allocated before it (weights, optimiser state): on CUDA from
``torch.cuda.max_memory_allocated``, on CPU from the PyTorch profiler's allocation trace.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the CPU memory profiler's GPU probe is noise

import torch  # noqa: E402
import torch.nn.functional as F
from scratch import OUT_HELP, scratch

import sp_adapter as sp
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.config import teacher_at_levels
from sp_adapter.prior.embedding import reference_modulation
from sp_adapter.train.demo_config import DemoConfig

CONFIGS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "library": (sp.PriorConfig.kernel_size, None),
    "demo": (DemoConfig.prior_kernel_size, DemoConfig.teacher_levels),
}
"""Prior configurations by name: (kernel size, teacher levels; ``None``: the default):
the library's defaults and the demo's (``sp-adapter demo``)."""


@dataclass
class Backbone:
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.Tensor], tuple]
    final: Callable[[object], torch.Tensor]


def _unet():
    from sp_adapter.backbones.unet import UNet

    return UNet()


def _twin(module: str, name: str, **kwargs):
    def build():
        from importlib import import_module

        return getattr(import_module(f"sp_adapter.backbones.{module}"), name)(**kwargs)

    return build


def _pyramid(x: torch.Tensor) -> tuple:
    from sp_adapter.backbones.deepdeblur import to_input_pyramid

    return (to_input_pyramid(x),)


def _image(x):
    return (x,)


BACKBONES: dict[str, Backbone] = {
    "UNet": Backbone(_unet, _image, lambda out: out),
    "DeepDeblur": Backbone(_twin("deepdeblur", "MSResNet"), _pyramid, lambda out: out[0] / 255),
    "MPRNet": Backbone(_twin("mprnet", "MPRNet"), _image, lambda out: out[0]),
    "MPRNetStage1": Backbone(_twin("mprnet", "MPRNetStage1"), _image, lambda out: out[0]),
    "MIMO-UNet": Backbone(_twin("mimo_unet", "MIMOUNet"), _image, lambda out: out[-1]),
    "MIMO-UNetPlus": Backbone(_twin("mimo_unet", "MIMOUNetPlus"), _image, lambda out: out[-1]),
    "MSSNet": Backbone(_twin("mssnet", "DeblurNet"), _image, lambda out: out[-1]),
    "NAFNet-32": Backbone(_twin("nafnet", "NAFNet", width=32, enc_blk_nums=[1, 1, 1, 28],
                                dec_blk_nums=[1, 1, 1, 1]), _image, lambda out: out),
    "NAFNet-64": Backbone(_twin("nafnet", "NAFNet", width=64, enc_blk_nums=[1, 1, 1, 28],
                                dec_blk_nums=[1, 1, 1, 1]), _image, lambda out: out),
    "Restormer": Backbone(_twin("restormer", "Restormer"), _image, lambda out: out),
}


CLI_NAMES = {
    "unet": "UNet", "deepdeblur": "DeepDeblur", "mprnet": "MPRNet",
    "mprnet-stage1": "MPRNetStage1", "mimo-unet": "MIMO-UNet", "mimo-unet-plus": "MIMO-UNetPlus",
    "mssnet": "MSSNet", "nafnet": "NAFNet-32", "nafnet-64": "NAFNet-64", "restormer": "Restormer",
}
"""The CLI's backbone names (``sp-adapter --backbone``) of the networks measured here."""


def backbone_keys(names: list[str]) -> list[str]:
    """The :data:`BACKBONES` keys of ``names``: this script's names or the CLI's, in any
    case, or ``all``; an unknown name stops the script before anything is measured."""
    from sp_adapter.adapters import backbone_named
    from sp_adapter.errors import UnknownOptionError

    if [name.lower() for name in names] == ["all"]:
        return list(BACKBONES)
    own = {key.lower(): key for key in BACKBONES}
    keys = []
    for name in names:
        if name.lower() in own:
            keys.append(own[name.lower()])
            continue
        try:
            cli = backbone_named(name).name
        except UnknownOptionError as err:
            raise SystemExit(f"--backbones: {err}; or one of {list(BACKBONES)}") from None
        if cli not in CLI_NAMES:
            raise SystemExit(f"--backbones: {name!r} is not measured here; choose from "
                             f"{list(BACKBONES)} or the CLI's {sorted(CLI_NAMES)}")
        keys.append(CLI_NAMES[cli])
    return keys


class InlinedUNet(torch.nn.Module):
    """A wrapped UNet's computation with the modulation written into ``forward`` by hand:
    the reference for the cost of the hook machinery itself."""

    def __init__(self, wrapped: torch.nn.Module) -> None:
        super().__init__()
        twin = copy.deepcopy(wrapped)
        self.prior = twin.sp_prior
        self.net = sp.unwrap(twin)

    def _mod(self, name: str, h: torch.Tensor, skip: torch.Tensor, priors) -> torch.Tensor:
        embedding = self.prior.embeddings[name]
        return embedding(h, h + skip, embedding.maps(priors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, priors = self.net, self.prior(x)
        e1 = n.enc1(n.head(x))
        e2 = n.enc2(n.down1(e1))
        e3 = n.enc3(n.down2(e2))
        d3 = self._mod("level3", n.dec3(e3), e3, priors) + e3
        d2 = n.dec2(self._mod("level2", n.up2(d3), e2, priors) + e2)
        d1 = n.dec1(self._mod("level1", n.up1(d2), e1, priors) + e1)
        return x + n.tail(d1)


def build_pair(
    name: str, teacher, levels: list[str] | None = None, kernel_size: int = 1,
    teacher_spec: sp.TeacherSpec | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The backbone (seed 0) and a wrapped deep copy of it (``teacher`` built from
    ``teacher_spec``, the default teacher when omitted)."""
    torch.manual_seed(0)
    base = BACKBONES[name].build()
    config = sp.PriorConfig(kernel_size=kernel_size, teacher=teacher_spec or sp.TeacherSpec())
    return base, sp.wrap(copy.deepcopy(base), levels, teacher=teacher, config=config)


def _autocast(device: torch.device, amp: str | None):
    """bfloat16 autocast on ``device`` for ``amp == "bf16"``, else nothing."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_fn(name: str, model: torch.nn.Module, x: torch.Tensor, sharp: torch.Tensor,
             with_prior: bool, amp: str | None = None) -> Callable[[], None]:
    spec = BACKBONES[name]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def fn() -> None:
        with _autocast(x.device, amp):
            out = spec.final(model(*spec.inputs(x)))
            loss = F.l1_loss(out.float(), sharp)
            if with_prior:
                loss = loss + 0.1 * sp.prior_loss(model, sharp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return fn


def _infer_fn(name: str, model: torch.nn.Module, x: torch.Tensor,
              reference: bool = False, amp: str | None = None) -> Callable[[], object]:
    """One inference forward; ``reference``: with every SPE's reference modulation
    (full-resolution maps, :func:`sp_adapter.prior.embedding.reference_modulation`)."""
    spec = BACKBONES[name]
    model.eval()

    def fn():
        with torch.inference_mode(), _autocast(x.device, amp), (
                reference_modulation() if reference else contextlib.nullcontext()):
            return model(*spec.inputs(x))

    return fn


def hook_machinery(
    size: int, device: torch.device, repeats: int, teacher, warmup: int = 2
) -> dict:
    """Wrapped UNet (hooks) vs the same modulation inlined by hand, after a training step
    so the modulation is non-trivial; outputs must agree."""
    torch.manual_seed(0)
    hooked = sp.wrap(_unet().to(device), teacher=teacher)
    for embedding in hooked.sp_prior.embeddings.values():
        torch.nn.init.normal_(embedding.fusion.conv1.weight, std=0.05)
        torch.nn.init.normal_(embedding.fusion.conv2.weight, std=0.05)
    inlined = InlinedUNet(hooked).to(device).eval()
    hooked.eval()
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        a, b = hooked(x), inlined(x)
    if not torch.allclose(a, b, atol=1e-5):
        raise AssertionError(f"inlined and hooked outputs differ by {(a - b).abs().max()}")

    def run(model):
        def fn():
            with torch.inference_mode():
                return model(x)

        return fn

    t = interleaved_medians({"hooks": run(hooked), "inlined": run(inlined)}, repeats, device,
                            warmup)
    return {
        "size": size,
        "hooks_s": t["hooks"],
        "inlined_s": t["inlined"],
        "ratio": t["hooks"] / t["inlined"],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, device, warmup: int = 2,
    record: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median seconds of each function, timed in turn; every time goes to ``record``."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    if record is not None:
        record.update(times)
    return {k: statistics.median(v) for k, v in times.items()}


def _peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """The most tensor memory (MiB) allocated during one call of ``fn`` beyond what was
    allocated before it (weights and optimiser state excluded): ``max_memory_allocated``
    on CUDA, the profiler's allocation trace on CPU."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0) / 2**20


def measure(
    name: str, size: int, device: torch.device, repeats: int, batch: int, train_step: bool,
    teacher, levels: list[str] | None = None, kernel_size: int = 1, memory: bool = True,
    warmup: int = 2, train_repeats: int | None = None,
    teacher_spec: sp.TeacherSpec | None = None, reference: bool = False,
    recompute_skips: bool = False, amp: str | None = None, compile_backend: str | None = None,
) -> dict:
    """One row; ``reference`` adds the wrapped model with the reference modulation as a
    third variant, timed interleaved with the other two (fields ``*_reference*``);
    ``recompute_skips``: the wrapped model's inference runs with
    ``optimize_for_inference(recompute_skips=True)`` (verified by one forward first);
    ``amp="bf16"``: every variant under bfloat16 autocast; ``compile_backend``: adds the
    variant ``optimized``, a copy of the wrapped model with :func:`sp.compile_prior`
    (that backend; CUDA graphs with inductor on a GPU)."""
    base, wrapped = build_pair(name, teacher, levels, kernel_size, teacher_spec)
    base, wrapped = base.to(device), wrapped.to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    sharp = torch.rand_like(x)
    n_base = sum(p.numel() for p in base.parameters())
    n_prior = sum(p.numel() for p in wrapped.sp_prior.parameters())

    row = {
        "backbone": name,
        "levels": list(sp.get_prior(wrapped).levels),
        "kernel_size": kernel_size,
        "teacher_levels": list(sp.get_prior(wrapped).config.teacher.out_indices),
        "size": size,
        "batch": batch,
        "amp": amp,
        "device": str(device),
        "params_base": n_base,
        "params_prior": n_prior,
        "param_overhead": n_prior / n_base,
    }
    infer = {"base": _infer_fn(name, base, x, amp=amp),
             "wrapped": _infer_fn(name, wrapped, x, amp=amp)}
    if reference:
        infer["reference"] = _infer_fn(name, wrapped, x, reference=True, amp=amp)
    if compile_backend:
        torch._dynamo.reset()
        optimized = sp.optimize_for_inference(copy.deepcopy(wrapped), compile=True,
                                              backend=compile_backend)
        infer["optimized"] = _infer_fn(name, optimized, x, amp=amp)
    if recompute_skips:
        sp.optimize_for_inference(wrapped, compile=False, recompute_skips=True)
        infer["wrapped"]()  # the forward that checks the recomputed skips
        row["recompute_skips"] = sorted(sp.get_hook(wrapped).recompute_skips)
    if repeats > 0:
        row.update(_timed("infer", infer, repeats, device, warmup))
    if memory:
        row.update(_peaks("peak_mb", infer, device))
    if train_step:
        steps = {"base": _step_fn(name, base, x, sharp, False, amp),
                 "wrapped": _step_fn(name, wrapped, x, sharp, True, amp)}
        if compile_backend:
            trained = sp.compile_prior(copy.deepcopy(wrapped), backend=compile_backend)
            steps["optimized"] = _step_fn(name, trained, x, sharp, True, amp)
        if repeats > 0:
            train_repeats = max(3, repeats // 2) if train_repeats is None else train_repeats
            row.update(_timed("train", steps, train_repeats, device, warmup))
        if memory:
            if repeats == 0:  # the optimiser's state exists before the measured step
                for step in steps.values():
                    step()
            row.update(_peaks("train_peak_mb", steps, device))
    return row


def _timed(
    prefix: str, fns: dict[str, Callable[[], object]], repeats: int, device, warmup: int
) -> dict:
    """Row fields ``<prefix>_base_s``, ``_wrapped_s``, ``_ratio`` (of medians),
    ``_ratio_of_minima`` and ``_times_s`` (every timed run) for a base/wrapped pair."""
    times: dict[str, list[float]] = {}
    median = interleaved_medians(fns, repeats, device, warmup, times)
    fields = {
        f"{prefix}_base_s": median["base"],
        f"{prefix}_wrapped_s": median["wrapped"],
        f"{prefix}_ratio": median["wrapped"] / median["base"],
        f"{prefix}_ratio_of_minima": min(times["wrapped"]) / min(times["base"]),
        f"{prefix}_times_s": times,
    }
    for variant in EXTRA_VARIANTS:
        if variant in median:
            fields[f"{prefix}_{variant}_s"] = median[variant]
            fields[f"{prefix}_{variant}_ratio"] = median[variant] / median["base"]
    return fields


def _peaks(prefix: str, fns: dict[str, Callable[[], object]], device) -> dict:
    """Row fields ``<prefix>_base`` and ``<prefix>_wrapped``: :func:`_peak_memory`."""
    return {f"{prefix}_{variant}": _peak_memory(fn, device) for variant, fn in fns.items()}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _table(rows: list[dict]) -> str:
    head = (
        "| backbone | levels | k | size | base s | +SP s | ratio | peak MiB base / +SP "
        "| train base s | train +SP s | train ratio | train peak MiB base / +SP "
        "| params base | params prior | overhead |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        g = r.get
        lines.append(
            f"| {r['backbone']} | {' '.join(r['levels'])} | {r['kernel_size']} | {r['size']} | "
            f"{_fmt(g('infer_base_s'), '.4f')} | {_fmt(g('infer_wrapped_s'), '.4f')} | "
            f"{_fmt(g('infer_ratio'), '.3f')} | "
            f"{_fmt(g('peak_mb_base'), '.0f')} / {_fmt(g('peak_mb_wrapped'), '.0f')} | "
            f"{_fmt(g('train_base_s'), '.4f')} | {_fmt(g('train_wrapped_s'), '.4f')} | "
            f"{_fmt(g('train_ratio'), '.3f')} | "
            f"{_fmt(g('train_peak_mb_base'), '.0f')} / {_fmt(g('train_peak_mb_wrapped'), '.0f')}"
            f" | {r['params_base']:,} | {r['params_prior']:,} | "
            f"{100 * r['param_overhead']:.1f}% |"
        )
    return "\n".join(lines)


EXTRA_VARIANTS = ("reference", "optimized")
"""Variants besides base and wrapped: the reference modulation (``--reference``) and the
compiled prior path (``--compile-prior``)."""


def _variants_table(rows: list[dict]) -> str:
    """Every variant's time, training-step time and peak memory, with its ratio to base."""
    variants = ["wrapped"] + [v for v in EXTRA_VARIANTS if any(
        f"infer_{v}_s" in r or f"peak_mb_{v}" in r or f"train_{v}_s" in r for r in rows)]
    head = "| backbone | size | batch | amp | base s |" + "".join(
        f" {v} s | ratio |" for v in variants) + " train base s |" + "".join(
        f" train {v} s | ratio |" for v in variants) + " peak MiB base |" + "".join(
        f" {v} | ratio |" for v in variants)
    lines = [head, "|" + "---|" * (6 + 6 * len(variants))]
    for r in rows:
        g = r.get
        cells = [r["backbone"], str(r["size"]), str(r["batch"]), g("amp") or "fp32",
                 _fmt(g("infer_base_s"), ".4f")]
        for v in variants:
            key = "infer_wrapped" if v == "wrapped" else f"infer_{v}"
            ratio = "infer_ratio" if v == "wrapped" else f"infer_{v}_ratio"
            cells += [_fmt(g(f"{key}_s"), ".4f"), _fmt(g(ratio), ".3f")]
        cells.append(_fmt(g("train_base_s"), ".4f"))
        for v in variants:
            ratio = "train_ratio" if v == "wrapped" else f"train_{v}_ratio"
            cells += [_fmt(g(f"train_{v}_s"), ".4f"), _fmt(g(ratio), ".3f")]
        base_mb = g("peak_mb_base")
        cells.append(_fmt(base_mb, ".0f"))
        for v in variants:
            mb = g(f"peak_mb_{v}")
            cells += [_fmt(mb, ".0f"), _fmt(mb / base_mb if base_mb and mb else None, ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones", nargs="+", default=["UNet"],
        help=f"names from {list(BACKBONES)}, the CLI's ({', '.join(CLI_NAMES)}; any case), "
             "or 'all'"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[256])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed runs of each variant (0: memory and parameters only)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each variant")
    parser.add_argument("--train-repeats", type=int, default=None,
                        help="timed training steps (default: max(3, repeats // 2))")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--no-machinery", action="store_true",
                        help="skip the hooks-vs-inlined UNet comparison")
    parser.add_argument("--levels", nargs="+", default=None,
                        help="level names (default: each adapter's default levels)")
    parser.add_argument("--kernel-size", type=int, nargs="+", default=[1],
                        help="kernel(s) of the CLC/MLA/SAT convolutions (PriorConfig.kernel_size)")
    parser.add_argument("--teacher-levels", type=int, nargs="+", default=None, metavar="INDEX",
                        help="the teacher's feature levels (TeacherSpec.out_indices; "
                             "default 1 2 3)")
    parser.add_argument("--reference", action="store_true",
                        help="also run the wrapped model with the reference modulation "
                             "(full-resolution maps), interleaved with the other two")
    parser.add_argument("--recompute-skips", action="store_true",
                        help="inference with optimize_for_inference(recompute_skips=True)")
    parser.add_argument("--amp", choices=["bf16"], default=None,
                        help="run every variant under bfloat16 autocast")
    parser.add_argument("--compile-prior", nargs="?", const="inductor", default=None,
                        metavar="BACKEND",
                        help="add the variant 'optimized': the prior's path compiled with "
                             "this torch.compile backend (default inductor; CUDA graphs on "
                             "a GPU)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                        help="named prior configurations, each a row per backbone (overrides "
                             "--kernel-size and --teacher-levels): library (PriorConfig's "
                             "defaults) and demo (sp-adapter demo's: 3x3, teacher levels 0-2)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(scratch("overhead")),
                        help=OUT_HELP + "; a file stem: .md and .json are added")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = backbone_keys(args.backbones)
    device = torch.device(args.device)
    try:
        teacher_spec = teacher_at_levels(args.teacher_levels)
    except ValueError as error:
        raise SystemExit(f"--teacher-levels: {error}") from None
    teacher = sp.load_teacher(teacher_spec)
    # (kernel size, teacher spec, teacher) per prior configuration measured
    setups = [(k, teacher_spec, teacher) for k in args.kernel_size]
    if args.configs:
        setups = []
        for label in args.configs:
            kernel, levels = CONFIGS[label]
            spec = teacher_at_levels(levels)
            setups.append((kernel, spec, teacher if spec == teacher_spec
                           else sp.load_teacher(spec)))
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "teacher_levels": (list(teacher_spec.out_indices) if not args.configs else
                           "per configuration: " + ", ".join(
                               f"{c} k={CONFIGS[c][0]} levels "
                               f"{list(teacher_at_levels(CONFIGS[c][1]).out_indices)}"
                               for c in args.configs)),
        "command": "python benchmarks/overhead.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    machinery: list[dict] = []

    peak_kind = (
        "the most tensor memory allocated during one forward (training step) beyond what "
        "existed before it, so weights and optimiser state are excluded ("
        + ("torch.cuda.max_memory_allocated)" if device.type == "cuda"
           else "PyTorch profiler's allocation trace)")
    )

    def save() -> None:  # after every row, so a long sweep keeps what it measured
        table = _table(rows)
        machinery_table = "\n".join(
            ["| size | hooks s | inlined s | ratio |", "|---|---|---|---|"]
            + [
                f"| {m['size']} | {m['hooks_s']:.4f} | {m['inlined_s']:.4f} | {m['ratio']:.3f} |"
                for m in machinery
            ]
        )
        payload = {"meta": meta, "rows": rows, "hook_machinery": machinery}
        write_atomic(f"{out}.json", json.dumps(payload, indent=1).encode("utf-8"))
        timing = (
            f"medians of {args.repeats} interleaved runs after {args.warmup} warm-ups "
            f"(training steps: {args.train_repeats or max(3, args.repeats // 2)})"
            if args.repeats > 0 else "no timing (--repeats 0)"
        )
        reference_text = (
            "Variants: wrapped (+SP: the default, lean modulation), reference (the "
            "reference modulation: full-resolution maps), optimized (the prior's path "
            "compiled: sp_adapter.compile_prior / optimize_for_inference):\n\n"
            + _variants_table(rows) + "\n\n"
            if args.reference or args.compile_prior or args.amp else ""
        )
        machinery_text = (
            "Hook machinery (UNet, hooks vs the same modulation inlined by hand):\n\n"
            f"{machinery_table}\n" if machinery else ""
        )
        text = (
            f"# Overhead of the semantic prior\n\n`{meta['command']}`\n\n"
            f"torch {meta['torch']}, {meta['threads']} threads, {device}; {timing}; k: kernel "
            f"of the prior's convolutions; teacher levels {meta['teacher_levels']}; peak "
            f"memory: {peak_kind}\n\n{table}\n\n"
            f"{reference_text}{machinery_text}"
        )
        write_atomic(f"{out}.md", text.encode("utf-8"))

    for size in [] if args.no_machinery or args.repeats == 0 else args.sizes:
        machinery.append(hook_machinery(size, device, args.repeats, teacher, args.warmup))
        print(f"hook machinery at {size}: ratio {machinery[-1]['ratio']:.3f}", flush=True)
        save()
    for name in names:
        for size in args.sizes:
            for kernel_size, setup_spec, setup_teacher in setups:
                row = measure(name, size, device, args.repeats, args.batch, not args.no_train,
                              setup_teacher, args.levels, kernel_size, not args.no_memory,
                              args.warmup, args.train_repeats, setup_spec, args.reference,
                              args.recompute_skips, args.amp, args.compile_prior)
                rows.append(row)
                print(_table([row]).splitlines()[-1], flush=True)
                save()
    print()
    print(Path(f"{out}.md").read_text())
    return rows


if __name__ == "__main__":
    main()
