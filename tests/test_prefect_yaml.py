"""prefect.yaml stays loadable: every entrypoint imports and its parameters validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]


def _deployments() -> list[dict[str, Any]]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return spec["deployments"]


def test_nightly_deployment_is_scheduled_with_an_explicit_timezone() -> None:
    (nightly,) = [d for d in _deployments() if d["name"] == "nightly"]
    assert nightly["entrypoint"] == "flows/nightly.py:nightly"
    (schedule,) = nightly["schedules"]
    assert schedule["cron"] == "0 2 * * *"
    assert schedule["timezone"]
    assert nightly["work_pool"]["name"]


def test_pull_step_sets_the_working_directory() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    steps = [next(iter(step)) for step in spec["pull"]]
    assert "prefect.deployments.steps.set_working_directory" in steps


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_entrypoint_imports_and_parameters_validate(deployment: dict[str, Any]) -> None:
    flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    validated = flow.validate_parameters(deployment.get("parameters", {}))
    assert set(validated) <= set(flow.parameters.properties)


def test_invalid_parameters_are_rejected() -> None:
    from prefect.exceptions import ParameterTypeError

    (nightly,) = [d for d in _deployments() if d["name"] == "nightly"]
    flow = load_flow_from_entrypoint(str(ROOT / nightly["entrypoint"]))
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters({"config": {"data": {"scale": "galactic"}}})
