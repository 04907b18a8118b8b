"""`serve --request-log`: every request through real Envoy leaves one line, written at its end."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from .stack import Stack

pytestmark = pytest.mark.integration


def test_each_request_is_logged_once_with_its_tags_decision_and_duration(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    stack = Stack(tmp_path, router_args=("--request-log", str(log)))
    sent = [
        ({"x-affinity-key": "cam-1", "x-affinity-residency": "GDPR",
          "x-emulate-delay-ms": "300"}, b""),
        ({"x-affinity-key": "cam-2", "x-affinity-residency": "CCPA"}, b"x" * 5000),
        ({"x-affinity-key": "bad", "x-affinity-slo-ms": "soon"}, b""),
        ({"x-affinity-key": "nowhere", "x-affinity-residency": "MARS"}, b""),
    ]

    async def go() -> list[int]:
        async with aiohttp.ClientSession() as s:
            out = []
            for headers, body in sent:
                async with s.post(stack.url + "/infer", headers=headers, data=body) as r:
                    await r.read()
                    out.append(r.status)
            return out

    try:
        stack.start()
        statuses = asyncio.run(go())
    finally:
        stack.stop_router(signal.SIGTERM)  # the log is flushed on the way out
        stack.close()
    assert statuses == [200, 200, 400, 503]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 4
    by_key = {x["tags"].get("x-affinity-key"): x for x in lines}
    slow = by_key["cam-1"]
    assert slow["mode"] in ("edge", "edge-degraded") and slow["node"] in ("eu-a", "eu-b")
    assert slow["duration_ms"] >= 300  # the stream ended with the HTTP request, not before
    assert slow["tags"] == {"x-affinity-key": "cam-1", "x-affinity-residency": "GDPR"}
    assert slow["content_length"] == 0 and slow["status"] == 200
    assert by_key["cam-2"]["content_length"] == 5000
    assert by_key["bad"]["status"] == 400 and by_key["bad"]["reason"] == "bad-tag"
    assert by_key["nowhere"]["status"] == 503
    assert all(x["t"] > 1.7e9 and x["policy"] for x in lines)
