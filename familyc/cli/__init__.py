"""familyc's command line. Commands register themselves on `app` when their module is imported."""

from __future__ import annotations

from familyc.cli import (  # noqa: F401  (commands register themselves)
    apply_command,
    doctor_command,
    eval_command,
    expand_command,
    export_command,
    plan_commands,
    rehearse_command,
    report_command,
)
from familyc.cli.app import app


def main() -> None:
    app()
