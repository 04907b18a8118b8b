"""Policy YAML → typed `Policy`, reporting every problem with its location.

Phase one (here): `router.policy.yamlloc` reads the text totally (tags, aliases, depth,
sizes) and `router.core.policy.Policy` validates it declaratively: unknown keys refused
with a did-you-mean, strict types and bounds, defaults applied, ids and addresses
cross-checked. Each finding is placed at FILE:LINE:COL of the key or value it names.
Phase two, the runtime form (rings, tables), is built by `router.core.table`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from router.core.policy import CloudPool, EdgeNode, Policy, valid_hostport
from router.core.schema import Finding, KeyPath, findings
from router.policy.typos import residency_typos
from router.policy.yamlloc import MAX_BYTES, Located, Problem, YMap, load_located, read_text

__all__ = ["PolicyError", "load_policy", "load_policy_or_report", "parse_policy",
           "policy_digest", "policy_from_text", "valid_hostport", "validate_located"]

# Keys an older policy may still carry: read, warned about, ignored.
RETIRED: Mapping[KeyPath, str] = {
    ("split", "cloud_cost_fraction"): "no longer used (split cost follows "
                                      "split.cloud_compute_fraction); remove it",
    ("split", "extra_latency_ms"): "no longer used (split latency follows node feature_ms "
                                   "and uplinks); remove it",
}


class PolicyError(Exception):
    """A policy failed validation; `problems` holds every located message."""

    def __init__(self, problems: list[Problem]) -> None:
        """Wrap the problems found."""
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def place(loc: Located, finding: Finding, severity: str = "error") -> Problem:
    """A finding at FILE:LINE:COL of the key or value it names; refs become 'line N'."""
    line, col = loc.where(finding.path, key=finding.key)
    text = finding.text(lambda ref: f"line {loc.where(ref)[0]}")
    return Problem(loc.file, line, col, text, severity)


def _without(data: Any, retired: Mapping[KeyPath, str], loc: Located
             ) -> tuple[Any, list[Problem]]:
    """`data` minus the retired keys it has (copied, never mutated), and a warning for each."""
    warnings: list[Problem] = []
    for path, why in retired.items():
        parent: Any = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            warnings.append(place(loc, Finding(path, why, key=True), "warning"))
            data = _copy_without(data, path)
    return data, warnings


def _copy_without(data: Any, path: KeyPath) -> Any:
    out = dict(data)
    if len(path) == 1:
        out.pop(path[0], None)
    else:
        out[path[0]] = _copy_without(out[path[0]], path[1:])
    return out


def validate_located(model: type[BaseModel], loc: Located, *,
                     retired: Mapping[KeyPath, str] | None = None,
                     context: dict[str, Any] | None = None) -> tuple[Any, list[Problem]]:
    """Validate a located document against `model`; (instance or None, located problems)."""
    if not isinstance(loc.data, YMap):
        return None, [Problem(loc.file, *loc.root_at, "expected a YAML mapping at the top level")]
    data, problems = _without(loc.data, retired or {}, loc)
    try:
        return model.model_validate(data, context=context), problems
    except ValidationError as exc:
        return None, problems + [place(loc, f) for f in findings(exc, model)]


def _reachability_warnings(policy: Policy, loc: Located) -> list[Problem]:
    """Residency tags or models that nothing can ever satisfy together."""
    out: list[Problem] = []

    def warn(path: KeyPath, message: str) -> None:
        out.append(place(loc, Finding(path, message), "warning"))

    targets: list[EdgeNode | CloudPool] = [*policy.nodes, *policy.pools]
    for tag in sorted(policy.defaults.residency):
        if not any(tag in t.residency for t in targets):
            warn(("defaults", "residency"), f"residency tag '{tag}' is satisfied by no node "
                                            "or pool; such requests will be refused (503)")
    model = policy.defaults.model
    if model and not any(t.serves(model) for t in targets):
        warn(("defaults", "model"), f"model '{model}' is served by no node or pool")
    for name, rules in policy.budgets.tenants.items():
        floor = policy.defaults.residency | rules.residency
        if rules.residency and not any(floor <= t.residency for t in targets):
            warn(("budgets", "tenants", name, "residency"),
                 f"no node or pool satisfies [{', '.join(sorted(floor))}] together (the "
                 "tenant's floor and defaults.residency); its requests will be refused (503)")
        for model in sorted(rules.models or ()):
            if not any(t.serves(model) for t in targets):
                warn(("budgets", "tenants", name, "models"),
                     f"model '{model}' is served by no node or pool")
    pool_tags = set().union(*(p.residency for p in policy.pools))
    warned: set[str] = set()
    for i, node in enumerate(policy.nodes):
        for tag in sorted(node.residency - pool_tags - warned):
            warned.add(tag)
            warn(("edge", "nodes", i, "residency"),
                 f"residency tag '{tag}' is satisfied by no cloud pool; when its edge nodes "
                 "are full or down these requests are refused (503)")
        for name in sorted(node.models - {"*"} - warned):
            if not any(p.serves(name) for p in policy.pools):
                warned.add(name)
                warn(("edge", "nodes", i, "models"),
                     f"model '{name}' is served by no cloud pool; when its edge nodes are "
                     "full or down these requests are refused (503)")
    for path, message in residency_typos(policy):
        warn(path, message)
    return out


def policy_digest(text: str) -> str:
    """Short, stable version hash of a policy's source text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def parse_policy(text: str, file: str = "<policy>") -> tuple[Policy | None, list[Problem]]:
    """Parse policy text; returns the policy (None on any error) and all problems."""
    loc, problems = load_located(text, file)
    if loc.data is None:
        return None, problems
    policy, problems = validate_located(Policy, loc, retired=RETIRED)
    if not isinstance(policy, Policy):
        return None, problems
    return policy.with_digest(policy_digest(text)), problems + _reachability_warnings(policy, loc)


def load_policy(path: str | FsPath) -> Policy:
    """Read and validate a policy file; raises `PolicyError` listing every problem."""
    file = str(path)
    text, problems = read_text(file, MAX_BYTES)
    if text is None:
        raise PolicyError(problems)
    return policy_from_text(text, file)


def policy_from_text(text: str, file: str) -> Policy:
    """Validate policy text read from `file`; raises `PolicyError` listing every problem."""
    policy, problems = parse_policy(text, file)
    if policy is None:
        raise PolicyError([p for p in problems if p.severity == "error"] or problems)
    return policy


def load_policy_or_report(path: str | FsPath) -> Policy | None:
    """`load_policy` for commands: on failure print every problem to stderr, return None."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
