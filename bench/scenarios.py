"""Every shipped scenario through every router, the routing goals, the min_cap_fraction trade-off.

    .venv/bin/python bench/scenarios.py [--requests N] [--only NAME ...]

Writes three sections of docs/BENCHMARKS.md: the table of every scenario × router,
the goal checks, and affinity against balance for hashing.min_cap_fraction 0, 0.25
and 0.5. Each run is one simulation on one seed; ratios are from that run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router.core.policy import Policy
from router.policy.loader import load_policy
from simulator import metrics
from simulator.baselines import BASELINES, make_baseline
from simulator.report import summarize
from simulator.report.summary import add_break_even
from simulator.routers import Adaptive, Router
from simulator.run import Result, simulate
from simulator.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "simulator" / "scenarios"
ROUTERS = ("hybrid-router", *BASELINES)
FLOORS = (0.0, 0.25, 0.5)
# balance_factor run beside a scenario's own at min_cap_fraction 0.5: camera's policy ran 0.25
# until 2026-12-07, which missed the affinity goal; these show what the bound buys and costs
OTHER_BOUNDS = {"camera": (0.25, 0.75)}
Runs = dict[tuple[float, float | None], dict[str, Any]]  # (floor, balance_factor or the policy's)
CALM, SATURATED = 0.6, 0.8  # fleet busy below which affinity is judged; from which saturated


def load(path: Path) -> tuple[Scenario, Policy]:
    """A shipped scenario and its policy."""
    scenario, problems = load_scenario(path)
    assert scenario is not None, problems
    return scenario, load_policy(scenario.policy)


def measure(res: Result, policy: Policy) -> dict[str, Any]:
    """report.json's keys plus what the goals need from the run itself."""
    rep = summarize(res, policy)
    rep["saturated"] = metrics.saturated_modes(res, SATURATED)
    rep["calm_affinity"], rep["calm_windows"] = metrics.affinity_below(res, CALM)
    busy: dict[str, float] = {}
    for _, sample in res.util:
        for node, seconds in sample.items():
            busy[node] = busy.get(node, 0.0) + seconds
    span = max(res.t[-1], 1e-9) if res.t else 1.0
    util = {n: busy.get(n, 0.0) / (slots * span) for n, slots in res.slots.items()}
    rep["hottest"] = max(util.values(), default=0.0)
    rep["fleet_util"] = sum(busy.values()) / (sum(res.slots.values()) * span or 1.0)
    return rep


def router_of(name: str, policy: Policy, scenario: Scenario) -> Router:
    """hybrid-router's core or a baseline."""
    if name == "hybrid-router":
        return Adaptive(policy)
    return make_baseline(policy, name, scenario.seed)


def run_scenario(path: Path, requests: int | None) -> dict[str, dict[str, Any]]:
    """Every router on one scenario."""
    scenario, policy = load(path)
    out = {}
    for name in ROUTERS:
        t0 = time.perf_counter()
        res = simulate(scenario, policy, router_of(name, policy, scenario), requests=requests)
        out[name] = measure(res, policy)
        print(f"{path.stem:13} {name:16} {out[name]['requests']:>9,} requests "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    add_break_even(list(out.values()))
    return out


def tradeoff(path: Path, requests: int | None) -> Runs:
    """hybrid-router with hashing.min_cap_fraction at each of FLOORS, and at 0.5 with each
    balance_factor OTHER_BOUNDS names for the scenario."""
    scenario, policy = load(path)
    out: Runs = {}
    runs = [(floor, None) for floor in FLOORS]
    runs += [(0.5, bf) for bf in OTHER_BOUNDS.get(path.stem, ())]
    for floor, bf in runs:
        knobs: dict[str, float] = {"min_cap_fraction": floor}
        if bf is not None:
            knobs["balance_factor"] = bf
        pol = policy.model_copy(update={"hashing": policy.hashing.model_copy(update=knobs)})
        out[floor, bf] = measure(simulate(scenario, pol, Adaptive(pol), requests=requests), pol)
        print(f"{path.stem:13} min_cap_fraction {floor:<4} balance_factor "
              f"{pol.hashing.balance_factor:<4} done", flush=True)
    return out


def fmt(value: float | None, spec: str) -> str:
    """A number, or – when there is none."""
    return "–" if value is None else format(value, spec)


def pct(value: float | None) -> str:
    """A 0..1 share as a percentage, or – when there is none."""
    return "–" if value is None else f"{100 * value:.1f}%" if value < 0.1 else f"{100 * value:.0f}%"


def scenario_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One markdown table: every scenario × every router."""
    head = ("| scenario | router | SLO met | p50 ms | p95 ms | fixed $ | variable $ | total $ "
            "| $ / 1k req | fleet busy | break-even util. | cloud frac | split frac "
            "| max load/cap | affinity | warm hits | mode flap |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for scen, rows in results.items():
        for name, r in rows.items():
            bold = "**" if name == "hybrid-router" else ""
            lines.append(
                f"| {scen} | {bold}{name}{bold} | {100 * r['slo_attainment']:.1f}% "
                f"| {r['latency_ms']['p50']:,.1f} | {r['latency_ms']['p95']:,.1f} "
                f"| {r['fixed_cost_usd']:.2f} | {r['variable_cost_usd']:.2f} "
                f"| {r['total_cost_usd']:.2f} | {r['cost_per_1k_requests_usd']:.4f} "
                f"| {pct(r['fleet_utilization'])} | {pct(r['break_even_utilization'])} "
                f"| {r['cloud_fraction']:.3f} "
                f"| {r['split_fraction']:.3f} | {fmt(r['max_load_over_cap'], '.2f')} "
                f"| {fmt(r['affinity_hit_rate'], '.2f')} | {fmt(r['warm_hit_rate'], '.2f')} "
                f"| {fmt(r['mode_flap'], '.3f')} |")
    return head + "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def split_verdict(split: int, whole: int) -> str:
    """Split at least as often as whole while saturated; n/a when the run never saturated."""
    return _verdict(split >= whole) if split + whole else "n/a (never saturated)"


def slo_and_spend_goals(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Per scenario: SLO attainment against the best baseline, spend against cloud-only."""
    lines = []
    for scen, rows in results.items():
        a = rows["hybrid-router"]
        best = max((n for n in rows if n != "hybrid-router"),
                   key=lambda n: rows[n]["slo_attainment"])
        gap = 100 * (a["slo_attainment"] - rows[best]["slo_attainment"])
        lines.append(f"| SLO attainment ≥ every baseline's | {scen} | "
                     f"{100 * a['slo_attainment']:.1f}% (best baseline: {best} "
                     f"{100 * rows[best]['slo_attainment']:.1f}%, {gap:+.1f} points) | "
                     f"{_verdict(gap >= 0)} |")
        ref = rows["cloud-only"]
        lines.append(f"| total cost ≤ cloud-only's | {scen} | ${a['total_cost_usd']:.2f} "
                     f"(fixed ${a['fixed_cost_usd']:.2f} + variable "
                     f"${a['variable_cost_usd']:.2f}) against ${ref['total_cost_usd']:.2f}; "
                     f"fleet {pct(a['fleet_utilization'])} busy, break-even at "
                     f"{pct(a['break_even_utilization'])} | "
                     f"{_verdict(a['total_cost_usd'] <= ref['total_cost_usd'])} |")
    return lines


def stability_goals(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Per scenario: the bound held at every pick, and the mode mix held still."""
    lines = []
    for scen, rows in results.items():
        a = rows["hybrid-router"]
        over = a["max_load_over_cap"]
        lines.append(f"| max_load_over_cap ≤ 1 | {scen} | {fmt(over, '.3f')} | "
                     f"{_verdict(over is None or over <= 1.0)} |")
        flap, quality = a["mode_flap"], a["quality_flap_rate"]
        lines.append(f"| mode_flap ≤ 0.15 in steady windows | {scen} | {fmt(flap, '.3f')} | "
                     f"{'n/a' if flap is None else _verdict(flap <= 0.15)} |")
        lines.append(f"| quality_flap_rate ≤ 0.05 in steady windows | {scen} | "
                     f"{fmt(quality, '.3f')} | "
                     f"{'n/a' if quality is None else _verdict(quality <= 0.05)} |")
        if scen == "camera":
            sat = a["saturated"]
            split, cloud = sat.get("split", 0), sat.get("cloud", 0)
            lines.append(f"| frames split ≥ sent whole while the edge is saturated "
                         f"(fleet ≥ {SATURATED:.0%} busy) | camera | {split:,} split, "
                         f"{cloud:,} whole | {split_verdict(split, cloud)} |")
    return lines


def affinity_goals(trade: dict[str, Runs]) -> list[str]:
    """Per scenario: affinity in calm windows with min_cap_fraction 0.5, its own policy's
    balance_factor."""
    lines = []
    for scen, runs in trade.items():
        r = runs[0.5, None]
        calm = r["calm_affinity"]
        what = "no window below 60 %" if calm is None else \
            f"{calm:.3f} over {r['calm_windows']} windows"
        lines.append(f"| affinity_hit_rate ≥ 0.8 below {CALM:.0%} fleet utilization, "
                     f"min_cap_fraction 0.5 | {scen} | {what} | "
                     f"{'n/a' if calm is None else _verdict(calm >= 0.8)} |")
    return lines


def goals_table(results: dict[str, dict[str, dict[str, Any]]],
                trade: dict[str, Runs]) -> str:
    """Issue #12's goals, each with the figure it is judged on."""
    head = "| goal | scenario | hybrid-router | verdict |\n|---|---|---|---|\n"
    rows = slo_and_spend_goals(results) + stability_goals(results) + affinity_goals(trade)
    return head + "\n".join(rows)


def tradeoff_table(trade: dict[str, Runs], balance: dict[str, float]) -> str:
    """Affinity against balance for each min_cap_fraction (and balance_factor), side by side."""
    head = ("| scenario | min_cap_fraction | balance_factor | affinity | affinity below 60 % busy "
            "| warm hits | hottest node busy | fleet busy | p95 ms | SLO met |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for scen, runs in trade.items():
        for (floor, bf), r in runs.items():
            shown = f"{balance[scen]:g}" if bf is None else f"**{bf:g}**"
            lines.append(f"| {scen} | {floor:g} | {shown} | {fmt(r['affinity_hit_rate'], '.3f')} "
                         f"| {fmt(r['calm_affinity'], '.3f')} | {fmt(r['warm_hit_rate'], '.3f')} "
                         f"| {100 * r['hottest']:.0f}% | {100 * r['fleet_util']:.0f}% "
                         f"| {r['latency_ms']['p95']:,.1f} | {100 * r['slo_attainment']:.1f}% |")
    return head + "\n".join(lines)


def main() -> int:
    """Run everything and write the three sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="cap each run (a quick look, not the doc)")
    parser.add_argument("--only", nargs="*", help="scenario names (default: every one)")
    args = parser.parse_args()
    paths = [p for p in sorted(SCENARIOS.glob("*.yaml")) if not args.only or p.stem in args.only]
    results = {p.stem: run_scenario(p, args.requests) for p in paths}
    trade = {p.stem: tradeoff(p, args.requests) for p in paths}
    table, goals, floors = scenario_table(results), goals_table(results, trade), \
        tradeoff_table(trade, {p.stem: load(p)[1].hashing.balance_factor for p in paths})
    print(table, goals, floors, sep="\n\n")
    if args.requests is None and args.only is None:
        write_section("scenarios", "Every shipped scenario through every router", table + NOTE)
        write_section("goals", "Goals: SLO, spend, bounded load, stable modes, split, affinity",
                      goals + GOALS_NOTE)
        write_section("affinity", "Affinity against balance: hashing.min_cap_fraction",
                      floors + FLOORS_NOTE)
    return 0


NOTE = """

One run per scenario and router, on the scenario's seed, through the world model of
docs/reference.md section 10 (`hybrid-router simulate --scenario simulator/scenarios/NAME.yaml
--baselines`). *Fixed* is what is paid whether used or not over the run: the owned edge fleet's
`usd_per_hour` (hardware presets, docs/reference.md section 6; cloud-only owns no edge fleet) and
reserved pools' fees; *variable* is what pools billed plus any marginal cost per edge inference;
*total* is both. *Fleet busy*: share of the edge's slot-seconds in use; *break-even util.*: the
fleet utilization from which owning the edge fleet costs less than cloud-only (– when the edge
saved nothing). *max load/cap* is only defined for routers with a
bounded-load cap (this router and Envoy's ring hash, whose bound lets a host reach slots + 1).
*affinity*: share of edge requests on their key's home node; *warm hits*: share of edge
inferences that found their key warm. Reproduce: `.venv/bin/python bench/scenarios.py`."""

GOALS_NOTE = """

Camera's affinity miss was its nodes' bounded-load cap. Counted in its run at `min_cap_fraction`
0.5, of the requests whose walk passed their key's home, 43,363 found the home at a cap below its 4
slots and 16,352 at a cap of its 4 slots with all of them busy (a queue never takes a node past its
cap); the 8,066 that found only its slots busy now wait there (below). The cap follows the load in
flight over the class's nodes, ⌈(1 + ε)(L + 1) w / W⌉: for camera's six equal 4-slot nodes at ε
0.25 it is 3 or less while at most 13 of their 24 slots are busy (56 %), and `min_cap_fraction` 0.5
is a floor of 2, under that. A wider bound met the goal and cost SLO: at ε 0.5, affinity below 60 %
busy 0.846 and SLO attainment 99.0 % against 99.5 %, at 0.75 0.924 and 98.7 %, the misses in the
minute of cam-c2's loss (down from 330 to 410 s): between 360 and 420 s, 1,485 at 0.25 and 2,728 at
0.5, nearly all split frames over their deadline, while the splits themselves were about as many
(14,265 and 14,625 from 330 to 420 s). The split estimate priced a frame's features on an idle node
uplink (the feed's reading, up to a refresh old) while the splits of the lost node's shed keys
crossed the same uplinks at once. A split now waits behind the features of this router's splits in
flight from its node, as a cloud request waits behind its cloud payloads on the gateway's uplink
(docs/reference.md, "Estimates"): camera's misses between 360 and 420 s went to 0 at 0.25 and at
0.5 (11,375 and 11,457 splits from 330 to 420 s, the rest degraded on the edge), its SLO over the
run 99.5 → 99.99 % at 0.25, total $0.90 → $0.82, and at 0.5 with it: camera's policy now runs 0.5,
affinity below 60 % busy 0.845 (the affinity table below, 0.25 and 0.75 in bold beside it), mode
flap 0.057 → 0.048, quality flap 0.003 → 0.015. The other scenarios moved by at most 0.001
(spot-spike's quality flap).

Since keys keep their mode
(`router/core/shed.py`: each node serves a hash-stable share of its home keys at full quality and
degrades the next share once their demand passes half its slots, or its fill target where that
is less) camera's fleet runs well below
saturation, so its split-vs-whole goal had no saturated window to judge, and its
frames run `constrained` more often. Total cost counts the owned edge fleet by the hour (hardware
presets) whether it serves or not, and cloud-only owns none: the edge pays where the fleet is
busier than its break-even utilization.

Quality flap rate (issue #18): a key's consecutive requests are paired only when both are in steady
windows with no scenario event between them; black-friday's sparse keys, minutes apart across its
five events, had made 0.036 of its former 0.060. A key its home sheds leaves the edge even when
nothing off it meets its SLO, a pool before a split whose feature slot comes and goes; a degraded
quality is held by key like the full one. What still changed a kept key's quality was its request
finding every slot it could walk to busy and going to split or cloud best effort, and 0.75 of the
slots is a fill at which a lone 8-slot node (spot-spike's one GDPR node) is full about 12 % of the
time. Each node now fills to the Erlang B load at which 2 % of its keys' requests would find every
slot they may walk to busy, at most 0.75 (the nodes in the ring with the key's residency and a
model in common, each up to its bounded-load cap with all of them busy); it depends on slots and
ring weights alone. Before → after: spot-spike 0.141 → 0.043 (goal met; SLO 93.2 → 86.3 %, total
$2.73 → $5.91: keys its nodes no longer keep go to the cloud, 0.069 → 0.177 of its requests),
fintech 0.166 → 0.138 (SLO 84.5 → 83.5 %, $3.79 → $4.11), fintech-trace 0.102 → 0.102, partition
0.040 → 0.018 (SLO 98.4 → 93.7 %, $0.27 → $0.82), black-friday 0.024 → 0.019 (SLO 99.6 → 99.1 %,
$1.59 → $1.95), camera 0.008 → 0.011 (SLO 99.9 → 98.2 %, $0.63 → $1.26); every scenario keeps its
SLO lead over the best baseline but the twin, at 98.0 % against cloud-only's 100 % as before. Still
missed: fintech by 0.088 and fintech-trace by 0.052. Fintech-trace is unchanged because its demand
stays where keys only degrade, and that room is still half the slots (its 23 slots that pool their
overflow fill to 0.69). What flaps there is most likely kept keys' requests finding every slot busy
in the trace's bursts, which Erlang B (Poisson arrivals) does not model: shares following its 30-s
swings are not most of it, as a dead band of 0.05 to 0.15 on the shares left it at 0.099 to 0.102.
Sizing demand by how long requests were found holding their slots (a measured service factor) had
taken fintech to 0.090 and fintech-trace to 0.082, but made the live twin's mode mix drift from its
simulation past its 10-point bound, so it is not used. What flapped in fintech was measured: 0.073
of kept, degraded card-auth requests found every slot they could walk to busy (Erlang B puts it at
0.02 for the fill target), and went to split and back; its nodes ran 0.72-0.80 of their slots
busy (the throttled one aside) against a target of 0.69, because account-review, a fifth of the
requests, cannot degrade and costs its node a full inference where the shares counted 0.6 of one.
Such requests are now counted at full cost, and a busy node sheds first the keys whose class meets
its SLO off the edge (`router/core/shed.py`, `by_class`): counting alone had taken spot-spike's SLO
to 81.3 %, as the shares shed its 75 ms eu-fraud keys to a cloud that misses them while its 300 ms
batch keys stayed. Before → after: fintech 0.138 → 0.095 (SLO 83.5 → 82.0 %, $4.11 → $4.59),
fintech-trace 0.102 → 0.097 (94.3 → 94.0 %), spot-spike 0.043 → 0.041 with SLO 86.3 → 95.2 % ($5.91
→ $7.97: batch keys now go to the cloud), black-friday 0.019 → 0.021 (99.1 → 99.0 %); camera and
partition unchanged. The twin holds every edge estimate to at least the node's unloaded tail
(`edge.tail_factor`, 1.4 × `base_latency_ms`): SLO 98.0 → 99.1 %; of its 43 misses, 22 are
requests sent to rtx-a between its loss at 25 s and the next feed, which no estimate can avoid.
What still flapped in fintech was traced the same way: 0.033 of its card-auth pairs went from
`edge-degraded` to `split` and 0.033 back, on the same home node, every one because every slot the
request could walk to was busy at its instant (all four GDPR nodes full, the throttled one at its
cap); split and cloud miss card-auth's 75 ms anyway. With `edge.queue_per_slot` (off by default, 1
in the shipped fintech, camera, spot-spike and partition policies) such a request waits in a node's
queue, its home first, within the node's cap and with the wait in its estimate (each place one
slot's turn at the node's unloaded tail), so a wait that misses the SLO still spills. Before →
after: fintech 0.095 → 0.023 (SLO 82.0 → 84.8 %), fintech-trace 0.097 → 0.057 (94.0 → 96.9 %, $0.91
→ $0.46), spot-spike 0.041 → 0.012 (95.2 → 96.8 %), partition 0.018 → 0.002 (93.7 → 94.5 %), camera
0.011 → 0.007 (these in a run with the queue on for every policy). What was left in fintech-trace
crossed refreshes: its full-quality share follows each window's demand, which the Azure trace
swings by ±15 % under a steady load, at 2.5 points of share per point of demand. The full share is
now sized for a held demand (a window's own when higher or a shock off it, else halfway down to
it), while the share kept on the edge follows each window: fintech-trace 0.057 → 0.041 with it and
passive health (this table), mode flap 0.090 → 0.073. Passive health (section 5 of
docs/reference.md: Envoy's access log service reports failed requests, and a node with five in 10 s
leaves the ring) takes the twin's lost rtx-a out 2.0 s after its loss instead of at the next feed:
requests sent to it before that feed 21 → 10, SLO 99.1 → 99.2 % (43 → 37 misses; cloud-only 100 %).
It moves camera's reaction to the loss of cam-c2 a refresh earlier, and with it the reaction's
second step (the shed keys' splits fill their sites' uplinks, split p50 110 → 151 ms, and the next
feed's uplink reading sends them to the cloud, where their 1.5 MB frames queue behind the gateway
site's 50 Mbps uplink to their deadline): that step now falls in windows counted as steady (10 s
after 380 s: split 0.35 → 0.02, cloud 0 → 0.12), where before it fell in the window of the node's
return at 410 s. That second step was a trap: with their split over the SLO by the feed's uplink
reading, the shed keys took the pool before a split, and their 1.5 MB frames queued behind the
gateway's 50 Mbps uplink (`cloud.uplink_mbps`) to their deadline; the gateway is at site B, so
those frames lowered site B's own uplink reading and sent more of its keys the same way (0.03-0.04
of camera's requests still went to the pool a minute after cam-c2 was back). The cloud estimate now
counts the whole payloads of the router's own cloud requests in flight ahead of a new one on the
gateway's uplink, and a shed key whose pool is slower than its split by more than its SLO takes the
split (docs/reference.md, "Estimates" and "Keys keep their mode"): camera's mode flap 0.332 →
0.062, SLO 98.0 → 99.5 %, total $1.46 → $0.90, its requests in the pool 0.017 → 0.000; the other
scenarios moved by at most 0.1 SLO points and 0.002 of flap (fintech-trace's affinity 0.801 → 0.799
below 60 % busy, now under its 0.8 line: it sits on it). Open work (issue #18): the affinity rows,
and the twin's SLO under cloud-only. Of the twin's 37 misses, 10 are requests sent to rtx-a before
five of them had failed (passive health's signal), and 27 are keys cold on an L4 or Orin whose
other slot was busy: the node's contention makes a cold request slower than the unloaded tail the
estimate's floor covers and than the feed's p95, which is mostly of warm keys. An estimate that
knows which keys a node has warm took the 27 to 8 in a trial, but it made a key's rung depend on
the instant's cache, and fintech-trace's mode flap rose from 0.073 to 0.141 and black-friday's from
0.021 to 0.086: not taken.

A key now waits at its busy home (docs/reference.md, "A key waits at its home"; policies with
`edge.queue_per_slot`, every shipped one but black-friday's). A request whose walk
passed its key's home for the home's slots alone, and would have gone to a node with room, where
it is cold, takes a place in the home's queue instead when its rung there, wait included, meets
its SLO. A home of a few slots has every one busy a good part of the time well under its cap
(Erlang), which sent a key's requests elsewhere at random instants. Affinity below 60 % busy at
`min_cap_fraction` 0.5, before → after: fintech-trace 0.799 → 0.825 (goal met), fintech 0.808 →
0.861, partition 0.929 → 0.947, camera 0.731 → 0.753; warm hits fintech-trace 0.45 → 0.46,
fintech 0.46 → 0.48; SLO attainment unchanged in every scenario (to 0.1 points), mode flap 0.073 →
0.069 in fintech-trace and 0.062 → 0.057 in camera, quality flap within 0.003. Of fintech-trace's
requests that found only their home's slots busy, 26,256 waited there and 13,391 went on, their
wait over their SLO. Black-friday and spot-spike are unchanged: their affinity was 0.94 and 0.98.

The twin's policy (2026-12-07): its nodes of 2 and 3 slots sent keys off their home at the
bounded-load cap (at ε 0.25 a share of the load in flight, rounded up, stays under their slots
until the fleet is mostly busy), and an L4's estimate floor, 1.4 × its 80 ms base, promised
eu-vision's 150 ms to cold keys beside a busy slot, which the world's contention (0.5) makes take
1.5 × base and miss it one time in six. It now runs `hashing.balance_factor` 0.75,
`edge.tail_factor` 1.9 (about the 86th percentile of such a cold inference) and `queue_per_slot` 1
(docs/operations.md, "Tuning"): affinity below 60 % busy 0.687 → 0.842 (goal met), warm hits 0.73 →
0.78, SLO 99.2 → 99.8 %, total cost unchanged ($0.04); the live twin is within its goal (section
"Simulator vs live stack"). What is left of the SLO goal is out of reach of any router that sends
rtx-a its keys until they fail: cloud-only misses 1 of the twin's 4,928 requests, and the router
11, one before the first feed and 10 sent to rtx-a after its loss at 25 s, 7 of them in the 0.32 s
after it, before any request to it could have failed (the world ends a request to a down node at
its 1-s timeout), and 3 as those timeouts freed its slots, before the fifth failure took it out of
the ring (passive health): to tie cloud-only, the router could lose no more than one request to a
node it could not know was gone."""


FLOORS_NOTE = """

hybrid-router alone, each scenario's policy with `hashing.min_cap_fraction` set as shown.
*affinity below 60 % busy*: over the 10-s windows whose fleet utilization was under 60 %;
*hottest node busy*: the busiest node's share of its slots in use over the run, against the
fleet's. A higher floor keeps keys home (warm) at low load and lets a node fill further before the
proportional bound spreads its keys. Rows with the balance_factor in bold run camera's policy with
another bound than its own (ε; section "Goals" above says what they buy and cost)."""


if __name__ == "__main__":
    sys.exit(main())
