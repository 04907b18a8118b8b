"""`hybrid-router explain`: every candidate and verdict, budget standing, caps, headers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from router import wire
from router.cli import main
from router.core.feedsnapshot import format_time

ROOT = Path(__file__).resolve().parents[1]
POLICY = str(ROOT / "policies" / "example.yaml")
FEED = str(ROOT / "policies" / "feeds" / "demo.json")
GDPR = ["-H", "x-affinity-residency: GDPR", "-H", "x-affinity-tenant: acme",
        "-H", "x-affinity-key: cam-17"]
AT_FEED = ["--now", "2026-11-22T10:00:00Z"]  # the demo feed's generated_at: a fresh feed
GDPR_EDGE = ["orin-01", "orin-02", "rtx-01", "rtx-02", "l4-01", "a100-01"]
SLOTS = {"orin-01": 4, "orin-02": 4, "rtx-01": 8, "rtx-02": 8, "l4-01": 6, "a100-01": 16}


def explain_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["explain", "--policy", POLICY, "--feed", FEED, "--json", *AT_FEED, *extra]) == 0
    info: dict[str, Any] = json.loads(capsys.readouterr().out)
    return info


def test_text_names_exclusions_pick_decision_and_headers(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--policy", POLICY, "--feed", FEED, *AT_FEED, *GDPR,
                 "-H", "x-affinity-model: vision-v3"]) == 0
    out = capsys.readouterr().out
    assert "rtx-03" in out and "residency GDPR not met" in out
    assert "l4-01" in out and "does not serve model vision-v3" in out
    assert "picked by bounded-load walk" in out
    assert "budget   acme 2026-11: used $0.00 of $1000.00" in out
    assert "headers Envoy would get" in out
    assert f"  {wire.H_MODE}: edge" in out and f"  {wire.H_TARGET}: 127.0.0.1:" in out


def test_load_at_slots_moves_the_key_to_the_next_node(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    home = explain_json(capsys, *GDPR)["decision"]["node"]
    assert home in GDPR_EDGE
    info = explain_json(capsys, *GDPR, "--load", f"{home}={SLOTS[home]}")
    walk = [c for c in info["candidates"] if c["mode"] == "edge" and c["load"] is not None]
    assert walk[0]["target"] == home and walk[0]["verdict"] == "out of slots"
    assert walk[0]["load"] == SLOTS[home]
    assert walk[-1]["verdict"] == "picked by bounded-load walk"
    assert info["decision"]["node"] == walk[-1]["target"] != home


def test_bounded_load_cap_is_shown_against_load(capsys: pytest.CaptureFixture[str]) -> None:
    key = next(k for k in (f"user-{i}" for i in range(200))
               if explain_json(capsys, *GDPR[:4], "-H", f"x-affinity-key: {k}")
               ["decision"]["node"] == "a100-01")
    # 12 of 16 slots busy: under its slots, but over ceil(1.25 x 13 x 8 / 14.8) = 9
    info = explain_json(capsys, *GDPR[:4], "-H", f"x-affinity-key: {key}", "--load",
                        "a100-01=12")
    first = info["candidates"][next(i for i, c in enumerate(info["candidates"])
                                    if c["load"] is not None)]
    assert (first["target"], first["load"], first["cap"]) == ("a100-01", 12, 9)
    assert first["verdict"] == "at its bounded-load cap"
    assert info["decision"]["node"] != "a100-01"


def all_edge_full() -> list[str]:
    return [f"--load={n}={SLOTS[n]}" for n in GDPR_EDGE]


def test_edge_full_splits_or_goes_to_cloud_and_hard_budget_refuses(
        capsys: pytest.CaptureFixture[str]) -> None:
    info = explain_json(capsys, *GDPR, "-H", "x-affinity-slo-ms: 300", *all_edge_full())
    d = info["decision"]  # inference slots full, feature slots free: split
    assert d["mode"] == "split" and d["split_cloud"] == "127.0.0.1:9201"
    assert d["headers"][wire.H_REASON] == wire.R_CAPACITY
    info = explain_json(capsys, *GDPR, "-H", "x-affinity-slo-ms: 300", "-H",
                        "x-affinity-degrade: false", *all_edge_full())
    assert info["decision"]["mode"] == "cloud" and info["decision"]["node"] == "neo-eu"
    assert info["decision"]["headers"][wire.H_REASON] == wire.R_CAPACITY
    info = explain_json(capsys, *GDPR, "-H", "x-affinity-slo-ms: 300", *all_edge_full(),
                        "--spend", "acme=1000")
    assert info["budget"]["standing"].startswith("at hard limit")
    assert any(c["target"] == "neo-eu" and c["verdict"].endswith("hard budget reached")
               for c in info["candidates"])
    d = info["decision"]
    assert d["status"] == 429 and d["error"] == wire.E_BUDGET
    assert int(d["response_headers"][wire.H_RETRY_AFTER]) > 0


def test_soft_budget_keeps_cloud_last(capsys: pytest.CaptureFixture[str]) -> None:
    info = explain_json(capsys, *GDPR, "-H", "x-affinity-slo-ms: 5", "--spend", "acme=850")
    assert info["budget"]["used_usd"] == pytest.approx(850.0)
    assert info["budget"]["standing"].startswith("over soft")
    assert info["decision"]["mode"] != "cloud"
    assert info["decision"]["reason"] == wire.R_BUDGET_SOFT


def test_residency_nobody_meets_is_503(capsys: pytest.CaptureFixture[str]) -> None:
    info = explain_json(capsys, "-H", "x-affinity-residency: GDPR,CCPA")
    assert info["decision"]["status"] == 503
    excluded = [c for c in info["candidates"] if c["mode"] == "-"]
    assert len(excluded) == 11  # nine nodes and two pools, each with its reason
    assert all("not met" in c["verdict"] for c in excluded)


def test_client_route_headers_are_removed_and_bad_tags_are_400(
        capsys: pytest.CaptureFixture[str]) -> None:
    info = explain_json(capsys, *GDPR, "-H", "x-route-target: 10.0.0.1:80")
    assert info["stripped_headers"] == [wire.H_TARGET]
    assert info["decision"]["headers"][wire.H_TARGET] != "10.0.0.1:80"
    info = explain_json(capsys, "-H", "x-affinity-slo-ms: fast")
    assert info["decision"]["status"] == 400
    assert info["decision"]["detail"].startswith(wire.H_SLO)


@pytest.mark.parametrize(("args", "message"), [
    (["-H", "no colon here"], "expected 'NAME: VALUE'"),
    (["--load", "nope=1"], "no node or pool with that id"),
    (["--load", "orin-01=x"], "expected a whole number"),
    (["--spend", "acme=lots"], "expected a number of USD"),
    (["--now", "yesterday"], "--now"),
], ids=["header", "load-id", "load-n", "spend", "now"])
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                              message: str) -> None:
    assert main(["explain", "--policy", POLICY, "--feed", FEED, *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_policy_exits_2_with_location(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhashing: {balance_factr: 0.25}\n")
    assert main(["explain", "--policy", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


def test_as_a_process_with_the_policy_feed() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router", "explain", "--policy", "policies/example.yaml",
         "-H", "x-affinity-residency: CCPA", "-H", "x-affinity-key: user-9", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["feed"]["file"].endswith("demo.json")  # the policy's own file: feed
    assert info["decision"]["node"] in {"orin-03", "rtx-03", "l4-02", "hyper-us"}


def test_payload_defaults_to_the_policys_payload_kb_as_the_reference_says(
        capsys: pytest.CaptureFixture[str]) -> None:
    info = explain_json(capsys, *GDPR)
    assert info["request"]["payload_bytes"] == 64 * 1024  # example.yaml leaves payload_kb unset
    row = next(line for line in (ROOT / "docs" / "reference.md").read_text().splitlines()
               if line.startswith("| `--payload-bytes N`"))
    assert "`defaults.payload_kb` (64 KiB" in row


def test_explain_reads_the_clock_serve_reads_so_both_give_the_same_age(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not the feed's own date: a feed 120 s old is 120 s old to explain too, and stale."""
    doc = json.loads(Path(FEED).read_text())
    doc["generated_at"] = format_time(time.time() - 120)  # stale after 90 s in example.yaml
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps(doc))
    assert main(["explain", "--policy", POLICY, "--feed", str(feed), *GDPR]) == 0
    text = capsys.readouterr().out
    age = re.search(r"age ([0-9.]+)s \(STALE: weights lowered\)", text)
    assert age is not None and 120 <= float(age[1]) < 125, text
