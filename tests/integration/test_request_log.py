"""`serve --request-log`: every request through real Envoy leaves one line, written at its end."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from router.cli import main

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


def test_a_served_log_replays_through_a_policy_edit(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "requests.jsonl"
    stack = Stack(tmp_path, router_args=("--request-log", str(log)))
    eu = [{"x-affinity-key": f"user-{i % 12}", "x-affinity-residency": "GDPR"}
          for i in range(30)]
    sent = [*eu, {"x-affinity-key": "bad", "x-affinity-slo-ms": "soon"}]

    async def go() -> list[int]:
        async with aiohttp.ClientSession() as s:
            out = []
            for headers in sent:
                async with s.post(stack.url + "/infer", headers=headers, data=b"x" * 2000) as r:
                    await r.read()
                    out.append(r.status)
            return out

    try:
        stack.start()
        statuses = asyncio.run(go())
    finally:
        stack.stop_router(signal.SIGTERM)
        stack.close()
    assert statuses == [200] * 30 + [400]
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    used = Counter(x["node"] for x in logged if x["status"] == 200)
    assert set(used) <= {"eu-a", "eu-b"} and sum(used.values()) == 30

    edited = tmp_path / "no-eu-b.yaml"
    edited.write_text(re.sub(r"    - \{id: eu-b,[^}]*\}\n", "", stack.policy_text))
    assert "eu-b" not in edited.read_text()
    for policy, gone in ((stack.policy, None), (edited, "eu-b")):
        assert main(["simulate", "--trace", str(log), "--policy", str(policy)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["trace"]["lines"] == 31 and report["trace"]["parse_refused"] == 1
        assert report["production"]["node_counts"] == dict(sorted(used.items()))
        assert report["candidate"]["requests"] == 30
        assert report["candidate"]["residency_violations"] == 0
        if gone is not None:
            assert gone not in report["candidate"]["node_counts"]
            assert report["candidate"]["node_counts"].get("eu-a", 0) + \
                report["candidate"]["node_counts"].get("cloud-eu", 0) == 30
