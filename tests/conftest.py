"""Shared helpers: the repository root, and compiling a spec given as text or as a mutated tiny spec."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from the repository root, as CI and the README do (plan paths are relative to it)."""
    monkeypatch.chdir(REPO)
    return REPO


def tiny_data() -> dict[str, Any]:
    return yaml.safe_load((SPECS / "tiny.yaml").read_text())


def llama_data() -> dict[str, Any]:
    return yaml.safe_load((SPECS / "llama_1b_8b.yaml").read_text())


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(data_or_text, name="spec.yaml") -> path of a spec file in tmp_path."""

    def write(content: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write


def mutated(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted-path changes: mutated(d, **{"cluster.mfu": 0.5})."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return out


_DELETE = object()
DELETE = _DELETE

os.environ.setdefault("COLUMNS", "160")


REGENERATE = os.environ.get("FAMILYC_REGENERATE_GOLDENS") == "1"


def assert_golden(path: Path, actual: str) -> None:
    """Compare with a golden file; FAMILYC_REGENERATE_GOLDENS=1 rewrites it instead."""
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"missing golden {path}: run with FAMILYC_REGENERATE_GOLDENS=1"
    expected = path.read_text()
    assert actual == expected, f"{path} differs; if intended, regenerate with FAMILYC_REGENERATE_GOLDENS=1"


class Hang(BaseException):
    """Raised by time_limit's alarm; a BaseException so that the CLI's error boundary cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail a call that does not return in time (a hang is a bug, not a slow test)."""
    if not hasattr(signal, "setitimer"):  # not on Windows: no guard
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
