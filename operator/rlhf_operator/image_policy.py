"""The operator's image allow-list (RLHF_ALLOWED_IMAGES): which trainer images a run may name. Pure.

Creating an RLHFRun means creating pods that run its image; a platform that lets teams create
runs but not arbitrary pods lists the images it trusts. Patterns are shell-style (fnmatch,
case-sensitive): `*` matches any run of characters, '/' and ':' included, so end a registry
prefix with '/' (`registry.example.com/ml/*`, not `registry.example.com*`, which also matches
`registry.example.com.evil.io/...`). An empty list allows every image.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from rlhf_api.spec import RLHFRunSpec
from rlhf_api.stages import StageName

from .plan import StagePlan


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatchcase(image, pattern) for pattern in patterns)


def image_field(spec: RLHFRunSpec, stage: StageName) -> str:
    """The spec field a stage's image came from, for the message that refuses it."""
    section = spec.section(stage)
    if section is not None and section.placement is not None and section.placement.image:
        return f"spec.{stage}.placement.image"
    if spec.placement.image:
        return "spec.placement.image"
    return f"spec.{stage}.placement.image (unset: the operator's trainer image, RLHF_TRAINER_IMAGE)"


def refused_images(spec: RLHFRunSpec, plans: Sequence[StagePlan], patterns: Sequence[str]) -> list[str]:
    """One line per distinct (field, image) of a stage that will run and whose image is not allowed."""
    lines: list[str] = []
    for stage in plans:
        if stage.skipped or image_allowed(stage.placement.image, patterns):
            continue
        line = f"{image_field(spec, stage.name)}: image '{stage.placement.image}' is not allowed by the operator"
        if line not in lines:
            lines.append(line)
    if lines:
        lines[-1] += f" (allowed: {', '.join(patterns)})"
    return lines
