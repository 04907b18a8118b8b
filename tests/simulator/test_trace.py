"""`simulate --trace`: a request log written by the server's own RequestLog, replayed.

Production's log is made the way the server makes it: `Runtime.route` decides
each request from its headers, `RequestControl.entry` builds the line and `RequestLog`
writes (and rotates) the file; a request holds its slots for its estimated
latency, so a busy log overflows to the cloud as production would.
"""

from __future__ import annotations

import heapq
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from router.control import RequestControl
from router.core.decision import Routed
from router.policy.loader import load_policy
from router.runtime import Runtime
from router.server.requestlog import RequestLog
from simulator.tracelog import read_trace, siblings

ROOT = Path(__file__).resolve().parents[2]
START = 1_790_000_000.0
POLICY = """\
version: 1
refresh_seconds: 2
slo: {default_latency_ms: 100, degraded_slack: 1.5}
edge:
  usd_per_inference: 0.001
  nodes:
    - {id: edge-a, address: "127.0.0.1:9101", slots: 4, residency: [EU], base_latency_ms: 20}
    - {id: edge-b, address: "127.0.0.1:9102", slots: 4, residency: [EU], base_latency_ms: 20}
cloud:
  pools:
%s
budgets:
  store: memory
  tenants: {acme: {limit_usd: 100}}
"""
POOL = """\
    - {id: pool-eu, address: "127.0.0.1:9201", residency: [EU], instance_type: gpu-spot,
       latency_ms: 60, compute_ms: 20, usd_per_hour: 2.0}"""


def write_policy(path: Path, *, pools: bool = True, drop: str | None = None) -> Path:
    """The test policy; without its pool (`pools=False`) or without one node (`drop`)."""
    text = POLICY % (POOL if pools else "    []")
    if drop is not None:
        text = "\n".join(line for line in text.splitlines() if f"id: {drop}," not in line)
    path.write_text(text + "\n")
    return path


def headers_for(i: int, rng: random.Random) -> dict[str, str]:
    """A request's headers: a Zipf-ish key, EU residency, 80 ms SLO; every 50th one malformed."""
    h = {"x-request-id": f"r{i}", "x-affinity-key": f"k{int(rng.paretovariate(1.2)) % 400}",
         "x-affinity-tenant": "acme", "x-affinity-residency": "EU",
         "x-affinity-slo-ms": "80", "x-affinity-degrade": "false"}
    if i % 50 == 49:
        h["x-affinity-slo-ms"] = "soon"  # a 400 in production: counted, not replayed
    return h


def write_log(path: Path, policy_file: Path, *, n: int, rate: float, seed: int = 1,
              start: float = START, **log_args: Any) -> int:
    """`n` requests at `rate` per second decided by production and logged; returns n."""
    rt = Runtime(load_policy(policy_file), clock=lambda: start)
    log = RequestLog(path, **log_args)
    rng = random.Random(seed)
    running: list[tuple[float, int, Routed]] = []
    t = start
    try:
        for i in range(n):
            t += rng.expovariate(rate)
            while running and running[0][0] <= t:
                rt.finish(heapq.heappop(running)[2])
            headers = headers_for(i, rng)
            routed = rt.route(headers, payload_bytes=16384, now=t)
            d = routed.decision
            log.record(RequestControl.entry(headers, 16384, d, t=t,
                                            duration_ms=d.est_ms if d.routed else 0.5))
            if d.routed:
                heapq.heappush(running, (t + d.est_ms / 1000.0, i, routed))
    finally:
        log.close()
    return n


def replay(capsys: pytest.CaptureFixture[str], log: Path, policy: Path, *extra: str
           ) -> dict[str, Any]:
    """Run `simulate --trace` and return its report.json as printed."""
    assert main(["simulate", "--trace", str(log), "--policy", str(policy), *extra]) == 0
    return dict(json.loads(capsys.readouterr().out))


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of one log file, parsed."""
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_same_policy_keeps_production_mix_and_counts_400s(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=2000, rate=40.0)
    logged = lines(log)
    report = replay(capsys, log, policy)
    info, prod, cand = report["trace"], report["production"], report["candidate"]
    bad = sum(1 for x in logged if x["status"] == 400)
    assert bad == 40 and info["parse_refused"] == bad and info["skipped_lines"] == 0
    assert info["lines"] == 2000 and info["replayed"] == prod["requests"] == cand["requests"]
    # production's side is exactly what the log says
    routed = [x for x in logged if x["status"] == 200]
    assert prod["mode_counts"] == {"edge": len(routed)} == {"edge": 1960}
    assert prod["node_counts"] == {n: sum(1 for x in routed if x["node"] == n)
                                   for n in ("edge-a", "edge-b")}
    assert prod["variable_cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in routed))
    # each logged duration is its estimate: the nodes' 20 ms x edge.tail_factor 1.4
    assert prod["slo_attainment"] == 1.0 and prod["latency_ms"]["p50"] == 28.0
    # at a light load the same policy decides the same way: every request on the edge, each
    # key on its home node, so the node shares agree within a few points
    assert cand["mode_counts"] == {"edge": 1960} and cand["residency_violations"] == 0
    diff = report["difference"]
    assert diff["mode_share_points"] == {"edge": 0.0}
    assert all(abs(v) < 5.0 for v in diff["node_share_points"].values()), diff
    assert info["production_policies"] == [load_policy(policy).digest]


def test_a_removed_node_hands_its_share_to_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=1500, rate=40.0)
    report = replay(capsys, log, write_policy(tmp_path / "no-b.yaml", drop="edge-b"))
    prod, cand, diff = report["production"], report["candidate"], report["difference"]
    assert prod["node_counts"]["edge-b"] > 300  # production used it
    assert "edge-b" not in cand["node_counts"]
    lost = 100.0 * prod["node_counts"]["edge-b"] / prod["requests"]
    assert diff["node_share_points"]["edge-b"] == pytest.approx(-lost, abs=0.01)
    gained = diff["node_share_points"]["edge-a"] + diff["node_share_points"].get("pool-eu", 0)
    assert gained == pytest.approx(lost, abs=0.05)  # every request still served somewhere
    assert cand["refused"] == 0 and cand["residency_violations"] == 0


def test_no_cloud_in_the_candidate_means_no_cloud_requests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=3000, rate=600.0)  # past the edge's ~400 req/s: overflow
    report = replay(capsys, log, write_policy(tmp_path / "edge-only.yaml", pools=False))
    prod, cand, diff = report["production"], report["candidate"], report["difference"]
    assert prod["mode_counts"].get("cloud", 0) > 300
    assert set(cand["mode_counts"]) <= {"edge", "refused"}
    assert "pool-eu" not in cand["node_counts"] and cand["cloud_fraction"] == 0.0
    assert diff["cloud_fraction_points"] == pytest.approx(-100 * prod["cloud_fraction"])
    assert diff["refused"] == cand["refused"] - prod["refused"] and cand["refused"] > 0


def test_garbage_lines_are_skipped_counted_and_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=300, rate=40.0)
    good = lines(log)
    sample = dict(good[0])
    garbage = [b"not json at all", b"\xff\xfe\x00binary", b"[1, 2, 3]", b"{}",
               json.dumps({**sample, "status": True}).encode(),
               json.dumps({**sample, "t": "yesterday"}).encode(),
               json.dumps({**sample, "tags": {"x-affinity-key": 7}}).encode(),
               json.dumps({**sample, "duration_ms": -1}).encode(),
               json.dumps({**sample, "mode": "teleport"}).encode(),
               json.dumps({**sample, "status": 503}).encode(),  # routed mode, refused status
               json.dumps({**sample, "content_length": 10 ** 400}).encode(),
               json.dumps({**sample, "t": float("nan")}).encode(),
               json.dumps({**sample, "cost_usd": float("inf")}).encode(),
               b"[" * 100_000]
    with log.open("ab") as fh:
        fh.write(b"\n".join(garbage) + b"\n\n")
        fh.write(json.dumps(sample).encode()[:40])  # the writer's torn last line
    assert main(["simulate", "--trace", str(log), "--policy", str(policy)]) == 0
    captured = capsys.readouterr()
    report, err = json.loads(captured.out), captured.err
    assert report["trace"]["skipped_lines"] == len(garbage) + 1
    assert report["trace"]["lines"] == len(good)
    assert f"skipped {len(garbage) + 1} malformed request-log lines" in err
    assert f"{log}:301: not JSON" in err
    assert report["production"]["requests"] == sum(1 for x in good if x["status"] != 400)


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"", "no usable request-log line"),
    (b"garbage\n{\"t\": 1}\n", "no usable request-log line; 2 malformed lines skipped"),
], ids=["missing", "empty", "only-garbage"])
def test_a_log_with_nothing_to_replay_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None,
        message: str) -> None:
    log = tmp_path / "requests.jsonl"
    if content is not None:
        log.write_bytes(content)
    policy = write_policy(tmp_path / "policy.yaml")
    out = tmp_path / "out"
    assert main(["simulate", "--trace", str(log), "--policy", str(policy), "--out",
                 str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    err = [line for line in captured.err.splitlines() if "warning" not in line]
    assert len(err) == 1 and message in err[0] and str(log) in err[0], captured.err


@pytest.mark.parametrize(("args", "message"), [
    (["--trace", "LOG"], "--trace needs --policy CANDIDATE"),
    (["--trace", "LOG", "--policy", "P", "--scenario", "S"], "does not take --scenario"),
    (["--trace", "LOG", "--policy", "P", "--baselines"], "are for --scenario runs"),
    (["--policy", "P"], "give --scenario FILE"),
    (["--scenario", "S", "--seed", "3"], "give --scenario FILE"),
], ids=["no-policy", "with-scenario", "with-baselines", "policy-alone",
         "seed-with-scenario"])  # --seed's and --last's ranges: tests/test_cliargs.py
def test_mixed_up_arguments_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                   message: str) -> None:
    assert main(["simulate", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_candidate_policy_exits_2(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=50, rate=40.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrefresh_seconds: -3\n")
    assert main(["simulate", "--trace", str(log), "--policy", str(bad)]) == 2
    assert re.search(r"bad\.yaml:\d+:\d+", capsys.readouterr().err)


def test_rotated_and_per_worker_files_are_merged_in_arrival_order(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    # two workers, each rotating its own file: FILE.w<i>, FILE.w<i>.1, FILE.w<i>.2 ...
    for w in range(2):
        write_log(tmp_path / f"requests.jsonl.w{w}", policy, n=400, rate=40.0, seed=w,
                  max_bytes=20_000, backups=20)
    (tmp_path / "requests.jsonl.bak").write_text("not part of the family\n")
    (tmp_path / "other.jsonl").write_text("neither\n")
    files = siblings(log)
    assert len(files) > 4 and all(re.fullmatch(r"requests\.jsonl\.w[01](\.\d+)?", f.name)
                                  for f in files)
    trace = read_trace(log)  # FILE itself is absent: a multi-worker server never writes it
    assert trace.files == files and trace.skipped == 0
    assert len(trace.entries) == 800
    times = [e.t for e in trace.entries]
    assert times == sorted(times)
    written = sorted(x["t"] for f in files for x in lines(f))
    assert times == written
    last = read_trace(log, last_s=2.0)
    assert last.entries and all(e.t >= times[-1] - 2.0 for e in last.entries)
    assert len(last.entries) == sum(1 for t in times if t >= times[-1] - 2.0)


def test_same_seed_same_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=1500, rate=300.0)
    reports, decisions = [], []
    for run in ("a", "b"):
        out = tmp_path / run
        report = replay(capsys, log, policy, "--seed", "7", "--out", str(out))
        report["candidate"].pop("wall_seconds")
        reports.append(report)
        decisions.append((out / "decisions.jsonl").read_text())
        assert json.loads((out / "report.json").read_text())["difference"] == \
            report["difference"]
        assert (out / "report.html").stat().st_size > 100_000
    assert reports[0] == reports[1] and decisions[0] == decisions[1]
    assert len(decisions[0].splitlines()) == reports[0]["trace"]["replayed"]


def test_every_replay_report_key_is_documented(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    head = text.index("### Trace replay report")
    nxt = text.find("\n#", head + 10)
    table = text[head:] if nxt < 0 else text[head:nxt]
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=200, rate=40.0)
    report = replay(capsys, log, policy)
    keys = set(report) | set(report["trace"]) | set(report["production"]) | \
        set(report["difference"]) | set(report["difference"]["latency_ms"])
    assert sorted(k for k in keys if f"`{k}`" not in table) == []
