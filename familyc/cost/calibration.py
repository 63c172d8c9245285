"""Calibration profiles: what a real run measured, for the next plan to predict from. Torch-free.

`familyc calibrate RUN_DIR -o PROFILE` writes one; `familyc plan SPEC --profile PROFILE` uses it:
for an accelerator and precision it measured, a stage's MFU is the one measured for the same
member shape and devices when there is one, else the profile's FLOP-weighted mean MFU; and every
stage's predicted time gains the measured per-stage start-up (process start, imports, compile,
data loading, the final save), split as familyc.cost.startup splits it: before the first step (compile
included: the run compiled or it did not) and after the last. Time stays FLOPs / (devices x peak x MFU) +
start-up: the same formula, with measured inputs. A profile written before the split (no `launch_seconds`)
counts its whole start-up before the first step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.errors import FamilycError
from familyc.files import atomic_write

PROFILE_SCHEMA_VERSION = 1
PROFILE_KIND = "familyc-calibration"
SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "seq_len")


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    shape: tuple[int, ...]
    """SHAPE_FIELDS of the member."""
    devices: int
    mfu: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    path: str
    sha256: str
    accelerator: str
    precision: str
    mfu: float
    stage_overhead_seconds: float
    """The whole start-up per stage: launch_seconds + finish_seconds."""
    launch_seconds: float
    finish_seconds: float
    measured: tuple[Measured, ...]

    def mfu_for(self, shape: tuple[int, ...], devices: int) -> float:
        for m in self.measured:
            if m.shape == shape and m.devices == devices:
                return m.mfu
        return self.mfu


def shape_key(member: Any) -> tuple[int, ...]:
    return tuple(int(getattr(member, f)) for f in SHAPE_FIELDS)


def read_profile(path: Path) -> Profile:
    try:
        raw = path.read_bytes()
        body = json.loads(raw)
    except FileNotFoundError:
        raise FamilycError(f"{path}: no such calibration profile",
                           hint="write one with `familyc calibrate RUN_DIR -o PROFILE`") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FamilycError(f"{path} is not a calibration profile: {exc}") from None
    if not isinstance(body, dict) or body.get("kind") != PROFILE_KIND:
        raise FamilycError(f"{path} is not a familyc calibration profile (kind {PROFILE_KIND!r})")
    if body.get("schema_version") != PROFILE_SCHEMA_VERSION:
        raise FamilycError(f"{path}: profile schema version {body.get('schema_version')!r} is not "
                           f"{PROFILE_SCHEMA_VERSION}", hint="calibrate again with this familyc")
    try:
        measured = tuple(Measured(shape=tuple(int(s[f]) for f in SHAPE_FIELDS), devices=int(s["devices"]),
                                  mfu=float(s["mfu"])) for s in body["stages"] if s.get("mfu"))
        overhead = float(body["stage_overhead_seconds"])
        finish = float(body.get("finish_seconds", 0.0))
        profile = Profile(path=path.as_posix(), sha256=hashlib.sha256(raw).hexdigest(),
                          accelerator=str(body["accelerator"]), precision=str(body["precision"]),
                          mfu=float(body["mfu"]), stage_overhead_seconds=overhead,
                          launch_seconds=float(body.get("launch_seconds", overhead - finish)), finish_seconds=finish,
                          measured=measured)
    except (KeyError, TypeError, ValueError) as exc:
        raise FamilycError(f"{path} is malformed: {exc}") from None
    if not 0 < profile.mfu <= 1 or min(profile.launch_seconds, profile.finish_seconds) < 0:
        raise FamilycError(f"{path}: implausible measurements (MFU {profile.mfu}, start-up "
                           f"{profile.stage_overhead_seconds} s)")
    return profile


def write_profile(path: Path, body: dict[str, Any]) -> None:
    body = {"schema_version": PROFILE_SCHEMA_VERSION, "kind": PROFILE_KIND, **body}
    atomic_write(path, json.dumps(body, indent=2) + "\n")
