"""The family spec's JSON Schema (package data) and the translation of its errors into Diagnostics.

jsonschema's raw messages ("Additional properties are not allowed ('widht' was unexpected)")
name neither the line nor the fix. Here every error becomes a Diagnostic at the position of
the offending key or value, with a hint: did-you-mean for unknown keys and enum values, the
best matching alternative inside anyOf/oneOf, the field's own description otherwise.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from familyc.errors import Diagnostic
from familyc.spec.loader import LoadedDocument, PathT
from familyc.spec.quantity import COUNT_PATTERN, NUMBER_PATTERN

SCHEMA_RESOURCE = "family.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The spec schema (Draft 2020-12), as shipped in the package."""
    text = resources.files("familyc.spec").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def schema_text() -> str:
    return resources.files("familyc.spec").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


@cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def did_you_mean(word: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else ""


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "null",
}


def _type_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if value is None:
        return "null"
    return "a string"


def _resolve(sub: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref (our schema only has `#/$defs/...` refs)."""
    while "$ref" in sub and sub["$ref"].startswith("#/$defs/"):
        merged = dict(schema()["$defs"][sub["$ref"].removeprefix("#/$defs/")])
        merged.update({k: v for k, v in sub.items() if k != "$ref"})
        sub = merged
    return sub


def _describe(sub: dict[str, Any]) -> str:
    sub = _resolve(sub)
    if "title" in sub and "properties" in sub:
        return f"a mapping with `{sub['title']}`"
    if "const" in sub:
        return _show(sub["const"])
    if "enum" in sub:
        return "one of " + ", ".join(_show(v) for v in sub["enum"])
    if "anyOf" in sub or "oneOf" in sub:
        return " or ".join(_describe(alt) for alt in sub.get("anyOf", sub.get("oneOf", [])))
    kind = sub.get("type")
    if kind == "string" and "pattern" in sub:
        return "a quantity such as 20B or \"1e9\"" if sub["pattern"] == COUNT_PATTERN else "a numeric string"
    return _TYPE_NAMES.get(kind, "a value") if isinstance(kind, str) else "a value"


class _Translator:
    def __init__(self, doc: LoadedDocument) -> None:
        self.doc = doc
        self.out: list[Diagnostic] = []

    def add(self, path: PathT, message: str, hint: str = "", *, key: bool = False, code: str = "schema") -> None:
        self.out.append(self.doc.diagnostic(path, message, code=code, hint=hint, key=key))

    def error(self, err: ValidationError) -> None:
        path: PathT = tuple(err.absolute_path)
        kind = err.validator
        sub = err.schema if isinstance(err.schema, dict) else {}
        if kind == "additionalProperties":
            allowed = sorted(sub.get("properties", {}))
            for extra in sorted(set(err.instance) - set(allowed)):
                guess = did_you_mean(extra, allowed)
                hint = f"did you mean {guess!r}?" if guess else "allowed keys: " + ", ".join(allowed)
                self.add(path + (extra,), f"unknown key {extra!r}", hint, key=True, code="unknown-key")
        elif kind == "required":
            missing = err.message.split("'")[1] if "'" in err.message else str(err.validator_value)
            prop = _resolve(sub.get("properties", {}).get(missing, {}))
            hint = prop.get("description", "")
            where = "" if not path else f" in {path[-1]!r}" if isinstance(path[-1], str) else ""
            self.add(path, f"missing required key {missing!r}{where}", hint, key=bool(path), code="missing-key")
        elif kind in ("oneOf", "anyOf"):
            self.alternatives(err, path, sub)
        elif kind == "type":
            expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
            want = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
            hint = ""
            if isinstance(err.instance, str) and {"integer", "number"} & set(expected):
                hint = "remove the quotes"
            elif isinstance(err.instance, int | float) and "string" in expected:
                hint = f"quote it: '{err.instance}'"
            self.add(path, f"expected {want}, got {_type_of(err.instance)} ({_show(err.instance)})", hint)
        elif kind == "enum":
            choices = [str(c) for c in err.validator_value]
            guess = did_you_mean(str(err.instance), choices)
            hint = f"did you mean {guess!r}?" if guess else sub.get("description", "")
            self.add(path, f"{_show(err.instance)} is not one of: {', '.join(choices)}", hint)
        elif kind == "const":
            self.add(path, f"{_show(err.instance)} is not allowed here; the only value is {_show(err.validator_value)}",
                     sub.get("description", ""))
        elif kind == "pattern":
            what = {COUNT_PATTERN: "a quantity such as 20B or \"1e9\"", NUMBER_PATTERN: "a number"}.get(
                sub["pattern"], "valid here")
            self.add(path, f"{_show(err.instance)} is not {what}", _pattern_hint(sub))
        elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            relation = {"minimum": "less than the minimum", "maximum": "greater than the maximum",
                        "exclusiveMinimum": "not greater than", "exclusiveMaximum": "not less than"}[kind]
            self.add(path, f"{_show(err.instance)} is {relation} {err.validator_value}", sub.get("description", ""))
        elif kind == "propertyNames":
            for name_err in err.context or []:
                self.add(path + (name_err.instance,), f"{_show(name_err.instance)} is not a valid member name",
                         _pattern_hint(_resolve(name_err.schema)), key=True)
            if not err.context:
                self.add(path, err.message)
        else:
            self.add(path, err.message, sub.get("description", ""))

    def alternatives(self, err: ValidationError, path: PathT, sub: dict[str, Any]) -> None:
        """Best match inside anyOf/oneOf: the alternative the value was evidently meant to be."""
        options = sub.get(err.validator, [])
        by_alt: dict[int, list[ValidationError]] = {}
        for ctx in err.context or []:
            by_alt.setdefault(ctx.schema_path[0], []).append(ctx)
        if err.validator == "oneOf" and not by_alt:  # matched more than one alternative
            titles = [_resolve(o).get("title", str(i)) for i, o in enumerate(options)]
            self.add(path, f"matches more than one of: {', '.join(titles)}", "give exactly one of them")
            return
        best = _best_alternative(err.instance, options, by_alt)
        if best is None:
            described = " or ".join(_describe(o) for o in options)
            self.add(path, f"expected {described}, got {_type_of(err.instance)} ({_show(err.instance)})",
                     sub.get("description", ""))
            return
        start = len(self.out)
        for ctx in by_alt.get(best, []):
            self.error(ctx)
        if isinstance(err.instance, dict) and len(options) > 1:
            keys = sorted({k for o in options for k in _resolve(o).get("required", [])})
            for i in range(start, len(self.out)):
                d = self.out[i]
                extra = f"one of {', '.join(repr(k) for k in keys)} is needed here" if keys else ""
                if extra and extra not in d.hint:
                    self.out[i] = Diagnostic(code=d.code, file=d.file, path=d.path, line=d.line, col=d.col,
                                             message=d.message, hint=(d.hint + "; " if d.hint else "") + extra)


def _pattern_hint(sub: dict[str, Any]) -> str:
    pattern = sub.get("pattern", "")
    if pattern == COUNT_PATTERN:
        return "write a whole number such as 4096, 2.0e10, \"1e9\" or 20B (K, M, B, T = 1e3 ... 1e12)"
    if pattern == NUMBER_PATTERN:
        return "write a number such as 3e-4, \"3e-4\" or 0.0003"
    if "[A-Za-z0-9._-]" in pattern:
        return "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    return sub.get("description", "")


def _best_alternative(instance: Any, options: list[dict[str, Any]], by_alt: dict[int, list[ValidationError]]) -> int | None:
    """Pick the alternative whose type matches and that the instance resembles most; None if no type matches."""
    candidates = []
    for index, option in enumerate(options):
        errors = by_alt.get(index, [])
        type_mismatch = any(e.validator in ("type", "const", "enum") and not e.path for e in errors)
        if type_mismatch:
            continue
        resolved = _resolve(option)
        shared = len(set(instance) & set(resolved.get("properties", {}))) if isinstance(instance, dict) else 0
        candidates.append((-shared, len(errors), index))
    if not candidates:
        return None
    return min(candidates)[2]


def schema_diagnostics(doc: LoadedDocument) -> list[Diagnostic]:
    """Every schema problem in the document, located and with hints, sorted by position."""
    translator = _Translator(doc)
    for err in validator().iter_errors(doc.data):
        translator.error(err)
    unique = {(d.line, d.col, d.path, d.message): d for d in translator.out}
    return sorted(unique.values(), key=Diagnostic.sort_key)


def check_schema_itself() -> None:
    """Raise if the shipped schema is not a valid Draft 2020-12 schema (tested)."""
    Draft202012Validator.check_schema(schema())


__all__ = ["schema", "schema_text", "validator", "schema_diagnostics", "did_you_mean", "check_schema_itself", "jsonschema"]
