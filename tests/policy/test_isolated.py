"""The policy worker process: warmed before the first reload, so that reload pays only for
the parse (it used to pay for importing the loader, past ten seconds on a loaded machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router.policy import isolated


@pytest.fixture
def fresh_worker() -> Iterator[None]:
    """No worker before the test, none left after it."""
    isolated.shutdown()
    yield
    isolated.shutdown()


@pytest.mark.usefixtures("fresh_worker")
def test_warm_worker_has_imported_the_loader() -> None:
    isolated.warm().result(timeout=60)
    # eval is a builtin: asking through it imports nothing more in the worker
    probe = "'router.policy.loader' in __import__('sys').modules"
    assert isolated._executor().submit(eval, probe).result(timeout=60)
