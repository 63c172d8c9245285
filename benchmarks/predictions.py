"""Are the README main command's predictions and ETAs believable? Predicted against actual time, without
calibration, and every progress ETA against the truth.

    .venv/bin/python benchmarks/predictions.py [--spec specs/tiny.yaml]

Runs `familyc apply SPEC --yes` (the README's main command) into a fresh run directory with
FAMILYC_PROGRESS_TRACE set, then `familyc report --format json`. Printed:
- every training stage's predicted and actual seconds, and the family's total (the report's totals: the sum of
  the progressive steps' predicted and actual wall times); target: total within 35%;
- every ETA the progress view showed from a stage's second logged step on, against the truth (the stage's and the
  family's end, from the trace and state.json, less the time it was shown), as |ETA / truth - 1|: the largest and
  the median, per stage and for the family ETA; target: within 35%. Lines whose truth is under 10 s are left
  out of the ratio (a few seconds of finish make any ratio there meaningless) and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_TRUTH = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/tiny.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, trace = Path(tmp) / "run", Path(tmp) / "trace.jsonl"
        env = {**os.environ, "FAMILYC_PROGRESS_TRACE": str(trace)}
        started = time.time()
        subprocess.run([sys.executable, "-m", "familyc", "apply", args.spec, "--yes", "--run-dir", str(run)],
                       check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        print(f"familyc apply {args.spec}: {time.time() - started:.1f}s from the command to its exit")
        report = json.loads(subprocess.run([sys.executable, "-m", "familyc", "report", str(run), "--format", "json"],
                                           check=True, cwd=REPO, capture_output=True, text=True).stdout)
        state = json.loads((run / "state.json").read_text())
        lines = [json.loads(line) for line in trace.read_text().splitlines()]
    for s in report["steps"]:
        if s["kind"] == "train" and s["actual_seconds"]:
            print(f"  {s['id']:10} predicted {s['predicted_seconds']:7.1f}s  actual {s['actual_seconds']:7.1f}s  "
                  f"ratio {s['predicted_seconds'] / s['actual_seconds']:.2f}")
    t = report["totals"]
    print(f"total: predicted {t['predicted_seconds']:.1f}s, actual {t['actual_seconds']:.1f}s, "
          f"predicted / actual = {t['predicted_seconds'] / t['actual_seconds']:.3f}")

    ends = {k: datetime.fromisoformat(v["ended_at"]).timestamp() for k, v in state["steps"].items() if v["ended_at"]}
    family_end = max(ends.values())
    seen: dict[str, int] = {}
    errors: dict[str, list[float]] = {}
    skipped = 0
    for line in lines:
        seen[line["step_id"]] = seen.get(line["step_id"], 0) + 1
        if seen[line["step_id"]] < 2:  # the first logged step: the plan's prediction, not yet a rate
            continue
        for key, end in (("stage", ends[line["step_id"]]), ("family", family_end)):
            eta = line["eta" if key == "stage" else "family_eta"]
            truth = end - line["time"]
            if eta is None or truth < MIN_TRUTH:
                skipped += 1
                continue
            errors.setdefault(key if key == "family" else line["step_id"], []).append(abs(eta / truth - 1))
    for key, values in errors.items():
        print(f"  ETA {key:10} {len(values):3} shown: max |ETA/truth - 1| {max(values):.3f}, "
              f"median {statistics.median(values):.3f}")
    print(f"  ({skipped} ETAs with under {MIN_TRUTH:.0f}s to go left out; ended_at has 1 s resolution)")


if __name__ == "__main__":
    main()
