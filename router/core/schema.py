"""Declarative schema plumbing shared by the policy, feed and scenario models.

Every model derives from `Schema`: frozen, unknown keys refused, NaN and infinity
refused. Scalars are strict (`Num`, `Int`, `Bool`, `Text`: a quoted "30" is not a
number and `true` is not 1) while containers stay lax, so one model validates values
read from YAML, from JSON and built in Python alike. A model writes each default once,
on its field, and states its cross-field rules as validators that raise `RuleError`
naming the key each broken rule is about.

`findings` turns a pydantic `ValidationError` into `Finding`s: a key path, a message
in the project's words ("must be greater than 0, got -2", "unknown key 'wieght' (did
you mean 'weight'?)") and whether the key or its value is meant, which a loader
places at FILE:LINE:COL. Nothing here reads files or clocks.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic_core import InitErrorDetails

KeyPath = tuple[str | int, ...]

# Integers past this many digits are refused before Python converts them: a 5,000-digit
# literal would otherwise cost quadratic time or raise, and no policy or feed value
# needs more than a float holds exactly (2**53 is 16 digits).
MAX_INT_DIGITS = 15

Num = Annotated[float, Strict()]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), Field(min_length=1)]
Tags = frozenset[Text]


def _null_is_empty(value: Any) -> Any:
    # A section whose keys are all commented out parses as null: it means "all defaults".
    return {} if value is None else value


# On a section field (`Annotated[Section, Sect]`): an empty section means its defaults.
Sect = BeforeValidator(_null_is_empty)


class Schema(BaseModel):
    """Base of every declarative model: frozen, closed, finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False,
                              arbitrary_types_allowed=False, validate_default=False)


@dataclass(frozen=True, slots=True)
class Breach:
    """One broken rule: where (relative to the model checking it) and why.

    `message` may say `{ref}`; a loader renders `ref` (a path relative to the same
    model) there, as "line N" when it knows the file.
    """

    path: KeyPath
    message: str
    ref: KeyPath | None = None
    key: bool = False  # about the key itself (a duplicate), not its value


class RuleError(ValueError):
    """Raised by a model validator: every rule it found broken, each with its key."""

    def __init__(self, breaches: Iterable[Breach]) -> None:
        """Carry the breaches (at least one)."""
        self.breaches = tuple(breaches)
        super().__init__("; ".join(b.message for b in self.breaches))


def enforce(breaches: Sequence[Breach]) -> None:
    """Raise `RuleError` when any rule is broken."""
    if breaches:
        raise RuleError(breaches)


@dataclass(frozen=True, slots=True)
class Finding:
    """One validation message for the key path `path`; `key` places it on the key itself."""

    path: KeyPath
    message: str
    ref: KeyPath | None = None
    key: bool = False

    def text(self, render_ref: typing.Callable[[KeyPath], str] | None = None) -> str:
        """`path: message`, with `{ref}` rendered by `render_ref` (default: the dotted path)."""
        message = self.message
        if self.ref is not None:
            message = message.replace("{ref}", (render_ref or dotted)(self.ref))
        return f"{dotted(self.path)}: {message}" if self.path else message


def dotted(path: KeyPath) -> str:
    """`edge.nodes[2].weight` style rendering of a key path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def type_name(value: Any) -> str:
    """A user-facing name for the type of `value`."""
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"),
                       (list, "list"), (tuple, "list"), (dict, "mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _got(value: Any) -> str:
    if isinstance(value, dict | list | tuple) or value is None:
        return type_name(value)
    shown = repr(value)
    return f"{type_name(value)} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _strip(annotation: Any) -> Any:
    """The annotation under `Annotated[...]` and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def annotation_at(root: type[BaseModel], path: KeyPath) -> Any:
    """The declared type at `path` below `root`, or None when the path leaves the schema."""
    current: Any = root
    for part in path:
        current = _strip(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif origin in (tuple, list, frozenset, set) and isinstance(part, int):
            current = get_args(current)[0]
        elif origin in (dict, Mapping) and isinstance(part, str):
            current = get_args(current)[1]
        else:
            return None
    return _strip(current)


def _choices(root: type[BaseModel], path: KeyPath) -> tuple[str, ...]:
    found = annotation_at(root, path)
    if get_origin(found) is Literal:
        return tuple(str(a) for a in get_args(found))
    return ()


def _fields(root: type[BaseModel], path: KeyPath) -> tuple[str, ...]:
    found = annotation_at(root, path)
    if isinstance(found, type) and issubclass(found, BaseModel):
        return tuple(found.model_fields)
    return ()


_BARE_EXPONENT = re.compile(r"([+-]?[0-9]+)([eE][+-]?[0-9]+)")
_TYPE_MESSAGES = {
    "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer", "float_type": "expected a number",
    "float_parsing": "expected a number", "bool_type": "expected true or false",
    "bool_parsing": "expected true or false", "string_type": "expected a non-empty string",
    "string_too_short": "expected a non-empty string", "dict_type": "expected a mapping",
    "model_type": "expected a mapping", "model_attributes_type": "expected a mapping",
    "mapping_type": "expected a mapping", "list_type": "expected a list",
    "tuple_type": "expected a list", "frozen_set_type": "expected a list",
    "set_type": "expected a list", "iterable_type": "expected a list",
}
_BOUNDS = {"greater_than": ("gt", "must be greater than"),
           "greater_than_equal": ("ge", "must be at least"),
           "less_than": ("lt", "must be less than"),
           "less_than_equal": ("le", "must be at most")}


def _message(err: Mapping[str, Any], root: type[BaseModel], path: KeyPath) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in ("int_type", "int_from_float") and isinstance(value, float):
        return f"expected an integer, got {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing"):
        text = f"expected a number, got {_got(value)}"
        if isinstance(value, str) and _BARE_EXPONENT.fullmatch(value):
            # YAML 1.1 (PyYAML) reads an exponent only after a decimal point as a number
            fixed = _BARE_EXPONENT.sub(r"\1.0\2", value)
            text += f" (YAML reads {value} as text; write {fixed})"
        return text
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, got {_got(value)}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"{words} {ctx[name]:.15g}, got {value!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind == "literal_error":
        options = _choices(root, path)
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        return f"must be one of {', '.join(options)}, got {_got(value)}{hint}"
    if kind in ("too_short", "too_long"):
        return (f"expected {ctx.get('min_length', ctx.get('max_length'))} items, "
                f"got {ctx.get('actual_length')}")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(err.get("msg", kind))


def findings(exc: ValidationError, root: type[BaseModel]) -> list[Finding]:
    """Every error in `exc` (raised validating `root`) as a `Finding`, in the project's words."""
    out: list[Finding] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        path: KeyPath = tuple(err["loc"])
        if kind == "default_factory_not_called":
            continue  # only ever follows the error in the field its default derives from
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, RuleError):
            out += [Finding((*path, *b.path), b.message,
                            None if b.ref is None else (*path, *b.ref), b.key)
                    for b in error.breaches]
        elif kind == "missing":
            out.append(Finding(path[:-1], f"missing required key '{path[-1]}'"))
        elif kind == "extra_forbidden":
            name = str(path[-1])
            hint = did_you_mean(name, _fields(root, path[:-1]))
            out.append(Finding(path, f"unknown key '{name}'{hint}", key=True))
        elif path and path[-1] == "[key]":
            out.append(Finding(path[:-1], f"key: {_message(err, root, path)}", key=True))
        else:
            out.append(Finding(path, _message(err, root, path)))
    return out


def reraise(title: str, exc: ValidationError | None, breaches: Sequence[Breach]) -> None:
    """Raise one `ValidationError` holding `exc`'s errors and `breaches` (a wrap validator's
    way to report rules it checked on raw data together with the fields' own errors)."""
    details: list[InitErrorDetails] = []
    if exc is not None:
        for err in exc.errors(include_url=False):
            detail: InitErrorDetails = {"type": err["type"], "loc": err["loc"],
                                        "input": err.get("input")}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            details.append(detail)
    for breach in breaches:
        details.append({"type": "value_error", "loc": (), "input": None,
                        "ctx": {"error": RuleError([breach])}})
    if details:
        raise ValidationError.from_exception_data(title, details)


def _shown(value: Any) -> str:
    if isinstance(value, frozenset | tuple | list):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _rule(info: Any, inner: Any) -> str:
    """The bounds (`> 0`, `0..1`) or choices of a field, from its declaration."""
    if get_origin(inner) is Literal:
        return " | ".join(str(a) for a in get_args(inner))
    found: dict[str, Any] = {}
    for m in info.metadata:
        for sign, kind, attr in ((">", Gt, "gt"), (">=", Ge, "ge"), ("<", Lt, "lt"),
                                 ("<=", Le, "le")):
            if isinstance(m, kind):
                found[sign] = getattr(m, attr)
    if ">=" in found and "<=" in found:
        return f"{found['>=']:g}..{found['<=']:g}"
    return ", ".join(f"{sign} {v:g}" for sign, v in found.items())


def key_reference(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, default, bounds, description) for every key below `model`, read off the model:
    the one place defaults are written, so a reference table cannot disagree with it."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _strip(info.annotation)
        if get_origin(inner) in (tuple, list) and get_args(inner):
            inner, key = _strip(get_args(inner)[0]), key + "[]"
        elif get_origin(inner) in (dict, Mapping) and get_args(inner):
            inner, key = _strip(get_args(inner)[1]), key + ".NAME"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            rows += key_reference(inner, key + ".")
            continue
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "(see description)"
        else:
            default = _shown(info.default)
        rows.append((key, default, _rule(info, inner), info.description or ""))
    return rows
