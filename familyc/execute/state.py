"""state.json: what a run has done, step by step; written atomically after every change.

    {"schema_version": 1, "plan_id": ..., "family": ..., "spec": {...},
     "steps": {"train-xs": {"kind": "train", "status": "completed", "attempts": 1,
                            "started_at": "...", "ended_at": "...", "log": "steps/train-xs/stdout.log",
                            "artefacts": {"members/xs/__0_0.distcp": "<sha256>", ...},
                            "metrics": {...}, "error": null}, ...}}

Statuses: pending (not started), running (started, not finished: a crash leaves this), completed,
failed. The file is the run's memory between `familyc apply` invocations: a completed step is
skipped once its artefacts verify; anything else is run again (resuming from its checkpoint).
Written to a temporary file, fsynced, then renamed over the old one, so a crash at any instant
leaves either the old or the new state, never a torn one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from familyc.enums import PENDING, STEP_KINDS, STEP_STATUSES, StepKind, StepStatus
from familyc.errors import FamilycError
from familyc.files import atomic_write

STATE_SCHEMA_VERSION = 1


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(kw_only=True, slots=True)
class StepState:
    kind: StepKind
    status: StepStatus = PENDING
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    log: str | None = None
    """The step's log file, relative to the run directory."""
    artefacts: dict[str, str] = field(default_factory=dict)
    """Path relative to the run directory -> sha256."""
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "attempts": self.attempts, "started_at": self.started_at,
                "ended_at": self.ended_at, "log": self.log, "artefacts": dict(sorted(self.artefacts.items())),
                "metrics": self.metrics, "error": self.error}


@dataclass(kw_only=True, slots=True)
class RunState:
    path: Path
    plan_id: str
    family: str
    spec: dict[str, str]
    steps: dict[str, StepState]
    created_at: str

    def step(self, step_id: str) -> StepState:
        return self.steps[step_id]

    def save(self) -> None:
        body = {"schema_version": STATE_SCHEMA_VERSION, "plan_id": self.plan_id, "family": self.family,
                "spec": self.spec, "created_at": self.created_at,
                "steps": {k: v.to_data() for k, v in self.steps.items()}}
        atomic_write(self.path, json.dumps(body, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunState:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FamilycError(f"{path}: no such file", hint="is this a familyc run directory?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FamilycError(f"{path} is not a readable familyc state file: {exc}",
                               hint="state.json is written atomically; restore it or start a new run directory"
                               ) from None
        if not isinstance(body, dict) or body.get("schema_version") != STATE_SCHEMA_VERSION:
            raise FamilycError(f"{path}: not a familyc run state of schema version {STATE_SCHEMA_VERSION}")
        try:
            steps = {}
            for step_id, data in body["steps"].items():
                if data.get("status") not in STEP_STATUSES:
                    raise ValueError(f"step {step_id}: unknown status {data.get('status')!r}")
                if data.get("kind") not in STEP_KINDS:
                    raise ValueError(f"step {step_id}: unknown kind {data.get('kind')!r}")
                steps[step_id] = StepState(**{k: data.get(k) for k in StepState.__slots__ if k in data})
            return cls(path=path, plan_id=body["plan_id"], family=body["family"], spec=body["spec"], steps=steps,
                       created_at=body["created_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FamilycError(f"{path} is malformed: {exc}") from None
