"""Where a wrapped network's extra inference time goes: torch.profiler's top operators of
the wrapped and the bare forward (CPU, one image), and the share of the prior's modules.

    OMP_NUM_THREADS=1 python benchmarks/profile_prior.py --size 256 --config library
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from scratch import OUT_HELP, scratch
from torch.profiler import ProfilerActivity, profile, record_function

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.config import teacher_at_levels

CONFIGS = {"library": (sp.PriorConfig.kernel_size, None), "demo": (3, (0, 1, 2))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--config", choices=list(CONFIGS), default="library")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default=str(scratch("profile_prior")),
                   help="<out>.md; " + OUT_HELP)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kernel, levels = CONFIGS[args.config]
    torch.manual_seed(0)
    bare = UNet().eval()
    config = sp.PriorConfig(kernel_size=kernel, teacher=teacher_at_levels(levels))
    wrapped = sp.wrap(copy.deepcopy(bare), teacher=None, config=config).eval()
    prior = sp.get_prior(wrapped)
    x = torch.rand(1, 3, args.size, args.size)
    with torch.inference_mode():
        wrapped(x), bare(x)
        # the prior's parts timed inside the wrapped forward
        learner_forward = prior.learner.forward

        def timed_learner(*a, **k):
            with record_function("prior: student + CLC"):
                return learner_forward(*a, **k)

        prior.learner.forward = timed_learner
        tables = {}
        for name, model in (("wrapped", wrapped), ("bare", bare)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.repeats):
                    model(x)
            tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total",
                                                     row_limit=args.top)
            total = sum(e.self_cpu_time_total for e in prof.key_averages()) / args.repeats
            student = next((e.cpu_time_total / args.repeats for e in prof.key_averages()
                            if e.key == "prior: student + CLC"), 0.0)
            tables[name] = (f"total {total / 1e3:.1f} ms per forward"
                            + (f"; student + CLC {student / 1e3:.1f} ms" if student else "")
                            + "\n\n```\n" + tables[name] + "\n```")
    text = (f"# Where the prior's inference time goes (UNet, {args.size} px, {args.config} "
            f"configuration, CPU, 1 thread)\n\n`python benchmarks/profile_prior.py "
            f"{' '.join(sys.argv[1:])}`\n\n## wrapped\n\n{tables['wrapped']}\n\n"
            f"## bare\n\n{tables['bare']}\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_name(out.name + ".md"), text.encode())


if __name__ == "__main__":
    main()
