"""Stability, affinity and load measures on hand-made runs with known answers, and against
the decisions file of a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from simulator import metrics
from simulator.fold import RunFold
from simulator.row import Row
from simulator.run import Result

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"


def windowed(mixes: dict[int, list[tuple[str, str | None]]], events: list[float]) -> Result:
    """100 requests per listed 10-s window, mode and quality as given, key i in each window."""
    r = Result("hand", event_times=events, settle_s=40.0)
    for w, mix in sorted(mixes.items()):
        for i, (mode, quality) in enumerate(mix):
            r.t.append(w * 10.0 + i * 0.05)
            r.key.append(f"k{i}")
            r.cls.append("c")
            r.mode.append(mode)
            r.quality.append(quality)
    return r


EDGE = [("edge", "full")] * 100
SOME_CLOUD = [("edge", "full")] * 80 + [("cloud", None)] * 20
HALF_DEGRADED = [("edge", "full")] * 50 + [("edge-degraded", "constrained")] * 50


def test_steady_windows_exclude_events_and_the_settling_after_them() -> None:
    ok = metrics.steady(12, [0.0, 72.0], settle_s=40.0)
    # the start settles until 40 s (windows 0-4); the event at 72 s unsettles windows 7-11
    assert ok.tolist() == [False] * 5 + [True, True] + [False] * 5


def test_mode_flap_is_the_largest_change_of_mix_between_steady_neighbours() -> None:
    r = windowed({5: EDGE, 6: SOME_CLOUD, 7: HALF_DEGRADED, 8: HALF_DEGRADED}, [0.0, 72.0])
    # 5→6 moves 20 % to cloud; 6→7 would be 0.5 but window 7 follows the event at 72 s
    assert metrics.mode_flap(r) == pytest.approx(0.2)
    calm = windowed({5: EDGE, 6: SOME_CLOUD, 7: HALF_DEGRADED}, [0.0])
    assert metrics.mode_flap(calm) == pytest.approx(0.5)
    assert metrics.mode_flap(windowed({5: EDGE}, [0.0])) is None  # no steady pair


def test_quality_flap_rate_counts_a_keys_changes_between_consecutive_requests() -> None:
    r = windowed({5: EDGE, 6: HALF_DEGRADED, 7: HALF_DEGRADED}, [0.0])
    # keys 50-99 change once (5→6) and keep the change; 200 consecutive pairs in all
    assert metrics.quality_flap_rate(r) == pytest.approx(50 / 200)
    first = windowed({1: HALF_DEGRADED, 5: EDGE, 6: EDGE}, [0.0])
    assert metrics.quality_flap_rate(first) == 0.0  # window 1 is not steady: not counted


def test_a_change_across_an_event_is_no_flap_however_steady_the_windows_around_it() -> None:
    # windows 5-6 and 12-13 are steady; the event at 72 s falls between 6 and 12, so the
    # keys that changed from window 6 to window 12 changed with the load, not under it
    r = windowed({5: EDGE, 6: EDGE, 12: HALF_DEGRADED, 13: HALF_DEGRADED}, [0.0, 72.0])
    assert metrics.quality_flap_rate(r) == 0.0
    fold = RunFold(r.event_times, r.settle_s)
    for i, t in enumerate(r.t):
        row = Row(t, r.key[i], "tenant", r.cls[i], 100.0)
        row.mode, row.quality = r.mode[i], r.quality[i]
        fold.add(row)
    assert fold.totals().quality_flap_rate == 0.0  # the streaming fold agrees
    flapping = windowed({5: EDGE, 6: HALF_DEGRADED, 12: EDGE}, [0.0, 72.0])
    assert metrics.quality_flap_rate(flapping) == pytest.approx(50 / 100)  # 5→6 only


def test_affinity_counts_edge_requests_on_their_home_node() -> None:
    r = Result("hand", mode=["edge", "edge-degraded", "split", "cloud", "edge"],
               home=[True, False, True, False, True], t=[0.0] * 5)
    assert metrics.affinity_hit_rate(r) == pytest.approx(2 / 3)  # splits and cloud aside
    assert metrics.max_load_over_cap(Result("x", fill=[None, 0.5, 1.0, None])) == 1.0
    assert metrics.max_load_over_cap(Result("x", fill=[None])) is None
    assert metrics.warm_hit_rate(Result("x", warm=[True, None, False, True])) == \
        pytest.approx(2 / 3)


def test_utilization_windows_select_calm_and_saturated_traffic() -> None:
    r = Result("hand", slots={"a": 2, "b": 2})
    r.util = [(10.0, {"a": 4.0, "b": 4.0}), (20.0, {"a": 20.0, "b": 18.0})]  # 20 % and 95 %
    r.t = [1.0, 2.0, 11.0, 12.0, 13.0]
    r.mode = ["edge", "edge", "split", "cloud", "split"]
    r.home = [True, False, False, False, False]
    wins, util = metrics.fleet_utilization(r)
    assert wins.tolist() == [0, 1] and util.tolist() == pytest.approx([0.2, 0.95])
    assert metrics.affinity_below(r, 0.6) == (pytest.approx(0.5), 1)
    assert metrics.saturated_modes(r, 0.9) == {"split": 2, "cloud": 1}


def test_report_keys_agree_with_the_decisions_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 60,000 requests reach 130 s, where the rate has grown enough for the shares to split
    assert main(["simulate", "--scenario", str(SCENARIOS / "camera.yaml"), "--requests",
                 "60000", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    n = len(rows)
    assert report["split_fraction"] == pytest.approx(
        sum(r["mode"] == "split" for r in rows) / n, abs=1e-4)
    assert report["split_fraction"] > 0  # the camera scenario splits
    edge = [r for r in rows if r["mode"] in ("edge", "edge-degraded")]
    assert report["affinity_hit_rate"] == pytest.approx(
        sum(r["home"] for r in edge) / len(edge), abs=1e-4)
    fills = [r["fill"] for r in rows if r["fill"] is not None]
    assert report["max_load_over_cap"] == pytest.approx(max(fills), abs=1e-4)
    assert report["max_load_over_cap"] <= 1.0
    assert report["cloud_spend_usd"] == pytest.approx(sum(r["cloud_usd"] for r in rows),
                                                      abs=1e-5)
    # the shipped policies charge no marginal cost per edge inference: variable is what pools billed
    assert report["variable_cost_usd"] == pytest.approx(report["cloud_spend_usd"], abs=1e-5)
    hours = max(r["t"] for r in rows) / 3600
    assert report["fixed_cost_usd"] == pytest.approx(6 * 0.0851 * hours, rel=1e-2)  # six Orins
    assert report["total_cost_usd"] == pytest.approx(
        report["fixed_cost_usd"] + report["variable_cost_usd"], abs=1e-5)
    warm = [r["warm"] for r in rows if r["warm"] is not None]
    assert report["warm_hit_rate"] == pytest.approx(sum(warm) / len(warm), abs=1e-4)
    assert {r["class"] for r in rows} == {"frames"}
    assert all(r["quality"] in ("full", "constrained", "minimal") for r in edge)
    assert report["mode_flap"] == pytest.approx(mode_flap_of(rows, refresh_s=30.0), abs=1e-4)


def mode_flap_of(rows: list[dict[str, object]], refresh_s: float) -> float:
    """mode_flap recomputed from the decisions alone (the camera scenario's events are later)."""
    windows: dict[int, dict[str, int]] = {}
    for r in rows:
        w = int(float(r["t"]) // 10)  # type: ignore[arg-type]
        windows.setdefault(w, {})
        windows[w][str(r["mode"])] = windows[w].get(str(r["mode"]), 0) + 1
    settle = refresh_s + 10.0
    best = 0.0
    for w in sorted(windows):
        a, b = windows[w], windows.get(w + 1)
        if b is None or w * 10 - settle <= 0.0 or sum(a.values()) < 50 or sum(b.values()) < 50:
            continue
        ta, tb = sum(a.values()), sum(b.values())
        best = max(best, 0.5 * sum(abs(a.get(m, 0) / ta - b.get(m, 0) / tb)
                                   for m in set(a) | set(b)))
    return best
