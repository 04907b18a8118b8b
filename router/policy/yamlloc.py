"""YAML to plain values, remembering where every value came from.

`load_located` returns the document as dicts/lists/scalars together with a map
from each value's path (a tuple of keys and indexes) to its 1-based line and
column, so every validation message can point at the exact spot in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation finding, located in a file."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class DuplicateKeyError(Exception):
    """A mapping names the same key twice."""


@dataclass
class Located:
    """A parsed document plus the position of each path in it."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Line and column of `path` (of its key when `key`), nearest parent if unknown."""
        table = self.key_marks if key else self.marks
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.marks:
                return self.marks[probe]
            probe = probe[:-1]
        return self.marks.get((), (1, 1))


def dotted(path: Path) -> str:
    """`nodes[2].weight` style rendering of a path."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _construct(node: yaml.Node, path: Path, loc: Located, problems: list[Problem]) -> Any:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    loc.marks[path] = (line, col)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            kpath = (*path, key)
            kline, kcol = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in out:
                problems.append(
                    Problem(loc.file, kline, kcol, f"{dotted(kpath)}: duplicate key '{key}'")
                )
                continue
            loc.key_marks[kpath] = (kline, kcol)
            out[key] = _construct(value_node, kpath, loc, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), loc, problems) for i, item in enumerate(node.value)]
    # Scalars: resolve with the safe constructor so 1 is int, true is bool, etc.
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_object(node, deep=True)
    finally:
        constructor.dispose()


def load_located(text: str, file: str) -> tuple[Located, list[Problem]]:
    """Parse `text`; syntax errors come back as located problems, never raised."""
    loc = Located(file=file, data=None)
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(file, line, col, f"YAML syntax error: {exc.problem or exc}"))
        return loc, problems
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 1, 1, f"YAML error: {exc}"))
        return loc, problems
    if root is None:
        problems.append(Problem(file, 1, 1, "document is empty"))
        return loc, problems
    loc.data = _construct(root, (), loc, problems)
    return loc, problems


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Checker:
    """Collects located problems while reading a located document."""

    def __init__(self, loc: Located, problems: list[Problem] | None = None) -> None:
        """Start checking `loc`, appending to `problems`."""
        self.loc = loc
        self.problems: list[Problem] = problems if problems is not None else []

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        """Record an error at `path`."""
        line, col = self.loc.where(path, key=key)
        self.problems.append(Problem(self.loc.file, line, col, f"{dotted(path)}: {message}"))

    def warn(self, path: Path, message: str) -> None:
        """Record a warning at `path`."""
        line, col = self.loc.where(path)
        self.problems.append(
            Problem(self.loc.file, line, col, f"{dotted(path)}: {message}", "warning")
        )

    @property
    def ok(self) -> bool:
        """True while no error has been recorded."""
        return not any(p.severity == "error" for p in self.problems)

    def mapping(self, value: Any, path: Path, allowed: Iterable[str]) -> dict[str, Any]:
        """`value` as a mapping; unknown keys are reported with a did-you-mean."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type_name(value)}")
            return {}
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                self.error((*path, key), f"unknown key '{key}'{did_you_mean(key, allowed)}",
                           key=True)
        return value

    def number(self, m: dict[str, Any], key: str, path: Path, default: float | None = None, *,
               minimum: float | None = None, positive: bool = False,
               maximum: float | None = None, integer: bool = False,
               required: bool = False) -> float | None:
        """Read a number with bounds; None (and an error) when it is wrong."""
        p = (*path, key)
        if key not in m:
            if required:
                self.error(path, f"missing required key '{key}'")
            return default
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(p, f"expected a number, got {type_name(value)} {value!r}")
            return default
        if integer and not isinstance(value, int):
            self.error(p, f"expected an integer, got {value!r}")
            return default
        if value != value or value in (float("inf"), float("-inf")):
            self.error(p, f"must be a finite number, got {value!r}")
            return default
        if positive and value <= 0:
            self.error(p, f"must be greater than 0, got {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.error(p, f"must be at least {minimum:g}, got {value!r}")
            return default
        if maximum is not None and value > maximum:
            self.error(p, f"must be at most {maximum:g}, got {value!r}")
            return default
        return float(value) if not integer else int(value)

    def string(self, m: dict[str, Any], key: str, path: Path, default: str | None = None, *,
               required: bool = False, choices: Iterable[str] | None = None) -> str | None:
        """Read a non-empty string, optionally from `choices`."""
        p = (*path, key)
        if key not in m:
            if required:
                self.error(path, f"missing required key '{key}'")
            return default
        value = m[key]
        if not isinstance(value, str) or not value:
            self.error(p, f"expected a non-empty string, got {type_name(value)} {value!r}")
            return default
        if choices is not None:
            options = tuple(choices)
            if value not in options:
                self.error(p, f"must be one of {', '.join(options)}, got '{value}'"
                           f"{did_you_mean(value, options)}")
                return default
        return value

    def boolean(self, m: dict[str, Any], key: str, path: Path, default: bool) -> bool:
        """Read a boolean."""
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"expected true or false, got {value!r}")
            return default
        return value

    def strings(self, m: dict[str, Any], key: str, path: Path) -> frozenset[str]:
        """Read a list of non-empty strings."""
        p = (*path, key)
        if key not in m:
            return frozenset()
        value = m[key]
        if not isinstance(value, list):
            self.error(p, f"expected a list of strings, got {type_name(value)}")
            return frozenset()
        out: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.error((*p, i), f"expected a non-empty string, got {item!r}")
            else:
                out.add(item)
        return frozenset(out)


def type_name(value: Any) -> str:
    """A user-facing name for the type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
