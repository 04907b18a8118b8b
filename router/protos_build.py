"""Compile the project's own .proto files (protos/) into router/_gen with grpcio-tools.

Run by `make` and by the setuptools build; generated code is never committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "router" / "_gen"


def build() -> int:
    """Generate *_pb2.py / *_pb2_grpc.py / *.pyi for every proto; returns protoc's status."""
    from grpc_tools import protoc  # build-time only

    protos = sorted((ROOT / "protos").glob("*.proto"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "__init__.py").write_text('"""Generated from protos/ by router.protos_build."""\n')
    if not protos:
        return 0
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["grpc_tools.protoc", f"-I{ROOT / 'protos'}", f"-I{include}",
            f"--python_out={OUT}", f"--pyi_out={OUT}", f"--grpc_python_out={OUT}",
            *[str(p) for p in protos]]
    status = int(protoc.main(args))
    # protoc writes `import x_pb2`; make the imports package-relative.
    for path in OUT.glob("*_pb2_grpc.py"):
        text = path.read_text()
        for proto in protos:
            mod = proto.stem + "_pb2"
            text = text.replace(f"import {mod} as", f"from router._gen import {mod} as")
        path.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(build())
