"""Serve towerflow's deployments from ``prefect.yaml`` with ``prefect.serve``: the same names,
cron schedules, event triggers and parameters a worker would get from ``prefect deploy``,
run by one process with no work pool or worker.

Heavy imports (Prefect, the flows) happen inside the functions.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = ["check_server", "deployments_from_yaml", "load_deployment_specs"]


def load_deployment_specs(path: Path) -> list[dict[str, Any]]:
    """The `deployments` of a prefect.yaml (YAML anchors resolved)."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    deployments = spec.get("deployments") if isinstance(spec, dict) else None
    if not isinstance(deployments, list) or not deployments:
        raise ValueError(f"{path}: no `deployments` list")
    return deployments


def _module(entrypoint: str) -> str:
    """`flows/new_items.py:new_items` -> `flows.new_items`."""
    return entrypoint.partition(":")[0].removesuffix(".py").replace("/", ".")


def _flow(entrypoint: str) -> Any:
    """The flow object of an entrypoint, imported by module path (so the runner's
    subprocess can import it too)."""
    return getattr(importlib.import_module(_module(entrypoint)), entrypoint.partition(":")[2])


def deployments_from_yaml(path: Path, names: list[str] | None = None) -> list[RunnerDeployment]:
    """A `RunnerDeployment` per deployment of `path` (those in `names`, default all)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    out = []
    for spec in load_deployment_specs(path):
        if names is not None and spec["name"] not in names:
            continue
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
            for s in spec.get("schedules") or []
        ]
        triggers = []
        for t in spec.get("triggers") or []:
            if t.get("type", "event") != "event":
                raise ValueError(f"{path}: {spec['name']}: only event triggers are served")
            triggers.append(DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"}))
        out.append(
            _flow(spec["entrypoint"]).to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters"),
                schedules=schedules or None,
                triggers=triggers or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    if names is not None and len(out) != len(names):
        known = [d["name"] for d in load_deployment_specs(path)]
        raise ValueError(f"{path}: deployments {names} not all found (has {known})")
    return out


def check_server(api_url: str | None, timeout_s: float = 5.0) -> str:
    """The API URL if a Prefect server answers its health check there, else `RuntimeError`
    saying what to do (events sent without it go to a private temporary server)."""
    import httpx

    if not api_url:
        raise RuntimeError(
            "PREFECT_API_URL is not set: start a server (`prefect server start --host "
            "127.0.0.1`) and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise RuntimeError(f"no Prefect server answers at {api_url}: {e}") from e
    return api_url
