"""`simulate --scenario F --live`: the simulator's run and the live twin's, side by side.

The simulator runs first (a bad scenario fails before any process starts), then the
stack (`simulator.live.stack`) comes up on 127.0.0.1 ports its processes pick, t=0 is set a
moment ahead, and the same arrivals are sent through Envoy (`simulator.live.load`).
Every process started is stopped on the way out: at the end, on an error, on
Ctrl-C or SIGTERM. Logs go to DIR/live/ (or a temporary directory, kept and named
when something failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import numpy as np

from router.core.model import Policy
from router.harness.procs import Processes
from simulator.live import stack
from simulator.live.load import Recorded, drive, wall_origin
from simulator.live.report import live_result, live_side, report, side
from simulator.report import write_decisions
from simulator.routers import Adaptive
from simulator.run import Result, simulate
from simulator.scenario import Scenario
from simulator.sites import load_checked
from simulator.traffic import arrivals

LEAD_S = 1.0  # t=0 this far after the stack is up, so the first arrivals are not late


def count_of(scenario: Scenario, requests: int | None, seconds: float | None) -> int | None:
    """How many of the scenario's arrivals the run takes (None: all of `duration_s`)."""
    if seconds is None:
        return requests
    times, _, _ = arrivals(scenario, np.random.default_rng(scenario.seed), None)
    within = int(np.searchsorted(times, seconds))
    return within if requests is None else min(within, requests)


async def _live(twin: stack.Twin, sim: Result, scenario: Scenario) -> Recorded:
    t0_wall, origin = wall_origin(LEAD_S)
    await asyncio.to_thread(stack.set_t0, twin, t0_wall)
    classes = scenario.classes
    index = {c.name: i for i, c in enumerate(classes)}
    cfg = scenario.world
    return await drive(twin.url, sim.t, [index[c] for c in sim.cls], sim.key, classes, origin,
                       (cfg.deadline_ms + cfg.timeout_ms) / 1000.0)


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same way out as Ctrl-C: every process stopped


class TwinRun(NamedTuple):
    """One scenario's simulated and live runs and its report."""

    sim: Result
    live: Result
    upstream_ms: list[float]  # each live request's time at the emulated upstream
    doc: dict[str, Any]  # report.json


def run_twin(scenario: Scenario, policy: Policy, state: Path, count: int | None) -> TwinRun:
    """Both runs of one scenario (its first `count` arrivals); raises on failure."""
    sim = simulate(scenario, policy, Adaptive(policy, name="simulator"), requests=count)
    state.mkdir(parents=True, exist_ok=True)
    twin = stack.live_policy(Path(scenario.policy), state)
    procs = Processes(state)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        started = time.monotonic()
        stack.start(procs, twin, Path(scenario.file),
                    (scenario.world.deadline_ms + scenario.world.timeout_ms) / 1000.0)
        rec = asyncio.run(_live(twin, sim, scenario))
        wall = time.monotonic() - started
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
    live = live_result(sim, rec, policy, wall)
    sim_side = side(sim, policy)
    return TwinRun(sim, live, rec.upstream_ms,
                   report(scenario, sim_side, live_side(live, rec, policy)))


def run_live(args: argparse.Namespace) -> int:
    """The command: 0 after a run, 2 on bad input, 1 when the stack failed."""
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        print(f"hybrid-router simulate: --out {out} exists and is not a directory",
              file=sys.stderr)
        return 2
    inputs = load_checked(args.scenario, getattr(args, "policy", None))
    if inputs is None:
        return 2
    scenario, policy = inputs
    state = out / "live" if out is not None else Path(tempfile.mkdtemp(prefix="twin-"))
    try:
        twin = run_twin(scenario, policy, state, count_of(scenario, args.requests, args.seconds))
    except KeyboardInterrupt:
        print(f"simulate --live: interrupted; every process stopped; logs in {state}",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"simulate --live: {exc}; every process stopped; logs in {state}",
              file=sys.stderr)
        return 1
    if out is not None:
        _write(out, twin, policy, scenario)
    elif state.name.startswith("twin-"):
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(twin.doc, indent=2))
    return 0


def _write(out: Path, twin: TwinRun, policy: Policy, scenario: Scenario) -> None:
    from simulator.live.page import twin_html  # plotly, only when a page is written

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(twin.doc, indent=2))
    write_decisions(twin.sim, out / "decisions.jsonl")
    write_decisions(twin.live, out / "live-decisions.jsonl")
    page = twin_html(twin.sim, twin.live, twin.upstream_ms, twin.doc, policy, scenario)
    (out / "report.html").write_text(page, encoding="utf-8")
