"""The Helm chart's values (deploy/helm/social), merged as Helm merges a
values file over values.yaml: what the chart tests and the capacity model
(tools/bench/capacity.py) read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from social_stack.paths import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "social"

Obj = dict[str, Any]


def deep_merge(base: Obj, override: Obj) -> Obj:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_values(values: str, chart: Path = CHART) -> Obj:
    """values.yaml with a values file over it, as Helm merges them."""
    base: Obj = yaml.safe_load((chart / "values.yaml").read_text())
    return deep_merge(base, yaml.safe_load((chart / values).read_text()) or {})
