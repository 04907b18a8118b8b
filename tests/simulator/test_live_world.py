"""The live twin's world (`LiveWorld`): the simulator's lifecycle on asyncio timers, in real time.

Each test runs a few requests through a small world whose times are tens of milliseconds, and
checks how each ended: the same rules as the simulator's heap (`simulator.lifecycle`), now on
the event loop's clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from simulator import lifecycle
from simulator.lifecycle import GAVE_UP, LOST, OK, TIMED_OUT
from simulator.live.realtime import LiveWorld
from simulator.live.timeline import Timeline
from simulator.scenario import WorldConfig, load_scenario
from tests.core.factory import node as make_node
from tests.core.factory import policy as make_policy
from tests.core.factory import pool as make_pool


def live(**cfg: object) -> LiveWorld:
    """One node (one slot, 40 ms an inference, 10 ms a feature extraction) and one pool
    (20 ms away, 30 ms of compute), no jitter and nearly constant service times."""
    pol = make_policy([make_node(1, slots=1, latency=40.0)],
                      [make_pool(latency=20.0, compute_ms=30.0)])
    config = WorldConfig(service_cv=0.01, cloud_jitter=0.0, contention=0.0, **cfg)  # type: ignore[arg-type]
    return LiveWorld(pol, config, seed=1, loop=asyncio.get_running_loop())


async def test_an_inference_ends_ok_after_its_service_time_and_leaves_its_key_warm() -> None:
    w = live()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = await w.edge("n0001", "k", "full")
    took_ms = (loop.time() - t0) * 1000.0
    second = await w.edge("n0001", "k", "full")
    assert (first.status, first.warm, second.status, second.warm) == (OK, False, OK, True)
    assert 35.0 <= took_ms < 1000.0
    w.stop()


async def test_a_queued_inference_waits_for_the_slot_and_the_node_counts_it() -> None:
    w = live()
    a, b = await asyncio.gather(w.edge("n0001", "k1", "full"), w.edge("n0001", "k2", "full"))
    assert (a.status, b.status) == (OK, OK)
    assert w.concurrency()["n0001"] == {"slots": 1, "peak_inflight": 2, "over_slots": 1}
    w.stop()


async def test_a_down_node_or_a_cut_off_pool_times_out() -> None:
    w = live(timeout_ms=50.0)
    w.apply("node_down", {"node": "n0001"})
    w.apply("partition", {"pool": "cloud", "for_s": 60.0})
    outs = await asyncio.gather(w.edge("n0001", "k", "full"), w.cloud("cloud", 1000.0),
                                w.split("n0001", "cloud", 1000.0))
    assert [o.status for o in outs] == [TIMED_OUT] * 3
    w.stop()


async def test_a_request_queued_past_the_deadline_is_given_up_by_the_sweep(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "SWEEP_S", 0.025)
    w = live(deadline_ms=20.0)
    first, queued = await asyncio.gather(w.edge("n0001", "k1", "full"),
                                         w.edge("n0001", "k2", "full"))
    # the first is served (40 ms: past the 20 ms deadline, answered all the same); the one
    # behind it is still queued when the sweep comes, 25 ms later, and ends there
    assert (first.status, queued.status) == (OK, GAVE_UP)
    w.stop()


async def test_cloud_and_split_requests_cross_their_uplink_then_the_pool_answers() -> None:
    w = live()
    cloud, split = await asyncio.gather(w.cloud("cloud", 10_000.0),
                                        w.split("n0001", "cloud", 10_000.0))
    assert (cloud.status, split.status) == (OK, OK)
    assert w.computing == {} and w.pools["cloud"].busy == 0
    w.stop()


async def test_a_spot_reclaim_loses_what_the_pool_was_computing() -> None:
    w = live()
    request = asyncio.ensure_future(w.cloud("cloud", 0.0))
    await asyncio.sleep(0.02)  # uploaded (nothing to send), computing for 50 ms
    assert len(w.computing) == 1
    w.apply("preempt", {"pool": "cloud", "fraction": 1.0, "notice_s": 0.0})
    assert (await request).status == LOST
    assert w.preempted == 1
    w.stop()


async def test_a_client_that_goes_away_leaves_the_world_consistent() -> None:
    w = live()
    first = asyncio.ensure_future(w.edge("n0001", "k1", "full"))
    gone = asyncio.ensure_future(w.edge("n0001", "k2", "full"))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await first).status == OK
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.1)  # the queued one still took its turn on the slot, and ended
    assert w.nodes["n0001"].busy == 0 and not w.nodes["n0001"].queue
    w.stop()


async def test_a_scenario_event_due_with_a_feed_comes_after_it_as_in_the_simulator(
        tmp_path: Path) -> None:
    # the simulator's heap takes a refresh before an event at the same instant; the live
    # timeline's timers due together ran in no set order, so the node lost at 1 s was in the
    # 1-s feed in some runs and not in others
    pol = make_policy([make_node(1, slots=1, latency=40.0)],
                      [make_pool(latency=20.0, compute_ms=30.0)]).model_copy(
        update={"refresh_seconds": 1})
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text("version: 1\n")  # read only by a budget event
    (tmp_path / "s.yaml").write_text(
        f"version: 1\npolicy: {policy_path}\nduration_s: 3\n"
        "traffic: {rate_rps: 1, classes: [{name: c}]}\n"
        "events: [{at_s: 1, node_down: n0001}, {at_s: 2, node_up: n0001}]\n")
    scenario, problems = load_scenario(tmp_path / "s.yaml")
    assert scenario is not None, problems
    w = LiveWorld(pol, WorldConfig(), seed=1, loop=asyncio.get_running_loop())
    feed = tmp_path / "feed.json"
    timeline = Timeline(w, pol, policy_path, scenario, feed)
    seen: list[tuple[int, bool]] = []
    write = timeline.write_feed

    def recording() -> None:
        write()
        seen.append((timeline.refreshes, json.loads(feed.read_text())["nodes"][0]["healthy"]))

    timeline.write_feed = recording  # type: ignore[method-assign]
    timeline.start(time.time())
    for _ in range(200):  # the feeds at 0, 1 and 2 s, however late a busy machine runs them
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.05)
    w.stop()
    # refreshes 2, 3, 4 are the feeds at 0, 1 and 2 s (1 is the idle world's, before start)
    assert seen[:3] == [(2, True), (3, True), (4, False)]
