"""How well each student predicts the teacher's sharp-image features from the blurry image.

The prior can only help as much as the student F_S recovers what the teacher F_P sees in
the SHARP image. For each student kind, after the same number of student-only
distillation steps (HCL loss, Eq. 2/4) on blurred training crops, this reports on the
fixed test set, per prior level, the fraction of the teacher's feature variance the
prior explains: ``R^2 = 1 - mean((f_pri - f_gt)^2) / var(f_gt)``. Step 0 is the student
as initialised (a teacher-initialised student starts as the teacher run on the blurry
image). Seeds change the data order and the random initialisation.

    python benchmarks/student_fit.py --steps 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch
from scratch import OUT_HELP, scratch

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.data import SyntheticBlurDataset
from sp_adapter.files.atomic import write_atomic
from sp_adapter.train.student import pretrain_student


@torch.no_grad()
def explained_variance(model, teacher, test) -> list[float]:
    """Per-level R^2 of the prior against the teacher's features of the sharp crops."""
    prior = sp.get_prior(model).eval()
    err, var = None, None
    for i in range(0, len(test), 16):
        blurry = torch.stack([test[j][0] for j in range(i, min(i + 16, len(test)))])
        sharp = torch.stack([test[j][1] for j in range(i, min(i + 16, len(test)))])
        p, t = prior(blurry), teacher(sharp)
        e = [float(((a - b) ** 2).sum()) for a, b in zip(p, t, strict=True)]
        v = [float(((b - b.mean((0, 2, 3), keepdim=True)) ** 2).sum()) for b in t]
        err = e if err is None else [x + y for x, y in zip(err, e, strict=True)]
        var = v if var is None else [x + y for x, y in zip(var, v, strict=True)]
    return [1 - a / b for a, b in zip(err, var, strict=True)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--test-crops-per-photo", type=int, default=8)
    parser.add_argument("--out", default=str(scratch("student_fit")),
                        help=OUT_HELP + "; a file stem: .md and .json are added")
    args = parser.parse_args(argv)
    command = "python benchmarks/student_fit.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    teacher = sp.load_teacher(sp.TeacherSpec())
    test = SyntheticBlurDataset("test", crop=128, crops_per_photo=args.test_crops_per_photo)
    rows = []
    for kind in ("teacher", "small"):
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = sp.wrap(UNet(width=16), teacher=teacher, student=kind)
            before = explained_variance(model, teacher, test)
            train = SyntheticBlurDataset("train", crop=args.crop, length=1000, seed=seed)
            result = pretrain_student(
                model,
                train,
                args.steps,
                batch_size=args.batch,
                lr=args.lr,
                seed=seed,
                progress=False,
            )
            after = explained_variance(model, teacher, test)
            rows.append(
                {
                    "student": kind,
                    "seed": seed,
                    "r2_step0": before,
                    "r2": after,
                    "seconds": result.seconds,
                    "params": sum(p.numel() for p in sp.get_prior(model).learner.parameters()),
                }
            )
            print(
                kind,
                seed,
                [round(x, 3) for x in before],
                "->",
                [round(x, 3) for x in after],
                f"{result.seconds:.0f} s",
                flush=True,
            )

    lines = [
        "| student | params | R^2 at step 0 (levels 1/2/3) | R^2 after "
        f"{args.steps} steps (levels 1/2/3) | mean R^2 | s |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("teacher", "small"):
        sel = [r for r in rows if r["student"] == kind]
        b = [statistics.mean(r["r2_step0"][i] for r in sel) for i in range(3)]
        a = [statistics.mean(r["r2"][i] for r in sel) for i in range(3)]
        spread = statistics.pstdev(statistics.mean(r["r2"]) for r in sel)
        lines.append(
            f"| {kind} | {sel[0]['params']:,} | {' / '.join(f'{x:.3f}' for x in b)} | "
            f"{' / '.join(f'{x:.3f}' for x in a)} | {statistics.mean(a):.3f} ± "
            f"{spread:.3f} | {statistics.mean(r['seconds'] for r in sel):.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"command": command, "rows": rows}, indent=1)
    write_atomic(f"{out}.json", payload.encode("utf-8"))
    text = (
        f"# Student fit: teacher features of the sharp image, predicted from blur\n\n"
        f"`{command}`\n\nSeeds {args.seeds}; test set: {len(test)} crops of 128 px "
        f"(severe blur); ± is the spread over seeds.\n\n{table}\n"
    )
    write_atomic(f"{out}.md", text.encode("utf-8"))
    return {"rows": rows}


if __name__ == "__main__":
    main()
