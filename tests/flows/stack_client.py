"""Test helper: a client of the shared stack (devtools.stack), run as a child process with
the stack's environment (PREFECT_API_URL, TOWERFLOW_ROOT, TOWERFLOW_DATABASE_URL).

    python -m tests.flows.stack_client nightlies N   # N nightly runs at once; waits
    python -m tests.flows.stack_client items EVENT_ID   # an items event; waits

Prints one JSON line: the runs (id, state, start, end) or what was published.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TINY = {
    "data": {"scale": "tiny"},
    "train": {"epochs": 2},
    "evaluation": {"baseline": "none", "gate_min_lift": 0.0},
}


async def _nightlies(n: int, timeout_s: float) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    runs = await asyncio.gather(
        *(
            run_deployment("nightly/nightly", parameters={"config": TINY}, timeout=0)
            for _ in range(n)
        )
    )
    ids = [r.id for r in runs]
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            found = [await client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in found):
                break
            if time.monotonic() > deadline:
                raise TimeoutError([(r.name, r.state and r.state.name) for r in found])
            await asyncio.sleep(1)
        return [
            {
                "id": str(r.id),
                "name": r.name,
                "state": r.state.name if r.state else None,
                "start": r.start_time.timestamp() if r.start_time else None,
                "end": r.end_time.timestamp() if r.end_time else None,
            }
            for r in found
        ]


def _items(event_id: str, timeout_s: float) -> dict[str, Any]:
    from cli.items import emit_items_event
    from core.events import wait_until_published
    from storage import Layout, VersionStore, read_json

    root = Path(os.environ["TOWERFLOW_ROOT"])
    store = VersionStore(Layout(root))
    dim = read_json(store.open_current().path / "model.json")["content_dim"]
    rng = np.random.default_rng(5)
    items = [
        {"item_id": 800_000 + i, "category": 1, "content": rng.normal(size=dim).round(4).tolist()}
        for i in range(3)
    ]
    emit_items_event("create", event_id, {"items": items})
    return wait_until_published(root, event_id, timeout_s)


if __name__ == "__main__":
    if sys.argv[1] == "nightlies":
        print(json.dumps(asyncio.run(_nightlies(int(sys.argv[2]), 600))))
    else:
        print(json.dumps(_items(sys.argv[2], 180), default=str))
