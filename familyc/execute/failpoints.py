"""Fault injection for the crash tests: `FAMILYC_FAILPOINTS=name,name` kills apply at those points.

A failpoint is a named place in `familyc apply` where a crash is hardest to survive: in the middle
of an expansion's write, between the renames that promote a member (tests/test_apply.py). When
its name is listed in $FAMILYC_FAILPOINTS, `failpoint(name)` SIGKILLs the whole process group
(apply and any stage it runs), as `kill -9` or a lost node would; otherwise it does nothing.
Nothing else reads the variable, and outside the tests it is never set.

    expand-midway     an expansion, after about half of its tensors are written
    promote-moved     a trained member: the final checkpoint renamed to .<name>.moving, no sidecar yet
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterable, Iterator
from typing import Any

FAILPOINTS_ENV = "FAMILYC_FAILPOINTS"


def armed(name: str) -> bool:
    return name in os.environ.get(FAILPOINTS_ENV, "").split(",")


def failpoint(name: str) -> None:
    """SIGKILL this process group when `name` is listed in $FAMILYC_FAILPOINTS."""
    if armed(name):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def midway(items: Iterable[Any], name: str) -> Iterator[Any]:
    """Target tensors (familyc.expand.operators.TargetTensor) whose middle one passes `name` before it is
    computed: by then the writer has written the ones before it."""
    items = list(items)
    for index, item in enumerate(items):
        if index == len(items) // 2:
            def compute(get: Any, inner: Any = item.compute) -> Any:
                failpoint(name)
                return inner(get)

            item = dataclasses.replace(item, compute=compute)
        yield item
