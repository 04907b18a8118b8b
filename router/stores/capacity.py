"""Where capacity leases live: Redis for a fleet, a SQLite file for the workers of one host.

Each backend applies `router.core.capacity.settle` to every resource a router
asks about, atomically and in one call (a Lua script in Redis, an IMMEDIATE
transaction in SQLite), renews the router's heartbeat and counts the live
routers (the fleet's membership, which budget shares follow too). A router
whose heartbeat is older than the TTL is dead: its leases no longer count and
are dropped by the next call that meets them. Heartbeats run on a clock that
stops while no router reaches the store at all (a gap over TTL/2 between
calls), so an outage every router saw kills no one. `release` gives a router's
leases back at once (a clean exit).

Both raise `StoreDown` when the store does not answer; the keeper
(`router.stores.capkeeper`) handles that.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.core.capacity import settle
from router.stores import capacity_lua
from router.stores.keeper import StoreDown

DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
FORGET_S = 3600.0  # a dead router's heartbeat is kept this long, then forgotten


@dataclass(frozen=True, slots=True)
class Ask:
    """One resource in a sync: its capacity, what the router keeps and its demand."""

    name: str
    capacity: int
    keep: int
    demand: int


@dataclass(frozen=True, slots=True)
class Grant:
    """The store's answer for one resource."""

    lease: int  # what the store now holds for this router
    target: int  # its max-min fair share
    leased: int  # held by every live router together


class CapacityBackend(Protocol):
    """What the capacity keeper needs of a store."""

    kind: str

    def sync(self, member: str, ttl: float, asks: list[Ask]) -> tuple[int, list[Grant]]:
        """(live routers, a grant per ask); StoreDown when the store does not answer."""
        ...

    def release(self, member: str, names: list[str]) -> None:
        """Give back every lease of `member` on `names` and leave the fleet."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class RedisCapacity:
    """Capacity leases in Redis, the budget store's Redis (`budgets.store`)."""

    kind = "redis"

    def __init__(self, url: str, *, timeout: float = 0.25, prefix: str = "hr:cap") -> None:
        """Connect lazily to `url` (no query options: the budget store's are removed)."""
        self.url = url
        self.prefix = f"{prefix}:{{{prefix}}}:"  # one hash tag: one slot in a cluster
        self._r = redis.Redis.from_url(url, socket_timeout=timeout,
                                       socket_connect_timeout=timeout,
                                       retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        self._sync = self._r.register_script(capacity_lua.SYNC)
        self._release = self._r.register_script(capacity_lua.RELEASE)
        self.trips: Counter[str] = Counter()  # round trips by purpose

    def _keys(self, names: list[str]) -> list[str]:
        return [self.prefix + "members", self.prefix + "clock",
                *(self.prefix + "r:" + n for n in names)]

    def _guarded(self, what: str, fn: Callable[[], Any]) -> Any:
        self.trips[what] += 1  # one EVALSHA (a NOSCRIPT adds a load and a retry: rare)
        try:
            return fn()
        except DOWN_ERRORS as exc:
            raise StoreDown(f"capacity store {self.url}: {what}: {exc}") from exc

    def sync(self, member: str, ttl: float, asks: list[Ask]) -> tuple[int, list[Grant]]:
        """One script call for every resource in `asks`."""
        args: list[Any] = [member, int(ttl * 1000)]
        for a in asks:
            args += [a.capacity, a.keep, a.demand]
        reply = self._guarded("capacity", lambda: self._sync(
            keys=self._keys([a.name for a in asks]), args=args))
        flat = [int(x) for x in reply]
        grants = [Grant(*flat[i:i + 3]) for i in range(1, len(flat), 3)]
        return flat[0], grants

    def release(self, member: str, names: list[str]) -> None:
        """One script call."""
        self._guarded("capacity_release",
                      lambda: self._release(keys=self._keys(names), args=[member]))

    def close(self) -> None:
        """Disconnect."""
        self._r.close()


SCHEMA = """
CREATE TABLE IF NOT EXISTS members (member TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS clock (one INTEGER PRIMARY KEY CHECK (one = 1), seen REAL,
    shift REAL);
CREATE TABLE IF NOT EXISTS leases (resource TEXT NOT NULL, member TEXT NOT NULL,
    lease INTEGER NOT NULL, demand INTEGER NOT NULL, PRIMARY KEY (resource, member));
"""


OPEN_WAIT_S = 10.0  # how long opening a host-local file waits for the other processes opening it


class SqliteCapacity:
    """Capacity leases in a SQLite file shared by the processes of one host (`--workers`)."""

    kind = "sqlite"

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time,
                 timeout: float = 0.25) -> None:
        """Open (create) `path`; `clock` is the host's wall clock, the same for every process."""
        self.path, self.clock = path, clock
        # the workers of `serve --workers N` open the file at once: setting WAL and the
        # schema waits out the others' (OPEN_WAIT_S), a sync only its `timeout`
        self._db = sqlite3.connect(path, timeout=OPEN_WAIT_S, isolation_level=None,
                                   check_same_thread=False)
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                # switching to WAL under another connection's lock can fail at once,
                # without the busy wait (SQLite's deadlock guard): try again until the
                # deadline
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self.trips: Counter[str] = Counter()  # transactions by purpose

    def sync(self, member: str, ttl: float, asks: list[Ask]) -> tuple[int, list[Grant]]:
        """One IMMEDIATE transaction for every resource in `asks`."""
        self.trips["capacity"] += 1
        try:
            return self._sync(member, ttl, asks)
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk gone
            raise StoreDown(f"capacity store sqlite:{self.path}: sync: {exc}") from exc

    def _sync(self, member: str, ttl: float, asks: list[Ask]) -> tuple[int, list[Grant]]:
        db = self._db
        with closing(db.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")
            try:
                now = self._now(cur, ttl)
                cur.execute("INSERT OR REPLACE INTO members VALUES (?, ?)", (member, now + ttl))
                cur.execute("DELETE FROM members WHERE until < ?", (now - FORGET_S,))
                live = {m for (m,) in cur.execute(
                    "SELECT member FROM members WHERE until > ?", (now,))}
                grants = [self._settle(cur, member, a, live) for a in asks]
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return len(live), grants

    def _now(self, cur: sqlite3.Cursor, ttl: float) -> float:
        """The heartbeat clock: wall time less the gaps in which no router called."""
        wall = self.clock()
        row = cur.execute("SELECT seen, shift FROM clock").fetchone()
        seen, shift = row if row is not None else (wall, 0.0)
        if wall - seen > ttl / 2:
            shift += wall - seen
        cur.execute("INSERT OR REPLACE INTO clock VALUES (1, ?, ?)", (wall, shift))
        return float(wall - shift)

    @staticmethod
    def _settle(cur: sqlite3.Cursor, member: str, a: Ask, live: set[str]) -> Grant:
        rows = cur.execute("SELECT member, lease, demand FROM leases WHERE resource = ?",
                           (a.name,)).fetchall()
        dead = [m for m, _, _ in rows if m not in live]
        cur.executemany("DELETE FROM leases WHERE resource = ? AND member = ?",
                        [(a.name, m) for m in dead])
        leases = {m: lease for m, lease, _ in rows if m in live}
        demands = {m: d for m, _, d in rows if m in live}
        demands[member] = max(0, a.demand)
        new, target = settle(a.capacity, leases, demands, member, a.keep)
        cur.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
                    (a.name, member, new, demands[member]))
        leased = sum(v for m, v in leases.items() if m != member) + new
        return Grant(new, target, leased)

    def release(self, member: str, names: list[str]) -> None:
        """Delete the router's rows and its heartbeat."""
        self.trips["capacity_release"] += 1
        try:
            with self._db:
                self._db.execute("DELETE FROM leases WHERE member = ?", (member,))
                self._db.execute("DELETE FROM members WHERE member = ?", (member,))
        except sqlite3.OperationalError as exc:
            raise StoreDown(f"capacity store sqlite:{self.path}: release: {exc}") from exc

    def close(self) -> None:
        """Close the file."""
        self._db.close()
