"""The node emulator, started by name: it follows the simulator's world model
(`simulator.emulate`), which the router's own modules never import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from router.harness.bound import wait_file
from router.harness.procs import Processes

MODULE = "simulator.emulate"


def start_emulator(procs: Processes, name: str, policy: Path, *args: str) -> dict[str, Any]:
    """The node emulator as `name`, serving `policy`'s nodes and pools (more flags in `args`)
    on ports it picks: what it bound, `{"targets": {id: port}}` (and `"control": port`)."""
    ports_file = procs.logdir / f"{name}-ports.json"
    ports_file.unlink(missing_ok=True)
    proc = procs.start(name, [sys.executable, "-m", MODULE, "--policy", str(policy),
                              "--ports-file", str(ports_file), *args])
    bound: dict[str, Any] = json.loads(wait_file(ports_file, proc))
    return bound
