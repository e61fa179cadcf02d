"""The item catalogue log: ordering, idempotency (by event and by content), atomic and
durable appends that survive a SIGKILL at any instant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from storage import ItemUpsert, Layout
from storage.backends import open_catalogue
from tests.storage.conftest import BACKENDS, backend_layout

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    """Every test here runs on both catalogues: SQLite in the root, and PostgreSQL."""
    return backend_layout(request, tmp_path / "store")


def _up(item_id: int, value: float = 0.0, category: int = 1) -> ItemUpsert:
    return ItemUpsert(item_id, category, np.full(3, value, np.float32))


def test_empty_log_reads_as_empty_without_creating_the_file(layout: Layout) -> None:
    log = open_catalogue(layout)
    assert log.head() == 0 and not log.has_event("e")
    assert log.changes(0).empty
    assert not layout.catalogue_db.exists()


def test_changes_give_the_latest_state_of_each_touched_item(layout: Layout) -> None:
    log = open_catalogue(layout)
    first = log.append_upserts("e1", [_up(1, 1.0), _up(2, 2.0)])
    assert (first.head, first.changed, first.duplicate) == (2, (1, 2), False)
    log.append_upserts("e2", [_up(1, 5.0, category=3)])
    log.append_retirements("e3", [2, 99])
    everything = log.changes(0)
    assert everything.upto == 5 and everything.event_ids == ("e1", "e2", "e3")
    assert everything.upsert_id.tolist() == [1]
    assert everything.upsert_category.tolist() == [3]
    np.testing.assert_array_equal(everything.upsert_content, [[5.0, 5.0, 5.0]])
    assert everything.retired_id.tolist() == [2, 99]
    since = log.changes(first.head)
    assert since.after == 2 and since.event_ids == ("e2", "e3")
    assert log.changes(0, upto=2).upsert_id.tolist() == [1, 2]  # as of entry 2
    assert log.changes(5).empty


def test_same_event_twice_is_applied_once(layout: Layout) -> None:
    log = open_catalogue(layout)
    log.append_upserts("e1", [_up(1)])
    again = log.append_upserts("e1", [_up(1, 7.0), _up(2)])
    assert again.duplicate and again.changed == () and log.head() == 1
    assert log.append_retirements("e1", [1]).duplicate
    assert log.has_event("e1")


def test_identical_content_under_a_new_event_adds_no_entry(layout: Layout) -> None:
    log = open_catalogue(layout)
    log.append_upserts("e1", [_up(1, 1.0), _up(2, 2.0)])
    same = log.append_upserts("e2", [_up(1, 1.0), _up(2, 2.5)])
    assert same.changed == (2,) and same.unchanged == (1,) and same.head == 3
    log.append_retirements("e3", [1])
    assert log.append_retirements("e4", [1]).unchanged == (1,)
    # Re-creating a retired item with its old content is a change.
    assert log.append_upserts("e5", [_up(1, 1.0)]).changed == (1,)


def test_one_append_cannot_name_an_item_twice(layout: Layout) -> None:
    log = open_catalogue(layout)
    with pytest.raises(ValueError, match="twice"):
        log.append_upserts("e1", [_up(1), _up(1, 2.0)])
    assert log.head() == 0 and not log.has_event("e1")


_WRITER = """
import sys, numpy as np
from storage import ItemUpsert, Layout
from storage.backends import open_catalogue
log = open_catalogue(Layout(sys.argv[1]))
for n in range(10_000):
    items = [ItemUpsert(n * 10 + j, 1, np.full(4, n, np.float32)) for j in range(5)]
    log.append_upserts(f"e{n}", items)
    print(n, flush=True)  # after the commit: acknowledged
"""


@pytest.mark.parametrize("delay_s", [0.05, 0.13, 0.31])
def test_sigkill_mid_append_loses_no_acknowledged_event_and_tears_none(
    layout: Layout, delay_s: float
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(layout.root)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # writing for real before the kill
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    acked = [int(x) for x in (first + out).split()]
    assert acked
    log = open_catalogue(layout)
    state = log.changes(0)
    events = sorted(int(e[1:]) for e in state.event_ids)
    # Every acknowledged event is there, whole; at most one more committed unacknowledged.
    assert set(acked) <= set(events) and len(events) - len(acked) <= 1
    assert events == list(range(len(events)))
    assert len(state.upsert_id) == 5 * len(events) == log.head()
    assert json.dumps(sorted(set(state.upsert_id.tolist()))) == json.dumps(
        sorted(n * 10 + j for n in events for j in range(5))
    )
