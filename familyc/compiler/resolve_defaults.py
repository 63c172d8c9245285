"""Pass 1, resolve_defaults: schema-valid data -> a typed FamilySpec.

Needs: a document that passed the schema. Adds: `spec`, with every default the schema
declares applied (the schema is the one source of defaults) and every quantity parsed
(`20B` -> 20_000_000_000). A quantity that parses to nonsense is reported at its line.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from familyc.compiler.state import Compilation
from familyc.enums import DATA_KINDS, TOKENIZER_KINDS
from familyc.errors import Diagnostic, SpecError
from familyc.spec.loader import LoadedDocument, PathT
from familyc.spec.model import (
    Architecture,
    BudgetSpec,
    ClusterSpec,
    DatasetSpec,
    EvalSpec,
    FamilySpec,
    GrowthLR,
    GrowthSpec,
    LRSpec,
    MemberSpec,
    OptimizerSpec,
    PowerLaw,
    ScheduleSpec,
    SourceSpec,
    TokenizerSpec,
    TrainingSpec,
)
from familyc.spec.quantity import parse_count, parse_number
from familyc.spec.schema import _resolve, schema

T = TypeVar("T")


def apply_defaults(value: Any, sub: dict[str, Any]) -> Any:
    """Fill in the schema's `default`s, recursively, without touching the input."""
    sub = _resolve(sub)
    if isinstance(value, dict):
        out = dict(value)
        for key, prop in sub.get("properties", {}).items():
            resolved = _resolve(prop)
            if key not in out and "default" in resolved:
                out[key] = copy.deepcopy(resolved["default"])
            if key in out:
                out[key] = apply_defaults(out[key], prop)
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict):
            for key in out:
                if key not in sub.get("properties", {}):
                    out[key] = apply_defaults(out[key], extra)
        for alt in sub.get("oneOf", []):
            if set(_resolve(alt).get("required", [])) <= set(out):
                out = apply_defaults(out, alt)
                break
        return out
    if isinstance(value, list) and "items" in sub:
        return [apply_defaults(v, sub["items"]) for v in value]
    return value


class _Reader:
    """Typed access to the defaulted data; collects every quantity that does not parse."""

    def __init__(self, doc: LoadedDocument, data: dict[str, Any]) -> None:
        self.doc = doc
        self.data = data
        self.problems: list[Diagnostic] = []

    def get(self, path: PathT) -> Any:
        node: Any = self.data
        for part in path:
            node = node[part]
        return node

    def has(self, path: PathT) -> bool:
        try:
            self.get(path)
        except (KeyError, IndexError, TypeError):
            return False
        return True

    def _parse(self, parser: Callable[..., T], path: PathT, what: str) -> T | None:
        if not self.has(path) or self.get(path) is None:
            return None
        try:
            return parser(self.get(path), what=what)
        except ValueError as exc:
            self.problems.append(self.doc.diagnostic(path, str(exc), code="quantity",
                                                     hint="write e.g. 20B, 2.0e10, \"1e9\" or 4096"))
            return None

    def count(self, path: PathT, what: str = "value") -> int | None:
        return self._parse(parse_count, path, what)

    def required_number(self, path: PathT, what: str) -> float:
        """A number the schema gives a default for. When it does not parse, the problem is recorded (and raised
        before the spec is used), and 0.0 stands in for it meanwhile."""
        value = self.number(path, what)
        return 0.0 if value is None else value

    def number(self, path: PathT, what: str = "value") -> float | None:
        """A positiveNumber of the schema: its string form is checked here (the schema can only
        bound the numeric form)."""
        value = self._parse(parse_number, path, what)
        if value is not None and value <= 0:
            self.problems.append(self.doc.diagnostic(path, f"{what} must be greater than 0, not {value:g}",
                                                     code="quantity", hint="write a positive number, e.g. 3e-4"))
            return None
        return value

    def table(self, path: PathT, parser: str) -> dict[str, Any]:
        if not self.has(path):
            return {}
        read = self.count if parser == "count" else self.number
        values = {name: read(path + (name,), f"{path[-1]}[{name}]") for name in self.get(path)}
        return {k: v for k, v in values.items() if v is not None}


def _growth_lr(r: _Reader, index: int, raw: dict[str, Any] | None) -> GrowthLR:
    """growth[index].lr as a GrowthLR (absent: the family's schedule, the member's peak)."""
    if raw is None:
        return GrowthLR()
    factor = r.required_number(("growth", index, "lr", "peak_factor"), "peak_factor")
    warmup = raw.get("warmup")
    if warmup is None:
        return GrowthLR(peak_factor=factor)
    if warmup == "none":
        return GrowthLR(warmup="none", peak_factor=factor)
    if "steps" in warmup:
        return GrowthLR(warmup="steps", warmup_value=float(warmup["steps"]), peak_factor=factor)
    return GrowthLR(warmup="fraction", warmup_value=float(warmup["fraction"]), peak_factor=factor)


def _build(r: _Reader) -> FamilySpec:
    d = r.data
    arch = d["architecture"]
    architecture = Architecture(
        vocab_size=arch["vocab_size"], seq_len=arch["seq_len"],
        rope_theta=r.required_number(("architecture", "rope_theta"), "rope_theta"),
        norm_eps=r.required_number(("architecture", "norm_eps"), "norm_eps"),
        multiple_of=arch["multiple_of"],
        ffn_dim_multiplier=r.number(("architecture", "ffn_dim_multiplier"), "ffn_dim_multiplier"),
        tie_embeddings=arch["tie_embeddings"],
    )
    members = tuple(
        MemberSpec(
            index=i, name=m["name"], dim=m["dim"], n_layers=m["n_layers"], n_heads=m["n_heads"],
            n_kv_heads=m.get("n_kv_heads", m["n_heads"]), ffn_dim=m.get("ffn_dim"),
            multiple_of=m.get("multiple_of", architecture.multiple_of),
            ffn_dim_multiplier=(r.number(("members", i, "ffn_dim_multiplier"), "ffn_dim_multiplier")
                                if "ffn_dim_multiplier" in m else architecture.ffn_dim_multiplier),
            batch_tokens=r.count(("members", i, "batch_tokens"), "batch_tokens"),
        )
        for i, m in enumerate(d["members"])
    )
    growth = tuple(
        GrowthSpec(index=i, source=g["from"], target=g["to"], width=g["width"], depth=g["depth"],
                   noise=float(g["noise"]), seed=g["seed"], function_preserving=g["function_preserving"],
                   lr=_growth_lr(r, i, g.get("lr")), optimizer=g["optimizer"])
        for i, g in enumerate(d["growth"])
    )
    b = d["budget"]
    budget = BudgetSpec(
        rule=b["rule"], tokens_per_param=r.number(("budget", "tokens_per_param"), "tokens_per_param"),
        largest_tokens=r.count(("budget", "largest_tokens"), "largest_tokens"), params=b["params"],
        tokens=r.table(("budget", "tokens"), "count"),
        baseline_tokens=r.table(("budget", "baseline_tokens"), "count"),
    )
    lr = d["lr"]
    s = lr["schedule"]
    power_law = None
    if "power_law" in lr:
        pl = ("lr", "power_law")
        power_law = PowerLaw(reference_lr=r.required_number(pl + ("reference_lr",), "reference_lr"),
                             reference_params=r.count(pl + ("reference_params",), "reference_params") or 0,
                             exponent=float(lr["power_law"]["exponent"]))
    lr_spec = LRSpec(
        rule=lr["rule"], value=r.number(("lr", "value"), "lr value"), table=r.table(("lr", "table"), "number"),
        power_law=power_law,
        schedule=ScheduleSpec(
            warmup_steps=s.get("warmup_steps"), warmup_fraction=s.get("warmup_fraction"), decay=s["decay"],
            decay_fraction=float(s["decay_fraction"]), wsd_decay=s["wsd_decay"],
            min_lr_factor=float(s["min_lr_factor"]), restart_warmup=s["restart_warmup"],
            grow_from=s["grow_from"],
        ),
    )
    t = d["training"]
    o, e = t["optimizer"], t["eval"]
    training = TrainingSpec(
        batch_tokens=r.count(("training", "batch_tokens"), "batch_tokens") or 0,
        micro_batch_size=None if t["micro_batch_size"] == "auto" else t["micro_batch_size"],
        precision=t["precision"], compile=t["compile"], activation_checkpointing=t["activation_checkpointing"],
        checkpoint_interval=t["checkpoint_interval"], log_interval=t["log_interval"], seed=t["seed"],
        eval=EvalSpec(enabled=e["interval"] != "none",
                      interval=e["interval"] if isinstance(e["interval"], int) else None,
                      tokens=r.count(("training", "eval", "tokens"), "tokens") or 0),
        optimizer=OptimizerSpec(weight_decay=float(o["weight_decay"]), beta1=float(o["beta1"]),
                                beta2=float(o["beta2"]),
                                eps=r.required_number(("training", "optimizer", "eps"), "eps"),
                                max_grad_norm=float(o["max_grad_norm"])),
    )
    given = d["data"].get("sources") or ([d["data"]["dataset"]] if "dataset" in d["data"] else [])
    data = DatasetSpec(sources=tuple(_source(s) for s in given), heldout_fraction=float(d["data"]["heldout_fraction"]),
                       progressive_stages=d["data"]["progressive_stages"], shuffle=d["data"]["shuffle"])
    tok = d["tokenizer"]
    tok_kind = next(k for k in TOKENIZER_KINDS if k in tok)
    c = d["cluster"]
    cluster = ClusterSpec(
        accelerator=c["accelerator"], gpus_per_node=c["gpus_per_node"], nodes=c["nodes"], mfu=float(c["mfu"]),
        price_per_gpu_hour=float(c["price_per_gpu_hour"]),
        memory_gib=float(c["memory_gib"]) if "memory_gib" in c else None,
        memory_headroom=float(c["memory_headroom"]), io_gb_per_s=float(c["io_gb_per_s"]),
    )
    return FamilySpec(
        name=d["family"]["name"], description=d["family"].get("description", ""), architecture=architecture,
        members=members, growth=growth, budget=budget, lr=lr_spec, training=training, data=data,
        tokenizer=TokenizerSpec(kind=tok_kind, name=tok[tok_kind], revision=tok.get("revision")), cluster=cluster,
    )


def _source(s: dict[str, Any]) -> SourceSpec:
    """One entry of data.sources (or data.dataset); the schema's defaults inside its oneOf are not applied."""
    kind = next(k for k in DATA_KINDS if k in s)
    return SourceSpec(kind=kind, name=s[kind], config=s.get("config"), split=s.get("split", "train"),
                      revision=s.get("revision"), text_field=s.get("text_field", "text"),
                      weight=float(s.get("weight", 1)), heldout_split=s.get("heldout", {}).get("split"))


def resolve_defaults(c: Compilation) -> Compilation:
    reader = _Reader(c.doc, apply_defaults(c.doc.data, schema()))
    spec = _build(reader)
    if reader.problems:
        raise SpecError(reader.problems, more_checks_pending=True)
    return replace(c, spec=spec)
