"""Guard tests for the structure: the layering the README documents, torch-free packages, the typed
enumerations, module sizes, the frozen command-line surface, and the message of a missing train extra.

The layering is read from the README's "Architecture" table, so the document and the check cannot drift
apart: every module of familyc must belong to a listed package, and every import it makes (at module level,
inside functions, under TYPE_CHECKING) must be of its own package or of a lower layer.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import REPO, assert_golden
from typer.testing import CliRunner

from familyc import enums
from familyc.cli import app

PACKAGE = REPO / "familyc"
README = REPO / "README.md"
MAX_MODULE_LINES = 500
TORCH_FREE_PACKAGES = ("spec", "cost", "growth", "plan", "compiler")
"""With layer 0: what the compile path is made of; nothing in them may import torch, even lazily."""


# --- the layering -----------------------------------------------------------------------------------

def documented_layers() -> dict[str, int]:
    """{unit: layer} from the README's Architecture table (a unit is a package or a top-level module)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]+)\|", line)
        if match:
            for name in re.findall(r"`([A-Za-z_][\w]*)`", match[2]):
                layers[name] = int(match[1])
    return layers


def unit_of(module: str) -> str:
    """`familyc.execute.rundir` -> `execute`; `familyc.errors` -> `errors`; `familyc` -> `familyc`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def documented_rows() -> dict[str, int]:
    """{unit: row of the table}: the units of one row (the foundation's modules; cli and __main__) are one group."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, int] = {}
    for number, line in enumerate(section.splitlines()):
        match = re.match(r"\|\s*(\d+)\s*\|([^|]+)\|", line)
        if match:
            rows.update(dict.fromkeys(re.findall(r"`([A-Za-z_][\w]*)`", match[2]), number))
    return rows


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def familyc_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of familyc in the file, wherever it is (functions, TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "familyc"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "familyc":
                continue
            if target == "familyc":  # `from familyc import x`: x is a module (a unit) or a name of the root
                found += [(node.lineno, f"familyc.{alias.name}" if (PACKAGE / alias.name).exists()
                           or (PACKAGE / f"{alias.name}.py").exists() else "familyc") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def sources() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 50, "the scan found too few modules; is PACKAGE right?"
    return found


def test_every_module_belongs_to_a_documented_layer() -> None:
    layers = documented_layers()
    assert layers, "the README has no Architecture table"
    unknown = sorted({unit_of(module_name(p)) for p in sources()} - set(layers))
    assert not unknown, f"modules outside the README's Architecture table: {unknown}"
    stale = sorted(set(layers) - {unit_of(module_name(p)) for p in sources()})
    assert not stale, f"the README's Architecture table names what does not exist: {stale}"


def test_no_package_imports_one_beside_or_above_it() -> None:
    layers, rows = documented_layers(), documented_rows()
    offenders = []
    for path in sources():
        unit = unit_of(module_name(path))
        for line, module in familyc_imports(path):
            other = unit_of(module)
            if rows[other] == rows[unit]:  # its own package, or a module of its own row
                continue
            if layers[other] >= layers[unit]:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {unit} (layer {layers[unit]}) imports {module} "
                                 f"({other}, layer {layers[other]})")
    assert not offenders, "\n".join(offenders)


def test_the_layer_check_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """The scan is not vacuous: imports inside functions, under TYPE_CHECKING, relative ones and `from familyc
    import module` are all found."""
    sample = PACKAGE / "plan" / "_probe_for_test.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from familyc.execute import state\n"
                      "def f():\n    import familyc.report.collect\n    from ..compiler import PASSES\n"
                      "    from familyc import cli\n")
    try:
        assert sorted(m for _, m in familyc_imports(sample)) == [
            "familyc.cli", "familyc.compiler", "familyc.execute", "familyc.report.collect"]
    finally:
        sample.unlink()


def test_the_torch_free_packages_never_import_torch() -> None:
    offenders = []
    for path in sources():
        unit = unit_of(module_name(path))
        if unit not in TORCH_FREE_PACKAGES and documented_layers()[unit] != 0:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}: imports {n}" for n in names
                          if n.split(".")[0] in ("torch", "torchtitan")]
    assert not offenders, "\n".join(offenders)


def test_no_module_is_longer_than_the_style_allows() -> None:
    long = {str(p.relative_to(REPO)): n for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by noun): {long}"


# --- enumerated values ------------------------------------------------------------------------------

def schema_enums() -> dict[str, list[object]]:
    schema = json.loads((PACKAGE / "spec" / "family.schema.json").read_text())
    found: dict[str, list[object]] = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "enum" in node:
                found[path] = node["enum"]
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    return found


ENUM_CASES = [
    ("/$defs/growthStep/properties/width", enums.WIDTH_OPERATORS),
    ("/$defs/growthStep/properties/depth", enums.DEPTH_OPERATORS),
    ("/$defs/growthStep/properties/optimizer", enums.OPTIMIZERS_AFTER_GROWTH),
    ("/$defs/budget/properties/rule", enums.BUDGET_RULES),
    ("/$defs/budget/properties/params", enums.BUDGET_PARAMS),
    ("/$defs/lr/properties/rule", enums.LR_RULES),
    ("/$defs/schedule/properties/decay", enums.DECAYS),
    ("/$defs/schedule/properties/wsd_decay", enums.DECAY_TYPES),
    ("/$defs/schedule/properties/grow_from", enums.GROW_FROM),
    ("/$defs/training/properties/precision", enums.PRECISIONS),
    ("/$defs/training/properties/activation_checkpointing", enums.AC_CHOICES),
    ("/$defs/training/properties/eval/properties/interval/anyOf/0", enums.EVAL_INTERVAL_WORDS),
    ("/$defs/source/oneOf/0/properties/builtin", enums.BUILTIN_CORPORA),
    ("/$defs/data/properties/progressive_stages", enums.PROGRESSIVE_STAGES),
    ("/$defs/tokenizer/oneOf/0/properties/builtin", enums.BUILTIN_TOKENIZERS),
    ("/$defs/cluster/properties/accelerator", enums.ACCELERATOR_KEYS),
]


@pytest.mark.parametrize(("where", "values"), ENUM_CASES)
def test_the_schema_spells_each_enumeration_as_the_typed_one(where: str, values: tuple[str, ...]) -> None:
    assert sorted(schema_enums()[where]) == sorted(values)


def test_every_schema_enumeration_is_checked() -> None:
    unchecked = set(schema_enums()) - {where for where, _ in ENUM_CASES}
    assert not unchecked, f"enums of the schema without a Literal in familyc/enums.py and a case above: {unchecked}"


def test_the_accelerator_table_is_the_typed_one() -> None:
    from familyc.cost.accelerators import ACCELERATORS

    assert sorted(ACCELERATORS) == sorted(enums.ACCELERATOR_KEYS)


# --- the command-line surface -----------------------------------------------------------------------

def describe_parameter(name: str, parameter: inspect.Parameter, hint: Any) -> str:
    """One line per argument or option, from the command function's signature (typer's own models)."""
    info = parameter.default
    kind = "argument" if isinstance(info, typer.models.ArgumentInfo) else "option"
    flags = "/".join(getattr(info, "param_decls", None) or ()) or name
    default = getattr(info, "default", parameter.default)
    parts = [f"  {kind} {name}: {flags}", f"type={parameter.annotation}",
             "required" if default is ... else f"default={default.value if isinstance(default, Enum) else default!r}"]
    if isinstance(hint, type) and issubclass(hint, Enum):
        parts.append("choices=" + ",".join(str(m.value) for m in hint))
    if getattr(info, "hidden", False):
        parts.append("hidden")
    return " ".join(parts)


def cli_surface() -> str:
    """Every command and its parameters: names, flags, types, defaults (help texts may change freely)."""
    lines = []
    callback = app.registered_callback.callback if app.registered_callback else None
    commands = [("", callback)] + sorted((c.name or c.callback.__name__, c.callback) for c in app.registered_commands)
    for name, function in commands:
        lines.append(f"familyc {name}".rstrip())
        if function is not None:
            hints = typing.get_type_hints(inspect.unwrap(function))
            lines += [describe_parameter(n, p, hints.get(n)) for n, p in inspect.signature(function).parameters.items()]
    return "\n".join(lines) + "\n"


def test_the_command_line_surface_is_frozen() -> None:
    assert_golden(REPO / "tests" / "fixtures" / "cli" / "surface.txt", cli_surface())


# --- without the train extra ------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["apply", "specs/tiny.yaml", "--yes"],
    ["expand", "specs/tiny.yaml", "xs", "s", "--src", "nowhere", "--dst", "nowhere-else"],
    ["export", "runs/none", "xs", "--hf", "nowhere"],
])
def test_a_missing_train_extra_is_one_line_with_the_install_command(argv: list[str], in_repo: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    first, *rest = result.output.splitlines()
    assert first == (f"error: familyc {argv[0]} needs the train extra (torch is not installed): "
                     "pip install -e '.[train]' torch==2.13.0")
    assert rest == ["  hint: the planning commands (validate, plan, show, diff, schema) work without it"]


def test_a_lazy_import_of_the_train_extra_is_caught_by_the_error_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever path reaches torch without the up-front check still gets the one line, not an internal error."""
    from familyc.cli.app import command

    @command
    def needs_torch() -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    with pytest.raises(typer.Exit) as info:
        needs_torch()
    assert info.value.exit_code == 1


def test_an_unrelated_missing_module_stays_an_internal_error() -> None:
    from familyc.cli.app import command

    @command
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nonexistent'", name="nonexistent")

    with pytest.raises(typer.Exit) as info:
        broken()
    assert info.value.exit_code == 3


def test_the_reports_heldout_part_option_is_the_typed_one() -> None:
    from familyc.cli.report_command import HeldoutPartOption

    assert [p.value for p in HeldoutPartOption] == list(enums.HELDOUT_PARTS)
