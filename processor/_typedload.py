"""Turn a parsed YAML tree into frozen dataclasses, collecting every problem with its key path.

Kept apart from `config.py` so the schema there reads as plain data; this module
knows nothing about apiusage.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import re
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

__all__ = ["Bounds", "ByteSize", "Duration", "Problems", "bounded", "load_dataclass"]


class Duration(float):
    """Seconds; written in YAML as a number or as `500ms`, `30s`, `15m`, `1h`, `7d`."""


class ByteSize(int):
    """Bytes; written in YAML as a number or as `512KiB`, `64MiB`, `1GiB`."""


# Digit counts are capped so that int() never meets Python's int-to-str limit (ValueError).
_DURATION = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d{1,30})\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


@dataclass(frozen=True)
class Bounds:
    """A numeric field's allowed range, declared beside the field (see `bounded`).

    Checked for every int, float, Duration and ByteSize field; a field without its own
    Bounds gets `DEFAULT_BOUNDS` for its type, so nothing numeric goes unchecked.
    """

    min: float | None = None  # inclusive: "must be at least MIN"
    above: float | None = None  # exclusive: "must be > ABOVE"
    max: float | None = None  # inclusive: "must be at most MAX"
    min_why: str = ""  # appended to the lower-bound message, e.g. " (Retry-After counts seconds)"
    max_why: str = ""
    show_value: bool = False  # append "(got V)" to the lower-bound message too

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(path, f"must be a finite number (got {value})")
            return
        if self.above is not None and not value > self.above:
            problems.add(
                path,
                f"must be > {_show(value, self.above)}{self.min_why}"
                + (f" (got {_show(value, value)})" if self.show_value else ""),
            )
        elif self.min is not None and value < self.min:
            problems.add(
                path,
                f"must be at least {_show(value, self.min)}{self.min_why}"
                + (f" (got {_show(value, value)})" if self.show_value else ""),
            )
        elif self.max is not None and value > self.max:
            problems.add(
                path, f"must be at most {_show(value, self.max)}{self.max_why} (got {_show(value, value)})"
            )


INT32_MAX = (1 << 31) - 1
#: The bounds of a numeric field that declares none: int32 (what C libraries, gRPC options
#: and database columns take), and 100 years for durations (thread timeouts overflow past 292).
DEFAULT_BOUNDS: dict[type, Bounds] = {
    int: Bounds(max=INT32_MAX),
    float: Bounds(),
    Duration: Bounds(min=0, max=36_500 * 86400.0),
    ByteSize: Bounds(min=0, max=INT32_MAX),
}


def bounded(default: Any, **bounds: Any) -> Any:
    """A dataclass field with `default` and `Bounds(**bounds)`; absent limits fall back to the
    type's DEFAULT_BOUNDS (so `bounded(5, min=1)` still has the int32 maximum)."""
    Bounds(**bounds)  # a misspelt limit fails when the schema is imported, not when a file is read
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def _show(kind: Any, value: float) -> str:
    """`value` written as the field's YAML would write it: 100ms, 1s, 7d, 64MiB, 42."""
    if isinstance(kind, Duration):
        if value and value < 1:
            return f"{value * 1000:g}ms"
        if value >= 86400 and value % 86400 == 0:
            return f"{value / 86400:g}d"
        return f"{value:g}s"
    if isinstance(kind, ByteSize) and value and value % (1 << 20) == 0:
        return f"{int(value) >> 20}MiB"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds_of(f: dataclasses.Field, tp: Any) -> Bounds | None:
    if get_origin(tp) in (Union, types.UnionType):
        tp = next((a for a in get_args(tp) if a is not type(None)), None)
    base = DEFAULT_BOUNDS.get(tp)
    if base is None:
        return None
    return dataclasses.replace(base, **f.metadata.get("bounds", {}))


class Problems:
    """Accumulates `path: message` lines so one run reports every mistake at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path or '(top level)'}: {message}")

    def __bool__(self) -> bool:
        return bool(self.lines)


def _describe(value: Any) -> str:
    if isinstance(value, str) and len(value) > 60:
        # A whole 60 KiB value in an error line helps nobody; its start and size do.
        return f"str {value[:40]!r}… ({len(value)} characters)"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def load_dataclass(cls: type, data: Any, path: str, problems: Problems) -> Any:
    """Build `cls` from `data`; unknown keys and wrong types are reported, defaults fill gaps."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"must be a mapping (got {_describe(data)})")
        return cls()
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            allowed = ", ".join(sorted(fields))
            problems.add(_join(path, key), f"unknown key{suggestion}; expected one of: {allowed}")
            continue
        kwargs[key] = _convert(hints[key], value, _join(path, key), problems)
    try:
        obj = cls(**{k: v for k, v in kwargs.items() if v is not _INVALID})
    except (TypeError, ValueError) as exc:
        problems.add(path, str(exc))
        return cls()
    validate = getattr(obj, "_validate", None)
    if validate is not None:
        validate(path, problems)
    for f in fields.values():
        bounds = _bounds_of(f, hints[f.name])
        value = getattr(obj, f.name)
        if bounds is not None and value is not None and not isinstance(value, bool):
            bounds.check(value, _join(path, f.name), problems)
    return obj


_INVALID = object()


def _convert(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, problems)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return load_dataclass(tp, value, path, problems)
    if origin in (tuple, list):
        item = get_args(tp)[0]
        if not isinstance(value, list):
            problems.add(path, f"must be a list (got {_describe(value)})")
            return _INVALID
        items = [_convert(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(i for i in items if i is not _INVALID)
    if origin in (dict, collections.abc.Mapping):
        key_t, val_t = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping (got {_describe(value)})")
            return _INVALID
        out = {}
        for k, v in value.items():
            converted = _convert(val_t, v, _join(path, k), problems)
            if converted is not _INVALID:
                out[str(k)] = converted
        return types.MappingProxyType(out)
    if tp is Any:
        return value
    if tp is Duration:
        return _duration(value, path, problems)
    if tp is ByteSize:
        return _size(value, path, problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.add(path, f"must be true or false (got {_describe(value)})")
        return _INVALID
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.add(path, f"must be an integer (got {_describe(value)})")
        return _INVALID
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.add(path, f"must be a number (got {_describe(value)})")
        return _INVALID
    if tp is str:
        if isinstance(value, str):
            return value
        problems.add(path, f"must be a string (got {_describe(value)})")
        return _INVALID
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in the schema, not input


def _duration(value: Any, path: str, problems: Problems) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        problems.add(path, f"must be a duration such as 30s, 15m, 1h or 7d (got {_describe(value)})")
        return _INVALID
    if not math.isfinite(seconds):
        problems.add(path, f"must be a finite duration (got {_describe(value)})")
        return _INVALID
    if seconds < 0:
        problems.add(path, f"must not be negative (got {value!r})")
        return _INVALID
    return Duration(seconds)


def _size(value: Any, path: str, problems: Problems) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        problems.add(path, f"must be a size in bytes or like 512KiB, 64MiB (got {_describe(value)})")
        return _INVALID
    return ByteSize(size)
