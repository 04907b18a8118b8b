"""The xDS resources a snapshot compiles to, and the ADS protocol over a real gRPC channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from router import wire
from router.core.feedsnapshot import NodeState
from router.metrics import RouterMetrics
from router.xds import resources as xds
from router.xds.server import AdsServer
from tests.core.factory import feed, node, policy, pool, table

FLEET = policy([node(0, residency=["GDPR"], weight=2.0), node(1, residency=["GDPR", "CCPA"]),
                node(2, residency=["CCPA"])], [pool("eu", port=9901, residency=["GDPR"])])


def addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> dict[str, int]:
    return {f"{e.endpoint.address.socket_address.address}:"
            f"{e.endpoint.address.socket_address.port_value}": e.load_balancing_weight.value
            for group in cla.endpoints for e in group.lb_endpoints}


def test_one_edge_cluster_per_residency_requirement_with_only_satisfying_nodes() -> None:
    res = xds.build(table(FLEET))
    eds = res.by_type[xds.ENDPOINT_TYPE]
    assert set(eds) == {"edge.any", "edge.GDPR", "edge.CCPA", "edge.CCPA+GDPR"}
    assert set(addresses(eds["edge.GDPR"])) == {"127.0.0.1:10000", "127.0.0.1:10001"}
    assert set(addresses(eds["edge.CCPA+GDPR"])) == {"127.0.0.1:10001"}
    assert set(addresses(eds["edge.any"])) == {f"127.0.0.1:1000{i}" for i in range(3)}
    assert addresses(eds["edge.GDPR"])["127.0.0.1:10000"] == 200  # effective weight x 100
    clusters = res.by_type[xds.CLUSTER_TYPE]
    assert set(clusters) == set(eds) | {"cloud.eu"}
    cloud = clusters["cloud.eu"]
    assert cloud.type == cluster_pb2.Cluster.STATIC
    assert set(addresses(cloud.load_assignment)) == {"127.0.0.1:9901"}
    for name in eds:
        assert clusters[name].type == cluster_pb2.Cluster.EDS


def test_feed_health_and_weights_reach_the_endpoints_and_the_version() -> None:
    first = xds.build(table(FLEET))
    changed = xds.build(table(FLEET, feed({"n0000": NodeState(healthy=False),
                                           "n0002": NodeState(compute_score=0.5)})))
    eds = changed.by_type[xds.ENDPOINT_TYPE]
    assert "127.0.0.1:10000" not in addresses(eds["edge.GDPR"])  # unhealthy: not a target
    assert addresses(eds["edge.CCPA"])["127.0.0.1:10002"] == 50
    assert changed.versions[xds.ENDPOINT_TYPE] != first.versions[xds.ENDPOINT_TYPE]
    assert changed.versions[xds.CLUSTER_TYPE] == first.versions[xds.CLUSTER_TYPE]
    again = xds.build(table(FLEET))
    assert again.versions == first.versions  # content hashes: every process agrees


def _routes(res: xds.Resources) -> list[Any]:
    config: route_pb2.RouteConfiguration = res.by_type[xds.ROUTE_TYPE][xds.ROUTE_CONFIG]
    return list(config.virtual_hosts[0].routes)


def test_route_table_order_router_answer_then_fail_open_then_refusal() -> None:
    routes = _routes(xds.build(table(FLEET)))
    names = [r.name for r in routes]
    assert names[0] == "router-answer"
    assert routes[0].route.cluster_header == wire.H_CLUSTER
    assert names[-1] == "fail-open:residency-unserved"
    assert routes[-1].direct_response.status == 503
    fail_open = {r.route.cluster for r in routes if r.name.startswith("fail-open:edge")}
    assert fail_open == {"edge.any", "edge.GDPR", "edge.CCPA", "edge.CCPA+GDPR"}
    assert not any(r.route.cluster.startswith("cloud.") for r in routes)


def test_default_residency_without_an_edge_node_is_refused_in_fail_open() -> None:
    pol = FLEET.model_copy(update={"defaults": FLEET.defaults.model_copy(
        update={"residency": frozenset({"HIPAA"})})})
    routes = _routes(xds.build(table(pol)))
    assert "fail-open:default-residency-unserved" in [r.name for r in routes]
    assert "fail-open:edge.any" not in [r.name for r in routes]


def test_fail_open_routes_add_the_residency_floor_never_lower_it() -> None:
    from router.core.policy import BudgetConfig, Defaults, TenantBudget

    pinned = TenantBudget(limit_usd=1, residency=frozenset({"CCPA"}))
    pol = FLEET.model_copy(update={
        "defaults": Defaults(residency=frozenset({"GDPR"})),
        "budgets": BudgetConfig(tenants={"acme": pinned})}).with_digest("t")
    routes = _routes(xds.build(table(pol)))
    acme = [r for r in routes if any(h.name == wire.H_TENANT for h in r.match.headers)]
    anyone = [r for r in routes if r not in acme and r.name.startswith("fail-open:")
              and not r.name.endswith("in-json")]
    # every route Envoy takes alone goes to a cluster holding the floor, or refuses
    assert {r.route.cluster for r in anyone if r.route.cluster} == {"edge.GDPR",
                                                                    "edge.CCPA+GDPR"}
    assert {r.route.cluster for r in acme if r.route.cluster} == {"edge.CCPA+GDPR"}
    assert all(h.string_match.exact == "acme" for r in acme for h in r.match.headers
               if h.name == wire.H_TENANT)
    assert routes.index(acme[-1]) < routes.index(anyone[0])  # the tenant's routes come first


def test_static_options_inline_the_endpoints() -> None:
    res = xds.build(table(FLEET), xds.Options(xds=False))
    assert res.by_type[xds.ENDPOINT_TYPE] == {}
    gdpr = res.by_type[xds.CLUSTER_TYPE]["edge.GDPR"]
    assert gdpr.type == cluster_pb2.Cluster.STATIC
    assert set(addresses(gdpr.load_assignment)) == {"127.0.0.1:10000", "127.0.0.1:10001"}


class Envoy:
    """A scripted ADS client: sends requests, reads responses."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) \
            .StreamAggregatedResources(self._requests())

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            item = await self.out.get()
            if item is None:
                return
            yield item

    async def ask(self, type_url: str, names: tuple[str, ...] = (), version: str = "",
                  nonce: str = "", error: str = "") -> None:
        await self.out.put(discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version,
            response_nonce=nonce, node={"id": "test-envoy"},
            error_detail=status_pb2.Status(code=3, message=error) if error else None))

    async def read(self, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.call.read(), timeout)


@contextlib.asynccontextmanager
async def serving(impl: AdsServer) -> AsyncIterator[grpc.aio.Channel]:
    """`impl` on a real gRPC server; a channel to it."""
    server = grpc.aio.server()
    impl.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
async def ads() -> AsyncIterator[tuple[AdsServer, grpc.aio.Channel, RouterMetrics]]:
    metrics = RouterMetrics()
    server_impl = AdsServer(xds.build(table(FLEET)), metrics)
    async with serving(server_impl) as channel:
        yield server_impl, channel, metrics


def counted(metrics: RouterMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("router_xds_push_total", {"result": result})
    return value or 0.0


async def test_subscribe_ack_push_and_nack(ads: tuple[AdsServer, grpc.aio.Channel,
                                                      RouterMetrics]) -> None:
    server, channel, metrics = ads
    envoy = Envoy(channel)
    await envoy.ask(xds.CLUSTER_TYPE)
    cds = await envoy.read()
    assert cds.type_url == xds.CLUSTER_TYPE and len(cds.resources) == 5
    await envoy.ask(xds.CLUSTER_TYPE, version=cds.version_info, nonce=cds.nonce)  # ACK
    await envoy.ask(xds.ENDPOINT_TYPE, ("edge.GDPR",))
    eds = await envoy.read()
    assert [r.type_url for r in eds.resources] == [xds.ENDPOINT_TYPE]
    cla = endpoint_pb2.ClusterLoadAssignment()
    eds.resources[0].Unpack(cla)
    assert cla.cluster_name == "edge.GDPR"
    await envoy.ask(xds.ENDPOINT_TYPE, ("edge.GDPR",), version=eds.version_info, nonce=eds.nonce)
    for _ in range(100):  # both ACKs seen before the next publish
        if counted(metrics, "ack") == 2:
            break
        await asyncio.sleep(0.02)
    assert counted(metrics, "ack") == 2
    # a feed refresh marks a node down: endpoints are pushed, clusters are not (unchanged)
    server.publish(xds.build(table(FLEET, feed({"n0001": NodeState(healthy=False)}))))
    pushed = await envoy.read()
    assert pushed.type_url == xds.ENDPOINT_TYPE and pushed.version_info != eds.version_info
    pushed.resources[0].Unpack(cla)
    assert set(addresses(cla)) == {"127.0.0.1:10000"}
    # Envoy refuses it: counted, and the same version is not sent again on this stream
    await envoy.ask(xds.ENDPOINT_TYPE, ("edge.GDPR",), version=eds.version_info,
                    nonce=pushed.nonce, error="bad endpoint")
    with pytest.raises(TimeoutError):
        await envoy.read(timeout=0.5)
    assert counted(metrics, "nack") == 1
    await envoy.out.put(None)


async def test_a_new_stream_gets_the_current_resources(ads: tuple[AdsServer, grpc.aio.Channel,
                                                                  RouterMetrics]) -> None:
    server, channel, _ = ads
    latest = xds.build(table(policy([node(7, residency=["GDPR"])])))
    server.publish(latest)
    envoy = Envoy(channel)
    await envoy.ask(xds.ROUTE_TYPE, (xds.ROUTE_CONFIG,))
    rds = await envoy.read()
    assert rds.version_info == latest.versions[xds.ROUTE_TYPE]
    await envoy.ask(xds.CLUSTER_TYPE)
    cds = await envoy.read()
    names = set()
    for r in cds.resources:
        c = cluster_pb2.Cluster()
        r.Unpack(c)
        names.add(c.name)
    assert names == {"edge.any", "edge.GDPR"}
    await envoy.out.put(None)
