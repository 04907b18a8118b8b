"""Every Grafana panel query, evaluated by a real Prometheus scraping a router under traffic.

Debian's `prometheus` scrapes the router's /metrics and Envoy's /stats/prometheus every
second while traffic (routed, cloud, refused) flows through real Envoy to emulated
upstreams, with the feed served over HTTP by `hybrid-router feed serve`. Then each
target of deploy/grafana/dashboards/hybrid-router.json, with Grafana's variables filled
in as Grafana would, must return data, and the shipped alert rules must evaluate cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.core.feedsnapshot import format_time
from tests.integration import stack as stack_mod
from tests.integration.stack import ROOT, Stack, free_port, stop, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOARD = ROOT / "deploy" / "grafana" / "dashboards" / "hybrid-router.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_S = 1
# Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval).
RATE_INTERVAL = f"{4 * SCRAPE_S}s"
DEADLINE_S = 40.0
REQUESTS = [  # one round of traffic: edge, cloud (spend), and each kind of refusal
    {"x-affinity-key": "cam-1", "x-affinity-residency": "GDPR"},
    {"x-affinity-key": "cam-2", "x-affinity-residency": "CCPA"},
    {"x-affinity-key": "rec-1", "x-affinity-residency": "HIPAA"},
    {"x-affinity-key": "rec-2", "x-affinity-residency": "HIPAA", "x-affinity-tenant": "tight"},
    {"x-affinity-key": "bad", "x-affinity-slo-ms": "soon"},
    {"x-affinity-key": "nowhere", "x-affinity-residency": "PCI"},
    {"x-affinity-key": "cam-3", "x-affinity-residency": "CCPA", "x-emulate-status": "500"},
]


def feed_policy(feed_port: int) -> str:
    """The integration stack's policy, refreshed every second from an HTTP feed."""
    feed = (f'refresh_seconds: 1\nfeed: {{{{source: "http://127.0.0.1:{feed_port}/feed.json",'
            " stale_after_seconds: 90}}")
    return stack_mod.POLICY.replace("refresh_seconds: 30", feed)


def feed_doc() -> dict[str, Any]:
    """A valid feed for the stack's policy."""
    return {"version": 1, "generated_at": format_time(time.time()),
            "nodes": [{"id": n, "healthy": True, "compute_score": 1.0, "slots": slots,
                       "inflight": 0, "vram_used_fraction": 0.2, "p95_ms": 10}
                      for n, (_, _, slots) in stack_mod.NODES.items()],
            "prices": [{"instance_type": "h100-spot", "usd_per_hour": 36.0}], "spend": []}


class Traffic:
    """Rounds of REQUESTS through Envoy in a thread until `stop`; counts answers by status."""

    def __init__(self, url: str) -> None:
        """Send to `url` once started."""
        self.url = url
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            while not self._stop.is_set():
                await asyncio.gather(*(self._one(s, h) for h in REQUESTS))
                await asyncio.sleep(0.05)

    async def _one(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(self.url + "/infer", headers=headers) as resp:
                await resp.read()
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1


class Prometheus:
    """Debian's prometheus on a free 127.0.0.1 port, scraping the stack every second."""

    def __init__(self, tmp: Path, stack: Stack) -> None:
        """Nothing runs until `start` (after the stack's, whose ports it scrapes)."""
        self.tmp, self.port, self.stack = tmp, free_port(), stack
        self.config = tmp / "prometheus.yml"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        stack = self.stack
        self.config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "hybrid-router", "metrics_path": "/metrics",
                 "static_configs": [{"targets": [f"127.0.0.1:{stack.metrics_port}"]}]},
                {"job_name": "envoy", "metrics_path": "/stats/prometheus",
                 "static_configs": [{"targets": [f"127.0.0.1:{stack.admin}"]}]}]}))

    def start(self) -> None:
        """Start it and wait until it says it is ready (its port opens before that)."""
        self._write_config()
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: run `make sysdeps` (apt-get install prometheus)"
        log = open(self.tmp / "prometheus.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        wait_port(self.port, self.proc)
        until(self.ready, "ready Prometheus")

    def ready(self) -> bool:
        """Whether /-/ready answers 200 (503 while the TSDB opens)."""
        assert self.proc is not None and self.proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:  # HTTPError 503 included
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; the `data` of a successful answer."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])


def until(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S:g} s"
        time.sleep(0.5)


def grafana_expr(expr: str, variables: list[dict[str, Any]]) -> str:
    """`expr` as Grafana sends it with every variable at "All" and the scrape interval above."""
    out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", f"{SCRAPE_S}s")
    for var in variables:
        value = var.get("allValue", ".*") if var.get("includeAll") else var["current"]["value"]
        out = re.sub(rf"\$\{{{var['name']}\}}|\${var['name']}\b", value, out)
    assert "$" not in out, f"unsubstituted variable in {expr!r}"
    return out


def finite(result: list[dict[str, Any]]) -> bool:
    """Whether a vector has at least one finite value (NaN: a quantile or ratio of nothing)."""
    return any(math.isfinite(float(r["value"][1])) for r in result)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Traffic]]:
    """Feed server, stack and Prometheus running, traffic flowing, both jobs scraped a while."""
    tmp = Path(tmp_path_factory.mktemp("prometheus"))
    feed_port = free_port()
    (tmp / "feed.json").write_text(json.dumps(feed_doc()))
    # the router leases its slots from a host-local file (as a worker of serve --workers
    # does), so the capacity panels have series to show
    stack = Stack(tmp, policy=feed_policy(feed_port),
                  router_args=("--capacity-store", f"sqlite:{tmp / 'capacity.db'}"))
    prom = Prometheus(tmp, stack)
    feed: subprocess.Popen[bytes] | None = None
    try:
        feed = subprocess.Popen(
            [sys.executable, "-m", "router", "feed", "serve", "--from", str(tmp / "feed.json"),
             "--listen", f"127.0.0.1:{feed_port}", "--grpc", "off"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_port(feed_port, feed)
        stack.start()
        prom.start()
        with Traffic(stack.url) as traffic:
            for job in ("hybrid-router", "envoy"):
                until(lambda job=job: prom.query(f'count_over_time(up{{job="{job}"}}[1m]) >= 5'
                                                 f' and up{{job="{job}"}} == 1'),
                      f"five good scrapes of {job}")
            yield prom, traffic
    finally:
        stop(prom.proc)
        stack.close()
        stop(feed)


def panel_targets() -> list[tuple[str, str]]:
    board = json.loads(BOARD.read_text())
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in board["panels"]
            for t in p["targets"]]


def test_traffic_reached_every_kind_of_answer(observed: tuple[Prometheus, Traffic]) -> None:
    _, traffic = observed
    until(lambda: {200, 400, 429, 500, 503} <= set(traffic.statuses),
          "200, 400, 429, 500 and 503")


def test_the_board_shows_envoys_upstream_latency_and_5xx_per_cluster(
        observed: tuple[Prometheus, Traffic]) -> None:
    """Named series, not just any data: the 5xx panel sees the CCPA edge cluster's 500s and
    the latency panel has a p99 for each cluster traffic reached."""
    prom, _ = observed
    exprs = dict(panel_targets())
    errors = grafana_expr(exprs["Envoy upstream 5xx per second per cluster [A]"], [])
    until(lambda: any(r["metric"].get("envoy_cluster_name") == "edge_CCPA"
                      and float(r["value"][1]) > 0 for r in prom.query(errors)),
          "5xx on edge_CCPA (edge.CCPA)")
    p99 = grafana_expr(exprs["Envoy upstream latency p50 / p99 per cluster [B]"], [])
    until(lambda: {"edge_GDPR", "edge_CCPA"} <= {r["metric"].get("envoy_cluster_name")
                                                 for r in prom.query(p99)},
          "p99 latency for edge_GDPR and edge_CCPA")


@pytest.mark.parametrize(("name", "expr"), panel_targets(), ids=[n for n, _ in panel_targets()])
def test_panel_query_returns_data(observed: tuple[Prometheus, Traffic], name: str,
                                  expr: str) -> None:
    prom, _ = observed
    variables = json.loads(BOARD.read_text()).get("templating", {}).get("list", [])
    query = grafana_expr(expr, variables)
    until(lambda: finite(prom.query(query)), f"data for {query}")


def test_refusals_are_seen_by_status_and_reason(observed: tuple[Prometheus, Traffic]) -> None:
    prom, _ = observed

    def kinds() -> set[tuple[str, str]]:
        return {(r["metric"]["code"], r["metric"]["reason"])
                for r in prom.query("router_refusals_total > 0")}

    until(lambda: kinds() >= {("400", "bad-tag"), ("429", "budget"), ("503", "residency")},
          "400 bad-tag, 429 budget and 503 residency refusals")


def test_shipped_alert_rules_evaluate_without_errors(observed: tuple[Prometheus, Traffic]
                                                     ) -> None:
    prom, _ = observed

    def health() -> dict[str, str] | None:
        rules = {r["name"]: (r["health"], r.get("lastError", ""))
                 for g in prom.api("rules")["groups"] for r in g["rules"]}
        bad = {n: e for n, (h, e) in rules.items() if h == "err"}
        assert not bad, bad
        return {n: h for n, (h, _) in rules.items()} if all(
            h == "ok" for h, _ in rules.values()) else None

    rules = until(health, "evaluation of every alert rule")
    shipped = re.findall(r"^\s+- alert: (\S+)$", RULES.read_text(), flags=re.M)
    assert sorted(rules) == sorted(shipped) and len(shipped) >= 11
