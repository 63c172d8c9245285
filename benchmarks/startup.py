"""A CPU training stage's fixed costs and training rate, measured for familyc/cost/startup.py and specs/tiny.yaml.

    .venv/bin/python benchmarks/startup.py [--rounds 3] [--out benchmarks/results/startup.json]

Each round applies benchmarks/specs/startup_cpu.yaml (three members, 32 steps each, 2 ranks) into a fresh run
directory twice, with torch.compile and with `--no-compile`, alternating which goes first. From every stage:
- its start-up, as the run records it and `familyc calibrate` reads it (familyc.execute.metrics.stage_startup):
  launch = from torchrun's start to the first logged step less one steady step; finish = from the last logged
  step to the stage's end less the unlogged steps;
- its steady seconds per step (the median of torchtitan's end_to_end_s after the first logged interval; held-out
  evaluations are not in it) against the plan's FLOPs per step;
- its held-out evaluations' seconds (stage_eval's own timing; step 0's, which traces the model, left out)
  against the plan's FLOPs per evaluation.
Fitted over the compiled stages (specs/tiny.yaml compiles), by least squares:
    seconds per step = step_seconds + FLOPs per step / R,   R = devices x peak x MFU,
then per evaluation: eval_seconds = the median of (its seconds - its FLOPs / R).
Printed and written to --out: every stage's numbers, launch = the median launch without compile, compile = the
median launch with compile - launch, finish = the median finish over all stages, step_seconds, eval_seconds and
the MFU: familyc/cost/startup.py's `cpu` entry and specs/tiny.yaml's cluster.mfu. The tiny family (the README's
main command, benchmarks/predictions.py) is not used here: it checks these numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "benchmarks" / "specs" / "startup_cpu.yaml"
PEAK = 83.2e9
"""The cpu accelerator's fp32 peak per device (familyc/cost/accelerators.py); the MFU is against it."""


def apply(run: Path, *, compile: bool) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "familyc", "apply", str(SPEC), "--yes", "--run-dir", str(run)]
    if not compile:
        argv.append("--no-compile")
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    state = json.loads((run / "state.json").read_text())
    plan = {s["id"]: s for s in json.loads((run / "plan.json").read_text())["steps"]}
    found = []
    for step_id, st in state["steps"].items():
        startup = st["metrics"].get("startup")
        if st["kind"] != "train" or not startup:
            continue
        step = plan[step_id]
        lines = [json.loads(line) for line in (run / "steps" / step_id / "metrics.jsonl").read_text().splitlines()]
        evals = [r["seconds"] for r in lines if r.get("kind") == "eval" and r["step"] > 0]
        found.append({"step": step_id, "compile": compile, "wall": st["metrics"]["wall_seconds"], **startup,
                      "devices": step["devices"], "flops_per_step": step["flops_per_step"],
                      "flops_per_eval": step["eval"]["flops"] / step["eval"]["evaluations"],
                      "eval_seconds": evals})
    return found


def fit(stages: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares of seconds per step on FLOPs per step: the intercept is the fixed cost of a step, the slope
    1 / R; then the fixed cost of an evaluation at that rate."""
    xs = [s["flops_per_step"] for s in stages]
    ys = [s["steady_step_seconds"] for s in stages]
    slope, intercept = statistics.linear_regression(xs, ys)
    rate = 1 / slope
    devices = stages[0]["devices"]
    per_eval = [seconds - s["flops_per_eval"] / rate for s in stages for seconds in s["eval_seconds"]]
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    return {"step_seconds": intercept, "eval_seconds": statistics.median(per_eval), "rate": rate,
            "mfu": rate / (devices * PEAK), "max_abs_residual": max(abs(r) for r in residuals),
            "mean_step_seconds": statistics.fmean(ys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    stages: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for compile in ((True, False) if r % 2 == 0 else (False, True)):
                found = apply(Path(tmp) / f"run-{r}-{compile}", compile=compile)
                stages += [{**s, "round": r + 1} for s in found]
                for s in found:
                    print(f"round {r + 1} compile={compile!s:5} {s['step']:8} wall {s['wall']:6.1f}s  "
                          f"launch {s['launch_seconds']:5.1f}s  finish {s['finish_seconds']:5.1f}s  "
                          f"steady {s['steady_step_seconds']:.3f} s/step  "
                          f"eval {statistics.median(s['eval_seconds']):.3f} s", flush=True)
    plain = [s for s in stages if not s["compile"]]
    compiled = [s for s in stages if s["compile"]]
    launch = statistics.median(s["launch_seconds"] for s in plain)
    result = {
        "command": "benchmarks/startup.py --rounds " + str(args.rounds),
        "launch_seconds": launch,
        "compile_seconds": statistics.median(s["launch_seconds"] for s in compiled) - launch,
        "finish_seconds": statistics.median(s["finish_seconds"] for s in stages),
        "compiled": fit(compiled),
        "not_compiled": fit(plain),
        "stages": stages,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    c = result["compiled"]
    print(f"\nlaunch {launch:.1f}s, compile {result['compile_seconds']:.1f}s, finish {result['finish_seconds']:.1f}s "
          f"(medians over {len(plain)} stages without and {len(compiled)} with torch.compile)")
    for key in ("compiled", "not_compiled"):
        f = result[key]
        print(f"{key}: {f['step_seconds']:.3f} s per step + FLOPs / {f['rate'] / 1e9:.1f} GFLOP/s (MFU "
              f"{f['mfu']:.3f}), {f['eval_seconds']:.3f} s per evaluation; largest residual "
              f"{f['max_abs_residual']:.3f} s/step of a mean {f['mean_step_seconds']:.3f}")
    print(f"-> familyc/cost/startup.py cpu: step_seconds={c['step_seconds']:.3f}, eval_seconds={c['eval_seconds']:.3f};"
          f" specs/tiny.yaml cluster.mfu: {c['mfu']:.2f}; written to {args.out}")


if __name__ == "__main__":
    main()
