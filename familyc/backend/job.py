"""One plan TrainStep as a torchtitan 0.2.2 job TOML (the `--job.config_file` of a stage).

Torch-free text: every field name is one of 0.2.2's `JobConfig` (torchtitan/config/job_config.py),
which the tests check by parsing the output with `ConfigManager`. Paths are made absolute,
because torchtitan resolves them against the training process's working directory and
requires `checkpoint.initial_load_path` to be a folder it can find.

What familyc decides, and why:
- `training.mixed_precision_param` follows the step's precision (fp32 -> float32, bf16 -> bfloat16),
  never the machine; master weights, gradients and optimizer state stay float32 (`training.dtype`).
- `parallelism.data_parallel_shard_degree = -1`: FSDP over every rank torchrun starts; gradient
  accumulation is global / (local x ranks), so fewer ranks than planned still train the same batch.
- `checkpoint`: always on. Periodic saves (every `checkpoint_interval` steps, the newest
  KEEP_LATEST_K kept) are full states for resuming in the same dump folder; the save after the
  last step holds the model only, in float32: the DCP folder `<dump>/checkpoint/step-<steps>`
  that the next growth step reads. `initial_load_path` is used only while
  `<dump>/checkpoint` does not exist (torchtitan resumes from its own checkpoints otherwise),
  so each stage needs a fresh dump folder.
- `activation_checkpoint`: the plan's mode; `selective` is torchtitan's every-second-block layer
  SAC, which is what familyc's memory model assumes.
- `training.dataset`: `c4_test` (torchtitan's loader of a local jsonl folder: the single builtin corpus) or
  `familyc` (familyc.backend.dataset's weighted mix, `dataset_path` its manifest RUN_DIR/data.json).
- `experimental.custom_import = "familyc.backend.flavors"` registers the member's size in every
  process (from $FAMILYC_FLAVORS) and applies the CPU compatibility layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from familyc.errors import PlanError
from familyc.plan.ir import MemberPlan, Plan
from familyc.plan.steps import TrainStep

CUSTOM_IMPORT = "familyc.backend.flavors"
CHECKPOINT_FOLDER = "checkpoint"
KEEP_LATEST_K = 2
"""torchtitan refuses 1 (the newest may still be being written)."""
MIXED_PRECISION = {"fp32": "float32", "bf16": "bfloat16"}
AC_MODES = {"none": {"mode": "none"}, "full": {"mode": "full"},
            "selective": {"mode": "selective", "selective_ac_option": "2"}}


def final_checkpoint(dump_folder: Path | str, num_steps: int) -> Path:
    """Where a stage's model-only DCP checkpoint lands."""
    return Path(dump_folder).resolve() / CHECKPOINT_FOLDER / f"step-{num_steps}"


def job_config(step: TrainStep, member: MemberPlan, plan: Plan, *, dump_folder: Path | str,
               dataset_path: Path | str, tokenizer_path: Path | str, flavor: str, compile: bool,
               init_from: Path | str | None, checkpoint_interval: int, seed: int,
               dataset: str = "c4_test") -> dict[str, dict[str, Any]]:
    """The job as nested sections (what `job_config_toml` writes)."""
    if step.member != member.name:
        raise PlanError(f"step {step.id} trains {step.member}, not {member.name}")
    if step.precision not in MIXED_PRECISION:
        raise PlanError(f"step {step.id}: no torchtitan mixed precision for {step.precision!r}")
    if step.activation_checkpointing not in AC_MODES:
        raise PlanError(f"step {step.id}: unknown activation checkpointing {step.activation_checkpointing!r}")
    optimizer = plan.training.optimizer
    schedule = step.schedule
    lr_scheduler: dict[str, Any] = {"warmup_steps": schedule.warmup_steps, "decay_type": schedule.decay_type,
                                    "min_lr_factor": schedule.min_lr_factor}
    if schedule.decay_ratio is not None:
        lr_scheduler["decay_ratio"] = schedule.decay_ratio
    checkpoint: dict[str, Any] = {
        "enable": True, "folder": CHECKPOINT_FOLDER, "interval": checkpoint_interval,
        "keep_latest_k": KEEP_LATEST_K, "last_save_model_only": True, "export_dtype": "float32",
    }
    if init_from is not None:
        checkpoint["initial_load_path"] = str(Path(init_from).resolve())
        checkpoint["initial_load_model_only"] = True
    return {
        "job": {"dump_folder": str(Path(dump_folder).resolve()),
                "description": f"familyc {plan.family.name} {step.id} (plan {plan.plan_id})"},
        "model": {"name": "llama3", "flavor": flavor, "hf_assets_path": str(Path(tokenizer_path).resolve())},
        "optimizer": {"name": optimizer.name, "lr": step.max_lr, "beta1": optimizer.beta1, "beta2": optimizer.beta2,
                      "eps": optimizer.eps, "weight_decay": optimizer.weight_decay},
        "lr_scheduler": lr_scheduler,
        "training": {"dataset": dataset, "dataset_path": str(Path(dataset_path).resolve()),
                     "local_batch_size": step.local_batch_size, "global_batch_size": step.global_batch_size,
                     "seq_len": member.seq_len, "steps": step.num_steps, "max_norm": optimizer.max_grad_norm,
                     "dtype": "float32", "mixed_precision_param": MIXED_PRECISION[step.precision]},
        "parallelism": {"data_parallel_shard_degree": -1},
        "activation_checkpoint": dict(AC_MODES[step.activation_checkpointing]),
        "compile": {"enable": compile},
        "checkpoint": checkpoint,
        "metrics": {"log_freq": plan.training.log_interval, "disable_color_printing": True},
        "debug": {"seed": seed},
        "experimental": {"custom_import": CUSTOM_IMPORT},
    }


def job_config_toml(step: TrainStep, member: MemberPlan, plan: Plan, *, dump_folder: Path | str,
                    dataset_path: Path | str, tokenizer_path: Path | str, flavor: str, compile: bool,
                    init_from: Path | str | None, checkpoint_interval: int, seed: int,
                    dataset: str = "c4_test") -> str:
    """The torchtitan 0.2.2 job TOML of one train step (see the module docstring)."""
    sections = job_config(step, member, plan, dump_folder=dump_folder, dataset=dataset, dataset_path=dataset_path,
                          tokenizer_path=tokenizer_path, flavor=flavor, compile=compile, init_from=init_from,
                          checkpoint_interval=checkpoint_interval, seed=seed)
    header = f"# torchtitan 0.2.2 job: {step.id} of plan {plan.plan_id}, written by familyc. Do not edit.\n"
    return header + "".join(_section(name, fields) for name, fields in sections.items())


def _section(name: str, fields: dict[str, Any]) -> str:
    return f"\n[{name}]\n" + "".join(f"{key} = {_value(value)}\n" for key, value in fields.items())


def _value(value: Any) -> str:
    """A TOML value. JSON's escapes are valid in TOML basic strings; repr(float) is a TOML float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            raise ValueError(f"{value} has no place in a job")
        return text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
