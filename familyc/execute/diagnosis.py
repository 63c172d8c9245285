"""Why a stage failed, read from the end of its log: one message and one hint a person can act on."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 64 * 1024
ERROR_MARK = "familyc stage error: "
"""How a stage prints an error of familyc's own (familyc.backend.stage), its hint on the next line."""


def tail(path: Path, lines: int = 200) -> str:
    """The last `lines` lines of a log (at most its last 64 KiB); empty when it cannot be read."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", errors="replace")
    except OSError:
        return ""


def diagnose(log: Path, code: int) -> tuple[str, str]:
    """A failed stage's cause, from the end of its log: (message, hint)."""
    text = tail(log)
    for what, marker in (("loss", "the loss is"), ("gradient", "the gradient norm is")):
        line = next((line for line in text.splitlines() if "familyc stage: " in line and marker in line), None)
        if line is None:
            continue
        return (f"non-finite {what}: {line.split('familyc stage: ')[-1].strip()}",
                "lower the peak learning rate or check the initial weights; apply again resumes from the last "
                "checkpoint")
    if "No space left on device" in text:
        return "the disk is full", "free disk space and apply again: it resumes from the last checkpoint"
    if "is not registered" in text:
        return "torchtitan does not know the member's flavor", "this is a familyc bug; please report it"
    lines = text.splitlines()
    said = [i for i, line in enumerate(lines) if ERROR_MARK in line]
    if said:  # the stage's own error (a shard that cannot be read, a data position that does not fit, ...)
        i = said[-1]
        hint = lines[i + 1].split("hint: ", 1)[1].strip() if i + 1 < len(lines) and "  hint: " in lines[i + 1] \
            else "the end of the log says more; apply again resumes from the last checkpoint"
        return lines[i].split(ERROR_MARK, 1)[1].strip()[:500], hint
    for marker in ("FileNotFoundError", "DatasetNotFoundError", "Unable to find"):
        if marker in text:
            line = next(line for line in reversed(text.splitlines()) if marker in line)
            return f"a file is missing: {line.strip()[:300]}", "check data.dataset and tokenizer in the spec"
    return (f"the stage exited with code {code}",
            "the end of the log says why; apply again resumes from the last checkpoint")
