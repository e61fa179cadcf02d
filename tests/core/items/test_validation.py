"""Validation of item batches: every bad item rejected with its reason, the rest kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from core.items_validation import (
    ItemsBatch,
    excerpt,
    read_items_file,
    validate_retirements,
    validate_upserts,
)
from tests.core.items.conftest import CONTENT_DIM, item


def _reasons(raw: list[object]) -> dict[int, str]:
    out = validate_upserts(raw, CONTENT_DIM, max_items=100)
    return {r.position: r.reason for r in out.rejected}


def test_valid_items_pass_and_unknown_categories_are_kept() -> None:
    out = validate_upserts([item(1), item(2, category=10_000), item(3, category=-1)], 8, 100)
    assert [u.item_id for u in out.upserts] == [1, 2, 3] and not out.rejected
    assert out.upserts[1].category == 10_000  # the tower maps it to the unknown row
    assert out.upserts[0].content.dtype.name == "float32"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**item(1), "content": [float("nan")] * CONTENT_DIM}, "content[0] must be finite"),
        ({**item(1), "content": [1e39] * CONTENT_DIM}, "within float32"),
        ({**item(1), "content": ["1.0"] * CONTENT_DIM}, "content[0] must be a number"),
        ({**item(1), "content": [1.0, None] + [0.0] * 6}, "content[1] must be a number"),
        ({**item(1), "content": [1.0] * 3}, f"content must have {CONTENT_DIM} values"),
        ({**item(1), "content": "oops"}, "content must be a list"),
        ({"item_id": 1, "category": 1}, "missing field(s): content"),
        ({"content": [0.0] * 8}, "missing field(s): item_id, category"),
        ({**item(1), "item_id": "abc"}, "item_id must be an integer, got str"),
        ({**item(1), "item_id": 1.0}, "item_id must be an integer, got float"),
        ({**item(1), "item_id": True}, "item_id must be an integer, got bool"),
        ({**item(1), "item_id": -5}, "item_id must be in 0..2^63-1"),
        ({**item(1), "category": "shoes"}, "category must be an integer"),
        ({**item(1), "category": 2**40}, "category must fit int32"),
        (42, "expected an object"),
    ],
)
def test_each_bad_item_is_rejected_with_its_reason(bad: object, reason: str) -> None:
    reasons = _reasons([item(7), bad, item(8)])
    assert list(reasons) == [1] and reason in reasons[1]
    kept = validate_upserts([item(7), bad, item(8)], CONTENT_DIM, 100).upserts
    assert [u.item_id for u in kept] == [7, 8]


def test_repeated_id_in_a_batch_keeps_the_last_entry() -> None:
    out = validate_upserts([item(1, seed=1), item(2), item(1, seed=2)], CONTENT_DIM, 100)
    assert [u.item_id for u in out.upserts] == [2, 1]
    assert out.upserts[1].content.tolist() == pytest.approx(item(1, seed=2)["content"])
    assert [(r.position, r.reason) for r in out.rejected] == [
        (0, "superseded by the entry at position 2")
    ]


def test_oversized_batch_is_rejected_whole() -> None:
    out = validate_upserts([item(i) for i in range(11)], CONTENT_DIM, max_items=10)
    assert not out.upserts and len(out.rejected) == 1
    assert "batch has 11 items, the limit is 10" in out.rejected[0].reason


def test_retirements_take_ids_or_objects() -> None:
    out = validate_retirements([5, {"item_id": 6}, "x", {"id": 7}, 5], max_items=10)
    assert out.retire_ids == [5, 6]
    assert [r.position for r in out.rejected] == [2, 3]


def test_batch_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ItemsBatch(event_id="e", items=None, path=None)
    with pytest.raises(ValidationError, match="exactly one"):
        ItemsBatch(event_id="e", items=[], path="x.parquet")
    with pytest.raises(ValidationError):
        ItemsBatch(event_id="", items=[])


def test_item_files_in_every_format_read_the_same(tmp_path: Path) -> None:
    items = [item(1), item(2, category=3)]
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(json.dumps({"items": items}))
    wide: list[dict[str, object]] = []
    for i in items:
        content: list[float] = i["content"]  # type: ignore[assignment]
        wide.append(
            {"item_id": i["item_id"], "category": i["category"]}
            | {f"content_{k}": v for k, v in enumerate(content)}
        )
    pacsv.write_csv(pa.Table.from_pylist(wide), tmp_path / "a.csv")
    for name in ("a.parquet", "a.json", "a.csv"):
        out = validate_upserts(read_items_file(tmp_path / name), CONTENT_DIM, 100)
        assert [u.item_id for u in out.upserts] == [1, 2] and not out.rejected, name
    with pytest.raises(ValueError, match="unsupported item file type"):
        read_items_file(tmp_path / "a.txt")


class _HostileRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "'abc'"),
        (7, "7"),
        ("a\nb\r\x1b[31m\x00", "'a\\nb\\r\\x1b[31m\\x00'"),
        ("x" * 1000, "'" + "x" * 79 + "..."),
        (-(10**1000), "<3322-bit integer>"),
    ],
)
def test_excerpt_is_short_escaped_and_never_raises(value: object, expected: str) -> None:
    assert excerpt(value) == expected


def test_excerpt_of_objects_with_multiline_reprs_stays_on_one_line() -> None:
    for value in (np.arange(100).reshape(50, 2), [["\n" * 500] * 50] * 50, {"k\n": 10**5000}):
        shown = excerpt(value)
        assert shown.isprintable() and len(shown) <= 83, shown
    assert excerpt(_HostileRepr()).startswith("<_HostileRepr")


@pytest.mark.parametrize("event_id", ["a\nINFO forged line", "x\x00y", "\x1b[31mred", "a\u2028b"])
def test_event_ids_with_control_characters_are_refused(event_id: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        ItemsBatch(event_id=event_id, items=[])


def test_printable_unicode_event_ids_are_kept() -> None:
    assert ItemsBatch(event_id="évènement-42 ✓", items=[]).event_id == "évènement-42 ✓"
