"""One training stage: torchtitan 0.2.2's Trainer on a job TOML, with familyc's hooks.

    torchrun --standalone --nproc-per-node N -m familyc.backend.stage --job.config_file JOB.toml
    python -m familyc.backend.stage --job.config_file JOB.toml          # one process, no torchrun

Environment (familyc.backend.environment is the contract; two have options of the same name, which take
precedence):
    FAMILYC_FLAVORS  --familyc.flavors PATH   JSON of the model sizes (see flavors.py); needed
                                              unless the TOML names one of torchtitan's flavors
    FAMILYC_METRICS  --familyc.metrics PATH   rank 0 appends one JSON line per logged step
    FAMILYC_DATA_START PATH                   continue the data stream where the stage that wrote PATH stopped
    FAMILYC_DATA_END PATH                     after the last step, write every rank's data position there
    FAMILYC_DATA_SEED SEED                    read each rank's documents in an order shuffled by SEED
    FAMILYC_OPTIMIZER_START PATH              load AdamW's moments from PATH before the first step
    FAMILYC_OPTIMIZER_END PATH                save AdamW's moments to PATH after the last step
                                              (both: familyc.backend.moments)
    FAMILYC_HELDOUT, FAMILYC_EVAL_INTERVAL, FAMILYC_EVAL_TOKENS   evaluate the held-out split at step 0, every
                                              interval steps and the last (familyc.backend.stage_eval)
Every other argument goes to torchtitan's ConfigManager, so `--training.steps 6` overrides the TOML.
Without torchrun, the single-process variables torchtitan needs (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) are set when absent; HF_HUB_OFFLINE and HF_DATASETS_OFFLINE default to 1
(nothing is downloaded at run time).

In order: CPU compatibility (before torchtitan touches the device), flavors, the config, the
Trainer; then rank 0's metrics logger is wrapped to write the JSONL, and `train()`, `close()`,
and the process group is destroyed. A non-finite loss or gradient norm stops the stage at once:
torchtitan 0.2.2 checks nothing (it would log NaN and save NaN weights), so every training step
here checks its gradient norm before the optimizer step (one device sync per step; a non-finite
loss always makes it non-finite, and the message then names the loss) and the process exits with
EXIT_NONFINITE_LOSS and a message (torchrun then stops the other ranks). Every worker asks the
kernel to kill it when its torchrun dies (Linux), so killing apply's process group leaves no
worker training on.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before the heavy imports: `elapsed_s` in the metrics includes them

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from familyc.backend.environment import (  # noqa: E402  (torch-free)
    DATA_END_ENV,
    DATA_SEED_ENV,
    DATA_START_ENV,
    EXIT_CONFIG,
    EXIT_NONFINITE_LOSS,
    FLAVORS_ENV,
    METRICS_ENV,
    OFFLINE_ENVS,
    OPTIMIZER_END_ENV,
    OPTIMIZER_START_ENV,
    PROFILE_MEMORY_ENV,
)
from familyc.files import atomic_write  # noqa: E402

__all__ = ["EXIT_CONFIG", "EXIT_NONFINITE_LOSS", "JsonlMetrics", "NonFiniteLossError", "main", "run"]


class NonFiniteLossError(RuntimeError):
    pass


def _split_argv(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m familyc.backend.stage", add_help=False, allow_abbrev=False)
    parser.add_argument("--familyc.flavors", dest="flavors")
    parser.add_argument("--familyc.metrics", dest="metrics")
    return parser.parse_known_args(argv)


def _single_process_env() -> None:
    """What torchrun would set for one process (torchtitan always initialises a process group)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        os.environ.setdefault(key, value)


# --- metrics ------------------------------------------------------------------------------------

def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlMetrics:
    """Wraps torchtitan's metrics logger (`.log(metrics, step)`, `.close()`); appends a JSON line per call.

    Keys: step, loss (global average), max_loss, grad_norm, tps (tokens per second per device),
    tflops (achieved, per device), mfu (a fraction, from torchtitan's peak for the device; null on
    CPU, where torchtitan knows no peak), peak_flops, n_tokens_seen (global), end_to_end_s
    (torchtitan's: seconds since the last log / log_freq), data_loading_s, lr (at the start of the
    step), memory_gib (peak reserved; the process's peak RSS on CPU), num_flops_per_token,
    world_size, elapsed_s (since the stage process started, imports included)."""

    def __init__(self, inner: Any, path: Path, *, num_flops_per_token: int, peak_flops: float | None,
                 world_size: int) -> None:
        self.inner = inner
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.num_flops_per_token = num_flops_per_token
        self.peak_flops = peak_flops
        self.world_size = world_size

    def log(self, metrics: dict[str, Any], step: int) -> None:
        mfu = metrics.get("mfu(%)")
        record = {
            "step": step,
            "loss": metrics.get("loss_metrics/global_avg_loss"),
            "max_loss": metrics.get("loss_metrics/global_max_loss"),
            "grad_norm": metrics.get("grad_norm"),
            "tps": metrics.get("throughput(tps)"),
            "tflops": metrics.get("tflops"),
            "mfu": None if self.peak_flops is None or mfu is None else mfu / 100,
            "peak_flops": self.peak_flops,
            "n_tokens_seen": metrics.get("n_tokens_seen"),
            "end_to_end_s": metrics.get("time_metrics/end_to_end(s)"),
            "data_loading_s": metrics.get("time_metrics/data_loading(s)"),
            "lr": metrics.get("lr"),
            "memory_gib": metrics.get("memory/max_reserved(GiB)"),
            "num_flops_per_token": self.num_flops_per_token,
        }
        self.write({k: _plain(v) for k, v in record.items()})
        self.inner.log(metrics, step)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (a logged step, or a record of familyc's own such as a held-out evaluation), with
        world_size and elapsed_s; a non-finite number is written as null."""
        record = {**record, "world_size": self.world_size, "elapsed_s": round(time.monotonic() - STARTED, 3)}
        self.file.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}, allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.inner.close()


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to Python numbers."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


# --- where in the data a stage starts and ends ---------------------------------------------------

def _dataset(trainer: Any) -> Any:
    """torchtitan 0.2.2's HuggingFaceTextDataset behind the trainer's stateful dataloader."""
    return getattr(trainer.dataloader, "dataset", None)


def shuffled_documents(data: Any, seed: int) -> Any:
    """A rank's shard of a map-style dataset in an order fixed by `seed` (a permutation of its documents).

    The same seed and world size give the same order in every stage, so a data position (`_sample_idx`,
    documents consumed) means the same documents in the stage that wrote it and in the one continuing it,
    and in a stage resumed from its own checkpoint. An iterable (streamed) dataset is returned as it is."""
    from datasets import Dataset

    if not isinstance(data, Dataset):
        return data
    return data.shuffle(seed=seed, keep_in_memory=True)


def _shuffle_data(trainer: Any, seed: str | None) -> None:
    if seed is None:
        return
    from torchtitan.tools.logging import logger

    dataset = _dataset(trainer)
    if hasattr(dataset, "familyc_position"):
        return  # familyc's mixture shuffles itself, by the seed of its manifest
    if dataset is None or not hasattr(dataset, "_data"):
        logger.warning("familyc stage: this data loader cannot be shuffled; documents are read in file order")
        return
    dataset._data = shuffled_documents(dataset._data, int(seed))
    logger.info(f"familyc stage: documents shuffled with seed {seed}")


def _start_data_at(trainer: Any, path: str | None) -> None:
    """Continue the data stream where the previous stage stopped (each rank at its own position).

    torchtitan resumes a dataset from `_sample_idx` (documents consumed by this rank's shard); a stage
    that resumes from its own checkpoint overwrites this with the checkpoint's position, as it should."""
    import torch

    if not path:
        return
    from torchtitan.tools.logging import logger

    dataset = _dataset(trainer)
    if not Path(path).is_file():
        logger.warning(f"familyc stage: {path} is missing, so this stage starts at the first document instead of "
                       "where the previous stage stopped")
        return
    position = json.loads(Path(path).read_text(encoding="utf-8"))
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if position.get("world_size") == world and "mixture" in position and hasattr(dataset, "familyc_start"):
        dataset.familyc_start(position["mixture"][rank])
        logger.info(f"familyc stage: data of rank {rank} continues at {position['mixture'][rank]['streams']}")
        return
    if position.get("world_size") != world or dataset is None or not hasattr(dataset, "_sample_idx"):
        logger.warning(f"familyc stage: cannot continue the data stream from {path} "
                       f"(written by {position.get('world_size')} ranks, this stage has {world}); starting at 0")
        return
    dataset._sample_idx = int(position["sample_idx"][rank])
    logger.info(f"familyc stage: data starts at document {dataset._sample_idx} of rank {rank}'s shard")


def _record_data_position(trainer: Any, path: str | None) -> None:
    """Write every rank's data position after the last step (rank 0 writes the file), before the final save:
    a stage whose final checkpoint exists always has its position file."""
    import torch

    if not path:
        return
    dataset = _dataset(trainer)
    key = "mixture" if hasattr(dataset, "familyc_position") else "sample_idx"
    mine = dataset.familyc_position() if key == "mixture" else int(getattr(dataset, "_sample_idx", 0))
    positions: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(positions, mine)
    if torch.distributed.get_rank() == 0:
        atomic_write(Path(path), json.dumps({"world_size": len(positions), key: positions}) + "\n")


# --- the stage ----------------------------------------------------------------------------------

def _trainer_class() -> type:
    import torch
    from torchtitan.train import Trainer

    class FamilycTrainer(Trainer):
        """torchtitan's Trainer that stops at the first non-finite loss or gradient norm (before the optimizer
        step, so nothing non-finite is ever saved) and records its data position after its last step."""

        def forward_backward_step(self, **kwargs: Any) -> torch.Tensor:
            loss: torch.Tensor = super().forward_backward_step(**kwargs)
            _STEP_LOSSES.append(loss.detach())  # read only if the gradient norm is not finite: no sync here
            return loss

        familyc_evaluation: Any = None
        """familyc.backend.stage_eval.StageEvaluation, or None: no held-out evaluation during this stage."""
        familyc_memory_profile: Any = None
        """familyc.backend.memory_profile.MemoryProfile ($FAMILYC_PROFILE_MEMORY), or None."""

        def train_step(self, *args: Any, **kwargs: Any) -> None:
            global _STEP
            _STEP = self.step
            _STEP_LOSSES.clear()
            if self.step == 1:  # a fresh start (a resumed stage starts after its checkpoint's step)
                _carry_optimizer(self, os.environ.get(OPTIMIZER_START_ENV))
                _evaluate(self, 0)
            super().train_step(*args, **kwargs)
            if self.step == self.job_config.training.steps:  # before the final checkpoint is saved
                _record_data_position(self, os.environ.get(DATA_END_ENV))
                _keep_optimizer(self, os.environ.get(OPTIMIZER_END_ENV))
            _evaluate(self, self.step)
            if self.familyc_memory_profile is not None:
                self.familyc_memory_profile.after_step(self.step, _rank())

    return FamilycTrainer


def _carry_optimizer(trainer: Any, path: str | None) -> None:
    """Start from the moments carried in: a growth step's, or those of the stable phase a decay branch continues
    (rank 0 records how many, and every group's LR)."""
    if not path:
        return
    from torchtitan.tools.logging import logger

    from familyc.backend.moments import load_moments

    if not (Path(path) / ".metadata").is_file():
        raise FileNotFoundError(f"{path}: the carried optimizer moments are missing (no .metadata); remove the "
                                "folder they are in and apply again (familyc redoes the step that wrote it)")
    record = load_moments(trainer.optimizers, Path(path))
    writer = trainer.metrics_processor.logger
    if isinstance(writer, JsonlMetrics):
        writer.write(record)
    logger.info(f"familyc stage: {record['tensors']} optimizer state tensors carried from {path}; "
                f"LR of the parameter groups {sorted(set(record['group_lrs']))}")


def _keep_optimizer(trainer: Any, path: str | None) -> None:
    """Save the final moments for the growth step that carries them (before the final model save)."""
    if not path:
        return
    from torchtitan.tools.logging import logger

    from familyc.backend.moments import save_moments

    count = save_moments(trainer.optimizers, Path(path))
    logger.info(f"familyc stage: {count} optimizer state tensors saved to {path}")


def _evaluate(trainer: Any, step: int) -> None:
    """The held-out evaluation due after `step` (every rank evaluates; rank 0 writes the record)."""
    evaluation = trainer.familyc_evaluation
    if evaluation is None or not evaluation.due(step):
        return
    from torchtitan.tools.logging import logger

    started = time.perf_counter()
    record = evaluation.record(step, trainer.model_parts, trainer.device)
    # torchtitan times the steps between two logs by the clock: moving its start past the evaluation keeps the
    # logged throughput (and familyc's train_seconds and MFU) the training's alone
    trainer.metrics_processor.time_last_log += time.perf_counter() - started
    writer = trainer.metrics_processor.logger
    if isinstance(writer, JsonlMetrics):
        writer.write(record)
    logger.info(f"familyc stage: step {step} held-out loss {record['heldout_loss']:.4f} "
                f"({record['tokens']} tokens, {record['seconds']:.2f}s)")


_STEP = 0
"""The step being trained (for messages from hooks that torchtitan calls without it)."""
_PATCHES: set[object] = set()
"""The functions this module put in place of torchtitan's (patching twice would wrap a wrapper)."""
_STEP_LOSSES: list[Any] = []
"""The losses of this step's microbatches, kept as tensors: a non-finite loss always gives a non-finite
gradient norm, so the loss is read (a device sync) only when the norm check fails, to name the cause."""


def _rank() -> int:
    import torch

    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _check_gradient_norms() -> None:
    """Wrap torchtitan's gradient clipping (between backward and the optimizer step) to refuse a non-finite norm."""
    import torch
    import torchtitan.distributed.utils as dist_utils

    clip = dist_utils.clip_grad_norm_
    if clip in _PATCHES:
        return

    def checked(*args: Any, **kwargs: Any) -> torch.Tensor:
        norm: torch.Tensor = clip(*args, **kwargs)
        if not torch.isfinite(torch.as_tensor(norm)).all().item():
            bad_loss = next((loss for loss in _STEP_LOSSES if not torch.isfinite(loss).all().item()), None)
            if bad_loss is not None:
                raise NonFiniteLossError(
                    f"step {_STEP}: the loss is {bad_loss.item()} on rank {_rank()}; stopped before the optimizer "
                    "step (nothing saved). Lower the learning rate, or check the initial weights.")
            raise NonFiniteLossError(f"step {_STEP}: the gradient norm is {float(norm)} on rank {_rank()}; stopped "
                                     "before the optimizer step (nothing saved). Lower the learning rate.")
        return norm

    _PATCHES.add(checked)
    dist_utils.clip_grad_norm_ = checked


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when torchrun (its parent) dies, even by SIGKILL; no orphans train on."""
    import ctypes
    import signal

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def run(argv: list[str]) -> int:
    own, rest = _split_argv(argv)
    if own.flavors:
        os.environ[FLAVORS_ENV] = str(Path(own.flavors).resolve())
    metrics_path = own.metrics or os.environ.get(METRICS_ENV)
    _single_process_env()
    for name in OFFLINE_ENVS:
        os.environ.setdefault(name, "1")

    from familyc.backend import compat

    on_cpu = compat.enable_cpu()
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.models.llama3 import llama3_args
    from torchtitan.tools.logging import init_logger, logger

    from familyc.backend import stage_eval
    from familyc.errors import FamilycError

    try:
        from familyc.backend import flavors  # registers $FAMILYC_FLAVORS (and enables compat: a no-op by now)
    except FamilycError as exc:
        print(f"familyc stage: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG

    from familyc.backend import dataset

    dataset.register()  # familyc's data loader for a `familyc` job
    init_logger()
    _die_with_parent()
    _check_gradient_norms()
    config = ConfigManager().parse_args(rest)
    if config.model.name != "llama3" or config.model.flavor not in llama3_args:
        source = os.environ.get(FLAVORS_ENV)
        print(f"familyc stage: model {config.model.name} flavor {config.model.flavor!r} is not registered "
              f"(${FLAVORS_ENV} = {source!r}; known: {', '.join(sorted(llama3_args))})", file=sys.stderr)
        return EXIT_CONFIG
    logger.info(f"familyc stage: flavors {flavors.REGISTERED}; CPU compatibility {on_cpu}")

    from familyc.backend import memory_profile

    trainer = None
    try:
        profile = memory_profile.start(os.environ.get(PROFILE_MEMORY_ENV))  # before the model is built
        trainer = _trainer_class()(config)
        trainer.familyc_memory_profile = profile
        rank = torch.distributed.get_rank()
        if rank == 0 and metrics_path:
            processor = trainer.metrics_processor
            processor.logger = JsonlMetrics(processor.logger, Path(metrics_path),
                                            num_flops_per_token=processor.num_flops_per_token,
                                            peak_flops=None if on_cpu else processor.gpu_peak_flops,
                                            world_size=torch.distributed.get_world_size())
        try:
            trainer.familyc_evaluation = stage_eval.from_environment(
                config, num_flops_per_token=trainer.metrics_processor.num_flops_per_token)
        except (OSError, ValueError) as exc:
            print(f"familyc stage: cannot evaluate the held-out split during training: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        _shuffle_data(trainer, os.environ.get(DATA_SEED_ENV))
        _start_data_at(trainer, os.environ.get(DATA_START_ENV))
        trainer.train()
    except FamilycError as exc:  # a shard that cannot be read, a data position that does not fit
        print(f"familyc stage error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr, flush=True)  # familyc.execute.diagnosis.ERROR_MARK
        os._exit(EXIT_CONFIG)
    except NonFiniteLossError as exc:
        print(f"familyc stage: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_NONFINITE_LOSS)  # no close(): peers may be waiting in a collective; torchrun stops them
    finally:
        if trainer is not None:
            trainer.close()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
