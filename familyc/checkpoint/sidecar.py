"""The sidecar: what produced a checkpoint folder, and the sha256 of every file in it. Torch-free.

Every folder of weights familyc writes carries one, as JSON next to the weights:

    expansions/<step>/familyc-expansion.json   a growth step's output (the next stage's initial weights)
    members/<name>/familyc-member.json         a trained member (baselines/<name>/ likewise)
    <export>/familyc-export.json               a Hugging Face export

All three are one type, `Sidecar`: its kind, familyc's version, the plan and step, the member and
shape the weights are of, their dtype, where they came from (`source`), and the kind's own record
(`growth` for an expansion, `init_from` for a member, `export` for an export), then `files`. A run
resumes only from folders whose files match their sidecar (`verify_sidecar`). Sidecars written
before `schema_version` existed are still verified (their `files` are all a check needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from familyc import __version__
from familyc.enums import DepthOperator, Exactness, GqaMode, OptimizerAfterGrowth, WidthOperator
from familyc.errors import CheckpointError
from familyc.files import sha256_file, write_synced
from familyc.records import from_data, to_data
from familyc.shape import ModelShape

SIDECAR_SCHEMA_VERSION = 1
SidecarKind = Literal["expansion", "member", "export"]
SIDECAR_KINDS: tuple[SidecarKind, ...] = get_args(SidecarKind)
SIDECAR_FILES: dict[SidecarKind, str] = {
    "expansion": "familyc-expansion.json",
    "member": "familyc-member.json",
    "export": "familyc-export.json",
}
EXPANSION_SIDECAR = SIDECAR_FILES["expansion"]
MEMBER_SIDECAR = SIDECAR_FILES["member"]
EXPORT_SIDECAR = SIDECAR_FILES["export"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceRecord:
    """Where the weights were read from."""

    member: str | None = None
    shape: ModelShape | None = None
    checkpoint: str | None = None
    """The folder read (relative to the run directory when inside one)."""
    run_dir: str | None = None
    tokenizer: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthRecord:
    """The growth step that produced an expansion's weights."""

    width: WidthOperator
    depth: DepthOperator
    gqa: GqaMode
    seed: int
    noise: float
    exactness: Exactness
    reasons: tuple[str, ...] = ()
    optimizer_state: OptimizerAfterGrowth = "fresh"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportRecord:
    """A Hugging Face export."""

    family: str
    baseline: bool
    rope_scaling: dict[str, float | int | str]
    """The config's rope_scaling (torchtitan 0.2.2 always applies Llama 3.1's)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Sidecar:
    kind: SidecarKind
    member: str
    """The member whose shape the weights have."""
    shape: ModelShape
    plan_id: str | None = None
    """None: written outside a plan (tests)."""
    step: str | None = None
    """The plan step that wrote the weights."""
    dtype: str | None = None
    norm_eps: float | None = None
    """The RMSNorm eps the weights compute their function with (the growth operators may rescale it)."""
    source: SourceRecord | None = None
    growth: GrowthRecord | None = None
    init_from: str | None = None
    """A member: the expand step whose weights its training started from (None: from scratch)."""
    export: ExportRecord | None = None
    files: dict[str, str] = field(default_factory=dict)
    """{file name: sha256} of every other file in the folder."""
    familyc_version: str = __version__
    schema_version: int = SIDECAR_SCHEMA_VERSION

    @property
    def file_name(self) -> str:
        return SIDECAR_FILES[self.kind]


def write_sidecar(folder: Path, sidecar: Sidecar, files: dict[str, str]) -> Sidecar:
    """Write `sidecar` with `files` into `folder` (fsynced); return what was written."""
    written = replace(sidecar, files=dict(sorted(files.items())))
    text = json.dumps(to_data(written), indent=2, sort_keys=True) + "\n"
    write_synced(folder / written.file_name, text.encode())
    return written


def read_sidecar(folder: Path, kind: SidecarKind) -> Sidecar:
    """The folder's sidecar of `kind`; CheckpointError when it is missing, unreadable or of another version."""
    path = folder / SIDECAR_FILES[kind]
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(body, dict) or body.get("schema_version") != SIDECAR_SCHEMA_VERSION:
        version = body.get("schema_version") if isinstance(body, dict) else None
        raise CheckpointError(f"{path}: sidecar schema_version {version!r} is not {SIDECAR_SCHEMA_VERSION}",
                              hint="written by another familyc; its files can still be verified")
    sidecar = from_data(Sidecar, body, where=str(path), error=CheckpointError)
    if sidecar.kind != kind:
        raise CheckpointError(f"{path}: a sidecar of kind {sidecar.kind!r}, not {kind!r}")
    return sidecar


def sidecar_files(folder: Path, kind: SidecarKind) -> dict[str, str]:
    """{file name: sha256} the folder's sidecar lists (any version: the hashes are all a check needs)."""
    path = folder / SIDECAR_FILES[kind]
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # not JSON, not an object, no files: all mean the same here
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise CheckpointError(f"{path}: unreadable (files is not a map of names to sha256)")
    return files


def folder_digests(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file in it and in its subfolders (a member's `optimizer/`),
    its sidecars excepted: what a sidecar lists."""
    sidecars = set(SIDECAR_FILES.values())
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not (p.parent == folder and p.name in sidecars)}


def folder_kind(folder: Path) -> SidecarKind | None:
    """The kind of the one sidecar in `folder`, None when there is none or several."""
    present = [kind for kind in SIDECAR_KINDS if (folder / SIDECAR_FILES[kind]).is_file()]
    return present[0] if len(present) == 1 else None


def verify_sidecar(folder: str | Path, *, kind: SidecarKind | None = None) -> list[str]:
    """Problems with the folder's files against its sidecar's hashes; empty when all match.

    `kind` None: the folder's one sidecar, whichever kind it is (an expansion's when there is none)."""
    folder = Path(folder)
    kind = kind or folder_kind(folder) or "expansion"
    name = SIDECAR_FILES[kind]
    try:
        files = sidecar_files(folder, kind)
    except CheckpointError as exc:
        return list(exc.problems)
    found = []
    for file_name, want in sorted(files.items()):
        file = folder / file_name
        if not file.is_file():
            found.append(f"{file}: missing (the sidecar lists it)")
        elif (got := sha256_file(file)) != want:
            found.append(f"{file}: sha256 {got[:16]}… differs from the sidecar's {str(want)[:16]}…")
    found += [f"{folder / relative}: not listed in the sidecar" for relative in _present(folder, name)
              if relative not in files]
    return found


def _present(folder: Path, sidecar_name: str) -> list[str]:
    """Every entry of the folder as a sidecar would name it: files by their relative path (subfolders' files
    included), an empty subfolder by its name."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.is_symlink():
            inner = [q.relative_to(folder).as_posix() for q in sorted(p.rglob("*")) if not q.is_dir()]
            out += inner or [p.name]
        elif p.name != sidecar_name:
            out.append(p.name)
    return out
