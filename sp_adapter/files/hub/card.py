"""The model card (``README.md``) of a saved prior, built with huggingface_hub's ``ModelCard``.

The card's metadata (``library_name``, tags, pipeline) comes from ``ModelCardData``; its text
from :data:`CARD_TEMPLATE`, filled from the prior's ``config.json`` content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

LIBRARY_NAME = "sp-adapter"
TAGS = ("sp_adapter", "image-deblurring", "semantic-prior")
CARD_MARKER = "sp_adapter_card"
"""A front-matter key (``sp_adapter_card: true``) that marks a card this library wrote, so
``save_pretrained(..., overwrite=True)`` replaces only its own ``README.md``."""
_FRONT_MATTER = re.compile(r"\A---\r?\n(.*?)\r?\n---\s*(\r?\n|\Z)", re.S)

CARD_TEMPLATE = """---
{{ card_data }}
---

# Semantic prior for {{ backbone }}

A learned semantic prior ("Take a Prior from Other Tasks", arXiv 2302.06898) that plugs into \
a **{{ backbone }}** deblurring network through forward hooks. This repository holds only the \
prior (student, cross-level connection and the per-level embeddings), not the deblurring \
network's weights.

## Usage

```python
import sp_adapter

model = ...  # your {{ backbone }}, with its trained weights
model = sp_adapter.from_pretrained("{{ repo_id }}", model=model)  # inference
restored = model(blurry)  # B x 3 x H x W in [0, 1]
```

Pass a teacher (e.g. `teacher=sp_adapter.TeacherSpec(...)`) instead of `None` to train the \
prior further with `sp_adapter.prior_loss`. The prior refuses to attach to a network other \
than {{ backbone }} or to one whose levels differ.

## Prior

{{ prior_lines }}

{{ levels_table }}

## Training data

{{ data_lines }}

## Metrics

{{ metrics_lines }}

Saved with sp_adapter {{ library_version }} (format version {{ format_version }}).
"""
"""The card's text: a Jinja template, as ``ModelCard.from_template`` takes it."""


def _levels_table(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        "| level | site (f_de) | skip (f_en) | channels | join | prior level | regions |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        join = "input of site" if lv["on_input"] else "output of site"
        rows.append(
            f"| {lv['name']} | `{lv['site']}` | {'`' + lv['skip'] + '`' if lv['skip'] else '-'} "
            f"| {lv['channels']} | {join} | {lv['prior_level']} | {len(lv['regions']) or '-'} |"
        )
    return rows


def _prior_lines(config: Mapping[str, Any]) -> list[str]:
    prior, backbone = config["config"], config["backbone"]
    teacher = prior["teacher"]
    switches = ", ".join(
        f"{k}={prior[k]}" for k in ("student", "hcl", "clc", "mla", "fusion", "pool_sizes")
    )
    model_class = config.get("model_class")
    lines = [
        f"- Backbone: {backbone}" + (f" (class `{model_class}`)" if model_class else ""),
        f"- Teacher: `{teacher['arch']}`, weights `{teacher['weights']}`, feature levels "
        f"{teacher['out_indices']} (channels {config['channels']}, reductions "
        f"{config['reductions']}), input mean {teacher['mean']} / std {teacher['std']}",
        f"- Options: {switches}",
    ]
    strength = config.get("strength", 1.0)
    if strength != 1.0:
        lines.append(f"- Strength: {strength:g} (each embedding's change scaled by it, chosen on "
                     "held-out images; `wrap` restores it, "
                     "`sp_adapter.set_prior_strength(model, 1)` gives the prior as trained)")
    return lines


def _metrics_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return ["No metrics were recorded with this prior."]
    return ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()]


def _data_lines(data: Any) -> list[str]:
    if data is None:
        return ["Not recorded."]
    if isinstance(data, str):
        return [data]
    return ["```json", json.dumps(data, indent=2), "```"]


def model_card(config: Mapping[str, Any], repo_id: str):
    """The ``huggingface_hub.ModelCard`` of a saved prior, from its ``config.json`` content;
    ``repo_id`` is the repository its usage example names."""
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(library_name=LIBRARY_NAME, tags=list(TAGS),
                              pipeline_tag="image-to-image", **{CARD_MARKER: True})
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        backbone=config["backbone"],
        repo_id=repo_id,
        prior_lines="\n".join(_prior_lines(config)),
        levels_table="\n".join(_levels_table(config["levels"])),
        data_lines="\n".join(_data_lines(config.get("data"))),
        metrics_lines="\n".join(_metrics_lines(config.get("metrics"))),
        library_version=config["library_version"],
        format_version=config["format_version"],
    )


def model_card_text(config: Mapping[str, Any], repo_id: str) -> str:
    """The ``README.md`` text of a saved prior (see :func:`model_card`)."""
    return str(model_card(config, repo_id)).rstrip("\n") + "\n"


def is_own_card(text: str) -> bool:
    """Whether a ``README.md`` text is a card this library wrote: its YAML front matter
    holds ``sp_adapter_card: true`` (see :data:`CARD_MARKER`)."""
    found = _FRONT_MATTER.match(text)
    if found is None:
        return False
    pattern = rf"^{CARD_MARKER}:\s*true\s*$"
    return re.search(pattern, found.group(1), re.M | re.I) is not None
