from __future__ import annotations

from pathlib import Path

import anyio

from ingester.sources.spool import SpoolQueue, SpoolSource


def test_spool_delivers_in_order_and_keeps_unacked_across_reopen(tmp_path: Path) -> None:
    q = SpoolQueue(tmp_path / "q.db")
    q.put_many([b"a", b"b", b"c"])
    src = SpoolSource(q)

    async def scenario() -> list[bytes]:
        got = await src.poll(2, 0.01)
        await src.commit({q.partition: got[0].position.offset + 1})  # ack "a" only
        src.pause()
        assert await src.poll(10, 0.01) == []
        src.resume()
        rest = await src.poll(10, 0.01)
        return [m.payload for m in got + rest]

    assert anyio.run(scenario) == [b"a", b"b", b"c"]
    partition = q.partition
    q.close()
    q2 = SpoolQueue(tmp_path / "q.db")
    assert q2.partition == partition and q2.depth() == 2
    msgs = anyio.run(SpoolSource(q2).poll, 10, 0.01)
    assert [m.payload for m in msgs] == [b"b", b"c"]


def test_new_spool_file_gets_a_new_partition_name(tmp_path: Path) -> None:
    assert SpoolQueue(tmp_path / "1.db").partition != SpoolQueue(tmp_path / "2.db").partition
