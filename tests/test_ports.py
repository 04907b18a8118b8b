"""The demo's and the live twin's processes bind port 0 and report what they got: none is
handed a port chosen in advance, so their stacks start while other processes on the machine
take and release ephemeral ports all the time."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.demo import stack as demo_stack
from router.harness import procs as harness
from router.harness.procs import Processes
from simulator.live import stack as twin_stack

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _no_port_in_advance() -> int:
    raise AssertionError("a port was chosen before the process that binds it existed")


@pytest.fixture
def churn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """No `free_port` allowed; meanwhile a thread binds and releases ephemeral ports, 64 at a
    time, for as long as the test runs. Yields the count of ports it took."""
    monkeypatch.setattr(harness, "free_port", _no_port_in_advance)
    stop, taken = threading.Event(), [0]

    def run() -> None:
        held: list[socket.socket] = []
        while not stop.wait(0.002):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            held.append(s)
            taken[0] += 1
            if len(held) >= 64:
                held.pop(0).close()
        for s in held:
            s.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield taken
    stop.set()
    thread.join(10)


def _ports_in_argv(procs: Processes) -> list[int]:
    """Every 127.0.0.1 port any child was started with."""
    args = " ".join(" ".join(map(str, p.args)) for p in procs.procs.values())
    return [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", args)]


def _get(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_demo_stack_starts_on_the_ports_its_processes_bound(tmp_path: Path,
                                                            churn: list[int]) -> None:
    procs = Processes(tmp_path)
    try:
        world, policy, url, _ = demo_stack.start(procs, tmp_path)
        ports = _ports_in_argv(procs)
        assert ports and set(ports) == {0}, ports
        status, _ = _get(url)
        assert status == 200, (status, url)
        addresses = {t.address for t in (*policy.nodes, *policy.pools)}
        bound = json.loads((tmp_path / "emulate-ports.json").read_text())["targets"]
        assert addresses == {f"127.0.0.1:{port}" for port in bound.values()}
        assert {"grpc", "xds", "metrics", "listen", "admin", "feed_grpc"} <= set(world.ports)
    finally:
        procs.stop_all()
    assert churn[0] > 100  # the ports kept moving while the stack came up


def test_twin_stack_starts_on_the_ports_its_processes_bound(tmp_path: Path,
                                                            churn: list[int]) -> None:
    scenario = ROOT / "simulator" / "scenarios" / "twin.yaml"
    policy = ROOT / "simulator" / "scenarios" / "policies" / "twin.yaml"
    twin = twin_stack.live_policy(policy, tmp_path)
    procs = Processes(tmp_path)
    try:
        twin_stack.start(procs, twin, scenario, 5.0)
        ports = _ports_in_argv(procs)
        assert ports and set(ports) == {0}, ports
        status, body = _get(twin.url)
        assert status == 200, (status, body[:300])
        placed = json.loads((tmp_path / "world-ports.json").read_text())["targets"]
        text = twin.policy.read_text()
        assert all(f"127.0.0.1:{port}" in text for port in placed.values())
    finally:
        procs.stop_all()
    assert churn[0] > 100


def test_free_ports_stay_out_of_the_kernels_range_and_apart_per_test_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A port picked for a child to bind later is never one the kernel can hand to a port-0
    bind meanwhile (the churn above), and two pytest-xdist workers pick from disjoint slices."""
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("40000\t60999\n")
    monkeypatch.setattr(harness, "EPHEMERAL", ephemeral)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert harness.port_range() == range(28000, 40000)
    slices = []
    for i in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{i}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        slices.append(set(harness.port_range()))
        picked = [harness.free_port() for _ in range(20)] + [harness.free_ports(3)]
        assert all(p in slices[-1] for p in picked), picked
    assert not (slices[0] & slices[1] or slices[1] & slices[2] or slices[0] & slices[2])
    assert set().union(*slices) <= set(range(28000, 40000))
    ephemeral.write_text("garbage")
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert harness.port_range() == range(20768, 32768)  # Linux's default, when unreadable
