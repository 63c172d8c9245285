"""familyc's command line. Commands register themselves on `app` when their module is imported."""

from __future__ import annotations

from familyc.cli import apply_command, expand_command, plan_commands  # noqa: F401  (commands register themselves)
from familyc.cli.app import app


def main() -> None:
    app()
