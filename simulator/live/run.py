"""`simulate --scenario F --live`: the simulator's run and the live twin's, side by side.

The simulator runs first (a bad scenario fails before any process starts), then the
stack (`simulator.live.stack`; with two or more gateways `simulator.live.fleet`) comes up
on 127.0.0.1 ports its processes pick, t=0 is set a moment ahead, and the same arrivals
are sent through Envoy (`simulator.live.load`).
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

from router.core.policy import Policy
from router.harness.procs import Processes
from simulator.gateways import Gateways
from simulator.live import fleet, stack
from simulator.live.fleet import GatewaySwitch, RedisUnavailable
from simulator.live.load import Recorded, Route, drive, wall_origin
from simulator.live.report import gateway_side, live_result, live_side, report, side
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


async def _live(twin: stack.Twin, sim: Result, scenario: Scenario,
                gateways: GatewaySwitch | None = None) -> Recorded:
    t0_wall, origin = wall_origin(LEAD_S)
    await asyncio.to_thread(stack.set_t0, twin, t0_wall)
    classes = scenario.classes
    index = {c.name: i for i, c in enumerate(classes)}
    cfg = scenario.world
    route: Route = (lambda _key: (0, twin.url)) if gateways is None else gateways.fleet.route
    switches = [] if gateways is None else gateways.schedule(origin)
    rec = await drive(route, sim.t, [index[c] for c in sim.cls], sim.key, classes, origin,
                      (cfg.deadline_ms + cfg.timeout_ms) / 1000.0)
    for task in switches:  # events past the run's last arrival never happen
        task.cancel()
    await asyncio.gather(*switches, return_exceptions=True)
    return rec


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
    several = len(scenario.gateways) >= 2
    router = Gateways(policy, [g.share for g in scenario.gateways], sync_s=scenario.lease_sync_s,
                      name="simulator") if several else Adaptive(policy, name="simulator")
    sim = simulate(scenario, policy, router, requests=count)
    state.mkdir(parents=True, exist_ok=True)
    twin = stack.live_policy(Path(scenario.policy), state)
    procs = Processes(state)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    timeout_s = (scenario.world.deadline_ms + scenario.world.timeout_ms) / 1000.0
    switch: GatewaySwitch | None = None
    try:
        started = time.monotonic()
        if several:
            switch = GatewaySwitch(fleet.start(procs, twin, scenario, timeout_s), procs, twin,
                                   scenario)
        else:
            stack.start(procs, twin, Path(scenario.file), timeout_s)
        rec = asyncio.run(_live(twin, sim, scenario, switch))
        wall = time.monotonic() - started
        counts = stack.concurrency(twin) if several else None
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
    live = live_result(sim, rec, policy, wall)
    live_doc = live_side(live, rec, policy)
    if switch is not None and counts is not None:
        live_doc.update(gateway_side(rec, switch.fleet.shares, switch.fleet.events, counts))
    return TwinRun(sim, live, rec.upstream_ms, report(scenario, side(sim, policy), live_doc))


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
    except RedisUnavailable as exc:
        print(f"simulate --live: {exc}; every process stopped", file=sys.stderr)
        return 2
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
