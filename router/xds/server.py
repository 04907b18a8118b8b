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

Guards: at most `max_streams` ADS streams (more are refused with
RESOURCE_EXHAUSTED and counted), a stream asking for a type this server does not
serve is ended with INVALID_ARGUMENT (nothing is kept for it), and each response
body is serialized once per publish and shared by every stream that asks the
same (only the nonce, appended as its own field, differs per stream), so a push
to thousands of subscribers costs one serialization, not thousands. What each
Envoy ACKed is kept in `router.xds.acks`, so the router names only endpoints
that Envoy has.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from router.core.table import Snapshot
from router.metrics import RouterMetrics
from router.xds.acks import AckBook
from router.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, Options, Resources, build

log = logging.getLogger("hybrid_router.xds")
ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE)
WILDCARD = (CLUSTER_TYPE,)  # SotW types sent whole whatever names are asked for
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
MAX_STREAMS = 256  # ADS streams per router process: one per Envoy, with room to spare
_MAX_BODIES = 64  # serialized bodies kept per publish (distinct type x names asked)


class UnknownType(Exception):
    """A request for a type URL this server does not serve."""


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
    id: int = 0


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves the latest published `Resources` to every Envoy on its ADS stream."""

    def __init__(self, resources: Resources, metrics: RouterMetrics | None = None, *,
                 max_streams: int = MAX_STREAMS, acks: AckBook | None = None) -> None:
        """Start with `resources` (the snapshot the router starts on); at most
        `max_streams` streams; what Envoys ACK goes into `acks`."""
        self._resources = resources
        self._packed = _pack(resources)
        self._bodies: dict[tuple[str, tuple[str, ...] | None], bytes] = {}
        self._streams: set[_Stream] = set()
        self._nonces = itertools.count(1)
        self._ids = itertools.count(1)
        self.max_streams = max_streams
        self.serializations = 0  # response bodies built (one per publish and names asked)
        self.acks = acks if acks is not None else AckBook()
        self.acks.published(resources)
        self.metrics = metrics

    @property
    def versions(self) -> dict[str, str]:
        """Version of each resource type now published."""
        return dict(self._resources.versions)

    @property
    def open_streams(self) -> int:
        """ADS streams open now."""
        return len(self._streams)

    def publish(self, resources: Resources) -> None:
        """Make `resources` current and wake every stream (call on the event loop)."""
        if resources.versions == self._resources.versions:
            return
        self._resources = resources
        self._packed = _pack(resources)
        self._bodies = {}
        self.acks.published(resources)
        self._gauge()
        for stream in self._streams:
            stream.wake.set()

    def add_to(self, server: Any) -> None:
        """Serve ADS on `server`, responses sent as the bytes `_due` shares among streams."""
        handler = grpc.stream_stream_rpc_method_handler(
            self.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=bytes)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"StreamAggregatedResources": handler}),))

    def follower(self, options: Options) -> Callable[[Snapshot], Callable[[], None]]:
        """A `Runtime.on_commit` listener: each snapshot's resources are built where it is
        prepared (a worker thread) and published once it is committed, so Envoy follows
        what the router routes."""
        return lambda snap: partial(self.publish, build(snap, options))

    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[Any],
                                        context: Any) -> AsyncIterator[Any]:
        """One Envoy's ADS stream: answer requests, push every publish."""
        if len(self._streams) >= self.max_streams:
            self._refused("limit")
            # the status set and the generator returned: abort() from a streaming handler
            # sometimes reached the client as INTERNAL instead
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(f"this router serves at most {self.max_streams} ADS streams")
            return
        stream = _Stream(id=next(self._ids))
        self._streams.add(stream)
        self._gauge()
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
            if not reader.cancelled() and isinstance(reader.exception(), UnknownType):
                self._refused("unknown_type")
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                context.set_details(str(reader.exception()))
        finally:
            self._streams.discard(stream)
            self.acks.closed(stream.node, stream.id)
            self._gauge()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            log.info("xds stream from %s closed", stream.node or "an unknown node")

    async def _read(self, requests: AsyncIterator[Any], stream: _Stream) -> None:
        async for req in requests:
            if req.type_url not in ORDER:
                raise UnknownType(f"type_url {req.type_url[:200]!r} is not served here; "
                                  f"ask for one of {', '.join(ORDER)}")
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
                self._held(stream, req.type_url, req.version_info)
            elif not req.response_nonce:  # a (re)connecting Envoy says what it already holds
                self._held(stream, req.type_url, req.version_info)
            if names != sub.names or not req.response_nonce:
                sub.names, sub.dirty = names, True
            stream.wake.set()

    def _held(self, stream: _Stream, type_url: str, version: str) -> None:
        if type_url in (CLUSTER_TYPE, ENDPOINT_TYPE) and stream.node:
            known = version if self.acks.known(type_url, version) else None
            self.acks.acked(stream.node, stream.id, type_url, known)
            self._gauge()

    def _due(self, stream: _Stream, type_url: str) -> bytes | None:
        sub = stream.subs.get(type_url)
        if sub is None:
            return None
        version = self._resources.versions.get(type_url, "")
        if not sub.dirty and (version == sub.sent or version == sub.nacked):
            return None
        packed = self._packed.get(type_url, {})
        chosen = None if type_url in WILDCARD or not sub.names else \
            tuple(sorted(n for n in sub.names if n in packed))
        body = self._bodies.get((type_url, chosen))
        if body is None:
            resources = [packed[n] for n in (sorted(packed) if chosen is None else chosen)]
            body = discovery_pb2.DiscoveryResponse(version_info=version, resources=resources,
                                                   type_url=type_url).SerializeToString()
            self.serializations += 1
            if len(self._bodies) >= _MAX_BODIES:
                self._bodies.clear()
            self._bodies[(type_url, chosen)] = body
        sub.sent, sub.dirty = version, False
        sub.nonce = str(next(self._nonces))
        self._count("sent")
        return body + _nonce_field(sub.nonce)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.xds_push.labels(result=result).inc()

    def _refused(self, reason: str) -> None:
        log.warning("xds stream refused: %s", reason)
        if self.metrics is not None:
            self.metrics.xds_refused.labels(reason=reason).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.xds_streams.set(len(self._streams))
            self.metrics.xds_synced.set(sum(self.acks.nodes().values()))


def _nonce_field(nonce: str) -> bytes:
    """DiscoveryResponse.nonce (field 5, length-delimited) on its own: protobuf merges
    fields appended to a serialized message, so a shared body plus this is the response."""
    raw = nonce.encode()
    length = len(raw)
    varint = bytearray()
    while length > 0x7F:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return b"\x2a" + bytes(varint) + raw


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
