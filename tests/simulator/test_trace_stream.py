"""Trace replay streamed: the log is read in arrival order through a bounded hold, joined with
Envoy's access log through a bounded window, and production's side folded into aggregates, so
reading a log takes memory that does not grow with its length; production's percentiles come
from a log-bucketed histogram within its stated error."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.cli import main
from router.core.policy import Policy
from router.policy.loader import load_policy
from simulator import tracelog
from simulator.accesslog import JOIN_WINDOW_S, join
from simulator.sketch import ALPHA, LogHistogram
from simulator.tally import Tally
from simulator.tracelog import open_trace, read_trace
from simulator.tracestream import HOLD_MAX_S, entries
from tests.simulator.test_trace import START, write_policy

LINE = {"tags": {"x-affinity-key": "k", "x-affinity-residency": "EU",
                 "x-affinity-tenant": "acme"},
        "content_length": 16384, "status": 200, "mode": "edge", "node": "edge-a",
        "quality": "full", "cost_usd": 0.001, "est_ms": 20.0, "reason": "affinity",
        "policy": "p", "duration_ms": 20.0}


def _line(i: int, t: float, **extra: Any) -> dict[str, Any]:
    return {**LINE, "t": t, "request_id": f"r{i}",
            "tags": {**LINE["tags"], "x-affinity-key": f"k{i % 97}"}, **extra}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows in the order a server writes them: by the end of each request."""
    rows = sorted(rows, key=lambda x: x["t"] + x["duration_ms"] / 1000.0)
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))


def _big(log: Path, access: Path, n: int, rate: float) -> None:
    """`n` request-log lines at `rate` per second and Envoy's line for each, written directly."""
    with log.open("w") as fh, access.open("w") as ah:
        for i in range(n):
            t = START + i / rate
            fh.write(json.dumps(_line(i, t)) + "\n")
            ah.write(json.dumps({"start_time": t, "request_id": f"r{i}", "status": 200,
                                 "duration_ms": 21.0}) + "\n")


@pytest.mark.parametrize("seed", range(4))
def test_lines_written_at_their_end_stream_in_arrival_order(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows = [_line(i, START + i * 0.05, duration_ms=rng.choice([5.0, 200.0, 30_000.0]))
            for i in range(2000)]
    for w in range(2):  # two workers, each with a rotated backup
        mine = rows[w::2]
        _write(tmp_path / f"req.jsonl.w{w}.1", mine[:500])
        _write(tmp_path / f"req.jsonl.w{w}", mine[500:])
    trace = read_trace(tmp_path / "req.jsonl")
    assert [e.t for e in trace.entries] == sorted(x["t"] for x in rows)
    assert trace.late == 0 and trace.kept == 2000


def test_a_line_later_than_the_hold_is_counted_and_replayed_at_once(tmp_path: Path) -> None:
    rows = [_line(i, START + i, duration_ms=10.0) for i in range(2000)]
    # logged after 1,500 s of later lines: longer than the hold waits for
    rows[10]["duration_ms"] = (HOLD_MAX_S + 900.0) * 1000.0
    _write(tmp_path / "req.jsonl", rows)
    trace = read_trace(tmp_path / "req.jsonl")
    times = [e.t for e in trace.entries]
    assert trace.late == 1 and len(times) == 2000 and times == sorted(times)


def _joined_peak(log: Path, access: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[int, dict[str, Any]]:
    """(peak bytes traced while streaming, joining and folding the log, production's side)."""
    monkeypatch.setattr(tracelog, "SAMPLE", 512)
    monkeypatch.setattr(tracelog, "TOP_K", 64)
    tracemalloc.start()
    try:
        trace = open_trace(log)
        tally = Tally("production")
        for e in join(entries(trace), access, trace):
            tally.add_logged(e.t - START, e, 100.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, {**tally.summary(_policy(log)), "joined": trace.joined}


def _policy(log: Path) -> Policy:
    return load_policy(write_policy(log.parent / "policy.yaml"))


@pytest.mark.slow
def test_streaming_a_log_takes_the_same_memory_for_ten_times_the_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the fences' sample is made small here so that both logs are past its cap: what is left
    # to grow would be the log itself. 10 lines a second: the join's window holds ~2,400.
    peaks = {}
    for n in (10_000, 100_000):
        log, access = tmp_path / f"r{n}.jsonl", tmp_path / f"a{n}.jsonl"
        _big(log, access, n, rate=10.0)
        peaks[n], prod = _joined_peak(log, access, monkeypatch)
        assert prod["requests"] == prod["joined"] == n
        assert prod["latency_ms"]["p50"] == 21.0  # Envoy's duration, not the router's 20
    assert peaks[100_000] < peaks[10_000] + 512 * 1024, peaks


def test_the_join_matches_within_its_window_and_counts_the_rest(tmp_path: Path) -> None:
    rows = [_line(i, START + i * 0.5) for i in range(1000)]
    _write(tmp_path / "req.jsonl", rows)
    access = []
    for i, x in enumerate(rows):
        if i % 10 == 3:
            continue  # Envoy has no line for it
        start = x["t"] - (JOIN_WINDOW_S + 60.0 if i == 500 else 0.001)  # a clock far off
        access.append({"start_time": start, "request_id": x["request_id"],
                       "status": 503 if i % 7 == 0 else 200, "duration_ms": 30.0 + i % 5})
    rng = random.Random(1)
    rng.shuffle(access[:50])  # a few out of order, as Envoy's workers flush
    (tmp_path / "access.jsonl").write_text("".join(json.dumps(a) + "\n" for a in access))
    trace = open_trace(tmp_path / "req.jsonl")
    joined = list(join(entries(trace), tmp_path / "access.jsonl", trace))
    want = {a["request_id"]: (a["status"], a["duration_ms"]) for a in access
            if a["request_id"] != "r500"}
    assert trace.joined == len(want) and trace.unmatched == 1000 - len(want)
    for e in joined:
        assert (e.status, e.duration_ms) == want.get(e.request_id, (200, 20.0))


def test_the_replay_counts_envoys_statuses(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    rows = [_line(i, START + i * 0.1) for i in range(600)]
    _write(tmp_path / "req.jsonl", rows)
    statuses = [503 if i % 9 == 0 else 504 if i % 13 == 0 else 200 for i in range(600)]
    (tmp_path / "access.jsonl").write_text("".join(
        json.dumps({"start_time": x["t"], "request_id": x["request_id"], "status": s,
                    "duration_ms": 25.0}) + "\n" for x, s in zip(rows, statuses, strict=True)))
    assert main(["simulate", "--trace", str(tmp_path / "req.jsonl"), "--access-log",
                 str(tmp_path / "access.jsonl"), "--policy", str(policy)]) == 0
    report = json.loads(capsys.readouterr().out)
    failed = sum(1 for s in statuses if s >= 500)
    assert report["trace"]["production_failed"] == failed and report["trace"]["joined"] == 600
    prod = report["production"]
    assert prod["node_counts"] == {"edge-a": 600 - failed}
    assert prod["slo_attainment"] == round((600 - failed) / 600, 4)


@pytest.mark.parametrize("draw", ["lognormal", "exponential", "bimodal", "constant"])
def test_histogram_quantiles_lie_within_the_stated_error(draw: str) -> None:
    rng = np.random.default_rng(7)
    values = {"lognormal": rng.lognormal(3.0, 1.2, 50_000),
              "exponential": rng.exponential(40.0, 50_000),
              "bimodal": np.concatenate([rng.normal(20, 2, 30_000).clip(0.1),
                                         rng.normal(900, 50, 20_000)]),
              "constant": np.full(1000, 20.0)}[draw]
    hist = LogHistogram()
    for v in values:
        hist.add(float(v))
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = float(np.percentile(values, 100 * q))
        assert abs(hist.quantile(q) - exact) <= ALPHA * exact + 1e-12, (q, exact)


PEAK = """\
import resource, sys
from router.cli import main
from router.core.policy import Policy
from router.policy.loader import load_policy
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _peak_rss_kb(log: Path, policy: Path, *extra: str) -> int:
    """Peak RSS (KB) of `simulate --trace` over `log`, in its own process."""
    done = subprocess.run([sys.executable, "-c", PEAK, "simulate", "--trace", str(log),
                           "--policy", str(policy), *extra], check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    return int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_replay_memory_is_the_same_for_ten_times_the_lines(tmp_path: Path) -> None:
    # through the real CLI with its page and decisions file: a parsed line held for the whole
    # replay cost ~1.9 KB, and a candidate's row kept for its charts ~300 B; neither is kept
    policy = write_policy(tmp_path / "policy.yaml")
    peaks = {}
    for n in (10_000, 100_000):
        log, out = tmp_path / f"r{n}.jsonl", tmp_path / f"out{n}"
        _big(log, tmp_path / f"a{n}.jsonl", n, rate=100.0)
        peaks[n] = _peak_rss_kb(log, policy, "--out", str(out))
        with (out / "decisions.jsonl").open() as fh:
            assert sum(1 for _ in fh) == n
    # what is left to grow: pass one's sample of times (at most 65,536 of them, ~2 MB)
    assert peaks[100_000] - peaks[10_000] < 8 * 1024, peaks
