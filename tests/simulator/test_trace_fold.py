"""The candidate's side of a trace replay folded as its requests end: the same summary, charts'
tallies and decisions file as from a column per request (latency percentiles within the
histogram's stated error)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.policy.loader import load_policy
from simulator.fold import RunFold
from simulator.report.binned import LEVELS, bins_for, from_columns
from simulator.report.binstream import BinStream
from simulator.report.replay import candidate_side
from simulator.report.summary import summarize, write_decisions
from simulator.row import Commit, DecisionsOut, Row, decision
from simulator.run import Result
from simulator.sketch import ALPHA
from simulator.trace import Replay, replay
from simulator.tracelog import open_trace
from tests.simulator.test_trace import write_log, write_policy

FIELDS = ("t", "key", "tenant", "cls", "mode", "node", "pool", "quality", "home", "fill",
          "warm", "cloud_usd", "cost_usd", "latency_ms", "slo_ms")


def _columns(rows: list[Row], rep: Replay) -> Result:
    """The run as a scenario keeps it: a column per field, the replay's time series."""
    r = rep.candidate
    out = Result(r.router, limits=r.limits, util=r.util, caps=r.caps, loads=r.loads,
                 slots=r.slots, event_times=r.event_times, settle_s=r.settle_s,
                 violations=r.violations, preempted=r.preempted, owns_edge=r.owns_edge,
                 wall_seconds=r.wall_seconds)
    attr = {"cloud_usd": "cloud", "cost_usd": "cost", "latency_ms": "latency", "slo_ms": "slo"}
    for name in FIELDS:
        setattr(out, name, [getattr(row, attr.get(name, name)) for row in rows])
    return out


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Replay, Result, Path]:
    """A busy log (overflow to the cloud, 10-s windows steady enough for the flap measures)
    replayed through a candidate with one node fewer; its rows kept aside as columns."""
    tmp = tmp_path_factory.mktemp("fold")
    policy = write_policy(tmp / "policy.yaml")
    log = tmp / "requests.jsonl"
    write_log(log, policy, n=16_000, rate=300.0)
    rows: list[Row] = []
    decisions = DecisionsOut([tmp / "decisions.jsonl"])
    rep = replay(open_trace(log), load_policy(write_policy(tmp / "no-b.yaml", drop="edge-b")),
                 sinks=[rows.append, decisions.add])
    decisions.close(ok=True)
    return rep, _columns(rows, rep), tmp


def test_the_folded_summary_is_the_columns_summary(
        replayed: tuple[Replay, Result, Path]) -> None:
    rep, cols, _ = replayed
    policy = load_policy(replayed[2] / "no-b.yaml")
    folded, exact = candidate_side(rep, policy), summarize(cols, policy)
    assert set(exact["mode_counts"]) == {"edge", "cloud"}  # a replay with something to fold
    assert exact["mode_flap"] is not None and exact["quality_flap_rate"] is not None
    for q, ms in exact["latency_ms"].items():
        assert abs(folded["latency_ms"][q] - ms) <= ALPHA * ms + 0.01, q  # and its rounding
    for key in set(exact) - {"latency_ms"}:
        assert folded[key] == exact[key], key
    assert folded["node_counts"] == dict(sorted(
        (n, cols.node.count(n)) for n in set(cols.node) if n))


def test_the_folded_tallies_are_the_columns_tallies(
        replayed: tuple[Replay, Result, Path]) -> None:
    rep, cols, _ = replayed
    folded, exact = rep.bins.binned(), from_columns(cols, list(rep.candidate.slots))
    assert np.array_equal(folded.bins, exact.bins) and folded.span == exact.span
    for name in ("mode_bins", "cost_bins", "tenant_cloud_bins", "node_peaks"):
        a, b = getattr(folded, name), getattr(exact, name)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), name
    assert max(exact.node_peaks["edge-a"]) == 4  # its slots are full at times
    assert (folded.count, folded.modes, folded.tenant_spend, folded.slos) == \
        (exact.count, exact.modes, exact.tenant_spend, exact.slos)
    assert folded.cost_usd == pytest.approx(exact.cost_usd, rel=1e-12)  # numpy sums pairwise
    for mode, (count, levels) in exact.latency_levels.items():
        got = folded.latency_levels[mode]
        assert got[0] == count and np.all(np.abs(got[1] - levels) <= ALPHA * levels), mode
    assert folded.error == ALPHA and exact.error == 0.0


def test_the_decisions_file_is_written_in_arrival_order_as_from_columns(
        replayed: tuple[Replay, Result, Path]) -> None:
    _, cols, tmp = replayed
    write_decisions(cols, tmp / "from-columns.jsonl")
    streamed = (tmp / "decisions.jsonl").read_text()
    assert streamed == (tmp / "from-columns.jsonl").read_text()
    times = [json.loads(x)["t"] for x in streamed.splitlines()]
    assert len(times) == len(cols.t) and times == sorted(times)


def _random_rows(rng: random.Random, n: int) -> list[Row]:
    """Rows in arrival order, ties in time and zero-length requests included."""
    rows, t = [], 0.0
    for i in range(n):
        t += rng.choice([0.0, 0.0, 0.05, 0.5, 3.0])
        row = Row(t, f"k{i % 7}", rng.choice(["a", "b"]), "c", 100.0)
        row.mode = rng.choice(["edge", "edge", "edge-degraded", "cloud", "split", "refused"])
        row.node = {"cloud": rng.choice(["p1", "p2"]), "refused": ""}.get(
            row.mode, rng.choice(["n1", "n2"]))
        row.latency = math.nan if row.mode == "refused" else rng.choice(
            [0.0, 20.0, 1000.0 * rng.choice([0.05, 0.5, 3.0]), rng.expovariate(0.01)])
        row.cost = row.cloud = rng.random() if row.mode in ("cloud", "split") else 0.0
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_tallies_a_request_at_a_time_equal_the_columns(seed: int) -> None:
    rows = _random_rows(random.Random(seed), 400)
    r = Result("x", t=[x.t for x in rows], mode=[x.mode for x in rows],
               node=[x.node for x in rows], latency_ms=[x.latency for x in rows],
               cost_usd=[x.cost for x in rows], cloud_usd=[x.cloud for x in rows],
               tenant=[x.tenant for x in rows], slo_ms=[x.slo for x in rows])
    exact = from_columns(r, ["n1", "n2", "n3"])
    stream = BinStream(bins_for(rows[-1].t), ["n1", "n2", "n3"])
    for row in rows:
        stream.add(row)
    folded = stream.binned()
    for name in ("mode_bins", "cost_bins", "tenant_cloud_bins", "node_peaks"):
        a, b = getattr(folded, name), getattr(exact, name)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), (name, a, b)
    assert len(LEVELS) == len(folded.latency_levels["edge"][1])


def test_rows_are_handed_on_in_arrival_order_once_each_and_every_earlier_one_ended() -> None:
    seen: list[float] = []
    commit = Commit([lambda row: seen.append(row.t)])
    rows = [Row(float(i), "k", "a", "a", 1.0) for i in range(5)]
    for i, row in enumerate(rows):
        commit.open(i, row)
    for i in (3, 1, 4):
        rows[i].done = True
        commit.flush()
    assert seen == [] and len(commit.rows) == 5  # row 0 is still in flight
    rows[0].done = True
    commit.flush()
    assert seen == [0.0, 1.0] and set(commit.rows) == {2, 3, 4}
    rows[2].done = True
    commit.flush()
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0] and not commit.rows


def test_a_failed_run_leaves_no_decisions_file(tmp_path: Path) -> None:
    out = DecisionsOut([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    out.add(Row(0.0, "k", "a", "a", 1.0))
    out.close(ok=False)
    assert list(tmp_path.iterdir()) == []
    good = DecisionsOut([tmp_path / "a.jsonl"])
    good.add(Row(0.0, "k", "a", "a", 1.0))
    good.close(ok=True)
    line: dict[str, Any] = json.loads((tmp_path / "a.jsonl").read_text())
    assert line == decision(Row(0.0, "k", "a", "a", 1.0)) and line["mode"] == "refused"


def test_flap_measures_need_steady_windows() -> None:
    fold = RunFold([0.0], settle_s=12.0)
    assert [fold.steady(w) for w in range(4)] == [False, False, True, True]
