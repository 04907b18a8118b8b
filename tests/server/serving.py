"""`hybrid-router serve` started as users start it, on port 0, for the server's own tests.

The example policy with a memory budget store; the port is the one the router bound and
printed, so no number is chosen before the process exists (nothing can take it in between).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"
BOUND = re.compile(rb"ext_proc on 127\.0\.0\.1:(\d+), metrics on (\S+)")


@dataclass
class Served:
    """A running `serve`: its process, its bound ext_proc port and what it printed so far."""

    proc: subprocess.Popen[bytes]
    port: int
    said: list[bytes] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bytes:
        """Signal it, wait for its exit and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out = kill_group(self.proc)
        return b"".join(self.said) + (out or b"")


def kill_group(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGKILL `serve` and every process it started (its session), then read what it printed:
    a child left running would hold its stdout open and the read would never end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return out or b""


def example_policy(tmp_path: Path) -> Path:
    """The example policy with a memory budget store (no state left behind)."""
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE.read_text().replace('store: "sqlite:state/budget.db"',
                                                  'store: "memory"'))
    return policy


def serve(tmp_path: Path, *args: str, timeout: float = 60.0) -> Served:
    """Start `serve` with the example policy on 127.0.0.1:0 (plus `args`) and wait for the
    line that names the port it bound; raise if it exits or stays silent first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--policy", str(example_policy(tmp_path)),
         "--grpc", "127.0.0.1:0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    assert proc.stdout is not None
    # Read the pipe itself, not through the file object's buffer: a buffered readline can
    # pull the port line in with the line before it, and select() then waits on an empty
    # pipe for output that already arrived (a loaded machine's writes arrive together).
    fd = proc.stdout.fileno()
    said: list[bytes] = []
    pending = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.communicate()
                raise RuntimeError(f"serve exited with {proc.returncode}: {b''.join(said)!r}")
            said.append(chunk)
            pending += chunk
            end = pending.rfind(b"\n") + 1  # whole lines only: a port can arrive in halves
            if m := BOUND.search(pending, 0, end):
                return Served(proc, int(m.group(1)), said)
            pending = pending[end:]
    kill_group(proc)
    raise TimeoutError(f"serve named no port in {timeout:.0f} s: {b''.join(said)!r}")
