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

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from familyc.errors import Diagnostic
from familyc.spec.loader import LoadedDocument, PathT
from familyc.spec.quantity import COUNT_PATTERN, NUMBER_PATTERN

SCHEMA_RESOURCE = "family.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The spec schema (Draft 2020-12), as shipped in the package."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


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
    if close:
        return close[0]
    low = word.lower()
    prefixed = [c for c in choices if len(c) >= 2 and (low.startswith(c.lower()) or c.lower().startswith(low))]
    return prefixed[0] if len(prefixed) == 1 else ""


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


def child_schema(sub: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The subschema of `key` in a mapping that `sub` describes: its properties, then the properties of its
    oneOf/anyOf alternatives, then additionalProperties (per-member tables); None if none describes it."""
    sub = _resolve(sub)
    found = sub.get("properties", {}).get(key)
    if found is None:
        for alt in sub.get("oneOf", []) + sub.get("anyOf", []):
            found = _resolve(alt).get("properties", {}).get(key)
            if found is not None:
                break
    if found is None and isinstance(sub.get("additionalProperties"), dict):
        found = sub["additionalProperties"]
    return found if isinstance(found, dict) else None


def _schema_at(path: PathT) -> dict[str, Any]:
    """The (resolved) subschema that describes the value at `path`, {} if none does."""
    sub: dict[str, Any] = schema()
    for part in path:
        if isinstance(part, int):
            sub = _resolve(sub).get("items", {})
        else:
            sub = child_schema(sub, part) or {}
    return _resolve(sub)


def _example(sub: dict[str, Any]) -> str:
    examples = sub.get("examples")
    return json.dumps(examples[0]).replace('"', "") if examples else ""


def _sentence(text: str) -> str:
    """The first sentence of a schema description: hints stay short."""
    head = text.split(". ")[0].strip()
    return head if not head or head.endswith(".") else head + "."


def _required_hint(path: PathT, missing: str, data: Any) -> str:
    prop = _schema_at(path + (missing,))
    if "enum" in prop:
        hint = f"add {missing}: one of " + ", ".join(str(v) for v in prop["enum"])
    elif prop.get("type") == "object" and prop.get("required"):
        hint = f"add a `{missing}:` section with " + ", ".join(prop["required"])
    elif "examples" in prop:
        hint = f"e.g. {missing}: {_example(prop)}"
    else:
        hint = _sentence(prop.get("description", ""))
    rule = data.get("rule") if isinstance(data, dict) else None
    if isinstance(rule, str) and missing != "rule" and path:
        hint = f"{path[-1]}.rule {rule!r} needs it" + (f": {hint}" if hint else "")
    return hint


class _Translator:
    def __init__(self, doc: LoadedDocument) -> None:
        self.doc = doc
        self.out: list[Diagnostic] = []
        self.unknown: list[tuple[PathT, str, list[str]]] = []
        self.missing: list[tuple[PathT, str, Any]] = []

    def add(self, path: PathT, message: str, hint: str = "", *, key: bool = False, code: str = "schema") -> None:
        self.out.append(self.doc.diagnostic(path, message, code=code, hint=hint, key=key))

    def error(self, err: ValidationError) -> None:
        path: PathT = tuple(err.absolute_path)
        kind = str(err.validator)
        sub = err.schema if isinstance(err.schema, dict) else {}
        # JSON from the spec and from the schema: any value (jsonschema types them as "or unset")
        instance: Any = err.instance
        bound: Any = err.validator_value
        if kind == "additionalProperties":
            allowed = sorted(sub.get("properties", {}))
            for extra in sorted(set(instance) - set(allowed)):
                self.unknown.append((path, extra, allowed))
        elif kind == "required":
            missing = err.message.split("'")[1] if "'" in err.message else str(bound)
            self.missing.append((path, missing, instance))
        elif kind in ("oneOf", "anyOf"):
            self.alternatives(err, path, sub)
        elif kind == "type":
            expected = [str(t) for t in (bound if isinstance(bound, list) else [bound])]
            want = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
            hint = ""
            if isinstance(instance, str) and {"integer", "number"} & set(expected):
                hint = "remove the quotes"
            elif isinstance(instance, str) and "boolean" in expected:
                hint = "write true or false, without quotes"
            elif isinstance(instance, int | float) and "string" in expected:
                hint = f"quote it: '{instance}'"
            elif "array" in expected:
                hint = "write a list: one item per line, each starting with '- '"
            elif "object" in expected:
                hint = "write key: value pairs"
            self.add(path, f"expected {want}, got {_type_of(instance)} ({_show(instance)})", hint)
        elif kind == "enum":
            choices = [str(c) for c in bound]
            guess = did_you_mean(str(instance), choices)
            hint = f"did you mean {guess!r}?" if guess else _sentence(sub.get("description", ""))
            self.add(path, f"{_show(instance)} is not one of: {', '.join(choices)}", hint)
        elif kind == "const":
            hint = f"set it to {_show(bound)} or remove it"
            if sub.get("description"):
                hint += f" ({sub['description'].rstrip('.')})"
            self.add(path, f"{_show(instance)} is not allowed here; the only value is {_show(bound)}", hint)
        elif kind == "pattern":
            what = {COUNT_PATTERN: "a quantity such as 20B or \"1e9\"", NUMBER_PATTERN: "a number"}.get(
                sub["pattern"], "a valid name")
            self.add(path, f"{_show(instance)} is not {what}", _pattern_hint(sub))
        elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            relation = {"minimum": "less than the minimum", "maximum": "greater than the maximum",
                        "exclusiveMinimum": "not greater than", "exclusiveMaximum": "not less than"}[kind]
            self.add(path, f"{_show(instance)} is {relation} {bound}",
                     _sentence(sub.get("description", "")))
        elif kind in ("minItems", "maxItems", "minProperties", "maxProperties"):
            noun = "item" if "Items" in kind else "entry"
            plural = "s" if bound != 1 and noun == "item" else "ies" if bound != 1 else ""
            noun = noun[:-1] if plural == "ies" else noun
            least = kind.startswith("min")
            self.add(path,
                     f"needs {'at least' if least else 'at most'} {bound} {noun}{plural}, has {len(instance)}",
                     _sentence(_schema_at(path).get("description", "")))
        elif kind == "propertyNames":
            for name_err in err.context or []:
                name: Any = name_err.instance
                name_schema = name_err.schema if isinstance(name_err.schema, dict) else {}
                self.add(path + (str(name),), f"{_show(name)} is not a valid member name",
                         _pattern_hint(_resolve(name_schema)), key=True)
            if not err.context:
                self.add(path, err.message)
        else:
            self.add(path, err.message, _sentence(sub.get("description", "")))

    def finish(self) -> list[Diagnostic]:
        """Unknown and missing keys last: a misspelt required key is one problem, not two."""
        missing_left = []
        for path, missing, instance in self.missing:
            typo = next((u for u in self.unknown if u[0] == path and did_you_mean(u[1], [missing])), None)
            if typo is not None:
                self.unknown.remove(typo)
                self.add(path + (typo[1],), f"unknown key {typo[1]!r}", f"did you mean the required key {missing!r}?",
                         key=True, code="unknown-key")
            else:
                missing_left.append((path, missing, instance))
        for path, extra, allowed in self.unknown:
            guess = did_you_mean(extra, allowed)
            hint = f"did you mean {guess!r}?" if guess else "allowed keys: " + ", ".join(allowed)
            self.add(path + (extra,), f"unknown key {extra!r}", hint, key=True, code="unknown-key")
        for path, missing, instance in missing_left:
            where = f" in {path[-1]!r}" if path and isinstance(path[-1], str) else ""
            self.add(path, f"missing required key {missing!r}{where}", _required_hint(path, missing, instance),
                     code="missing-key")
        return self.out

    def alternatives(self, err: ValidationError, path: PathT, sub: dict[str, Any]) -> None:
        """Best match inside anyOf/oneOf: the alternative the value was evidently meant to be."""
        options = [_resolve(o) for o in sub.get(str(err.validator), [])]
        by_alt: dict[int, list[ValidationError]] = {}
        for ctx in err.context or []:
            by_alt.setdefault(int(ctx.schema_path[0]), []).append(ctx)
        if options and all(o.get("type") == "object" and o.get("required") for o in options):
            self.object_alternatives(err, path, sub, options, by_alt)
            return
        best = _best_alternative(err.instance, options, by_alt)
        if best is None:
            described = " or ".join(_describe(o) for o in options)
            self.add(path, f"expected {described}, got {_type_of(err.instance)} ({_show(err.instance)})",
                     _sentence(sub.get("description", "")))
            return
        for ctx in by_alt.get(best, []):
            self.error(ctx)

    def object_alternatives(self, err: ValidationError, path: PathT, sub: dict[str, Any],
                            options: list[dict[str, Any]], by_alt: dict[int, list[ValidationError]]) -> None:
        """Mappings told apart by one required key each (data.dataset, tokenizer)."""
        keys = [o["required"][0] for o in options]
        listed = ", ".join(keys)
        described = _schema_at(path) or sub
        example = f"e.g. {_example(described)}" if "examples" in described else ""
        instance = err.instance
        if not isinstance(instance, dict):
            self.add(path, f"expected a mapping with one of {listed}, got {_type_of(instance)} ({_show(instance)})",
                     example)
            return
        present = [k for k in keys if k in instance]
        if len(present) > 1:
            self.add(path, f"give exactly one of {listed} (found {' and '.join(present)})", "remove all but one")
            return
        if len(present) == 1:
            for ctx in by_alt.get(keys.index(present[0]), []):
                self.error(ctx)
            return
        typos = [(k, did_you_mean(k, keys)) for k in instance if did_you_mean(k, keys)]
        for extra, guess in typos:
            self.add(path + (extra,), f"unknown key {extra!r}", f"did you mean {guess!r}?", key=True,
                     code="unknown-key")
        if typos:
            return
        known = sorted({k for o in options for k in o.get("properties", {})})
        for extra in instance:
            if extra not in known:
                self.add(path + (extra,), f"unknown key {extra!r}", "allowed keys: " + ", ".join(known), key=True,
                         code="unknown-key")
        self.add(path, f"needs one of {listed}", example, code="missing-key")


def _pattern_hint(sub: dict[str, Any]) -> str:
    pattern = sub.get("pattern", "")
    if pattern == COUNT_PATTERN:
        return "write a whole number such as 4096, 2.0e10, \"1e9\" or 20B (K, M, B, T = 1e3 ... 1e12)"
    if pattern == NUMBER_PATTERN:
        return "write a number such as 3e-4, \"3e-4\" or 0.0003"
    if "[A-Za-z0-9._-]" in pattern:
        longest = pattern.split("{0,")[1].split("}")[0] if "{0," in pattern else ""
        limit = f", at most {int(longest) + 1} characters" if longest.isdigit() else ""
        return f"use letters, digits, '.', '_' and '-', starting with a letter or digit{limit}"
    return str(sub.get("description", ""))


def _best_alternative(instance: Any, options: list[dict[str, Any]],
                      by_alt: dict[int, list[ValidationError]]) -> int | None:
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
    unique = {(d.line, d.col, d.path, d.message): d for d in translator.finish()}
    return sorted(unique.values(), key=Diagnostic.sort_key)


def check_schema_itself() -> None:
    """Raise if the shipped schema is not a valid Draft 2020-12 schema (tested)."""
    Draft202012Validator.check_schema(schema())


__all__ = ["schema", "schema_text", "validator", "schema_diagnostics", "did_you_mean", "check_schema_itself"]
