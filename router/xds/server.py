"""Aggregated Discovery Service (ADS, state of the world) for Envoy's inference clusters.

Theory of operation
-------------------
`publish` replaces the whole resource set (built off the event loop by
`router.xds.resources.build`) and wakes every open stream. Each stream keeps,
per type, what Envoy subscribed to and the version it last sent; after a
publish it sends every subscribed type whose version moved, clusters first,
then endpoints, then routes, so a route never names a cluster Envoy has not
been told about yet. Versions are content hashes, the same in every router
process, so `--workers N` processes answering one Envoy in turn agree.

Envoy acknowledges with the version and nonce it applied; a NACK (an
`error_detail`) is logged and counted, and that version is not sent again on
that stream. When the router goes away Envoy keeps the last resources it
accepted (Envoy's own behaviour) and reconnects with backoff; the first
request on the new stream gets the current set. Clusters and the route table
are sent whole (SotW); endpoints and routes as the resource names Envoy asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from router.metrics import RouterMetrics
from router.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, Resources

log = logging.getLogger("hybrid_router.xds")
ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE)
WILDCARD = (CLUSTER_TYPE,)  # SotW types sent whole whatever names are asked for


@dataclass
class _Sub:
    """One type on one stream: what Envoy asked for and what it was last sent."""

    names: frozenset[str] = frozenset()
    sent: str | None = None  # version last sent
    nonce: str = ""
    nacked: str | None = None  # version Envoy refused; not resent on this stream
    dirty: bool = True  # names changed or first request: send even if the version did not


@dataclass(eq=False)  # identity: each open stream is its own entry in the set
class _Stream:
    subs: dict[str, _Sub] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    node: str = ""


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves the latest published `Resources` to every Envoy on its ADS stream."""

    def __init__(self, resources: Resources, metrics: RouterMetrics | None = None) -> None:
        """Start with `resources` (the snapshot the router starts on)."""
        self._resources = resources
        self._packed = _pack(resources)
        self._streams: set[_Stream] = set()
        self._nonces = itertools.count(1)
        self.metrics = metrics

    @property
    def versions(self) -> dict[str, str]:
        """Version of each resource type now published."""
        return dict(self._resources.versions)

    def publish(self, resources: Resources) -> None:
        """Make `resources` current and wake every stream (call on the event loop)."""
        if resources.versions == self._resources.versions:
            return
        self._resources = resources
        self._packed = _pack(resources)
        for stream in self._streams:
            stream.wake.set()

    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[Any],
                                        context: Any) -> AsyncIterator[Any]:
        """One Envoy's ADS stream: answer requests, push every publish."""
        stream = _Stream()
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(request_iterator, stream))
        try:
            while not reader.done():
                for type_url in ORDER:
                    response = self._due(stream, type_url)
                    if response is not None:
                        yield response
                waiter = asyncio.create_task(stream.wake.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stream.wake.clear()
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            log.info("xds stream from %s closed", stream.node or "an unknown node")

    async def _read(self, requests: AsyncIterator[Any], stream: _Stream) -> None:
        async for req in requests:
            if req.node.id:
                stream.node = req.node.id
            sub = stream.subs.setdefault(req.type_url, _Sub())
            names = frozenset(req.resource_names)
            if req.error_detail.message:
                sub.nacked = sub.sent
                self._count("nack")
                log.error("envoy %s refused %s version %s: %s", stream.node, req.type_url,
                          sub.sent, req.error_detail.message)
            elif req.response_nonce and req.response_nonce == sub.nonce:
                self._count("ack")
            if names != sub.names or not req.response_nonce:
                sub.names, sub.dirty = names, True
            stream.wake.set()

    def _due(self, stream: _Stream, type_url: str) -> Any | None:
        sub = stream.subs.get(type_url)
        if sub is None:
            return None
        version = self._resources.versions.get(type_url, "")
        if not sub.dirty and (version == sub.sent or version == sub.nacked):
            return None
        packed = self._packed.get(type_url, {})
        if type_url in WILDCARD or not sub.names:
            chosen = [packed[n] for n in sorted(packed)]
        else:
            chosen = [packed[n] for n in sorted(sub.names) if n in packed]
        sub.sent, sub.dirty = version, False
        sub.nonce = str(next(self._nonces))
        self._count("sent")
        return discovery_pb2.DiscoveryResponse(version_info=version, resources=chosen,
                                               type_url=type_url, nonce=sub.nonce)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.xds_push.labels(result=result).inc()


def _pack(resources: Resources) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for type_url, messages in resources.by_type.items():
        packed = {}
        for name, message in messages.items():
            box = any_pb2.Any()
            box.Pack(message)
            packed[name] = box
        out[type_url] = packed
    return out
