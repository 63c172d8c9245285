"""FAMILYC_PROFILE_MEMORY: a stage's allocator-level peak, measured by torch.profiler, for checking
`familyc rehearse` against a real run (the rehearsal has a tracker of its own; this is independent of it).

Each rank profiles its allocations (`profile_memory=True`: every allocation and free of the CPU allocator, or
the CUDA caching allocator's on a GPU) from before the Trainer builds the model through step PROFILE_STEPS,
then writes <folder>/memory-<rank>.json: the peak of the running sum of bytes allocated since the profile
began. What was allocated before it began (torch's own start-up) is not in it; the process's peak RSS is not
comparable (it counts the interpreter, the libraries and freed pages the allocator keeps). The profile costs
time: a diagnostic, never a training setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

PROFILE_STEPS = 2
"""Steps profiled: AdamW makes its state in the first, the second is the steady state."""


class MemoryProfile:
    def __init__(self, folder: Path) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.folder = folder
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._profile: Any = profile(activities=activities, profile_memory=True)
        self._profile.__enter__()  # type: ignore[no-untyped-call]
        self._open = True

    def after_step(self, step: int, rank: int) -> None:
        if not self._open or step < PROFILE_STEPS:
            return
        self._open = False
        self._profile.__exit__(None, None, None)
        events = sorted((e for e in self._profile.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        running = peak = 0
        for event in events:
            running += event.nbytes()
            peak = max(peak, running)
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"rank": rank, "steps": step, "peak_bytes": peak, "allocations": len(events)}
        (self.folder / f"memory-{rank}.json").write_text(json.dumps(body) + "\n")


def start(folder: str | None) -> MemoryProfile | None:
    return MemoryProfile(Path(folder)) if folder else None
