"""YAML text to plain values, total: any text gives data or located problems, fast.

`load_located` reads the event stream of libyaml's C parser (PyYAML's own parser when
libyaml is missing) and builds dicts, lists and scalars itself, without recursion, so
it can refuse what a configuration never needs and a hostile file would use to crash or
hang a reader: YAML tags (`!!python/name:…`, `!foo`), nesting deeper than `MAX_DEPTH`,
aliases expanding past `MAX_VALUES` values (billion laughs), recursive aliases, integers
longer than `MAX_INT_DIGITS` and texts over the size limit. Merge keys (`<<: *base`)
work as in YAML 1.1: the mapping's own keys win, then earlier merged mappings.

Every mapping (`YMap`) and list (`YList`) remembers where its keys and items were, so
`Located.where` finds FILE:LINE:COL for any key path; a value reached through an alias
is placed where its anchor wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from router.core.schema import MAX_INT_DIGITS, KeyPath, did_you_mean, dotted, type_name
from router.policy.located import Located, Mark, Problem, YList, YMap, read_text

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "Located", "Path", "Problem", "YList", "YMap",
           "did_you_mean", "dotted", "load_located", "read_text", "type_name"]

Path = KeyPath
MAX_BYTES = 8 * 1024 * 1024  # a 10,000-node policy is about 2 MB
MAX_DEPTH = 64  # a policy nests 5 deep; libyaml's composer would overflow the C stack
MAX_VALUES = 1_000_000  # expanded values, aliases counted each time they are used
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVE: Any = Resolver().resolve
_CONSTRUCT = SafeConstructor()
_TAG = "tag:yaml.org,2002:"


class _Stop(Exception):
    """A problem after which reading the rest of the text is pointless or unsafe."""

    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark, self.message = mark, message


class _Bad(Exception):
    """A value to report and read on past."""


@dataclass
class _Frame:
    value: YMap | YList
    at: Mark
    anchor: str | None
    size: int = 1
    key: str | None = None  # a mapping's key waiting for its value
    key_at: Mark = (0, 0)
    merge_next: bool = False
    merges: list[tuple[Any, Mark]] = field(default_factory=list)


def _mark(event: Any) -> Mark:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _scalar(event: Any) -> Any:
    """A plain scalar resolved as YAML 1.1 does (quoted and block scalars stay strings)."""
    text: str = event.value
    tag = _RESOLVE(yaml.ScalarNode, text, (True, False))
    node = yaml.ScalarNode(tag, text)
    if tag == _TAG + "int":
        digits = sum(c.isalnum() for c in text)
        value = _CONSTRUCT.construct_yaml_int(node) if digits <= MAX_INT_DIGITS + 2 else None
        if value is None or abs(value) >= 10 ** MAX_INT_DIGITS:
            raise _Bad(f"number too large (more than {MAX_INT_DIGITS} digits)")
        return value
    if tag == _TAG + "float":
        return _CONSTRUCT.construct_yaml_float(node)
    if tag == _TAG + "bool":
        return _CONSTRUCT.construct_yaml_bool(node)
    if tag == _TAG + "null":
        return None
    return text  # str, and timestamps or '=' which a policy only ever reads as text


class _Builder:
    """Turns parser events into YMap/YList/scalars, one event at a time."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.total = 0
        self.root: Any = None
        self.root_at: Mark = (1, 1)
        self.documents = 0
        self.plain: dict[str, Any] = {}  # plain scalar text → value: fleets repeat them a lot

    def problem(self, at: Mark, message: str) -> None:
        self.problems.append(Problem(self.file, at[0], at[1], message))

    def feed(self, event: Any) -> None:
        """Take one parser event."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, _mark(event))

    def untagged(self, event: Any, at: Mark) -> None:
        if event.tag is not None:
            shown = event.tag.replace(_TAG, "!!")
            self.problem(at, f"YAML tags are not allowed (found '{shown}')")

    def document(self, event: Any, at: Mark) -> None:
        self.documents += 1
        if self.documents > 1:
            raise _Stop(at, "expected one YAML document, found a second")

    def start(self, event: Any, at: Mark) -> None:
        self.untagged(event, at)
        if len(self.stack) >= MAX_DEPTH:
            raise _Stop(at, f"nested deeper than {MAX_DEPTH} levels")
        self.count(1, at)
        value = YMap() if isinstance(event, yaml.MappingStartEvent) else YList()
        self.stack.append(_Frame(value, at, event.anchor))
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)

    def count(self, size: int, at: Mark) -> None:
        self.total += size
        if self.total > MAX_VALUES:
            raise _Stop(at, f"the document expands to more than {MAX_VALUES} values "
                            "(aliases are counted each time they are used)")

    def scalar(self, event: Any, at: Mark) -> None:
        self.untagged(event, at)
        self.count(1, at)
        text, plain = event.value, event.implicit[0]
        frame = self.stack[-1] if self.stack else None
        if frame is not None and frame.key is None and isinstance(frame.value, YMap):
            frame.key, frame.key_at, frame.merge_next = text, at, plain and text == "<<"
            return
        if not plain:
            value = text
        elif text in self.plain:
            value = self.plain[text]
        else:
            try:
                value = self.plain[text] = _scalar(event)
            except _Bad as bad:
                self.problem(at, str(bad))
                value = text
        self.add(value, at, 1, event.anchor)

    def alias(self, event: Any, at: Mark) -> None:
        name = event.anchor
        if name in self.open_anchors:
            raise _Stop(at, f"recursive alias '*{name}' (it refers to itself)")
        if name not in self.anchors:
            raise _Stop(at, f"undefined alias '*{name}'")
        value, size = self.anchors[name]
        self.count(size, at)
        frame = self.stack[-1] if self.stack else None
        if frame is not None and isinstance(frame.value, YMap) and frame.key is None:
            if not isinstance(value, str):
                raise _Stop(at, "a mapping key must be a string")
            frame.key, frame.key_at, frame.merge_next = value, at, False
            return
        self.add(value, at, size, None)

    def path(self) -> KeyPath:
        """Key path of the innermost open collection."""
        out: list[str | int] = []
        for parent in self.stack[:-1]:
            if isinstance(parent.value, YMap):
                out.append(parent.key if parent.key is not None else "?")
            else:
                out.append(len(parent.value))
        return tuple(out)

    def close(self, event: Any, at: Mark) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
        if isinstance(frame.value, YMap):
            if frame.key is not None:
                raise _Stop(frame.key_at, "a mapping key has no value")
            for source, at in frame.merges:
                self.merge(frame.value, source, at)
        self.add(frame.value, frame.at, frame.size, frame.anchor)

    def merge(self, target: YMap, source: Any, at: Mark) -> None:
        sources = source if isinstance(source, YList) else [source]
        for one in sources:
            if not isinstance(one, YMap):
                self.problem(at, "'<<' merges a mapping or a list of mappings, "
                                 f"not a {type_name(one)}")
                return
            for k, v in one.items():
                if k not in target:
                    target[k] = v
                    target.keys_at[k], target.values_at[k] = one.keys_at[k], one.values_at[k]

    def add(self, value: Any, at: Mark, size: int, anchor: str | None) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root, self.root_at = value, at
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.value, YList):
            frame.value.append(value)
            frame.value.items_at.append(at)
            return
        if not isinstance(frame.value, YMap) or frame.key is None:
            raise _Stop(at, "a mapping key must be a string")
        name, frame.key = frame.key, None
        if frame.merge_next:
            frame.merges.append((value, at))
        elif name in frame.value:
            self.problem(frame.key_at, f"{dotted((*self.path(), name))}: duplicate key '{name}'")
        else:
            frame.value[name] = value
            frame.value.keys_at[name], frame.value.values_at[name] = frame.key_at, at


# Event type -> handler, as plain functions: bound methods stored on the builder would make
# it (and through it the whole parsed tree) a reference cycle that only the cyclic collector
# frees, which a long-running router would otherwise pay for at every policy reload.
_HANDLERS: dict[type, Any] = {
    yaml.ScalarEvent: _Builder.scalar, yaml.AliasEvent: _Builder.alias,
    yaml.MappingStartEvent: _Builder.start, yaml.SequenceStartEvent: _Builder.start,
    yaml.MappingEndEvent: _Builder.close, yaml.SequenceEndEvent: _Builder.close,
    yaml.DocumentStartEvent: _Builder.document}


def _position(text: str, index: int) -> Mark:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _events(text: str) -> Any:
    parser = _PARSER(text)
    try:
        while parser.check_event():
            yield parser.get_event()
    finally:
        parser.dispose()


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    """libyaml's own message, except the nesting limit (1000 levels since libyaml 0.2.6).

    libyaml's scanner reads every `[`/`{` ahead while it looks for a simple key, so text
    nested past its limit fails before the builder sees level MAX_DEPTH + 1: the same
    refusal, said the same way whichever parser (or libyaml version) got there first.
    """
    text = exc.problem or exc.context or ""
    if "maximum nesting depth" in text:
        return f"nested deeper than {MAX_DEPTH} levels"
    return f"YAML syntax error: {text}"


def load_located(text: str, file: str, *, max_bytes: int = MAX_BYTES
                 ) -> tuple[Located, list[Problem]]:
    """Parse `text`; every problem comes back located, nothing is raised."""
    loc = Located(file=file, data=None)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line, col = _position(text, exc.start)
        return loc, [Problem(file, line, col, "not valid UTF-8 text (a lone surrogate)")]
    if size > max_bytes:
        return loc, [Problem(file, 1, 1, f"the file is {size} bytes, over the limit of "
                                         f"{max_bytes}")]
    builder = _Builder(file)
    try:
        for event in _events(text):
            builder.feed(event)
    except _Stop as stop:
        builder.problem(stop.mark, stop.message)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        builder.problem(at, _syntax_message(exc))
    except yaml.reader.ReaderError as exc:
        index = exc.position
        if _PARSER is not yaml.SafeLoader:  # libyaml counts bytes of the UTF-8 text
            index = len(text.encode("utf-8")[:index].decode("utf-8", "ignore"))
        line, col = _position(text, index)
        builder.problem((line, col), f"YAML error: unacceptable character "
                                     f"#x{exc.character:04x}: {exc.reason}")
    except yaml.YAMLError as exc:  # anything else PyYAML reports, on one line
        builder.problem((1, 1), "YAML error: " + " ".join(str(exc).split()))
    if builder.problems:
        return loc, builder.problems
    if builder.root is None:
        return loc, [Problem(file, 1, 1, "document is empty")]
    loc.data, loc.root_at = builder.root, builder.root_at
    return loc, []
