"""Passive health in the simulator, as in the server: a lost node's failures take it out of the
ring before the next feed says it is down (docs/reference.md, "Passive health")."""

from __future__ import annotations

import json
from pathlib import Path

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"
LOST_AT, FEED_AT = 25.0, 30.0  # twin.yaml loses rtx-a at 25 s; the next feed comes at 30 s


def _sent_to_lost_node(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    return [r["t"] for r in rows
            if r["node"] == "rtx-a" and LOST_AT <= r["t"] < FEED_AT]


def test_a_lost_node_leaves_the_ring_on_its_failures_before_the_next_feed(
        tmp_path: Path) -> None:
    off = tmp_path / "no-outliers.yaml"
    off.write_text((SCENARIOS / "policies" / "twin.yaml").read_text()
                   + "\noutliers: {failures: 0}\n")
    for name, extra in (("on", []), ("off", ["--policy", str(off)])):
        assert main(["simulate", "--scenario", str(SCENARIOS / "twin.yaml"), *extra,
                     "--out", str(tmp_path / name)]) == 0
    on, without = _sent_to_lost_node(tmp_path / "on"), _sent_to_lost_node(tmp_path / "off")
    # without passive health the lost node takes requests until the feed says it is down
    assert without and max(without) > FEED_AT - 1.0
    # with it, none after its first failures came back (the world's 1-s timeout, and a few
    # more arrivals while the fifth failure is counted)
    assert on and max(on) < LOST_AT + 2.0 and len(on) < len(without)
    report = json.loads((tmp_path / "on" / "report.json").read_text())
    assert report["slo_attainment"] > json.loads(
        (tmp_path / "off" / "report.json").read_text())["slo_attainment"]
