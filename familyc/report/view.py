"""A RunReport as a Document (text, Markdown) and as a self-contained HTML page with its plots.

The page is for a person: the verdict first (the family, what progressive training saved, its quality against
independent training; familyc.report.verdict), then the figures, then the Document's facts and tables. A new table
added to the Document or a new plot given to render_html appears in its section without changes here.
"""

from __future__ import annotations

import base64
import html
import struct
from collections.abc import Callable
from pathlib import Path

from familyc import units
from familyc.render import Document, Table
from familyc.report.collect import RunReport
from familyc.report.downstream import downstream_table
from familyc.report.verdict import Verdict, judge


def _maybe(value: float | None, fmt: Callable[[float], str]) -> str:
    return "" if value is None else fmt(value)


def _error(value: float | None) -> str:
    return "" if value is None else units.signed_percent(value)


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def report_document(report: RunReport, *, plots: dict[str, Path] | None = None) -> Document:
    plan = report.plan
    totals = report.totals()
    facts = [
        f"plan {plan.plan_id} ({plan.spec.path}); cluster {plan.cluster.devices} x {plan.cluster.accelerator_name}, "
        f"assumed MFU {units.percent(plan.cluster.mfu)}"
        + (f", measured {units.percent(totals['mfu_measured'])}" if totals["mfu_measured"] is not None else ""),
        f"held-out: {report.heldout['tokens']:,} tokens of {report.heldout['documents']} documents never trained on "
        f"({report.heldout['path']}" + ("" if report.heldout.get("part", "all") == "all"
                                        else f", its {report.heldout['part']} half") + ")"
        if report.heldout else "held-out: not evaluated",
    ]
    steps = Table(
        title="Steps: predicted vs actual",
        headers=("step", "status", "tokens", "FLOPs pred", "FLOPs actual", "err", "time pred", "time actual", "err",
                 "train loop", "tok/s pred", "tok/s actual", "MFU"),
        rows=tuple((s.id, s.status, units.count(s.tokens_actual if s.tokens_actual is not None else s.tokens_planned),
                    units.flops(s.predicted_flops), _maybe(s.actual_flops, units.flops), _error(s.errors["flops"]),
                    units.seconds(s.predicted_seconds), _maybe(s.actual_seconds, units.seconds),
                    _error(s.errors["seconds"]), _maybe(s.train_seconds, units.seconds),
                    _maybe(s.predicted_tokens_per_second, units.count),
                    _maybe(s.actual_tokens_per_second, units.count), _maybe(s.mfu, units.percent))
                   for s in report.steps),
        right=frozenset(range(2, 13)))
    members = Table(
        title="Members on held-out text",
        headers=("member", "held-out loss", "perplexity", "independent loss", "independent perplexity", "difference"),
        rows=tuple((m.name, _loss(m.heldout_loss), _maybe(m.perplexity, lambda v: f"{v:.2f}"),
                    _loss(m.baseline_heldout_loss), _maybe(m.baseline_perplexity, lambda v: f"{v:.2f}"),
                    _error(m.heldout_loss / m.baseline_heldout_loss - 1)
                    if m.heldout_loss is not None and m.baseline_heldout_loss else "")
                   for m in report.members),
        right=frozenset({1, 2, 3, 4, 5}))
    growth = Table(
        title="Growth: held-out loss before and after (function preservation in the real run)",
        headers=("step", "exactness", "loss before", "loss after", "change", "first training loss"),
        rows=tuple((g.id, g.exactness, _loss(g.loss_before), _loss(g.loss_after),
                    f"{g.loss_after - g.loss_before:+.2e}" if g.loss_after is not None and g.loss_before is not None
                    else "", _loss(g.first_train_loss)) for g in report.growth),
        right=frozenset({2, 3, 4, 5}))
    head = Table(
        title="Head start: each grown member's held-out loss during its stage",
        headers=("step", "grown by", "at step 0", "peak after step 0", "rise", "back below step 0 after",
                 "final", "evaluations"),
        rows=tuple((h.step, h.growth, _loss(h.loss_at_start), f"{h.peak_loss:.4f} (step {h.peak_step})",
                    f"{h.peak_rise:+.4f}", "never" if h.tokens_to_recover is None
                    else f"{units.count(h.tokens_to_recover)} tokens", _loss(h.final_loss), str(h.evaluations))
                   for h in report.head_starts),
        right=frozenset({2, 3, 4, 5, 6, 7}))
    independent = {(k.small, k.large): k for k in report.kl_independent}
    kl = Table(
        title="KL between adjacent members (held-out, nats per token)",
        headers=("pair", "progressive small||large", "progressive large||small", "independent small||large",
                 "independent large||small"),
        rows=tuple((f"{k.small} -> {k.large}", f"{k.kl_small_large:.4f}", f"{k.kl_large_small:.4f}",
                    f"{independent[(k.small, k.large)].kl_small_large:.4f}" if (k.small, k.large) in independent
                    else "",
                    f"{independent[(k.small, k.large)].kl_large_small:.4f}" if (k.small, k.large) in independent
                    else "") for k in report.kl),
        right=frozenset({1, 2, 3, 4}))
    saving = [f"saving against independent training: planned {units.percent(totals['savings_planned'])}"
              + (f", measured {units.percent(totals['savings_measured'])}" if totals["savings_measured"] is not None
                 else " (run with --baselines to measure it)")]
    if totals["actual_flops"] is not None:
        saving.append(f"progressive compute: predicted {units.flops(totals['predicted_flops'])} FLOPs, actual "
                      f"{units.flops(totals['actual_flops'])}; predicted {units.seconds(totals['predicted_seconds'])}, "
                      f"actual {units.seconds(totals['actual_seconds'])}")
    if totals["actual_eval_flops"] is not None and totals["predicted_eval_flops"]:
        saving.append(f"held-out evaluation during training (not in the FLOPs above): predicted "
                      f"{units.flops(totals['predicted_eval_flops'])} FLOPs, actual "
                      f"{units.flops(totals['actual_eval_flops'])}")
    saving += judge(report).quality
    if plots:
        saving.append("plots: " + ", ".join(str(p) for p in plots.values()))
    notes = tuple(f"missing: {m}" for m in report.missing)
    return Document(title=f"report of {report.run_dir} (family {plan.family.name})", facts=tuple(facts),
                    tables=(steps, members, growth) + ((head,) if head.rows else ()) + (kl,)
                    + ((downstream_table(report.downstream),) if report.downstream and report.downstream.rows else ()),
                    conclusion=tuple(saving), notes=notes)


FIGURE_CAPTIONS = {
    "loss_vs_flops": "Training loss against cumulative training FLOPs: progressive stages (solid) continue each "
                     "other, independent members (dashed) start from 0; dots: each member's held-out loss",
    "heldout_vs_flops": "Held-out loss during training against cumulative training FLOPs, progressive (solid) and "
                        "independent (dashed)",
    "kl": "KL divergence between adjacent members on held-out text, both directions",
    "predicted_vs_actual": "Predicted against actual time per stage",
    "downstream": "Downstream tasks (familyc eval, lm-eval): each member's score, progressive (solid) and "
                  "independent (hatched), with lm-eval's standard error",
}
"""Captions of the known figures, in the page's order; any other plot follows them, captioned by its name."""

_CSS = (
    "*{box-sizing:border-box}"
    "body{margin:0;background:#eef0f3;color:#1b1f24;"
    "font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}"
    "main{max-width:1120px;margin:0 auto;padding:24px 32px 48px;background:#fff;min-height:100vh}"
    "h1{font-size:28px;line-height:1.2;margin:0 0 4px}"
    "h2{font-size:20px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin:32px 0 12px}"
    ".sub{color:#57606a;font-size:13px;margin:0 0 20px;overflow-wrap:anywhere}"
    ".headline{border-left:4px solid #3d4b59;background:#f3f5f7;padding:14px 18px;margin:0 0 8px}"
    ".saving{font-size:19px;font-weight:600;margin:0 0 8px}"
    ".headline ul{margin:0;padding-left:20px}"
    "figure{margin:0 0 28px}"
    "img{display:block;max-width:100%;height:auto;border:1px solid #d0d7de}"
    "figcaption{color:#57606a;font-size:13px;margin-top:6px}"
    ".scroll{overflow-x:auto;margin:0 0 20px;max-width:100%}"
    "table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}"
    "caption{text-align:left;font-weight:600;padding:4px 0}"
    "th,td{border:1px solid #d0d7de;padding:4px 8px;white-space:nowrap}"
    "th{background:#f6f8fa;text-align:left}td.r{text-align:right}"
    ".facts{font-size:13px;color:#3b434b;overflow-wrap:anywhere;padding-left:20px}"
    ".warn{color:#8a5a00}"
)


def render_html(doc: Document, plots: dict[str, Path], verdict: Verdict | None = None) -> str:
    """One self-contained page for a person: the verdict (the family, its saving, its quality against independent
    training) first, then the figures, then the Document's facts and tables; the plots embedded as data URIs, no
    external resources, readable from a phone to a wide screen (the tables scroll sideways)."""
    esc = html.escape
    heading = verdict.family if verdict else doc.title
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(heading)}: familyc report</title>", f"<style>{_CSS}</style></head><body><main>",
             f"<header><h1>{esc(heading)}</h1>" + (f"<p class='sub'>{esc(doc.title)}</p>" if verdict else "")
             + "</header>"]
    if verdict:
        parts.append("<section class='headline' id='verdict'>")
        parts.append(f"<p class='saving'>{esc(verdict.saving[:1].upper() + verdict.saving[1:])}.</p>")
        parts += ["<ul>"] + [f"<li>{esc(line)}</li>" for line in verdict.quality] + ["</ul>"]
        parts.append("</section>")
    if plots:
        parts.append("<section id='figures'><h2>Figures</h2>")
        for name, path in _figure_order(plots):
            parts.append(_figure(name, path))
        parts.append("</section>")
    parts.append("<section id='tables'><h2>Tables</h2>")
    shown = set(verdict.quality) if verdict else set()
    totals = [line for line in doc.conclusion if line not in shown]
    parts += ["<ul class='facts'>"] + [f"<li>{esc(line)}</li>" for line in (*doc.facts, *totals)] + ["</ul>"]
    for table in doc.tables:
        parts.append(f"<div class='scroll'><table><caption>{esc(table.title)}</caption><thead><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in table.headers]
        parts.append("</tr></thead><tbody>")
        for row in table.rows:
            cells = "".join(f"<td class='r'>{esc(c)}</td>" if i in table.right else f"<td>{esc(c)}</td>"
                            for i, c in enumerate(row))
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table></div>")
    parts.append("</section>")
    if doc.notes:
        parts += ["<section id='warnings'><h2>Warnings</h2>"]
        parts += [f"<p class='warn'>{esc(n)}</p>" for n in doc.notes]
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _figure_order(plots: dict[str, Path]) -> list[tuple[str, Path]]:
    known = [(name, plots[name]) for name in FIGURE_CAPTIONS if name in plots]
    return known + [(name, path) for name, path in plots.items() if name not in FIGURE_CAPTIONS]


def _figure(name: str, path: Path) -> str:
    """A plot as a figure: the PNG inline (with its size, so the page lays out before it decodes), its caption."""
    esc = html.escape
    data = path.read_bytes()
    size = ""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
        size = f" width='{width}' height='{height}'"
    caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
    return (f"<figure id='figure-{esc(name)}'><img alt='{esc(caption)}'{size} "
            f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
            f"<figcaption>{esc(caption)} ({esc(path.name)})</figcaption></figure>")


def markdown_with_plots(markdown: str, plots: dict[str, Path]) -> str:
    images = "".join(f"\n![{name}]({path.name})\n" for name, path in plots.items())
    return markdown + images
