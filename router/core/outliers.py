"""Passive health: an edge node whose requests fail is taken out of the ring for a while.

Theory of operation
-------------------
The feed says a node is unhealthy at its next reading, every `refresh_seconds` (30 by
default). Until then every request a dead node's keys send it fails: at once when its
host refuses connections, at the upstream timeout when it answers nothing. Envoy knows
first, and says so off the request path: its access log service streams each failed
request's entry to the router (`router.server.accesslog`; the simulator reports the same
failures from its world). `Outliers` counts them per node in tumbling windows of
`interval_s`, beside the requests that ended on the node in that window (the load tracker
counts every end, so a failure's share needs no report of the successes):

- a node with at least `failures` failures in a window, and at least `failure_fraction`
  of the requests that ended on it, is ejected: weight 0 on the ring, as if the feed had
  read it unhealthy, so its keys are homed on the others at the next table build;
- it stays out `eject_s`, doubled for each ejection in a row (ejected again within
  `max_eject_s` of coming back), at most `max_eject_s`; then it is back in the ring, and
  a new feed reading cannot bring it back sooner, as a feed can be older than the failures;
- never more than `max_ejected_fraction` of the nodes with any one residency tag of the
  failing node (of all nodes, for a node with none) are out at once, as Envoy bounds its
  ejections per cluster and the generated config has a cluster per residency: a failure of
  every node (a bad model push, the gateway's own uplink) is not fixed by emptying the ring,
  and a residency's requests must still have somewhere to go; past it, a failing node stays in.

State changes only when a failure is reported (`failed`) or time passes (`expire`), each
saying whether the set of ejected nodes changed: the runtime rebuilds its table then (the
server off the request path, at once after an ejection and within a second of a return).
A 5xx a node answers itself counts as a failure, as in Envoy's outlier detection: a node
that answers every request with an error is as lost to its keys as one that is down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from router.core.policy import OutlierConfig

# per node: (window start, the node's ends before the window, failures in the window)
Window = tuple[float, int, int]


class Outliers:
    """Failures per edge node, and the nodes they have taken out of the ring until when."""

    def __init__(self) -> None:
        """No failures seen, nothing out."""
        self._windows: dict[str, Window] = {}
        self._out: dict[str, float] = {}  # node -> when it is back
        self._streak: dict[str, tuple[int, float]] = {}  # node -> (ejections in a row, back at)
        self.ejections = 0  # every ejection so far (a counter for metrics)
        self.held_in = 0  # ejections `max_ejected_fraction` refused

    def ejected(self) -> frozenset[str]:
        """The nodes out of the ring now."""
        return frozenset(self._out)

    def next_back(self) -> float:
        """When the first node out comes back (inf: none is out)."""
        return min(self._out.values(), default=math.inf)

    def until(self, node: str) -> float | None:
        """When `node` is back in the ring (None: it is not out)."""
        return self._out.get(node)

    def failed(self, node: str, ended: int, peers: Callable[[], Sequence[frozenset[str]]],
               cfg: OutlierConfig, now: float) -> bool:
        """A request on edge node `node` failed at `now`, `ended` the requests that have ended
        on it so far (that one included), `peers()` the nodes sharing each of its residency
        tags (all nodes, for a node with none; asked only once the failures would take it
        out); True: this failure took the node out of the ring."""
        if cfg.failures <= 0 or node in self._out:
            return False
        start, before, count = self._windows.get(node, (now, ended - 1, 0))
        if now - start >= cfg.interval_s:
            start, before, count = now, ended - 1, 0
        count += 1
        self._windows[node] = (start, before, count)
        if count < cfg.failures or count < cfg.failure_fraction * max(ended - before, count):
            return False
        if any(len(group & self._out.keys()) + 1 > cfg.max_ejected_fraction * len(group)
               for group in peers()):
            self.held_in += 1
            return False
        row, back = self._streak.get(node, (0, -math.inf))
        row = row + 1 if now - back <= cfg.max_eject_s else 1
        self._streak[node] = (row, back)
        # the exponent bounded: a node failing for days must not overflow the float
        self._out[node] = now + min(cfg.eject_s * 2.0 ** min(row - 1, 64), cfg.max_eject_s)
        del self._windows[node]
        self.ejections += 1
        return True

    def expire(self, now: float) -> bool:
        """Bring back every node whose time out has passed; True: some came back."""
        back = [node for node, until in self._out.items() if until <= now]
        for node in back:
            del self._out[node]
            row, _ = self._streak.get(node, (1, now))
            self._streak[node] = (row, now)
        return bool(back)

    def forget(self, keep: frozenset[str]) -> None:
        """Drop every node not in `keep` (a policy reload removed it)."""
        for table in (self._windows, self._out, self._streak):
            for node in [n for n in table if n not in keep]:
                del table[node]
