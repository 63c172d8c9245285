"""Does the method work at CPU scale? Progressive (LR per size), progressive (one LR) and independent families.

    .venv/bin/python benchmarks/family_cpu.py [--work DIR] [--update BENCHMARKS.md] [--heldout-tokens N] [--summarize]

Trains, on the same data (the standard library's source, `stdlib-source`) and tokenizer:
  progressive, LR per size   plans/bench_cpu.plan.json             (specs/bench_cpu.yaml)
  progressive, one LR        plans/bench_cpu_constant_lr.plan.json (specs/bench_cpu_constant_lr.yaml: the same
                             family with the largest member's peak LR for every member — the paper's ablation)
  independent                the baseline of the first plan: every member from scratch, tokens in proportion
                             to its parameters (`familyc apply --baselines`)
then evaluates every member on the held-out split (never trained on) with `familyc report`, and writes
benchmarks/results/family_cpu.json and, with --update, the "Family on CPU" section of BENCHMARKS.md. It also
measures whether the copies a width growth made learned apart from each other (twin_divergence).
Targets (the paper's claims): progressive FLOPs <= 0.77 x independent; every progressive member's held-out loss
<= 1.01 x its independent counterpart's; LR per size no worse than one LR; lower adjacent KL for progressive.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "family_cpu.json"
HEADING = "## Family on CPU"
VARIANTS = (("lr-per-size", "plans/bench_cpu.plan.json", True), ("constant-lr", "plans/bench_cpu_constant_lr.plan.json",
                                                                  False))


def familyc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "familyc", *args], check=True, cwd=REPO)


def report(run: Path, heldout_tokens: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "familyc", "report", str(run), "--format", "json",
                          "--heldout-tokens", str(heldout_tokens)], check=True, cwd=REPO, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


def corpus_tokens(run: Path) -> int:
    manifest = next(run.glob("assets/stdlib-source-*/manifest.json"))
    return int(json.loads(manifest.read_text())["splits"]["train"]["tokens"])


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


def twins(work: Path, member: str) -> float | None:
    """twin_divergence of a progressive member over its own stage (None for the first member)."""
    run = work / "lr-per-size"
    grown = [p for p in (run / "expansions").glob(f"expand-*-{member}") if p.is_dir()]
    return twin_divergence(grown[0], run / "members" / member) if grown else None


def summarize(runs: dict[str, dict[str, Any]], seconds: dict[str, float], train_tokens: int,
              work: Path) -> dict[str, Any]:
    main = runs["lr-per-size"]
    const = runs["constant-lr"]
    prog_steps = [s for s in main["steps"] if s["family"] == "progressive"]
    ind_steps = [s for s in main["steps"] if s["family"] == "independent"]
    members = []
    for m, c in zip(main["members"], const["members"], strict=True):
        stage = next(s for s in prog_steps if s["kind"] == "train" and s["member"] == m["name"])
        alone = next(s for s in ind_steps if s["kind"] == "train" and s["member"] == m["name"])
        members.append({
            "name": m["name"], "progressive_loss": m["heldout_loss"], "constant_lr_loss": c["heldout_loss"],
            "independent_loss": m["baseline_heldout_loss"],
            "ratio_to_independent": m["heldout_loss"] / m["baseline_heldout_loss"],
            "stage_tokens": stage["tokens_actual"], "independent_tokens": alone["tokens_actual"],
            "stage_epochs": stage["tokens_actual"] / train_tokens,
            "independent_epochs": alone["tokens_actual"] / train_tokens,
            "twin_divergence": twins(work, m["name"]),
        })
    prog_flops = sum(s["actual_flops"] or 0 for s in prog_steps)
    ind_flops = sum(s["actual_flops"] or 0 for s in ind_steps)
    family_tokens = sum(s["tokens_actual"] or 0 for s in prog_steps if s["kind"] == "train")
    kl = {"progressive": main["kl"], "independent": main["kl_independent"], "constant_lr": const["kl"]}
    mean = {k: sum(p["kl_small_large"] + p["kl_large_small"] for p in v) / (2 * len(v)) if v else None
            for k, v in kl.items()}
    targets = {
        "flops_ratio <= 0.77": prog_flops / ind_flops <= 0.77,
        "every member loss <= 1.01 x independent": all(m["ratio_to_independent"] <= 1.01 for m in members),
        "lr per size no worse than one LR": all(m["progressive_loss"] <= m["constant_lr_loss"] for m in members),
        "adjacent KL lower for progressive": mean["progressive"] < mean["independent"],
    }
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {_cores()} cores",
        "command": ".venv/bin/python benchmarks/family_cpu.py --update BENCHMARKS.md",
        "corpus_train_tokens": train_tokens, "heldout": main["heldout"],
        "flops": {"progressive": prog_flops, "independent": ind_flops, "ratio": prog_flops / ind_flops,
                  "constant_lr": sum(s["actual_flops"] or 0 for s in const["steps"] if s["family"] == "progressive")},
        "progressive_family_epochs": family_tokens / train_tokens,
        "members": members, "kl": kl, "mean_adjacent_kl": mean,
        "wall_seconds": seconds, "targets": targets,
    }


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def markdown(result: dict[str, Any]) -> str:
    f = result["flops"]
    lines = [
        HEADING, "",
        f"Run on {result['date']} ({result['machine']}) with", "", "```bash", result["command"], "```", "",
        f"Data: the standard library's source (`stdlib-source`), {result['corpus_train_tokens']:,} training tokens; "
        f"held-out: {result['heldout']['tokens']:,} tokens of {result['heldout']['documents']} files never trained on. "
        f"The progressive family reads {result['progressive_family_epochs']:.2f} epochs in all (its stages continue "
        "in the data stream); each member's share is below.", "",
        "| member | progressive (LR per size) | progressive (one LR) | independent | progressive / independent "
        "| stage tokens (epochs) | independent tokens (epochs) | twin divergence |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["members"]:
        lines.append(f"| {m['name']} | {m['progressive_loss']:.4f} | {m['constant_lr_loss']:.4f} | "
                     f"{m['independent_loss']:.4f} | {m['ratio_to_independent']:.4f} | "
                     f"{m['stage_tokens']:,} ({m['stage_epochs']:.2f}) | "
                     f"{m['independent_tokens']:,} ({m['independent_epochs']:.2f}) | "
                     f"{'-' if m['twin_divergence'] is None else format(m['twin_divergence'], '.3f')} |")
    kl, wall = result["mean_adjacent_kl"], result["wall_seconds"]
    lines += ["", "| family | FLOPs | wall time | mean adjacent KL (both directions) |", "|---|---:|---:|---:|",
              f"| progressive, LR per size | {f['progressive']:.3e} | | {kl['progressive']:.4f} |",
              f"| progressive, one LR | {f['constant_lr']:.3e} | {wall['constant-lr']:.0f} s | "
              f"{kl['constant_lr']:.4f} |",
              f"| independent | {f['independent']:.3e} | | {kl['independent']:.4f} |", "",
              f"Progressive / independent FLOPs: {f['ratio']:.3f}. Wall time: progressive and independent together "
              f"{wall['lr-per-size']:.0f} s, the whole benchmark {wall['total']:.0f} s.",
              "", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'MISSED'}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def update(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if HEADING in text:
        start = text.index(HEADING)
        end = text.find("\n## ", start + len(HEADING))
        tail = text[end + 1:] if end != -1 else ""
        text = text[:start] + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cpu")
    parser.add_argument("--update", type=Path)
    parser.add_argument("--heldout-tokens", type=int, default=65_536)
    parser.add_argument("--summarize", action="store_true",
                        help="train and evaluate nothing: recompute the summary from the runs in --work and the "
                             "reports and wall times kept in the results JSON (after a change to the summary code)")
    args = parser.parse_args()
    if args.summarize:
        kept = json.loads(RESULTS.read_text())
        runs, seconds = kept["reports"], kept["wall_seconds"]
        write(summarize(runs, seconds, corpus_tokens(args.work / "lr-per-size"), args.work), runs, args.update)
        return
    start = time.monotonic()
    runs, seconds = {}, {}
    for name, plan, baselines in VARIANTS:
        run = args.work / name
        began = time.monotonic()
        familyc("apply", plan, "--yes", "--run-dir", str(run), *(["--baselines"] if baselines else []))
        seconds[name] = time.monotonic() - began
        runs[name] = report(run, args.heldout_tokens)
    seconds["total"] = time.monotonic() - start
    write(summarize(runs, seconds, corpus_tokens(args.work / "lr-per-size"), args.work), runs, args.update)


def write(result: dict[str, Any], runs: dict[str, Any], markdown_file: Path | None) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**result, "reports": runs}, indent=2) + "\n")
    section = markdown(result)
    print(section)
    if markdown_file:
        update(markdown_file, section)


if __name__ == "__main__":
    main()
