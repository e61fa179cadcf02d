"""prefect.yaml stays loadable: every entrypoint imports and its parameters validate."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from pydantic import BaseModel

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


def test_nightly_runs_never_overlap() -> None:
    from cli.deployments import deployments_from_yaml

    (nightly,) = [d for d in _deployments() if d["name"] == "nightly"]
    assert nightly["concurrency_limit"] == 1
    (served,) = deployments_from_yaml(ROOT / "prefect.yaml", ["nightly"])
    assert served.concurrency_limit == 1 and set(served.tags) >= {"towerflow", "nightly"}


def test_pull_step_sets_the_working_directory() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    steps = [next(iter(step)) for step in spec["pull"]]
    assert "prefect.deployments.steps.set_working_directory" in steps


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_entrypoint_imports_and_parameters_validate(deployment: dict[str, Any]) -> None:
    flow: Any = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    validated = flow.validate_parameters(deployment.get("parameters", {}))
    assert set(validated) <= set(flow.parameters.properties)


def _flow_defaults(entrypoint: str) -> dict[str, Any]:
    """The flow's parameter defaults as JSON-like values (pydantic models dumped)."""
    flow: Any = load_flow_from_entrypoint(str(ROOT / entrypoint))
    out: dict[str, Any] = {}
    for name, param in inspect.signature(flow.fn).parameters.items():
        if param.default is not inspect.Parameter.empty:
            default = param.default
            is_model = isinstance(default, BaseModel)
            out[name] = default.model_dump(mode="json") if is_model else default
    return out


def repeated_defaults(given: Any, defaults: Any, path: str = "") -> list[str]:
    """Dotted paths of the leaves of ``given`` equal to the same leaf of ``defaults``."""
    if isinstance(given, dict) and isinstance(defaults, dict):
        return [
            hit
            for key, value in given.items()
            if key in defaults
            for hit in repeated_defaults(value, defaults[key], f"{path}.{key}".lstrip("."))
        ]
    return [path] if given == defaults else []


def test_the_repetition_detector_finds_a_repeated_default() -> None:
    defaults = {"config": {"data": {"scale": "small", "seed": 42}, "train": {"epochs": 5}}}
    given = {"config": {"data": {"scale": "small", "seed": 7}, "train": {"epochs": 5}}}
    assert repeated_defaults(given, defaults) == ["config.data.scale", "config.train.epochs"]
    assert repeated_defaults({"config": {"data": {"seed": 7}}}, defaults) == []


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_deployment_parameters_do_not_repeat_the_code_defaults(deployment: dict[str, Any]) -> None:
    # A repeated default is a second source of truth: change the code default and the
    # deployment silently keeps the old value.
    defaults = _flow_defaults(deployment["entrypoint"])
    if deployment["name"] == "nightly":  # the comparison reaches the config's leaves
        assert defaults["config"]["data"]["scale"] == "small"
    assert repeated_defaults(deployment.get("parameters") or {}, defaults) == []


def test_invalid_parameters_are_rejected() -> None:
    from prefect.exceptions import ParameterTypeError

    (nightly,) = [d for d in _deployments() if d["name"] == "nightly"]
    flow: Any = load_flow_from_entrypoint(str(ROOT / nightly["entrypoint"]))
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters({"config": {"data": {"scale": "galactic"}}})


def _render(parameters: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Render trigger parameters as the server's RunDeployment action does."""
    import copy
    from uuid import uuid4

    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.types._datetime import now
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    event = ReceivedEvent(
        occurred=now("UTC"),
        event="towerflow.items.created",
        resource={"prefect.resource.id": "towerflow.items.test"},
        payload=payload,
        id=uuid4(),
    )
    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    ctx = HydrationContext(render_jinja=True, raise_on_error=True, jinja_context={"event": event})
    rendered = hydrate(params, ctx)
    assert isinstance(rendered, dict), rendered
    rendered["__event_id"] = str(event.id)
    return rendered


def _new_items_triggers() -> list[dict[str, Any]]:
    (new_items,) = [d for d in _deployments() if d["name"] == "new-items"]
    assert new_items["entrypoint"] == "flows/new_items.py:new_items"
    return new_items["triggers"]


def test_new_items_triggers_listen_for_created_and_retired_events() -> None:
    triggers = _new_items_triggers()
    assert [t["expect"] for t in triggers] == [
        ["towerflow.items.created"],
        ["towerflow.items.retired"],
    ]
    assert [t["parameters"]["operation"] for t in triggers] == ["create", "retire"]
    for t in triggers:
        assert t["type"] == "event" and t["match"]["prefect.resource.id"] == "towerflow.items.*"


@pytest.mark.parametrize(
    "payload",
    [
        {"event_id": "e-1", "items": [{"item_id": 1, "category": 2, "content": [0.5, 1.0]}]},
        {"event_id": "e-2", "path": "/store/inbox/e-2.parquet"},
        {"items": [3, 4]},  # no event_id: the Prefect event's id stands in
        {},  # every key missing: still renders (the flow then rejects it with a reason)
    ],
    ids=["inline", "file", "no-event-id", "empty"],
)
def test_trigger_templates_render_typed_values_even_with_missing_keys(
    payload: dict[str, Any],
) -> None:
    flow: Any = load_flow_from_entrypoint(str(ROOT / "flows/new_items.py:new_items"))
    for trigger in _new_items_triggers():
        rendered = _render(trigger["parameters"], payload)
        event_id = rendered.pop("__event_id")
        assert rendered["event_id"] == payload.get("event_id", event_id)
        assert rendered["items"] == payload.get("items")  # lists keep their types
        assert rendered["path"] == payload.get("path")
        validated = flow.validate_parameters(rendered)
        assert validated["operation"] == trigger["parameters"]["operation"]


def test_an_unguarded_template_fails_to_render_on_a_missing_key() -> None:
    # Why every template carries `default(...)`: without it a missing key is an error,
    # which the server reports only as a failed automation action.
    with pytest.raises(Exception, match=r"[Uu]ndefined"):
        _render({"path": "{{ event.payload.path }}"}, {})
