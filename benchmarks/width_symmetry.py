"""Does noise break the symmetry of a width growth? Retrain the CPU benchmark's widened member with other noise.

    .venv/bin/python benchmarks/width_symmetry.py [--run runs/bench-cpu/seed-0/lr-per-size/run] [--noise 0 0.05 0.5]

Needs a finished run of `benchmarks/family_cpu.py` (its trained B and its train-C job). For each noise:
`familyc expand specs/bench_cpu.yaml B C --noise N --verify` from that run's trained B, then the run's own
train-C stage (the same job TOML: data position, batches, LR schedule, steps) from those weights in a fresh
dump folder, logging every step. Reports the KL the noise costs at growth, how differently the copies learned
(family_cpu.twin_divergence: 0 for copies that learn in lockstep, about 0.95 for unrelated channels), and the
mean training loss over the last 50 steps, which every noise computes on the same batches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from family_cpu import REPO, twin_divergence

LAST_STEPS = 50


def expand(run: Path, noise: float, dst: Path) -> float:
    out = subprocess.run([sys.executable, "-m", "familyc", "expand", "specs/bench_cpu.yaml", "B", "C",
                          "--src", str(run / "members" / "B"), "--dst", str(dst), "--noise", str(noise), "--verify"],
                         check=True, cwd=REPO, capture_output=True, text=True).stdout
    return float(re.search(r"mean KL\(source \|\| target\) = ([\d.e+-]+)", out).group(1))


def train(run: Path, initial: Path, dump: Path) -> tuple[list[dict], Path]:
    job = run / "steps" / "train-C" / "job.toml"
    metrics = dump / "metrics.jsonl"
    env = {**os.environ, "FAMILYC_FLAVORS": str(run / "flavors.json"), "FAMILYC_METRICS": str(metrics),
           "FAMILYC_DATA_START": str(run / "members" / "B" / "data_position.json"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(run / "assets" / "hf-datasets-cache")}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
            "familyc.backend.stage", "--job.config_file", str(job), f"--job.dump_folder={dump}",
            f"--checkpoint.initial_load_path={initial}", "--metrics.log_freq=1"]
    with (dump.parent / f"{dump.name}.log").open("w") as log:
        subprocess.run(argv, check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    final = max((dump / "checkpoint").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return records, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "bench-cpu" / "seed-0" / "lr-per-size" / "run")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.5])
    args = parser.parse_args()
    for noise in args.noise:
        with tempfile.TemporaryDirectory(prefix="familyc-symmetry-") as tmp:
            initial = Path(tmp) / "initial"
            kl = expand(args.run, noise, initial)
            records, final = train(args.run, initial, Path(tmp) / "dump")
            steps = max(r["step"] for r in records)
            last = statistics.fmean(r["loss"] for r in records if r["step"] > steps - LAST_STEPS)
            print(f"noise {noise:g}: KL at growth {kl:.2e} nats; twin divergence after {steps} steps "
                  f"{twin_divergence(initial, final):.3f}; mean training loss of the last {LAST_STEPS} steps "
                  f"{last:.4f}", flush=True)


if __name__ == "__main__":
    main()
