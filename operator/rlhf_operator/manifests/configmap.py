"""A stage's trainer config as a ConfigMap, mounted into its pods. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from rlhf_api.naming import configmap_name, labels
from rlhf_api.spec import RLHFRun

from ..plan import StagePlan
from .meta import object_meta
from .pod import CONFIG_FILE

# libyaml's dumper when present: the pure-Python one dominated the operator's first pass.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


MAX_CONFIG_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB


def started_config(configmap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The trainer config file a stage's ConfigMap holds (what it started with), or None when it
    is gone or unreadable (edited by hand into something else). Never raises."""
    data = (configmap or {}).get("data")
    text = data.get(CONFIG_FILE) if isinstance(data, Mapping) else None
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        return None
    try:
        loaded = yaml.load(text, Loader=_LOADER)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
