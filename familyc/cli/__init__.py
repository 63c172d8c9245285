"""familyc's command line. Commands register themselves on `app` when their module is imported."""

from __future__ import annotations

from familyc.cli import plan_commands  # noqa: F401  (registers validate, plan, show, diff, schema)
from familyc.cli.app import app


def main() -> None:
    app()
