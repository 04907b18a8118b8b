"""`hybrid-router serve`'s command line, and the worker processes `--workers N` starts with it.

A flag added to `add_arguments` that a worker must see goes into `worker_argv` too.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from typing import Any

from router.cliargs import POSITIVE, address, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("--policy", required=True, metavar="FILE")
    parser.add_argument("--grpc", default="127.0.0.1:50051", metavar="HOST:PORT|unix:PATH",
                        type=address(),
                        help="ext_proc listen address (default 127.0.0.1:50051)")
    parser.add_argument("--metrics", default="127.0.0.1:9464", metavar="HOST:PORT",
                        type=address("off", unix=False),
                        help="Prometheus /metrics address (default 127.0.0.1:9464; off: none);"
                        " worker i of --workers N serves on PORT + i")
    parser.add_argument("--workers", type=number(int, 1), default=1, metavar="N",
                        help="worker processes sharing the port, each with its share of"
                        " every limit (default 1)")
    parser.add_argument("--max-streams", type=number(int, 1), default=4096, metavar="N",
                        help="open ext_proc streams before refusing with 503 (default 4096)")
    parser.add_argument("--grace", type=number(float, 0), default=5.0, metavar="SECONDS",
                        help="drain time on SIGTERM (default 5)")
    parser.add_argument("--upstream-timeout", type=POSITIVE, default=30.0, metavar="SECONDS",
                        help="route timeout to the inference upstreams, in the route table "
                             "this router serves Envoy over xDS (default 30)")
    parser.add_argument("--no-echo", dest="echo", action="store_false",
                        help="the route table this router serves Envoy does not echo the "
                             "decision's x-route-* headers in routed responses")
    parser.add_argument("--request-log", metavar="FILE",
                        help="one JSON line per request (tags, decision, duration) for "
                             "`simulate --trace`; off by default; worker i of --workers N "
                             "writes FILE.w<i>")
    parser.add_argument("--request-log-max-mb", type=POSITIVE, default=64.0, metavar="MB",
                        help="rotate the request log past this size (default 64)")
    parser.add_argument("--request-log-backups", type=number(int, 0), default=3, metavar="N",
                        help="rotated request logs kept: FILE.1 .. FILE.N (default 3)")
    parser.add_argument("--xds", default="shared", metavar="HOST:PORT|unix:PATH|shared",
                        type=address("shared"),
                        help="ADS (xDS) listen address, apart from ext_proc; shared: on the "
                             "--grpc port (default)")
    parser.add_argument("--xds-max-streams", type=number(int, 1), default=256, metavar="N",
                        help="ADS streams (one per Envoy) before refusing more (default 256)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--worker-index", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--capacity-store", help=argparse.SUPPRESS)
    parser.add_argument("--acks-file", help=argparse.SUPPRESS)


WATCH_S = 0.1  # how often the parent of `--workers N` looks at its workers


def spawn_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """Run `--workers` copies of `serve` with `argv`, forward signals to them and return the
    first failure's exit code (0: every worker stopped cleanly, on its own or by a stop
    signal forwarded to it, even one that came before its handler).

    A worker that exits on its own with a failure (it could not start: a port taken, a
    store it cannot open; or it crashed) takes the others down with it (SIGTERM: they
    drain): a serve that answered with fewer workers than asked for, silently, would look
    healthy to whatever supervises it, which restarts the whole of it instead.
    """
    procs = [subprocess.Popen([sys.executable, "-m", "router", "serve", *argv,
                               "--worker-index", str(i)]) for i in range(args.workers)]

    asked: set[int] = set()  # the stop signals forwarded: a worker they killed stopped cleanly

    def forward(signum: int, _frame: Any) -> None:
        if signum != signal.SIGHUP:
            asked.add(signum)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    # polled, not waited on: forwarding a signal polls (and may reap) the workers too
    running = dict(enumerate(procs))
    failed = 0
    while running:
        for i, proc in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[i]
            if code != 0 and -code not in asked and not failed:
                failed = code if code > 0 else 128 - code  # killed by signal N: 128 + N
                print(f"hybrid-router serve: worker {i} exited with {code}; stopping the "
                      f"{len(running)} others", file=sys.stderr, flush=True)
                forward(signal.SIGTERM, None)
        if running:
            time.sleep(WATCH_S)
    return failed


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The arguments each worker of `--workers N` is started with: every flag above but
    `--worker-index` and the host-local files, which the parent adds per worker."""
    return ["--policy", args.policy, "--grpc", args.grpc, "--metrics", args.metrics,
            "--workers", str(args.workers), "--max-streams", str(args.max_streams),
            "--grace", str(args.grace), "--upstream-timeout", str(args.upstream_timeout),
            "--log-level", args.log_level, "--xds", args.xds,
            "--xds-max-streams", str(args.xds_max_streams),
            *([] if args.echo else ["--no-echo"]),
            *(["--request-log", args.request_log, "--request-log-max-mb",
               str(args.request_log_max_mb), "--request-log-backups",
               str(args.request_log_backups)] if args.request_log else [])]



