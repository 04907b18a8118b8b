"""Exact in-flight counts per node and pool, stable across table rebuilds.

Every target gets a slot the first time it is seen and keeps it for the life of
the process, so a request admitted under one table is released on the same
counter after a newer table has been swapped in. Groups (the eligible node set
of a request class) keep running totals so the bounded-load cap needs no sum
over nodes on the request path.

With capacity leases (`router.core.capacity`) each slot also has `held`, the
most this router may have in flight there (its lease; UNLEASED when no lease
limits it), set by the capacity keeper's thread, and `blocked`, how many
requests admission saw the walk pass it for want of lease since the keeper last
looked (with what is in flight, this router's demand for it). `arrivals` counts,
per node, the requests whose key's home it was (`router.core.shed` turns the
count between two refreshes into the shares of keys the node keeps); `ended`, the
requests that ended on each slot (`router.core.outliers` weighs failures against it).
`uplink_bytes` is the whole payloads of this router's cloud requests in flight: each crosses
the gateway's uplink, so a new one waits behind them (`router.core.estimate.cloud`).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_GROUPS = 4096
UNLEASED = 1 << 30  # `held` of a slot no lease limits


class LoadTracker:
    """In-flight counters by slot, plus running totals per group of slots."""

    def __init__(self) -> None:
        """Start with no targets."""
        self._slot_of: dict[str, int] = {}
        self.names: list[str] = []
        self.loads: list[int] = []
        self._node_groups: list[list[int]] = []
        self._group_of: dict[tuple[int, ...], int] = {}
        self._group_members: list[tuple[int, ...]] = []
        self.group_totals: list[int] = []
        self.held: list[int] = []
        self.blocked: list[int] = []
        self.arrivals: list[int] = []
        self.ended: list[int] = []
        # of those: the requests that cannot degrade; the requests whose class meets its SLO off
        # the edge (router.core.shed sheds those first), and of them those that cannot degrade
        self.rigid: list[int] = []
        self.loose: list[int] = []
        self.loose_rigid: list[int] = []
        self.default_held = UNLEASED  # `held` of a slot allocated from now on
        self.uplink_bytes = 0  # whole payloads of cloud requests in flight (the gateway's uplink)

    def slot(self, name: str) -> int:
        """The slot of target `name`, allocated on first use."""
        slot = self._slot_of.get(name)
        if slot is None:
            slot = len(self.loads)
            self._slot_of[name] = slot
            self.names.append(name)
            self.loads.append(0)
            self.held.append(self.default_held)
            self.blocked.append(0)
            self.arrivals.append(0)
            self.ended.append(0)
            self.rigid.append(0)
            self.loose.append(0)
            self.loose_rigid.append(0)
            self._node_groups.append([])
        return slot

    def load(self, name: str) -> int:
        """Current in-flight count of `name` (0 if never seen)."""
        slot = self._slot_of.get(name)
        return 0 if slot is None else self.loads[slot]

    def group(self, slots: Iterable[int]) -> int:
        """Id of the group of `slots` (registered once), or -1 past MAX_GROUPS."""
        members = tuple(sorted(set(slots)))
        gid = self._group_of.get(members)
        if gid is not None:
            return gid
        if len(self._group_members) >= MAX_GROUPS:
            return -1
        gid = len(self._group_members)
        self._group_of[members] = gid
        self._group_members.append(members)
        self.group_totals.append(sum(self.loads[s] for s in members))
        for s in members:
            self._node_groups[s].append(gid)
        return gid

    def total(self, gid: int, members: Iterable[int]) -> int:
        """Total in-flight over a group (falls back to a sum when unregistered)."""
        if gid >= 0:
            return self.group_totals[gid]
        return sum(self.loads[s] for s in members)

    def acquire(self, slot: int) -> None:
        """One more request in flight on `slot`."""
        self.loads[slot] += 1
        totals = self.group_totals
        for gid in self._node_groups[slot]:
            totals[gid] += 1

    def arrive(self, slot: int, rigid: bool = False, loose: bool = False) -> None:
        """One more request whose key's home is the node counted on `slot`; `rigid`: it
        cannot degrade, `loose`: its class meets its SLO off the edge."""
        self.arrivals[slot] += 1
        if rigid:
            self.rigid[slot] += 1
        if loose:
            self.loose[slot] += 1
            if rigid:
                self.loose_rigid[slot] += 1

    def release(self, slot: int) -> None:
        """One request on `slot` ended; never goes below zero."""
        if self.loads[slot] <= 0:
            raise RuntimeError(f"release of {self.names[slot]} with nothing in flight")
        self.loads[slot] -= 1
        self.ended[slot] += 1
        totals = self.group_totals
        for gid in self._node_groups[slot]:
            totals[gid] -= 1

    def lease_all(self) -> None:
        """From now on every slot admits only within a lease (none held yet)."""
        self.default_held = 0
        for slot in range(len(self.held)):
            self.held[slot] = 0

    def snapshot(self) -> dict[str, int]:
        """Current in-flight count by target name."""
        return dict(zip(self.names, self.loads, strict=True))
