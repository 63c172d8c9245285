"""familyc export: a trained member of a run directory as a Hugging Face Llama checkpoint."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from familyc import units
from familyc.cli.app import app, command, err, out, require_train_extra


class Dtype(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"


@app.command()
@command
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run directory of familyc apply.",
                                   show_default=False),
    member: str = typer.Argument(..., metavar="MEMBER", help="The trained member to export.", show_default=False),
    hf: Path = typer.Option(..., "--hf", help="Write a Hugging Face Llama folder here (must not exist).",
                            show_default=False),
    baseline: bool = typer.Option(False, "--baseline", help="Export the member trained from scratch (apply "
                                  "--baselines) instead of the progressive one."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Weights' dtype in the safetensors files."),
) -> None:
    """Write a trained member as a Hugging Face Llama checkpoint (config, safetensors, tokenizer, model card)."""
    require_train_extra("familyc export")
    from familyc.meter import meters
    from familyc.report.export import export_run_member

    with meters(err()) as progress:
        plan, exported = export_run_member(run_dir, member, hf, baseline=baseline, dtype=dtype.value,
                                           progress=progress)
    out().print(f"exported {member}{' (baseline)' if baseline else ''} of {plan.family.name} as {dtype.value}: "
                f"{units.gib(exported.bytes_written)} -> {hf}", markup=False)
