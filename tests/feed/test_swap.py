"""Tables prepared in a worker thread and swapped on the loop keep load counts exact."""

from __future__ import annotations

import threading

from router.core.decision import Routed
from router.policy.loader import load_policy
from router.runtime import Runtime
from tests.feed.conftest import Setup, feed_doc, write_feed


def test_threaded_prepare_then_commit_keeps_in_flight_exact(setup: Setup) -> None:
    rt = Runtime(load_policy(_policy(setup)), clock=setup.clock)
    held: list[Routed] = []
    for i in range(30):
        held.append(rt.route({"x-affinity-key": f"k{i}", "x-affinity-residency": "GDPR"}))
    box: list[object] = []
    worker = threading.Thread(target=lambda: box.append(rt.prepare(now=setup.clock())))
    worker.start()
    for i in range(30, 300):  # requests keep coming while the table builds
        held.append(rt.route({"x-affinity-key": f"k{i}", "x-affinity-residency": "GDPR"}))
        if i % 3 == 0:
            rt.finish(held.pop(0))
    worker.join()
    table = box[0]
    rt.commit(table)  # type: ignore[arg-type]
    entry = rt.snapshot.entry(frozenset({"GDPR"}), None)
    assert entry.gid >= 0  # the load group was registered on this thread, at the swap
    assert rt.tracker.total(entry.gid, entry.member_slots) == sum(
        rt.tracker.load(n) for n in ("e1", "e2", "e3", "e4"))
    for routed in held:
        rt.finish(routed)
    assert set(rt.inflight().values()) == {0}
    assert rt.tracker.total(entry.gid, entry.member_slots) == 0


def _policy(setup: Setup) -> str:
    setup.make(f"file:{setup.feed_path}")
    write_feed(setup.feed_path, feed_doc(setup.clock()))
    return str(setup.policy_path)
