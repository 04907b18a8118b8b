"""The live twin's processes: the world (`simulator.live.upstream`), its feed server, the
router and Envoy.

Everything listens on free 127.0.0.1 ports; the policy is copied with every node and
pool on its own port, the feed on a `hybrid-router feed serve` gRPC `Watch` of the file the
world writes, and budgets in
memory (a twin starts from zero spend, as the simulator does). Envoy runs the
project's generated gateway config (clusters and routes from the router over xDS).
`Processes.stop_all` (router.harness.procs) ends every one of them, whatever happened.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.harness.procs import Processes, envoy_binary, free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
MARGIN_S = 10.0  # Envoy's route timeout past the longest a world request can take


@dataclass
class Twin:
    """Paths and ports of one live run."""

    state: Path
    policy: Path
    feed: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Envoy's inference URL."""
        return f"http://127.0.0.1:{self.ports['listen']}/infer"

    @property
    def control(self) -> str:
        """The world process's control URL."""
        return f"http://127.0.0.1:{self.ports['control']}"


def live_policy(source: Path, state: Path) -> Twin:
    """Copy `source` into `state` with free ports, the feed on gRPC Watch, budgets in memory."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    twin = Twin(state, state / "policy.yaml", state / "feed.json")
    for section, key in (("edge", "nodes"), ("cloud", "pools")):
        for entry in (doc.get(section) or {}).get(key) or []:
            entry["address"] = f"127.0.0.1:{free_port()}"
    twin.ports.update(feed=free_port(), control=free_port(), grpc=free_port(),
                      metrics=free_port(), listen=free_port(), admin=free_port())
    feed = doc.get("feed") or {}
    doc["feed"] = {**feed, "source": f"grpc://127.0.0.1:{twin.ports['feed']}"}
    doc.setdefault("budgets", {})["store"] = "memory"
    twin.policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return twin


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until `url` answers 200 (Envoy's /ready: its first xDS answers are in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} never answered 200")


def start(procs: Processes, twin: Twin, scenario: Path, addresses: list[str],
          upstream_timeout_s: float) -> None:
    """World, feed server, router, Envoy: in that order, each listening before the next."""
    p = twin.ports
    world = procs.start("world", [sys.executable, "-m", "simulator.live.upstream",
                                  "--policy", str(twin.policy), "--scenario", str(scenario),
                                  "--feed", str(twin.feed),
                                  "--control", f"127.0.0.1:{p['control']}"])
    for address in addresses:
        wait_port(int(address.rpartition(":")[2]), proc=world)
    wait_port(p["control"], proc=world)  # open once the idle world's feed is written
    feed = procs.python("feed", "feed", "serve", "--from", str(twin.feed), "--listen",
                        "127.0.0.1:0", "--grpc", f"127.0.0.1:{p['feed']}", "--poll", "0.05")
    wait_port(p["feed"], proc=feed)
    timeout = f"{upstream_timeout_s + MARGIN_S:g}"
    router = procs.python("router", "serve", "--policy", str(twin.policy),
                          "--grpc", f"127.0.0.1:{p['grpc']}",
                          "--metrics", f"127.0.0.1:{p['metrics']}", "--grace", "1",
                          "--upstream-timeout", timeout)
    wait_port(p["grpc"], proc=router)
    wait_port(p["metrics"], proc=router)
    config = twin.state / "envoy.yaml"
    subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                    str(twin.policy), "--mode", "gateway", "--router", f"127.0.0.1:{p['grpc']}",
                    "--listen", f"127.0.0.1:{p['listen']}", "--admin", f"127.0.0.1:{p['admin']}",
                    "--upstream-timeout", timeout, "-o", str(config)], check=True, cwd=ROOT)
    envoy = procs.start("envoy", [envoy_binary(), "-c", str(config), "-l", "warning",
                                  "--base-id", str(p["listen"]), "--concurrency", "1"])
    wait_port(p["listen"], proc=envoy)
    wait_ready(f"http://127.0.0.1:{p['admin']}/ready", envoy)


def set_t0(twin: Twin, t0_wall: float) -> None:
    """Tell the world process that scenario t=0 is wall time `t0_wall`."""
    req = urllib.request.Request(f"{twin.control}/start?t0={t0_wall!r}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
