"""A RunReport as a Document (text, Markdown) and as a self-contained HTML page with its plots."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

from familyc import units
from familyc.render import Document, Table
from familyc.report.collect import RunReport


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
    if plots:
        saving.append("plots: " + ", ".join(str(p) for p in plots.values()))
    notes = tuple(f"missing: {m}" for m in report.missing)
    return Document(title=f"report of {report.run_dir} (family {plan.family.name})", facts=tuple(facts),
                    tables=(steps, members, growth) + ((head,) if head.rows else ()) + (kl,),
                    conclusion=tuple(saving), notes=notes)


def render_html(doc: Document, plots: dict[str, Path]) -> str:
    """One self-contained page: the Document's facts and tables, the plots embedded as data URIs."""
    esc = html.escape
    parts = ["<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(doc.title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "td.r{text-align:right}caption{text-align:left;font-weight:bold;padding:4px 0}"
             ".warn{color:#a60}</style></head><body>", f"<h1>{esc(doc.title)}</h1>", "<ul>"]
    parts += [f"<li>{esc(f)}</li>" for f in doc.facts]
    parts.append("</ul>")
    for table in doc.tables:
        parts.append(f"<table><caption>{esc(table.title)}</caption><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in table.headers]
        parts.append("</tr>")
        for row in table.rows:
            cells = "".join(f"<td class='r'>{esc(c)}</td>" if i in table.right else f"<td>{esc(c)}</td>"
                            for i, c in enumerate(row))
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts += [f"<p><b>{esc(line)}</b></p>" for line in doc.conclusion]
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(path.name)}</figcaption></figure>")
    parts += [f"<p class='warn'>{esc(n)}</p>" for n in doc.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def markdown_with_plots(markdown: str, plots: dict[str, Path]) -> str:
    images = "".join(f"\n![{name}]({path.name})\n" for name, path in plots.items())
    return markdown + images
