"""Where the router's CPU goes under load: py-spy samples (d) while wrk drives real Envoy.

The same stack as bench/envoy_extproc.py's (d): the generated --static config, one Envoy
worker, a direct_response upstream Envoy, wrk -t2 -c32 spreading 5,000 affinity keys.
py-spy (`pip install py-spy`) records the router process for the wrk run; the samples
are folded into self-time per function and inclusive time per part of the request path,
printed as two tables (docs/BENCHMARKS.md, "Where the router's time goes").

    .venv/bin/python bench/profile_extproc.py [--seconds 10] [--native] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.envoy_extproc import LUA, ROOT, policy_text, upstream_config, variant, wrk
from router.envoy_config import build
from router.policy.loader import load_policy
from tests.integration.stack import ENVOY, free_port, stop, wait_port

# Parts of the request path, by the first matching frame (innermost wins) of a sample.
PARTS = (
    ("metrics", ("router/metrics.py", "prometheus_client")),
    ("response build", ("extproc.py:routed_response", "extproc.py:_routed",
                        "extproc.py:immediate")),
    ("header map", ("extproc.py:request_headers", "core/request.py:__init__",
                    "HeaderMap")),
    ("tags", ("core/request.py",)),
    ("decision", ("router/core/", "runtime.py:decide", "control.py:decide")),
    ("finish (stream end)", ("runtime.py:finish", "control.py:end", "control.py:release")),
    ("servicer (ours, rest)", ("router/server/", "router/control.py", "router/runtime.py")),
    ("gRPC (cygrpc, protobuf)", ("grpc", "cygrpc", "protobuf", "upb")),
    ("event loop (uvloop, asyncio)", ("uvloop", "asyncio", "selectors")),
    ("GC", ("gc_collect", "collect (gc", "_PyGC", "gc_collect_main")),
)


# A sample whose innermost frames wait (a poller, a condition, an idle thread) is no work.
IDLE = ("epoll_wait", "epoll_pwait", "poll (libc", "select (", "Condition.wait",
        "PyThread_acquire_lock_timed", "SimpleQueue.get", "Queue.get", "Event.wait")


def part(stack: list[str]) -> str:
    """The part of the request path a sample's stack (outermost first) belongs to:
    the innermost frame that names one."""
    for frame in reversed(stack):
        for name, marks in PARTS:
            if any(m in frame for m in marks):
                return name
    return "other"


def idle(stack: list[str]) -> bool:
    """Whether the sample's thread was waiting, not working."""
    return any(m in frame for frame in stack[-4:] for m in IDLE)


def fold(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Self samples per function, samples per part, and the total, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        n = int(count_text)
        frames = [f for f in stack_text.split(";") if f.strip()]
        if idle(frames):
            continue
        total += n
        own[_short(frames[-1]) if frames else "?"] += n
        parts[part(frames)] += n
    return own, parts, total


def _short(frame: str) -> str:
    """`fn (path/to/file.py:12)` -> `fn (file.py)`; native frames as they are."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 2)[-2:]
    return f"{name} ({'/'.join(file)})" if where else name


def main() -> int:
    """Run the stack, profile the router under wrk, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--out", type=Path, default=None, help="keep the raw samples here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--stage", choices=("fixed", "parse", "decide"),
                    help="profile bench/router_stages.py cut short after this stage")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out = args.out or tmp
    out.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(5)]
    (tmp / "policy.yaml").write_text(policy_text(ports))
    (tmp / "wrk.lua").write_text(LUA)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(tmp / "stack.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=ROOT))
        return procs[-1]

    assert ENVOY
    try:
        (tmp / "up.yaml").write_text(yaml.safe_dump(upstream_config(ports, free_port())))
        up = spawn([ENVOY, "-c", str(tmp / "up.yaml"), "--base-id", "911", "--concurrency", "1",
                    "-l", "error"])
        for p in ports:
            wait_port(p, up)
        grpc_port, listen = free_port(), free_port()
        run = [sys.executable, str(ROOT / "bench" / "router_stages.py"), args.stage] \
            if args.stage else [sys.executable, "-m", "router"]
        router = spawn([*run, "serve", "--policy",
                        str(tmp / "policy.yaml"), "--grpc", f"127.0.0.1:{grpc_port}",
                        "--metrics", "off", "--log-level", "WARNING"])
        wait_port(grpc_port, router)
        cfg = variant(build(load_policy(tmp / "policy.yaml"), mode="gateway",
                            listen=f"127.0.0.1:{listen}", router=f"127.0.0.1:{grpc_port}",
                            admin=f"127.0.0.1:{free_port()}", static=True), "d")
        (tmp / "d.yaml").write_text(yaml.safe_dump(cfg))
        env = spawn([ENVOY, "-c", str(tmp / "d.yaml"), "--base-id", "912", "--concurrency", "1",
                     "-l", "error"])
        wait_port(listen, env)
        time.sleep(1.0)
        url = f"http://127.0.0.1:{listen}/infer"
        wrk(url, 2, tmp / "wrk.lua")  # warm-up
        raw = out / "router.raw"
        argv = [spy, "record", "--pid", str(router.pid), "--duration", str(args.seconds),
                "--rate", "250", "--format", "raw", "--output", str(raw)]
        spy_proc = subprocess.Popen(argv + (["--native"] if args.native else ["--nonblocking"]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rps, _, _ = wrk(url, args.seconds + 1, tmp / "wrk.lua")
        spy_proc.wait(timeout=args.seconds + 30)
    finally:
        for p in procs:
            stop(p)
    own, parts, total = fold(raw)
    print(f"{rps:,.0f} req/s under wrk; {total} samples\n\n| part | share |\n|---|---:|")
    for name, n in parts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")
    print("\n| function (self) | share |\n|---|---:|")
    for name, n in own.most_common(args.top):
        print(f"| `{name}` | {100 * n / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
