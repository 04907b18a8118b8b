"""Workers of one host share what each Envoy ACKed (router.xds.ackshare)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

from router.core.feedsnapshot import NodeState
from router.xds import resources as xds
from router.xds.acks import AckBook
from router.xds.ackshare import SharedAcks, keep_shared
from tests.core.factory import feed, table
from tests.xds.test_xds import FLEET
from tests.xds.test_xds_guard import GDPR, decision

OLD = xds.build(table(FLEET))
NEW = xds.build(table(FLEET, feed({"n0000": NodeState(healthy=False)})))


def book() -> AckBook:
    b = AckBook()
    b.published(OLD)
    return b


def ack(b: AckBook, node: str, stream: int, res: xds.Resources) -> None:
    b.acked(node, stream, xds.CLUSTER_TYPE, res.versions[xds.CLUSTER_TYPE])
    b.acked(node, stream, xds.ENDPOINT_TYPE, res.versions[xds.ENDPOINT_TYPE])


def test_a_worker_decides_among_what_the_envoy_acked_on_another_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "acks.db")
    a, b = book(), book()
    one, two = SharedAcks(path, 0), SharedAcks(path, 1)
    assert not b.view("e1").allows(decision(GDPR, "127.0.0.1:10001"))  # type: ignore[union-attr]
    ack(a, "e1", 1, OLD)
    one.exchange(a.mine())
    b.others(two.exchange(b.mine()))
    assert b.view("e1").current and b.nodes() == {}  # type: ignore[union-attr]
    a.published(NEW)
    b.published(NEW)  # e1 still holds the old set: n0000 is gone from what is published
    view = b.view("e1")
    assert view is not None and not view.current
    assert view.allows(decision(GDPR, "127.0.0.1:10001"))
    ack(b, "e1", 7, NEW)  # a second Envoy on the id, on this worker: held to the one behind
    assert not b.view("e1").current  # type: ignore[union-attr]
    a.closed("e1", 1)
    one.exchange(a.mine())
    b.others(two.exchange(b.mine()))
    assert b.view("e1").current and b.nodes() == {"e1": True}  # type: ignore[union-attr]
    b.closed("e1", 7)
    assert not b.view("e1").allows(decision(GDPR, "127.0.0.1:10001"))  # type: ignore[union-attr]
    one.close()
    two.close()


def test_a_dead_workers_rows_stop_counting_after_the_ttl(tmp_path: Path) -> None:
    path = str(tmp_path / "acks.db")
    a, b = book(), book()
    ack(a, "e1", 1, OLD)
    SharedAcks(path, 0, ttl=0.0).exchange(a.mine())  # its heartbeat is already too old
    b.others(SharedAcks(path, 1, ttl=0.0).exchange(b.mine()))
    assert b.view("e1") is not None and not b.view("e1").current  # type: ignore[union-attr]


async def test_keep_shared_brings_an_ack_to_the_other_worker(
        tmp_path: Path) -> None:
    path = str(tmp_path / "acks.db")
    a, b = book(), book()
    tasks = [asyncio.create_task(keep_shared(x, SharedAcks(path, i)))
             for i, x in enumerate((a, b))]
    try:
        await asyncio.sleep(0.05)
        ack(a, "e1", 1, OLD)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if b.view("e1").current:  # type: ignore[union-attr]
                break
        assert b.view("e1").current  # type: ignore[union-attr]
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


def test_opening_the_file_waits_out_another_worker_opening_it(tmp_path: Path) -> None:
    """The workers open the ACK file at once: one holding it longer than an exchange waits
    must not fail another's start."""
    path = str(tmp_path / "acks.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another worker, in the middle of creating the schema
    released = threading.Timer(1.5, holder.execute, ("COMMIT",))
    released.start()
    shared = SharedAcks(path, 0)  # waited for the holder
    released.join()
    holder.close()
    assert shared.exchange([]) == []
    shared.close()
