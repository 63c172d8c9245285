"""Rehearsal benchmark: `familyc rehearse` on the GPU specs' plans, its time, and the memory model against it.

    .venv/bin/python benchmarks/rehearse.py [--plans NAME ...] [--update BENCHMARKS.md]

Each plan (default: llama_1b_8b, gpu_check, llama_8b_70b) is rehearsed by `familyc rehearse plans/NAME.plan.json
--format json` in a process of its own, timed from the outside (the issue's target: the flagship's four stages
in 10 minutes on 2 CPU cores). Writes benchmarks/results/rehearse.json with every stage's planned and rehearsed
parts, and the markdown section "## Rehearsal".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HEADING = "## Rehearsal"
PLANS = ("llama_1b_8b", "gpu_check", "llama_8b_70b")
TARGET_SECONDS = 600.0
"""The flagship's rehearsal on 2 CPU cores (issue 13)."""
PARTS = ("parameters", "gradients", "optimizer", "working", "activations", "logits", "temporaries")
GIB = 2**30


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rehearse(name: str) -> dict[str, Any]:
    familyc = Path(sys.executable).parent / "familyc"
    start = time.perf_counter()
    proc = subprocess.run([str(familyc), "rehearse", f"plans/{name}.plan.json", "--format", "json"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1) or "{" not in proc.stdout:
        raise SystemExit(f"familyc rehearse plans/{name}.plan.json failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    body = json.loads(proc.stdout[proc.stdout.index("{"):])
    body["wall_seconds"] = round(seconds, 1)
    body["exit_code"] = proc.returncode
    return body


def _worst_part(stage: dict[str, Any]) -> str:
    """The planned part furthest from its rehearsed counterpart, as `name ratio` (parts of at least 1 MiB)."""
    ratios = {p: stage["rehearsed"][p] / stage["planned"][p] for p in PARTS if stage["planned"][p] >= 2**20}
    name = max(ratios, key=lambda p: abs(ratios[p] - 1))
    return f"{name} {ratios[name]:.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [HEADING, "", f"`{result['command']}` ({result['date']}, {result['machine']}).", "",
             "Every training stage rehearsed at its real shape and world size on fake tensors (rank 0 of N, a fake "
             "process group, torchtitan 0.2.2's own parallelization, AdamW and loss, eager); planned is the plan's "
             "memory model (cost model 2, calibrated part by part against these rehearsals: familyc/cost/memory.py); "
             "usable is the accelerator's memory less the 10% headroom.", "",
             "| plan | step | devices | micro x accum | AC | planned | rehearsed | ratio | worst part | usable | fits "
             "| FLOPs/token counted / planned | seconds |",
             "|---|---|---:|---|---|---:|---:|---:|---|---:|---|---:|---:|"]
    for name, body in result["plans"].items():
        for s in body["stages"]:
            r = s["rehearsed"]
            lines.append(
                f"| {name} | {s['step']} | {s['devices']} | {s['micro_batch']} x {s['grad_accum']} | "
                f"{s['activation_checkpointing']} | {s['planned']['total'] / GIB:.2f} GiB | "
                f"{r['total'] / GIB:.2f} GiB | "
                f"{r['total'] / s['planned']['total']:.4f} | {_worst_part(s)} | {s['capacity'] / GIB:.1f} GiB | "
                f"{'yes' if s['fits'] else 'NO'} | {s['flops_per_token_counted'] / s['flops_per_token_planned']:.5f} | "
                f"{s['seconds']:.0f} |")
    lines += ["", "| plan | growth steps | loads | tensors written (computed on fake tensors) | rehearsal wall time |",
              "|---|---|---|---|---:|"]
    for name, body in result["plans"].items():
        growths = body["growths"]
        lines.append(f"| {name} | {len(growths)} | {'all' if all(g['ok'] for g in growths) else 'NOT all'} | "
                     + ", ".join(f"{g['tensors']} ({g['computed']})" for g in growths)
                     + f" | {body['wall_seconds']:.0f} s |")
    flagship = result["plans"].get("llama_1b_8b")
    if flagship is not None:
        met = flagship["wall_seconds"] <= TARGET_SECONDS
        lines += ["", f"Target: the flagship's four stages rehearse in {TARGET_SECONDS / 60:.0f} minutes on 2 CPU "
                      f"cores: {'met' if met else 'MISSED'} ({flagship['wall_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", nargs="+", default=list(PLANS))
    parser.add_argument("--update", type=Path)
    args = parser.parse_args()
    plans: dict[str, Any] = {}
    for name in args.plans:
        print(f"rehearsing plans/{name}.plan.json ...", flush=True)
        plans[name] = rehearse(name)
        print(f"  {plans[name]['wall_seconds']:.0f} s, ok {plans[name]['ok']}", flush=True)
    result = {"command": "benchmarks/rehearse.py" + (f" --plans {' '.join(args.plans)}" if args.plans != list(PLANS)
                                                     else "") + (f" --update {args.update}" if args.update else ""),
              "date": time.strftime("%Y-%m-%d"), "machine": machine(), "plans": plans}
    result["command"] = ".venv/bin/python " + result["command"]
    out = REPO / "benchmarks" / "results" / "rehearse.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    if args.update:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from family_cpu import update

        update(args.update, markdown(result), HEADING)


if __name__ == "__main__":
    main()
