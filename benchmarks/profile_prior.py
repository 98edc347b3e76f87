"""Where a wrapped network's extra inference time goes (CPU, one image, one thread).

For each backbone: the bare and the wrapped forward, the prior learner alone (student F_S +
CLC) and the SPEs' maps alone (MLA + SAT convolutions at the prior's resolution), timed
interleaved; the rest of the extra time is the modulation at the decoder's resolution
(resizing the maps to each level, Eq. 6's element-wise product and sum) and the hooks.
Then torch.profiler's view of one wrapped forward: the time under each part's label and
the top operators with their input shapes.

    python benchmarks/profile_prior.py --backbones UNet MSSNet --config demo --size 256
"""

from __future__ import annotations

import argparse
import sys

import torch
from overhead import BACKBONES, CONFIGS, backbone_keys, build_pair, interleaved_medians
from scratch import OUT_HELP, scratch, write_markdown
from torch.profiler import ProfilerActivity, profile, record_function

import sp_adapter as sp
from sp_adapter.prior.config import teacher_at_levels
from sp_adapter.prior.teacher import load_teacher


def _labelled(obj: object, method: str, label: str) -> None:
    """Run ``obj.method`` under a profiler label."""
    inner = getattr(obj, method)

    def call(*args, **kwargs):
        with record_function(label):
            return inner(*args, **kwargs)

    setattr(obj, method, call)


def profile_backbone(name: str, config: str, size: int, repeats: int, top: int,
                     teacher) -> tuple[dict, str]:
    """The row of ``name`` (milliseconds per forward) and its profiler tables."""
    kernel, levels = CONFIGS[config]
    spec = teacher_at_levels(levels) if levels else sp.TeacherSpec()
    base, wrapped = build_pair(name, teacher, None, kernel, spec)
    base.eval()
    wrapped.eval()
    prior = sp.get_prior(wrapped)
    x = torch.rand(1, 3, size, size)
    inputs = BACKBONES[name].inputs(x)
    with torch.inference_mode():
        priors = prior(x)

        def maps() -> None:
            for embedding in prior.embeddings.values():
                embedding.maps(priors)

        t = interleaved_medians({"bare": lambda: base(*inputs), "wrapped": lambda: wrapped(*inputs),
                          "learner": lambda: prior(x), "maps": maps}, repeats, x.device,
                         warmup=1)
        _labelled(prior.learner, "forward", "prior: learner (F_S + CLC)")
        for level, embedding in prior.embeddings.items():
            _labelled(embedding, "maps", f"prior: maps {level}")
            _labelled(embedding, "modulate", f"prior: modulation {level}")
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(repeats):
                wrapped(*inputs)
    events = prof.key_averages()
    labels = {e.key: e.cpu_time_total / repeats / 1e3 for e in events
              if e.key.startswith("prior: ")}
    total = sum(e.self_cpu_time_total for e in events) / repeats / 1e3
    extra = t["wrapped"] - t["bare"]
    row = {
        "backbone": name, "config": config, "size": size,
        "bare_ms": 1e3 * t["bare"], "wrapped_ms": 1e3 * t["wrapped"],
        "ratio": t["wrapped"] / t["bare"], "learner_ms": 1e3 * t["learner"],
        "maps_ms": 1e3 * t["maps"],
        "rest_ms": 1e3 * (extra - t["learner"] - t["maps"]),
        "profiled_ms": total,
    }
    for part in ("learner", "maps", "modulation"):
        row[f"{part}_share"] = sum(v for k, v in labels.items() if part in k) / total
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=32,
        max_shapes_column_width=64)
    parts = "\n".join(f"| {k} | {v:.1f} | {100 * v / total:.1f}% |"
                      for k, v in sorted(labels.items()))
    text = (f"### {name}, {config} configuration\n\n"
            f"Profiled wrapped forward {total:.1f} ms (the profiler's own cost included).\n\n"
            "| label | ms per forward | share |\n|---|---|---|\n" + parts +
            f"\n\nTop operators of the wrapped forward:\n\n```\n{table}\n```\n")
    return row, text


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["UNet"],
                   help="names as in overhead.py (or the CLI's), or 'all'")
    p.add_argument("--config", choices=list(CONFIGS), default="library")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default=str(scratch("profile_prior")),
                   help="<out>.md; " + OUT_HELP)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kernel, levels = CONFIGS[args.config]
    teacher = load_teacher(teacher_at_levels(levels) if levels else sp.TeacherSpec())
    rows, sections = [], []
    for name in backbone_keys(args.backbones):
        row, text = profile_backbone(name, args.config, args.size, args.repeats, args.top,
                                     teacher)
        rows.append(row)
        sections.append(text)
        print(f"{name}: ratio {row['ratio']:.3f}, learner {row['learner_ms']:.1f} ms, maps "
              f"{row['maps_ms']:.1f} ms", flush=True)
    header = ("| backbone | bare ms | +SP ms | ratio | F_S + CLC alone ms | MLA + SAT maps alone "
              "ms | profiled +SP forward ms | its learner | its maps | its modulation |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['backbone']} | {r['bare_ms']:.1f} | {r['wrapped_ms']:.1f} | "
             f"{r['ratio']:.3f} | {r['learner_ms']:.1f} | {r['maps_ms']:.1f} | "
             f"{r['profiled_ms']:.1f} | {r['learner_share']:.1%} | {r['maps_share']:.1%} | "
             f"{r['modulation_share']:.1%} |" for r in rows]
    command = " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Where the prior's inference time goes ({args.config} configuration, "
            f"{args.size} px, CPU, 1 thread)\n\n"
            f"`python benchmarks/profile_prior.py {command}`"
            f"\n\ntorch {torch.__version__}; prior convolutions {kernel}x{kernel}, teacher "
            f"levels {list(levels or sp.TeacherSpec().out_indices)}; medians of {args.repeats} "
            "interleaved runs. "
            "The learner and the maps are also timed alone; the shares are of the profiled "
            "wrapped forward, under the labels of the prior's parts (the modulation: resizing "
            "the maps to each decoder level and the element-wise Eq. 6).\n\n"
            + header + "\n".join(lines) + "\n\n" + "\n".join(sections))
    print(text)
    write_markdown(args.out, text)
    return rows


if __name__ == "__main__":
    main()
