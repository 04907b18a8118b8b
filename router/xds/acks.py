"""What each Envoy has applied over ADS, so the router names only endpoints that Envoy has.

Theory of operation
-------------------
`override_host` sends a request to the router's `x-route-target` only when that
address is a member of the named cluster *in Envoy's copy*; otherwise Envoy
silently picks another endpoint by ring hash (measured with Envoy 1.40). Envoy's
copy is what it last ACKed, which lags what the router publishes: by milliseconds
after a push, by Envoy's reconnect backoff after a router restart.

`AckBook` remembers the last few published versions (content hashes, the same in
every router process) with the cluster names and per-cluster endpoint addresses
each holds, and, per Envoy node id, the versions each of its ADS streams ACKed.
A node's `View` is what every stream of that node id is known to hold (several
Envoys sharing an id are held to the one that lags). An answer is allowed when
the view is current, or when its cluster and target are in the view. A node id
with no ADS stream known is unknown: that Envoy has applied nothing the router
knows of (it has not reconnected yet). With `--workers N` the workers share what
their streams ACKed (`router.xds.ackshare`): `mine` is what this worker's streams
hold, `others` what the other workers' do.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from envoy.config.endpoint.v3 import endpoint_pb2

from router import wire
from router.core.decision import Decision
from router.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, Resources

KEEP = 16  # published versions remembered: a stream ACKing an older one is treated as unknown


class View(NamedTuple):
    """What an Envoy node id holds: every cluster and endpoint, or the named ones."""

    current: bool
    clusters: frozenset[str]
    endpoints: Mapping[str, frozenset[str]]

    def allows(self, d: Decision) -> bool:
        """Whether Envoy can send `d` where the router says (cluster and target it holds)."""
        if self.current:
            return True
        if d.cluster is None or d.cluster not in self.clusters:
            return False
        if d.split_pool is not None and wire.pool_cluster(d.split_pool) not in self.clusters:
            return False
        members = self.endpoints.get(d.cluster)
        return members is None or d.target in members  # None: a STATIC pool cluster


NOTHING = View(False, frozenset(), {})


class Held(NamedTuple):
    """What one ADS stream of an Envoy node id ACKed (None: nothing known)."""

    node: str
    stream: int
    cds: str | None
    eds: str | None


def _addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> frozenset[str]:
    return frozenset(f"{e.endpoint.address.socket_address.address}:"
                     f"{e.endpoint.address.socket_address.port_value}"
                     for group in cla.endpoints for e in group.lb_endpoints)


class AckBook:
    """Published versions and, per Envoy node id, what its ADS streams ACKed."""

    def __init__(self, *, strict: bool = True) -> None:
        """`strict`: an Envoy with no ADS stream known holds nothing (one router process, or
        workers sharing their ACKs); otherwise it is not checked."""
        self.strict = strict
        self._clusters: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._endpoints: OrderedDict[str, dict[str, frozenset[str]]] = OrderedDict()
        self._current: tuple[str, str] = ("", "")
        self._acked: dict[str, dict[int, tuple[str | None, str | None]]] = {}
        self._others: dict[str, dict[int, tuple[str | None, str | None]]] = {}
        self._views: dict[str, View] = {}
        self.changed = asyncio.Event()  # set when this process's streams ACK or close

    def published(self, resources: Resources) -> None:
        """Remember a published set; every view is re-judged against it."""
        cds = resources.versions.get(CLUSTER_TYPE, "")
        eds = resources.versions.get(ENDPOINT_TYPE, "")
        _remember(self._clusters, cds, frozenset(resources.by_type.get(CLUSTER_TYPE, {})))
        _remember(self._endpoints, eds, {name: _addresses(cla) for name, cla in
                                         resources.by_type.get(ENDPOINT_TYPE, {}).items()})
        self._current = (cds, eds)
        self._views = {node: self._view(node) for node in self._acked.keys() | self._others}

    def known(self, type_url: str, version: str) -> bool:
        """Whether `version` of `type_url` is one this book remembers."""
        book: Mapping[str, Any] = self._clusters if type_url == CLUSTER_TYPE else self._endpoints
        return version in book

    def acked(self, node: str, stream: int, type_url: str, version: str | None) -> None:
        """Stream `stream` of Envoy `node` holds `version` of `type_url` (None: unknown)."""
        cds, eds = self._acked.setdefault(node, {}).get(stream, (None, None))
        pair = (version, eds) if type_url == CLUSTER_TYPE else (cds, version)
        self._acked[node][stream] = pair
        self._views[node] = self._view(node)
        self.changed.set()

    def closed(self, node: str, stream: int) -> None:
        """Stream `stream` of `node` ended."""
        streams = self._acked.get(node, {})
        streams.pop(stream, None)
        if not streams:
            self._acked.pop(node, None)
        self._judge(node)
        self.changed.set()

    def mine(self) -> list[Held]:
        """What this process's ADS streams ACKed, a row per stream."""
        return [Held(node, stream, cds, eds) for node, streams in self._acked.items()
                for stream, (cds, eds) in streams.items()]

    def others(self, rows: Iterable[Held]) -> None:
        """What the other workers' ADS streams ACKed now (replaces what they said before)."""
        before = self._others
        self._others = {}
        for row in rows:
            self._others.setdefault(row.node, {})[row.stream] = (row.cds, row.eds)
        for node in before.keys() | self._others.keys():
            if before.get(node) != self._others.get(node):
                self._judge(node)

    def view(self, node: str) -> View | None:
        """What `node` holds; None when it need not be checked (unknown, not strict)."""
        found = self._views.get(node)
        if found is None:
            return NOTHING if self.strict else None
        return found

    def nodes(self) -> dict[str, bool]:
        """Each Envoy node id with an ADS stream here, and whether it holds the current set."""
        return {node: self._views[node].current for node in self._acked}

    def _judge(self, node: str) -> None:
        if node in self._acked or node in self._others:
            self._views[node] = self._view(node)
        else:
            self._views.pop(node, None)

    def _view(self, node: str) -> View:
        streams = {**self._acked.get(node, {}),
                   **{-1 - k: v for k, v in self._others.get(node, {}).items()}}
        if all(pair == self._current for pair in streams.values()):
            return View(True, frozenset(), {})
        clusters = _meet(self._clusters.get(c) if c else None for c, _ in streams.values())
        held = [self._endpoints.get(e) if e else None for _, e in streams.values()]
        first = held[0]
        if first is None or any(h is None for h in held):
            return NOTHING
        endpoints = dict(first)
        for other in held[1:]:
            assert other is not None
            endpoints = {n: m & other[n] for n, m in endpoints.items() if n in other}
        return View(False, clusters, endpoints)

def _meet(sets: Iterable[frozenset[str] | None]) -> frozenset[str]:
    out: frozenset[str] | None = None
    for s in sets:
        if s is None:
            return frozenset()
        out = s if out is None else out & s
    return out or frozenset()


def _remember(book: OrderedDict[str, Any], version: str, value: Any) -> None:
    book[version] = value
    book.move_to_end(version)
    while len(book) > KEEP:
        book.popitem(last=False)
