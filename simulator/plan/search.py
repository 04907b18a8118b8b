"""The search: Optuna proposes points of the space, the simulator measures each.

Three objectives, all read from one simulated run of the scenario: total cost per
hour (the fleet's fixed cost plus what the run spent, per hour of simulated time;
lower is better), SLO attainment (higher) and p95 latency (lower). Optuna's TPE
sampler (multi-objective) is seeded with `--seed`; trials are asked in batches of
BATCH, measured on up to `--jobs` processes, and told back in the order they were
asked, so the same seed gives the same trials and the same answer whatever
`--jobs` is and however the processes interleave.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna

from router.policy.loader import PolicyError, policy_from_text
from simulator.plan.apply import Choice, candidate
from simulator.plan.space import Space
from simulator.report import summarize
from simulator.routers import Adaptive
from simulator.run import Result, simulate
from simulator.scenario import Scenario

BATCH = 4  # trials asked before any of them is told: the most that run at once


@dataclass(frozen=True)
class Trial:
    """One measured point: what was chosen, the policy it made and how it did."""

    number: int
    choice: Choice
    policy_text: str
    summary: dict[str, Any]  # simulate's report.json keys, plus total_cost_per_hour_usd
    error: str = ""  # why the point could not run ('' when it ran)

    @property
    def ok(self) -> bool:
        """Whether the point ran."""
        return not self.error

    @property
    def objectives(self) -> tuple[float, float, float]:
        """(total cost per hour, SLO attainment, p95 ms)."""
        s = self.summary
        return (s["total_cost_per_hour_usd"], s["slo_attainment"], s["latency_ms"]["p95"])


def per_hour(result: Result, summary: dict[str, Any]) -> float:
    """The run's total cost per hour of simulated time: fixed per hour plus variable spend
    spread over the run."""
    span = result.t[-1] if result.t else 0.0
    variable = summary["variable_cost_usd"] * 3600.0 / span if span > 0 else 0.0
    return round(float(summary["fixed_cost_per_hour_usd"]) + variable, 6)


def run_once(scenario: Scenario, policy_text: str, file: str, requests: int | None,
             name: str = "hybrid-router") -> tuple[Result, dict[str, Any]]:
    """Simulate `scenario` under the policy `policy_text`: (the run, its summary)."""
    policy = policy_from_text(policy_text, file)
    result = simulate(scenario, policy, Adaptive(policy, name=name), requests=requests)
    summary = summarize(result, policy)
    summary.pop("wall_seconds", None)
    summary["total_cost_per_hour_usd"] = per_hour(result, summary)
    return result, summary


def measure(job: tuple[Scenario, str, str, int | None]) -> dict[str, Any]:
    """A trial's summary (run in a worker process)."""
    scenario, text, file, requests = job
    return run_once(scenario, text, file, requests)[1]


def suggest(trial: optuna.Trial, space: Space) -> Choice:
    """The point Optuna proposes, as a `Choice`."""
    add = tuple(trial.suggest_int(f"add:{i}:{a.preset}@{a.site}", a.min, a.max)
                for i, a in enumerate(space.add_nodes))
    remove = frozenset(n for n in space.remove_nodes
                       if trial.suggest_categorical(f"remove:{n}", (False, True)))
    reserved = {p: trial.suggest_int(f"reserved:{p}", int(r.slots[0]), int(r.slots[1]))
                for p, r in space.reserved_slots.items()}
    knobs: dict[str, float] = {}
    for path, (low, high) in space.knobs.items():
        if isinstance(low, int) and isinstance(high, int):
            knobs[path] = trial.suggest_int(f"knob:{path}", low, high)
        else:
            knobs[path] = trial.suggest_float(f"knob:{path}", float(low), float(high))
    return Choice(add, remove, reserved, knobs)


@dataclass(frozen=True)
class Setup:
    """What every trial shares: the scenario, its policy as data, the space."""

    scenario: Scenario
    data: dict[str, Any]
    file: str
    space: Space
    requests: int | None


def current(data: dict[str, Any], path: str) -> float | None:
    """The value the policy file gives the key at dotted `path` (None: not written there)."""
    at: Any = data
    for part in path.split("."):
        if not isinstance(at, dict) or part not in at:
            return None
        at = at[part]
    return at if isinstance(at, int | float) and not isinstance(at, bool) else None


def today(setup: Setup) -> dict[str, Any]:
    """Today's policy as a point of the space, as far as the space reaches it (a knob the
    file leaves to its default, or set outside the range, is left to the sampler)."""
    space = setup.space
    out: dict[str, Any] = {f"add:{i}:{a.preset}@{a.site}": a.min
                           for i, a in enumerate(space.add_nodes)}
    out.update({f"remove:{n}": False for n in space.remove_nodes})
    pools = {p["id"]: p for p in setup.data.get("cloud", {}).get("pools", [])}
    for pid, r in space.reserved_slots.items():
        now = pools[pid].get("reserved_slots", 0) if pools[pid].get("pricing") == "reserved" \
            else 0
        if r.slots[0] <= now <= r.slots[1]:
            out[f"reserved:{pid}"] = now
    for path, (low, high) in space.knobs.items():
        value = current(setup.data, path)
        if value is not None and low <= value <= high:
            out[f"knob:{path}"] = value
    return out


def _prepare(setup: Setup, choice: Choice) -> tuple[str, Scenario, str]:
    """(policy text, scenario, '') for a point that makes a valid policy and world, else
    ('', the scenario, why not)."""
    try:
        text, _, planned = candidate(setup.data, setup.scenario, setup.space, choice,
                                     setup.file)
    except PolicyError as exc:
        return "", setup.scenario, "; ".join(p.message for p in exc.problems[:3])
    except ValueError as exc:
        return "", setup.scenario, str(exc)
    return text, planned, ""


def search(setup: Setup, *, trials: int, jobs: int, seed: int,
           report: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Run `trials` trials; every one, in order (failed ones with their reason)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(today(setup), skip_if_exists=True)  # the search starts from today
    done: list[Trial] = []
    workers = max(1, min(jobs, BATCH))
    # spawned, not forked: a worker starts clean whatever threads this process holds
    pool: Executor | None = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    try:
        while len(done) < trials:
            asked = [study.ask() for _ in range(min(BATCH, trials - len(done)))]
            batch = [_measured(setup, t, pool) for t in asked]
            for t, (choice, text, pending, error) in zip(asked, batch, strict=True):
                summary = pending.result() if isinstance(pending, Future) else pending
                if error:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                else:
                    trial = Trial(t.number, choice, text, summary)
                    study.tell(t, list(trial.objectives))
                done.append(Trial(t.number, choice, text, summary, error))
                if report is not None:
                    report(done[-1])
    finally:
        if pool is not None:
            pool.shutdown()
    return done


def _measured(setup: Setup, t: optuna.Trial, pool: Executor | None
              ) -> tuple[Choice, str, Any, str]:
    """(choice, policy text, summary or its future, error) of one asked trial."""
    choice = suggest(t, setup.space)
    text, planned, error = _prepare(setup, choice)
    if error:
        return choice, text, {}, error
    job = (planned, text, setup.file, setup.requests)
    return choice, text, (pool.submit(measure, job) if pool is not None else measure(job)), ""


def pareto(trials: list[Trial]) -> list[Trial]:
    """The trials no other trial beats on every objective (and strictly on one)."""
    ran = [t for t in trials if t.ok]

    def beats(a: Trial, b: Trial) -> bool:
        x = (a.objectives[0], -a.objectives[1], a.objectives[2])
        y = (b.objectives[0], -b.objectives[1], b.objectives[2])
        return all(p <= q for p, q in zip(x, y, strict=True)) and x != y

    return [t for t in ran if not any(beats(o, t) for o in ran)]


def recommend(trials: list[Trial], slo: float) -> Trial | None:
    """The cheapest trial meeting `slo` (ties: higher SLO, lower p95, earlier), or None."""
    meeting = [t for t in trials if t.ok and t.summary["slo_attainment"] >= slo
               and math.isfinite(t.objectives[0])]
    if not meeting:
        return None
    return min(meeting, key=lambda t: (t.objectives[0], -t.objectives[1], t.objectives[2],
                                       t.number))


def progress(total: int) -> Callable[[Trial], None]:
    """A reporter printing one line per trial on stderr."""

    def line(t: Trial) -> None:
        if t.ok:
            cost, slo, p95 = t.objectives
            said = f"${cost:,.4f}/h, SLO {100 * slo:.2f} %, p95 {p95:,.1f} ms"
        else:
            said = f"not run: {t.error}"
        print(f"trial {t.number + 1}/{total}: {said}", file=sys.stderr, flush=True)

    return line
