"""A plan as a Document: the human summary `familyc plan` and `familyc show` print."""

from __future__ import annotations

from familyc import units
from familyc.plan.ir import DataPlan, Plan, SourcePlan
from familyc.plan.steps import ExpandStep, TrainStep
from familyc.render import Document, Table


def _train_row(index: str, step: TrainStep) -> tuple[str, ...]:
    return (
        index, step.id, step.continues or step.source or "-", units.count(step.tokens), f"{step.num_steps:,}",
        units.lr(step.max_lr),
        f"{step.global_batch_size:,}", f"{step.local_batch_size} x {step.grad_accum}", step.activation_checkpointing,
        units.gib(step.memory.total), units.flops(step.flops), units.seconds(step.predicted_seconds),
        units.hours(step.gpu_hours), units.money(step.cost_usd),
    )


def data_sources(data: DataPlan) -> str:
    """`builtin stdlib-docstrings, 5.0% held out`, or a mix's sources with their shares of the tokens."""
    total = sum(s.weight for s in data.sources)

    def one(s: SourcePlan) -> str:
        name = s.name + (f"/{s.config}" if s.config else "") + (f"@{s.revision}" if s.revision else "")
        split = f" {s.split}" if s.kind == "hf" else ""
        heldout = (f"held out: {s.heldout_split} split" if s.heldout_split
                   else f"{units.percent(data.heldout_fraction)} held out")
        share = f"{units.percent(s.weight / total)} of tokens, " if len(data.sources) > 1 else ""
        return f"{s.kind} {name}{split} ({share}{heldout})" if len(data.sources) > 1 or s.heldout_split \
            else f"{s.kind} {name}{split}, {heldout}"

    return " + ".join(one(s) for s in data.sources)


def _evaluation(plan: Plan) -> str:
    """The facts line of the stages' held-out evaluation."""
    stages = [*plan.train_steps(), *(b.train for b in plan.baseline.members)]
    evaluated = [s for s in stages if s.eval is not None]
    if not evaluated:
        return "held-out evaluation during training: none (training.eval.interval is none)"
    t = plan.totals
    intervals = ", ".join(f"{s.member if s.phase == 'whole' else s.id} {s.eval.interval}" for s in plan.train_steps()
                          if s.eval is not None)
    tokens = sorted({s.eval.tokens for s in evaluated if s.eval is not None})
    share = t.progressive_eval_flops / t.progressive_flops if t.progressive_flops else 0.0
    return (f"held-out evaluation in every stage: step 0, every N steps ({intervals}) and the last, "
            f"{' or '.join(units.count(n) for n in tokens)} tokens each; {units.flops(t.progressive_eval_flops)} "
            f"progressive ({units.percent(share)} of its training), {units.flops(t.independent_eval_flops)} "
            "independent, counted apart from the FLOPs compared")


STEP_HEADERS = ("#", "step", "from", "tokens", "steps", "max LR", "batch", "micro x accum", "AC", "mem/device",
                "FLOPs", "time", "GPU-h", "cost")
STEP_RIGHT = frozenset({0, 3, 4, 5, 6, 9, 10, 11, 12, 13})


def _branches(plan: Plan) -> tuple[str, ...]:
    """The facts line of the family-wide warmup-stable-decay (none when no member branches)."""
    pairs = [(s, b) for s in plan.train_steps() if (b := plan.continued_by(s)) is not None]
    if not pairs:
        return ()
    each = ", ".join(f"{s.member} {s.num_steps:,} + {b.num_steps:,}" for s, b in pairs)
    return (f"schedule: family-wide warmup-stable-decay: a member that is grown from trains its warmup and stable "
            f"phase (train-), the next member grows from those weights, and the member released is its decay branch "
            f"(decay-), which continues them: steps stable + decay {each}",)


def _startup(plan: Plan) -> str:
    """The facts line of a training stage's start-up, which every stage's time includes (or why it does not)."""
    start = plan.cluster.startup
    if start is None:
        if plan.schema_version < 7:
            return "start-up per training stage: not in this plan's times (plan schema version "\
                   f"{plan.schema_version}: training and evaluation only)"
        return (f"start-up per training stage: not measured for {plan.cluster.accelerator_name}, so the times are "
                "training and evaluation only; measure it with `familyc calibrate RUN_DIR -o PROFILE` after a run, "
                "then `familyc plan SPEC --profile PROFILE`")
    parts = [f"launch {units.seconds(start.launch_seconds)}"]
    if start.compile_seconds:
        parts.append(f"torch.compile {units.seconds(start.compile_seconds)}")
    parts.append(f"finish {units.seconds(start.finish_seconds)}")
    fixed = ""
    if start.step_seconds or start.eval_seconds:
        fixed = (f", and beyond their FLOPs {1000 * start.step_seconds:.0f} ms per step and "
                 f"{1000 * start.eval_seconds:.0f} ms per evaluation")
    return (f"start-up per training stage: {units.seconds(start.seconds)} ({', '.join(parts)}; {start.source})"
            f"{fixed}, in every training stage's time")


def plan_document(plan: Plan) -> Document:
    c = plan.cluster
    t = plan.totals
    if plan.calibration is None:
        mfu = f"assumed MFU {units.percent(c.mfu)}"
    else:
        mfu = f"MFU measured by {plan.calibration.path} (mean {units.percent(plan.calibration.mfu)})"
    facts = (
        f"spec: {plan.spec.path} (sha256 {plan.spec.sha256[:12]})",
        f"cluster: {c.devices} x {c.accelerator_name} "
        f"({c.nodes} node{'s' if c.nodes != 1 else ''} x {c.gpus_per_node}), "
        f"{c.precision} peak {units.flop_rate(c.peak_flops)}, {mfu}, "
        f"{units.money(c.price_per_gpu_hour)} per GPU-hour",
        f"budget: {plan.budget.rule} rule"
        + (f", {plan.budget.tokens_per_param:g} tokens per {plan.budget.params} parameter"
           if plan.budget.tokens_per_param else ""),
        f"data: {data_sources(plan.data)}; "
        f"tokenizer: {plan.tokenizer.kind} {plan.tokenizer.name}"
        + (f"@{plan.tokenizer.revision}" if plan.tokenizer.revision else "") + "; progressive stages "
        + ("continue in the data stream" if plan.data.progressive_stages == "continue" else
           "each restart at the first document")
        + (f"; documents shuffled by seed {plan.training.seed}" if plan.data.shuffle else "; documents in file order"),
        f"FLOPs/token = {plan.cost_model.flops_formula} ({plan.cost_model.flops_formula_source}; "
        f"cost model v{plan.cost_model.version})",
        _startup(plan),
        _evaluation(plan),
        *_branches(plan),
    )
    members = Table(
        title="Members",
        headers=("member", "params", "non-embedding", "dim", "layers", "heads/kv", "head_dim", "ffn", "norm eps",
                 "FLOPs/token"),
        rows=tuple((m.name, units.count(m.params), units.count(m.non_embedding_params), str(m.dim), str(m.n_layers),
                    f"{m.n_heads}/{m.n_kv_heads}", str(m.head_dim), str(m.ffn_dim), f"{m.norm_eps:.3g}",
                    units.flops(m.flops_per_token))
                   for m in plan.members),
        right=frozenset({1, 2, 3, 4, 6, 7, 8, 9}),
    )
    rows = []
    for i, step in enumerate(plan.steps, start=1):
        if isinstance(step, TrainStep):
            rows.append(_train_row(str(i), step))
        else:
            grows = plan.growth_source(step.source)  # its stable phase, when the source branches
            rows.append((str(i), step.id, grows.id if grows.phase == "stable" else step.source, *[""] * 7, "0",
                         units.seconds(step.predicted_seconds), units.hours(step.gpu_hours),
                         units.money(step.cost_usd)))
    steps = Table(title="Progressive steps", headers=STEP_HEADERS, rows=tuple(rows), right=STEP_RIGHT)
    growth = Table(
        title="Growth",
        headers=("step", "width", "depth", "gqa", "noise", "function", "LR after", "optimizer", "reads", "writes",
                 "shapes"),
        rows=tuple((s.id, s.width, s.depth, s.gqa, f"{s.noise:g}", s.exactness, s.lr_after.describe(),
                    s.optimizer_state, units.gib(s.bytes_read), units.gib(s.bytes_written), s.summary)
                   for s in plan.steps if isinstance(s, ExpandStep)),
        wrap=frozenset({10}),
    )
    baseline = Table(title="Independent baseline (every member from scratch)", headers=STEP_HEADERS,
                     rows=tuple(_train_row(str(i), b.train) for i, b in enumerate(plan.baseline.members, start=1)),
                     right=STEP_RIGHT)
    totals = Table(
        title="Totals",
        headers=("family", "FLOPs", "time", "GPU-hours", "cost"),
        rows=(
            ("progressive", units.flops(t.progressive_flops), units.seconds(t.predicted_seconds),
             units.hours(t.predicted_gpu_hours), units.money(t.predicted_cost_usd)),
            ("independent", units.flops(t.independent_flops), units.seconds(t.independent_seconds),
             units.hours(t.independent_gpu_hours), units.money(t.independent_cost_usd)),
        ),
        right=frozenset({1, 2, 3, 4}),
    )
    saved_hours = t.independent_gpu_hours - t.predicted_gpu_hours
    conclusion = (
        f"progressive training saves {units.percent(t.savings_fraction)} of the FLOPs of training every member "
        f"independently ({units.hours(saved_hours)} GPU-hours, "
        f"{units.money(t.independent_cost_usd - t.predicted_cost_usd)})",
    )
    tables = (members, steps) + ((growth,) if growth.rows else ()) + (baseline, totals)
    return Document(title=f"plan {plan.plan_id} for family {plan.family.name}", facts=facts, tables=tables,
                    conclusion=conclusion, notes=plan.warnings)
