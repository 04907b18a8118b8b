"""The feed decoder is total: every document is a snapshot or a `FeedError` with a reason
code and the JSON path it refuses, never an OverflowError, RecursionError or last-wins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from router.core.feedsnapshot import FeedError, FeedSnapshot, decode_feed, parse_feed
from router.core.policy import Policy
from router.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "example.yaml"
DEMO = ROOT / "policies" / "feeds" / "demo.json"
NOW = 4e9  # after the demo feed's generated_at
BIG = "1" + "0" * 400


@pytest.fixture(scope="module")
def policy() -> Policy:
    """The example policy, with room for the large documents below."""
    pol = load_policy(POLICY)
    return pol.model_copy(update={"feed": pol.feed.model_copy(update={"max_bytes": 1 << 22})})


def demo_with(old: str, new: str) -> bytes:
    """The demo feed with the first `old` replaced by `new` (raw text, so any JSON goes)."""
    text = DEMO.read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


def doc(**parts: str) -> bytes:
    """A feed document from raw JSON parts."""
    base = {"version": "1", "generated_at": '"2026-11-22T10:00:00Z"'} | parts
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


HOSTILE = [
    pytest.param(demo_with('"compute_score": 0.4', f'"compute_score": {BIG}'),
                 ("nodes", 0, "compute_score"), "number too large", id="compute-score-10e400"),
    pytest.param(demo_with('"p95_ms": 41', f'"p95_ms": {BIG}'), ("nodes", 0, "p95_ms"),
                 "number too large", id="p95-10e400"),
    pytest.param(demo_with('"usd_per_hour": 2.10', f'"usd_per_hour": {BIG}'),
                 ("prices", 0, "usd_per_hour"), "number too large", id="price-10e400"),
    pytest.param(demo_with('"spend": []', f'"spend": [{{"tenant": "acme", "usd": -{BIG}}}]'),
                 ("spend", 0, "usd"), "number too large", id="spend-minus-10e400"),
    pytest.param(demo_with('"slots": 4', f'"slots": {BIG}'), ("nodes", 0, "slots"),
                 "number too large", id="slots-10e400"),
    pytest.param(demo_with('"inflight": 0', '"inflight": ' + "7" * 5000),
                 ("nodes", 0, "inflight"), "number too large", id="inflight-5000-digits"),
    pytest.param(demo_with('"slots": 4', '"slots": 10000000'), ("nodes", 0, "slots"),
                 "must be at most 1000000", id="slots-absurd"),
    pytest.param(demo_with('"usd_per_hour": 2.10', '"usd_per_hour": 1.5e999'),
                 ("prices", 0, "usd_per_hour"), "finite", id="float-overflow"),
    pytest.param(demo_with('"version": 1', '"version": true'), ("version",),
                 "got boolean True", id="version-true"),
    pytest.param(demo_with('"version": 1', '"version": 1.0'), ("version",),
                 "expected an integer", id="version-float"),
    pytest.param(demo_with('"version": 1', '"version": 2'), ("version",),
                 "unsupported feed version 2", id="version-2"),
    pytest.param(demo_with('"healthy": true', '"healthy": 1'), ("nodes", 0, "healthy"),
                 "expected true or false", id="healthy-1"),
    pytest.param(demo_with('"slots": 4', '"slots": "4"'), ("nodes", 0, "slots"),
                 "got string '4'", id="slots-string"),
    pytest.param(doc(nodes="[]", prices="[]", **{"nodes ": "[]"}), (), "unknown key",
                 id="unknown-top-level"),
    pytest.param(demo_with('"nodes": [', '"nodes": [], "nodes": ['), ("nodes",),
                 "duplicate key 'nodes'", id="duplicate-nodes-key"),
    pytest.param(demo_with('"slots": 4,', '"slots": 4, "slots": 8,'), ("nodes", 0, "slots"),
                 "duplicate key 'slots'", id="duplicate-field"),
    pytest.param(doc(nodes='[{"id": "orin-01"}, {"id": "orin-01"}]'), ("nodes", 1, "id"),
                 "duplicate id 'orin-01'", id="duplicate-node"),
    pytest.param(doc(prices='[{"instance_type": "x", "usd_per_hour": 1}, '
                            '{"instance_type": "x", "usd_per_hour": 9}]'),
                 ("prices", 1, "instance_type"), "duplicate instance_type 'x'",
                 id="duplicate-price"),
    pytest.param(doc(nodes='[{"id": "orin-01", "uplink_mbps": -1}]'),
                 ("nodes", 0, "uplink_mbps"), "must be at least 0", id="negative-uplink"),
    pytest.param(doc(generated_at="1795000000"), ("generated_at",), "timestamp",
                 id="time-not-a-string"),
    pytest.param(doc(nodes='{"id": "orin-01"}'), ("nodes",), "expected a list",
                 id="nodes-not-a-list"),
    pytest.param(doc(nodes=f"[{BIG}]"), ("nodes", 0), "expected a mapping",
                 id="huge-number-for-a-node"),
]


@pytest.mark.parametrize(("raw", "path", "fragment"), HOSTILE)
def test_hostile_feed_is_invalid_at_its_path(policy: Policy, raw: bytes,
                                             path: tuple[str | int, ...], fragment: str) -> None:
    with pytest.raises(FeedError) as info:
        decode_feed(raw, policy, now=NOW)
    assert info.value.reason == "invalid", info.value
    assert info.value.path[:len(path)] == path, info.value
    assert fragment in info.value.detail, info.value.detail


@pytest.mark.parametrize(("raw", "reason"), [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "bad-json", id="deep-nesting"),
    pytest.param(demo_with('"usd_per_hour": 2.10', '"usd_per_hour": NaN'), "invalid", id="nan"),
    pytest.param(demo_with('"usd_per_hour": 2.10', '"usd_per_hour": -Infinity'), "invalid",
                 id="infinity"),
    pytest.param(b'{"version": 1,', "bad-json", id="truncated"),
    pytest.param(b'\xff\xfe{"version": 1}', "bad-json", id="not-utf8"),
    pytest.param(doc(nodes='[{"id": "ghost"}]'), "unknown-node", id="unknown-node"),
    pytest.param(doc(pools='[{"id": "ghost-pool"}]'), "unknown-node", id="unknown-pool"),
    pytest.param(doc(pools='[{"id": "neo-eu", "available_fraction": 1.5}]'), "invalid",
                 id="pool-fraction-over-1"),
    pytest.param(doc(pools='[{"id": "neo-eu"}, {"id": "neo-eu"}]'), "invalid",
                 id="pool-twice"),
    pytest.param(doc(generated_at='"2999-01-01T00:00:00Z"'), "future", id="future"),
    pytest.param(b"[]", "invalid", id="not-an-object"),
])
def test_each_refusal_has_its_reason(policy: Policy, raw: bytes, reason: str) -> None:
    with pytest.raises(FeedError) as info:
        decode_feed(raw, policy, now=NOW)
    assert info.value.reason == reason, info.value


def test_bad_json_carries_its_line(policy: Policy) -> None:
    with pytest.raises(FeedError) as info:
        decode_feed(b'{"version": 1,\n "nodes": [,]}', policy, now=NOW)
    assert (info.value.reason, info.value.at) == ("bad-json", (2, 12))


def test_measured_uplink_reaches_the_snapshot(policy: Policy) -> None:
    snap = decode_feed(demo_with('"p95_ms": 41', '"p95_ms": 41, "uplink_mbps": 38'), policy,
                       now=NOW)
    assert isinstance(snap, FeedSnapshot)
    assert snap.nodes["orin-01"].uplink_mbps == 38.0
    assert snap.nodes["orin-02"].uplink_mbps is None


def test_every_problem_is_listed_first_one_in_detail(policy: Policy) -> None:
    with pytest.raises(FeedError) as info:
        parse_feed({"version": 1, "generated_at": "2026-11-22T10:00:00Z",
                    "nodes": [{"id": "orin-01", "slots": -1, "inflight": -2}]}, policy, now=NOW)
    assert [f.path for f in info.value.findings] == [("nodes", 0, "slots"),
                                                    ("nodes", 0, "inflight")]
    assert info.value.detail.endswith("(and 1 more)")


def test_legal_zeros_and_absent_fields_are_kept(policy: Policy) -> None:
    snap = decode_feed(doc(nodes='[{"id": "orin-01", "compute_score": 0, "slots": 0, '
                                 '"uplink_mbps": 0}]', spend='[{"tenant": "a", "usd": 0}]'),
                       policy, now=NOW)
    state = snap.nodes["orin-01"]
    assert (state.compute_score, state.slots, state.uplink_mbps) == (0.0, 0, 0.0)
    assert state.p95_ms is None and snap.spend == {"a": 0.0}


FEED_FILES = [
    pytest.param('"compute_score": 0.4', f'"compute_score": {BIG}', "number too large",
                 id="compute-score-10e400"),
    pytest.param('"slots": 4', f'"slots": {BIG}', "number too large", id="slots-10e400"),
    pytest.param('"version": 1', '"version": true', "got boolean True", id="version-true"),
    pytest.param('"nodes": [', '"nodes": [], "nodes": [', "duplicate key 'nodes'",
                 id="duplicate-nodes"),
    pytest.param('"spend": []', '"spend": [{"tenant": "t", "usd": ' + "9" * 5000 + "}]",
                 "number too large",
                 id="spend-5000-digits"),
]


@pytest.mark.parametrize(("old", "new", "fragment"), FEED_FILES)
def test_validate_locates_a_bad_feed_from_the_outside(tmp_path: Path, old: str, new: str,
                                                      fragment: str) -> None:
    path = tmp_path / "feed.json"
    text = DEMO.read_text().replace(old, new, 1)
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "router", "validate", "--policy", str(POLICY),
                           str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    m = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): feed rejected \(invalid\): ", lines[0])
    assert m, lines
    # The line and column are those of the refused value (its key, for a duplicate key).
    line, col = int(m.group(1)), int(m.group(2))
    row = text.splitlines()[line - 1]
    value = new.rsplit(": ", 1)[1] if "duplicate" not in fragment else '"nodes"'
    assert row[col - 1:].startswith(value[:20]), (row, col)
    assert json.loads(DEMO.read_text())  # the base document itself is fine


def test_a_reclaim_notice_reaches_the_snapshot(policy: Policy) -> None:
    snap = decode_feed(doc(pools='[{"id": "neo-eu", "available_fraction": 0.25}]'), policy,
                       now=NOW)
    assert dict(snap.pools) == {"neo-eu": 0.25}
