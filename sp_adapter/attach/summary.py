"""What ``wrap`` did to a network, readable at a glance: ``print(sp_adapter.summary(model))``.

The levels chosen and how (an adapter, a network's own map, found automatically, given
or brought by a trained prior), their channels and reductions, the prior's size against
the network's, its options (Table 4's switches), the teacher and the strength.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sp_adapter.attach.levels import Level
from sp_adapter.attach.state import base_model, get_hook, get_prior, wrapped_module


@dataclass(frozen=True)
class Summary:
    """One wrapped network; ``str()`` gives the table :func:`summary` prints."""

    network: str
    route: str
    levels: dict[str, Level]
    prior_parameters: int
    trainable_prior_parameters: int
    network_parameters: int
    options: str
    teacher: str
    strength: float

    def __str__(self) -> str:
        rows = ["| level | site | skip | channels | reduction | prior level |",
                "|---|---|---|---|---|---|"]
        for name, level in self.levels.items():
            site = f"{level.site} (input)" if level.on_input else level.site
            reduction = {None: "?", 1: "1"}.get(level.reduction, f"1/{level.reduction}")
            rows.append(f"| {name} | {site} | {level.skip or '-'} | {level.channels} | "
                        f"{reduction} | {level.prior_level} |")
        share = self.prior_parameters / max(self.network_parameters, 1)
        return "\n".join([
            f"{self.network} with a semantic prior at {len(self.levels)} "
            f"level{'s' if len(self.levels) != 1 else ''}: {self.route}",
            *rows,
            f"prior: {self.prior_parameters:,} parameters ({self.trainable_prior_parameters:,} "
            f"trainable), {share:.1%} of the network's {self.network_parameters:,}",
            f"options: {self.options}",
            f"teacher: {self.teacher}",
            f"strength: {self.strength:g}",
        ])


def _options(prior: nn.Module) -> str:
    c = prior.config
    student = ("initialised from the teacher" if c.student == "teacher"
               else f"small (width {c.small_width})")
    switches = ", ".join(f"{name} {'on' if on else 'off'}"
                         for name, on in (("HCL", c.hcl), ("CLC", c.clc), ("MLA", c.mla)))
    return (f"student {student}; {switches}, fusion {c.fusion}, "
            f"{c.kernel_size}x{c.kernel_size} convolutions")


def summary(model: nn.Module) -> Summary:
    """The levels, prior and options of a wrapped ``model`` (inside DDP / DataParallel /
    compile too); ``print()`` it for a table."""
    hook, prior = get_hook(model), get_prior(model)
    network = wrapped_module(model)
    ours = {id(p) for p in prior.parameters()}
    counted = [p for p in network.parameters() if id(p) not in ours]
    spec = prior.config.teacher
    if hook.teacher is None:
        teacher = f"none (inference; the prior was built for {spec.arch})"
    else:
        teacher = (f"{hook.teacher.name}, frozen, levels {list(spec.out_indices)} "
                   f"({spec.weights} weights)")
    return Summary(
        network=type(base_model(network)).__name__,
        route=hook.route,
        levels=dict(hook.levels),
        prior_parameters=sum(p.numel() for p in prior.parameters()),
        trainable_prior_parameters=sum(p.numel() for p in prior.parameters() if p.requires_grad),
        network_parameters=sum(p.numel() for p in counted),
        options=_options(prior),
        teacher=teacher,
        strength=prior.strength,
    )
