"""Which growth configuration should the CPU family use? A screen on the validation half, never on the test half.

    .venv/bin/python benchmarks/family_cpu_ablation.py [--seed 0] [--only NAME ...] [--work DIR]
                                                       [--update BENCHMARKS.md] [--summarize]

Every configuration is the progressive family of specs/bench_cpu.yaml (LR per size, no baselines: the independent
family does not grow, so no configuration changes it) with one change to its growth steps, trained with the same
seed (model initialisation, growth noise, data order), so the configurations differ by the change alone:

  as-is                   the spec as it is (the screen's choice): B -> C with the `zero` width operator
  copies-noise            B -> C as whole copies plus noise of 5% of each tensor's std (the default before)
  copies-noise-half-peak  that, and every growth's warmup climbs to half of the member's peak LR only
  carry                   the spec, and every growth carries AdamW's moments (`optimizer: carry`)
  carry-no-warmup         that, and no warmup after a growth (the carried moments make the first updates tame)
  wsd                     the spec on a warmup-stable-decay schedule (decay over the last 20%, linear), growing
                          each member's final (decayed) weights
  wsd-branch              that, family-wide (lr.schedule.grow_from: stable): growth from the stable phase's weights,
                          each released member a decay branch of its own
  wsd-branch-carry        that, and every growth carries the stable phase's AdamW moments

The other rows start each grown stage with a fresh AdamW.

Chosen by, fixed before any run: the lowest mean validation loss over the grown members (B, C, D); the head start
(largest rise of a grown stage's held-out curve above its step 0) is reported next to it. Resumable like
family_cpu.py (WORK/ablation-seed-<s>/<name>/reports.json); --rereport evaluates finished runs again (after a change
to the evaluation) without training them again. Writes benchmarks/results/family_cpu_ablation.json and,
with --update, the "Family on CPU: growth configurations" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from family_cpu import REPO, run_family, spread, update

from familyc.files import atomic_write

RESULTS = REPO / "benchmarks" / "results" / "family_cpu_ablation.json"
HEADING = "## Family on CPU: growth configurations"
SPEC = "specs/bench_cpu.yaml"
PART = "validation"


def _every_growth(lr: dict[str, Any], what: str) -> Callable[[dict[str, Any]], str]:
    def change(spec: dict[str, Any]) -> str:
        for step in spec["growth"]:
            step["lr"] = dict(lr)
        return what
    return change


def _copying_width(spec: dict[str, Any]) -> str:
    """The width growth as whole copies plus 5% noise (the specs' default before this screen)."""
    for step in spec["growth"]:
        if step.get("width", "fpi") != "none":
            step.update(width="exact", noise=0.05, function_preserving=False)
    return "width growth: exact copies + noise 0.05"


def _carry(spec: dict[str, Any]) -> str:
    for step in spec["growth"]:
        step["optimizer"] = "carry"
    return "every growth carries the optimizer"


def _wsd(grow_from: str) -> Callable[[dict[str, Any]], str]:
    def change(spec: dict[str, Any]) -> str:
        schedule = spec["lr"]["schedule"]
        schedule.update(decay="wsd", decay_fraction=0.2, wsd_decay="linear", grow_from=grow_from)
        return f"wsd schedule (last 20% linear), growth from the {grow_from} weights"
    return change


def _then(*changes: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    return lambda spec: ", ".join(change(spec) for change in changes)


CONFIGURATIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str] | None]] = {
    "as-is": ("the spec: B -> C with the `zero` operator (exact, no copies), warmup 5% to the member's peak", None),
    "copies-noise": ("B -> C as whole copies + 5% noise (approximate; the default before)", _copying_width),
    "copies-noise-half-peak": ("copies + noise, and every growth's warmup goes to half the member's peak",
                               _then(_copying_width, _every_growth({"peak_factor": 0.5}, "growth lr half peak"))),
    "carry": ("the spec, and every growth carries AdamW's moments (optimizer: carry)", _carry),
    "carry-no-warmup": ("carry, and no warmup after a growth (start at the member's peak)",
                        _then(_carry, _every_growth({"warmup": "none"}, "no warmup after growth"))),
    "wsd": ("the spec on warmup-stable-decay (the last 20% decays, linear); growth from the decayed weights",
            _wsd("final")),
    "wsd-branch": ("wsd family-wide: growth from the stable phase, each released member its own decay branch",
                   _wsd("stable")),
    "wsd-branch-carry": ("wsd-branch, and every growth carries the stable phase's AdamW moments",
                         _then(_wsd("stable"), _carry)),
}


def screen(work: Path, seed: int, names: list[str], heldout_tokens: int, *,
           rereport: bool = False) -> dict[str, dict[str, Any]]:
    return {name: run_family(work / f"ablation-seed-{seed}" / name, SPEC, seed, baselines=False,
                             heldout_tokens=heldout_tokens, parts=(PART,), change=CONFIGURATIONS[name][1],
                             rereport=rereport)
            for name in names}


def row(name: str, body: dict[str, Any]) -> dict[str, Any]:
    report = body["reports"][PART]
    members = {m["name"]: m["heldout_loss"] for m in report["members"]}
    grown = [loss for i, loss in enumerate(members.values()) if i > 0]
    rises = {h["step"]: h["peak_rise"] for h in report["head_starts"]}
    return {"name": name, "description": CONFIGURATIONS[name][0], "members": members,
            "grown_mean": statistics.fmean(grown), "rises": rises, "max_rise": max(rises.values(), default=None),
            "wall_seconds": body["wall_seconds"], "rereported": "rereported" in body}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    names = list(rows[0]["members"])
    steps = list(rows[0]["rises"])
    lines = [HEADING, "", f"Run on {result['date']} with", "", "```bash", result["command"], "```", "",
             f"The progressive family of `{SPEC}` (LR per size), seed {result['seed']}, one change per row; held-out "
             f"loss on the **validation** half ({result['heldout_tokens']:,} tokens), the half configurations are "
             "chosen on (the test half is not looked at here). Chosen by the lowest mean over the grown members, "
             "a rule fixed before the runs. Rise: the largest rise of the stage's held-out curve above its step 0 "
             "(nats; a head start is kept at <= 0.05). One seed: a screen, not a claim (differences under about "
             "0.01 nats are within the seed-to-seed spread of the 3-seed benchmark).", "",
             "| configuration | " + " | ".join(names) + " | mean of grown | "
             + " | ".join(f"rise {s}" for s in steps) + " |",
             "|---|" + "---:|" * (len(names) + 1 + len(steps))]
    for r in rows:
        mark = (" **(chosen)**" if r["name"] == result["chosen"] else "") + (" †" if r.get("rereported") else "")
        lines.append(f"| {r['name']}{mark}: {r['description']} | "
                     + " | ".join(f"{r['members'][n]:.4f}" for n in names) + f" | {r['grown_mean']:.4f} | "
                     + " | ".join(f"{r['rises'].get(s, float('nan')):+.3f}" for s in steps) + " |")
    if result["rereported"]:
        lines += ["", "†: trained before the held-out windows were drawn at random. Their members were evaluated "
                  "again after training (`--rereport`), on windows drawn at random from the validation half, but their "
                  "rise comes from the curves recorded during training, which still evaluated the first 8,192 tokens "
                  "of the held-out split (two files), so it is a rough guide only. The other rows' curves use the "
                  "random windows."]
    lines += [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGURATIONS), help="screen these configurations")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cpu")
    parser.add_argument("--heldout-tokens", type=int, default=65_536)
    parser.add_argument("--update", type=Path)
    parser.add_argument("--summarize", action="store_true", help="train nothing: summarize what is complete")
    parser.add_argument("--rereport", action="store_true",
                        help="evaluate the finished runs' members again (after a change to the evaluation)")
    args = parser.parse_args()
    names = args.only or list(CONFIGURATIONS)
    if args.summarize:
        names = [n for n in names if (args.work / f"ablation-seed-{args.seed}" / n / "reports.json").is_file()]
    if not names:
        raise SystemExit(f"no configuration has finished in {args.work}")
    start = time.monotonic()
    bodies = screen(args.work, args.seed, names, args.heldout_tokens, rereport=args.rereport)
    rows = [row(name, body) for name, body in bodies.items()]
    result = {"date": datetime.now(UTC).date().isoformat(), "seed": args.seed, "part": PART,
              "heldout_tokens": args.heldout_tokens,
              "command": " ".join([".venv/bin/python", "benchmarks/family_cpu_ablation.py", *sys.argv[1:]]),
              "chosen": min(rows, key=lambda r: r["grown_mean"])["name"], "rows": rows,
              "rereported": any("rereported" in body for body in bodies.values()),
              "grown_mean": spread([r["grown_mean"] for r in rows]),
              "total_seconds": None if args.summarize else time.monotonic() - start}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS, json.dumps({**result, "runs": bodies}, indent=1) + "\n")
    section = markdown(result)
    print(section)
    if args.update:
        update(args.update, section, HEADING)


if __name__ == "__main__":
    main()
