"""Hostile and careless policy files, checked from the outside: `hybrid-router validate`
exits 2 and every line it prints is FILE:LINE:COL, never a traceback or a hang."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.policy import yamlloc
from router.policy.loader import parse_policy
from router.policy.yamlloc import MAX_BYTES, MAX_DEPTH
from tests.policy.test_loader import GOOD

ROOT = Path(__file__).resolve().parents[2]
# Generous: a hang fails the test instead of stalling the suite; nothing here is timed.
TIMEOUT_S = 60

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi",
                                                                strict=True))


def validate(tmp_path: Path, text: str | bytes, name: str = "policy.yaml"
             ) -> tuple[int, list[str], str]:
    """Run `hybrid-router validate` on `text` as a user would: (exit code, stderr lines, path)."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "router", "validate", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
                          check=False)
    return proc.returncode, proc.stderr.splitlines(), str(path)


def assert_located(code: int, lines: list[str], path: str, fragment: str) -> None:
    """Exit 2, at least one line, each one located, one of them saying `fragment`."""
    assert code == 2, lines
    assert lines, "an error must be printed"
    located = re.compile(rf"^{re.escape(path)}:\d+:\d+: ")
    assert all(located.match(line) for line in lines), lines
    assert any(fragment in line for line in lines), lines


HOSTILE = [
    pytest.param("refresh_seconds: !!python/name:os.system", "tags are not allowed",
                 id="tag-python-name"),
    pytest.param("refresh_seconds: !!int thirty", "tags are not allowed", id="tag-int-thirty"),
    pytest.param("refresh_seconds: !!timestamp x", "tags are not allowed", id="tag-timestamp"),
    pytest.param("hashing: !foo {balance_factor: 0.25}", "tags are not allowed", id="tag-local"),
    pytest.param("refresh_seconds: 1" + "0" * 400, "number too large", id="int-10e400"),
    pytest.param("refresh_seconds: " + "7" * 5000, "number too large", id="int-5000-digits"),
    pytest.param("refresh_seconds: 1.0e+400", "must be a finite number", id="float-overflow"),
    pytest.param("hashing: &h {balance_factor: *h}", "recursive alias", id="recursive-alias"),
    pytest.param("defaults: {residency: " + "[" * 3000 + "]" * 3000 + "}",
                 f"nested deeper than {MAX_DEPTH} levels", id="nesting-3000"),
    pytest.param("defaults:\n" + "".join(" " * (2 * i + 2) + f"k{i}:\n" for i in range(200)),
                 f"nested deeper than {MAX_DEPTH} levels", id="block-nesting-200"),
    pytest.param("lol: *x", "undefined alias", id="undefined-alias"),
    pytest.param("version: 1\n---\nversion: 1", "found a second", id="two-documents"),
]


@pytest.mark.parametrize(("line", "fragment"), HOSTILE)
def test_hostile_policy_is_a_located_error(tmp_path: Path, line: str, fragment: str) -> None:
    code, lines, path = validate(tmp_path, GOOD + line + "\n")
    assert_located(code, lines, path, fragment)


PARSERS = [pytest.param(yaml.SafeLoader, id="python")] + (
    [pytest.param(yaml.CSafeLoader, id="libyaml")] if hasattr(yaml, "CSafeLoader") else [])


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 999, 1000, 3000])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused_the_same_by_every_parser(
        monkeypatch: pytest.MonkeyPatch, parser: type, depth: int, style: str) -> None:
    """libyaml (1000 levels since 0.2.6) or the builder (MAX_DEPTH): one message either way."""
    monkeypatch.setattr(yamlloc, "_PARSER", parser)
    if style == "flow":
        text = "defaults: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "defaults:\n" + "".join(" " * (i + 1) + "- \n" for i in range(depth))
    _, problems = yamlloc.load_located(text, "p.yaml")
    assert [p.message for p in problems] == [f"nested deeper than {MAX_DEPTH} levels"]


def test_billion_laughs_is_refused_not_expanded(tmp_path: Path) -> None:
    assert len(LAUGHS) < 400  # nine lines that would expand to 9**9 strings
    code, lines, path = validate(tmp_path, LAUGHS)
    assert_located(code, lines, path, "expands to more than")
    code, lines, path = validate(tmp_path, GOOD + LAUGHS.replace("i: &i", "defaults: &i"))
    assert_located(code, lines, path, "expands to more than")


def test_nul_byte_gives_exactly_one_located_line(tmp_path: Path) -> None:
    text = GOOD.replace("weight: 2", "weight: 2\0")
    code, lines, path = validate(tmp_path, text)
    assert_located(code, lines, path, "#x0000")
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:4:")


def test_nul_byte_after_wide_characters_is_placed_by_character() -> None:
    _, problems = parse_policy("a: ééé\nb: ééé\0\n", "p.yaml")
    assert [(p.line, p.col) for p in problems] == [(2, 7)]


def test_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    code, lines, path = validate(tmp_path, GOOD + "#" * MAX_BYTES + "\n")
    assert_located(code, lines, path, "over the limit")
    assert len(lines) == 1


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    code, lines, path = validate(tmp_path, GOOD.encode() + b"lol: \xff\xfe\n")
    assert_located(code, lines, path, "not UTF-8")
    assert lines[0].startswith(f"{path}:8:6: ")


def test_a_lone_surrogate_in_text_is_located() -> None:
    policy, problems = parse_policy(GOOD + "lol: \ud800\n", "p.yaml")
    assert policy is None
    assert [str(p) for p in problems] == [
        "p.yaml:8:6: not valid UTF-8 text (a lone surrogate)"]


def test_several_tags_are_all_reported(tmp_path: Path) -> None:
    code, lines, path = validate(tmp_path, GOOD + "refresh_seconds: !!str 5\n"
                                                  "hashing: {balance_factor: !!float 1}\n")
    assert_located(code, lines, path, "'!!str'")
    assert sum("tags are not allowed" in line for line in lines) == 2


def test_merge_keys_work() -> None:
    text = """\
version: 1
edge:
  nodes:
    - &gpu {id: a, address: "127.0.0.1:9001", weight: 2, slots: 4, residency: [GDPR]}
    - {<<: *gpu, id: b, address: "127.0.0.1:9002"}
    - <<: [*gpu]
      id: c
      address: "127.0.0.1:9003"
      slots: 0
cloud:
  pools:
    - {id: p, address: "127.0.0.1:9100", residency: [GDPR]}
"""
    _, problems = parse_policy(text, "m.yaml")
    # c's own slots: 0 wins over the merged 4, and is placed on c's own line.
    assert [str(p) for p in problems] == [
        "m.yaml:9:14: edge.nodes[2].slots: must be greater than 0, got 0"]
    policy, problems = parse_policy(text.replace("slots: 0", "slots: 6"), "m.yaml")
    assert policy is not None and not problems
    a, b, c = policy.nodes
    assert (b.weight, b.slots, b.residency, b.id) == (2.0, 4, frozenset({"GDPR"}), "b")
    assert (c.weight, c.slots, c.address) == (2.0, 6, "127.0.0.1:9003")
    assert a.id == "a"


def test_merged_value_errors_point_at_the_template() -> None:
    text = GOOD.replace("    - {id: a,", "    - {<<: {weight: -1}, id: a,").replace(
        "weight: 2, ", "")
    _, problems = parse_policy(text, "m.yaml")
    assert [str(p) for p in problems] == [
        "m.yaml:4:21: edge.nodes[0].weight: must be greater than 0, got -1"]
