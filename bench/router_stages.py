"""`hybrid-router serve` with its answer cut short after one stage: where its CPU goes.

The whole server runs (gRPC, health, ADS, metrics, refresh, the per-stream servicer);
only the servicer's `_answer` is replaced, and it answers a fixed header (as the
do-nothing floor does) after

- `fixed`: nothing at all: the server around the answer;
- `parse`: reading the header map and parsing the tags;
- `decide`: that, then deciding (plan, walk, admit), the stream's end handing the
  slots back as it always does.

The full router adds the answer built from the decision, its metrics and the
Envoy node lookup. `bench/envoy_extproc.py --ways c,s0,s1,s2,d` runs them side by side.

    .venv/bin/python bench/router_stages.py STAGE serve --policy ... (serve's flags)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router.cli import main as cli
from router.server import extproc
from router.server import servicer as S

FIXED = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse(
    header_mutation=pb.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="x-route-node", raw_value=b"noop"))]))))


async def _fixed(self: Any, msg: Any, envoy: Any = None) -> tuple[Any, Any, Any]:
    return None, FIXED, None


async def _parse(self: Any, msg: Any, envoy: Any = None) -> tuple[Any, Any, Any]:
    headers = extproc.request_headers(msg)
    self.control.parse(headers, 0, None)
    return None, FIXED, None


async def _decide(self: Any, msg: Any, envoy: Any = None) -> tuple[Any, Any, Any]:
    headers = extproc.request_headers(msg)
    routed = self.control.decide(self.control.parse(headers, 0, None))
    return (routed if routed.decision.routed else None), FIXED, None


STAGES = {"fixed": _fixed, "parse": _parse, "decide": _decide}

if __name__ == "__main__":
    S.Processor._answer = STAGES[sys.argv[1]]  # type: ignore[method-assign]
    sys.exit(cli(sys.argv[2:]))
