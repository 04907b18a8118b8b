"""Trace replay with bounds: a line with an outlier time is counted and skipped (it used to
stretch the replay over years of simulated time), `--last` counts back from the bulk of the
log (one far-future line used to leave a window holding only itself), and reading a long log
for a short window takes memory for the window, not for the log."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from router.cli import main
from simulator.tracelog import read_trace
from tests.simulator.test_trace import START, lines, write_log, write_policy


@pytest.mark.parametrize("outlier", [0.0, 1e10, 1e300])
def test_an_outlier_time_is_counted_skipped_and_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], outlier: float) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=300, rate=40.0)
    with log.open("a") as fh:
        fh.write(json.dumps({**lines(log)[5], "t": outlier}) + "\n")
    t0 = time.monotonic()
    assert main(["simulate", "--trace", str(log), "--policy", str(policy)]) == 0
    assert time.monotonic() - t0 < 60  # it ran for hours, memory growing
    captured = capsys.readouterr()
    info = json.loads(captured.out)["trace"]
    assert info["outlier_lines"] == 1 and info["lines"] == 300 and info["span_s"] < 30
    assert "skipped 1 request-log line whose time lies far outside" in captured.err
    assert f"{log}:301: t={outlier:g}" in captured.err


def test_last_counts_back_from_the_bulk_and_says_what_it_left_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=600, rate=40.0)  # ~15 s of traffic
    logged = lines(log)
    newest = max(x["t"] for x in logged)
    with log.open("a") as fh:  # one line from a clock a year ahead
        fh.write(json.dumps({**logged[0], "t": newest + 365 * 86_400}) + "\n")
    assert main(["simulate", "--trace", str(log), "--policy", str(policy), "--last", "5"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)["trace"]
    window = sum(1 for x in logged if x["t"] >= newest - 5)
    assert info["lines"] == window > 100 and info["outlier_lines"] == 1
    assert info["before_window"] == 600 - window
    assert f"--last 5: replaying {window} lines; {600 - window} request-log lines arrived " \
           "earlier" in captured.err


def _big_log(path: Path, n: int) -> None:
    """`n` well-formed lines at 100 per second, written directly (no routing)."""
    line = {"request_id": "", "tags": {"x-affinity-key": "k", "x-affinity-residency": "EU"},
            "content_length": 16384, "status": 200, "mode": "edge", "node": "edge-a",
            "quality": "full", "cost_usd": 0.001, "est_ms": 20.0, "reason": "affinity",
            "policy": "p", "duration_ms": 20.0}
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({**line, "t": START + i / 100.0, "request_id": f"r{i}"}) + "\n")


def _peak_reading(path: Path, last_s: float) -> tuple[int, int]:
    """(peak bytes allocated while reading the last `last_s` s of `path`, lines kept)."""
    tracemalloc.start()
    try:
        trace = read_trace(path, last_s=last_s)
        return tracemalloc.get_traced_memory()[1], len(trace.entries)
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_reading_a_window_takes_memory_for_the_window_not_the_log(tmp_path: Path) -> None:
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _big_log(small, 10_000)
    _big_log(big, 100_000)
    peak_small, kept_small = _peak_reading(small, 10.0)
    peak_big, kept_big = _peak_reading(big, 10.0)
    assert kept_small == kept_big == 1001
    # what grows with the log is the times array and numpy's copies of it (tens of bytes a
    # line); a parsed line costs ~1.7 KB, so keeping every line would add ~150 MB here
    per_line = (peak_big - peak_small) / 90_000
    assert per_line < 100, f"{per_line:.0f} bytes a line"
