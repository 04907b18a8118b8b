"""Fixtures that run the real stack (Envoy + router + emulated upstreams) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack shared by a test module; stopped at the end whatever happens."""
    s = Stack(Path(tmp_path_factory.mktemp("stack")))
    try:
        yield s.start()
    finally:
        s.close()
