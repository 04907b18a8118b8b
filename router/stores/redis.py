"""A budget shared by a fleet of routers through Redis, with a local fallback.

Theory of operation
-------------------
Every step (reserve, settle, bill, read) is one Lua script (`redis_lua`), so
"committed + reserved + leased + amount <= ceiling, then hold" is atomic across
all replicas. Keys are per (tenant, period) and expire a week after the period
ends; holds are zset entries with a TTL (`hold_ttl`, default 300 s) that the
next script call drops, so a replica that died mid-request leaks nothing for
long, and a late settle of an expired hold still counts its spend.

Fallback: each replica keeps a *lease* in Redis, a standing hold of
`share` × the headroom left after committed and reserved spend (share =
`lease_fraction / replicas`, default 0.5 / 2), capped by `lease_usd`,
refreshed on every reserve and expiring after `lease_ttl` (300 s) without one.
Leases only grow into free headroom, so committed + reserved + leased never
passes the ceiling. When the free headroom is gone a replica spends out of its
own lease. When Redis is unreachable (socket timeouts `timeout`, default
0.25 s; retried every `retry` s) a replica admits cloud requests against its
lease only, locally, and queues every settlement and bill; on reconnect the
queue is flushed first, in order, before anything else. Flushes are
idempotent (a hold can be settled once; fallback settlements are recorded by
id for a day), so a settle whose reply was lost is not counted twice.

Overshoot bound: none from the ledger, whether Redis is up or down: every
admitted estimate is backed by headroom held in Redis, and fallback spend by
the replica's own lease, which Redis still holds for it. What can pass the
limit is only (a) a settled actual cost above its estimate, (b) a request
outliving its hold TTL while others reuse the headroom, and (c) an outage
longer than `lease_ttl` (the replica then stops using its lease locally, at
most one lease of spend may have been re-granted): at most one lease per
replica, and zero for outages shorter than `lease_ttl`. Redis must persist
(AOF `appendfsync always`) for spend to survive a Redis restart; settlements
still queued when a replica exits with Redis down are logged, not spooled.

URL options (removed before connecting): `replicas`, `lease_fraction`,
`lease_usd`, `hold_ttl`, `lease_ttl`, `timeout`, `retry`, e.g.
`redis://127.0.0.1:6379/0?replicas=4&timeout=0.1`.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.core.budget import Reservation, period_end
from router.stores import redis_lua

log = logging.getLogger(__name__)
T = TypeVar("T")
BIG = 1e300  # Lua has no inf literal; any ceiling above this is unlimited
RETAIN_S = 7 * 86400
OPTIONS = {"replicas": 2.0, "lease_fraction": 0.5, "lease_usd": BIG, "hold_ttl": 300.0,
           "lease_ttl": 300.0, "timeout": 0.25, "retry": 0.5}
DOWN_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class _Down(Exception):
    """Redis did not answer; use the local ledger. `sent`: the command may have run."""

    def __init__(self, sent: bool = False) -> None:
        super().__init__("redis unreachable")
        self.sent = sent


@dataclass
class _View:
    """This replica's last sight of one (tenant, period), plus what Redis has not seen."""

    committed: float = 0.0
    reserved: float = 0.0
    lease: float = 0.0
    lease_deadline: float = -math.inf
    local_inflight: float = 0.0  # fallback holds not yet settled
    local_unflushed: float = 0.0  # fallback holds settled, not yet flushed
    pending_usd: float = 0.0  # settled actuals still in the queue


def expire_at(period: str, now: float) -> int:
    """Epoch second at which a period's keys may go: a week after the period ends."""
    for fmt, kind in (("%Y-%m-%dT%H", "hour"), ("%Y-%m-%d", "day"), ("%Y-%m", "month")):
        try:
            start = datetime.strptime(period, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
        return int(period_end(start, kind) + RETAIN_S)
    if "-W" in period:
        year, _, week = period.partition("-W")
        try:
            monday = datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=UTC)
            return int(period_end(monday.timestamp(), "week") + RETAIN_S)
        except ValueError:
            pass
    return int(now + 40 * 86400)  # not a period key we know: keep a month and more


class RedisBudgetStore:
    """`BudgetStore` over Redis for many replicas; see the module docstring."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic,
                 **options: float) -> None:
        """Connect lazily to `url`; options as keywords or URL query parameters."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        opts = dict(OPTIONS)
        for name in list(query):
            if name in OPTIONS:
                opts[name] = float(query.pop(name))
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown redis store option(s): {', '.join(sorted(unknown))}")
        opts.update(options)
        self.url = urlunsplit(parts._replace(query=urlencode(query)))
        self.opts = opts
        self.share = opts["lease_fraction"] / max(1.0, opts["replicas"])
        self._r = redis.Redis.from_url(
            self.url, socket_timeout=opts["timeout"], socket_connect_timeout=opts["timeout"],
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        self._reserve = self._r.register_script(redis_lua.RESERVE)
        self._settle = self._r.register_script(redis_lua.SETTLE)
        self._bill = self._r.register_script(redis_lua.BILL)
        self._read = self._r.register_script(redis_lua.READ)
        self._clock = clock
        self._token = secrets.token_hex(6)
        self._lease_member = f"L:{self._token}"
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._views: dict[tuple[str, str], _View] = {}
        self._queue: deque[tuple[Any, ...]] = deque()
        self._down_until = -math.inf
        self._healthy = True

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the local ledger is in charge."""
        return self._clock() < self._down_until or bool(self._queue)

    def _keys(self, tenant: str, period: str) -> list[str]:
        base = f"hr:budget:{{{tenant}|{period}}}:"
        return [base + k for k in
                ("acct", "holds", "amts", "expired", "leases", "unbilled", "done")]

    def _view(self, tenant: str, period: str) -> _View:
        view = self._views.get((tenant, period))
        if view is None:
            view = self._views[(tenant, period)] = _View()
        return view

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` against Redis after flushing the queue; raise `_Down` if unreachable."""
        if self._clock() < self._down_until:
            raise _Down
        try:
            self._flush()
            result = fn()
        except DOWN_ERRORS as exc:
            if self._healthy:
                log.warning("budget store %s unreachable (%s): local ledger", self.url, exc)
            self._healthy = False
            self._down_until = self._clock() + self.opts["retry"]
            raise _Down(sent=True) from exc
        if not self._healthy:
            self._healthy = True
            log.warning("budget store %s reachable again: queued spend flushed", self.url)
        return result

    def _flush(self) -> None:
        """Replay queued settlements and bills in order; each leaves the queue once applied."""
        if not self._queue:
            return
        with self._flush_lock:
            while self._queue:
                item = self._queue[0]
                if item[0] == "bill":
                    _, tenant, period, usd, as_of = item
                    self._bill(keys=self._keys(tenant, period),
                               args=[repr(usd), "" if as_of is None else repr(as_of),
                                     expire_at(period, time.time())])
                else:
                    _, res, actual, kind = item
                    self._settle_remote(res, actual, kind)
                    with self._lock:
                        view = self._view(res.tenant, res.period)
                        view.pending_usd = max(0.0, view.pending_usd - actual)
                        if kind == "l":
                            view.local_unflushed = max(0.0, view.local_unflushed - res.amount)
                            view.lease = max(0.0, view.lease - res.amount)
                self._queue.popleft()

    def _settle_remote(self, res: Reservation, actual: float, kind: str) -> None:
        self._settle(keys=self._keys(res.tenant, res.period),
                     args=[self._member(res), repr(actual), repr(res.at), kind,
                           self._lease_member, repr(res.amount),
                           expire_at(res.period, time.time())])

    def _member(self, res: Reservation) -> str:
        return f"{self._token}:{res.rid}"

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Atomically hold `amount` fleet-wide; from this replica's lease when Redis is down."""
        rid = next(self._ids) * 2
        share = self.share if ceiling < BIG else 0.0
        with self._lock:
            pinned = self._view(tenant, period).local_inflight
        try:
            reply = self._call(lambda: self._reserve(
                keys=self._keys(tenant, period),
                args=[f"{self._token}:{rid}", repr(amount), repr(min(ceiling, BIG)),
                      int(self.opts["hold_ttl"] * 1000), self._lease_member, repr(share),
                      repr(min(self.opts["lease_usd"], BIG)),
                      int(self.opts["lease_ttl"] * 1000), expire_at(period, time.time()),
                      repr(pinned)]))
        except _Down as down:
            if down.sent:  # the hold may have been taken and its reply lost: release it
                with self._lock:
                    self._queue.append(("settle", Reservation(tenant, period, amount, rid),
                                        0.0, "r"))
            return self._reserve_local(tenant, period, amount, ceiling, rid + 1)
        ok, committed, reserved, _leased, own = reply
        with self._lock:
            view = self._view(tenant, period)
            view.committed, view.reserved, view.lease = float(committed), float(reserved), \
                float(own)
            ttl = self.opts["lease_ttl"]
            view.lease_deadline = self._clock() + ttl - min(1.0, ttl / 10)
        return Reservation(tenant, period, amount, rid) if int(ok) == 1 else None

    def _reserve_local(self, tenant: str, period: str, amount: float, ceiling: float,
                       rid: int) -> Reservation | None:
        """Fallback: hold `amount` against this replica's lease, if it is still valid."""
        with self._lock:
            view = self._view(tenant, period)
            lease = view.lease if self._clock() < view.lease_deadline else 0.0
            used = view.local_inflight + view.local_unflushed
            if ceiling < BIG and used + amount > lease + 1e-12:
                return None
            view.local_inflight += amount
            return Reservation(tenant, period, amount, rid)

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Commit `actual` in Redis, or queue it (never lose it) while Redis is down."""
        kind = "l" if reservation.rid % 2 else "r"
        if kind == "l":
            with self._lock:
                view = self._view(reservation.tenant, reservation.period)
                view.local_inflight = max(0.0, view.local_inflight - reservation.amount)
                view.local_unflushed += reservation.amount
        try:
            self._call(lambda: self._settle_remote(reservation, actual, kind))
            if kind == "l":
                with self._lock:
                    view = self._view(reservation.tenant, reservation.period)
                    view.local_unflushed = max(0.0, view.local_unflushed - reservation.amount)
                    view.lease = max(0.0, view.lease - reservation.amount)
        except _Down:
            with self._lock:
                view = self._view(reservation.tenant, reservation.period)
                view.pending_usd += actual
                if kind == "r":
                    view.reserved = max(0.0, view.reserved - reservation.amount)
                self._queue.append(("settle", reservation, actual, kind))

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record a bill (see `router.core.budget`); queued while Redis is down."""
        try:
            self._call(lambda: self._bill(
                keys=self._keys(tenant, period),
                args=[repr(usd), "" if as_of is None else repr(as_of),
                      expire_at(period, time.time())]))
        except _Down:
            with self._lock:
                self._queue.append(("bill", tenant, period, usd, as_of))

    def _state(self, tenant: str, period: str) -> tuple[float, float]:
        try:
            committed, reserved, _ = self._call(
                lambda: self._read(keys=self._keys(tenant, period), args=[]))
        except _Down:
            with self._lock:
                view = self._view(tenant, period)
                return view.committed + view.pending_usd, view.reserved + view.local_inflight
        with self._lock:
            view = self._view(tenant, period)
            view.committed, view.reserved = float(committed), float(reserved)
            return view.committed, view.reserved + view.local_inflight

    def committed(self, tenant: str, period: str) -> float:
        """Fleet-wide committed spend (last seen plus queued while Redis is down)."""
        return self._state(tenant, period)[0]

    def reserved(self, tenant: str, period: str) -> float:
        """Fleet-wide spend held by in-flight requests (leases not included)."""
        return self._state(tenant, period)[1]

    def close(self) -> None:
        """Flush what is queued (a few tries) and disconnect."""
        for _ in range(3):
            try:
                self._down_until = -math.inf
                self._call(lambda: None)
                break
            except _Down:
                time.sleep(self.opts["retry"])
        if self._queue:
            lost = sum(item[2] for item in self._queue if item[0] == "settle")
            log.error("budget store %s: %d queued updates (%.6f USD settled) not flushed "
                      "at exit", self.url, len(self._queue), lost)
        self._r.close()
