"""`hybrid-router feed serve --from FILE [--listen HOST:PORT] [--grpc HOST:PORT]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from router.cliargs import POSITIVE, address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `feed serve` and its options."""
    sub = parser.add_subparsers(dest="feed_command", metavar="ACTION")
    serve = sub.add_parser("serve", help="serve a feed file over HTTP and gRPC Watch",
                           description="Serve FILE over HTTP (with ETag) and gRPC Watch; "
                                       "re-read it when it changes and push to watchers.")
    serve.add_argument("--from", dest="source", required=True, metavar="FILE",
                       help="feed JSON file to serve")
    serve.add_argument("--listen", default="127.0.0.1:8089", metavar="HOST:PORT",
                       type=address(unix=False),
                       help="HTTP address (default 127.0.0.1:8089; port 0 picks one)")
    serve.add_argument("--grpc", default="127.0.0.1:8090", metavar="HOST:PORT",
                       type=address("off", unix=False),
                       help="gRPC Watch address (default 127.0.0.1:8090; 'off' disables)")
    serve.add_argument("--poll", type=POSITIVE, default=0.2, metavar="SECONDS",
                       help="how often to check the file for changes (default 0.2)")


async def serve(path: Path, listen: str, grpc_addr: str | None, poll_s: float) -> int:
    """Run the feed server until SIGINT/SIGTERM."""
    from router.feed.server import FeedServer

    server = FeedServer(path, http=listen, grpc_addr=grpc_addr, poll_s=poll_s)
    await server.start()
    print(f"feed: serving {path} at {server.http_url}"
          + (f" and {server.grpc_url}" if grpc_addr else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `feed ACTION`."""
    if args.feed_command != "serve":
        print("usage: hybrid-router feed serve --from FILE [--listen HOST:PORT] "
              "[--grpc HOST:PORT]", file=sys.stderr)
        return 2
    grpc_addr = None if args.grpc == "off" else args.grpc
    path = Path(args.source)
    if not path.is_file():
        print(f"feed serve: {path}: no such file", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(serve(path, args.listen, grpc_addr, args.poll))
