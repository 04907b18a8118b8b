"""A budget shared by a fleet of routers through Redis: leases, flushed spend, bills.

Theory of operation
-------------------
Each router admits cloud spend against its own *lease* only (`router.core.budget`),
so no request ever waits on Redis. This module is what the keeper's thread
(`router.stores.keeper`) calls; every step is one Lua script (`redis_lua`),
atomic across the fleet, and keys are per (tenant, period), expiring a week
after the period ends.

- Leases: `lease()` grows a replica's lease into headroom no one holds, by the
  rules of `router.stores.leases` (share = `lease_fraction / replicas` of the
  headroom, default 0.5 / 2, capped by `lease_usd`), or returns it. A lease
  lapses `lease_ttl` seconds (default 300) after its last renewal, so a replica
  that died gives its headroom back; the ledger stops spending a lease locally
  a little before that.
- Settlements: flushed in the order the ledger made them, pipelined, each
  numbered; a replay after a lost reply is skipped by number, so nothing counts
  twice. A settlement releases its hold's amount from the lease and commits the
  actual cost at its admission time (the billing merge of `router.core.spend`).
- Bills: the feed's spend, merged in Redis the same way as in memory.

Overshoot bound: committed + leased never passes the ceiling in Redis, and each
replica admits only within its lease, so the fleet's spend stays within the
limit whether Redis is up, slow or down. What can pass it: (a) a settled
actual cost above its estimate, (b) a replica cut off from Redis for longer
than `lease_ttl` with requests still in flight on its lease.

Persistence: spend must survive a Redis restart, so the store checks
`CONFIG GET appendonly` at first contact and again on every reconnect, and
refuses a Redis without AOF (`?persistence=warn` only warns; use it for a Redis
that forbids CONFIG). Use `appendfsync always` for zero loss on a Redis crash.
A Redis that forgot all the same (flushed, restarted empty, rolled back) is
found by its epoch and rebuilt from the routers' journals: `redis_epoch`.

Membership: the fleet's size is the number of routers whose heartbeat in this
Redis is live (`router.stores.capacity`, which also leases node slots);
`follow` sets the share from it. `replicas` is only the size assumed until the
store first answers.

URL options (removed before connecting): `replicas`, `lease_fraction`,
`lease_usd`, `lease_ttl`, `horizon` (s of spend a lease is sized for, 10),
`idle` (s without admissions before a lease goes back, 30), `refresh` (s
between standings reads, 1), `sync` (s between the keeper's rounds, each one
round trip, 0.25), `sync_rate` (most rounds a second, 5), `timeout` (socket,
0.25 s), `retry` (s, 0.5),
`rebuild` (s after a loss before leases grow again, 5), `persistence`
(`require` or `warn`), `capacity_sync` (s between slot lease syncs, 0.25) and
`capacity_ttl` (s a dead router's slot leases live, 3), e.g.
`redis://127.0.0.1:6379/0?replicas=4&timeout=0.1`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.core.budget import Billed, BudgetLedger, Entry, Settled, Standing
from router.stores import redis_epoch, redis_lua
from router.stores.keeper import BudgetStoreError, StoreDown, StoreLost
from router.stores.leases import READ, RETURN, Ask, LeasePlanner
from router.stores.redis_calls import Batch, load_scripts
from router.stores.redis_options import BIG, expire_at, parse_options

log = logging.getLogger(__name__)
DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisBudgetStore:
    """The keeper's backend for a `redis://` budget store; see the module docstring."""

    kind = "redis"
    leased = True

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 **options: float) -> None:
        """Connect lazily to `url`; options as keywords or URL query parameters."""
        self.url, self.opts, self.persistence = parse_options(url, options)
        self.clock = clock  # ledger time, for the local end of a lease
        o = self.opts
        self.planner = LeasePlanner(share=o["lease_fraction"] / max(1.0, o["replicas"]),
                                    cap=min(o["lease_usd"], BIG), horizon=o["horizon"],
                                    idle=o["idle"], refresh=o["refresh"], ttl=o["lease_ttl"])
        self.retry, self.tick, self.rate = o["retry"], o["sync"], o["sync_rate"]
        self.trips: Counter[str] = Counter()  # round trips by purpose
        self._r = redis.Redis.from_url(
            self.url, socket_timeout=o["timeout"], socket_connect_timeout=o["timeout"],
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
            redis_connect_func=self._connected)
        self.scripts = {name: self._r.register_script(getattr(redis_lua, name.upper()))
                        for name in ("lease", "settle", "bill", "read", "adopt", "rebuild")}
        self.token = secrets.token_hex(6)
        self.member = f"L:{self.token}"
        self._verified = self._refusing = False
        self.epoch, self.seen = "", 0  # the store's epoch as adopted, its highest gen seen
        self.proofs = redis_epoch.Proofs()

    def _connected(self, conn: redis.connection.AbstractConnection) -> None:
        """A new connection: a Redis that restarted may have come back without AOF."""
        conn.on_connect()  # type: ignore[no-untyped-call]
        self._verified = False

    @staticmethod
    def keys(tenant: str, period: str) -> list[str]:
        """The five keys of one (tenant, period), in one hash slot, and the store's epoch."""
        base = f"hr:budget:{{{tenant}|{period}}}:"
        return [*(base + k for k in ("acct", "amts", "leases", "unbilled", "seqs")),
                redis_epoch.EPOCH_KEY]

    def tail(self) -> list[str | int]:
        """The last two arguments of every script: the epoch this router trusts."""
        return [self.epoch, self.seen]

    @staticmethod
    def expiry(period: str, wall: float) -> int:
        """Epoch second at which a period's keys may go."""
        return expire_at(period, wall)

    def batch(self) -> Batch:
        """Script calls for one round trip."""
        return Batch(self._r, self.scripts, self.trips)

    def run(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()`, one round trip (counted as `what`); StoreDown when Redis does not answer,
        StoreLost when it forgot."""
        self.trips[what] += 1
        try:
            return fn()
        except DOWN_ERRORS as exc:
            raise StoreDown(f"budget store {self.url}: {what}: {exc}") from exc
        except redis.ResponseError as exc:
            if "HREPOCH" not in str(exc):
                raise
            raise StoreLost(f"budget store {self.url} lost its state: "
                            f"{redis_epoch.lost_reason(str(exc), self.epoch)}") from exc

    def follow(self, members: int) -> None:
        """Size lease shares for a fleet of `members` live routers (from the heartbeats)."""
        self.planner.share = self.opts["lease_fraction"] / max(1, members)

    def persistence_problem(self) -> str | None:
        """Why spend would not survive a restart of this Redis, or None (raises StoreDown)."""
        aof, save = self.run("persistence", lambda: redis_epoch.persistence(self._r))
        return redis_epoch.persistence_problem(aof, save)

    def verify(self) -> None:
        """Refuse (BudgetStoreError) a Redis that would forget spend, or warn by the URL."""
        problem = self.persistence_problem()
        self._verified = problem is None or self.persistence == "warn"
        if problem is None:
            return
        text = f"budget store {self.url}: {problem}"
        if self.persistence == "warn":
            log.warning("%s; continuing because the store URL says persistence=warn", text)
            return
        raise BudgetStoreError(f"{text}; enable AOF (appendonly yes, appendfsync always), or "
                               "add ?persistence=warn to the store URL to accept the risk")

    def open(self, ledger: BudgetLedger) -> None:
        """Check persistence now if Redis answers; else at first contact (the keeper retries)."""
        try:
            self.verify()
            redis_epoch.adopt(self, after_loss=False)
            # loaded now, so a cold router's first lease is one round trip, not three
            self.run("scripts", lambda: load_scripts(self._r, self.scripts))
        except StoreDown as exc:
            log.warning("%s; serving without it: cloud spend waits for a lease from Redis", exc)

    def write(self, entries: list[Entry]) -> None:
        """Apply settlements and bills in order, in one round trip (idempotent on replay)."""
        self.exchange(entries, None, 0.0, lambda _: None)

    def exchange(self, entries: list[Entry], ledger: BudgetLedger | None, mono: float,
                 written: Callable[[list[Entry]], None]) -> bool:
        """Write `entries`, then grow, return or read each book's lease as the planner says,
        all in one round trip; `written(entries)` once Redis applied them, before the
        leases it granted reach the ledger. False when there was nothing to send."""
        self._check()
        batch, wall = self.batch(), time.time()
        books = self._writes(batch, entries, wall)
        asks = self._asks(ledger, mono) if ledger is not None else []
        flushing = _held(entries)  # released from the lease by the settlements before it
        for ask in asks:
            self._add_ask(batch, ledger, ask, flushing.get((ask.account, ask.period), 0.0),
                          wall)
        if not len(batch):
            return False
        sent = self.clock()
        replies = self.run("budget", batch.send)
        for book, (gen, usd) in zip(books, replies, strict=False):
            self.seen = max(self.seen, int(gen))
            self.proofs.wrote(book, self.epoch, int(gen), float(usd))
        written(entries)
        if ledger is not None:
            self._granted(ledger, asks, replies[len(books):], sent)
        return True

    def _writes(self, batch: Batch, entries: list[Entry], wall: float) -> list[tuple[str, str]]:
        books: list[tuple[str, str]] = []
        for entry in entries:
            if isinstance(entry, Settled):
                res = entry.reservation
                books.append((res.tenant, res.period))
                batch.add("settle", self.keys(*books[-1]), [
                    self.token, entry.seq, repr(entry.actual), repr(res.at), self.member,
                    repr(res.amount if res.leased else 0.0), expire_at(res.period, wall),
                    *self.tail()])
            elif isinstance(entry, Billed):
                books.append((entry.account, entry.period))
                batch.add("bill", self.keys(*books[-1]), [
                    repr(entry.usd), "" if entry.as_of is None else repr(entry.as_of),
                    expire_at(entry.period, wall), *self.tail()])
        return books

    def _check(self) -> None:
        """Persistence at first contact and after a reconnect; the epoch at first contact."""
        if not self._verified:
            try:
                self.verify()
            except StoreDown:
                raise
            except BudgetStoreError as exc:  # no leases, no spend until Redis persists
                if not self._refusing:
                    log.error("%s; no lease grows and no spend is written until it does", exc)
                self._refusing = True
                raise StoreDown(str(exc)) from exc
            self._refusing = False
        if not self.epoch:
            redis_epoch.adopt(self, after_loss=False)

    def rebuild(self, ledger: BudgetLedger) -> str:
        """After a loss: a new epoch, each book's floor from this router's journal."""
        self._check()
        return redis_epoch.rebuild(self, ledger)

    def _asks(self, ledger: BudgetLedger, mono: float) -> list[Ask]:
        views = ledger.leases()
        self.planner.forget({(v.account, v.period) for v in views})
        self.proofs.forget({(v.account, v.period) for v in views})
        return self.planner.asks(views, mono, self.clock())

    def _add_ask(self, batch: Batch, ledger: BudgetLedger | None, ask: Ask, flushing: float,
                 wall: float) -> None:
        keys = self.keys(ask.account, ask.period)
        if ask.mode == READ:
            batch.add("read", keys, [self.member, *self.tail()])
            return
        pinned = ask.pinned
        if ask.mode == RETURN and ledger is not None:
            pinned = ledger.surrender(ask.account, ask.period)
        batch.add("lease", keys, [
            self.member, repr(min(ask.ceiling, BIG)), repr(self.planner.share),
            repr(min(ask.cap, BIG)), repr(ask.need), repr(max(0.0, pinned - flushing)),
            int(self.opts["lease_ttl"] * 1000), expire_at(ask.period, wall), ask.mode,
            *self.tail()])

    def _granted(self, ledger: BudgetLedger, asks: list[Ask], replies: list[Any],
                 sent: float) -> None:
        ttl = self.opts["lease_ttl"]
        until = sent + ttl - min(1.0, ttl / 10)  # stop spending before Redis lets it lapse
        for ask, reply in zip(asks, replies, strict=True):
            committed, _leased, own = (float(x) for x in reply[:3])
            self.seen = max(self.seen, int(reply[3]))
            self.proofs.read((ask.account, ask.period), self.epoch, int(reply[3]), committed)
            if ask.mode == READ:  # a read renews nothing: only the fleet's spend is news
                ledger.seen(ask.account, ask.period, committed)
                continue
            # a grow met the need, or fell short and is returned next (`LeasePlanner`); a
            # return with a need is that: the need is given up, a new request asks again
            ledger.sync(ask.account, ask.period, Standing(committed, own, until),
                        need_met=ask.need)
            self.planner.granted(ask, own)

    def _ask(self, ledger: BudgetLedger, asks: list[Ask]) -> None:
        batch, wall = self.batch(), time.time()
        for ask in asks:
            self._add_ask(batch, ledger, ask, 0.0, wall)
        sent = self.clock()
        self._granted(ledger, asks, self.run("budget_release", batch.send), sent)

    def release(self, ledger: BudgetLedger) -> None:
        """Give every lease back but what is still in use (at exit)."""
        self._check()
        asks = [Ask(v.account, v.period, RETURN, v.ceiling, 0.0, 0.0, v.in_use)
                for v in ledger.leases() if v.lease > 0]
        if asks:
            self._ask(ledger, asks)

    def read(self, tenant: str, period: str) -> tuple[float, float, float]:
        """(committed, leased by the fleet, leased by this replica) of one (tenant, period)."""
        reply = self.run("read", lambda: self.scripts["read"](
            keys=self.keys(tenant, period), args=[self.member, "*", 0]))
        committed, leased, own = (float(x) for x in reply[:3])
        return committed, leased, own

    def committed(self, tenant: str, period: str) -> float:
        """Fleet-wide committed spend of one (tenant, period), read from Redis."""
        return self.read(tenant, period)[0]

    def close(self) -> None:
        """Disconnect."""
        self._r.close()


def _held(entries: list[Entry]) -> dict[tuple[str, str], float]:
    """Per book, the lease holds `entries` settle (each gives its hold back to the lease)."""
    out: dict[tuple[str, str], float] = {}
    for entry in entries:
        if isinstance(entry, Settled) and entry.reservation.leased:
            book = (entry.reservation.tenant, entry.reservation.period)
            out[book] = out.get(book, 0.0) + entry.reservation.amount
    return out
