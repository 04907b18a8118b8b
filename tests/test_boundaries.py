"""The routing core stays pure, checked by import-linter contracts (pyproject.toml) and an AST
scan for clock reads: no transport, stores, metrics, YAML, threads, logging, clock or random."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "router" / "core"
PYPROJECT = ROOT / "pyproject.toml"
LINT = Path(sys.executable).parent / "lint-imports"
FORBIDDEN_CALLS = ("datetime.now", "datetime.utcnow", "date.today", "open")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    declared = len(re.findall(r"^\[\[tool\.importlinter\.contracts\]\]", PYPROJECT.read_text(),
                              re.MULTILINE))
    assert declared >= 3 and f"{declared} kept, 0 broken" in result.stdout


def test_the_contract_catches_a_forbidden_import(tmp_path: Path) -> None:
    for part in ("router", "simulator"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "router" / "core" / "loads.py").open("a") as fh:
        fh.write("\nimport threading  # a lock in the core would make the hot path wait\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "router.core.loads -> threading" in result.stdout


def test_core_reads_no_clock_and_opens_no_file() -> None:
    for path in sorted(CORE.glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call):
                text = ast.unparse(n.func)
                assert text not in FORBIDDEN_CALLS, f"{path.name} calls {text}"
