"""A CPU training stage's start-up, measured for familyc/cost/startup.py.

    .venv/bin/python benchmarks/startup.py [--rounds 2]

Each round applies benchmarks/specs/startup_cpu.yaml (two members, 24 steps each, 2 ranks) into a fresh run
directory twice, with torch.compile and with `--no-compile`, alternating which goes first. Every stage's
start-up is what the run itself records and `familyc calibrate` reads (familyc.execute.metrics.stage_startup):
launch = the time from torchrun's start to the first logged step less one steady step; finish = from the last
logged step to the stage's end less the unlogged steps. Printed: every stage's numbers, then
launch = median launch without compile, compile = median launch with compile - launch, finish = median finish
over all stages: the constants of familyc/cost/startup.py's `cpu` entry. The tiny family (the README's main
command, benchmarks/predictions.py) is not used here: it checks these numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "benchmarks" / "specs" / "startup_cpu.yaml"


def apply(run: Path, *, compile: bool) -> list[dict[str, float]]:
    argv = [sys.executable, "-m", "familyc", "apply", str(SPEC), "--yes", "--run-dir", str(run)]
    if not compile:
        argv.append("--no-compile")
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    state = json.loads((run / "state.json").read_text())
    found = []
    for step_id, st in state["steps"].items():
        startup = st["metrics"].get("startup")
        if st["kind"] == "train" and startup:
            found.append({"step": step_id, "wall": st["metrics"]["wall_seconds"], **startup})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for compile in ((True, False) if r % 2 == 0 else (False, True)):
                stages = apply(Path(tmp) / f"run-{r}-{compile}", compile=compile)
                results[compile] += stages
                for s in stages:
                    print(f"round {r + 1} compile={compile!s:5} {s['step']:8} wall {s['wall']:6.1f}s  "
                          f"launch {s['launch_seconds']:5.1f}s  finish {s['finish_seconds']:5.1f}s  "
                          f"steady {s['steady_step_seconds']:.3f} s/step", flush=True)
    launch = statistics.median(s["launch_seconds"] for s in results[False])
    compiled = statistics.median(s["launch_seconds"] for s in results[True])
    finish = statistics.median(s["finish_seconds"] for s in results[True] + results[False])
    print(f"\nlaunch {launch:.1f}s, compile {compiled - launch:.1f}s, finish {finish:.1f}s "
          f"(medians over {len(results[False])} stages without and {len(results[True])} with torch.compile)")


if __name__ == "__main__":
    main()
