"""The emulated upstreams on ports of their own choosing (`--any-port --ports-file`), the way
the integration stack starts them: no port is handed over between processes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from router.harness.procs import free_port
from tests.integration.stack import ROOT, stop, wait_file

POLICY = """\
version: 1
edge:
  nodes:
    - {id: a, address: "127.0.0.1:1", residency: [GDPR]}
    - {id: b, address: "127.0.0.1:2", residency: [GDPR]}
cloud:
  pools:
    - {id: c, address: "127.0.0.1:3", residency: [GDPR], models: ["*"],
       instance_type: t, latency_ms: 20, compute_ms: 10, usd_per_hour: 1}
"""


def test_any_port_binds_each_target_and_reports_where(tmp_path: Path) -> None:
    policy, ports = tmp_path / "p.yaml", tmp_path / "ports.json"
    policy.write_text(POLICY)
    emu = subprocess.Popen([sys.executable, "-m", "router.emulate", "--policy", str(policy),
                            "--any-port", "--ports-file", str(ports)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        picked = json.loads(wait_file(ports, emu))
        assert set(picked) == {"a", "b", "c"} and len(set(picked.values())) == 3
        for target, port in picked.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
                assert json.load(r)["id"] == target
    finally:
        stop(emu)


def test_any_port_without_a_ports_file_is_a_usage_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    proc = subprocess.run([sys.executable, "-m", "router.emulate", "--policy", str(policy),
                           "--any-port"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2 and "go together" in proc.stderr


def test_free_port_never_hands_out_a_number_twice() -> None:
    """What must be told its port gets one no earlier call in this process returned."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
