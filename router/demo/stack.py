"""Start the demo's processes: feed server, emulated upstreams, router, Envoy.

Each binds port 0 and reports what it got (`router.harness.bound`), and each is started
only once the ports it must be told are known: the upstreams first, then the policy naming
their real addresses, then the router, then Envoy's config with the router's ports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from router.core.policy import Policy
from router.demo.files import ROOT, World, make_world
from router.harness.bound import FEED_LINE, SERVE_LINE, log_size, reported, start_envoy
from router.harness.emulator import start_emulator
from router.harness.procs import Processes, wait_port
from router.policy.loader import load_policy


def start_router(procs: Processes, world: World) -> None:
    """Start hybrid-router serve on ports it picks; restarted, on the same ones (Envoy's
    config names them, so a restart cannot move)."""
    p, first = world.ports, "grpc" not in world.ports
    mark = log_size(procs, "router")
    proc = procs.python("router", "serve", "--policy", str(world.policy_path),
                        "--grpc", f"127.0.0.1:{p.get('grpc', 0)}",
                        "--metrics", f"127.0.0.1:{p.get('metrics', 0)}", "--grace", "1",
                        "--xds", f"127.0.0.1:{p.get('xds', 0)}")  # the fleet: Envoy's alone
    if first:
        p.update(reported(procs, "router", SERVE_LINE, mark))
    wait_port(p["grpc"], proc=proc)


def start_upstreams(procs: Processes, world: World) -> None:
    """The feed server and the emulated nodes and pools, each on ports it picks; then the
    policy that names them."""
    procs.python("feed", "feed", "serve", "--from", str(world.feed_path),
                 "--listen", "127.0.0.1:0", "--grpc", "127.0.0.1:0")
    feed = reported(procs, "feed", FEED_LINE, 0)
    world.ports.update(feed_http=feed["http"], feed_grpc=feed["grpc"])
    world.place({}, feed["grpc"])  # the example's ports, never bound: the emulator picks
    bound = start_emulator(procs, "emulate", world.policy_path)
    world.place(bound["targets"], feed["grpc"])


def start(procs: Processes, state: Path) -> tuple[World, Policy, str, str]:
    """Everything up and listening; returns (world, policy, Envoy URL, metrics URL)."""
    world = make_world(state)
    start_upstreams(procs, world)
    policy = load_policy(world.policy_path)
    start_router(procs, world)
    config = state / "envoy.yaml"
    subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                    str(world.policy_path), "--mode", "gateway",
                    "--router", f"127.0.0.1:{world.ports['grpc']}",
                    "--xds", f"127.0.0.1:{world.ports['xds']}",
                    "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "-o", str(config)],
                   check=True, cwd=ROOT)
    world.ports["listen"], world.ports["admin"] = start_envoy(procs, "envoy", config)
    return (world, policy, f"http://127.0.0.1:{world.ports['listen']}/infer",
            f"http://127.0.0.1:{world.ports['metrics']}/metrics")
