"""Start the demo's processes: feed server, emulated upstreams, router, Envoy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from router.core.model import Policy
from router.demo.world import ROOT, World, make_world
from router.harness.procs import Processes, envoy_binary, free_port, wait_port
from router.policy.loader import load_policy


def start_router(procs: Processes, world: World) -> None:
    """(Re)start hybrid-router serve on the world's ports."""
    proc = procs.python("router", "serve", "--policy", str(world.policy_path),
                        "--grpc", f"127.0.0.1:{world.ports['grpc']}",
                        "--metrics", f"127.0.0.1:{world.ports['metrics']}", "--grace", "1",
                        "--xds", f"127.0.0.1:{world.ports['xds']}")  # the fleet: Envoy's alone
    wait_port(world.ports["grpc"], proc=proc)


def start(procs: Processes, state: Path) -> tuple[World, Policy, str, str]:
    """Everything up and listening; returns (world, policy, Envoy URL, metrics URL)."""
    feed_http, feed_grpc = free_port(), free_port()
    world = make_world(state, feed_grpc)
    world.ports.update(grpc=free_port(), xds=free_port(), metrics=free_port(), listen=free_port(),
                       admin=free_port(), feed_http=feed_http, feed_grpc=feed_grpc)
    policy = load_policy(world.policy_path)
    feed = procs.python("feed", "feed", "serve", "--from", str(world.feed_path),
                        "--listen", f"127.0.0.1:{feed_http}", "--grpc", f"127.0.0.1:{feed_grpc}")
    wait_port(feed_grpc, proc=feed)
    emu = procs.start("emulate", [sys.executable, "-m", "router.emulate", "--policy",
                                  str(world.policy_path)])
    for address in [n.address for n in policy.nodes] + [p.address for p in policy.pools]:
        wait_port(int(address.rpartition(":")[2]), proc=emu)
    start_router(procs, world)
    config = state / "envoy.yaml"
    subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                    str(world.policy_path), "--mode", "gateway",
                    "--router", f"127.0.0.1:{world.ports['grpc']}",
                    "--xds", f"127.0.0.1:{world.ports['xds']}",
                    "--listen", f"127.0.0.1:{world.ports['listen']}",
                    "--admin", f"127.0.0.1:{world.ports['admin']}", "-o", str(config)],
                   check=True, cwd=ROOT)
    envoy = procs.start("envoy", [envoy_binary(), "-c", str(config), "-l", "warning",
                                  "--base-id", str(world.ports["listen"]),
                                  "--concurrency", "1"])
    wait_port(world.ports["listen"], proc=envoy)
    return (world, policy, f"http://127.0.0.1:{world.ports['listen']}/infer",
            f"http://127.0.0.1:{world.ports['metrics']}/metrics")
