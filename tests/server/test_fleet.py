"""Many routers, one fleet: what is said when several routers run without a shared store,
and the capacity series, documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.capmetrics import CapacityCollector
from router.stores.capkeeper import CapacityStats
from tests.integration.stack import POLICY
from tests.test_reference import SPANS

ROOT = Path(__file__).resolve().parents[2]
PORTS = {f"p{i}": 9100 + i for i in range(6)}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)


@pytest.fixture
def unshared(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(store="memory", **PORTS))
    return path


def test_validate_refuses_several_routers_on_a_store_that_is_not_shared(unshared: Path,
                                                                          tmp_path: Path) -> None:
    assert cli("validate", str(unshared)).returncode == 0
    proc = cli("validate", "--routers", "3", str(unshared))
    assert proc.returncode == 2
    assert "not shared" in proc.stderr and "--routers 3" in proc.stderr
    shared = tmp_path / "shared.yaml"
    shared.write_text(POLICY.format(store="redis://127.0.0.1:1/0", **PORTS))
    assert cli("validate", "--routers", "3", str(shared)).returncode == 0


def test_a_sidecar_config_on_a_store_that_is_not_shared_says_so(unshared: Path) -> None:
    proc = cli("envoy-config", "--policy", str(unshared), "--mode", "sidecar")
    assert proc.returncode == 0 and "a router in every pod" in proc.stderr
    assert "not shared" not in cli("envoy-config", "--policy", str(unshared)).stderr


def test_every_capacity_series_is_documented() -> None:
    stats = CapacityStats(per={"n1": (1, 1, 0, 2, 4)})
    names = set()
    for family in CapacityCollector(stats).collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    assert len(names) == 12
    assert sorted(names - SPANS) == []
