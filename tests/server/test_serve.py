"""`hybrid-router serve` and `envoy-config` as users run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.cli import main
from tests.server.serving import kill_group, serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"


@pytest.mark.parametrize("static", [False, True], ids=["xds", "static"])
@pytest.mark.parametrize("mode", ["gateway", "sidecar"])
def test_checked_in_envoy_configs_equal_the_generator(mode: str, static: bool,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = ["envoy-config", "--policy", "policies/example.yaml", "--mode", mode]
    assert main(args + (["--static"] if static else [])) == 0
    name = f"{mode}-static.yaml" if static else f"{mode}.yaml"
    assert capsys.readouterr().out == (ROOT / "envoy" / name).read_text()


def _endpoints(cluster: dict[str, Any]) -> set[str]:
    out = set()
    for group in cluster["load_assignment"].get("endpoints", []):
        for e in group["lb_endpoints"]:
            sock = e["endpoint"]["address"]["socket_address"]
            out.add(f"{sock['address']}:{sock['port_value']}")
    return out


def test_static_clusters_hold_edge_nodes_by_residency_and_each_pool_alone() -> None:
    from router.envoy_config import build
    from router.policy.loader import load_policy

    policy = load_policy(EXAMPLE)
    doc = build(policy, mode="gateway", listen="127.0.0.1:1", router="127.0.0.1:2",
                admin="127.0.0.1:3", static=True)
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    pools = {p.address for p in policy.pools}
    assert _endpoints(clusters["edge.any"]) == {n.address for n in policy.nodes}
    for tag in ("GDPR", "CCPA"):
        assert _endpoints(clusters[f"edge.{tag}"]) == {
            n.address for n in policy.nodes if tag in n.residency}
    for name, cluster in clusters.items():
        if name.startswith("edge."):
            assert not _endpoints(cluster) & pools  # fail-open never reaches a cloud pool
            assert "override_host" in yaml.safe_dump(cluster)
    for pool in policy.pools:
        assert _endpoints(clusters[f"cloud.{pool.id}"]) == {pool.address}
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_xds_bootstrap_takes_clusters_and_routes_from_the_router() -> None:
    from router.envoy_config import build
    from router.policy.loader import load_policy

    doc = build(load_policy(EXAMPLE), mode="gateway", listen="127.0.0.1:1",
                router="127.0.0.1:2", admin="127.0.0.1:3")
    assert [c["name"] for c in doc["static_resources"]["clusters"]] == ["hybrid_router"]
    ads = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    assert ads["cluster_name"] == "hybrid_router"
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    assert hcm["rds"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}
    strip = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert strip == [{"remove_on_match": {"key_matcher": {"prefix": "x-route-"}}}]


def test_serve_refuses_a_bad_policy_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nedge: {nodes: [{id: a, address: nowhere}]}\n")
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--policy", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert f"{bad}:2:" in proc.stderr and "not host:port" in proc.stderr


def test_health_then_graceful_drain_on_sigterm(tmp_path: Path) -> None:
    served = serve(tmp_path, "--metrics", "127.0.0.1:0")  # its port line: bound and serving
    try:
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        out = served.stop()
    assert served.proc.returncode == 0
    assert b"draining" in out and b"0 routed requests unfinished" in out


def group_members(pgid: int) -> list[str]:
    """Command lines of the live processes in process group `pgid` (zombies are not live)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # gone while read
    return out


def test_a_sigkilled_router_leaves_no_process_behind(tmp_path: Path) -> None:
    """Its policy worker (and the worker's resource tracker) exit on their own: a restarted
    router must not leave one more interpreter running each time it was killed."""
    served = serve(tmp_path, "--metrics", "127.0.0.1:0")
    pgid = served.proc.pid  # serve starts its own session: the group is it and its children
    try:
        until(lambda: any("multiprocessing.spawn" in c for c in group_members(pgid)), 60)
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait()
        until(lambda: not group_members(pgid), 10)
    finally:
        left = group_members(pgid)
        kill_group(served.proc)
    assert left == []


def until(check: Callable[[], bool], seconds: float) -> None:
    """Poll `check` every 0.1 s until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:g} s"
        time.sleep(0.1)


def test_sigterm_lets_open_streams_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    import queue
    import time
    from collections.abc import Iterator

    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

    from tests.server.test_servicer import headers_msg

    served = serve(tmp_path, "--metrics", "off", "--grace", "10")
    port, proc = served.port, served.proc

    def stream(stub: Any, box: queue.Queue[Any]) -> Iterator[Any]:
        box.put(headers_msg(x_affinity_key="drain-1"))
        return iter(stub.Process(iter(box.get, None), timeout=30))

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as held, \
                grpc.insecure_channel(f"127.0.0.1:{port}") as late:
            box: queue.Queue[Any] = queue.Queue()
            replies = stream(pb_grpc.ExternalProcessorStub(held), box)
            assert next(replies).WhichOneof("response") == "request_headers"
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(grpc.RpcError) as refused:
                next(stream(pb_grpc.ExternalProcessorStub(late), queue.Queue()))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert proc.poll() is None  # still draining the open stream
            box.put(None)  # the HTTP request ends: Envoy closes its stream
            assert list(replies) == []
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert b"1 streams open" in out and b"0 routed requests unfinished" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
