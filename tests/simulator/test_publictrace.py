"""Public traces as a scenario's arrivals: both formats, broken rows, unusable files, scaling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from router.policy.loader import load_policy
from simulator.publictrace import read_trace, replay, sizes
from simulator.report import summarize
from simulator.routers import Adaptive
from simulator.run import simulate
from simulator.scenario import Scenario, parse_scenario
from simulator.traffic import draw

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "simulator" / "scenarios" / "policies" / "fintech.yaml"

AZURE = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:00.0000000,1000,10
2023-11-16 18:17:00.5000000,3000,30
2023-11-16 18:17:01.0000000,not-a-number,5
2023-11-16 18:17:02.0000000,2000,20
yesterday,100,1
2023-11-16 18:17:04.0000000,2000,-4
2023-11-16 18:17:04.0000000,2000,20
"""
BURSTGPT = """\
Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
0,ChatGPT,400,100,500,Conversation log
2.5,GPT-4,800,,800,API log
1,ChatGPT,1200,300,1500,Conversation log
4,GPT-4,400,100,500,API log
"""


def scenario_text(trace: str, extra: str = "") -> str:
    """A small scenario over the fintech policy whose traffic is `trace`."""
    return f"""\
version: 1
policy: policies/fintech.yaml
duration_s: 20
traffic:
  trace: {{{trace}}}
  keys: {{count: 50, zipf_s: 0}}
  classes:
    - {{tenant: fintech, residency: [GDPR], slo_ms: 75, payload_kb: 8}}
{extra}"""


def parsed(tmp_path: Path, trace: str) -> tuple[Scenario | None, list[str]]:
    """Parse a scenario written in `tmp_path` (beside a copy of the fintech policy)."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    shutil.copy(POLICY, tmp_path / "policies" / "fintech.yaml")
    file = tmp_path / "s.yaml"
    text = scenario_text(trace)
    file.write_text(text)
    scenario, problems = parse_scenario(text, str(file))
    return scenario, [str(p).replace(str(tmp_path) + "/", "") for p in problems]


def test_azure_rows_are_read_and_broken_ones_counted(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(AZURE)
    trace = read_trace(tmp_path / "a.csv", "azure-llm")
    assert trace.t.tolist() == [0.0, 0.5, 2.0, 4.0]
    assert trace.context.tolist() == [1000, 3000, 2000, 2000]
    assert (trace.rows, trace.skipped) == (7, 3)
    assert trace.first_broken.startswith("line 4:")


def test_burstgpt_rows_are_sorted_and_failed_ones_skipped(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text(BURSTGPT)
    trace = read_trace(tmp_path / "b.csv", "burstgpt")
    assert trace.t.tolist() == [0.0, 1.0, 4.0]
    assert trace.generated.tolist() == [100, 300, 100]
    assert trace.skipped == 1


def test_broken_rows_are_a_located_warning(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(AZURE)
    scenario, problems = parsed(tmp_path, "path: a.csv, format: azure-llm")
    assert scenario is not None
    assert problems == ["s.yaml:5:17: warning: traffic.trace.path: 3 of 7 rows broken, "
                        "skipped (first: line 4: could not convert string to float: "
                        "'not-a-number')"]


@pytest.mark.parametrize(("content", "fmt", "says"), [
    (None, "azure-llm", "cannot read"),
    ("", "azure-llm", "is empty"),
    ("a,b,c\n1,2,3\n", "azure-llm", "not an azure-llm trace"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nx,y,z\n", "azure-llm", "no usable row (1 broken"),
    (AZURE, "burstgpt", "not a burstgpt trace"),
], ids=["missing", "empty", "wrong-header", "no-usable-row", "wrong-format"])
def test_an_unusable_file_is_a_located_error(tmp_path: Path, content: str | None, fmt: str,
                                              says: str) -> None:
    if content is not None:
        (tmp_path / "t.csv").write_text(content)
    scenario, problems = parsed(tmp_path, f"path: t.csv, format: {fmt}")
    assert scenario is None
    assert len(problems) == 1 and problems[0].startswith("s.yaml:5:17: traffic.trace.path: ")
    assert says in problems[0]


def test_unknown_format_and_both_sources_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(AZURE)
    _, problems = parsed(tmp_path, "path: a.csv, format: alibaba")
    assert problems == ["s.yaml:5:32: traffic.trace.format: unknown trace format 'alibaba'; "
                        "expected one of azure-llm, burstgpt"]
    text = scenario_text("path: a.csv, format: azure-llm").replace("traffic:\n",
                                                                    "traffic:\n  rate_rps: 5\n")
    _, located = parse_scenario(text, str(tmp_path / "s.yaml"))
    assert [p.message for p in located] == ["traffic: give exactly one of rate_rps and trace"]


def test_time_scale_rate_scale_and_repetition() -> None:
    times = np.array([0.0, 1.0, 2.0, 3.0])
    trace = read_like(times)
    rng = np.random.default_rng(1)
    once = replay(trace, duration_s=16.0, rate_scale=1.0, time_scale=1.0, rng=rng, limit=None)
    assert once.times.tolist() == [float(t) for t in range(16)]  # repeats every 4 s
    slow = replay(trace, duration_s=16.0, rate_scale=1.0, time_scale=2.0, rng=rng, limit=None)
    assert slow.times.tolist() == [float(t) for t in range(0, 16, 2)]
    many = replay(trace, duration_s=4000.0, rate_scale=2.5, time_scale=1.0, rng=rng, limit=None)
    assert len(many.times) / 4000.0 == pytest.approx(2.5, rel=0.05)
    assert np.all(np.diff(many.times) >= 0)
    few = replay(trace, duration_s=4000.0, rate_scale=0.25, time_scale=1.0, rng=rng, limit=None)
    assert len(few.times) / 4000.0 == pytest.approx(0.25, rel=0.1)


def read_like(times: np.ndarray):  # type: ignore[no-untyped-def]
    """A trace of these arrival times, 100 context and 10 generated tokens each."""
    from simulator.publictrace import Trace

    n = len(times)
    return Trace(times, np.full(n, 100.0), np.full(n, 10.0), n, 0, "")


def test_demand_and_payload_are_unit_mean_in_proportion_to_tokens(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(AZURE)
    trace = read_trace(tmp_path / "a.csv", "azure-llm")
    demand, payload = sizes(trace, context_weight=0.0)
    assert demand.tolist() == pytest.approx([0.5, 1.5, 1.0, 1.0])  # generated 10, 30, 20, 20
    assert payload.tolist() == pytest.approx([0.5, 1.5, 1.0, 1.0])  # context 1000, 3000, 2000
    assert sizes(trace, context_weight=1.0)[0].mean() == pytest.approx(1.0)


def test_a_trace_scenario_runs_and_repeats_under_its_seed(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text(BURSTGPT)
    scenario, problems = parsed(tmp_path, "path: b.csv, format: burstgpt, rate_scale: 40")
    assert scenario is not None, problems
    arrivals = draw(scenario, np.random.default_rng(scenario.seed), None)
    assert arrivals.demand is not None and len(arrivals.demand) == len(arrivals.times)
    assert len(arrivals.times) / 20.0 == pytest.approx(scenario.rate[0][1], rel=0.25)
    assert scenario.rate[0][1] == pytest.approx(40 * 3 / 6)  # 3 rows over 4 s, then a 2-s gap
    policy = load_policy(scenario.policy)
    a, b = (summarize(simulate(scenario, policy, Adaptive(policy)), policy) for _ in range(2))
    a.pop("wall_seconds")
    b.pop("wall_seconds")
    assert a == b and a["requests"] == len(arrivals.times)


def test_a_request_with_more_tokens_takes_longer_in_proportion(tmp_path: Path) -> None:
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:17:{i // 10:02d}.{i % 10}000000,0,{1 if i % 2 else 9}"
             for i in range(200)]  # 10 requests/s, alternately 1 and 9 generated tokens
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    scenario, problems = parsed(tmp_path, "path: a.csv, format: azure-llm, context_weight: 0")
    assert scenario is not None, problems
    demand = draw(scenario, np.random.default_rng(scenario.seed), None).demand
    assert demand is not None and sorted(set(demand.round(6))) == [0.2, 1.8]
    policy = load_policy(scenario.policy)
    result = simulate(scenario, policy, Adaptive(policy))
    latency = np.asarray(result.latency_ms)
    edge = np.asarray(result.mode) == "edge"
    heavy, light = latency[edge & (demand > 1)], latency[edge & (demand < 1)]
    assert len(heavy) > 50 and len(light) > 50
    # at 10 requests/s nothing queues: latency follows demand (9x), with the gamma draw's noise
    assert 5.0 < float(np.median(heavy) / np.median(light)) < 15.0


def test_burstgpt_with_session_columns_is_read_by_column_name(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text(
        "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,"
        "Log Type\n5,s1,0.8,ChatGPT,400,100,500,Conversation log\n"
        "7,s2,1.1,GPT-4,800,50,850,API log\n")
    trace = read_trace(tmp_path / "b.csv", "burstgpt")
    assert trace.t.tolist() == [0.0, 2.0]
    assert trace.context.tolist() == [400, 800] and trace.generated.tolist() == [100, 50]
