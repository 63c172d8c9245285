"""One `familyc apply` per run directory at a time: an flock that dies with its process."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from familyc.errors import FamilycError
from familyc.execute.rundir import LOCK_FILE, RunDir


@contextmanager
def run_lock(run: RunDir) -> Iterator[None]:
    """Hold the run directory's lock; a second apply of the same directory is refused at once."""
    run.root.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (run.root / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FamilycError(f"another familyc apply is running in {run.root}",
                           hint="wait for it, or stop it; its stages stop with it") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
