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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from familyc.checkpoint.writer import Getter, TensorRecipe
    from familyc.expand.stream import Recipes

FAILPOINTS_ENV = "FAMILYC_FAILPOINTS"


def armed(name: str) -> bool:
    return name in os.environ.get(FAILPOINTS_ENV, "").split(",")


def failpoint(name: str) -> None:
    """SIGKILL this process group when `name` is listed in $FAMILYC_FAILPOINTS."""
    if armed(name):
        os.killpg(os.getpgrp(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Midway:
    """A growth step whose middle target tensor passes failpoint `name` before it is computed: by then the
    writer has written the ones before it."""

    inner: Recipes
    name: str

    def source_keys(self) -> dict[str, tuple[int, ...]]:
        return self.inner.source_keys()

    def targets(self, dtype: torch.dtype) -> Iterator[TensorRecipe]:
        items = list(self.inner.targets(dtype))
        for index, item in enumerate(items):
            if index == len(items) // 2:
                def compute(get: Getter, inner: TensorRecipe = item) -> torch.Tensor:
                    failpoint(self.name)
                    return inner.compute(get)

                item = dataclasses.replace(item, compute=compute)
            yield item


def midway(recipes: Recipes, name: str) -> Midway:
    return Midway(recipes, name)
