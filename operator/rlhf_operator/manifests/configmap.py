"""A stage's trainer config as a ConfigMap, mounted into its pods. Pure."""

from __future__ import annotations

from typing import Any

import yaml
from rlhf_api.naming import configmap_name, labels
from rlhf_api.spec import RLHFRun

from ..plan import StagePlan
from .meta import object_meta
from .pod import CONFIG_FILE

# libyaml's dumper when present: the pure-Python one dominated the operator's first pass.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def stage_config_yaml(stage: StagePlan) -> str:
    """The file `rlhf-train <stage> --config FILE` reads."""
    return yaml.dump(stage.config_file(), Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


def build_stage_configmap(run: RLHFRun, stage: StagePlan, owner: dict[str, Any] | None) -> dict[str, Any]:
    """The stage's trainer config, mounted at CONFIG_MOUNT/CONFIG_FILE in its pods."""
    if stage.skipped or stage.config is None:
        raise ValueError(f"{stage.name}: stage is skipped (existingOutput): it has no trainer config")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            run, configmap_name(run.metadata.name, stage.name), labels(run.metadata.name, stage.name), owner
        ),
        "data": {CONFIG_FILE: stage_config_yaml(stage)},
    }
