"""A candidate change to the prior's inference path, timed against the library as it is.

For each backbone (wrapped, its SPE convolutions perturbed so the maps are not zero), the
wrapped forward with the library's modulation and with the maps resized in channels-last
memory format (the faster bilinear kernel on the CPU; it sums in another order, so the
output is equal up to rounding, not bit for bit), interleaved, with the largest
difference between the two outputs.

    python benchmarks/prior_speedups.py --backbones UNet NAFNet-32 --configs library demo
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from overhead import BACKBONES, CONFIGS, backbone_keys, build_pair, interleaved_medians
from scratch import OUT_HELP, scratch, write_markdown

import sp_adapter as sp
from sp_adapter.prior import embedding
from sp_adapter.prior.config import teacher_at_levels
from sp_adapter.prior.teacher import load_teacher


def _channels_last_resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=tuple(size),
                         mode="bilinear", align_corners=False)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    saved = embedding.resize
    if name == "channels-last resize":
        embedding.resize = _channels_last_resize
    try:
        yield
    finally:
        embedding.resize = saved


VARIANTS = ("library", "channels-last resize")


def measure(name: str, config: str, size: int, repeats: int, teacher) -> dict:
    kernel, levels = CONFIGS[config]
    base, wrapped = build_pair(name, teacher, None, kernel,
                               teacher_at_levels(levels) if levels else sp.TeacherSpec())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in sp.get_prior(wrapped).embeddings.parameters():
            p.add_(0.1 * torch.randn_like(p))
    base.eval()
    wrapped.eval()
    x = torch.rand(1, 3, size, size)
    inputs, final = BACKBONES[name].inputs(x), BACKBONES[name].final

    def run(v: str) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            with variant(v), torch.inference_mode():
                return final(wrapped(*inputs))
        return fn

    fns = {"bare": lambda: base(*inputs), **{v: run(v) for v in VARIANTS}}
    outputs = {v: run(v)() for v in VARIANTS}
    with torch.inference_mode():
        t = interleaved_medians(fns, repeats, x.device, warmup=1)
    return {"backbone": name, "config": config, "bare_s": t["bare"],
            **{f"{v}_s": t[v] for v in VARIANTS},
            **{f"{v}_diff": (outputs[v] - outputs["library"]).abs().max().item()
               for v in VARIANTS[1:]}}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["UNet"])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["library", "demo"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(scratch("prior_speedups")), help="<out>.md; " + OUT_HELP)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for config in args.configs:
        levels = CONFIGS[config][1]
        teacher = load_teacher(teacher_at_levels(levels) if levels else sp.TeacherSpec())
        for name in backbone_keys(args.backbones):
            rows.append(measure(name, config, args.size, args.repeats, teacher))
            print(rows[-1], flush=True)
    lines = [f"| {r['backbone']} | {r['config']} | {r['bare_s'] * 1e3:.1f} | "
             + " | ".join(f"{r[v + '_s'] / r['bare_s']:.3f}" for v in VARIANTS)
             + f" | {r['channels-last resize_diff']:.1e} |"
             for r in rows]
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Candidate changes to the prior's inference path ({args.size} px, CPU, 1 thread)"
            f"\n\n`python benchmarks/prior_speedups.py {command}`\n\ntorch {torch.__version__}; "
            f"wrapped / bare, medians of {args.repeats} interleaved runs; max |diff|: the "
            "largest difference of the output from the library's.\n\n"
            "| backbone | config | bare ms | library | channels-last resize | max diff |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
    print(text)
    write_markdown(args.out, text)
    return rows


if __name__ == "__main__":
    main()
