"""`hybrid-router demo` end to end: live summary, visible reactions, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def leftovers(state: Path) -> list[str]:
    """Command lines of live processes that mention the demo's state directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state) in cmd and "pytest" not in cmd:
            found.append(cmd)
    return found


def test_demo_runs_reacts_and_cleans_up(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "router", "demo", "--duration", "24", "--event-every", "5",
         "--rate", "60", "--state", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mode mix" in out and "p95 ms" in out and "feed age" in out and "budget this" in out
    events = [line for line in out.splitlines() if line.startswith("EVENT")]
    assert len(events) >= 4 and "site lost" in events[0] and "restarted" in events[2]
    summary = next(line for line in out.splitlines() if line.startswith("SUMMARY"))
    counts = dict(p.split("=") for p in summary.split()[1:])
    # It reacted: cloud after the site loss, fail-open while the router restarted.
    assert int(counts.get("edge", 0)) > 0 and int(counts.get("cloud", 0)) > 0
    assert int(counts.get("fail-open", 0)) > 0
    assert "every process it started has stopped" in out
    assert leftovers(state) == []


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "demo", "--rate", "30", "--state", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (state / "envoy.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "SUMMARY" in out and "every process it started has stopped" in out
    assert leftovers(state) == []
