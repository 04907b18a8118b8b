"""A policy worker that dies: the tests' stand-in for a worker killed mid-read.

The worker unpickles `dying_load` by name, so it runs in the worker process: while the
file `worker-deaths` beside the policy holds a count above 0, a read lowers it and exits
the worker process at once, as a kill would.
"""

from __future__ import annotations

import os
from pathlib import Path

from router.core.policy import Policy
from router.policy import isolated


def dying_load(path: str, text: str | None = None
               ) -> tuple[Policy | None, list[tuple[str, int, int, str, str]]]:
    """Die while `worker-deaths` beside `path` counts above 0, else read as the worker does."""
    marker = Path(path).parent / "worker-deaths"
    left = int(marker.read_text()) if marker.exists() else 0
    if left > 0:
        marker.write_text(str(left - 1))
        os._exit(1)
    return isolated._load(path, text)
