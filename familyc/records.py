"""Frozen dataclasses to and from JSON data, checked against their annotations. Torch-free.

familyc's files (plans, sidecars, run state) are typed dataclasses on the Python side and plain JSON on
disk. `to_data` writes a dataclass as a dict in field order; `from_data` reads it back and checks every
value against the field's annotation (numbers, strings, Literal values, tuples, dicts, nested
dataclasses, unions of step kinds told apart by their `kind`), so a file that was edited into nonsense
is refused with the path of the first wrong value, never half-read.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from familyc.errors import FamilycError

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def to_data(obj: Any) -> Any:
    """Dataclasses to dicts in field order; tuples to lists (the JSON a file holds)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_data(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


class _Mismatch(Exception):
    """A value that does not fit its annotation; `from_data` turns it into the caller's error."""


def from_data(cls: type[T], data: object, *, where: str, error: type[FamilycError] = FamilycError) -> T:
    """`cls` built from JSON `data`; raise `error` naming the path (`where.field[2].name`) of a value that does
    not fit its field's annotation, or of a required field that is missing."""
    try:
        return _dataclass(cls, data, where)
    except _Mismatch as exc:
        raise error(str(exc)) from None


def _dataclass(cls: type[T], data: object, where: str) -> T:
    if not isinstance(data, dict):
        raise _Mismatch(f"{where}: expected an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise _Mismatch(f"{where}: missing field {f.name!r}")
        kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _kind_default(cls: type[DataclassInstance]) -> str | None:
    """The `kind` a class writes (its field's default), None for classes without one."""
    for f in dataclasses.fields(cls):
        if f.name == "kind" and isinstance(f.default, str):
            return f.default
    return None


def _convert(tp: object, value: object, where: str) -> object:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        return _union(typing.get_args(tp), value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _Mismatch(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Mismatch(f"{where}: expected a list")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected an object")
        key_type, value_type = typing.get_args(tp)
        return {_convert(key_type, k, where): _convert(value_type, v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch(f"{where}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch(f"{where}: expected a whole number")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise _Mismatch(f"{where}: expected {'true/false' if tp is bool else 'a string'}")
        return value
    raise _Mismatch(f"{where}: unsupported type {tp}")


def _union(options: tuple[Any, ...], value: object, where: str) -> object:
    if value is None and type(None) in options:
        return None
    classes = [o for o in options if o is not type(None)]
    kinds = {_kind_default(o): o for o in classes if isinstance(o, type) and dataclasses.is_dataclass(o)}
    if len(kinds) == len(classes) and None not in kinds:  # step kinds, told apart by `kind`
        kind = value.get("kind") if isinstance(value, dict) else None
        if kind not in kinds:
            raise _Mismatch(f"{where}: unknown step kind {kind!r}")
        return _dataclass(kinds[kind], value, where)
    for option in classes:
        try:
            return _convert(option, value, where)
        except _Mismatch:
            continue
    raise _Mismatch(f"{where}: unexpected value {value!r}")
