"""Numbers as people write them, for every numeric field of a spec: `5e-2`, `2e3`, `4_096`, `20B`.

PyYAML (YAML 1.1) reads `3.0e-4` as a float but `5e-2`, `1e9` and `2.048e3` as *strings*: its
float pattern wants a dot, and a sign on the exponent. Without this module only the quantity fields
(the schema's `count` and `positiveNumber`) took such strings, and `noise: 5e-2` was refused with
"remove the quotes". So, once, after the YAML is read and before the schema validates, the data
is walked together with the schema and every numeric field gets the number its text means. The
kind comes from the schema alone, never from how the value looks:

- count (a string alternative with `COUNT_PATTERN`: `batch_tokens`, `budget.tokens`) and integer
  (`type: integer`, alone or in an anyOf such as `micro_batch_size: auto | integer`): parsed with
  `parse_count`, to an int. Integer fields are counts: `2e3`, `"2.048e3"` and `4K` are 2000,
  2048 and 4000 (`4_096` YAML reads as 4096 itself); an integral float (`2.0e+3`, which YAML does
  read as 2000.0) becomes the int 2000 rather than leaking into the plan as a float.
- number (`type: number`, or `positiveNumber`'s numeric string): parsed with `parse_number`, to a
  float. Ints stay ints.

Everything else is left exactly as it was, for the schema and resolve_defaults to report as
they always have: booleans, strings of string fields (`name: 1e3`), mapping keys (member names),
text the parsers refuse (`abc`, `"1e40"`: resolve_defaults calls that absurdly large), a string a
plain YAML scalar could not have produced (`"256"` or `" 1 "`: written quoted, on purpose, so
the schema's "remove the quotes" still applies), and, where the schema accepts the string itself
(count, positiveNumber), a number its numeric form would refuse (`eps: "-1e-8"`: resolve_defaults
says it must be greater than 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator

from familyc.spec.loader import LoadedDocument
from familyc.spec.quantity import COUNT_PATTERN, NUMBER_PATTERN, parse_count, parse_number
from familyc.spec.schema import _resolve, child_schema, schema

Kind = Literal["count", "integer", "number"]

_RESOLVER = yaml.resolver.Resolver()
_NUMERIC_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def normalize_numbers(doc: LoadedDocument) -> LoadedDocument:
    """The document with every numeric field's text parsed (see the module docstring); the
    input is not modified, and positions are unchanged."""
    return replace(doc, data=_walk(doc.data, schema()))


def _walk(value: Any, sub: dict[str, Any]) -> Any:
    sub = _resolve(sub)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            child = child_schema(sub, key)
            out[key] = item if child is None else _walk(item, child)
        return out
    if isinstance(value, list):
        items = sub.get("items")
        return list(value) if not isinstance(items, dict) else [_walk(v, items) for v in value]
    kind = numeric_kind(sub)
    return value if kind is None else _convert(value, kind, sub)


def _alternatives(sub: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`sub` and, recursively, its anyOf/oneOf alternatives, resolved."""
    sub = _resolve(sub)
    yield sub
    for alt in sub.get("anyOf", []) + sub.get("oneOf", []):
        yield from _alternatives(alt)


def _types(sub: dict[str, Any]) -> set[str]:
    kind = sub.get("type")
    return {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()


def numeric_kind(sub: dict[str, Any]) -> Kind | None:
    """What the schema `sub` says a value is: a count, an integer, a number, or (None) not numeric."""
    alts = list(_alternatives(sub))
    if any("string" in _types(a) and a.get("pattern") == COUNT_PATTERN for a in alts):
        return "count"
    if any("integer" in _types(a) for a in alts):
        return "integer"
    if any("number" in _types(a) or ("string" in _types(a) and a.get("pattern") == NUMBER_PATTERN)
           for a in alts):
        return "number"
    return None


def _yaml_tag(text: str) -> str:
    """The tag PyYAML's own resolver gives `text` written as an unquoted scalar."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


def _plain(text: str) -> bool:
    """Could an unquoted YAML scalar have produced this string? Not if it has surrounding
    whitespace, nor if YAML reads that text unquoted as a number (`"256"` was quoted on purpose)."""
    return text == text.strip() and "\n" not in text and _yaml_tag(text) not in _NUMERIC_TAGS


def _convert(value: Any, kind: Kind, sub: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _parse_text(value, kind, sub)
    if isinstance(value, float) and kind != "number":
        try:
            return parse_count(value)
        except ValueError:
            return value  # 2.5, -2.0, 1e300: the schema or resolve_defaults says why
    return value  # ints, booleans, null, and the floats of number fields are what they say


def _parse_text(text: str, kind: Kind, sub: dict[str, Any]) -> Any:
    if not _plain(text):
        return text
    parse: Callable[[str], float] = parse_number if kind == "number" else parse_count
    try:
        parsed = parse(text)
    except ValueError:
        return text
    if _accepts_string(sub, text) and not _accepts(sub, parsed):
        return text
    return parsed


def _accepts_string(sub: dict[str, Any], value: str) -> bool:
    return any("string" in _types(a) and Draft202012Validator(a).is_valid(value) for a in _alternatives(sub))


def _accepts(sub: dict[str, Any], value: float | int) -> bool:
    return any(_types(a) & {"number", "integer"} and Draft202012Validator(a).is_valid(value)
               for a in _alternatives(sub))


__all__ = ["normalize_numbers", "numeric_kind", "Kind"]
