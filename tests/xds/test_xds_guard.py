"""The ADS server guarded (issue 20, items 4 and 6): bounded and counted streams, unknown types
refused, one serialization per push shared by every subscriber, and what each Envoy ACKed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from router.core.decision import Decision
from router.core.feedsnapshot import NodeState
from router.metrics import RouterMetrics
from router.xds import resources as xds
from router.xds.acks import AckBook
from router.xds.server import AdsServer
from tests.core.factory import feed, table
from tests.xds.test_xds import FLEET, Envoy, addresses, counted, serving

GDPR = "edge.GDPR"


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[AdsServer, grpc.aio.Channel, RouterMetrics]]:
    metrics = RouterMetrics()
    impl = AdsServer(xds.build(table(FLEET)), metrics, max_streams=3)
    async with serving(impl) as channel:
        yield impl, channel, metrics


def sample(metrics: RouterMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_an_unknown_type_url_ends_the_stream_and_keeps_nothing(
        guarded: tuple[AdsServer, grpc.aio.Channel, RouterMetrics]) -> None:
    server, channel, metrics = guarded
    envoy = Envoy(channel)
    await envoy.ask("type.googleapis.com/made.up.Secret")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await envoy.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "made.up.Secret" in str(refused.value.details())
    assert sample(metrics, "router_xds_refused_total", reason="unknown_type") == 1
    assert server.open_streams == 0


async def test_streams_past_the_bound_are_refused_and_counted(
        guarded: tuple[AdsServer, grpc.aio.Channel, RouterMetrics]) -> None:
    server, channel, metrics = guarded
    held = [Envoy(channel) for _ in range(3)]
    for envoy in held:
        await envoy.ask(xds.CLUSTER_TYPE)
        await envoy.read()
    assert server.open_streams == 3 and sample(metrics, "router_xds_streams") == 3
    extra = Envoy(channel)
    await extra.ask(xds.CLUSTER_TYPE)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await extra.read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sample(metrics, "router_xds_refused_total", reason="limit") == 1
    for envoy in held:
        await envoy.out.put(None)


async def test_a_push_is_serialized_once_for_every_subscriber() -> None:
    impl = AdsServer(xds.build(table(FLEET)), max_streams=100)
    async with serving(impl) as channel:
        envoys = [Envoy(channel) for _ in range(60)]
        for envoy in envoys:
            await envoy.ask(xds.ENDPOINT_TYPE, (GDPR,))
        first = [await envoy.read() for envoy in envoys]
        assert impl.serializations == 1 and len({r.nonce for r in first}) == 60
        for envoy, r in zip(envoys, first, strict=True):
            await envoy.ask(xds.ENDPOINT_TYPE, (GDPR,), version=r.version_info, nonce=r.nonce)
        impl.publish(xds.build(table(FLEET, feed({"n0001": NodeState(healthy=False)}))))
        pushed = [await envoy.read() for envoy in envoys]
        assert impl.serializations == 2  # 60 subscribers, one body per publish
        assert len({r.nonce for r in pushed}) == 60
        for r in pushed:  # each one whole: the shared body plus that stream's nonce
            got = endpoint_pb2.ClusterLoadAssignment()
            assert r.version_info != first[0].version_info
            r.resources[0].Unpack(got)
            assert set(addresses(got)) == {"127.0.0.1:10000"}
        for envoy in envoys:
            await envoy.out.put(None)


def decision(cluster: str, target: str, split_pool: str | None = None) -> Decision:
    return Decision(200, "edge", "affinity", "p", target=target, node="n", cluster=cluster,
                    split_pool=split_pool)


def test_an_envoy_holds_what_it_acked_until_it_acks_the_next_set() -> None:
    old = xds.build(table(FLEET))
    new = xds.build(table(FLEET, feed({"n0000": NodeState(healthy=False)})))
    book = AckBook()
    book.published(old)
    assert book.view("e1") is not None and not book.view("e1").allows(  # type: ignore[union-attr]
        decision(GDPR, "127.0.0.1:10000"))  # never seen: holds nothing
    book.acked("e1", 1, xds.CLUSTER_TYPE, old.versions[xds.CLUSTER_TYPE])
    book.acked("e1", 1, xds.ENDPOINT_TYPE, old.versions[xds.ENDPOINT_TYPE])
    assert book.view("e1").current and book.nodes() == {"e1": True}  # type: ignore[union-attr]
    book.published(new)  # n0000 down, n0001 stays: e1 still holds the old endpoints
    view = book.view("e1")
    assert view is not None and not view.current
    assert view.allows(decision(GDPR, "127.0.0.1:10001"))
    assert not view.allows(decision("edge.nowhere", "127.0.0.1:10001"))
    assert not view.allows(decision(GDPR, "127.0.0.1:10002"))  # not a GDPR member it holds
    assert view.allows(decision("cloud.eu", "127.0.0.1:9901"))
    assert not view.allows(decision(GDPR, "127.0.0.1:10001", split_pool="mars"))
    book.acked("e1", 2, xds.ENDPOINT_TYPE, None)  # a second Envoy on the id, unknown version
    assert not book.view("e1").allows(decision(GDPR, "127.0.0.1:10001"))  # type: ignore
    book.closed("e1", 2)
    book.closed("e1", 1)
    assert book.nodes() == {}
    assert AckBook(strict=False).view("e1") is None  # another worker may hold its stream


def test_the_bytes_on_the_wire_parse_as_the_response_with_its_nonce() -> None:
    from router.xds.server import _nonce_field

    body = discovery_pb2.DiscoveryResponse(version_info="v", type_url="t").SerializeToString()
    for nonce in ("1", "x" * 200):
        r = discovery_pb2.DiscoveryResponse.FromString(body + _nonce_field(nonce))
        assert (r.version_info, r.type_url, r.nonce) == ("v", "t", nonce)


async def test_a_reconnecting_envoy_that_holds_the_current_set_is_synced_at_once(
        guarded: tuple[AdsServer, grpc.aio.Channel, RouterMetrics]) -> None:
    server, channel, metrics = guarded
    envoy = Envoy(channel)
    await envoy.ask(xds.CLUSTER_TYPE, version=server.versions[xds.CLUSTER_TYPE])
    await envoy.ask(xds.ENDPOINT_TYPE, (GDPR,), version=server.versions[xds.ENDPOINT_TYPE])
    for _ in range(100):
        if server.acks.nodes() == {"test-envoy": True}:
            break
        await asyncio.sleep(0.02)
    assert server.acks.nodes() == {"test-envoy": True}
    assert sample(metrics, "router_xds_synced_envoys") == 1
    assert counted(metrics, "ack") == 0
    await envoy.out.put(None)
