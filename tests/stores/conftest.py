"""A real `redis-server` on a free 127.0.0.1 port, persisting to a tmp dir, stopped after;
a switchable TCP proxy in front of it (forward, blackhole, mute); a router's budget replica."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from router.core.budget import THROTTLED, Reservation
from router.core.model import BudgetConfig, TenantBudget
from router.stores.keeper import BudgetKeeper
from router.stores.redis import RedisBudgetStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class TcpProxy:
    """A 127.0.0.1 TCP proxy to `target` that a test can switch, per direction, at any time.

    `forward`: a plain proxy. `blackhole`: connections are accepted and read and never
    answered; nothing reaches the target. `mute`: requests reach the target, its replies
    never come back (the command runs, its reply is lost).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.mode = "forward"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                upstream = None  # nothing to forward to: a blackhole all the same
            with self._lock:
                self._socks += [s for s in (client, upstream) if s is not None]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._pump, args=(upstream, client, False),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None, request: bool) -> None:
        try:
            while data := src.recv(65536):
                passes = self.mode == "forward" or (self.mode == "mute" and request)
                if passes and dst is not None:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    p = TcpProxy(redis_server.port).start()
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
        self.keeper = BudgetKeeper(self.backend, retry=self.backend.retry).start()
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
    tenants = () if limit is None else ((tenant, TenantBudget(limit)),)
    return BudgetConfig(period="month", tenants=tenants)
