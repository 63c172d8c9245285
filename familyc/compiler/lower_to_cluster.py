"""Pass 6, lower_to_cluster: budgets -> runnable train and expand steps on the cluster.

Needs: `members`, `budgets`, `max_lr`. Adds: `steps` (execution order: train the first
member, then expand and train each next one) and `baseline` (every member from scratch),
with costs still zero. Per train step:
- tokens become whole optimizer steps of the member's global batch (rounded to the nearest,
  at least one), so the step's tokens are num_steps x batch_tokens;
- the global batch splits over all devices (FSDP2 shards over every device: torchtitan's
  data_parallel_shard_degree = -1); each device runs micro-batches of local_batch_size
  sequences with gradient accumulation for the rest;
- the micro-batch and activation checkpointing are the least intrusive that fit in memory:
  no checkpointing at the largest micro-batch that fits; only when even one sequence does
  not fit, selective, then full (unless the spec fixes either);
- the LR schedule: warmup (steps, or a fraction of the stage), then the decay; after a growth the
  warmup and the peak follow the growth step's lr policy (growth[].lr: warmup none / steps / fraction,
  peak_factor), else lr.schedule (restarted only when restart_warmup);
- the held-out evaluation: step 0, every training.eval.interval steps (auto: 5% of the stage) and the last;
- the data: with data.progressive_stages = continue, each progressive stage starts reading where
  the one before it stopped (so the family sees no text twice while the corpus lasts);
- lr.schedule.grow_from = stable (the family-wide warmup-stable-decay): a member that is grown from trains
  as two steps that together are exactly its WSD schedule (`branch`): the warmup and stable phase, which
  the next growth reads, and its decay branch, which continues it and is the released member.
"""

from __future__ import annotations

from dataclasses import replace

from familyc.compiler.state import Compilation
from familyc.cost.accelerators import GIB, accelerator
from familyc.cost.memory import estimate_memory
from familyc.cost.params import count_params
from familyc.cost.storage import member_checkpoint_bytes
from familyc.enums import AC_MODES, ActivationCheckpointing
from familyc.growth.feasibility import assess_growth
from familyc.plan.ir import BaselineMember, MemberPlan
from familyc.plan.steps import EvalPlan, ExpandStep, LRAfterGrowth, Memory, Schedule, TrainStep, evaluated_steps
from familyc.spec.model import FamilySpec, GrowthSpec

DEFAULT_WARMUP_FRACTION = 0.05
AUTO_EVAL_FRACTION = 0.05
"""training.eval.interval auto: evaluate every 5% of a stage (about 20 points per curve, at most 5% of its steps
apart), so a rise after growth of a few steps' length shows up."""


def device_memory(spec: FamilySpec) -> int:
    """Bytes per device: cluster.memory_gib when given, else the accelerator table's."""
    if spec.cluster.memory_gib is not None:
        return int(spec.cluster.memory_gib * GIB)
    total = accelerator(spec.cluster.accelerator).memory_bytes
    assert total is not None  # check_spec demands memory_gib where the table has none
    return total


def usable_memory(spec: FamilySpec) -> int:
    return int(device_memory(spec) * (1 - spec.cluster.memory_headroom))


def _divisors_descending(n: int) -> list[int]:
    return sorted((d for d in range(1, n + 1) if n % d == 0), reverse=True)


def choose_micro_batch(spec: FamilySpec, member: MemberPlan,
                       per_device: int) -> tuple[int, ActivationCheckpointing, Memory]:
    """(micro-batch, activation checkpointing, memory): the first that fits, else the smallest."""
    training = spec.training
    params = count_params(member.shape)
    capacity = usable_memory(spec)
    choice = training.activation_checkpointing
    modes: tuple[ActivationCheckpointing, ...] = AC_MODES if choice == "auto" else (choice,)
    micros = [training.micro_batch_size] if training.micro_batch_size else _divisors_descending(per_device)
    last: tuple[int, ActivationCheckpointing, Memory] | None = None
    for mode in modes:
        for micro in micros:
            est = estimate_memory(member.shape, params, seq_len=member.seq_len, micro_batch=micro,
                                  grad_accum=max(1, per_device // micro),
                                  fsdp_degree=spec.cluster.devices, precision=training.precision,
                                  activation_checkpointing=mode)
            memory = Memory(parameters=est.parameters, gradients=est.gradients, optimizer=est.optimizer,
                            working=est.working, activations=est.activations, logits=est.logits,
                            temporaries=est.temporaries,
                            total=est.total, capacity=capacity, fits=est.total <= capacity)
            last = (micro, mode, memory)
            if memory.fits:
                return last
    assert last is not None
    return last


def schedule_for(spec: FamilySpec, num_steps: int, *, growth: GrowthSpec | None) -> tuple[Schedule, int]:
    """The stage's schedule, and the warmup asked for before clamping to the stage length. A grown stage
    follows its growth step's warmup policy (growth[].lr.warmup), else the family's schedule."""
    s = spec.lr.schedule
    policy = growth.lr if growth is not None else None
    if policy is not None and policy.warmup == "none":
        warmup = 0
    elif policy is not None and policy.warmup == "steps" and policy.warmup_value is not None:
        warmup = int(policy.warmup_value)
    elif policy is not None and policy.warmup == "fraction" and policy.warmup_value is not None:
        warmup = round(policy.warmup_value * num_steps)
    elif growth is not None and not s.restart_warmup:
        warmup = 0
    elif s.warmup_steps is not None:
        warmup = s.warmup_steps
    else:
        fraction = s.warmup_fraction if s.warmup_fraction is not None else DEFAULT_WARMUP_FRACTION
        warmup = round(fraction * num_steps)
    if s.decay == "wsd":
        decay_type, decay_ratio = s.wsd_decay, s.decay_fraction
    else:
        decay_type, decay_ratio = s.decay, None
    return (Schedule(warmup_steps=min(warmup, num_steps), decay_type=decay_type, decay_ratio=decay_ratio,
                     min_lr_factor=s.min_lr_factor), warmup)


def eval_plan(spec: FamilySpec, member: MemberPlan, num_steps: int) -> EvalPlan | None:
    """The stage's held-out evaluation (FLOPs still zero): training.eval's interval (auto: 5% of the stage's steps,
    at least 1) and tokens rounded up to whole sequences on every device. None when training.eval.interval is
    none (every source has held-out text: familyc.execute.data)."""
    e = spec.training.eval
    if not e.enabled:
        return None
    interval = e.interval if e.interval is not None else max(1, int(AUTO_EVAL_FRACTION * num_steps))
    unit = member.seq_len * spec.cluster.devices
    tokens = -(-e.tokens // unit) * unit
    return EvalPlan(interval=interval, tokens=tokens, evaluations=len(evaluated_steps(num_steps, interval)), flops=0)


def _train_step(c: Compilation, member: MemberPlan, *, step_id: str, tokens_requested: int,
                growth: GrowthSpec | None, init_from: str | None, warnings: list[str]) -> TrainStep:
    spec = c.spec
    assert spec is not None
    override = spec.member(member.name).batch_tokens
    batch_tokens = override if override is not None else spec.training.batch_tokens
    num_steps = max(1, round(tokens_requested / batch_tokens))
    sequences = batch_tokens // member.seq_len
    devices = spec.cluster.devices
    per_device = sequences // devices
    micro, ac_mode, memory = choose_micro_batch(spec, member, per_device)
    schedule, warmup_asked = schedule_for(spec, num_steps, growth=growth)
    max_lr = c.max_lr[member.name] * (growth.lr.peak_factor if growth is not None else 1.0)
    if warmup_asked > num_steps:
        warnings.append(f"{step_id}: warmup of {warmup_asked} steps is longer than the stage's {num_steps} steps; "
                        f"clamped to {num_steps}")
    return TrainStep(
        id=step_id, member=member.name, source=growth.source if growth else None, init_from=init_from,
        tokens=num_steps * batch_tokens,
        tokens_requested=tokens_requested, num_steps=num_steps, batch_tokens=batch_tokens,
        global_batch_size=sequences, local_batch_size=micro, grad_accum=per_device // micro, devices=devices,
        nodes=spec.cluster.nodes, fsdp_degree=devices, precision=spec.training.precision,
        activation_checkpointing=ac_mode, max_lr=max_lr, schedule=schedule, memory=memory,
        eval=eval_plan(spec, member, num_steps),
    )


def branch(whole: TrainStep, warnings: list[str]) -> list[TrainStep]:
    """A member's whole WSD stage as its stable phase and its decay branch.

    torchtitan 0.2.2's scheduler over N steps with warmup W and decay_ratio r decays over D = round(N r) steps
    (at most N - W): the LR factor is 1 from step W to step N - D, then 1 - k/D for k = 1 .. D-1 (the shape at
    step N-D+k). The stable phase is the first S = N - D steps with decay_ratio 0 (no decay: the same warmup,
    then 1); the branch is D steps with no warmup and decay_ratio 1, whose factor is 1 at its step 0, then
    1 - k/D: step for step the schedule of the whole stage (tests/test_wsd_branch.py checks it against
    torchtitan's). The branch continues the stable phase's AdamW state and data position, so the member it
    releases is the one the whole stage would have trained."""
    s = whole.schedule
    n = whole.num_steps
    decay = min(round(n * (s.decay_ratio or 0.0)), n - s.warmup_steps)
    if decay < 1 or decay >= n:
        warnings.append(f"{whole.id}: {n} steps leave no {'decay' if decay < 1 else 'stable'} phase to branch off; "
                        f"the growth from {whole.member} grows its final weights")
        return [whole]
    stable_steps = n - decay

    def evaluation(steps: int) -> EvalPlan | None:  # at the whole stage's interval: the twin's points, in two parts
        e = whole.eval
        return None if e is None else replace(e, evaluations=len(evaluated_steps(steps, e.interval)))

    requested = round(whole.tokens_requested * stable_steps / n)
    stable = replace(whole, phase="stable", num_steps=stable_steps, tokens=stable_steps * whole.batch_tokens,
                     tokens_requested=requested, schedule=replace(s, decay_ratio=0.0),
                     eval=evaluation(stable_steps))
    branch_step = replace(whole, id=f"decay-{whole.member}", phase="decay", continues=stable.id, init_from=None,
                          data_continues_from=stable.id, num_steps=decay, tokens=decay * whole.batch_tokens,
                          tokens_requested=whole.tokens_requested - requested,
                          schedule=replace(s, warmup_steps=0, decay_ratio=1.0), eval=evaluation(decay))
    return [stable, branch_step]


def _expand_step(c: Compilation, g: GrowthSpec) -> ExpandStep:
    src, dst = c.member(g.source), c.member(g.target)
    result = assess_growth(src.shape, dst.shape, width=g.width, depth=g.depth, noise=g.noise)
    return ExpandStep(
        id=f"expand-{g.source}-{g.target}", member=g.target, source=g.source, width=g.width, depth=g.depth,
        gqa=result.gqa, noise=g.noise, seed=g.seed, exactness=result.exactness, reasons=result.reasons,
        summary=result.summary, optimizer_state=g.optimizer,
        lr_after=LRAfterGrowth(warmup=g.lr.warmup, warmup_value=g.lr.warmup_value, peak_factor=g.lr.peak_factor),
        bytes_read=member_checkpoint_bytes(src.params, moments=g.optimizer == "carry"),
        bytes_written=member_checkpoint_bytes(dst.params, moments=g.optimizer == "carry"),
    )


def lower_to_cluster(c: Compilation) -> Compilation:
    spec = c.spec
    assert spec is not None
    warnings: list[str] = []
    budgets = {b.member: b for b in c.budgets}
    steps: list[TrainStep | ExpandStep] = []
    previous: str | None = None
    for m in c.members:
        g = spec.growth_into(m.name)
        init_from = None
        if g is not None:
            expand = _expand_step(c, g)
            steps.append(expand)
            init_from = expand.id
        train = _train_step(c, m, step_id=f"train-{m.name}", tokens_requested=budgets[m.name].tokens_requested,
                            growth=g, init_from=init_from, warnings=warnings)
        if spec.data.progressive_stages == "continue" and previous is not None:
            train = replace(train, data_continues_from=previous)
        grown_from = any(other.source == m.name for other in spec.growth)
        phases = branch(train, warnings) if grown_from and spec.lr.schedule.grow_from == "stable" else [train]
        steps += phases
        previous = phases[-1].id
    baseline = []
    for m in c.members:
        train = _train_step(c, m, step_id=f"baseline-{m.name}", growth=None, init_from=None,
                            tokens_requested=budgets[m.name].baseline_tokens_requested, warnings=warnings)
        baseline.append(BaselineMember(name=m.name, tokens=train.tokens, flops=0, train=train))
    return replace(c, steps=tuple(steps), baseline=tuple(baseline), warnings=c.warnings + tuple(warnings))
