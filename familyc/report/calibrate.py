"""`familyc calibrate`: a run's measured throughput as a profile the next plan predicts from."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from familyc.cost.calibration import SHAPE_FIELDS, write_profile
from familyc.enums import COMPLETED
from familyc.errors import FamilycError
from familyc.execute.rundir import open_existing
from familyc.plan.steps import TrainStep


def calibrate(run_dir: Path, output: Path) -> dict[str, Any]:
    """Write the profile; return its body. MFU is measured against the accelerator table's peak (for
    cpu, familyc's reference core), so a plan that uses it reproduces the measured throughput."""
    _, plan, state = open_existing(run_dir)
    stages = []
    for step in plan.all_steps():
        st = state.steps.get(step.id)
        if not isinstance(step, TrainStep) or st is None or st.status != COMPLETED:
            continue
        m = st.metrics
        if not m.get("train_seconds") or not m.get("flops"):
            continue
        member = plan.member(step.member)
        devices = int(m.get("world_size") or step.devices)
        startup = m.get("startup")
        # with the start-up measured apart, the training is its steps at the steady rate (step 1's compile is in
        # the launch); without, torchtitan's logged intervals
        seconds = startup["steady_step_seconds"] * step.num_steps if startup else m["train_seconds"]
        mfu = m["flops"] / (seconds * devices * plan.cluster.peak_flops)
        stages.append({"step": step.id, **{f: getattr(member, f) for f in SHAPE_FIELDS}, "devices": devices,
                       "tokens": m.get("tokens"), "flops": m["flops"], "train_seconds": round(seconds, 3),
                       "wall_seconds": m.get("wall_seconds"), "startup": startup,
                       "tokens_per_second": round(m.get("tokens_per_second", 0), 1), "mfu": round(mfu, 6)})
    if not stages:
        raise FamilycError(f"{run_dir} has no completed training stage with metrics to calibrate from",
                           hint="familyc apply it first")
    total_flops = sum(s["flops"] for s in stages)
    busy = sum(s["train_seconds"] * s["devices"] * plan.cluster.peak_flops for s in stages)
    measured = [s["startup"] for s in stages if s["startup"]]
    if measured:
        launch = statistics.median(s["launch_seconds"] for s in measured)
        finish = statistics.median(s["finish_seconds"] for s in measured)
    else:  # a run from before the split: wall time less the logged intervals, all before the first step
        overheads = [s["wall_seconds"] - s["train_seconds"] for s in stages
                     if isinstance(s["wall_seconds"], int | float)]
        launch, finish = (statistics.median(overheads) if overheads else 0.0), 0.0
    body = {"source": {"run_dir": str(run_dir), "plan_id": plan.plan_id, "family": plan.family.name},
            "accelerator": plan.cluster.accelerator, "precision": plan.cluster.precision,
            "peak_flops": plan.cluster.peak_flops, "mfu": round(total_flops / busy, 6),
            "stage_overhead_seconds": round(launch + finish, 3), "launch_seconds": round(launch, 3),
            "finish_seconds": round(finish, 3), "stages": stages}
    write_profile(output, body)
    return body
