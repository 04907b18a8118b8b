"""`hybrid-router serve`: ext_proc and xDS, health, metrics, refresh, reload.

The gRPC port serves Envoy's ext_proc streams (one per HTTP request) and, unless
`--xds` gives it an address of its own, its ADS stream (`router.xds`): Envoy learns
the inference clusters from the router, so a policy reload or a feed refresh reaches
Envoy's fail-open routing too.

SIGTERM drains: health turns NOT_SERVING, new streams are refused, streams in
flight get `--grace` seconds to finish. SIGHUP re-reads the policy and reopens the request log.
`--workers N` runs N processes on one port (SO_REUSEPORT), each with its own
metrics port; they lease node slots from the shared store, or from a host-local
file without one (`router.server.fleet`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any

from router.core.policy import Policy
from router.metrics import RouterMetrics, probe_loop_lag, runtime_state
from router.policy import isolated
from router.policy.loader import load_policy_or_report
from router.runtime import Runtime
from router.server.args import add_arguments as add_arguments  # `hybrid-router serve` reads it here
from router.server.args import spawn_workers, worker_argv
from router.server.fleet import host_local_files, start_capacity, workers_note
from router.server.limits import grpc_options
from router.server.requestlog import RequestLog, path_problem
from router.server.workers import WorkerRuntime, store_problem
from router.stores import BudgetStoreError, open_keeper

log = logging.getLogger("hybrid_router.server")


@dataclass
class _Parts:
    """What one server process runs, built before its port opens."""

    server: Any
    processor: Any
    ads: Any
    health: Any
    request_log: RequestLog | None
    grpc_address: str  # as bound: a port 0 asked for is the kernel's pick here
    metrics_address: str = "off"
    xds_server: Any = None  # ADS on its own address (`--xds`), else on `server`
    xds_address: str = "shared"  # as bound, like `grpc_address`
    failures: Any = None  # Envoy's access log of failed requests (passive health)


def _build(args: argparse.Namespace, runtime: Runtime, metrics: RouterMetrics, keeper: Any,
           index: int, workers: int) -> _Parts:
    """The gRPC server with ext_proc, ADS, the access log service (failed requests: passive
    health) and health on it, and the optional request log."""
    import grpc
    from envoy.service.accesslog.v3 import als_pb2_grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
    from grpc_health.v1 import health, health_pb2_grpc

    from router.server.accesslog import FailureLog
    from router.server.servicer import Processor
    from router.xds.acks import AckBook
    from router.xds.resources import Options as XdsOptions
    from router.xds.resources import build as build_resources
    from router.xds.server import AdsServer

    server = grpc.aio.server(options=grpc_options(args.max_streams))
    request_log = None
    if args.request_log:
        path = args.request_log if workers == 1 else f"{args.request_log}.w{index}"
        request_log = RequestLog(path, max_bytes=int(args.request_log_max_mb * 1024 * 1024),
                                 backups=args.request_log_backups,
                                 on_drop=metrics.request_log_dropped.inc,
                                 on_truncate=metrics.request_log_truncated.inc)
    xds_options = XdsOptions(upstream_timeout_s=args.upstream_timeout, echo=args.echo)
    # with --workers N an Envoy's ADS stream lives on one worker: the workers share what
    # each Envoy ACKed through the parent's file; a worker without one checks only its own
    ads = AdsServer(build_resources(runtime.snapshot, xds_options), metrics,
                    max_streams=args.xds_max_streams,
                    acks=AckBook(strict=workers == 1 or bool(args.acks_file)))
    runtime.on_commit(ads.follower(xds_options))  # every swap reaches Envoy too
    processor = Processor(runtime, metrics, max_streams=args.max_streams,
                          budget_wait=keeper.wait_topup, request_log=request_log,
                          envoys=ads.acks.view)
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    failures = FailureLog(runtime, _failure_counter(metrics))
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(failures, server)
    xds_server, xds_address = None, args.xds
    if args.xds == "shared":
        ads.add_to(server)
    else:  # its own server: whoever reaches the ext_proc port cannot read the fleet
        xds_server = grpc.aio.server(options=grpc_options(args.xds_max_streams))
        ads.add_to(xds_server)
        xds_address = _bound(args.xds, xds_server.add_insecure_port(args.xds))
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else \
        health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = _bound(args.grpc, server.add_insecure_port(args.grpc))
    return _Parts(server, processor, ads, health_servicer, request_log, bound,
                  xds_server=xds_server, xds_address=xds_address, failures=failures)


def _failure_counter(metrics: RouterMetrics) -> Any:
    """What the access log service counts per failure: the node's failures and ejections."""
    def count(node: str, ejected: bool) -> None:
        metrics.edge_failures.labels(node).inc()
        if ejected:
            metrics.edge_ejections.labels(node).inc()
    return count


def _bound(address: str, port: int) -> str:
    """`address` with the port gRPC bound (the kernel's pick for port 0); a Unix socket as is."""
    if not port or address.startswith("unix:"):
        return address
    return f"{address.rpartition(':')[0]}:{port}"


async def serve(args: argparse.Namespace, policy: Policy) -> int:
    """Run one server process until SIGTERM/SIGINT."""
    from grpc_health.v1 import health_pb2
    from prometheus_client import start_http_server

    from router.xds.ackshare import share_acks

    # Reloads, table and xDS builds and the budget keeper run in worker threads; with
    # CPython's default 5 ms switch interval a busy thread could hold the GIL that long
    # while a request waits on the loop. 1 ms bounds that wait at the cost of more
    # switches, only while those threads are busy.
    sys.setswitchinterval(0.001)
    workers, index = max(1, args.workers), max(0, args.worker_index)
    metrics = RouterMetrics()
    # The budget store is the keeper thread's alone; the request path reads its ledger.
    kind = policy.budgets.store.partition(":")[0]
    errors, lost = metrics.store_errors.labels(kind), metrics.store_lost.labels(kind)
    try:
        keeper = open_keeper(policy.budgets.store, on_error=errors.inc, on_lost=lost.inc)
    except BudgetStoreError as exc:
        print(f"hybrid-router serve: {exc}", file=sys.stderr)
        return 2
    runtime: Runtime = WorkerRuntime(policy, keeper.ledger, workers=workers, index=index) \
        if workers > 1 else Runtime(policy, keeper.ledger)
    capacity = start_capacity(policy, runtime, keeper.backend, args.capacity_store)
    metrics.trips.watch(keeper.kind, getattr(keeper.backend, "trips", None))
    if capacity is not None:
        metrics.capacity.stats = capacity.stats
        metrics.trips.watch(capacity.backend.kind, getattr(capacity.backend, "trips", None))
    metrics_address = "off"
    if args.metrics != "off":
        host, _, port = args.metrics.rpartition(":")
        httpd, _ = start_http_server(int(port) + index, addr=host, registry=metrics.registry)
        metrics_address = f"{host}:{httpd.server_port}"
    parts = _build(args, runtime, metrics, keeper, index, workers)
    parts.metrics_address = metrics_address
    # Everything built so far lives as long as the process: keep it out of the cyclic
    # collector's full passes, which otherwise walk it over and over under load. Before the
    # port opens, so the first requests do not wait behind a full collection and time out.
    gc.collect()
    gc.freeze()
    await parts.server.start()
    if parts.xds_server is not None:
        await parts.xds_server.start()
    isolated.warm()  # the policy worker process, ready before the first reload
    await _set_health(parts.health, health_pb2.HealthCheckResponse.SERVING)
    metrics.watch(lambda: runtime_state(runtime))  # read at scrape time, off the loop
    tasks = [asyncio.create_task(probe_loop_lag(metrics.event_loop_lag.observe))]
    tasks += share_acks(args.acks_file, parts.ads.acks, index)  # with the other workers
    await _run_until_stopped(args, runtime, metrics, parts, tasks, index, workers)
    await _drain(args, parts, tasks, keeper, capacity)
    return 0



async def _run_until_stopped(args: argparse.Namespace, runtime: Runtime,
                             metrics: RouterMetrics, parts: _Parts, tasks: list[Any],
                             index: int, workers: int) -> None:
    """Start the feed refresher, then wait for SIGTERM/SIGINT (SIGHUP reloads, reopens)."""
    refresher: Any = None
    try:
        from router.feed.refresh import Refresher

        refresher = Refresher(runtime, args.policy, metrics)
        parts.failures.wake = refresher.wake  # an ejection rebuilds the table at once
        tasks.append(asyncio.create_task(refresher.run()))
    except ImportError:
        log.warning("feed refresh unavailable; serving the policy without a feed")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if refresher is not None:
        loop.add_signal_handler(signal.SIGHUP, refresher.request_reload)
    if parts.request_log is not None:  # logrotate's postrotate: kill -HUP
        loop.add_signal_handler(signal.SIGHUP, _on_hup(refresher, parts.request_log))
    log.info("serving ext_proc on %s (policy %s, worker %d/%d)", parts.grpc_address,
             runtime.policy.digest, index + 1, workers)
    # the addresses as bound (port 0 = the kernel's pick): a caller reads them from here
    print(f"hybrid-router: ext_proc on {parts.grpc_address}, metrics on "
          f"{parts.metrics_address}"
          + (f", xds on {parts.xds_address}" if parts.xds_server is not None else ""), flush=True)
    await stop.wait()


def _on_hup(refresher: Any, request_log: RequestLog) -> Any:
    """SIGHUP: re-read the policy and reopen the request log."""
    def hup() -> None:
        if refresher is not None:
            refresher.request_reload()
        request_log.reopen()
    return hup


def _request_log_problem(args: argparse.Namespace) -> str | None:
    """Why a request log path (each worker's) cannot be one, before anything starts."""
    if not args.request_log:
        return None
    paths = [args.request_log] if args.workers <= 1 or args.worker_index >= 0 else \
        [f"{args.request_log}.w{i}" for i in range(args.workers)]
    problems = [p for p in map(path_problem, paths) if p is not None]
    return f"--request-log {problems[0]}" if problems else None


async def _drain(args: argparse.Namespace, parts: _Parts, tasks: list[Any], keeper: Any,
                 capacity: Any) -> None:
    """Health NOT_SERVING, `--grace` for streams in flight, then stop everything in order."""
    from grpc_health.v1 import health_pb2

    log.info("draining: health NOT_SERVING, %d streams open", parts.processor.open_streams)
    await _set_health(parts.health, health_pb2.HealthCheckResponse.NOT_SERVING)
    await parts.server.stop(grace=args.grace)
    if parts.xds_server is not None:
        await parts.xds_server.stop(grace=None)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if capacity is not None:
        await asyncio.to_thread(capacity.close)  # gives slot leases back
    await asyncio.to_thread(keeper.close)  # flushes spend and gives leases back
    await asyncio.to_thread(isolated.shutdown)
    if parts.request_log is not None:
        await asyncio.to_thread(parts.request_log.close)
    log.info("stopped; %d routed requests unfinished", parts.processor.unfinished)


async def _set_health(servicer: Any, status: Any) -> None:
    result = servicer.set("", status)
    if asyncio.iscoroutine(result):
        await result


def run(args: argparse.Namespace) -> int:
    """Load the policy (first load must succeed) and serve."""
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy = load_policy_or_report(args.policy)
    if policy is None:
        return 2
    problem = store_problem(policy, args.workers) or _request_log_problem(args)
    if problem is not None:
        print(f"hybrid-router serve: {problem}", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker_index < 0:
        note = workers_note(policy, args.workers)
        if note is not None:
            print(f"hybrid-router serve: {note}", file=sys.stderr)
        with host_local_files(policy, args.workers) as extra:
            return spawn_workers(args, [*worker_argv(args), *extra])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(serve(args, policy))
    return int(uvloop.run(serve(args, policy)))
