"""What a child that bound port 0 got, read back from where it reports it.

No port is chosen for a child in advance: a number found free here is free only until the
child binds it, and any process on the machine can take it in between. So every child
binds port 0 and says what it got, each in its own way: the node emulator
(`simulator.emulate --ports-file`, `router.harness.emulator`) writes a JSON file once all
its servers listen; `serve` and `feed serve` print their addresses as bound; Envoy writes
its admin address to `--admin-address-path` and lists its listeners' addresses on its
admin `/listeners`.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from router.harness.procs import Processes, envoy_binary, wait_port

Proc = subprocess.Popen[bytes]
T = TypeVar("T")
SERVE_LINE = (r"ext_proc on [\d.]+:(?P<grpc>\d+), metrics on [\d.]+:(?P<metrics>\d+)"
              r"(?:, xds on [\d.]+:(?P<xds>\d+))?")
FEED_LINE = r"feed: serving .* at http://[\d.]+:(?P<http>\d+)/\S*(?: and grpc://[\d.]+:(?P<grpc>\d+))?"


def _until(read: Callable[[], T | None], proc: Proc, timeout: float, never: str) -> T:
    """What `read` returns once it is not empty (an OSError counts as empty), failing fast if
    `proc` dies, or TimeoutError(`never`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            got = read()
            if got:
                return got
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(never)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so no reader (`wait_file`, a feed server
    watching it) sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def wait_file(path: Path, proc: Proc, timeout: float = 30.0) -> str:
    """The text of `path` once it exists and is not empty, failing fast if `proc` dies."""
    return _until(path.read_text, proc, timeout, f"{path} never written")


def wait_line(path: Path, pattern: str, proc: Proc, *, start: int = 0,
              timeout: float = 30.0) -> re.Match[str]:
    """The first match of `pattern` in the log `path` past byte `start`, failing fast if
    `proc` dies: how a child that bound port 0 reports the port it got."""
    def read() -> re.Match[str] | None:
        with path.open("rb") as f:
            f.seek(start)
            return re.search(pattern, f.read().decode(errors="replace"))

    return _until(read, proc, timeout, f"{path} never said {pattern!r}")


def log_size(procs: Processes, name: str) -> int:
    """How long `name`'s log is now: where the next start's lines begin."""
    log = procs.logdir / f"{name}.log"
    return log.stat().st_size if log.exists() else 0


def reported(procs: Processes, name: str, pattern: str, start: int) -> dict[str, int]:
    """The ports child `name` printed (named groups of `pattern`) in its log past `start`."""
    said = wait_line(procs.logdir / f"{name}.log", pattern, procs.procs[name], start=start)
    return {k: int(v) for k, v in said.groupdict().items() if v is not None}


def envoy_ports(admin_file: Path, envoy: Proc, timeout: float = 30.0) -> tuple[int, int]:
    """(first listener, admin) ports of an Envoy started with `--admin-address-path`."""
    admin = int(wait_file(admin_file, envoy, timeout).strip().rpartition(":")[2])
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            url = f"http://127.0.0.1:{admin}/listeners?format=json"
            with urllib.request.urlopen(url, timeout=5) as r:
                status = json.load(r)["listener_statuses"][0]
            listen = int(status["local_address"]["socket_address"]["port_value"])
            if listen:
                break
        if envoy.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Envoy never reported its listener (exit {envoy.poll()})")
        time.sleep(0.05)
    wait_port(listen, timeout, envoy)
    return listen, admin


def start_envoy(procs: Processes, name: str, config: Path, *, concurrency: int = 1
                ) -> tuple[int, int]:
    """Envoy on a config whose listener and admin ask for port 0: (listener, admin) as bound.

    `--use-dynamic-base-id` picks a shared-memory id no other Envoy on the machine holds.
    """
    admin_file = procs.logdir / f"{name}.admin"
    admin_file.unlink(missing_ok=True)
    envoy = procs.start(name, [envoy_binary(), "-c", str(config), "-l", "warning",
                               "--use-dynamic-base-id", "--admin-address-path", str(admin_file),
                               "--concurrency", str(concurrency)])
    return envoy_ports(admin_file, envoy)

