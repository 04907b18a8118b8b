"""The feed says what it is: a stale snapshot at start is logged and shown, a refused document
counts `invalid` at every poll that finds it, a zero price is refused where it is written."""

from __future__ import annotations

import logging
import re

import pytest

from router.feed.server import FeedServer
from tests.feed.conftest import Setup, feed_doc, sample, write_feed


async def test_a_feed_already_stale_at_start_is_logged_and_shown(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.feed.refresh")
    write_feed(setup.feed_path, feed_doc(setup.clock() - 120))  # stale after 30 s
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    assert await refresher.refresh_once() == "ok"
    assert rt.snapshot.stale
    assert sample(metrics, "router_feed_stale") == 1
    assert sample(metrics, "router_node_weight", node="e1") == 0.5  # stale_weight
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and re.match(r"feed snapshot in force is 1[2-5][0-9] s old", warned[0])
    assert "stale after 30 s" in warned[0]
    write_feed(setup.feed_path, feed_doc(setup.clock()))
    assert await refresher.refresh_once() == "ok"
    assert not rt.snapshot.stale and sample(metrics, "router_feed_stale") == 0
    assert any("fresh again" in r.getMessage() for r in caplog.records)


async def test_a_feed_that_ages_past_the_limit_is_logged_once(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    _, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    assert await refresher.refresh_once() == "ok"
    assert sample(metrics, "router_feed_stale") == 0
    setup.clock.offset = 31.0
    assert await refresher.check_staleness()
    assert not await refresher.check_staleness()
    assert sample(metrics, "router_feed_stale") == 1
    assert [r.levelno for r in caplog.records if "old" in r.getMessage()] == [logging.WARNING]


@pytest.mark.parametrize("via", ["file", "http", "grpc"])
async def test_the_same_bad_document_counts_invalid_at_every_poll(
        setup: Setup, server: FeedServer, via: str) -> None:
    url = {"file": f"file:{setup.feed_path}", "http": server.http_url,
           "grpc": server.grpc_url}[via]
    _, refresher, metrics = setup.make(url)
    assert await refresher.refresh_once() == "ok"
    write_feed(setup.feed_path, '{"version": 1, "generated_at": ')
    server.feed.reload()
    assert [await refresher.refresh_once() for _ in range(3)] == ["invalid"] * 3
    assert sample(metrics, "router_feed_refresh_total", result="invalid") == 3
    assert sample(metrics, "router_feed_refresh_total", result="unchanged") == 0
    write_feed(setup.feed_path, feed_doc(setup.clock() + 1))
    server.feed.reload()
    assert await refresher.refresh_once() == "ok"
    assert await refresher.refresh_once() == "unchanged"


async def test_a_zero_spot_price_is_refused_naming_where(setup: Setup) -> None:
    rt, refresher, _ = setup.make(f"file:{setup.feed_path}")
    assert await refresher.refresh_once() == "ok"
    good = rt.feed
    write_feed(setup.feed_path, feed_doc(setup.clock() + 1, price=0.0))
    assert await refresher.refresh_once() == "invalid"
    assert rt.feed is good
    assert refresher.last_error == ("invalid: prices[0].usd_per_hour: must be greater than 0, "
                                    "got 0.0")
