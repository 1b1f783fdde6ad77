"""A YAML loader for files people write: bounded in depth, nodes, aliases, scalars and numbers.

`yaml.safe_load` builds whatever a document describes. A 500-byte file of nested aliases
("billion laughs") becomes gigabytes as soon as anything walks it, 20,000 nested brackets
reach Python's recursion limit, a 5,000-digit integer makes `int()` raise ValueError, a
date like 2026-02-30 raises ValueError from `datetime`, and a repeated key silently
replaces the first. This loader refuses each of these while the document is being
composed, before anything big is built, and every error is one `YamlError` with a line
and column.

Anchors, aliases and merge keys (`<<: *defaults`) are kept, because they are ordinary
YAML, but what aliases add is counted as if it were written out and bounded
(`YamlLimits.max_alias_nodes`); an alias inside its own anchor is refused.

Events come from libyaml when PyYAML has it (three times faster than PyYAML's own parser;
it also takes tabs inside plain scalars, which PyYAML refuses); a document libyaml refuses
is read again by PyYAML's parser so that every error has PyYAML's wording.

Standard library and PyYAML only, like the rest of `apiusage.conventions`: the endpoint
catalog (read by the instrumentation and the processor) and the processor's own files use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from .errors import ConventionsError

try:
    from yaml._yaml import CParser  # libyaml: scanning and parsing in C, 3x faster
except ImportError:  # PyYAML built without libyaml
    CParser = None  # type: ignore[assignment,misc]

__all__ = ["DocumentParser", "YamlError", "YamlLimits", "describe", "load_file", "safe_load"]

# A position in the text: yaml.error.Mark from the pure-Python parser, yaml._yaml.Mark from libyaml.
AnyMark = Any

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


@dataclass(frozen=True)
class YamlLimits:
    """What one document may contain; the defaults suit data files of tens of MB."""

    max_depth: int = 64  # nested mappings and sequences, aliases expanded
    max_nodes: int = 1_000_000  # scalars, mappings and sequences, aliases expanded (~1 GiB in PyYAML)
    max_alias_nodes: int = 10_000  # nodes that aliases add to the document
    max_scalar_chars: int = 65_536  # one key or value
    max_int_digits: int = 100  # written form of one integer (Python's own limit is 4300)


class YamlError(ConventionsError, yaml.MarkedYAMLError):
    """Invalid or refused YAML: `problem` says what, `problem_mark` where; str() is one line.

    `refused` is True for a document that is valid YAML but exceeds a `YamlLimits` bound.
    """

    def __init__(self, problem: str, mark: AnyMark | None, *, refused: bool = False) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.refused = refused

    @property
    def where(self) -> str:
        """` at line L, column C` (from 1), or nothing when the position is unknown."""
        mark = self.problem_mark
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    def __str__(self) -> str:
        return f"{self.problem}{self.where}"


def _mark_at(text: str, index: int) -> Mark:
    line = text.count("\n", 0, index)
    column = index - (text.rfind("\n", 0, index) + 1)
    return Mark("<yaml>", index, line, column, None, 0)


class _Bounded(Composer, SafeConstructor):
    """A composer that counts, bounds and names (key path) what it builds; mixed into a
    parser below. Its own state is set by `_start`, since the parsers' __init__ differ."""

    if TYPE_CHECKING:  # from the parser it is mixed into

        def peek_event(self) -> Any: ...
        def get_event(self) -> Any: ...
        def check_event(self, *choices: Any) -> bool: ...
        def resolve(self, kind: type, value: Any, implicit: Any) -> str: ...

    def _start(self, limits: YamlLimits) -> None:
        self._limits = limits
        self._path: list[str] = []
        self._depth = 0
        self._deepest = 0
        self._nodes = 0
        self._alias_nodes = 0
        # anchor -> (nodes, height) of its node, aliases inside it expanded; missing while the
        # anchored node is still being composed (an alias to it then is recursive).
        self._weights: dict[str, tuple[int, int]] = {}

    def _refuse(self, problem: str, mark: AnyMark | None) -> YamlError:
        return YamlError(problem, mark, refused=True)

    def _key_path(self) -> str:
        out = ""
        for part in self._path:
            out += part if part.startswith("[") or not out else f".{part}"
        return out or "(top level)"

    def _count(self, nodes: int, mark: AnyMark | None) -> None:
        self._nodes += nodes
        if self._nodes > self._limits.max_nodes:
            raise self._refuse(f"more than {self._limits.max_nodes} values", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            weight = self._weights.get(event.anchor or "") if event.anchor in self.anchors else (0, 0)
            if weight is None:
                raise self._refuse(f"alias *{event.anchor} is inside its own anchor", event.start_mark)
            nodes, height = weight
            self._alias_nodes += nodes
            if self._alias_nodes > self._limits.max_alias_nodes:
                raise self._refuse(
                    f"aliases add more than {self._limits.max_alias_nodes} values (alias *{event.anchor})",
                    event.start_mark,
                )
            self._check_depth(self._depth + height, event.start_mark)
            self._count(nodes, event.start_mark)
            return super().compose_node(parent, index)  # undefined aliases: PyYAML's error
        before, deepest = self._nodes, self._deepest
        self._count(1, event.start_mark)
        anchor = event.anchor
        if anchor is None or anchor in self.anchors:  # a duplicate anchor: PyYAML's error
            return super().compose_node(parent, index)
        self._deepest = self._depth
        node = super().compose_node(parent, index)
        self._weights[anchor] = (self._nodes - before, self._deepest - self._depth)
        self._deepest = max(deepest, self._deepest)
        return node

    def _check_depth(self, depth: int, mark: AnyMark | None) -> None:
        if depth > self._limits.max_depth:
            raise self._refuse(f"nested deeper than {self._limits.max_depth} levels", mark)
        self._deepest = max(self._deepest, depth)

    def compose_scalar_node(self, anchor: Any) -> Any:
        event = self.peek_event()
        if len(event.value) > self._limits.max_scalar_chars:
            raise self._refuse(
                f"{self._key_path()}: a value of {len(event.value)} characters "
                f"(at most {self._limits.max_scalar_chars})",
                event.start_mark,
            )
        node = super().compose_scalar_node(anchor)
        # Refused here, where the key path is known, before int() meets its 4300-digit limit.
        if node.tag == _INT_TAG and len(node.value) > self._limits.max_int_digits:
            raise self._refuse(
                f"{self._key_path()}: an integer of {len(node.value)} characters "
                f"(at most {self._limits.max_int_digits})",
                node.start_mark,
            )
        return node

    def compose_sequence_node(self, anchor: Any) -> Any:
        start = self.get_event()
        self._check_depth(self._depth + 1, start.start_mark)
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        self._depth += 1
        while not self.check_event(yaml.SequenceEndEvent):
            self._path.append(f"[{len(node.value)}]")
            node.value.append(self.compose_node(node, len(node.value)))
            self._path.pop()
        self._depth -= 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        start = self.get_event()
        self._check_depth(self._depth + 1, start.start_mark)
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        self._depth += 1
        first_seen: dict[Any, Mark] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key = self.compose_node(node, None)
            name = key.value if isinstance(key, ScalarNode) else "(complex key)"
            self._path.append(str(name))
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                self._check_duplicate(key, first_seen)
            value = self.compose_node(node, key)
            self._path.pop()
            node.value.append((key, value))
        self._depth -= 1
        node.end_mark = self.get_event().end_mark
        return node

    def _check_duplicate(self, key: ScalarNode, first_seen: dict[Any, Mark]) -> None:
        # Compare keys as constructed (`1` and `0x1` are one key), as the dict will.
        constructed = self.construct_object(key)
        try:
            first = first_seen.setdefault(constructed, key.start_mark)
        except TypeError:  # unhashable: PyYAML reports it when constructing
            return
        if first is not key.start_mark:
            raise YamlError(
                f"duplicate key {self._key_path()} (first at line {first.line + 1})", key.start_mark
            )

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # a date like 2026-02-30, an int beyond Python's
            raise YamlError(f"cannot read {_short(node.value)}: {exc}", node.start_mark) from None


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else f"this {type(value).__name__}"
    return text if len(text) <= 60 else f"{text[:50]}… ({len(value)} characters)"


def _one_line(exc: yaml.YAMLError, text: str) -> YamlError:
    if isinstance(exc, yaml.reader.ReaderError):  # a control character (a binary file)
        return YamlError(str(exc).split("\n", 1)[0], _mark_at(text, exc.position))
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and not exc.context.startswith("while"):
            problem = f"{exc.context} at line {exc.context_mark.line + 1}; {problem}"
        return YamlError(problem, exc.problem_mark or exc.context_mark)
    return YamlError(str(exc).split("\n", 1)[0], None)


class _PyLoader(_Bounded, yaml.SafeLoader):
    def __init__(self, stream: str, limits: YamlLimits) -> None:
        yaml.SafeLoader.__init__(self, stream)  # its reader refuses control characters
        self._start(limits)


if CParser is not None:

    class _CLoader(_Bounded, CParser, Resolver):
        def __init__(self, stream: str, limits: YamlLimits) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)
            self._start(limits)


def safe_load(text: str, limits: YamlLimits | None = None) -> Any:
    """`yaml.safe_load` within `limits`; raises YamlError (a yaml.YAMLError) with one-line str()."""
    limits = limits or YamlLimits()
    if CParser is not None:
        loader = _CLoader(text, limits)
        try:
            return loader.get_single_data()
        except YamlError:
            raise  # a bound or a duplicate key: the same words and position either way
        except (yaml.YAMLError, RecursionError):
            # Read it again in Python for PyYAML's own messages (libyaml words them differently).
            pass
        finally:
            loader.dispose()
    return _py_load(text, limits)


def _py_load(text: str, limits: YamlLimits) -> Any:
    loader = None
    try:
        loader = _PyLoader(text, limits)
        return loader.get_single_data()
    except YamlError:
        raise
    except yaml.YAMLError as exc:
        raise _one_line(exc, text) from None
    except RecursionError:  # not reachable within max_depth; kept so no input can crash a caller
        raise YamlError("too deeply nested", None, refused=True) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: Any, kind: str, error: type[ConventionsError]) -> Any:
    """A YAML file's document through safe_load; `error` (naming the file) for a file that is
    missing, a directory, unreadable, not UTF-8 or not valid YAML. `kind`: "catalog" and the like."""
    from pathlib import Path

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{source}: {kind} file not found") from None
    except IsADirectoryError:
        raise error(f"{source}: is a directory, not {_article(kind)} {kind} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"{source}: cannot read {kind} file: {reason}") from None
    try:
        return safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{source}: not valid YAML{where}: {problem}") from None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def describe(value: Any) -> str:
    """What a value is, for an error message: "a mapping", "a list", "nothing", "int"."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class DocumentParser:
    """What the parsers of the project's YAML files share: errors that name the file and the key
    path, and a top level that is a mapping of one section and an optional `version: 1`."""

    error: type[ConventionsError] = ConventionsError

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ConventionsError:
        where = f"{self.source}: {path}: " if path else f"{self.source}: "
        return self.error(where + message)

    def section(self, data: Any, key: str, what: str) -> Any:
        """The `key` section of the top-level mapping, after refusing any other key and any
        version but 1; `what` names the file in messages ("catalog")."""
        if not isinstance(data, dict):
            raise self.fail("", f"expected a mapping with {_article(key)} '{key}' key (got {describe(data)})")
        for name in data:
            if name not in (key, "version"):
                raise self.fail(str(name), f"unknown key (allowed: {key}, version)")
        if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
            raise self.fail("version", f"unsupported {what} version (got {data['version']!r})")
        return data.get(key)
