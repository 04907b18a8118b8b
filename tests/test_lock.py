"""requirements.lock covers pyproject.toml: every dependency, test tool and build requirement
named there is pinned in the lock at a version its specifier allows (`make lock` after an
edit), so `make` never installs a dependency the lock does not pin."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.MULTILINE)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_requirement_is_pinned_within_its_specifier() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"],
              *project["project"]["optional-dependencies"]["test"],
              *project["build-system"]["requires"]]
    pins: dict[str, list[str]] = {}
    for name, version in PIN.findall((ROOT / "requirements.lock").read_text()):
        pins.setdefault(_norm(name), []).append(version)
    problems = []
    for line in wanted:
        req = Requirement(line)
        versions = pins.get(_norm(req.name), [])
        if not versions:
            problems.append(f"{req.name}: not in requirements.lock")
        elif not any(req.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{req.name}: locked {versions} outside {req.specifier}")
    assert not problems, "run `make lock`: " + "; ".join(problems)
