"""docs/reference.md keeps up with the code: every metric, flag, policy key and report key is in it.

Names are looked for as `code` spans, so a word that merely appears in prose
does not count. CLI flags are looked for in their own command's section.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from router import wire
from router.cli import COMMANDS, build_parser, main
from router.core.policy import Policy
from router.core.schema import key_reference
from router.metrics import RouterMetrics
from simulator.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
TEXT = REFERENCE.read_text(encoding="utf-8")
# Every section and key the loader knows, so that enumerating them visits each one.
def code_spans(text: str) -> set[str]:
    """Every `code` span of the text."""
    return set(re.findall(r"`([^`\n]+)`", text))


SPANS = code_spans(TEXT)


def schema_keys(model: Any) -> set[str]:
    """Dotted paths of every key the model accepts, read off the schema (where defaults live)."""
    return {row[0] for row in key_reference(model)}


def test_every_policy_key_the_loader_accepts_is_documented() -> None:
    keys = schema_keys(Policy)
    # Guard against a vacuous pass: the enumeration must see the loader's whole surface.
    assert {"refresh_seconds", "hashing.balance_factor", "hashing.min_cap_fraction",
            "edge.nodes[].slots", "edge.nodes[].uplink_mbps", "cloud.pools[].compute_ms",
            "cloud.uplink_mbps", "split.cloud_compute_fraction", "defaults.payload_kb",
            "quality.recover_below", "budgets.tenants.NAME.limit_usd"} <= keys, keys
    assert sorted(keys - SPANS) == []


def test_every_scenario_key_is_documented() -> None:
    # a list of points is one key; a price map's keys are instance types the user names
    keys = {k.removesuffix("[]").removesuffix(".NAME") for k in schema_keys(Scenario)}
    assert {"duration_s", "traffic.rate_rps", "traffic.classes[].slo_ms",
            "events[].partition.for_s", "events[].throttle.compute_score"} <= keys, keys
    missing = []
    for key in sorted(keys):
        event = re.fullmatch(r"(events\[\]\.\w+)\.(\w+)", key)
        if event:  # an event's own fields are named in its row: `{node, compute_score}`
            row = next((line for line in TEXT.splitlines() if f"`{event[1]}`" in line), "")
            if event[2] not in row:
                missing.append(key)
        elif key not in SPANS:
            missing.append(key)
    assert missing == []


def test_every_metric_the_router_exports_is_documented() -> None:
    names = set()
    for family in RouterMetrics().registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    assert len(names) >= 8
    assert sorted(names - SPANS) == []


def subcommands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    """(`hybrid-router CMD [SUB]`, parser) for every leaf command under `parser`."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from subcommands(sub, f"{prefix} {name}")


def section(title: str) -> str:
    """The text of the reference section headed `### title` (or `### `title``)."""
    head = re.search(rf"^### `?{re.escape(title)}`?$", TEXT, flags=re.M)
    assert head is not None, f"no section '{title}' in {REFERENCE}"
    end = re.search(r"^#{2,3} ", TEXT[head.end():], flags=re.M)
    return TEXT[head.start():head.end() + end.start()] if end else TEXT[head.start():]


def test_every_command_and_long_flag_is_documented_in_its_section() -> None:
    leaves = []
    for command in COMMANDS:
        top = build_parser(command)
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        leaves += list(subcommands(sub.choices[command], f"hybrid-router {command}"))
    assert len(leaves) >= len(COMMANDS)
    for title, parser in leaves:
        text = section(title)
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue  # internal flags (e.g. serve's --worker-index) are not the interface
            for flag in (f for f in action.option_strings if f.startswith("--")):
                assert re.search(rf"`{re.escape(flag)}[ `]", text), f"{title}: {flag}"


def test_every_wire_name_is_documented() -> None:
    names = {*wire.AFFINITY_HEADERS, *wire.ROUTE_HEADERS, wire.H_RETRY_AFTER}
    names |= {v for k, v in vars(wire).items() if k.startswith(("R_", "E_", "MODE"))
              and isinstance(v, str)}
    assert sorted(names - SPANS) == []


def test_every_report_key_and_decision_field_is_documented(tmp_path: Path) -> None:
    out = tmp_path / "out"
    scenario = ROOT / "simulator" / "scenarios" / "fintech.yaml"
    assert main(["simulate", "--scenario", str(scenario), "--requests", "300", "--baselines",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    keys = set(report) | set(report["comparison"][0])
    assert {"requests", "latency_ms", "comparison"} <= keys
    table = section("report.json")
    assert sorted(k for k in keys if f"`{k}`" not in table) == []
    assert all(f"`{p}`" in table for p in report["latency_ms"])
    line = json.loads((out / "decisions.jsonl").read_text().splitlines()[0])
    fields = section("Decisions file")
    assert sorted(k for k in line if f"`{k}`" not in fields) == []


def test_the_reference_is_the_projects_own() -> None:
    assert "CONTRACT" not in TEXT
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", TEXT)
    assert image is not None and (REFERENCE.parent / image.group(1)).is_file()
