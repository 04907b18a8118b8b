"""One round trip of Lua scripts to Redis: a `Batch` (for `router.stores.redis`).

redis-py sends `SCRIPT EXISTS` before every pipeline that holds registered
scripts, a second round trip each time. A batch sends `EVALSHA` alone and loads
the scripts only when Redis says it lacks them (`NOSCRIPT`: a restarted Redis or
a flushed script cache), in one more round trip, then sends the batch again.

The batch goes as one MULTI/EXEC, so the scripts in it run together, with no
other client's command in between: all of them find their script or none does.
Without it a large batch, read by Redis in parts, could meet another router's
SCRIPT LOAD half way: its first settlements refused (NOSCRIPT), later ones
applied, and the first ones then skipped on the resend as replays of numbers
already applied, their spend lost. Every budget script is safe to send twice:
a settlement is skipped by its number, a bill merges, a grow only grows to its
target, a return only shrinks to what is pinned, a read reads.

The caller counts the batch's one round trip; the two a `NOSCRIPT` adds are
counted here, as `scripts` (`router_store_round_trips_total`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
from redis.commands.core import Script


class Batch:
    """Script calls gathered for one MULTI/EXEC."""

    def __init__(self, client: redis.Redis, scripts: dict[str, Script],
                 trips: Counter[str]) -> None:
        """Calls to `scripts` through `client`; extra round trips counted in `trips`."""
        self.client, self.scripts, self.trips = client, scripts, trips
        self.calls: list[tuple[str, list[str], list[Any]]] = []

    def __len__(self) -> int:
        """Script calls gathered."""
        return len(self.calls)

    def add(self, name: str, keys: list[str], args: list[Any]) -> None:
        """Call script `name` with `keys` and `args` when the batch is sent."""
        self.calls.append((name, keys, args))

    def _send(self) -> list[Any]:
        pipe = self.client.pipeline(transaction=True)
        for name, keys, args in self.calls:
            pipe.evalsha(self.scripts[name].sha, len(keys), *keys, *args)
        return list(pipe.execute())

    def send(self) -> list[Any]:
        """Every reply, in order, in one round trip (three when Redis lacks the scripts)."""
        try:
            return self._send()
        except redis.exceptions.NoScriptError:
            self.trips["scripts"] += 2  # the load, and the batch again
            load_scripts(self.client, self.scripts)
            return self._send()


def load_scripts(client: redis.Redis, scripts: dict[str, Script]) -> None:
    """Every script into Redis' cache, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for script in scripts.values():
        pipe.script_load(script.script)
    pipe.execute()
