"""The routing core stays pure: no transport, no metrics, no YAML, no clock, no global random."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "router" / "core"
FORBIDDEN_MODULES = ("grpc", "envoy", "xds", "prometheus_client", "asyncio", "yaml", "socket",
                     "time", "random", "redis", "sqlite3", "router._gen", "router.server",
                     "router.feed", "router.metrics", "router.stores")
FORBIDDEN_CALLS = ("datetime.now", "datetime.utcnow", "date.today", "open")


def _imports(tree: ast.AST) -> list[str]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module:
            out.append(n.module)
    return out


def test_core_imports_no_io_or_transport() -> None:
    files = sorted(CORE.glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text())
        for name in _imports(tree):
            bad = [m for m in FORBIDDEN_MODULES if name == m or name.startswith(m + ".")]
            assert not bad, f"{path.name} imports {name}"


def test_core_reads_no_clock_and_opens_no_file() -> None:
    for path in sorted(CORE.glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call):
                text = ast.unparse(n.func)
                assert text not in FORBIDDEN_CALLS, f"{path.name} calls {text}"
