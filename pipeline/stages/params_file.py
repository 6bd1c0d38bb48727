"""Reading `params.yaml` strictly and building typed, frozen config from it.

The reader is PyYAML's safe loader made strict: YAML aliases (`*name`) are refused (an alias
bomb would expand into gigabytes), a key given twice in one mapping is an error (the second
would silently win), and `1e-3` is a number as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a
string), so a quoted number (`n: "1000"`) can be refused instead of quietly converted.
`build` turns the raw mapping into a dataclass, checking keys and types, then runs the
dataclass's own `check(path)`. Every problem is one `ConfigError` line naming the key path and
a short form of the bad value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.errors import UserError

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 6, 6, 3
_MAX_SHOWN = 200  # characters of a bad value an error line shows
# Keys that no longer exist, by key path, and what to do instead: refused with this reason
# rather than "unknown key", and never silently ignored (a knob that does nothing misleads).
_GONE = (
    "was removed: the sweep's objective is now the share of fits not recovered, then the "
    "fewest steps, bounded without a penalty (README, 'The objective'); delete this key"
)
MOVED = {
    "report.blog": "has moved to a top-level `blog:` block (same keys)",
    "sweep.diverged_penalty": _GONE,
    "tune.diverged_penalty": _GONE,
}
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class ConfigError(UserError):
    """A bad `params.yaml`: names the key path and the bad value."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases or duplicate keys, with YAML 1.2 exponent floats."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let PyYAML report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def read_yaml(path: Path) -> dict:
    """The raw mapping of a params file.

    Raises:
        ConfigError: missing or unreadable file, bad YAML (with the line and the problem),
            an alias, a duplicate key, or a document that is not a mapping.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a params file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read params file ({type(err).__name__})") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None)
        detail = f": {problem}" if problem else ""
        raise ConfigError(f"{path}: not valid YAML{where}{detail}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits (Python's int limit)
        raise ConfigError(f"{path}: not valid YAML: {str(err)[:120]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of blocks (seed, data, ...)")
    return raw


def key_text(key: Any) -> str:
    """A mapping key as it appears in an error's key path: plain names as they are, anything
    else (line breaks, odd characters, non-strings, very long names) as a bounded repr."""
    if isinstance(key, str) and 0 < len(key) <= 40 and re.fullmatch(r"[\w.-]+", key):
        return key
    return _SHORT.repr(key)


def short(value: Any) -> str:
    """A bounded repr of a value for an error line (nested or huge values are elided; a repr
    still longer than `_MAX_SHOWN` characters, e.g. a list of whole scenarios, is cut)."""
    text = _SHORT.repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + " ..."


def fail(path: str, problem: str, value: Any) -> typing.NoReturn:
    """Raise the one-line `ConfigError` for key `path`."""
    raise ConfigError(f"{path}: {problem}, got {short(value)}")


def key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def build(cls: type, raw: Any, path: str):
    """Build dataclass `cls` from raw YAML data, checking keys and types, then `check()`."""
    where = path or "params"
    if not isinstance(raw, dict):
        fail(where, "must be a mapping", raw)
    fields = {key_of(f): f for f in dataclasses.fields(cls)}
    for key in raw:
        moved = MOVED.get(f"{path}.{key}" if path else str(key))
        if moved:
            fail(f"{path}.{key}", moved, raw[key])
        if key not in fields:
            fail(
                f"{path}.{key_text(key)}" if path else key_text(key),
                f"unknown key (allowed: {sorted(fields)})",
                raw[key],
            )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in fields.items():
        sub = f"{path}.{key}" if path else key
        if key not in raw:
            has_default = f.default is not dataclasses.MISSING
            if not has_default and f.default_factory is dataclasses.MISSING:
                fail(sub, "is required", None)
            continue
        kwargs[f.name] = coerce(hints[f.name], raw[key], sub)
    obj = cls(**kwargs)
    obj.check(path)
    return obj


def coerce(tp: Any, value: Any, path: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(inner, value, path)
    if origin is Literal:
        if value not in args:
            fail(path, f"must be one of {list(args)}", value)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            fail(path, "must be a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(path, f"must be a list of {len(args)}", value)
        return tuple(coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is dict:
        if not isinstance(value, dict):
            fail(path, "must be a mapping", value)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, "must be true or false", value)
        return value
    if tp is int:
        value = parse_number(value, path, "must be an integer")
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fail(path, "must be an integer", value)
        return value
    if tp is float:
        value = parse_number(value, path, "must be a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(path, "must be a number", value)
        try:
            number = float(value)
        except OverflowError:
            fail(path, "must be a number within float range", value)
        if math.isnan(number):
            fail(path, "must be a number", value)
        return number
    if tp is str:
        if not isinstance(value, str):
            fail(path, "must be a string", value)
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def parse_number(value: Any, path: str, problem: str) -> Any:
    """A number as read (the strict reader already reads `1e-3` as one); text is refused."""
    if isinstance(value, str):
        fail(path, f"{problem} (remove the quotes if it is one)", value)
    return value


def as_raw(obj: Any) -> Any:
    """A dataclass back to plain YAML-like data (keys as written in params.yaml)."""
    if dataclasses.is_dataclass(obj):
        # A field marked `omit_none` is left out while None: adding an optional key to a block
        # leaves the hash of params that do not use it (and the stamps of their files) as it was.
        return {key_of(f): as_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_none") and getattr(obj, f.name) is None)}  # fmt: skip
    if isinstance(obj, tuple):
        return [as_raw(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_raw(v) for k, v in obj.items()}
    return obj


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_name(path: str, name: str) -> None:
    """Names that become folders, file names, MLflow tags and filter strings: 1-100 letters,
    digits, '-', '_' or '.', not only dots (so never a path outside the work directory, and
    never a quote that could close a filter string)."""
    if not (0 < len(name) <= 100 and set(name) <= _NAME_CHARS and set(name) != {"."}):
        fail(path, "must be 1-100 letters, digits, '-', '_' or '.', not only dots", name)
