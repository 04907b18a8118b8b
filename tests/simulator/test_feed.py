"""The simulator's feed goes through the server's own intake (`Runtime.offer`/`tick`): a late
feed (`feed_delay`) goes stale on time and a feed that comes back freshens the table."""

from __future__ import annotations

from pathlib import Path

from router.core.feedsnapshot import FeedSnapshot
from router.policy.loader import load_policy
from simulator.routers import EPOCH, Adaptive
from simulator.run import simulate
from simulator.scenario import Event, FeedDelay, load_scenario

ROOT = Path(__file__).resolve().parents[2]


class Watched(Adaptive):
    """Adaptive, remembering each feed offered and each tick with the staleness after it."""

    log: list[tuple[str, float, bool]]

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        super().refresh(feed, now)
        self.log.append(("feed", now, self.runtime.snapshot.stale))

    def tick(self, now: float) -> None:
        super().tick(now)
        self.log.append(("tick", now, self.runtime.snapshot.stale))


def test_a_late_feed_goes_stale_within_a_tick_and_recovers_with_the_next_feed() -> None:
    scenario, problems = load_scenario(ROOT / "simulator" / "scenarios" / "spot-spike.yaml")
    assert scenario is not None, problems
    late = scenario.model_copy(update={"events": (
        Event(at_s=10.0, feed_delay=FeedDelay(for_s=110.0)),)})
    pol = load_policy(scenario.policy)
    stale_after, every = pol.feed.stale_after_seconds, pol.refresh_seconds
    adaptive = Watched(pol)
    adaptive.log = []
    result = simulate(late, pol, adaptive, requests=40_000)  # 133 s at 300/s
    feeds = [t for kind, t, _ in adaptive.log if kind == "feed"]
    assert not [t for t in feeds if 10.0 <= t < 120.0]  # none while late
    last = max(t for t in feeds if t < 10.0)
    went = min(t for kind, t, stale in adaptive.log if stale)
    assert last + stale_after < went <= last + stale_after + 1.0  # within the 1-s tick
    back = min(t for t in feeds if t >= 120.0)
    assert back < 120.0 + every and not adaptive.runtime.snapshot.stale
    assert [s for kind, t, s in adaptive.log if t == back and kind == "feed"] == [False]
    assert adaptive.runtime.feed is not None
    assert adaptive.runtime.feed.generated_at == EPOCH + max(feeds)
    assert len(result.t) == 40_000 and "" not in result.mode


def test_an_unchanged_feed_is_restamped_not_rebuilt() -> None:
    scenario, problems = load_scenario(ROOT / "simulator" / "scenarios" / "spot-spike.yaml")
    assert scenario is not None, problems
    pol = load_policy(scenario.policy)
    adaptive = Adaptive(pol)
    world_feed = FeedSnapshot(generated_at=EPOCH, received_at=EPOCH, nodes={}, prices={})
    adaptive.refresh(world_feed, 0.0)
    built = adaptive.runtime.rebuilds
    adaptive.refresh(FeedSnapshot(generated_at=EPOCH + 30, received_at=EPOCH + 30, nodes={},
                                  prices={}), 30.0)
    assert adaptive.runtime.rebuilds == built and adaptive.runtime.feed is not None
    assert adaptive.runtime.feed.generated_at == EPOCH + 30
