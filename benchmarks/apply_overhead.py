"""familyc apply's cost: one stage through familyc against the same torchtitan job run directly, and the
whole tiny family's wall time.

    .venv/bin/python benchmarks/apply_overhead.py [--rounds 2] [--member m] [--family]

Overhead: the stage is `baseline-<member>` of plans/tiny.plan.json (from scratch, so it needs no
earlier step). Each round runs, in alternation on the same machine,
  familyc: `familyc apply plans/tiny.plan.json --baselines --only baseline-<member>` (familyc's
           executor: job TOML, torchrun, familyc.backend.stage with the metrics JSONL and the
           non-finite-loss check, the executor polling the metrics, the member's promotion)
  direct:  `torchrun --standalone --nproc-per-node 2 -m torchtitan.train --job.config_file <that same
           job.toml>` with a fresh dump folder, the same environment (flavors, one thread per rank)
Tokens/s is torchtitan's own per-rank `tps` from each run's log, averaged over logged steps after
the first 10 (compile and warm-up), times the number of ranks. Rounds alternate which of the two
runs first. ratio = mean familyc / mean direct.
--family: `time familyc apply specs/tiny.yaml --yes` into a fresh run directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TPS = re.compile(r"step:\s+(\d+).*?tps:\s+([\d,]+)")
WARMUP_STEPS = 10


def _tps(log: Path) -> float:
    rates = {int(m.group(1)): float(m.group(2).replace(",", "")) for m in TPS.finditer(log.read_text())}
    steady = [v for step, v in rates.items() if step > WARMUP_STEPS]
    if not steady:
        raise SystemExit(f"{log}: no logged step after {WARMUP_STEPS}")
    return statistics.fmean(steady) * 2  # two ranks


def run_familyc(work: Path, member: str) -> tuple[float, float, Path]:
    run = work / "familyc"
    argv = [sys.executable, "-m", "familyc", "apply", str(REPO / "plans" / "tiny.plan.json"), "--yes",
            "--run-dir", str(run), "--baselines", "--only", f"baseline-{member}"]
    start = time.monotonic()
    subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    return _tps(run / "steps" / f"baseline-{member}" / "stdout.log"), wall, run


def run_direct(work: Path, job: Path, familyc_run: Path) -> tuple[float, float]:
    dump = work / "direct-dump"
    log = work / "direct.log"
    env = {**os.environ, "FAMILYC_FLAVORS": str(familyc_run / "flavors.json"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(familyc_run / "assets" / "hf-datasets-cache")}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
            "torchtitan.train", "--job.config_file", str(job), f"--job.dump_folder={dump}"]
    start = time.monotonic()
    with log.open("w") as out:
        subprocess.run(argv, check=True, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env)
    return _tps(log), time.monotonic() - start


def overhead(args: argparse.Namespace) -> None:
    familyc_tps, direct_tps, familyc_wall, direct_wall = [], [], [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="familyc-overhead-") as tmp:
            work = Path(tmp)
            familyc_first = round_ % 2 == 0  # alternate which runs first (caches, clocks)
            if not familyc_first:  # the direct run needs familyc's job file: write it without training
                subprocess.run([sys.executable, "-m", "familyc", "apply", str(REPO / "plans" / "tiny.plan.json"),
                                "--yes", "--run-dir", str(work / "familyc"), "--baselines", "--only",
                                f"baseline-{args.member}", "--launcher", "slurm"], check=True, cwd=REPO,
                               stdout=subprocess.DEVNULL)
                job = work / "familyc" / "steps" / f"baseline-{args.member}" / "job.toml"
                tps, wall = run_direct(work, job, work / "familyc")
                direct_tps.append(tps)
                direct_wall.append(wall)
                shutil.rmtree(work / "familyc")
            tps, wall, run = run_familyc(work, args.member)
            familyc_tps.append(tps)
            familyc_wall.append(wall)
            if familyc_first:
                job = run / "steps" / f"baseline-{args.member}" / "job.toml"
                tps, wall = run_direct(work, job, run)
                direct_tps.append(tps)
                direct_wall.append(wall)
            print(f"round {round_ + 1}: familyc {familyc_tps[-1]:,.0f} tok/s ({familyc_wall[-1]:.1f} s wall), "
                  f"direct {direct_tps[-1]:,.0f} tok/s ({direct_wall[-1]:.1f} s wall)", flush=True)
    ratio = statistics.fmean(familyc_tps) / statistics.fmean(direct_tps)
    print(f"baseline-{args.member}, 2 ranks: familyc {statistics.fmean(familyc_tps):,.0f} tok/s, "
          f"direct {statistics.fmean(direct_tps):,.0f} tok/s, ratio {ratio:.3f}; wall familyc "
          f"{statistics.fmean(familyc_wall):.1f} s, direct {statistics.fmean(direct_wall):.1f} s")


def family() -> None:
    run = Path(tempfile.mkdtemp(prefix="familyc-tiny-"))
    shutil.rmtree(run)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "familyc", "apply", "specs/tiny.yaml", "--yes", "--run-dir", str(run)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    print(f"familyc apply specs/tiny.yaml --yes: {time.monotonic() - start:.1f} s wall")
    shutil.rmtree(run, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--member", default="m")
    parser.add_argument("--family", action="store_true", help="time the whole tiny family instead")
    args = parser.parse_args()
    family() if args.family else overhead(args)


if __name__ == "__main__":
    main()
