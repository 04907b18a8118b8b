"""A real `redis-server` on a free 127.0.0.1 port, persisting to a tmp dir, stopped after;
a switchable TCP proxy in front of it (forward, blackhole, mute); a router's budget replica."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from router.core.budget import THROTTLED, Reservation
from router.core.policy import BudgetConfig, TenantBudget
from router.harness.procs import free_port
from router.stores.keeper import BudgetKeeper
from router.stores.redis import RedisBudgetStore


def month() -> str:
    """This budget period's key (UTC month), as the stores name it."""
    return time.strftime("%Y-%m", time.gmtime())


def timed(durations: list[float], fn: Callable[[], Any]) -> Any:
    """`fn()`, its wall time appended to `durations` however it ends."""
    began = time.perf_counter()
    try:
        return fn()
    finally:
        durations.append(time.perf_counter() - began)


class RedisServer:
    """One redis-server process that a test can kill and restart on the same port and data."""

    def __init__(self, workdir: Path, *, persistent: bool = True) -> None:
        self.dir = workdir
        self.port = free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server missing: apt-get install -y redis-server (.ci/run does)"
        # AOF with fsync on every write: an acknowledged write survives a kill -9
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes" if self.persistent else "no",
             "--appendfsync", "always", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what AOF already has."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart_empty(self, *, persistent: bool = True) -> None:
        """Kill it and start it again on the same port without its AOF: it forgot it all."""
        self.kill()
        for entry in self.dir.glob("appendonly*"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.persistent = persistent
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


PROXY = r"""
import signal, socket, sys, threading
target = int(sys.argv[1])
mode = ["forward"]
for sig, name in ((signal.SIGUSR1, "blackhole"), (signal.SIGUSR2, "mute"),
                  (signal.SIGHUP, "forward")):
    signal.signal(sig, lambda *_, n=name: mode.__setitem__(0, n))
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)

def pump(src, dst, request):
    try:
        while data := src.recv(65536):
            if dst is not None and (mode[0] == "forward" or (mode[0] == "mute" and request)):
                dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass

while True:
    client, _ = listener.accept()
    try:
        upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
        upstream.settimeout(None)
    except OSError:
        upstream = None  # nothing to forward to: a blackhole all the same
    threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
    if upstream is not None:
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
"""
MODES = {"blackhole": signal.SIGUSR1, "mute": signal.SIGUSR2, "forward": signal.SIGHUP}


class TcpProxy:
    """A 127.0.0.1 TCP proxy to `target` in its own process, switchable at any time.

    `forward`: a plain proxy. `blackhole`: connections are accepted and read and never
    answered; nothing reaches the target. `mute`: requests reach the target, its replies
    never come back (the command runs, its reply is lost). A process of its own, as a
    real Redis is, so its threads take no time from the process under test.
    """

    def __init__(self, target: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PROXY, str(target)],
                                     stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self._mode = "forward"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.proc.send_signal(MODES[mode])
        self._mode = mode
        time.sleep(0.05)  # the handler runs between the proxy's own steps

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    p = TcpProxy(redis_server.port)
    try:
        yield p
    finally:
        p.close()


class Replica:
    """One router's budget on a Redis store: the keeper's thread and the ledger it keeps.

    `reserve` is what admission does, with the server's one wait for a top-up when the
    lease is short (here a blocking wait: a test thread, not an event loop).
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 **options: float) -> None:
        self.clock = clock
        self.backend = RedisBudgetStore(url, clock=clock, **options)
        # the production pace (`sync`, `sync_rate`), as `open_keeper` sets it
        self.keeper = BudgetKeeper(self.backend, retry=self.backend.retry,
                                   tick=self.backend.tick, rate=self.backend.rate).start()
        self.ledger = self.keeper.ledger

    def reserve(self, budgets: BudgetConfig, tenant: str, amount: float,
                wait: float = 2.0) -> Reservation | None:
        got = self.ledger.hold(budgets, tenant, amount, self.clock())
        if got == THROTTLED and self.keeper.wait_round(wait):
            got = self.ledger.hold(budgets, tenant, amount, self.clock())
        return None if isinstance(got, str) else got

    def settle(self, res: Reservation, actual: float | None = None) -> None:
        self.ledger.settle(res, actual)

    def flushed(self, timeout: float = 10.0) -> bool:
        """Wait until everything settled so far is in Redis."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.keeper.degraded and self.keeper.wait_round(1.0) \
                    and not self.keeper.degraded:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.keeper.close()


def budgets(limit: float | None, tenant: str = "acme") -> BudgetConfig:
    """A month-period budget with one limited tenant (None: no limit)."""
    tenants = {} if limit is None else {tenant: TenantBudget(limit_usd=limit)}
    return BudgetConfig(period="month", tenants=tenants)
