"""Throughput and added latency through real Envoy, four ways side by side in one run.

(a) Envoy straight to an upstream, (b) Envoy's own ring hash with
hash_balance_factor, (c) a do-nothing Python ext_proc that sets one header (the
language's floor), (d) hybrid-router; plus (d2) hybrid-router --workers 2, (dw)
hybrid-router with Envoy forwarding every request header to it (the config without
`forward_rules`), and
(h8, h2) the do-nothing processor answering a fixed route, with every route header the
router sets or only the two Envoy routes on: what the other headers cost Envoy, and (h0)
(c)'s answer with the route cache cleared: what routing the request again costs Envoy, and (h1)
x-route-cluster alone: the router's route with Envoy's ring hash picking the node.
Requests carry what an inference client sends besides the tags (user agent, accept,
content type, a bearer token, a trace context).
Closed loop: wrk, 32 connections. Open loop: a fixed 300 req/s. Upstreams are
a second Envoy answering with direct_response, so they are never the bottleneck.
Runs are interleaved (a, b, c, d, d2, a, b, ...) and medians reported, because
this 2-core machine is shared and noisy. Writes docs/BENCHMARKS.md.

    .venv/bin/python bench/envoy_extproc.py [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router import wire
from router.core.policy import Policy
from router.core.request import HeaderMap
from router.envoy_config import build
from router.policy.loader import load_policy
from router.runtime import Runtime
from tests.integration.stack import ENVOY, free_port, stop, wait_port

ROOT = Path(__file__).resolve().parent.parent
NOOP = '''
import asyncio, json, sys
import grpc, uvloop
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pbg
SET = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None  # a fixed answer's headers
FIXED = SET and pb.ProcessingResponse(request_headers=pb.HeadersResponse(
    response=pb.CommonResponse(clear_route_cache=True, header_mutation=pb.HeaderMutation(
        set_headers=[base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(
            key=k, raw_value=v.encode()), append_action="OVERWRITE_IF_EXISTS_OR_ADD")
            for k, v in SET]))))
class P(pbg.ExternalProcessorServicer):
    async def Process(self, it, ctx):
        async for m in it:
            if FIXED and m.WhichOneof("request") == "request_headers":
                yield FIXED
            elif m.WhichOneof("request") == "request_headers":
                opt = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(
                    key="x-route-node", raw_value=b"noop"))
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse(
                    response=pb.CommonResponse(header_mutation=pb.HeaderMutation(
                        set_headers=[opt]))))
            else:
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
async def main():
    s = grpc.aio.server()
    pbg.add_ExternalProcessorServicer_to_server(P(), s)
    s.add_insecure_port(sys.argv[1]); await s.start(); await s.wait_for_termination()
uvloop.run(main())
'''
def wrk_script(keys: int = 5000, headers: tuple[tuple[str, str], ...] = ()) -> str:
    """wrk's Lua: GET /infer spreading `keys` GDPR-tagged affinity keys, plus `headers`."""
    extra = "".join(f',\n                                    ["{k}"] = "{v}"' for k, v in headers)
    return f'''
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/infer", {{["x-affinity-key"] = "k" .. (counter % {keys}),
                                    ["x-affinity-residency"] = "GDPR"{extra}}})
end
'''


# What an API client sends besides its tags: none of it is the router's business.
CLIENT_HEADERS = (("user-agent", "inference-client/2.3.1 (python 3.11; linux x86_64)"),
                  ("accept", "application/json"), ("content-type", "application/json"),
                  ("authorization", "Bearer " + "eyJhbGciOiJSUzI1NiJ9." + "x" * 600),
                  ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
LUA = wrk_script(headers=CLIENT_HEADERS)


def policy_text(ports: list[int]) -> str:
    nodes = "\n".join(
        f'    - {{id: n{i}, address: "127.0.0.1:{p}", hardware: rtx-4090, weight: {1 + i % 3},'
        f" slots: 64, residency: [GDPR], base_latency_ms: 5}}" for i, p in enumerate(ports[:-1]))
    return (f"version: 1\nedge:\n  nodes:\n{nodes}\ncloud:\n  pools:\n"
            f'    - {{id: cloud, address: "127.0.0.1:{ports[-1]}", residency: [GDPR]}}\n'
            "budgets: {store: memory}\n")


def upstream_config(ports: list[int], admin: int) -> dict[str, Any]:
    listeners = []
    for p in ports:
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                        "http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": f"u{p}",
               "route_config": {"virtual_hosts": [{"name": "u", "domains": ["*"], "routes": [
                   {"match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
        listeners.append({"name": f"u{p}", "address": {"socket_address": {
            "address": "127.0.0.1", "port_value": p}}, "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]})
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": listeners}}


def variant(base: dict[str, Any], way: str) -> dict[str, Any]:
    """Derive each way from the generated --static bootstrap (same data plane as xDS).

    (a) keeps nothing but a route to one upstream; (b) drops ext_proc, so requests take the
    route table's own residency route: ring hash with hash_balance_factor over the GDPR edge
    cluster; (c) and (d) keep the whole generated config and differ only in the processor.
    """
    cfg = copy.deepcopy(base)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    if way == "dw":
        for f in hcm["http_filters"]:
            f["typed_config"].pop("forward_rules", None)
    if way in ("a", "b"):
        hcm["http_filters"] = [f for f in hcm["http_filters"]
                               if f["name"] != "envoy.filters.http.ext_proc"]
    if way == "a":
        hcm["http_filters"] = [f for f in hcm["http_filters"]
                               if f["name"] == "envoy.filters.http.router"]
        clusters = cfg["static_resources"]["clusters"]
        gdpr = next(c for c in clusters if c["name"] == "edge.GDPR")
        one = {"name": "one", "type": "STATIC", "connect_timeout": "0.5s",
               "load_assignment": {"cluster_name": "one", "endpoints": [{"lb_endpoints": [
                   gdpr["load_assignment"]["endpoints"][0]["lb_endpoints"][0]]}]}}
        clusters.append(one)
        hcm["route_config"] = {"name": "inference", "virtual_hosts": [{
            "name": "inference", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "one"}}]}]}
    return cfg


def cpu_seconds(session: int) -> float:
    """User + system CPU seconds of every live process in one session (a process group tree)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wrk(url: str, seconds: int, script: Path) -> tuple[float, float, float]:
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return rps, ms("50"), ms("99")


async def open_loop(url: str, rate: float, seconds: float) -> tuple[float, float, float]:
    import aiohttp

    lat: list[float] = []
    errors = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            async with session.get(url, headers={"x-affinity-key": f"k{i % 5000}",
                                                 "x-affinity-residency": "GDPR"}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
        except aiohttp.ClientError:
            errors += 1
        lat.append((time.perf_counter() - t0) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
        tasks, start = [], time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(s, i)))
        await asyncio.gather(*tasks)
    lat.sort()
    return (float(errors), lat[len(lat) // 2], lat[int(len(lat) * 0.99)])


def fixed_answers(policy: Policy) -> dict[str, list[tuple[str, str]]]:
    """(h8) and (h2)'s answer: the route headers the router sets for a request of the bench
    (a GDPR key on its home node), all of them or only the two Envoy routes on."""
    routed = Runtime(policy).route(HeaderMap([(wire.H_KEY, "k1"), (wire.H_RESIDENCY, "GDPR")]))
    every = routed.decision.headers()
    return {"h8": every, "h8n": every,
            "h2": [(k, v) for k, v in every if k in (wire.H_CLUSTER, wire.H_TARGET)],
            "h1": [(k, v) for k, v in every if k == wire.H_CLUSTER],
            "h0": [(wire.H_NODE, "noop")]}


def _headers_verdict(med: dict[str, dict[str, float]]) -> str:
    """What the route headers cost Envoy: (h8) against (h2), same processor, same routing."""
    if "h8" not in med or "h2" not in med:
        return ""
    h8, h2, h8n = med["h8"], med["h2"], med.get("h8n")
    return (f" Route headers: Envoy's CPU per request with the router's 8 (h8) is "
            f"{h8['envoy_us']:.0f} µs against {h2['envoy_us']:.0f} with only x-route-cluster "
            f"and x-route-target (h2), {h8['envoy_us'] / h2['envoy_us']:.2f}x, at "
            f"{h8['rps'] / h2['rps']:.2f}x the throughput; both from one do-nothing processor "
            "answering a fixed, prebuilt response (clear_route_cache, the same cluster and "
            "node), so the headers set and echoed are the only difference." + (
                f" With the same 8 set and none echoed (h8n): {h8n['envoy_us']:.0f} µs, "
                f"{h8n['envoy_us'] / h2['envoy_us']:.2f}x (h2)'s." if h8n else ""))


def _stages_verdict(med: dict[str, dict[str, float]]) -> str:
    """Where the router's CPU beyond the floor goes, stage by stage (bench/router_stages.py)."""
    steps = [w for w in ("c", "s0", "s1", "s2", "d") if w in med]
    if steps[:4] != ["c", "s0", "s1", "s2"]:
        return ""
    what = {"s0": "the server around a fixed answer", "s1": "header map and tags",
            "s2": "decision and release", "d": "answer from the decision, metrics, node lookup"}
    parts = [f"{what[w]} {med[w]['backend_us'] - med[p]['backend_us']:+.0f}"
             for p, w in itertools.pairwise(steps)]
    return (" Router CPU per request stage by stage, µs over the stage before (from the floor's "
            f"{med['c']['backend_us']:.0f}): " + "; ".join(parts) + ".")


def _verdict(med: dict[str, dict[str, float]]) -> str:
    """What this run says about the goals, and what bounds them, from its own figures."""
    d, c, a = med["d"], med["c"], med["a"]
    ratio = d["rps"] / c["rps"]
    p50, p99 = d["o50"] - a["o50"], d["o99"] - a["o99"]
    met = "met" if p50 < 1.0 and p99 < 2.0 else "missed"
    text = (
        f"\n\n**This run.** Open loop: (d) adds {p50:+.2f} ms p50 / {p99:+.2f} ms p99 over (a) "
        f"(goal < 1 / < 2 ms: {met}); the do-nothing floor (c) alone adds "
        f"{c['o50'] - a['o50']:+.2f} / {c['o99'] - a['o99']:+.2f} ms. Closed loop: (d) keeps "
        f"{ratio:.2f}x of (c)'s throughput (goal 0.9x: {'met' if ratio >= 0.9 else 'missed'}); "
        f"CPU per request, router {d['backend_us']:.0f} µs against the floor's "
        f"{c['backend_us']:.0f} ({d['backend_us'] / c['backend_us']:.2f}x, goal 1.15x), Envoy "
        f"{d['envoy_us']:.0f} against {c['envoy_us']:.0f} ({d['envoy_us'] / c['envoy_us']:.2f}x, "
        "goal 1.2x). Both Python processes run a core flat out in the closed loop, so CPU per "
        "request is what bounds throughput; where the router's goes is in \"Where the router's "
        "time goes\" below: most of it is gRPC and the event loop, not the routing.")
    for way, what in (("d0", "the router of the earlier revision"),
                      ("dn", "the router with the echo off"),
                      ("dw", "the router sent every request header (no `forward_rules`)")):
        if way in med:
            m = med[way]
            text += (f" (d) against {what} ({way}): {d['rps'] / m['rps']:.2f}x the throughput, "
                     f"{d['backend_us'] / m['backend_us']:.2f}x the router's CPU per request, "
                     f"{d['envoy_us'] / m['envoy_us']:.2f}x Envoy's.")
    if "d2" in med:
        text += (f" `--workers 2` gives {med['d2']['rps'] / d['rps']:.2f}x of one worker: wrk, "
                 "two Envoys and the workers share 2 cores, so the second worker mostly takes CPU "
                 "from Envoy and wrk; on a machine with spare cores it scales with them.")
    return text


def _quiet(load: float, bare_rps: float) -> str:
    """What the load average and bare Envoy's rate say about the machine during the run."""
    if bare_rps >= 10_000:
        return "."
    if load >= 1.0:
        return (f": the machine was busy with other people's work, (a) served {bare_rps:,.0f} "
                "req/s where a quiet one serves > 10,000, every figure is low and only the "
                "ratios within this run compare.")
    return (f": quiet by its load average, yet (a) served {bare_rps:,.0f} req/s where the "
            "fastest quiet runs served > 10,000 (the host itself was slower: a shared "
            "virtual machine), so absolute figures are low and the ratios within this run "
            "compare.")


def _baseline_tree(rev: str, tmp: Path) -> Path:
    """A checkout of `rev` to run (d0) from, with this tree's generated protos."""
    tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    gen = tree / "router" / "_gen"
    if not gen.exists():
        gen.symlink_to(ROOT / "router" / "_gen")
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--ways", default="b,d,dw,d2",
                        help="comma list of b,h8,h8n,h2,h1,h0,d,dn,dw,d2,s0,s1,s2 "
                        "(default b,d,dw,d2); (a) and (c) always run")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run (d0): the router as of git revision REV, side by side")
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-envoy-"))
    ports = [free_port() for _ in range(5)]
    (tmp / "policy.yaml").write_text(policy_text(ports))
    (tmp / "wrk.lua").write_text(LUA)
    policy = load_policy(tmp / "policy.yaml")
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, argv: list[str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=cwd)
        return procs[name]

    assert ENVOY
    results: dict[str, dict[str, list[float]]] = {}
    try:
        (tmp / "up.yaml").write_text(yaml.safe_dump(upstream_config(ports, free_port())))
        up = spawn("upstream", [ENVOY, "-c", str(tmp / "up.yaml"), "--base-id", "901",
                                "--concurrency", "1", "-l", "error"])
        for p in ports:
            wait_port(p, up)
        # (a) and (c) always run: every ratio in the table is to them
        chosen = ["a", "c", *args.ways.split(","), *(["d0"] if args.baseline else [])]
        ways = {w: b for w, b in (("a", None), ("b", None), ("c", "noop"), ("h8", "fixed"),
                                  ("h8n", "fixed"), ("h2", "fixed"), ("h1", "fixed"),
                                  ("h0", "fixed"), ("d0", "router0"),
                                  ("d", "router"), ("dn", "router"), ("dw", "router"),
                                  ("d2", "router2"), ("s0", "stage:fixed"),
                                  ("s1", "stage:parse"), ("s2", "stage:decide"))
                if w in chosen}
        answers = fixed_answers(policy)
        base = _baseline_tree(args.baseline, tmp) if args.baseline else ROOT
        for rnd in range(args.rounds):
            for way, backend in ways.items():
                grpc_port, listen = free_port(), free_port()
                if backend == "noop":
                    spawn("backend", [sys.executable, "-c", NOOP, f"127.0.0.1:{grpc_port}"])
                elif backend == "fixed":
                    spawn("backend", [sys.executable, "-c", NOOP, f"127.0.0.1:{grpc_port}",
                                      json.dumps(answers[way])])
                elif backend is not None:
                    run = [sys.executable, str(ROOT / "bench" / "router_stages.py"),
                           backend.partition(":")[2]] if backend.startswith("stage:") else \
                        [sys.executable, "-m", "router"]
                    spawn("backend", [*run, "serve", "--policy",
                                      str(tmp / "policy.yaml"), "--grpc",
                                      f"127.0.0.1:{grpc_port}", "--metrics", "off",
                                      "--workers", "2" if backend == "router2" else "1",
                                      "--log-level", "WARNING"],
                          cwd=base if backend == "router0" else ROOT)
                if backend is not None:
                    wait_port(grpc_port, procs["backend"])
                cfg = variant(build(policy, mode="gateway", listen=f"127.0.0.1:{listen}",
                                    router=f"127.0.0.1:{grpc_port}",
                                    admin=f"127.0.0.1:{free_port()}", static=True,
                                    echo=way not in ("dn", "h8n"), access_log="off"), way)
                (tmp / f"{way}.yaml").write_text(yaml.safe_dump(cfg))
                env = spawn("envoy", [ENVOY, "-c", str(tmp / f"{way}.yaml"), "--base-id",
                                      str(902 + rnd), "--concurrency", "1", "-l", "error"])
                wait_port(listen, env)
                time.sleep(1.0)
                url = f"http://127.0.0.1:{listen}/infer"
                wrk(url, 2, tmp / "wrk.lua")  # warm-up
                sessions = {k: procs[k].pid for k in ("envoy", "backend") if k in procs}
                before = {k: cpu_seconds(v) for k, v in sessions.items()}
                rps, p50, p99 = wrk(url, args.seconds, tmp / "wrk.lua")
                n = rps * args.seconds
                cpu = {k: (cpu_seconds(v) - before[k]) / n * 1e6 for k, v in sessions.items()}
                errs, o50, o99 = asyncio.run(open_loop(url, args.rate, args.seconds))
                r = results.setdefault(way, {})
                for k, v in (("rps", rps), ("p50", p50), ("p99", p99), ("o50", o50),
                             ("o99", o99), ("errors", errs), ("envoy_us", cpu["envoy"]),
                             ("backend_us", cpu.get("backend", 0.0))):
                    r.setdefault(k, []).append(v)
                print(f"round {rnd} ({way}) {rps:8.0f} req/s p50 {p50:.2f} p99 {p99:.2f} ms | "
                      f"open {args.rate:.0f}/s p50 {o50:.2f} p99 {o99:.2f} ms errors {errs:.0f} | "
                      f"CPU/req envoy {cpu['envoy']:.0f} µs ext_proc "
                      f"{cpu.get('backend', 0.0):.0f} µs", flush=True)
                stop(procs.pop("envoy"))
                stop(procs.pop("backend", None))
    finally:
        for p in procs.values():
            stop(p)
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "baseline")], check=False, capture_output=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    med = {w: {k: statistics.median(v) for k, v in r.items()} for w, r in results.items()}
    names = {"a": "(a) Envoy → upstream", "b": "(b) Envoy ring hash + hash_balance_factor",
             "c": "(c) do-nothing Python ext_proc", "d": "(d) hybrid-router",
             "h8": "(h8) fixed answer: the router's 8 route headers",
             "h8n": "(h8n) fixed answer: the router's 8 route headers, `--no-echo`",
             "h2": "(h2) fixed answer: x-route-cluster and x-route-target only",
             "h1": "(h1) fixed answer: x-route-cluster only (Envoy's ring hash picks the node)",
             "h0": "(h0) (c)'s answer with clear_route_cache: the same route again",
             "d0": f"(d0) hybrid-router as of {args.baseline}",
             "dn": "(dn) hybrid-router, `--no-echo`",
             "dw": "(dw) hybrid-router, Envoy forwarding every header",
             "s0": "(s0) hybrid-router serve answering a fixed header, deciding nothing",
             "s1": "(s1) (s0) + header map and tags",
             "s2": "(s2) (s1) + decision and the stream end's release",
             "d2": "(d2) hybrid-router --workers 2"}
    lines = ["| setup | closed loop req/s | ÷ (a) | ÷ (c) | p50 / p99 ms (32 conns) | "
             f"open loop {args.rate:.0f}/s p50 / p99 ms | added p50 / p99 vs (a) ms | "
             "CPU µs/req Envoy / ext_proc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for w, m in med.items():
        lines.append(f"| {names[w]} | {m['rps']:,.0f} | {m['rps'] / med['a']['rps']:.2f}x | "
                     f"{m['rps'] / med['c']['rps']:.2f}x | {m['p50']:.2f} / {m['p99']:.2f} | "
                     f"{m['o50']:.2f} / {m['o99']:.2f} | "
                     f"{m['o50'] - med['a']['o50']:+.2f} / {m['o99'] - med['a']['o99']:+.2f} | "
                     f"{m['envoy_us']:.0f} / {m['backend_us']:.0f} |")
    verdict = (_verdict(med) if {"a", "c", "d"} <= med.keys() else "") + \
        _headers_verdict(med) + _stages_verdict(med)
    load = (f"\n\nLoad average (1, 5, 15 min) before the run {' '.join(load_before)}, after it "
            f"{' '.join(load_after)}" + _quiet(float(load_before[0]), med["a"]["rps"]))
    body = "\n".join(lines) + load + verdict + f"""

Medians of {args.rounds} interleaved rounds of {args.seconds} s each ({", ".join(ways)}, then
again): the machine has 2 cores shared with other people's work, so single runs are noisy and only
the medians and the ratios within one run mean much. wrk -t2 -c32 with a Lua script spreading
5,000 affinity keys (GDPR-tagged, 4 weighted edge nodes + 1 pool), each request also carrying
what an API client sends (user agent, accept, content type, a 640-byte bearer token, a trace
context), which Envoy keeps from the router unless told otherwise (dw); the open loop is an aiohttp
client starting requests at a fixed rate whatever the latency. Upstreams are a separate Envoy
with direct_response. Envoy runs with one worker thread and the generated config, access log off
(the same for every way; (dn) also without the decision echo, `--no-echo`) (ext_proc sees
the request headers only; its stream then stays open, with no further message, until the HTTP
request ends — which is what releases the in-flight slot). Everything — wrk, both Envoys and the
Python processes — shares the same 2 cores. CPU per request is read from /proc for the Envoy and
ext_proc process trees over the wrk run.

Reading it: (c)→(d) is what the routing itself costs over the Python gRPC floor (goal: (d) keeps ≥
0.9x of (c)); (h2)→(h8) is what the route headers beyond the two Envoy routes on cost Envoy (set on
the request, five of them echoed on the response); the open-loop columns are the latency a request
pays at a moderate rate (goal: (d) adds < 1 ms p50 and < 2 ms p99 over (a)). `--workers 2` runs two
router processes on one port (SO_REUSEPORT). The workers lease node slots and pool caps from a
host-local file the parent creates (docs/operations.md, "Many routers, one fleet"): max-min fair by
demand, no static split, so one Envoy connection's worker can use the whole edge. A per-process
budget (`memory`) gives each worker limit / N, a `redis://` store is shared and reserves
atomically, and a `sqlite:` budget file (one process's) is refused with N > 1
(tests/server/test_workers.py; through Envoy, tests/integration/test_workers.py and
test_fleet_slots.py). What the lease sync costs each worker, measured on this 2-core box where
the workers cannot have a core each, is in "`--workers N` without spare cores" below.

Reproduce: `.venv/bin/python bench/envoy_extproc.py`."""
    if not args.no_write:
        write_section("envoy_extproc", "Through real Envoy: four ways side by side", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
