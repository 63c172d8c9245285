"""The report's pictures (PNG): loss against compute, predicted against actual, KL of neighbours, downstream tasks.

matplotlib with the non-interactive Agg backend; every figure is written deterministically
(fixed size, DPI and metadata) so reruns produce the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, the same bytes everywhere
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from familyc.plan.ir import Step  # noqa: E402
from familyc.plan.steps import TrainStep  # noqa: E402
from familyc.report.collect import RunReport  # noqa: E402

DPI = 110
_METADATA: dict[str, str | None] = {"Software": None}  # no matplotlib version or date in the PNG


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure as a reproducible PNG (fixed metadata) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata=_METADATA)
    plt.close(fig)
    return path


def loss_vs_flops(report: RunReport, path: Path) -> Path:
    """The paper's picture: every member's and baseline's training loss against cumulative FLOPs."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    plan = report.plan
    for label, points in report.curves.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        step = plan.step(label)
        baseline = plan.is_baseline(step)
        ax.plot(xs, ys, linestyle="--" if baseline else "-", linewidth=1.2,
                label=("independent " if baseline else "progressive ") + _stage_name(step))
    for member in report.members:
        step = plan.train_step(member.name)
        if member.heldout_loss is not None:
            end = sum(s.flops for s in plan.steps[: plan.steps.index(step) + 1])
            ax.plot([end], [member.heldout_loss], marker="o", color="black", markersize=4)
    ax.set_xscale("log")
    return _against_flops(fig, ax, path, xlabel="cumulative training FLOPs (torchtitan's formula)",
                          ylabel="training loss (dots: held-out loss)",
                          title=f"{report.plan.family.name}: progressive vs independent")


def _stage_name(step: Step) -> str:
    """A curve's name in a legend: its member, and which phase of it when it branches."""
    phase = step.phase if isinstance(step, TrainStep) else "whole"
    return step.member if phase == "whole" else f"{step.member} ({phase})"


def _against_flops(fig: Figure, ax: Axes, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """The labels, grid and legend of a loss-against-FLOPs figure; written to `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def heldout_vs_flops(report: RunReport, path: Path) -> Path:
    """The paper's picture on held-out text: each stage's held-out curve (training.eval) against cumulative
    training FLOPs. A progressive stage starts where the stages before it ended (the family's compute so far), an
    independent member at 0; one colour per member, solid progressive, dashed independent."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    plan = report.plan
    colours = {m.name: f"C{i % 10}" for i, m in enumerate(plan.members)}
    offset = 0
    for step in plan.train_steps():
        _heldout_curve(ax, report.heldout_curves.get(step.id), offset, step.flops_per_step, colours[step.member],
                       f"progressive {_stage_name(step)}", "-")
        offset += step.flops
    for b in plan.baseline.members:
        _heldout_curve(ax, report.heldout_curves.get(b.train.id), 0, b.train.flops_per_step, colours[b.name],
                       f"independent {b.name}", "--")
    ax.set_xscale("symlog", linthresh=max(1.0, min((s.flops_per_step for s in plan.train_steps()), default=1)))
    return _against_flops(fig, ax, path,
                          xlabel="cumulative training FLOPs (torchtitan's formula; progressive: the family's so far)",
                          ylabel="held-out loss (nats per token)",
                          title=f"{plan.family.name}: held-out loss, progressive vs independent")


def _heldout_curve(ax: Axes, curve: list[tuple[int, float]] | None, offset: int, flops_per_step: int, colour: str,
                   label: str, style: str) -> None:
    if not curve:
        return
    xs = [offset + s * flops_per_step for s, _ in curve]
    ax.plot(xs, [loss for _, loss in curve], linestyle=style, color=colour, linewidth=1.2, marker=".",
            markersize=3, label=label)


def predicted_vs_actual(report: RunReport, path: Path) -> Path:
    rows = [s for s in report.steps if s.kind == "train"]
    fig, ax = plt.subplots(figsize=(8, 4))
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [s.predicted_seconds for s in rows], width=0.4, label="predicted")
    ax.bar([p + 0.2 for p in positions], [s.actual_seconds or 0.0 for s in rows], width=0.4, label="actual (wall)")
    ax.bar([p + 0.2 for p in positions], [s.train_seconds or 0.0 for s in rows], width=0.25, color="black",
           alpha=0.35, label="actual (training loop)")
    ax.set_xticks(list(positions), [s.id for s in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("predicted vs actual time per stage")
    ax.legend(fontsize=8)
    return _save(fig, path)


def kl_pairs(report: RunReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{k.small}-{k.large}" for k in report.kl]
    positions = list(range(len(labels)))
    width = 0.2
    series = [("progressive KL(small||large)", [k.kl_small_large for k in report.kl]),
              ("progressive KL(large||small)", [k.kl_large_small for k in report.kl])]
    independent = {(k.small, k.large): k for k in report.kl_independent}
    if independent:
        series += [("independent KL(small||large)",
                    [independent[(k.small, k.large)].kl_small_large if (k.small, k.large) in independent else 0.0
                     for k in report.kl]),
                   ("independent KL(large||small)",
                    [independent[(k.small, k.large)].kl_large_small if (k.small, k.large) in independent else 0.0
                     for k in report.kl])]
    for i, (label, values) in enumerate(series):
        ax.bar([p + (i - (len(series) - 1) / 2) * width for p in positions], values, width=width, label=label)
    ax.set_xticks(positions, labels)
    ax.set_ylabel("nats per token (held-out)")
    ax.set_title("KL divergence between adjacent members")
    ax.legend(fontsize=7)
    return _save(fig, path)


def downstream_scores(report: RunReport, path: Path) -> Path:
    """familyc eval's results: one panel per task (its first metric), a bar per member and family, progressive
    solid and independent hatched, in one colour per member, with lm-eval's standard error."""
    assert report.downstream is not None
    rows = report.downstream.rows
    firsts = {row.task: row.metric for row in reversed(rows)}  # each task's first metric
    tasks = [task for task in report.downstream.tasks if task in firsts]
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 3.2 * len(tasks)), 3.8), squeeze=False)
    colours = {m.name: f"C{i % 10}" for i, m in enumerate(report.plan.members)}
    for ax, task in zip(axes[0], tasks, strict=True):
        shown = [r for r in rows if r.task == task and r.metric == firsts[task]]
        for i, row in enumerate(shown):
            for offset, result, hatch in ((-0.2, row.progressive, None), (0.2, row.independent, "//")):
                if result is None:
                    continue
                ax.bar([i + offset], [result.value], width=0.4, color=colours[row.member], hatch=hatch,
                       edgecolor="black", linewidth=0.5, yerr=[result.stderr or 0.0], capsize=3)
        ax.set_xticks(list(range(len(shown))), [r.member for r in shown])
        ax.set_title(f"{task} ({firsts[task]})", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{report.plan.family.name}: downstream tasks, progressive (solid) vs independent (hatched)",
                 fontsize=10)
    return _save(fig, path)


def write_plots(report: RunReport, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {"loss_vs_flops": loss_vs_flops(report, folder / "loss_vs_flops.png"),
           "predicted_vs_actual": predicted_vs_actual(report, folder / "predicted_vs_actual.png")}
    if report.heldout_curves:
        out["heldout_vs_flops"] = heldout_vs_flops(report, folder / "heldout_vs_flops.png")
    if report.kl:
        out["kl"] = kl_pairs(report, folder / "kl_adjacent.png")
    if report.downstream and report.downstream.rows:
        out["downstream"] = downstream_scores(report, folder / "downstream.png")
    return out
