"""The arms of the quality benchmark: the paper's Table 4 variants and the widened control.

Every variant of a seed trains on identical batches from identical backbone weights
(``sp_adapter.train.run_arms``), so a variant's gain over Net0 is paired by seed.

| name       | prior | HCL | CLC | MLA | fusion | student |
|------------|-------|-----|-----|-----|--------|---------|
| Net0       | no    |     |     |     |        |         |
| Net0*      | yes   | no  | yes | yes | SAT    | teacher |
| Net1       | yes   | yes | no  | no  | add    | teacher |
| Net2       | yes   | yes | no  | no  | concat | teacher |
| Net3       | yes   | yes | no  | no  | SAT    | teacher |
| Net4       | yes   | yes | yes | no  | SAT    | teacher |
| Net5       | yes   | yes | no  | yes | SAT    | teacher |
| Net6       | yes   | yes | yes | yes | SAT    | teacher |
| Net6-small | Net6 with the small random student instead of the teacher-initialised one |
| Net0-wide  | the bare UNet widened to Net6's parameter count (does capacity alone help?) |
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sp_adapter.prior.config import PriorConfig, TeacherSpec, teacher_at_levels
from sp_adapter.train import Arm

VARIANTS: dict[str, PriorConfig | None] = {
    "Net0": None,
    "Net0*": PriorConfig(hcl=False),
    "Net1": PriorConfig(clc=False, mla=False, fusion="add"),
    "Net2": PriorConfig(clc=False, mla=False, fusion="concat"),
    "Net3": PriorConfig(clc=False, mla=False, fusion="sat"),
    "Net4": PriorConfig(clc=True, mla=False, fusion="sat"),
    "Net5": PriorConfig(clc=False, mla=True, fusion="sat"),
    "Net6": PriorConfig(),
    "Net6-small": PriorConfig(student="small"),
}


CONTROL = "Net0-wide"


ALL = [*VARIANTS, CONTROL]


# PriorConfig fields that define the Table 4 variants, so --prior-options may not set them
VARIANT_SWITCHES = ("hcl", "clc", "mla", "fusion", "student")


# TrainConfig fields that the prior arms take from the command line (the bare arms do not)
PRIOR_TRAIN_OPTIONS = ("embedding_lr_scale", "student_lr_scale", "backbone_lr_scale")


# options of an arm's own steps (its peak lr, a prior arm's lr factors): merged files may
# differ in them where each variant's rows agree, and the table then names each variant's
OWN_STEP_OPTIONS = ("arm_lr", *PRIOR_TRAIN_OPTIONS)


OWN_STEP_LABELS = {"embedding_lr_scale": "MLA/SAT", "student_lr_scale": "student",
                   "backbone_lr_scale": "backbone"}


def parse_options(items: list[str], flag: str = "--options") -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when possible (``num_res=1``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_prior_options(items: list[str]) -> dict[str, Any]:
    """``--prior-options``: PriorConfig fields set in every prior variant (``kernel_size=3``,
    ``sigma_bound=4``); list values become tuples (``pool_sizes=[1,2]``)."""
    options = parse_options(items, "--prior-options")
    settable = sorted(set(PriorConfig.__dataclass_fields__) - {"teacher", *VARIANT_SWITCHES})
    wrong = sorted(set(options) - set(settable))
    if wrong:
        raise SystemExit(f"--prior-options cannot set {wrong}: the variants set "
                         f"{list(VARIANT_SWITCHES)} and --teacher-levels the teacher; "
                         f"settable: {settable}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        PriorConfig(**options)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--prior-options: {error}") from None
    return options


def teacher_spec(levels: list[int] | None = None,
                 arch: str = "tf_efficientnet_lite0") -> TeacherSpec:
    """The offline teacher ``arch`` (``--teacher``) with feature levels ``levels``
    (``--teacher-levels``; timm's ``out_indices``, finest first; ``None``: the default
    levels)."""
    try:
        return teacher_at_levels(levels, arch)
    except ValueError as error:
        raise SystemExit(f"--teacher / --teacher-levels: {error}") from None


def variant_config(
    name: str, prior_options: dict[str, Any] | None = None, teacher: TeacherSpec | None = None,
) -> PriorConfig | None:
    """The prior of variant ``name`` with ``prior_options`` and the ``teacher`` applied
    (``None``: no prior)."""
    prior = VARIANTS[name]
    if prior is None:
        return None
    return replace(prior, **(prior_options or {}), **({"teacher": teacher} if teacher else {}))


def build_arms(
    names: list[str], student_steps: int, control: Arm | None,
    prior_train: dict[str, float] | None = None,
    prior_options: dict[str, Any] | None = None,
    teacher: TeacherSpec | None = None,
    arm_lr: float | None = None,
) -> list[Arm]:
    """The arms of ``names``; ``prior_train`` (``PRIOR_TRAIN_OPTIONS``) reaches the prior
    arms' own steps only, ``prior_options`` (``--prior-options``) and ``teacher``
    (``--teacher-levels``) their priors, and ``arm_lr`` (``--arm-lr``) every arm's own
    steps (not the shared base's)."""
    own_steps: dict[str, Any] = {} if arm_lr is None else {"lr": arm_lr}
    arms = []
    for name in names:
        if name == CONTROL:
            if control is not None:
                arms.append(replace(control, train={**control.train, **own_steps}))
            continue
        prior = variant_config(name, prior_options, teacher)
        # student pre-training is HCL distillation: the variant without HCL gets none
        arms.append(Arm(
            name, prior=prior, student_steps=student_steps if prior and prior.hcl else 0,
            train={**(prior_train or {}), **own_steps} if prior else dict(own_steps),
        ))
    return arms


def own_step_options(options: dict[str, Any], name: str) -> dict[str, Any]:
    """How variant ``name`` of a run with ``options`` trained its own steps: its peak lr
    (``--arm-lr``, else ``--lr``) and, for a prior variant, its lr factors."""
    lr = options["arm_lr"] if options.get("arm_lr") is not None else options["lr"]
    factors = ({k: options.get(k, 1.0) for k in PRIOR_TRAIN_OPTIONS}
               if VARIANTS.get(name) is not None else {})
    return {"arm_lr": lr, **factors}


def describe_own_steps(own: dict[str, dict[str, Any]]) -> str:
    """``{"Net0": {"arm_lr": 1e-4}, ...}`` -> "Net0: lr 0.0001; Net0*: lr 0.001, backbone
    x0.1" (variants trained alike share one entry)."""
    groups: dict[str, list[str]] = {}
    for name, options in own.items():
        text = f"lr {options['arm_lr']:g}" + "".join(
            f", {OWN_STEP_LABELS[k]} x{options[k]:g}" for k in PRIOR_TRAIN_OPTIONS
            if options.get(k, 1.0) != 1.0)
        groups.setdefault(text, []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items())
