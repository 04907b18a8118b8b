"""Standing fuzz: mutated policy and scenario texts through `validate`'s own checks give a
result or located problems, never an exception (fixed seed, a few hundred examples)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.policy import Policy
from router.policy.loader import parse_policy
from router.validate import check_file
from tests.policy.test_loader import GOOD

ROOT = Path(__file__).resolve().parents[2]
BASES = [GOOD, (ROOT / "policies" / "example.yaml").read_text(),
         (ROOT / "simulator" / "scenarios" / "fintech.yaml").read_text()]
SNIPPETS = ["!!python/name:os.system ", "!!int thirty", "!!timestamp x", "!foo ", "&a ", "*a",
            "<<: *a\n", "<<: ", "[" * 120, "{" * 70, "1" + "0" * 400, "9" * 5000, "1.0e+400",
            ".nan", "-1", "0", "'30'", '"30"', "true", "~", "\0", "\x7f", "\t", "---\n", "? ",
            "[a, [b, [c]]]", "{a: 1, a: 2}", "é", "\U0001f600", ": ", "- ", "#", "|\n  x\n",
            "0x7fffffffffffffffff", "1_000", "2026-11-22", "=", "%YAML 1.1\n", "@", "`"]
SETTINGS = settings(derandomize=True, database=None, max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A base text with one to four edits: a character flip, a snippet, a cut, a swap."""
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["flip", "insert", "truncate", "swap"]))
        if kind == "flip" and text:
            at = min(at, len(text) - 1)
            text = text[:at] + draw(st.characters(codec="utf-8")) + text[at + 1:]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[at:]
        elif kind == "truncate":
            text = text[:at]
        else:  # swap the token at `at` (up to the next delimiter) for a snippet
            end = re.compile(r"[,}\]\n]").search(text, at)
            stop = end.start() if end else len(text)
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[stop:]
    return text


_DIR = tempfile.TemporaryDirectory(prefix="policy-fuzz-")


@SETTINGS
@given(mutated())
def test_mutated_file_gives_located_problems_never_an_exception(text: str) -> None:
    path = Path(_DIR.name) / ("s.yaml" if "traffic:" in text else "p.yaml")
    path.write_text(text, encoding="utf-8")
    problems = check_file(str(path))
    located = re.compile(rf"^{re.escape(str(path))}:\d+:\d+: ")
    for problem in problems:
        line = str(problem)
        assert located.match(line) and "\n" not in line, line
        assert problem.line >= 1 and problem.col >= 1


@SETTINGS
@given(mutated() | st.text())
def test_parse_gives_a_policy_or_an_error(text: str) -> None:
    policy, problems = parse_policy(text, "f.yaml")
    errors = [p for p in problems if p.severity == "error"]
    assert (policy is None) == bool(errors), problems
    if policy is not None:
        assert isinstance(policy, Policy) and (policy.nodes or policy.pools)
