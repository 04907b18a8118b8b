"""`hybrid-router feed serve` as a real process: HTTP with ETag, gRPC Watch pushes on change."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.feed.sources import GrpcSource, HttpSource
from tests.feed.conftest import Setup, feed_doc, write_feed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(setup: Setup) -> Iterator[tuple[str, str]]:
    """(http url, grpc url) of a `feed serve` subprocess over the setup's feed file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "feed", "serve", "--from", str(setup.feed_path),
         "--listen", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--poll", "0.05"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"at (http://\S+) and (grpc://\S+)", line)
        assert m, line
        yield m.group(1), m.group(2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_feed_serve_http_etag_and_grpc_push(setup: Setup, served: tuple[str, str]
                                                  ) -> None:
    http_url, grpc_url = served
    http = HttpSource(http_url)
    first = await http.fetch("", 4096)
    assert first is not None and b'"version": 1' in first.raw
    assert await http.fetch(first.version, 4096) is None  # 304: costs nothing
    grpc = GrpcSource(grpc_url, grpc_url.removeprefix("grpc://"))
    try:
        stream = grpc.watch("", 4096)
        got = await asyncio.wait_for(anext(stream), 10)
        assert got.raw == first.raw
        write_feed(setup.feed_path, feed_doc(setup.clock(), unhealthy=["e3"]))
        pushed = await asyncio.wait_for(anext(stream), 10)
        assert b'"healthy": false' in pushed.raw
        await stream.aclose()
        again = await http.fetch(first.version, 4096)
        assert again is not None and again.raw == pushed.raw
    finally:
        await grpc.close()


def test_feed_without_action_prints_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "router", "feed"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "feed serve --from FILE" in out.stderr
