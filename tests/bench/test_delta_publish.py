"""bench.delta_publish at small sizes: it runs end to end, and a delta's bytes do not
grow with the catalogue while a compaction's do (the property the benchmark measures)."""

from __future__ import annotations

from pathlib import Path

from bench.delta_publish import measure, render


def test_delta_bytes_are_flat_in_catalogue_size_and_compaction_is_not(tmp_path: Path) -> None:
    small = measure(tmp_path / "small", 2_000, events=3, size=6)
    large = measure(tmp_path / "large", 8_000, events=3, size=6)
    assert small["folded"] == large["folded"] == 3
    assert abs(large["bytes"] - small["bytes"]) / small["bytes"] < 0.05  # O(batch)
    assert large["compact_mib"] > 3 * small["compact_mib"]  # O(catalogue)
    assert small["bytes"] < 20_000 < large["compact_mib"] * 2**20
    table = render([small, large], events=3, size=6)
    assert "| 2,000 |" in table and "| 8,000 |" in table


def test_the_service_applies_each_event_in_place_on_one_index(tmp_path: Path) -> None:
    from bench.delta_service import measure as measure_service

    r = measure_service(tmp_path / "store", 3_000, events=4, size=6, factory="Flat")
    assert r["same_index"] and r["deltas_applied"] == 4
    assert r["fresh_p50"] >= r["apply_p50"] > 0 and r["rss_after"] > 0


def test_updates_on_hnsw_are_applied_in_place_through_the_overlay(tmp_path: Path) -> None:
    from bench.delta_service import measure as measure_service

    r = measure_service(tmp_path / "store", 3_000, events=4, size=6, factory="HNSW16", mix="all")
    assert r["same_index"] and r["deltas_applied"] == 4
    assert r["fresh"] == 2 * 3 and r["tombstones"] == 2 * 6  # two upsert, two retire events
    assert all(ms > 0 for ms in (*r["recall_before"], *r["recall_after"]))
