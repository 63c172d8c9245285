"""The run directory: one plan's artefacts and state. Other commands (report, calibrate, export, status) read it.

    RUN_DIR/
      state.json                   what has been done (familyc.execute.state), written atomically
      plan.json                    the plan being executed, byte for byte
      flavors.json                 the members' sizes for torchtitan (familyc.backend.flavors)
      inputs.json                  the data and tokenizer the run trains with (familyc.execute.data):
                                   folders, each source's resolved revision, the tokenizer's sha256
      data.json                    the data manifest familyc's loader reads (every source but a lone
                                   builtin corpus): shards (read in place), weights, held-out rules
      assets/                      the built-in corpus and tokenizer, when the spec uses them; the
                                   held-out sample of the sources (heldout-<key>/docs.jsonl)
      steps/<step-id>/             per step: job.toml, stdout.log, metrics.jsonl, dump/ (torchtitan's
                                   checkpoints, kept until the member is safely in members/)
      members/<name>/              each progressive member's final weights: a DCP folder (model only,
                                   fp32) and its sidecar familyc-member.json (sha256 of every file)
      baselines/<name>/            the same for members trained from scratch (apply --baselines)
      stable/<name>/               a branching member's weights at the end of its stable phase
                                   (lr.schedule.grow_from: stable): what its growth and its decay branch read
      expansions/<step-id>/        a growth step's output: the next stage's initial weights
                                   (DCP folder and familyc-expansion.json)
      report/                      what `familyc report` writes (and its evaluation cache)

`open_run_dir` creates or reopens the directory for a plan that is about to run; `open_existing` is
the one way every other command opens a run that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from familyc.checkpoint.sidecar import SidecarKind
from familyc.enums import PENDING
from familyc.errors import FamilycError, PlanError
from familyc.execute.state import RunState, StepState, now
from familyc.files import atomic_write, sha256_file
from familyc.plan import ir
from familyc.plan.ir import Plan, Step
from familyc.plan.steps import ExpandStep

STATE_FILE = "state.json"
PLAN_FILE = "plan.json"
FLAVORS_FILE = "flavors.json"
LOCK_FILE = ".lock"
DATA_POSITION = "data_position.json"
"""Each rank's position in the data after a stage's last step (in its step folder, then in its member's)."""


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def flavors_path(self) -> Path:
        return self.root / FLAVORS_FILE

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def datasets_cache(self) -> Path:
        return self.root / "assets" / "hf-datasets-cache"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def step_dir(self, step_id: str) -> Path:
        return self.root / "steps" / step_id

    def weights(self, plan: Plan, step: Step) -> Path:
        """Where a step's output weights live."""
        if isinstance(step, ExpandStep):
            return self.root / "expansions" / step.id
        if step.phase == "stable":
            return self.root / "stable" / step.member
        return self.root / ("baselines" if plan.is_baseline(step) else "members") / step.member

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    def is_run_dir(self) -> bool:
        return self.state_path.is_file()


def sidecar_kind(step: Step) -> SidecarKind:
    """The kind of sidecar a step's weights carry."""
    return "expansion" if isinstance(step, ExpandStep) else "member"


def open_run_dir(root: Path, plan: Plan) -> tuple[RunDir, RunState]:
    """Create the run directory for `plan`, or reopen it; refuse one made by another plan."""
    run = RunDir(root)
    if run.is_run_dir():
        state = RunState.load(run.state_path)
        if state.plan_id != plan.plan_id:
            raise PlanError(f"{root} was made by plan {state.plan_id}, not {plan.plan_id} "
                            f"(family {state.family})",
                            hint="use another --run-dir for a new plan, or apply the plan it was made by "
                                 f"({run.plan_path})")
        recorded = ir.read_plan(run.plan_path)  # refuses a plan.json edited by hand (its plan_id)
        if recorded.plan_id != plan.plan_id:
            raise PlanError(f"{run.plan_path} is plan {recorded.plan_id}, not {plan.plan_id}, although state.json "
                            "names it", hint="the run directory was edited by hand; restore plan.json or start a "
                                             "new run")
        for step in plan.all_steps():  # a state made before --baselines lacks the baseline steps
            state.steps.setdefault(step.id, StepState(kind=step.kind))
        return run, state
    if plan.schema_version != ir.SCHEMA_VERSION:  # read for old runs, never the start of a new one
        raise PlanError(f"plan {plan.plan_id} is of schema version {plan.schema_version}; a new run starts from a "
                        f"plan of version {ir.SCHEMA_VERSION}", hint=f"re-plan: familyc plan {plan.spec.path} -o FILE")
    check_usable(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(run.plan_path, ir.dumps(plan))
    state = RunState(path=run.state_path, plan_id=plan.plan_id, family=plan.family.name,
                     spec={"path": plan.spec.path, "sha256": plan.spec.sha256},
                     steps={s.id: StepState(kind=s.kind, status=PENDING) for s in plan.all_steps()},
                     created_at=now())
    state.save()
    return run, state


def open_existing(root: Path) -> tuple[RunDir, Plan, RunState]:
    """A run directory that `familyc apply` made: its plan and state, checked to belong together."""
    run = RunDir(root)
    hint = "give the folder familyc apply trained in (--run-dir; default runs/<family>-<plan id>)"
    if not root.is_dir():
        raise FamilycError(f"{root} is not a familyc run directory (no {STATE_FILE}): no such directory", hint=hint)
    missing = next((p.name for p in (run.state_path, run.plan_path) if not p.is_file()), None)
    if missing:
        raise FamilycError(f"{root} is not a familyc run directory (no {missing})", hint=hint)
    try:
        plan = ir.loads(run.plan_path.read_text(encoding="utf-8"), source=str(run.plan_path))
    except (OSError, UnicodeDecodeError) as exc:
        raise FamilycError(f"{run.plan_path}: cannot read the run's plan ({exc})") from None
    state = RunState.load(run.state_path)
    if plan.plan_id != state.plan_id:
        raise FamilycError(f"{run.plan_path} is plan {plan.plan_id}, but {run.state_path} belongs to plan "
                           f"{state.plan_id}", hint="the run directory was edited by hand; restore plan.json")
    return run, plan, state


def check_usable(root: Path) -> None:
    """Refuse a --run-dir that holds something other than a run (before anything is written there)."""
    if root.exists() and not root.is_dir():
        raise FamilycError(f"{root} exists and is not a directory", hint="choose an empty or new --run-dir")
    if root.exists() and not RunDir(root).is_run_dir() and any(p.name != LOCK_FILE for p in root.iterdir()):
        raise FamilycError(f"{root} exists and is not a familyc run directory (no {STATE_FILE})",
                           hint="choose an empty or new --run-dir")


def check_spec_unchanged(plan: Plan, *, plan_file: Path | None) -> str | None:
    """Refuse a plan whose spec changed since it was planned; a warning when the spec is gone.

    The spec path in the plan is relative to where `familyc plan` ran; it is looked up there and next
    to the plan file's directory's parent (plans/ and specs/ side by side)."""
    candidates = [Path(plan.spec.path)]
    if plan_file is not None:
        candidates.append(plan_file.resolve().parent.parent / plan.spec.path)
    for path in candidates:
        if path.is_file():
            digest = sha256_file(path)
            if digest != plan.spec.sha256:
                raise PlanError(f"{path} changed since plan {plan.plan_id} was made from it "
                                f"(sha256 {digest[:12]}, the plan says {plan.spec.sha256[:12]})",
                                hint=f"re-plan: familyc plan {plan.spec.path} -o <plan file>, review the diff, "
                                     "then apply the new plan")
            return None
    return f"cannot find the spec {plan.spec.path} to check that it is unchanged; applying the plan as it is"
