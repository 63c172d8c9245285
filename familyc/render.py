"""One result object, several renderers: a Document of facts and tables, as rich text or Markdown.

Plans, diffs and reports build a Document once; the text renderer (rich, for terminals and
logs) and the Markdown renderer (pull-request comments, reports) only lay it out. With
colour off and a fixed width the text output is byte-for-byte stable, which the golden tests
rely on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table as RichTable


@dataclass(frozen=True, kw_only=True, slots=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: frozenset[int] = frozenset()
    """Indices of right-aligned (numeric) columns."""
    wrap: frozenset[int] = frozenset()
    """Indices of columns whose text may wrap (long descriptions); the others never do."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    title: str
    facts: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    conclusion: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Warnings and caveats, rendered last."""


def render_text(doc: Document, console: Console) -> None:
    console.print(doc.title, style="bold", highlight=False, soft_wrap=True)
    for fact in doc.facts:
        console.print(f"  {fact}", highlight=False, soft_wrap=True)
    for table in doc.tables:
        rich_table = RichTable(title=table.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                               title_style="bold", header_style="bold")
        for i, header in enumerate(table.headers):
            rich_table.add_column(header, justify="right" if i in table.right else "left",
                                  no_wrap=i not in table.wrap, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)
    for line in doc.conclusion:
        console.print(line, style="bold", highlight=False, soft_wrap=True)
    if doc.notes:
        console.print("warnings:", style="yellow", highlight=False)
        for note in doc.notes:
            console.print(f"  - {note}", style="yellow", highlight=False, soft_wrap=True)


def text(doc: Document, *, width: int = 160) -> str:
    """The text rendering without colour at a fixed width (tests, files)."""
    buffer = io.StringIO()
    render_text(doc, Console(file=buffer, width=width, color_system=None, force_terminal=False,
                             legacy_windows=False))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|")


def render_markdown(doc: Document) -> str:
    out = [f"### {doc.title}", ""]
    out += [f"- {fact}" for fact in doc.facts]
    for table in doc.tables:
        out += ["", f"**{table.title}**", ""]
        out.append("| " + " | ".join(table.headers) + " |")
        out.append("|" + "|".join("---:" if i in table.right else "---" for i in range(len(table.headers))) + "|")
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if doc.conclusion:
        out += [""] + [f"**{line}**" for line in doc.conclusion]
    if doc.notes:
        out += ["", "Warnings:", ""] + [f"- {note}" for note in doc.notes]
    return "\n".join(out) + "\n"
