"""One table from the result files of quality runs made apart (seeds or variants in their
own processes).

Runs merge when they differ only in their seeds, their variants, or options that none of
their arms read (the bare UNet reads no ``--student-steps``): every arm of a seed trains
on the same stream of batches whichever arms run beside it, so its rows do not depend on
the others. ``FILE#Net0`` takes only that file's Net0 rows, to pair one run's Net0 with
another run's prior variant. Arms whose own steps trained at other rates (``--arm-lr``, a
prior arm's lr factors) merge too, each variant's rows sharing one recipe, and the table
names each variant's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quality_arms import (
    ALL,
    CONTROL,
    OWN_STEP_OPTIONS,
    PRIOR_TRAIN_OPTIONS,
    VARIANTS,
    own_step_options,
)

from sp_adapter.data.synthetic import TEST_MIN_DETAIL
from sp_adapter.prior.config import TeacherSpec

# options that may differ between runs merged into one table: where they write, how fast
# they ran, which seeds and variants they trained, whether they also scored the arms
# along the run or on training photos, whether they read their shared bases from a store
# and how many DataLoader workers made their batches (these leave the scores unchanged;
# tests check it); older files also name test_min_detail, whose test set is compared by
# the detail floor each file records
MERGE_FREE = {"seeds", "variants", "tag", "out", "threads", "no_progress", "device", "merge",
              "eval_every", "base_store", "workers", "train_probe", "run_root",
              "test_min_detail"}
# options added after result files were first written (or since removed: arm_loss), with
# the value that gives the behaviour of the runs made without them
ADDED_LATER = {"student_lr_scale": 1.0, "backbone_lr_scale": 1.0, "prior_options": [],
               "augment": False,
               "train_photos": None, "test_seed": 0,
               "teacher_levels": list(TeacherSpec().out_indices),
               "teacher": TeacherSpec().arch, "arm_lr": None, "arm_loss": None}
# PriorConfig fields that change no parameter count: the widened control, as wide as Net6
# built with the prior options, merges with prior arms trained with any value of them
WIDTH_FREE_PRIOR_OPTIONS = ("strength_jitter",)


def width_prior_options(items: list[str] | None) -> list[str]:
    """The ``--prior-options`` entries that size Net6 (and so the control)."""
    return [item for item in items or []
            if item.partition("=")[0] not in WIDTH_FREE_PRIOR_OPTIONS]


def unused_options(runs: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Options that no arm of a result file read, so it merges with files that set them
    otherwise: an arm without the prior has no prior loss (beta) and no MLA/SAT (yet the
    widened control is as wide as Net6 built with the file's prior options and teacher
    levels), and an arm whose rows record no student pre-training did not read the
    student steps (Net0* of files made before 2026-11-25 did). A test checks that the
    rows equal."""
    unused = set()
    if all(VARIANTS.get(name) is None for name in runs):
        unused |= {"beta", *PRIOR_TRAIN_OPTIONS}
        if CONTROL not in runs:  # the control's width matches Net6 built with these
            unused |= {"prior_options", "teacher_levels", "teacher"}
    if all(row.get("student_steps") == 0 for rows in runs.values() for row in rows):
        unused.add("student_steps")
    return unused


def _test_min_detail(path: str, payload: dict[str, Any]) -> float:
    """The least detail of a test crop in the test set a result file scored (files of the
    first detail-filtered test set record only the option, ``None`` for the default)."""
    if "test_min_detail" in payload:
        return payload["test_min_detail"]
    if "test_min_detail" not in payload["options"]:
        raise SystemExit(f"{path}: records no test set detail floor (a result file of the "
                         "test set that kept flat crops); it cannot be merged")
    given = payload["options"]["test_min_detail"]
    return TEST_MIN_DETAIL if given is None else given


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``PATH#Net0,Net0-wide`` -> the file and the variants picked (none: every one). A
    file whose own name holds a ``#`` is taken whole."""
    if "#" in spec and not Path(spec).exists():
        path, _, picked = spec.rpartition("#")
        return path, picked.split(",")
    return spec, []


def read_result(spec: str) -> dict[str, Any]:
    """A result file's payload; ``PATH#Net0,Net0-wide`` keeps only the rows of those
    variants (to pair a file's Net0 with another run's prior variants), see
    :func:`split_spec`."""
    path, names = split_spec(spec)
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if names:
        missing = [name for name in names if name not in payload["runs"]]
        if missing:
            raise SystemExit(f"{path} has no rows of {missing}; its variants are "
                             f"{list(payload['runs'])}")
        payload["runs"] = {name: payload["runs"][name] for name in names}
        if CONTROL not in names:  # its note on the control's width goes with its rows
            payload["control"] = ""
    return payload


def merge(paths: list[str]) -> tuple[argparse.Namespace, dict[str, Any], list[str]]:
    """The options, rows and commands of result files that differ only in their seeds or
    variants (each variant of a seed comes from one file: its rows do not depend on which
    other variants ran beside it, as every arm trains on the same stream of batches)."""
    payloads = [read_result(p) for p in paths]
    for path, payload in zip(paths, payloads, strict=True):
        payload["test_min_detail"] = _test_min_detail(path, payload)
    options = [{**ADDED_LATER, **payload["options"]} for payload in payloads]
    keys = set().union(*options) - MERGE_FREE  # an option a file lacks counts as None
    used = [keys - unused_options(payload["runs"]) for payload in payloads]
    bare = [all(VARIANTS.get(name) is None for name in payload["runs"]) for payload in payloads]
    # each option is compared with (and the merged table takes) the first run that uses
    # it, a run with a prior before the others
    first = sorted(range(len(paths)), key=lambda i: bare[i])
    source = {k: i for i in reversed(first) for k in used[i]}
    merged = {**options[0], **{k: options[i].get(k) for k, i in source.items()}}

    def agrees(key: str, value: Any, is_bare: bool) -> bool:
        if key == "prior_options" and is_bare:  # the control: only its width must agree
            return width_prior_options(value) == width_prior_options(merged[key])
        return value == merged[key]

    for path, payload, own, uses, is_bare in zip(paths, payloads, options, used, bare,
                                                 strict=True):
        differ = {k: paths[source[k]] for k in sorted(uses - set(OWN_STEP_OPTIONS))
                  if not agrees(k, own.get(k), is_bare)}
        if payload["test_min_detail"] != payloads[0]["test_min_detail"]:
            differ["its test set"] = paths[0]
        if differ:
            raise SystemExit(
                f"{path} differs in {list(differ)} from {', '.join(dict.fromkeys(differ.values()))}"
                "; only runs that differ in their seeds or variants (or in options their "
                "variants do not use) can be merged")
    own_steps = merged_own_steps(paths, payloads, options)
    runs: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, int]] = set()
    for path, payload in zip(paths, payloads, strict=True):
        pairs = {(name, row["seed"]) for name, rows in payload["runs"].items() for row in rows}
        if pairs & seen:
            raise SystemExit(f"{path}: (variant, seed) {sorted(pairs & seen)} appear in two "
                             "files")
        seen |= pairs
        for name, rows in payload["runs"].items():
            runs.setdefault(name, []).extend(rows)
    for rows in runs.values():
        rows.sort(key=lambda row: row["seed"])
    order = {name: i for i, name in enumerate(ALL)}
    runs = dict(sorted(runs.items(), key=lambda item: order.get(item[0], len(ALL))))
    args = argparse.Namespace(**{**merged, "seeds": sorted({seed for _, seed in seen}),
                                 "variants": list(runs)})
    control = next((p["control"] for p in payloads if p["control"]), "")
    context = {
        "runs": runs, "backbone": payloads[0].get("backbone", merged["backbone"]),
        "control": control, "test_count": payloads[0]["test_count"],
        "test_min_detail": payloads[0]["test_min_detail"],
        "seconds": sum(p.get("seconds", float("nan")) for p in payloads),
        "machine": "; ".join(dict.fromkeys(p.get("machine", "not recorded") for p in payloads)),
        **({"own_steps": {name: own_steps[name] for name in runs}} if own_steps else {}),
    }
    return args, context, [p["command"] for p in payloads]


def merged_own_steps(paths: list[str], payloads: list[dict[str, Any]],
                     options: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Each variant's own-step options (:func:`own_step_options`) where the merged
    variants trained their own steps differently (``None`` where they agree). The rows of
    one variant must agree: a variant is one recipe."""
    own: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, payload, opts in zip(paths, payloads, options, strict=True):
        recorded = payload.get("own_steps") or {}  # a merged file of mixed recipes
        for name in payload["runs"]:
            mine = recorded.get(name) or own_step_options(opts, name)
            if name not in own:
                own[name] = (path, mine)
                continue
            first, theirs = own[name]
            differ = [k for k in mine if mine[k] != theirs.get(k)]
            if differ:
                raise SystemExit(
                    f"{path} differs in {differ} from {first} in how its {name} rows trained "
                    f"their own steps; one variant's rows must share how they trained")
    by_variant = {name: mine for name, (_, mine) in own.items()}
    mixed = any(len({opts[k] for opts in by_variant.values() if k in opts}) > 1
                for k in OWN_STEP_OPTIONS)
    return by_variant if mixed else None
