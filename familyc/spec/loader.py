"""YAML text -> plain JSON-like data, with the source position of every key and value.

Why not `yaml.safe_load`: a spec must be validated against a JSON Schema and every problem
reported as FILE:LINE:COL, so we compose the YAML into nodes (which carry marks) and build
the data ourselves. Doing it ourselves also lets us normalize YAML's surprises *before* the
schema sees them, deliberately and in one place:

- explicit tags (`!!python/object`, `!custom`) are refused: a spec is plain data, and no tag
  may ever build a Python object;
- duplicate keys are errors (PyYAML silently keeps the last one);
- keys must be strings: YAML 1.1 reads `on:` as the boolean true and `1:` as an integer;
- `.inf` and `.nan` are refused: NaN passes every `minimum`/`maximum` check in a schema;
- dates (`2026-01-01`) stay the text they were written as;
- `1e9` is *not* a number in YAML 1.1 (its float needs a dot), so it arrives as the string
  "1e9"; `familyc.spec.numbers` then parses such text in every numeric field, by the schema;
- merge keys (`<<`) are refused rather than half-supported;
- aliases are expanded, with a cap on the expanded size (an alias "billion laughs" bomb),
  and nesting depth is capped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from familyc.errors import Diagnostic, SpecError

PathT = tuple[str | int, ...]

MAX_DEPTH = 32
"""A family spec nests about 5 levels deep; 32 leaves room and stops pathological input."""
MAX_VALUES = 100_000
"""A spec has hundreds of values; an alias bomb expands to billions."""

_YAML = "tag:yaml.org,2002:"
_ALLOWED_SCALAR_TAGS = {f"{_YAML}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "null": "null",
               "timestamp": "a date"}
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 11: "VT", 12: "FF", 27: "ESC", 127: "DEL", 0xFFFE: "a noncharacter",
                  0xFFFF: "a noncharacter"}


def _tag(tag: str) -> str:
    """A tag as the user wrote it: `tag:yaml.org,2002:python/object` -> `!!python/object`."""
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


def _character(char: str) -> str:
    code = ord(char)
    name = _CONTROL_NAMES.get(code, "a control character")
    return f"U+{code:04X} ({name})"
Fail = Callable[["Position", str, str, str], SpecError]
"""Makes the SpecError of one problem at a position: (position, message, hint, code)."""
_CONSTRUCTOR = yaml.SafeLoader(stream="")  # only its construct_yaml_* scalar methods are used


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A parsed YAML document and where each of its parts came from."""

    file: str
    data: Any
    values: dict[PathT, Position] = field(default_factory=dict)
    """Position of the value at each path."""
    keys: dict[PathT, Position] = field(default_factory=dict)
    """Position of the key that introduced the value at each path (mappings only)."""
    containers: frozenset[PathT] = frozenset()
    """Paths whose value is a mapping or a list."""

    def locate(self, path: PathT, *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that has one.

        A problem with a whole section (a mapping or list under a key) is shown at its key,
        `training:`, rather than at the section's first entry."""
        probe = tuple(path)
        if probe in self.containers and probe in self.keys:
            return self.keys[probe]
        table = self.keys if key else self.values
        while probe:
            if probe in table:
                return table[probe]
            if not key and probe in self.keys:
                return self.keys[probe]
            probe = probe[:-1]
        return self.values.get((), Position(1, 1))

    def diagnostic(
        self, path: PathT, message: str, *, code: str, hint: str = "", key: bool = False
    ) -> Diagnostic:
        pos = self.locate(path, key=key)
        return Diagnostic(
            code=code, file=self.file, path=json_path(path), line=pos.line, col=pos.col,
            message=message, hint=hint,
        )


_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(path: PathT) -> str:
    """`("members", 0, "dim")` -> `$.members[0].dim`; odd keys are quoted: `$['a b']`."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


def _position(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _offset_position(text: str, offset: int) -> Position:
    line = text.count("\n", 0, offset) + 1
    return Position(line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


class _Builder:
    """Turns composed YAML nodes into data, collecting every problem instead of stopping at one."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[PathT, Position] = {}
        self.keys: dict[PathT, Position] = {}
        self.problems: list[Diagnostic] = []
        self.containers: set[PathT] = set()
        self.count = 0

    def problem(self, node_or_pos: Any, path: PathT, message: str, hint: str = "") -> None:
        pos = node_or_pos if isinstance(node_or_pos, Position) else _position(node_or_pos.start_mark)
        self.problems.append(
            Diagnostic(code="yaml", file=self.file, path=json_path(path), line=pos.line,
                       col=pos.col, message=message, hint=hint)
        )

    def build(self, node: yaml.Node, path: PathT, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooLarge(node)
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        self.values.setdefault(path, _position(node.start_mark))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.containers.add(path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != f"{_YAML}seq":
                self.problem(node, path, f"YAML tag {_tag(node.tag)} is not allowed",
                             "a spec is plain data: remove the tag")
                return None
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)  # the composer makes only these three kinds of node
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: PathT, depth: int) -> dict[str, Any] | None:
        if node.tag != f"{_YAML}map":
            self.problem(node, path, f"YAML tag {_tag(node.tag)} is not allowed",
                         "a spec is plain data: remove the tag")
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_YAML}merge":
                self.problem(key_node, path, "YAML merge keys (<<) are not supported",
                             "write the keys out, or use an anchor for a whole value")
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = path + (key,)
            if key in out:
                first = self.keys[child]
                self.problem(key_node, child,
                             f"duplicate key {key!r} (first given at line {first.line}, column {first.col})",
                             "keep one of them: YAML would silently use the last")
                continue
            self.keys[child] = _position(key_node.start_mark)
            out[key] = self.build(value_node, child, depth + 1)
        return out

    def _key(self, node: yaml.Node, path: PathT) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, "a mapping key must be a plain string, not a list or mapping")
            return None
        if node.tag == f"{_YAML}str":
            return str(node.value)
        if node.tag in _ALLOWED_SCALAR_TAGS:
            self.problem(node, path + (node.value,),
                         f"key {node.value!r} is read by YAML as {_TYPE_WORDS[node.tag.removeprefix(_YAML)]}, "
                         "not a string", f"quote it: '{node.value}'")
        else:
            self.problem(node, path, f"YAML tag {_tag(node.tag)} is not allowed", "remove the tag")
        return None

    def _scalar(self, node: yaml.ScalarNode, path: PathT) -> Any:
        tag = node.tag
        if tag not in _ALLOWED_SCALAR_TAGS:
            self.problem(node, path, f"YAML tag {_tag(tag)} is not allowed",
                         "a spec is plain data: remove the tag")
            return None
        if tag == f"{_YAML}str" or tag == f"{_YAML}timestamp":
            return node.value
        if tag == f"{_YAML}null":
            return None
        if tag == f"{_YAML}bool":
            return _CONSTRUCTOR.construct_yaml_bool(node)
        if tag == f"{_YAML}int":
            return _CONSTRUCTOR.construct_yaml_int(node)
        value = _CONSTRUCTOR.construct_yaml_float(node)
        if value != value or value in (float("inf"), float("-inf")):
            self.problem(node, path, f"{node.value!r} is not a finite number", "write a finite number")
            return None
        return value


def _syntax_error(exc: yaml.MarkedYAMLError, fail: Fail) -> SpecError:
    """PyYAML's parser messages, located where the problem is and explained."""
    mark = exc.problem_mark or exc.context_mark
    pos = _position(mark) if mark is not None else Position(1, 1)
    problem = exc.problem or "malformed YAML"
    context = exc.context or ""
    hint = ""
    if exc.context_mark is not None and context:
        opened = _position(exc.context_mark)
        if "flow mapping" in context or "flow sequence" in context:
            bracket = "{" if "mapping" in context else "["
            closing = "}" if bracket == "{" else "]"
            hint = (f"the '{bracket}' at line {opened.line}, column {opened.col} is not closed: "
                    f"add '{closing}', or a ',' between items")
        else:
            hint = f"{context} that starts at line {opened.line}, column {opened.col}"
    if "block" in problem or "indentation" in problem or "mapping values are not allowed" in problem:
        extra = "check the indentation: the keys of one mapping start in the same column"
        hint = f"{hint}; {extra}" if hint else extra
    if "found character '\\t'" in problem or "\\t" in problem:
        hint = "YAML does not allow tabs for indentation: use spaces"
    return fail(pos, f"YAML syntax error: {problem}", hint, "yaml-syntax")


class _TooDeep(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def load_yaml(raw: bytes | str, file: str) -> LoadedDocument:
    """Parse one YAML document; raise SpecError listing every problem found while reading."""

    def fail(pos: Position, message: str, hint: str = "", code: str = "yaml") -> SpecError:
        return SpecError([Diagnostic(code=code, file=file, path="$", line=pos.line, col=pos.col,
                                     message=message, hint=hint)])

    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            prefix = raw[: exc.start].decode("utf-8", errors="replace")
            raise fail(_offset_position(prefix, len(prefix)),
                       f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                       "a spec is a UTF-8 YAML file; is this the right file?", "encoding") from None
    else:
        text = raw
    if not text.strip():
        raise fail(Position(1, 1), "the spec is empty",
                   "start from specs/tiny.yaml, or run `familyc schema` for the format", "empty")

    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, fail) from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise fail(_offset_position(text, exc.position),
                   f"character {_character(char)} is not allowed in YAML text",
                   "delete it; if the file is binary, it is not a spec", "encoding") from None
    except yaml.YAMLError as exc:  # any other reader/scanner problem without a mark
        raise fail(Position(1, 1), f"YAML error: {exc}", "", "yaml-syntax") from None
    except RecursionError:
        raise fail(Position(1, 1), "the document nests too deeply to read",
                   f"a spec nests about 5 levels; at most {MAX_DEPTH} are accepted", "too-deep") from None

    documents = [d for d in documents if d is not None]
    if not documents:
        raise fail(Position(1, 1), "the spec is empty (it holds only comments)",
                   "start from specs/tiny.yaml", "empty")
    if len(documents) > 1:
        raise fail(_position(documents[1].start_mark),
                   f"the file holds {len(documents)} YAML documents; a spec is exactly one",
                   "remove the extra `---` separated documents", "yaml")

    builder = _Builder(file)
    try:
        data = builder.build(documents[0], ())
    except _TooDeep as exc:
        raise fail(_position(exc.node.start_mark), f"nesting deeper than {MAX_DEPTH} levels",
                   "a spec nests about 5 levels", "too-deep") from None
    except _TooLarge as exc:
        raise fail(_position(exc.node.start_mark),
                   f"the document expands to more than {MAX_VALUES} values (nested YAML aliases?)",
                   "write the values out; aliases that refer to aliases multiply", "too-large") from None
    if builder.problems:
        raise SpecError(builder.problems)
    return LoadedDocument(file=file, data=data, values=builder.values, keys=builder.keys,
                          containers=frozenset(builder.containers))
