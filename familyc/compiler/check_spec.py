"""Pass 2, check_spec: what the schema cannot say, all reported at once.

Needs: `spec`. Adds nothing; raises SpecError listing every problem, each at the key it is
about: shapes the Llama 3 block cannot have, names that repeat or do not resolve, a growth
chain that is not one, growth steps their operators cannot perform (or that are declared
function-preserving and cannot be), tables that miss members, options the chosen rule does
not use, batches that do not divide, and an accelerator without the asked precision.
"""

from __future__ import annotations

from collections.abc import Mapping

from familyc.compiler.derive_shapes import member_shape
from familyc.compiler.state import Compilation
from familyc.cost.accelerators import accelerator
from familyc.enums import APPROXIMATE, BUILTIN_TOKENIZER_VOCAB
from familyc.errors import Diagnostic, SpecError
from familyc.growth.feasibility import assess_growth
from familyc.spec.loader import LoadedDocument, PathT
from familyc.spec.model import FamilySpec, GrowthSpec
from familyc.spec.schema import did_you_mean

MAX_TOKENS = 10**16
"""Ten quadrillion tokens: about 300x the largest published pretraining runs (3.6e13)."""
MAX_BATCH_TOKENS = 10**9
MAX_LR = 1.0
MAX_PEAK_FACTOR = 10.0
"""A grown stage's peak over its member's: LEMON-style policies keep it at or below 1; 10 x is surely a slip."""


class _Checker:
    def __init__(self, doc: LoadedDocument, spec: FamilySpec) -> None:
        self.doc = doc
        self.spec = spec
        self.out: list[Diagnostic] = []
        self.names = [m.name for m in spec.members]

    def error(self, path: PathT, message: str, hint: str = "", *, key: bool = False, code: str = "semantic") -> None:
        self.out.append(self.doc.diagnostic(path, message, code=code, hint=hint, key=key))

    def unknown_member(self, path: PathT, name: str, *, key: bool = False) -> None:
        guess = did_you_mean(name, self.names)
        hint = f"did you mean {guess!r}?" if guess else "members: " + ", ".join(self.names)
        self.error(path, f"no member is named {name!r}", hint, key=key, code="unknown-member")

    # --- members -------------------------------------------------------------------------
    def members(self) -> dict[str, bool]:
        """Check each member; return which members have a valid shape."""
        seen: dict[str, int] = {}
        valid = {}
        arch = self.spec.architecture
        for m in self.spec.members:
            if m.name in seen:
                self.error(("members", m.index, "name"),
                           f"member name {m.name!r} is used twice (first by members[{seen[m.name]}])",
                           "give every member its own name", code="duplicate-name")
            seen.setdefault(m.name, m.index)
            raw = self.doc.data["members"][m.index]
            if "ffn_dim" in raw and ({"ffn_dim_multiplier", "multiple_of"} & set(raw)):
                self.error(("members", m.index, "ffn_dim"),
                           "give ffn_dim, or ffn_dim_multiplier / multiple_of, not both",
                           "ffn_dim is the final SwiGLU hidden size; the other two are torchtitan's rule for it")
            shape = member_shape(m, arch)
            problems = shape.problems()
            for fld, message, hint in problems:
                if fld == "ffn_dim" and "ffn_dim" not in raw and "ffn_dim_multiplier" in raw:
                    fld = "ffn_dim_multiplier"
                self.error(("members", m.index, fld), f"member {m.name}: {message}", hint)
            valid[m.name] = not problems
        return valid

    # --- growth --------------------------------------------------------------------------
    def growth(self, valid: dict[str, bool]) -> None:
        spec = self.spec
        order = {m.name: m.index for m in spec.members}
        duplicated = {n for n in self.names if self.names.count(n) > 1}
        incoming: dict[str, int] = {}
        for g in spec.growth:
            base = ("growth", g.index)
            ok = True
            for fld, name in (("from", g.source), ("to", g.target)):
                if name not in order:
                    self.unknown_member(base + (fld,), name)
                    ok = False
            if not ok:
                continue
            if {g.source, g.target} & duplicated:  # an ambiguous name: reported once, at the member
                incoming.setdefault(g.target, g.index)
                continue
            if g.target in incoming:
                self.error(base + ("to",), f"{g.target} is already grown by growth[{incoming[g.target]}]",
                           "each member grows from exactly one other")
                continue
            incoming[g.target] = g.index
            if g.source == g.target:
                self.error(base + ("to",), f"{g.target} cannot grow from itself")
            elif order[g.source] > order[g.target]:
                self.error(base + ("from",), f"{g.target} grows from {g.source}, which is listed after it",
                           "members train in the order listed: put the smaller member first")
            elif order[g.target] == 0:
                self.error(base + ("to",), f"{g.target} is the first member: it is trained from scratch, not grown")
            elif valid.get(g.source) and valid.get(g.target):
                self.growth_step(g)
        for m in spec.members[1:]:
            if m.name not in incoming:
                previous = spec.members[m.index - 1].name
                self.error(("members", m.index, "name"), f"member {m.name} is not grown from any member",
                           f"add to growth: {{from: {previous}, to: {m.name}}}", code="missing-growth")

    def growth_step(self, g: GrowthSpec) -> None:
        arch = self.spec.architecture
        src_m, dst_m = self.spec.member(g.source), self.spec.member(g.target)
        src, dst = member_shape(src_m, arch), member_shape(dst_m, arch)
        result = assess_growth(src, dst, width=g.width, depth=g.depth, noise=g.noise)
        base = ("growth", g.index)
        for p in result.problems:
            if p.field in ("width", "depth"):
                path = base + (p.field,)
            elif p.field in self.doc.data["members"][dst_m.index]:
                path = ("members", dst_m.index, p.field)
            else:  # the shape as a whole, or a field the target member does not spell out
                path = base + ("to",)
            self.error(path, f"growing {g.source} -> {g.target}: {p.message}", p.hint, code="growth")
        if result.exactness == APPROXIMATE and g.function_preserving:
            self.error(base + ("function_preserving",),
                       f"growing {g.source} -> {g.target} is declared function-preserving but is only approximate: "
                       + "; ".join(result.reasons),
                       "use width exact/fpi with whole multiples, depth zero_insert and noise 0, or drop the claim",
                       code="not-exact")

    # --- budget and LR -------------------------------------------------------------------
    def table_names(self, path: PathT, table: Mapping[str, object], *, complete: bool, what: str) -> None:
        for name in table:
            if name not in self.names:
                self.unknown_member(path + (name,), name, key=True)
        if complete:
            missing = [n for n in self.names if n not in table]
            if missing:
                self.error(path, f"{what} has no entry for {', '.join(missing)}", "give a value for every member")

    def unused(self, section: str, keys: tuple[str, ...], rule: str, used_by: dict[str, str]) -> None:
        raw = self.doc.data[section]
        for key in keys:
            if key in raw:
                self.error((section, key), f"{key!r} is not used by {section}.rule {rule!r}",
                           f"it belongs to rule {used_by[key]!r}; remove it", key=True, code="unused-key")

    def budget(self) -> None:
        b = self.spec.budget
        if b.rule == "paper":
            self.unused("budget", ("tokens", "baseline_tokens"), "paper",
                        {"tokens": "explicit", "baseline_tokens": "explicit"})
            given = [k for k in ("tokens_per_param", "largest_tokens") if k in self.doc.data["budget"]]
            if len(given) == 2:
                self.error(("budget", "largest_tokens"), "the paper rule takes tokens_per_param or largest_tokens, "
                           "not both", "remove one of them", key=True)
            elif not given:
                self.error(("budget",), "the paper rule needs tokens_per_param or largest_tokens",
                           "e.g. tokens_per_param: 20 (each independent member trains 20 tokens per parameter)")
        elif b.rule == "tokens_per_param":
            self.unused("budget", ("tokens", "baseline_tokens", "largest_tokens"), "tokens_per_param",
                        {"tokens": "explicit", "baseline_tokens": "explicit", "largest_tokens": "paper"})
        else:
            self.unused("budget", ("tokens_per_param", "largest_tokens"), "explicit",
                        {"tokens_per_param": "paper", "largest_tokens": "paper"})
            self.table_names(("budget", "tokens"), b.tokens, complete=True, what="budget.tokens")
            self.table_names(("budget", "baseline_tokens"), b.baseline_tokens, complete=False,
                             what="budget.baseline_tokens")
        limits = "give between 1 and 1e16 tokens (1e16 is 300 times the largest runs published)"
        for table in ("tokens", "baseline_tokens"):
            for name, tokens in getattr(b, table).items():
                if tokens == 0:
                    self.error(("budget", table, name), f"member {name} gets 0 tokens", limits)
                elif tokens > MAX_TOKENS:
                    self.error(("budget", table, name), f"{tokens:.3g} tokens for member {name} is more than the "
                               "limit of 1e16", limits)
        if b.largest_tokens is not None and not 0 < b.largest_tokens <= MAX_TOKENS:
            self.error(("budget", "largest_tokens"), f"largest_tokens {b.largest_tokens:.3g} is out of range", limits)
        if b.tokens_per_param is not None and b.tokens_per_param > 1e6:
            self.error(("budget", "tokens_per_param"), f"{b.tokens_per_param:g} tokens per parameter is absurd",
                       "Chinchilla-optimal is about 20")

    def lr(self) -> None:
        lr = self.spec.lr
        used_by = {"value": "constant", "table": "table", "power_law": "power_law"}
        self.unused("lr", tuple(k for k in used_by if used_by[k] != lr.rule), lr.rule, used_by)
        if lr.rule == "table":
            self.table_names(("lr", "table"), lr.table, complete=True, what="lr.table")
        values = [(("lr", "value"), lr.value)] + [(("lr", "table", k), v) for k, v in lr.table.items()]
        if lr.power_law is not None:
            values.append((("lr", "power_law", "reference_lr"), lr.power_law.reference_lr))
            if lr.power_law.reference_params <= 0:
                self.error(("lr", "power_law", "reference_params"), "reference_params must be positive", "e.g. 1B")
        for path, value in values:
            if value is not None and value > MAX_LR:
                self.error(path, f"a peak learning rate of {value:g} is above {MAX_LR:g}",
                           "typical values: 1e-4 to 3e-3")
        for g in self.spec.growth:
            if g.lr.peak_factor > MAX_PEAK_FACTOR:
                self.error(("growth", g.index, "lr", "peak_factor"),
                           f"a peak factor of {g.lr.peak_factor:g} after growing {g.source} -> {g.target} is above "
                           f"{MAX_PEAK_FACTOR:g}", "the grown stage's peak LR is peak_factor x the member's; "
                           "typical values are 0.25 to 1")
        s = lr.schedule
        if s.warmup_steps is not None and s.warmup_fraction is not None:
            self.error(("lr", "schedule", "warmup_fraction"), "give warmup_steps or warmup_fraction, not both",
                       "remove one of them", key=True)
        raw = self.doc.data["lr"].get("schedule", {})
        if s.grow_from == "stable" and s.decay != "wsd":
            self.error(("lr", "schedule", "grow_from"), f"grow_from: stable needs decay: wsd, not {s.decay}",
                       "set lr.schedule.decay: wsd (the stable phase is what a growth grows), or grow_from: final")
        if s.decay != "wsd":
            for key in ("decay_fraction", "wsd_decay"):
                if key in raw:
                    self.error(("lr", "schedule", key), f"{key!r} only applies to decay: wsd",
                               "remove it, or set decay: wsd", key=True, code="unused-key")

    # --- training and cluster ------------------------------------------------------------
    def batches(self) -> None:
        spec = self.spec
        seq = spec.architecture.seq_len
        devices = spec.cluster.devices
        cases: list[tuple[PathT, int, str]] = [(("training", "batch_tokens"), spec.training.batch_tokens, "training")]
        cases += [(("members", m.index, "batch_tokens"), m.batch_tokens, m.name) for m in spec.members
                  if m.batch_tokens is not None]
        for path, tokens, _who in cases:
            if not 0 < tokens <= MAX_BATCH_TOKENS:
                self.error(path, f"a batch of {tokens:,} tokens is out of range",
                           f"give between {seq * devices:,} (one sequence per device) and {MAX_BATCH_TOKENS:,}")
                continue
            unit = seq * devices  # one sequence per device
            near = max(1, min(round(tokens / unit), MAX_BATCH_TOKENS // unit)) * unit
            suggestion = f"use a multiple of seq_len x devices = {unit:,}, e.g. {near:,}"
            if tokens % seq:
                self.error(path, f"a batch of {tokens:,} tokens is not a whole number of {seq}-token sequences",
                           suggestion)
                continue
            sequences = tokens // seq
            if sequences % devices:
                self.error(path, f"{sequences} sequences per step do not divide over {devices} devices", suggestion)
                continue
            micro = spec.training.micro_batch_size
            if micro is not None and (sequences // devices) % micro:
                self.error(("training", "micro_batch_size"),
                           f"micro_batch_size {micro} does not divide the {sequences // devices} sequences per device"
                           + ("" if path[0] == "training" else f" of member {_who}"), "use a divisor, or auto")

    def evaluation(self) -> None:
        e = self.spec.training.eval
        if e.enabled and not 0 < e.tokens <= MAX_BATCH_TOKENS:
            self.error(("training", "eval", "tokens"), f"{e.tokens:,} held-out tokens per evaluation is out of range",
                       "give at least one sequence (it is rounded up to whole sequences for every device), at most "
                       f"{MAX_BATCH_TOKENS:,}; to evaluate nothing during training, write interval: none")

    def cluster(self) -> None:
        c = self.spec.cluster
        acc = accelerator(c.accelerator)
        precision = self.spec.training.precision
        if precision not in acc.peak_flops:
            known = " or ".join(sorted(acc.peak_flops))
            if "precision" in self.doc.data["training"]:
                self.error(("training", "precision"), f"no {precision} peak is known for {acc.name}",
                           f"use precision: {known}")
            else:
                self.error(("training",), f"no {precision} peak is known for {acc.name} ({precision} is the default "
                           "precision)", f"add precision: {known} under training")
        if acc.memory_bytes is None and c.memory_gib is None:
            self.error(("cluster", "accelerator"), f"{acc.name} has no fixed memory size: give cluster.memory_gib",
                       "the RAM one training process may use, e.g. 8 on a 24 GiB machine running 2 processes")

    def tokenizer(self) -> None:
        tok = self.spec.tokenizer
        vocab = self.spec.architecture.vocab_size
        if tok.kind == "builtin" and BUILTIN_TOKENIZER_VOCAB[tok.name] > vocab:
            self.error(("architecture", "vocab_size"),
                       f"vocab_size {vocab} is smaller than tokenizer {tok.name}'s "
                       f"{BUILTIN_TOKENIZER_VOCAB[tok.name]} tokens",
                       f"set vocab_size to at least {BUILTIN_TOKENIZER_VOCAB[tok.name]}")

    def data(self) -> None:
        """data names its text once: dataset or sources, not both, not neither; a builtin corpus once."""
        raw = self.doc.data.get("data", {})
        if "dataset" in raw and "sources" in raw:
            self.error(("data", "sources"), "give data.dataset or data.sources, not both",
                       "one source: dataset; a weighted mix: sources (with one entry, the same as dataset)",
                       key=True)
        elif not self.spec.data.sources:
            self.error(("data",), "data names no text: give dataset (one source) or sources (a weighted mix)",
                       "e.g. dataset: {builtin: stdlib-docstrings}, or sources: [{hf: allenai/c4, config: en}]")
        seen: dict[tuple[str, str, str | None, str], int] = {}
        for i, source in enumerate(self.spec.data.sources):
            key = (source.kind, source.name, source.config, source.split)
            if key in seen:
                self.error(("data", "sources", i), f"data.sources[{i}] repeats data.sources[{seen[key]}] "
                           f"({source.kind}: {source.name})", "give each source once, with the weight it should have")
            seen.setdefault(key, i)
            if source.heldout_split is not None and source.heldout_split == source.split:
                self.error(("data", "sources", i, "heldout", "split") if "sources" in raw else
                           ("data", "dataset", "heldout", "split"),
                           f"the held-out split {source.heldout_split!r} is the split trained on",
                           "name the dataset's validation split, or drop heldout to hold out by hash")

    def run(self) -> list[Diagnostic]:
        self.data()
        valid = self.members()
        self.growth(valid)
        self.budget()
        self.lr()
        self.batches()
        self.evaluation()
        self.cluster()
        self.tokenizer()
        return self.out


def check_spec(c: Compilation) -> Compilation:
    assert c.spec is not None
    problems = _Checker(c.doc, c.spec).run()
    if problems:
        raise SpecError(problems)
    return c
