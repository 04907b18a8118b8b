"""Simulator speed (100k and 1M requests, 100 nodes) and the fintech comparison table.

    .venv/bin/python bench/simulator.py [--skip-1m]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router.policy.loader import load_policy
from simulator.baselines import BASELINES, Baseline
from simulator.report import summarize, table
from simulator.routers import Adaptive
from simulator.run import simulate
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
HW = [("jetson-agx-orin", 1, 4, 35), ("rtx-4090", 3, 8, 22), ("nvidia-l4", 2, 6, 28),
      ("a100-80g", 8, 16, 14)]


def fleet(tmp: Path) -> Path:
    """A 100-node policy and a scenario loading it at ~70% of edge capacity."""
    nodes = "\n".join(
        f'    - {{id: n{i:03d}, address: "127.0.0.1:{20000 + i}", hardware: {h}, weight: {w}, '
        f"slots: {s}, residency: [{'GDPR' if i % 2 else 'CCPA'}], base_latency_ms: {lat}}}"
        for i, (h, w, s, lat) in ((i, HW[i % 4]) for i in range(100)))
    (tmp / "policy.yaml").write_text(
        f"version: 1\nedge:\n  nodes:\n{nodes}\ncloud:\n  pools:\n"
        '    - {id: eu, address: "127.0.0.1:21000", residency: [GDPR], latency_ms: 120}\n'
        '    - {id: us, address: "127.0.0.1:21001", residency: [CCPA], latency_ms: 140}\n'
        "budgets: {store: memory}\n")
    (tmp / "scenario.yaml").write_text(
        "version: 1\npolicy: policy.yaml\nduration_s: 600\nseed: 1\ntraffic:\n"
        "  rate_rps: 12000\n  keys: {count: 100000, zipf_s: 1.1}\n  classes:\n"
        "    - {name: eu, weight: 0.5, residency: [GDPR], slo_ms: 60, payload_kb: 32}\n"
        "    - {name: us, weight: 0.5, residency: [CCPA], slo_ms: 80, payload_kb: 32}\n")
    return tmp / "scenario.yaml"


def main() -> int:
    """Measure and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-1m", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    scenario, _ = load_scenario(fleet(tmp))
    assert scenario is not None
    policy = load_policy(scenario.policy)
    rows = []
    for n in (100_000,) if args.skip_1m else (100_000, 1_000_000):
        t0 = time.perf_counter()
        simulate(scenario, policy, Adaptive(policy), requests=n)
        wall = time.perf_counter() - t0
        rows.append(f"| {n:,} | {wall:.1f} | {n / wall:,.0f} |")
        print(rows[-1], flush=True)
    speed = ("| simulated requests (100 nodes) | wall s | requests/s |\n|---:|---:|---:|\n"
             + "\n".join(rows) + "\n\nEvery request goes through the core's exact `decide`/"
             "`finish` (table lookup, bounded-load walk, ladder, budget) and the heap-ordered "
             "world; arrivals, classes and keys are pre-drawn with numpy. Goal: 1M requests "
             "under 20 s. The bound is the exact core call (~12-15 µs per decision, see the core "
             "section) plus the event loop's Python callbacks per request (arrival, start, "
             "completion); what would move it: batching arrivals between feed refreshes "
             "through a vectorized fast path for requests whose class and key are already "
             "placed, keeping exact core calls for the rest.\n\n"
             "Reproduce: `.venv/bin/python bench/simulator.py`.")
    write_section("simulator", "Simulator speed", speed)
    fin, _ = load_scenario(ROOT / "simulator" / "scenarios" / "fintech.yaml")
    assert fin is not None
    fpol = load_policy(fin.policy)
    reports = [summarize(simulate(fin, fpol, Adaptive(fpol)), fpol)]
    for kind in BASELINES:
        reports.append(summarize(simulate(fin, fpol, Baseline(fpol, kind)), fpol))
    text = table(reports)
    print(text)
    write_section("fintech", "Fintech fraud scoring: the adaptive policy against baselines",
                  text + "\n\n`hybrid-router simulate --scenario simulator/scenarios/"
                  "fintech.yaml --baselines` (600 s, 900-1,300 req/s, 75 ms objective for card "
                  "authorisations, GDPR everywhere, one node throttled at 200 s, one lost at "
                  "420 s). \"vs cloud-only\" is the cut in cloud inferences and cloud spend "
                  "against the all-cloud baseline. The published hybrid-practice figures "
                  "(-82% cloud inference, -65% spend, p95 45 ms) depend on that deployment's "
                  "traffic; these are what this world model gives for this scenario, not "
                  "tuned to match. Edge-only and the hash baselines have no cloud to absorb "
                  "overload, so their tails explode (queues); least-loaded knows live load but "
                  "no SLO or budget.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
