"""The request path's own cost without gRPC: begin, answer, end, in a hot loop, CPU µs per request.

Each request is an ext_proc `ProcessingRequest` with request headers as the generated Envoy
config sends them (its `forward_rules`: 5,000 affinity keys, GDPR, a content-length and an
x-request-id; a client's other headers stay in Envoy),
answered by the servicer's own `_answer` (header map, tags, decision, response, metrics)
and ended as the stream's end does (`control.end`: slots and budget handed back). With
`--baseline REV` the same loop runs from a checkout of REV in alternating rounds, and the
ratios of the medians and of the fastest rounds are printed: on a busy machine only
those ratios mean much.

    .venv/bin/python bench/adapter_loop.py [--requests 20000] [--rounds 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOP = '''
import asyncio, gc, sys, time
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from router.metrics import RouterMetrics
from router.policy.loader import load_policy
from router.runtime import Runtime
from router.server.servicer import Processor

def message(i):
    # what the generated config has Envoy send (its forward_rules): the tags, the body's
    # length, the request id; a client's other headers stay in Envoy
    pairs = [("content-length", "512"), ("x-affinity-key", f"k{i % 5000}"),
             ("x-affinity-residency", "GDPR"), ("x-request-id", f"r{i}")]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]))

async def main(policy, n):
    proc = Processor(Runtime(load_policy(policy)), RouterMetrics())
    msgs = [message(i) for i in range(5000)]
    gc.freeze()
    for warm in (True, False):
        t0 = time.process_time()
        for i in range(n // 10 if warm else n):
            proc.control.begin()
            routed, answer, _ = await proc._answer(msgs[i % 5000])
            assert answer.HasField("request_headers"), answer
            proc.control.end(routed)
    print((time.process_time() - t0) / n * 1e6)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def one(tree: Path, policy: Path, n: int) -> float:
    """CPU µs per request of one loop run from `tree`."""
    out = subprocess.run([sys.executable, "-c", LOOP, str(policy), str(n)], cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def main() -> int:
    """Alternate the current tree and the baseline; print medians and their ratio."""
    from bench.envoy_extproc import _baseline_tree, policy_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", metavar="REV")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-adapter-"))
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text([9001, 9002, 9003, 9004, 9005]))
    trees = {"now": ROOT}
    if args.baseline:
        trees[args.baseline] = _baseline_tree(args.baseline, tmp)
    runs: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(one(tree, policy, args.requests))
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(trees[args.baseline])], check=False, capture_output=True)
    med = {name: statistics.median(v) for name, v in runs.items()}
    low = {name: min(v) for name, v in runs.items()}
    for name, v in runs.items():
        print(f"{name}: median {med[name]:.1f}, fastest {low[name]:.1f} µs/request  "
              f"({', '.join(f'{x:.1f}' for x in v)})")
    if args.baseline:
        # On a busy machine a round is slowed, never sped up, by other work: the fastest
        # rounds are the steadier comparison, the medians the usual one.
        print(f"now / {args.baseline}: {med['now'] / med[args.baseline]:.2f}x by the medians, "
              f"{low['now'] / low[args.baseline]:.2f}x by the fastest rounds")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
