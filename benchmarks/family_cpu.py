"""Does the method work at CPU scale? Progressive (LR per size), progressive (one LR) and independent families,
over several seeds.

    .venv/bin/python benchmarks/family_cpu.py [--seeds 3] [--work DIR] [--update BENCHMARKS.md]
                                              [--heldout-tokens N] [--summarize] [--change NAME]

For every seed s (0 .. N-1), on the same data (the standard library's source, `stdlib-source`) and tokenizer:
  progressive, LR per size   specs/bench_cpu.yaml
  progressive, one LR        specs/bench_cpu_constant_lr.yaml (the same family with the largest member's peak LR
                             for every member: the paper's ablation)
  independent                the baseline of the first: every member from scratch, tokens in proportion to its
                             parameters (`familyc apply --baselines`)
each spec with training.seed = s and every growth step's seed = s (model initialisation, growth noise and the
data order: every rank reads its documents shuffled by training.seed, data.shuffle). Seed s of the progressive
family is paired with seed s of the independent one: their first member is the same run. Each run is evaluated by
`familyc report` on the `test` half of the held-out split (by document; never trained on), the half every reported
number comes from; the other half, `validation`, is the one configurations are chosen on
(benchmarks/family_cpu_ablation.py). Each stage also evaluates the held-out split during training
(training.eval), from which the report takes each growth's head start.

Resumable: a run whose reports are in WORK/seed-<s>/<variant>/reports.json is not run again; an interrupted run is
continued by `familyc apply` itself. Writes benchmarks/results/family_cpu.json (every seed's reports) and, with
--update, the "Family on CPU" section of BENCHMARKS.md. Targets (issue 11):
  progressive FLOPs <= 0.77 x independent; every grown member's mean test loss <= its independent twin's mean;
  LR per size better than one LR for every member; mean adjacent KL lower for progressive; every growth's
  held-out loss never more than 0.05 nats above its step-0 value (in every seed).

--change NAME applies one configuration of benchmarks/family_cpu_ablation.py (e.g. `wsd`) to every family's spec,
the independent one included (a schedule is the family's, not the growth's), before a configuration the screen chose
becomes the specs' default: its runs go to WORK-NAME, its results to benchmarks/results/family_cpu-NAME.json and, with
--update, to its own section "Family on CPU (NAME)".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from familyc.files import atomic_write  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "family_cpu.json"
HEADING = "## Family on CPU"
VARIANTS = {"lr-per-size": ("specs/bench_cpu.yaml", True), "constant-lr": ("specs/bench_cpu_constant_lr.yaml", False)}
PARTS = ("test", "validation")
MAX_RISE = 0.05
"""Nats: how far a grown stage's held-out loss may rise above its step-0 value and still count as a head start."""


def familyc(*args: str, capture: bool = False) -> str:
    proc = subprocess.run([sys.executable, "-m", "familyc", *args], check=True, cwd=REPO, text=True,
                          capture_output=capture)
    return proc.stdout if capture else ""


def seeded_spec(spec: Path, seed: int, out: Path, change: Callable[[dict[str, Any]], str] | None = None) -> Path:
    """The spec with training.seed and every growth step's seed set to `seed`, then `change` applied to it (it
    returns what it changed, for the file's first line)."""
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    data["training"]["seed"] = seed
    for step in data.get("growth") or []:
        step["seed"] = seed
    changed = f", {change(data)}" if change else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, f"# {spec.relative_to(REPO)} with seed {seed}{changed}, written by benchmarks/\n"
                 + yaml.safe_dump(data, sort_keys=False))
    return out


def report(folder: Path, heldout_tokens: int, parts: tuple[str, ...]) -> dict[str, Any]:
    """`familyc report --format json` of FOLDER/run on each held-out part."""
    return {part: json.loads(familyc("report", str(folder / "run"), "--format", "json", "--heldout-tokens",
                                     str(heldout_tokens), "--heldout-part", part, capture=True))
            for part in parts}


def run_family(folder: Path, spec_path: str, seed: int, *, baselines: bool, heldout_tokens: int,
               parts: tuple[str, ...] = PARTS, change: Callable[[dict[str, Any]], str] | None = None,
               rereport: bool = False) -> dict[str, Any]:
    """One family trained and reported on each held-out part (or what an earlier invocation recorded in
    FOLDER/reports.json; `rereport`: its members evaluated again by this familyc); an interrupted run is
    continued by `familyc apply`."""
    done = folder / "reports.json"
    if done.is_file():
        body: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        if rereport:
            body["reports"] = report(folder, heldout_tokens, parts)
            body["rereported"] = datetime.now(UTC).isoformat(timespec="seconds")
            atomic_write(done, json.dumps(body, indent=1) + "\n")
        return body
    spec = seeded_spec(REPO / spec_path, seed, folder / "spec.yaml", change)
    plan = folder / "plan.json"
    familyc("plan", str(spec.relative_to(REPO)), "-o", str(plan))
    began = time.monotonic()
    resumed = (folder / "run" / "state.json").exists()
    familyc("apply", str(plan), "--yes", "--run-dir", str(folder / "run"), *(["--baselines"] if baselines else []))
    seconds = time.monotonic() - began
    reports = report(folder, heldout_tokens, parts)
    body = {"seed": seed, "wall_seconds": seconds, "resumed": resumed, "reports": reports}
    atomic_write(done, json.dumps(body, indent=1) + "\n")
    return body


def run_variant(work: Path, seed: int, variant: str, heldout_tokens: int,
                change: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """One seed of one variant, trained and reported (or what an earlier invocation recorded)."""
    spec_path, baselines = VARIANTS[variant]
    body = run_family(work / f"seed-{seed}" / variant, spec_path, seed, baselines=baselines,
                      heldout_tokens=heldout_tokens, parts=("test",), change=change)
    return {"variant": variant, **body}


# --- twin divergence (whether a width growth's copies learned apart) --------------------------------------------

def _channels(weights: Path) -> Any:
    """One row per residual-stream channel: its columns in every matrix that reads the residual stream
    (wq, wk, wv, w1, w3 of every block and the output head), concatenated."""
    import torch

    from familyc.checkpoint.reader import load_state_dict

    state = load_state_dict(weights)
    dim = state["norm.weight"].shape[0]
    readers = [v for k, v in sorted(state.items()) if k.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight",
                                                                   "w3.weight", "output.weight"))]
    assert all(v.shape[1] == dim for v in readers)
    return torch.cat(readers, dim=0).T.double()


def twin_divergence(grown: Path, trained: Path) -> float:
    """How differently a member's channels learned from their twins, the copies its growth made.

    Twins are nearest neighbours right after growth (a copy, plus the growth's noise). Over training each channel
    moves by delta; this is the median over channels of |delta - delta of its twin| / |delta|. Copies without noise
    get identical gradients and score 0 (they never diverge: the member keeps the smaller width); where the growth
    made no copies the nearest neighbour is an unrelated channel (B, grown by depth alone, scores about 0.95)."""
    import torch

    start, end = _channels(grown), _channels(trained)
    if start.shape != end.shape:
        raise ValueError(f"{grown} and {trained} are not the same shape")
    distances = torch.cdist(start, start)
    distances.fill_diagonal_(float("inf"))
    twin = distances.argmin(dim=1)
    delta = end - start
    return float(((delta - delta[twin]).norm(dim=1) / delta.norm(dim=1)).median())


def twins(run: Path, member: str) -> float | None:
    """twin_divergence of a progressive member over its own stage (None for the first member)."""
    grown = [p for p in (run / "expansions").glob(f"expand-*-{member}") if p.is_dir()]
    return twin_divergence(grown[0], run / "members" / member) if grown else None


# --- the summary ----------------------------------------------------------------------------------------------

def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), and the values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def mean_adjacent_kl(pairs: list[dict[str, float]]) -> float:
    return sum(p["kl_small_large"] + p["kl_large_small"] for p in pairs) / (2 * len(pairs))


def member_table(seeds: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    """Per member: progressive, one-LR and independent held-out loss on `part`, over seeds."""
    rows = []
    names = [m["name"] for m in seeds[0]["lr-per-size"]["reports"][part]["members"]]
    for i, name in enumerate(names):
        prog = [s["lr-per-size"]["reports"][part]["members"][i]["heldout_loss"] for s in seeds]
        ind = [s["lr-per-size"]["reports"][part]["members"][i]["baseline_heldout_loss"] for s in seeds]
        const = [s["constant-lr"]["reports"][part]["members"][i]["heldout_loss"] for s in seeds]
        rows.append({"name": name, "grown": i > 0, "progressive": spread(prog), "constant_lr": spread(const),
                     "independent": spread(ind), "ratio": spread([p / q for p, q in zip(prog, ind, strict=True)]),
                     "wins": sum(p <= q for p, q in zip(prog, ind, strict=True)),
                     "lr_wins": sum(p < c for p, c in zip(prog, const, strict=True))})
    return rows


def head_starts(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per growth step of the progressive family (LR per size): its stage's held-out curve, over seeds."""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for s in seeds:
        for h in s["lr-per-size"]["reports"]["test"]["head_starts"]:
            by_step.setdefault(h["step"], []).append(h)
    return [{"step": step, "growth": hs[0]["growth"], "rise": spread([h["peak_rise"] for h in hs]),
             "max_rise": max(h["peak_rise"] for h in hs), "at_start": spread([h["loss_at_start"] for h in hs]),
             "final": spread([h["final_loss"] for h in hs]),
             "tokens_to_recover": [h["tokens_to_recover"] for h in hs]} for step, hs in by_step.items()]


def summarize(seeds: list[dict[str, Any]], work: Path, total_seconds: float | None) -> dict[str, Any]:
    first = seeds[0]["lr-per-size"]["reports"]["test"]
    prog_flops = sum(s["actual_flops"] or 0 for s in first["steps"] if s["family"] == "progressive")
    ind_flops = sum(s["actual_flops"] or 0 for s in first["steps"] if s["family"] == "independent")
    test = member_table(seeds, "test")
    kl = {family: spread([mean_adjacent_kl(s[variant]["reports"]["test"][key]) for s in seeds])
          for family, variant, key in (("progressive", "lr-per-size", "kl"), ("independent", "lr-per-size",
                                                                              "kl_independent"),
                                       ("constant_lr", "constant-lr", "kl"))}
    growth = head_starts(seeds)
    twin = {m["name"]: [twins(work / f"seed-{s['seed']}" / "lr-per-size" / "run", m["name"]) for s in seeds]
            for m in test if m["grown"]}
    targets = {
        "progressive FLOPs <= 0.77 x independent": prog_flops / ind_flops <= 0.77,
        "every grown member's mean test loss <= its independent twin's": all(
            m["progressive"]["mean"] <= m["independent"]["mean"] for m in test if m["grown"]),
        "LR per size better than one LR for every member": all(
            m["progressive"]["mean"] < m["constant_lr"]["mean"] for m in test),
        "mean adjacent KL lower for progressive": kl["progressive"]["mean"] < kl["independent"]["mean"],
        f"every growth's held-out loss within {MAX_RISE} nats of its step 0 (every seed)": all(
            g["max_rise"] <= MAX_RISE for g in growth) and bool(growth),
    }
    wall = {f"seed-{s['seed']}": sum(s[v]["wall_seconds"] for v in VARIANTS) for s in seeds}
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count() or 0} cores",
        "command": f".venv/bin/python benchmarks/family_cpu.py --seeds {len(seeds)} --update BENCHMARKS.md",
        "seeds": [s["seed"] for s in seeds],
        "heldout": {"test": first_report(seeds, "test")["heldout"]},
        "flops": {"progressive": prog_flops, "independent": ind_flops, "ratio": prog_flops / ind_flops},
        "members": test, "mean_adjacent_kl": kl,
        "head_starts": growth, "twin_divergence": twin, "wall_seconds": wall, "total_seconds": total_seconds,
        "targets": targets,
    }


def first_report(seeds: list[dict[str, Any]], part: str) -> dict[str, Any]:
    report: dict[str, Any] = seeds[0]["lr-per-size"]["reports"][part]
    return report


def pm(s: dict[str, Any], fmt: str = ".4f") -> str:
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def markdown(result: dict[str, Any]) -> str:
    n = len(result["seeds"])
    held = result["heldout"]
    lines = [
        HEADING, "",
        f"Run on {result['date']} ({result['machine']}) with", "", "```bash", result["command"], "```", "",
        f"{n} seeds ({', '.join(map(str, result['seeds']))}: model initialisation, growth noise and the order in which "
        "each rank reads the documents). Mean ± sample standard deviation over seeds of the held-out loss (nats per "
        f"token) on the **test** half of the held-out split ({held['test']['tokens']:,} tokens of "
        f"{held['test']['documents']} files never trained on, as windows drawn at random); the validation half "
        "(other files) is for choosing configurations (benchmarks/family_cpu_ablation.py) and is not evaluated "
        "here. `wins`: seeds in which the progressive member is at most its "
        "independent twin (the first member is the same run in both families).", "",
        "| member | progressive (LR per size) | progressive (one LR) | independent | progressive / independent "
        "| wins |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in result["members"]:
        lines.append(f"| {m['name']} | {pm(m['progressive'])} | {pm(m['constant_lr'])} | {pm(m['independent'])} | "
                     f"{pm(m['ratio'])} | {m['wins']}/{n} |")
    kl, f = result["mean_adjacent_kl"], result["flops"]
    lines += ["", "| family | FLOPs | mean adjacent KL (test, both directions) |", "|---|---:|---:|",
              f"| progressive, LR per size | {f['progressive']:.3e} | {pm(kl['progressive'])} |",
              f"| progressive, one LR | {f['progressive']:.3e} | {pm(kl['constant_lr'])} |",
              f"| independent | {f['independent']:.3e} | {pm(kl['independent'])} |", "",
              f"Progressive / independent FLOPs: {f['ratio']:.3f} (held-out evaluation during training is not "
              "counted in either).", "",
              "Head start of each growth (progressive, LR per size; the stage's held-out curve, evaluated during "
              "training at step 0, every 5% of the stage and its last step):", "",
              "| stage | growth | loss at step 0 | rise above step 0 | largest rise | tokens until below step 0 | "
              "final |", "|---|---|---:|---:|---:|---|---:|"]
    for g in result["head_starts"]:
        tokens = ", ".join("never" if t is None else f"{t:,}" for t in g["tokens_to_recover"])
        lines.append(f"| {g['step']} | {g['growth']} | {pm(g['at_start'])} | {pm(g['rise'])} | "
                     f"{g['max_rise']:.4f} | {tokens} | {pm(g['final'])} |")
    twin = result["twin_divergence"]
    lines += ["", "Twin divergence (0: the copies a width growth made learn in lockstep; about 0.95: unrelated "
              "channels), per seed: " + "; ".join(
                  f"{name} " + ", ".join("-" if v is None else f"{v:.3f}" for v in values)
                  for name, values in twin.items()), ""]
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in result["wall_seconds"].items())
    lines += [f"Wall time (training and reports of all three families): {wall}"
              + (f"; this invocation {result['total_seconds']:.0f} s." if result["total_seconds"] else "."),
              "", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'MISSED'}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def update(path: Path, section: str, heading: str = HEADING) -> None:
    """Replace the section under `heading` in a markdown file (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading + "\n" in text:
        start = text.index(heading + "\n")
        end = text.find("\n## ", start + len(heading))
        tail = text[end + 1:] if end != -1 else ""
        text = text[:start] + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cpu")
    parser.add_argument("--update", type=Path)
    parser.add_argument("--heldout-tokens", type=int, default=65_536,
                        help="tokens of each held-out half the reports evaluate")
    parser.add_argument("--summarize", action="store_true",
                        help="train nothing: summarize the seeds whose runs are complete in --work")
    parser.add_argument("--change",
                        help="a configuration of benchmarks/family_cpu_ablation.py, applied to every family")
    args = parser.parse_args()
    change, results, heading = None, RESULTS, HEADING
    if args.change:
        from family_cpu_ablation import CONFIGURATIONS

        if args.change not in CONFIGURATIONS:
            raise SystemExit(f"--change {args.change}: not one of {', '.join(sorted(CONFIGURATIONS))}")
        change = CONFIGURATIONS[args.change][1]
        args.work = args.work.with_name(f"{args.work.name}-{args.change}")
        results = RESULTS.with_name(f"family_cpu-{args.change}.json")
        heading = f"{HEADING} ({args.change})"
    start = time.monotonic()
    seeds = []
    for seed in range(args.seeds):
        if args.summarize and not all((args.work / f"seed-{seed}" / v / "reports.json").is_file() for v in VARIANTS):
            continue
        seeds.append({"seed": seed, **{v: run_variant(args.work, seed, v, args.heldout_tokens, change)
                                       for v in VARIANTS}})
    if not seeds:
        raise SystemExit(f"no seed has finished in {args.work}")
    result = summarize(seeds, args.work, None if args.summarize else time.monotonic() - start)
    if args.change:
        result["command"] = result["command"].replace("--seeds", f"--change {args.change} --seeds", 1)
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(results, json.dumps({**result, "runs": seeds}, indent=1) + "\n")
    section = markdown(result).replace(HEADING, heading, 1)
    print(section)
    if args.update:
        update(args.update, section, heading)


if __name__ == "__main__":
    main()
