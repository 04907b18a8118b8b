"""The options of a `redis://` budget store URL, and when a period's keys expire.

Options are query parameters, removed before connecting; `router.stores.redis`
says what each one does (docs/reference.md has the table).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from router.core.budget import period_end

BIG = 1e300  # Lua has no inf literal; any cap above this is unlimited
RETAIN_S = 7 * 86400
OPTIONS = {"replicas": 2.0, "lease_fraction": 0.5, "lease_usd": BIG, "lease_ttl": 300.0,
           "horizon": 10.0, "idle": 30.0, "refresh": 1.0, "timeout": 0.25, "retry": 0.5,
           "capacity_sync": 0.25, "capacity_ttl": 3.0, "rebuild": 5.0, "sync": 0.25,
           "sync_rate": 5.0}


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


def split_options(url: str) -> tuple[str, dict[str, float]]:
    """(`url` without the store's options, the options with their defaults)."""
    clean, opts, _ = parse_options(url, {})
    return clean, opts


def parse_options(url: str, given: dict[str, float]) -> tuple[str, dict[str, float], str]:
    """(url without our options, options, persistence mode)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    opts = dict(OPTIONS)
    persistence = query.pop("persistence", "require")
    if persistence not in ("require", "warn"):
        raise ValueError(f"redis store option persistence={persistence!r}: require or warn")
    for name in list(query):
        if name in OPTIONS:
            try:
                opts[name] = float(query.pop(name))
            except ValueError as exc:
                raise ValueError(f"redis store option {name}: not a number") from exc
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown redis store option(s): {', '.join(sorted(unknown))}")
    opts.update(given)
    for name in ("sync", "sync_rate"):
        if not opts[name] > 0:
            raise ValueError(f"redis store option {name}={opts[name]:g}: must be above 0")
    return urlunsplit(parts._replace(query=urlencode(query))), opts, persistence
