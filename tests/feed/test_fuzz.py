"""Standing fuzz: any feed document through `decode_feed` is a snapshot or a `FeedError`
with a known reason, never anything else (fixed seed, a few hundred examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.feedsnapshot import FeedError, FeedSnapshot, decode_feed
from router.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "policies" / "example.yaml")
DEMO: dict[str, Any] = json.loads((ROOT / "policies" / "feeds" / "demo.json").read_text())
REASONS = {"invalid", "bad-json", "oversize", "future", "older", "unknown-node"}
SETTINGS = settings(derandomize=True, database=None, max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEYS = ["version", "generated_at", "nodes", "prices", "spend", "id", "healthy", "compute_score",
        "slots", "inflight", "vram_used_fraction", "p95_ms", "uplink_mbps", "instance_type",
        "usd_per_hour", "tenant", "usd"]

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10**500, 10**500)
           | st.floats() | st.text(max_size=8) | st.sampled_from(["orin-01", "h100-spot",
                                                               "2026-11-22T10:00:00Z"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4), max_leaves=12)


@st.composite
def near_valid(draw: st.DrawFn) -> Any:
    """The demo feed with one to three values (or whole parts) replaced by arbitrary JSON."""
    doc: Any = json.loads(json.dumps(DEMO))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if isinstance(node[key], dict | list) and node[key] and draw(st.booleans()):
                node = node[key]
                continue
            node[key] = draw(values)
            break
    return doc


def encoded(doc: Any) -> bytes:
    """JSON text of `doc`, NaN and Infinity written as Python writes them."""
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def raw_mutations(draw: st.DrawFn) -> bytes:
    """The demo feed's bytes with a cut, a flipped byte, or an inserted fragment."""
    raw = encoded(DEMO)
    at = draw(st.integers(0, len(raw)))
    fragment = draw(st.sampled_from([b'"nodes": [], ', b"1" + b"0" * 400, b"7" * 5000,
                                     b"NaN", b"-Infinity", b"[" * 3000, b'"', b"\xff", b"\0",
                                     b", ", b"true", b'"version": 1, ']))
    kind = draw(st.sampled_from(["cut", "flip", "insert"]))
    if kind == "cut":
        return raw[:at]
    if kind == "flip" and at < len(raw):
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw[:at] + fragment + raw[at:]


def check(raw: bytes) -> None:
    """A snapshot, or a FeedError with a known reason: nothing else may come out."""
    try:
        snap = decode_feed(raw, POLICY, now=4e9)
    except FeedError as exc:
        assert exc.reason in REASONS, exc
        assert all(isinstance(f.path, tuple) for f in exc.findings)
        return
    assert isinstance(snap, FeedSnapshot)
    for state in snap.nodes.values():
        assert state.slots is None or 0 <= state.slots <= 1_000_000


@SETTINGS
@given(near_valid() | values)
def test_any_document_is_a_snapshot_or_a_feed_error(doc: Any) -> None:
    check(encoded(doc))


@SETTINGS
@given(raw_mutations())
def test_any_bytes_are_a_snapshot_or_a_feed_error(raw: bytes) -> None:
    check(raw)
