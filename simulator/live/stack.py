"""The live twin's processes: the world (the node emulator, `simulator.emulate`, playing the
scenario), its feed server, the router and Envoy.

Every process binds port 0 on 127.0.0.1 and reports what it got (`router.harness.bound`),
and each starts only once the ports it must be told are known: the world first (its nodes,
pools and control), then the feed server (a `hybrid-router feed serve` gRPC `Watch` of the
file the world writes), then the policy copy naming their real addresses (budgets in
memory: a twin starts from zero spend, as the simulator does), then the router, then
Envoy's config with the router's ports. Envoy runs the
project's generated gateway config (clusters and routes from the router over xDS).
`Processes.stop_all` (router.harness.procs) ends every one of them, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.harness.bound import FEED_LINE, SERVE_LINE, log_size, reported, start_envoy
from router.harness.emulator import start_emulator
from router.harness.procs import Processes, wait_port

ROOT = Path(__file__).resolve().parents[2]
MARGIN_S = 10.0  # Envoy's route timeout past the longest a world request can take


@dataclass
class Twin:
    """Paths and ports of one live run."""

    state: Path
    policy: Path
    feed: Path
    doc: dict[str, Any] = field(default_factory=dict)  # the policy, before `place`
    ports: dict[str, int] = field(default_factory=dict)  # of the processes, as they bound them

    def place(self, targets: dict[str, int]) -> None:
        """Write the policy with each node and pool on the port its server bound and the feed
        on the feed server's gRPC Watch."""
        doc = self.doc
        for section, key in (("edge", "nodes"), ("cloud", "pools")):
            for entry in (doc.get(section) or {}).get(key) or []:
                entry["address"] = f"127.0.0.1:{targets[entry['id']]}"
        doc["feed"] = {**(doc.get("feed") or {}),
                       "source": f"grpc://127.0.0.1:{self.ports['feed']}"}
        self.policy.write_text(yaml.safe_dump(doc, sort_keys=False))

    @property
    def url(self) -> str:
        """Envoy's inference URL."""
        return f"http://127.0.0.1:{self.ports['listen']}/infer"

    @property
    def control(self) -> str:
        """The world process's control URL."""
        return f"http://127.0.0.1:{self.ports['control']}"


def live_policy(source: Path, state: Path) -> Twin:
    """Copy `source` into `state` with budgets in memory and every node and pool on a
    placeholder port (never bound: the world picks its own, and `Twin.place` names them)."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    twin = Twin(state, state / "policy.yaml", state / "feed.json", doc)
    entries = [e for section, key in (("edge", "nodes"), ("cloud", "pools"))
               for e in (doc.get(section) or {}).get(key) or []]
    for i, entry in enumerate(entries):
        entry["address"] = f"127.0.0.1:{i + 1}"
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


def start_upstreams(procs: Processes, twin: Twin, scenario: Path) -> None:
    """The world and its feed server, each on ports it picks; then the policy naming them."""
    # its ports are written once the idle world's feed is, so the feed server finds one
    bound = start_emulator(procs, "world", twin.policy, "--scenario", str(scenario),
                           "--feed", str(twin.feed), "--control", "127.0.0.1:0")
    twin.ports["control"] = bound["control"]
    procs.python("feed", "feed", "serve", "--from", str(twin.feed), "--listen",
                 "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--poll", "0.05")
    twin.ports["feed"] = reported(procs, "feed", FEED_LINE, 0)["grpc"]
    twin.place(bound["targets"])


def start(procs: Processes, twin: Twin, scenario: Path, upstream_timeout_s: float) -> None:
    """World, feed server, router, Envoy: in that order, each listening before the next."""
    start_upstreams(procs, twin, scenario)
    twin.ports.update(start_gateway(procs, twin, "", upstream_timeout_s))


def start_router(procs: Processes, twin: Twin, name: str, upstream_timeout_s: float,
                 grpc: int = 0) -> dict[str, int]:
    """`hybrid-router serve` as `name` (ext_proc on `grpc`, 0: any): its ports, listening."""
    start = log_size(procs, name)
    router = procs.python(name, "serve", "--policy", str(twin.policy),
                          "--grpc", f"127.0.0.1:{grpc}", "--metrics", "127.0.0.1:0",
                          "--grace", "1", "--upstream-timeout",
                          f"{upstream_timeout_s + MARGIN_S:g}")
    ports = reported(procs, name, SERVE_LINE, start)
    wait_port(ports["grpc"], proc=router)
    wait_port(ports["metrics"], proc=router)
    return ports


def start_gateway(procs: Processes, twin: Twin, suffix: str, upstream_timeout_s: float
                  ) -> dict[str, int]:
    """A router and the Envoy in front of it (named `router`/`envoy` + `suffix`): their ports."""
    p = start_router(procs, twin, f"router{suffix}", upstream_timeout_s)
    config = twin.state / f"envoy{suffix}.yaml"
    subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                    str(twin.policy), "--mode", "gateway", "--router", f"127.0.0.1:{p['grpc']}",
                    "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                    "--upstream-timeout", f"{upstream_timeout_s + MARGIN_S:g}",
                    "-o", str(config)], check=True, cwd=ROOT)
    p["listen"], p["admin"] = start_envoy(procs, f"envoy{suffix}", config)
    wait_ready(f"http://127.0.0.1:{p['admin']}/ready", procs.procs[f"envoy{suffix}"])
    return p


def set_t0(twin: Twin, t0_wall: float) -> None:
    """Tell the world process that scenario t=0 is wall time `t0_wall`."""
    req = urllib.request.Request(f"{twin.control}/start?t0={t0_wall!r}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def concurrency(twin: Twin) -> dict[str, dict[str, int]]:
    """The world's nodes' own counts of what they held (`GET /concurrency`)."""
    with urllib.request.urlopen(f"{twin.control}/concurrency", timeout=10) as r:
        counts: dict[str, dict[str, int]] = json.load(r)
    return counts
