"""The capacity model: its arithmetic, and docs/capacity.md as the model
renders it from the figures kept beside it and the chart's values today."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.bench.capacity import (
    DOCUMENT,
    FIGURES,
    Profile,
    Sizing,
    chart_sizing,
    cluster_shards,
    cores,
    goal_costs,
    needs,
    redis_shards,
    render,
)


def test_the_document_is_rendered_from_its_figures_and_the_chart() -> None:
    kept = json.loads(FIGURES.read_text())
    rendered = render(kept, chart_sizing())
    assert DOCUMENT.read_text() == rendered, "stale: run `make capacity AGAIN=1`"


@pytest.mark.parametrize(("quantity", "expected"), [("500m", 0.5), ("2", 2.0), (1.5, 1.5)])
def test_cpu_quantities(quantity: str | float, expected: float) -> None:
    assert cores(quantity) == expected


def test_sizing_is_the_chart_s_with_service_overrides_and_the_roster_s_bounds(
    tmp_path: Path,
) -> None:
    values: dict[str, Any] = {
        "serviceDefaults": {
            "autoscaling": {"targetCPUUtilizationPercentage": 70},
            "resources": {"requests": {"cpu": "500m"}},
            "databasePool": {"max": 6},
        },
        "gateway": {
            "autoscaling": {
                "minReplicas": 3,
                "maxReplicas": 20,
                "targetCPUUtilizationPercentage": 70,
            },
            "resources": {"requests": {"cpu": "2"}},
        },
    }
    production = {"posts": {"resources": {"requests": {"cpu": "1"}}}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "values-production.yaml").write_text(yaml.safe_dump(production))
    sizing = chart_sizing(tmp_path)
    assert sizing["posts"] == Sizing(1.0, 0.7, 50, 3, 6)
    assert sizing["messages"].cpu_request == 0.5
    assert sizing["realtime"].pool == 0  # no database
    assert sizing["envoy"] == Sizing(2.0, 0.7, 20, 3, 0)


def test_pods_are_the_cores_over_what_a_pod_gives_at_the_target_never_below_the_minimum() -> None:
    sizing = {"posts": Sizing(1.0, 0.7, 50, 3, 6)}
    profile = Profile("one", {"posts": 2.0, "redis": 0.5}, {})
    by_name = {need.component: need for need in needs(profile, 1_000, sizing)}
    assert (by_name["posts"].cores, by_name["posts"].pods) == (2.0, 3)  # 2 / 0.7 -> 3
    # 0.2 cores is one pod's work: the minimum of three still runs.
    assert needs(profile, 100, sizing)[0].pods == 3
    assert by_name["redis"].cores == 0.5
    assert by_name["redis"].pods is None
    many = {need.component: need for need in needs(profile, 20_000, sizing)}
    assert (many["posts"].pods, many["posts"].fits) == (58, False)  # 40 / 0.7 -> 58 > 50


def test_redis_primaries_are_its_cores_over_what_one_thread_gives() -> None:
    assert [redis_shards(c) for c in (0.1, 0.8, 0.81, 3.7)] == [1, 1, 2, 5]


def test_a_clusters_primaries_are_paced_by_the_busiest() -> None:
    # Even: the cores over what a primary gives; the busiest with 5/12 of
    # three primaries' commands: as if there were 1.25 times the cores.
    assert [cluster_shards(1.6, 1.0), cluster_shards(1.6, 1.25), cluster_shards(0.1, 3.0)] == [
        2,
        3,
        1,
    ]


def test_a_goal_takes_the_fleets_cpu_per_request_times_its_rate_the_generator_left_out() -> None:
    cpu = {"posts": {"ms_per_request": 0.3}, "envoy": {"ms_per_request": 0.2}}
    results = {
        "results": [
            {
                "scenario": "home_timeline",
                "requests_per_s": 1_500,
                "cpu": {**cpu, "k6": {"ms_per_request": 0.4}},
                "goal": {"requests_per_s": 4_000},
            },
            {"scenario": "ceiling", "requests_per_s": 40_000, "cpu": cpu},  # no goal
        ],
        "realtime": [
            {
                "scenario": "ws_latency",
                "messages_per_s": 300,
                "target_messages_per_s": 1_000,
                "cpu": {"messages": {"ms_per_request": 5.0}},
            }
        ],
    }
    home, ws = goal_costs(results)
    assert (home.scenario, home.ms_per_request, home.measured_per_s) == (
        "home_timeline",
        0.5,
        1_500,
    )
    assert home.cores == 2.0  # 4,000/s x 0.5 ms
    assert home.at_most(2) == 4_000
    assert (ws.scenario, ws.cores, ws.at_most(2)) == ("ws_latency", 5.0, 400)
