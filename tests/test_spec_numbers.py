"""Every numeric field takes every spelling of its number: familyc/spec/numbers.py.

PyYAML (YAML 1.1) reads `5e-2`, `1e9` and `2.048e3` as strings. familyc.spec.numbers parses such
text by the schema, once, before the schema validates; these tests pin that
- e-notation works in fields of every kind (number, integer, count) and compiles to the plan
  the plain spelling gives, ints staying ints in the plan's JSON;
- a property: every spec in specs/ respelled (floats in e-notation, ints in other spellings,
  flow style, keys in another order) compiles to the same plan;
- what must not change does not: string fields and mapping keys that look numeric, and the
  messages for text that is not a number.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from familyc.cli import app
from familyc.compiler import compile_spec, load_document
from familyc.plan.ir import Plan, SpecRef, dumps
from familyc.spec.loader import PathT, load_yaml
from familyc.spec.numbers import normalize_numbers, numeric_kind
from familyc.spec.quantity import COUNT_PATTERN
from familyc.spec.schema import _resolve, _schema_at, schema

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
ENV = {"NO_COLOR": "1", "COLUMNS": "160", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}


def comparable(plan: Plan) -> str:
    """The plan's JSON without what depends on the spec file's path and bytes."""
    return dumps(dataclasses.replace(plan, spec=SpecRef(path="", sha256=""), plan_id=""))


@cache
def plain_plan(spec: Path) -> str:
    return comparable(compile_spec(spec))


def compile_text(text: str, tmp_path: Path, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return comparable(compile_spec(path))


def respelled(spec: Path, replacements: list[tuple[str, str]]) -> str:
    text = spec.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


COPYING = ("width: zero,  depth: none,        function_preserving: true}",
           "width: exact, depth: none,        noise: 0.05}")
"""specs/tiny.yaml's width step as whole copies plus noise: it gives the tests a number in a growth step."""


# --- e-notation in fields of every kind ---------------------------------------------------------

CASES = {
    "tiny.yaml": [
        COPYING,
        ("noise: 0.05", "noise: 5e-2"),                      # number (growth step)
        ("mfu: 0.78", "mfu: 7.8e-1"),                           # number (cluster)
        ("min_lr_factor: 0.1", "min_lr_factor: 1e-1"),       # number (schedule)
        ("warmup_fraction: 0.1", "warmup_fraction: 1E-1"),
        ("seq_len: 256", "seq_len: 2.56e2"),                 # integer
        ("log_interval: 5", "log_interval: 5e0"),            # integer
        ("checkpoint_interval: 50", "checkpoint_interval: 5_0"),
        ("largest_tokens: 1M", "largest_tokens: 1e6"),       # count
        ("batch_tokens: 4096", "batch_tokens: 4.096e3"),     # count
        ("reference_lr: 3.0e-3", "reference_lr: 3e-3"),      # positiveNumber
    ],
    "llama_1b_8b.yaml": [
        ("rope_theta: 500000", "rope_theta: 5e5"),           # number (a positiveNumber)
        ("mfu: 0.40", "mfu: 4e-1"),
        ("min_lr_factor: 0.1", "min_lr_factor: 1e-1"),
        ("warmup_steps: 2000", "warmup_steps: 2e3"),
        ("checkpoint_interval: 500", "checkpoint_interval: 500\n  log_interval: 1_0"),  # 10 is the default
        ("tokens_per_param: 20", "tokens_per_param: 2e1"),
        ("vocab_size: 128256", "vocab_size: 128_256"),
        ("ffn_dim_multiplier: 1.3", "ffn_dim_multiplier: 13e-1"),
        ("price_per_gpu_hour: 2.50", "price_per_gpu_hour: 25e-1"),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_e_notation_compiles_to_the_plain_plan(name: str, tmp_path: Path) -> None:
    spec = ROOT / "specs" / name
    plain = plain_plan(spec) if CASES[name][0] != COPYING else compile_text(respelled(spec, [COPYING]), tmp_path,
                                                                            "plain.yaml")
    assert compile_text(respelled(spec, CASES[name]), tmp_path) == plain


def test_the_numbers_get_their_kind(tmp_path: Path) -> None:
    text = respelled(ROOT / "specs" / "llama_1b_8b.yaml", CASES["llama_1b_8b.yaml"])
    raw = yaml.safe_load(text)
    assert raw["architecture"]["rope_theta"] == "5e5" and raw["lr"]["schedule"]["warmup_steps"] == "2e3"  # YAML 1.1
    data = load_document(text.encode(), "spec.yaml").data
    assert data["architecture"]["rope_theta"] == 500000.0 and type(data["architecture"]["rope_theta"]) is float
    assert data["cluster"]["mfu"] == 0.4
    assert data["lr"]["schedule"]["min_lr_factor"] == 0.1
    assert data["lr"]["schedule"]["warmup_steps"] == 2000 and type(data["lr"]["schedule"]["warmup_steps"]) is int
    assert data["training"]["log_interval"] == 10 and type(data["training"]["log_interval"]) is int
    assert data["budget"]["tokens_per_param"] == 20.0
    plan = json.loads(compile_text(text, tmp_path))
    assert type(plan["architecture"]["vocab_size"]) is int
    assert plan["training"]["log_interval"] == 10 and type(plan["training"]["log_interval"]) is int


def test_an_integral_float_at_an_integer_field_becomes_an_int(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "llama_1b_8b.yaml"
    text = respelled(spec, [("warmup_steps: 2000", "warmup_steps: 2.0e+3"), ("nodes: 8", "nodes: 8.0")])
    assert yaml.safe_load(text)["lr"]["schedule"]["warmup_steps"] == 2000.0  # a float, to YAML
    data = load_document(text.encode(), "spec.yaml").data
    assert type(data["lr"]["schedule"]["warmup_steps"]) is int and type(data["cluster"]["nodes"]) is int
    assert compile_text(text, tmp_path) == plain_plan(spec)


def test_count_text_and_counts_at_integer_fields() -> None:
    text = respelled(ROOT / "specs" / "tiny.yaml", [
        ("largest_tokens: 1M", "largest_tokens: 1e9"),
        ("batch_tokens: 4096", "batch_tokens: 4K"),
        ("vocab_size: 2048", "vocab_size: 2.048K"),
        ("log_interval: 5", "log_interval: \"5e0\"\n  micro_batch_size: 8e0"),  # quoted e-notation too
    ])
    data = load_document(text.encode(), "spec.yaml").data
    assert data["budget"]["largest_tokens"] == 10**9
    assert data["training"]["batch_tokens"] == 4000
    assert data["architecture"]["vocab_size"] == 2048
    assert data["training"]["log_interval"] == 5
    assert data["training"]["micro_batch_size"] == 8  # anyOf: auto | integer


# --- what stays as it is -------------------------------------------------------------------------


def test_normalize_leaves_its_input_and_positions_alone() -> None:
    text = respelled(ROOT / "specs" / "tiny.yaml", CASES["tiny.yaml"])
    doc = load_yaml(text, "spec.yaml")
    before = copy.deepcopy(doc.data)
    out = normalize_numbers(doc)
    assert doc.data == before
    assert out.data != doc.data
    assert (out.file, out.values, out.keys, out.containers) == (doc.file, doc.values, doc.keys, doc.containers)


def test_numeric_looking_names_and_keys_stay_strings(tmp_path: Path) -> None:
    """gpu_check names its members 125M and 360M, which parse_count would take; 1e3 and 2e3 are
    member names the memberName pattern allows, and that YAML 1.1 reads as strings."""
    text = (ROOT / "specs" / "gpu_check.yaml").read_text(encoding="utf-8")
    doc = normalize_numbers(load_yaml(text, "spec.yaml"))
    assert [m["name"] for m in doc.data["members"]] == ["125M", "360M"]
    assert list(doc.data["budget"]["tokens"]) == ["125M", "360M"]
    assert all(type(v) is int for v in doc.data["budget"]["tokens"].values())
    renamed = text.replace("125M", "1e3").replace("360M", "2e3").replace("name: gpu-check", "name: 1e3")
    assert renamed != text
    doc = normalize_numbers(load_yaml(renamed, "spec.yaml"))
    assert [m["name"] for m in doc.data["members"]] == ["1e3", "2e3"]
    assert doc.data["family"]["name"] == "1e3"
    assert list(doc.data["lr"]["table"]) == ["1e3", "2e3"]
    plan = json.loads(compile_text(renamed, tmp_path))
    assert [m["name"] for m in plan["members"]] == ["1e3", "2e3"]


@pytest.mark.parametrize("field, value, kept", [
    (("architecture", "seq_len"), "256", "256"),        # quoted on purpose: the schema says remove the quotes
    (("architecture", "seq_len"), " 2e2 ", " 2e2 "),    # only quoting gives surrounding spaces
    (("training", "compile"), "1e0", "1e0"),            # a boolean field
    (("training", "seed"), True, True),                 # a boolean at an integer field
    (("training", "micro_batch_size"), "auto", "auto"),
    (("training", "optimizer", "eps"), "-1e-8", "-1e-8"),  # positiveNumber: resolve_defaults' message
    (("growth", 1, "noise"), "abc", "abc"),
    (("growth", 1, "noise"), "-5e-2", -0.05),           # a number the schema then bounds
    (("cluster", "gpus_per_node"), 2.5, 2.5),
    (("budget", "largest_tokens"), "1e40", "1e40"),     # resolve_defaults: absurdly large
    (("budget", "largest_tokens"), "-1M", "-1M"),       # resolve_defaults: must not be negative
])
def test_what_is_left_alone(field: PathT, value: Any, kept: Any) -> None:
    doc = load_yaml((ROOT / "specs" / "tiny.yaml").read_text(encoding="utf-8"), "spec.yaml")
    data = copy.deepcopy(doc.data)
    node = data
    for part in field[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[field[-1]] = value
    out = normalize_numbers(dataclasses.replace(doc, data=data)).data
    for part in field:
        out = out[part]
    assert out == kept and type(out) is type(kept)


def validate(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate", "spec.yaml"], env=ENV)
    return f"{result.output}exit {result.exit_code}\n"


def test_bad_numeric_text_keeps_its_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = ROOT / "specs" / "tiny.yaml"
    out = validate(respelled(tiny, [COPYING, ("noise: 0.05", "noise: abc")]), tmp_path, monkeypatch)
    assert out.startswith("spec.yaml:24:64: $.growth[1].noise: expected a number, got a string ('abc')\n"), out
    assert out.endswith("exit 1\n")
    out = validate(respelled(tiny, [("largest_tokens: 1M ", 'largest_tokens: "1e40"')]), tmp_path, monkeypatch)
    assert out.startswith(
        "spec.yaml:29:19: $.budget.largest_tokens: largest_tokens '1e40' is absurdly large (more than 1e30)\n"), out
    out = validate(respelled(tiny, [COPYING, ("noise: 0.05", "noise: -5e-2")]), tmp_path, monkeypatch)
    assert out.startswith("spec.yaml:24:64: $.growth[1].noise: -0.05 is less than the minimum 0\n"), out
    out = validate(respelled(tiny, [COPYING, ("noise: 0.05", "noise: 5e-2"), ("mfu: 0.78", "mfu: 7.8e-1")]), tmp_path,
                   monkeypatch)
    assert out == "spec.yaml: valid (4 members, 4 training stages, 3 growth steps)\nexit 0\n", out


# --- the respelling property ---------------------------------------------------------------------


def takes_quantities(path: PathT) -> bool:
    """Does the schema make the field at `path` an integer or a count (read off the schema here,
    not from familyc.spec.numbers)?"""
    alts = [_resolve(_schema_at(path))]
    for alt in alts:
        alts.extend(_resolve(a) for a in alt.get("anyOf", []) + alt.get("oneOf", []))
    return any(a.get("type") == "integer" or a.get("pattern") == COUNT_PATTERN for a in alts)


def float_text(value: float, *, pad: int = 0, upper: bool = False, plus: bool = False) -> str:
    """`value` in e-notation without a dot, so that PyYAML reads the plain scalar as a string:
    0.05 -> 5e-2 (pad=1: 50e-3, upper: 5E-2, plus: +5e-2)."""
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits)) + "0" * pad
    text = f"{'-' if sign else '+' if plus else ''}{mantissa}{'E' if upper else 'e'}{exponent - pad}"
    assert isinstance(yaml.safe_load(text), str) and float(text) == value, text
    return text


def int_text(value: int, style: str, *, dot: int = 1) -> str:
    """`value` respelled: underscores (YAML's own int syntax), e-notation, or an SI suffix."""
    digits = str(abs(value))
    if style == "underscore" and len(digits) > 1:
        head = len(digits) % 3 or 3
        groups = [digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)]
        text = ("-" if value < 0 else "") + ("_".join(groups) if len(groups) > 1 else f"{digits[0]}_{digits[1:]}")
    elif style == "enote" and value >= 0:
        stripped = digits.rstrip("0") or "0"
        zeros = len(digits) - len(stripped)
        dot = min(dot, len(stripped))
        mantissa = stripped if dot == len(stripped) else f"{stripped[:dot]}.{stripped[dot:]}"
        text = f"{mantissa}e{zeros + len(stripped) - dot}"
    elif style == "suffix" and value >= 0:
        text = f"{Decimal(value) / 1000:f}K"
    else:
        text = str(value)
    assert yaml.safe_load(text) == value or not isinstance(yaml.safe_load(text), int | float), text
    return text


Order = Callable[[PathT, list[str]], list[str]]
FloatSpelling = Callable[[PathT, float], str]
IntSpelling = Callable[[PathT, int], str]


def emit(value: Any, path: PathT, order: Order, floats: FloatSpelling, ints: IntSpelling) -> str:
    """`value` as YAML in flow style, every scalar spelled by us: strings as JSON strings (valid
    YAML double-quoted scalars), floats and ints by `floats` and `ints`, mapping keys in `order`."""
    if isinstance(value, dict):
        keys = order(path, list(value))
        assert sorted(keys) == sorted(value)
        inner = ", ".join(f"{json.dumps(k)}: {emit(value[k], path + (k,), order, floats, ints)}" for k in keys)
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(emit(v, path + (i,), order, floats, ints) for i, v in enumerate(value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return ints(path, value)
    if isinstance(value, float):
        return floats(path, value)
    assert isinstance(value, str)
    return json.dumps(value)


def spec_data(spec: Path) -> Any:
    return load_yaml(spec.read_bytes(), str(spec)).data


def deterministic(data: Any) -> str:
    """Reversed keys, floats in their shortest e-notation, ints in e-notation where the field takes
    quantities, with underscores elsewhere."""
    def ints(path: PathT, value: int) -> str:
        return int_text(value, "enote" if takes_quantities(path) else "underscore")

    return emit(data, (), lambda _path, keys: keys[::-1], lambda _path, value: float_text(value), ints)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_respelled_spec_compiles_to_the_same_plan(spec: Path, tmp_path: Path) -> None:
    text = deterministic(spec_data(spec))
    assert compile_text(text, tmp_path) == plain_plan(spec)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(draw=st.data())
def test_any_respelling_compiles_to_the_same_plan(spec: Path, tmp_path: Path, draw: st.DataObject) -> None:
    def order(_path: PathT, keys: list[str]) -> list[str]:
        return draw.draw(st.permutations(keys))

    def floats(_path: PathT, value: float) -> str:
        return float_text(value, pad=draw.draw(st.integers(0, 3)), upper=draw.draw(st.booleans()),
                          plus=draw.draw(st.booleans()))

    def ints(path: PathT, value: int) -> str:
        styles = ["plain", "underscore"] + (["enote", "suffix"] if takes_quantities(path) else [])
        return int_text(value, draw.draw(st.sampled_from(styles)), dot=draw.draw(st.integers(1, 4)))

    text = emit(spec_data(spec), (), order, floats, ints)
    assert compile_text(text, tmp_path) == plain_plan(spec)


def test_the_respelling_helpers_spell_what_they_claim() -> None:
    assert float_text(0.05) == "5e-2" and float_text(0.05, pad=1, upper=True, plus=True) == "+50E-3"
    assert float_text(-0.25) == "-25e-2"
    assert int_text(2048, "enote") == "2.048e3" and int_text(2048, "enote", dot=4) == "2048e0"
    assert int_text(1_000_000, "enote") == "1e6" and int_text(0, "enote") == "0e0"
    assert int_text(4096, "suffix") == "4.096K" and int_text(256, "suffix") == "0.256K"
    assert int_text(4194304, "underscore") == "4_194_304" and int_text(10, "underscore") == "1_0"
    assert takes_quantities(("lr", "schedule", "warmup_steps")) and takes_quantities(("budget", "tokens", "x"))
    assert takes_quantities(("training", "micro_batch_size"))
    assert not takes_quantities(("cluster", "mfu")) and not takes_quantities(("architecture", "rope_theta"))
    # the module under test agrees with this reading of the schema
    assert numeric_kind(_schema_at(("budget", "tokens", "x"))) == "count"
    assert numeric_kind(_schema_at(("training", "micro_batch_size"))) == "integer"
    assert numeric_kind(_schema_at(("architecture", "rope_theta"))) == "number"
    assert numeric_kind(_schema_at(("family", "name"))) is None
    assert numeric_kind(schema()) is None
