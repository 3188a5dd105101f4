from __future__ import annotations

from ingester.batch import Pending, TableRef
from ingester.events import FileEvent, WriteDisposition
from ingester.sources.base import OffsetTracker, Position
from ingester.window import BatchLimits, InflightBudget, WindowSet

T1, T2 = TableRef("ns", "a"), TableRef("ns", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def item(rows: int = 10, size: int = 100, off: int = 0, **kw: object) -> Pending:
    return Pending(FileEvent("a", location="x", row_count=rows, byte_size=size, **kw), Position("p", off))  # type: ignore[arg-type]


def test_closes_on_max_files_rows_bytes_and_age() -> None:
    clock = Clock()
    ws = WindowSet(BatchLimits(max_files=3, max_rows=1000, max_bytes=10_000, max_age_s=5), clock)
    assert ws.add(T1, item()) == [] and ws.add(T1, item()) == []
    (batch,) = ws.add(T1, item())
    assert len(batch.items) == 3 and batch.byte_size == 300
    (batch,) = ws.add(T1, item(rows=1000))
    assert len(batch.items) == 1
    (batch,) = ws.add(T1, item(size=10_000))
    assert batch.byte_size == 10_000
    ws.add(T2, item())
    clock.now = 4.9
    assert ws.due() == []
    clock.now = 5.0
    (batch,) = ws.due()
    assert batch.table == T2 and len(ws) == 0


def test_one_window_per_table_and_flush_before_incompatible_append() -> None:
    ws = WindowSet(BatchLimits(100, 10**9, 10**9, 60), Clock())
    ws.add(T1, item())
    ws.add(T2, item())
    ws.add(T1, item())
    closed = ws.add(T1, item(write_disposition=WriteDisposition.MERGE, primary_key=("id",)))
    assert [len(b.items) for b in closed] == [2] and closed[0].disposition is WriteDisposition.APPEND
    r1 = item(write_disposition=WriteDisposition.REPLACE, load_id="L1")
    r2 = item(write_disposition=WriteDisposition.REPLACE, load_id="L2")
    ws.add(T2, r1)  # closes T2's append batch
    (closed_r1,) = ws.add(T2, r2)
    assert closed_r1.items == (r1,)
    assert {b.table for b in ws.drain()} == {T1, T2}


def test_largest_closes_the_biggest_window() -> None:
    ws = WindowSet(BatchLimits(100, 10**9, 10**9, 60), Clock())
    ws.add(T1, item(size=5))
    ws.add(T2, item(size=50))
    big = ws.largest()
    assert big is not None and big.table == T2 and len(ws) == 1


def test_budget_refuses_past_limit_but_admits_one_oversized_event_when_empty() -> None:
    b = InflightBudget(100)
    assert b.try_acquire(60) and not b.try_acquire(50) and b.try_acquire(40)
    b.release(100)
    assert b.try_acquire(500) and b.peak == 500 and not b.try_acquire(1)


def test_offset_tracker_watermark_waits_for_the_oldest() -> None:
    t = OffsetTracker()
    for off in range(5):
        t.track(Position("p", off))
    t.done([Position("p", 2), Position("p", 3)])
    assert t.committable() == {}
    t.done([Position("p", 0)])
    assert t.committable() == {"p": 1}
    t.mark_acked({"p": 1})
    assert t.committable() == {}
    t.done([Position("p", 1), Position("p", 4)])
    assert t.committable() == {"p": 5} and t.pending() == 0


def test_offset_tracker_counts_what_is_in_flight_across_partitions_and_forgets() -> None:
    t = OffsetTracker()
    for part in ("a", "b"):
        for off in range(100_000):
            t.track(Position(part, off))
    t.done([Position("a", off) for off in range(99_999, -1, -1)])  # newest first: all done at the last one
    assert t.committable() == {"a": 100_000} and t.pending() == 100_000
    t.done([Position("b", 0)])
    t.forget(["b"])
    assert t.pending() == 0 and t.committable() == {"a": 100_000}


def test_events_for_different_branches_never_share_a_batch() -> None:
    ws = WindowSet(BatchLimits(max_files=10, max_rows=10**6, max_bytes=10**9, max_age_s=60), Clock())
    assert ws.add(T1, item(branch="main")) == []
    closed = ws.add(T1, item(off=1, branch="audit"))
    assert [b.branch for b in closed] == ["main"]
    assert [b.branch for b in ws.drain()] == ["audit"]
