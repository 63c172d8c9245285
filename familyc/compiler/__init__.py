"""The compiler: spec -> plan through an ordered tuple of pure passes, one per file.

Each pass takes the Compilation and returns an updated copy; none touches the file system,
the clock or the network, so the same spec always compiles to the same plan bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from familyc.compiler.assign_budgets import assign_budgets
from familyc.compiler.attach_costs import attach_costs
from familyc.compiler.check_plan import check_plan
from familyc.compiler.check_spec import check_spec
from familyc.compiler.derive_lr import derive_lr
from familyc.compiler.derive_shapes import derive_shapes
from familyc.compiler.lower_to_cluster import lower_to_cluster
from familyc.compiler.resolve_defaults import resolve_defaults
from familyc.compiler.state import Compilation, Pass
from familyc.cost.calibration import Profile, read_profile
from familyc.errors import FamilycError, SpecError, UsageError
from familyc.plan.ir import Plan, SpecRef, with_plan_id
from familyc.spec.loader import LoadedDocument, load_yaml
from familyc.spec.numbers import normalize_numbers
from familyc.spec.schema import schema_diagnostics

PASSES: tuple[tuple[str, Pass], ...] = (
    ("resolve_defaults", resolve_defaults),
    ("check_spec", check_spec),
    ("derive_shapes", derive_shapes),
    ("assign_budgets", assign_budgets),
    ("derive_lr", derive_lr),
    ("lower_to_cluster", lower_to_cluster),
    ("attach_costs", attach_costs),
    ("check_plan", check_plan),
)


def display_path(path: Path) -> str:
    """The spec's path as the plan records it: relative to the working directory when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def read_spec(path: Path) -> tuple[bytes, str]:
    """The spec's bytes and its display path; a missing or unreadable file is a usage error."""
    try:
        return path.read_bytes(), display_path(path)
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a spec file") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="specs live in specs/, e.g. specs/tiny.yaml") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None


def load_document(raw: bytes, file: str) -> LoadedDocument:
    """YAML and schema: raise SpecError with every problem found."""
    try:
        doc = load_yaml(raw, file)
    except SpecError as exc:
        raise SpecError(exc.diagnostics, more_checks_pending=True) from None
    doc = normalize_numbers(doc)  # `5e-2` is a string to YAML 1.1; see familyc/spec/numbers.py
    problems = schema_diagnostics(doc)
    if problems:
        raise SpecError(problems, more_checks_pending=True)
    return doc


def compile_document(doc: LoadedDocument, spec_ref: SpecRef, profile: Profile | None = None) -> Plan:
    state = Compilation(doc=doc, spec_ref=spec_ref, profile=profile)
    for _name, run in PASSES:
        state = run(state)
    assert state.plan is not None
    return with_plan_id(state.plan)


def compile_spec(path: Path, *, profile: Path | None = None) -> Plan:
    """Read, validate and compile one spec file. Raises SpecError, UsageError, FamilycError (profile)."""
    raw, shown = read_spec(path)
    doc = load_document(raw, shown)
    measured = None if profile is None else replace(read_profile(profile), path=display_path(profile))
    plan = compile_document(doc, SpecRef(path=shown, sha256=hashlib.sha256(raw).hexdigest()), measured)
    if measured is not None and (measured.accelerator, measured.precision) != (plan.cluster.accelerator,
                                                                              plan.cluster.precision):
        raise FamilycError(f"{profile} measured {measured.accelerator}/{measured.precision}; {shown} plans "
                           f"{plan.cluster.accelerator}/{plan.cluster.precision}",
                           hint="calibrate on a run of the same accelerator and precision")
    return plan
