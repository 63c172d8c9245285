"""Rehearse a plan's training stages on a CPU: one full training step at the real shape and world size, on
fake tensors, with torchtitan 0.2.2's own parallelization, optimizer, scheduler and loss.

One process stands for rank 0 of the stage's N ranks: torch's fake process group (`backend="fake"`) answers
every collective at once with tensors of the right shape, so FSDP2 shards, all-gathers and reduce-scatters
exactly as it would across N GPUs. Every tensor is a FakeTensor (shape, dtype, device, no storage), so an 8B
member at 64 ranks costs half a minute and well under a GB. What the step allocates is tracked by torch's
FSDPMemTracker (torch.distributed._tools.fsdp2_mem_tracker), which attributes every live storage to a
category: sharded and unsharded parameters, sharded and unsharded gradients, optimizer state, activations,
temporaries, the collectives' buffers, the inputs. A stage on one rank, which torchtitan does not shard (and
runs in bf16 by autocast instead), is tracked by torch's MemTracker, whose categories are the same less
FSDP2's.

The step is torchtitan's `Trainer.train_step` (torchtitan/train.py), rebuilt from its parts because the
Trainer itself builds the data loader, loads checkpoints and initialises weights (`init_weights` draws with
`trunc_normal_`, which fake tensors cannot run; the values do not matter to the memory):
  - the model on the meta device in `training.dtype`, the train spec's `parallelize_fn` (activation
    checkpointing, FSDP2 with the plan's mixed precision), `to_empty` on fake CPU tensors;
  - the train spec's optimizer and LR scheduler builders on the job's `[optimizer]`/`[lr_scheduler]`;
  - per micro-batch: forward, the train spec's loss (sum, divided by the global valid tokens), `del pred`,
    backward; then torchtitan's `clip_grad_norm_`, the optimizer step, the scheduler step.
Two optimizer steps run: AdamW creates its state at the first, so the second is the steady state a long
stage lives in. Within a step, two micro-batches are enough: from the second on, every micro-batch meets the
gradients the first left (more change nothing).

Not rehearsed, and said so in the result: torch.compile (the rehearsal is eager; compiled blocks save less
for the backward), the GPU's own costs (CUDA context, the caching allocator's fragmentation, NCCL's
buffers; the plan's `cluster.memory_headroom` keeps room for them), a real data loader, checkpoint saves.
FSDPMemTracker sees tensors, not the allocator: on a GPU the caching allocator rounds every block up (to
512 B, 2 MiB segments), which is part of what the headroom is for.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed._tools.mem_tracker import MemTracker
from torch.testing._internal.distributed.fake_pg import FakeStore
from torch.utils.flop_counter import FlopCounterMode

from familyc.backend import compat
from familyc.backend.job import job_config_toml
from familyc.backend.model import plan_model_args
from familyc.backend.moments import STATE_PREFIX
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

MICRO_BATCHES = 2
"""Micro-batches rehearsed per optimizer step (see the module docstring)."""
OPTIMIZER_STEPS = 2

PARTS = {
    # the rehearsal's parts, each the sum of tracker categories: FSDPMemTracker's (_FSDPRefType) for a sharded
    # stage, MemTracker's (_MemRefType) for a stage on one rank, which torchtitan does not shard
    "parameters": ("Sharded Param", "Parameter"),
    "buffers": ("Buffer",),
    "gradients": ("Sharded Grad", "Gradient"),
    "optimizer": ("OptState", "Optstate"),
    "working": ("Unsharded Param", "Unsharded Grad", "All Gather", "Reduce Scatter"),
    "activations": ("Activation",),
    "temporaries": ("Temp",),
    "inputs": ("Inputs", "Other"),
}
"""Every category of both trackers; the parts sum to the tracker's total."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainRehearsal:
    """One training stage rehearsed: bytes per device of rank 0 at its peak, by part, and what it saw."""

    step: str
    world_size: int
    peak: int
    parts: dict[str, int]
    """The peak's breakdown (PARTS); the parts sum to `peak`."""
    activations_per_block: int
    """Bytes one transformer block's forward leaves for the backward, per micro-batch (measured between the
    first block's input and the last block's output, divided by the number of blocks)."""
    logits: int
    """Bytes the final norm, the output projection and the loss leave for the backward, per micro-batch."""
    flops_per_token: float
    """FLOPs of one micro-batch's forward and backward counted by FlopCounterMode, per token."""
    model_keys: dict[str, tuple[int, ...]]
    """The model's state dict as torchtitan's checkpoint saves and loads it: key -> global shape."""
    optimizer_keys: dict[str, tuple[int, ...]]
    """The optimizer's flattened state tensors (state.<fqn>.exp_avg, ...) -> global shape."""
    seconds: float


@contextlib.contextmanager
def fake_world(world_size: int) -> Iterator[None]:
    """A fake process group of `world_size` ranks in which this process is rank 0."""
    if dist.is_initialized():
        raise RuntimeError("a process group is already initialized; rehearse in a process of its own")
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def _job(plan: Plan, step: TrainStep, folder: Path) -> Any:
    """torchtitan's JobConfig of the stage, from the TOML `familyc apply` writes (the paths are never read)."""
    from torchtitan.config import ConfigManager

    member = plan.member(step.member)
    toml = job_config_toml(step, member, plan, dump_folder=folder / "dump", dataset_path=folder / "data",
                           tokenizer_path=folder, flavor=f"familyc-{member.name}", compile=False,
                           init_from=None, checkpoint_interval=max(step.num_steps, 1), seed=0)
    path = folder / "job.toml"
    path.write_text(toml)
    return ConfigManager().parse_args(["--job.config_file", str(path)])


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}


def _category_bytes(snapshot: dict[Any, dict[str, int]]) -> dict[str, int]:
    """A tracker snapshot's bytes by category name, summed over devices (there is one: the CPU)."""
    out: dict[str, int] = {}
    for per_device in snapshot.values():
        for category, value in per_device.items():
            name = getattr(category, "value", str(category))
            out[name] = out.get(name, 0) + int(value)
    return out


def _attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Forward of SDPA on the CPU (torch's FlopCounterMode has no formula for it): QK^T and AV."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query, key, value))  # type: ignore[no-untyped-call]


def _attention_backward_flops(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                              **kwargs: Any) -> int:
    """Backward of SDPA by the MFU convention torchtitan's formula follows: the gradients of QK^T and AV, two
    matmuls each (twice the forward). torch's own formula for the GPU kernels adds the recompute of the
    scores, which is not useful work."""
    return 2 * _attention_flops(query, key, value)


def flop_counter() -> FlopCounterMode:
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward_flops,
    })


def _tracker(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, fsdp: bool) -> MemTracker:
    """FSDPMemTracker for a sharded model; torch's MemTracker where torchtitan applies no FSDP (one rank)."""
    if fsdp:
        tracker = FSDPMemTracker(model, optimizer)
        tracker.track_inputs(tuple(t for batch in batches for t in batch))
        return tracker
    plain = MemTracker()
    plain.track_external(model, optimizer, *(t for batch in batches for t in batch))
    return plain


@contextlib.contextmanager
def _outside_fake_mode(tracker: MemTracker) -> Iterator[None]:
    """The optimizer's part of the step, on the fake tensors but outside their mode. Every tensor it touches is a
    DTensor, whose sharding propagation runs the op on global-shape fake tensors: under our mode it would reuse
    it, and the tracker (which counts the ops of the mode it was entered in) would count an optimizer step on
    unsharded tensors, 16 bytes per parameter that no rank holds. Outside it, DTensor propagates in a fake mode
    of its own, which the tracker skips, and counts the local ops, which we tell it to expect outside any mode.
    (Everything else runs under our mode, so that what FSDP2 allocates, its all-gather and reduce-scatter
    buffers and the unsharded parameters, is fake too.)"""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    entry = tracker._fake_mode_on_entry
    with unset_fake_temporarily():
        tracker._fake_mode_on_entry = None
        try:
            yield
        finally:
            tracker._fake_mode_on_entry = entry


def rehearse_train(plan: Plan, step: TrainStep) -> TrainRehearsal:
    """Rehearse one training stage (see the module docstring)."""
    from torchtitan.distributed import ParallelDims
    from torchtitan.distributed import utils as dist_utils
    from torchtitan.protocols import train_spec as titan_train_spec
    from torchtitan.tools.utils import set_default_dtype

    compat.enable_cpu()
    started = time.perf_counter()
    member = plan.member(step.member)
    args = plan_model_args(plan, member.name)
    with tempfile.TemporaryDirectory(prefix="familyc-rehearse-") as folder:
        job = _job(plan, step, Path(folder))
    spec = titan_train_spec.get_train_spec(job.model.name)
    world = step.devices
    shape = (step.local_batch_size, member.seq_len)
    tokens = step.local_batch_size * member.seq_len
    micro_batches = min(MICRO_BATCHES, step.grad_accum)
    with fake_world(world):
        p = job.parallelism
        dims = ParallelDims(dp_shard=p.data_parallel_shard_degree, dp_replicate=p.data_parallel_replicate_degree,
                            cp=p.context_parallel_degree, tp=p.tensor_parallel_degree,
                            pp=p.pipeline_parallel_degree, ep=p.expert_parallel_degree,
                            etp=p.expert_tensor_parallel_degree, world_size=world)
        with torch.device("meta"), set_default_dtype(getattr(torch, job.training.dtype)):
            model = spec.model_cls(args)
        model = spec.parallelize_fn(model, dims, job)
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        with fake:
            model.to_empty(device="cpu")
            model.train()
            optimizers = spec.build_optimizers_fn([model], job.optimizer, dims)
            schedulers = spec.build_lr_schedulers_fn(optimizers, job.lr_scheduler, job.training.steps)
            loss_fn = spec.build_loss_fn(job)
            batches = [(torch.randint(0, args.vocab_size, shape), torch.randint(0, args.vocab_size, shape))
                       for _ in range(micro_batches)]
            tracker = _tracker(model, optimizers.optimizers[0], batches, fsdp=dims.fsdp_enabled)
            amp = dist_utils.maybe_enable_amp(dims, job.training.mixed_precision_param, "cpu")
            marks: dict[str, int] = {}

            def mark(name: str) -> None:
                snapshot = _category_bytes(tracker.get_tracker_snapshot("current"))
                marks.setdefault(name, snapshot.get("Activation", 0))

            def forward_backward(inputs: torch.Tensor, labels: torch.Tensor) -> None:
                with amp:  # autocast on one device; FSDP2 casts itself (torchtitan's maybe_enable_amp)
                    pred = model(inputs)
                    loss = loss_fn(pred, labels) / (tokens * world * step.grad_accum)
                del pred  # as torchtitan's forward_backward_step does, before the backward
                mark("loss")
                loss.backward()

            layers = list(model.layers.values())
            hooks = [layers[0].register_forward_pre_hook(lambda *_: mark("blocks_in")),
                     layers[-1].register_forward_hook(lambda *_: mark("blocks_out"))]
            # FLOPs on a micro-batch of their own, before the tracked steps: FlopCounterMode's module hooks keep
            # what activation checkpointing recomputes alive through the backward (2.4x the peak of a real run
            # of the tiny spec's l member with full checkpointing), so it must not run while memory is measured.
            counter = flop_counter()
            with counter:
                forward_backward(*batches[0])
            optimizers.zero_grad()
            marks.clear()
            with tracker:
                for _ in range(OPTIMIZER_STEPS):
                    optimizers.zero_grad()
                    for inputs, labels in batches:
                        tracker.reset_mod_stats()  # per-module statistics only (the peak stays): one forward each
                        forward_backward(inputs, labels)
                    with _outside_fake_mode(tracker):
                        dist_utils.clip_grad_norm_(list(model.parameters()), job.training.max_norm, foreach=True,
                                                   pp_mesh=None, ep_enabled=False)
                        optimizers.step()
                        schedulers.step()
            for hook in hooks:
                hook.remove()
            peak = _category_bytes(tracker.get_tracker_snapshot("peak"))
            model_keys = _shapes(model.state_dict())
            optimizer_keys = {k: v for k, v in _shapes(optimizers.state_dict()).items()
                              if k.startswith(STATE_PREFIX)}
    parts = {part: sum(peak.get(c, 0) for c in categories) for part, categories in PARTS.items()}
    return TrainRehearsal(
        step=step.id, world_size=world, peak=sum(parts.values()), parts=parts,
        activations_per_block=(marks["blocks_out"] - marks["blocks_in"]) // len(layers),
        logits=marks["loss"] - marks["blocks_out"],
        flops_per_token=counter.get_total_flops() / tokens,
        model_keys=model_keys, optimizer_keys=optimizer_keys, seconds=time.perf_counter() - started)
