"""The demo's world: a copy of the example policy on the ports its processes bound, and its live
feed file."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from router.core.feedsnapshot import format_time
from router.harness.bound import write_atomically

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "policies" / "example.yaml"
EXAMPLE_FEED = ROOT / "policies" / "feeds" / "demo.json"


@dataclass
class World:
    """Paths and ports of one demo run, and the feed document it edits for events."""

    state: Path
    policy_path: Path
    feed_path: Path
    template: str  # the policy text before `place` names the real addresses
    ports: dict[str, int] = field(default_factory=dict)  # of the processes, as they bound them
    feed: dict[str, object] = field(default_factory=dict)

    def place(self, targets: dict[str, int], feed_grpc_port: int) -> None:
        """Write the policy with each node and pool (by id) on the port its server bound (the
        example's own ports stay where `targets` has none) and the feed on gRPC Watch."""
        def real(match: re.Match[str]) -> str:
            port = targets.get(match.group(2))
            return match.group(0) if port is None else f'{match.group(1)}127.0.0.1:{port}"'

        text = re.sub(r'(\{id: ([\w.-]+), address: ")127\.0\.0\.1:\d+"', real, self.template)
        text = re.sub(r'feed: \{source: "[^"]*"',
                      f'feed: {{source: "grpc://127.0.0.1:{feed_grpc_port}"', text)
        self.policy_path.write_text(text)

    def write_feed(self) -> None:
        """Stamp and write the feed atomically (the feed server pushes the change)."""
        self.feed["generated_at"] = format_time(time.time())
        write_atomically(self.feed_path, json.dumps(self.feed, indent=1))

    def node(self, node_id: str) -> dict[str, object]:
        """The feed entry of `node_id`."""
        nodes = self.feed["nodes"]
        assert isinstance(nodes, list)
        for entry in nodes:
            if entry["id"] == node_id:
                return cast(dict[str, object], entry)  # edited in place
        raise KeyError(node_id)

    def set_price(self, instance_type: str, usd_per_hour: float) -> None:
        """Change a spot price in the feed."""
        prices = self.feed["prices"]
        assert isinstance(prices, list)
        for entry in prices:
            if entry["instance_type"] == instance_type:
                entry["usd_per_hour"] = usd_per_hour


def make_world(state: Path) -> World:
    """Copy the example policy (its addresses still the example's until `World.place`) and
    write the feed."""
    state.mkdir(parents=True, exist_ok=True)
    text = EXAMPLE_POLICY.read_text()
    text = text.replace("refresh_seconds: 30", "refresh_seconds: 5")
    text = re.sub(r'store: "[^"]*"', f'store: "sqlite:{state / "budget.db"}"', text)
    # Small budgets so the demo's spend is visible against them within minutes.
    text = re.sub(r"tenants: \{.*\}", "tenants: {default: {limit_usd: 0.05}, "
                  "acme: {limit_usd: 2}, fintech: {limit_usd: 0.5}}", text)
    policy_path = state / "policy.yaml"
    policy_path.write_text(text)
    world = World(state=state, policy_path=policy_path, feed_path=state / "feed.json",
                  template=text, feed=json.loads(EXAMPLE_FEED.read_text()))
    world.write_feed()
    return world
