"""bench/overlay_cost.py at a small size: every kind of request is timed and the table
names each with its ratio to plain. No timing thresholds (a shared machine's noise)."""

from __future__ import annotations

from bench.overlay_cost import KINDS, measure, render


def test_the_overlay_cost_table_has_every_request_kind() -> None:
    result = measure(5_000, "IVF16,Flat", rounds=2, queries=20, tombstones=30, fresh=15)
    assert set(result) == set(KINDS)
    assert all(p50 > 0 and p99 >= p50 for p50, p99 in result.values())
    table = render(result, "small")
    assert all(f"| {kind} |" in table for kind in KINDS) and "| 1.00 | 1.00 |" in table
