"""A trained member as a Hugging Face Llama checkpoint: config, safetensors weights, tokenizer, model card.

    OUT/config.json                       LlamaForCausalLM, written by hand (exporting needs no transformers)
    OUT/generation_config.json            bos/eos/pad ids
    OUT/model.safetensors                 or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    OUT/tokenizer.json, tokenizer_config.json, special_tokens_map.json
    OUT/README.md                         a model card stub
    OUT/familyc-export.json               the sidecar (familyc.checkpoint.sidecar): what was exported from
                                          where, sha256 of every file

Weights. torchtitan 0.2.2's names map one to one onto transformers' Llama names (the same table as
torchtitan's own Llama3StateDictAdapter; the tests check ours against its `to_hf`). One difference
is not a rename: torchtitan rotates *interleaved* pairs (dims 2i, 2i+1 of a head, a complex view),
transformers' `rotate_half` pairs dim i with dim i + head_dim/2. So the rows of wq and wk are
permuted within each head (even rows first, then odd ones): q·k, and the model, are unchanged.
The safetensors files are written by hand, tensor by tensor, straight from the DCP checkpoint:
the header is known before any tensor is read (shapes and dtype come from the metadata), so peak
memory is about the largest tensor (read, permuted, cast), never the model.

RoPE. torchtitan 0.2.2's `precompute_freqs_cis` *always* applies Llama 3.1's frequency scaling
with its RoPEScalingArgs (factor 8, low_freq_factor 1, high_freq_factor 4, original context 8192):
frequencies whose wavelength exceeds 8192 positions are divided by 8, those between 2048 and 8192
are interpolated. That is transformers' `rope_type: llama3` with the same four numbers, so the
config says exactly that. (With head_dim 16 and theta 10000, the tiny family's, two of the eight
frequencies are changed; leaving the scaling out moves the logits by 3e-3 to 1.3e-2 at 200 tokens.)
transformers warns that original_max_position_embeddings (8192) is not below
max_position_embeddings (the member's seq_len): expected, the scaling is what the model trained with.

Tokenizer. The run's tokenizer.json, with a BOS template post-processor added when it has none
(as Llama 3's tokenizer.json has: the model trained on documents that start with BOS); the
config says add_bos_token true and add_eos_token false (a prompt must not end in EOS), and names
PreTrainedTokenizerFast, so AutoTokenizer loads it offline from these files alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from familyc import __version__
from familyc.backend.keys import model_keys
from familyc.backend.model import plan_model_args
from familyc.checkpoint.reader import SourceCheckpoint
from familyc.checkpoint.sidecar import EXPORT_SIDECAR, ExportRecord, Sidecar, SourceRecord, write_sidecar
from familyc.errors import CheckpointError, FamilycError
from familyc.files import atomic_folder, write_synced
from familyc.meter import Advance, Start, quiet
from familyc.plan.ir import Plan

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16"}
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
"""transformers' save_pretrained default (5GB); a model this size or smaller is one model.safetensors."""
SIDECAR_FILE = EXPORT_SIDECAR
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

_HF_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


# --- weights --------------------------------------------------------------------------------------

def hf_key(key: str) -> str:
    """transformers' name for a torchtitan 0.2.2 Llama 3 key."""
    if key.startswith("layers."):
        _, index, rest = key.split(".", 2)
        return f"model.layers.{index}.{_HF_NAMES[rest]}"
    return _HF_NAMES[key]


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """wq or wk rows reordered per head from torchtitan's interleaved RoPE pairs (2i, 2i+1) to
    transformers' halves (i, i + head_dim/2): within each head, the even rows, then the odd ones."""
    rows, cols = weight.shape
    head_dim = rows // n_heads
    return weight.view(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def to_hf_tensor(key: str, tensor: torch.Tensor, *, n_heads: int, n_kv_heads: int) -> torch.Tensor:
    if key.endswith("attention.wq.weight"):
        return interleaved_to_half(tensor, n_heads)
    if key.endswith("attention.wk.weight"):
        return interleaved_to_half(tensor, n_kv_heads)
    return tensor


def _shards(sizes: Mapping[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Keys in order, cut into files of at most max_shard_bytes (a larger tensor gets a file of its own)."""
    shards: list[list[str]] = [[]]
    used = 0
    for key, size in sizes.items():
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(key)
        used += size
    return shards


def _write_safetensors(path: Path, entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype,
                       produce: Callable[[str], torch.Tensor], advance: Advance) -> str:
    """One safetensors file whose tensors `produce(name)` makes one at a time; returns its sha256.

    The format: an 8-byte little-endian header length, a JSON header ({name: dtype, shape,
    data_offsets} and __metadata__, space-padded to 8 bytes as the safetensors library pads it),
    then the tensors' bytes back to back in the header's order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (struct.pack("<Q", len(text)), text):
            f.write(chunk)
            sha.update(chunk)
        for name, shape in entries:
            tensor = produce(name).to(dtype).contiguous()
            if tuple(tensor.shape) != shape:
                raise CheckpointError(f"{path}: {name} came out as {list(tensor.shape)}, expected {list(shape)}")
            data = tensor.view(torch.uint8).numpy().data if tensor.numel() else memoryview(b"")
            f.write(data)
            sha.update(data)
            advance(tensor.nbytes, name)
            del tensor, data
        f.flush()
        os.fsync(f.fileno())
    return sha.hexdigest()


def write_weights(source: SourceCheckpoint, out: Path, *, n_heads: int, n_kv_heads: int, dtype: torch.dtype,
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, progress: Start = quiet) -> dict[str, str]:
    """Every tensor of `source` under its transformers name in `out`; {file name: sha256}; `progress`
    (familyc.meter) counts the bytes written."""
    if sys.byteorder != "little":  # safetensors is little-endian; tensors are written as they lie in memory
        raise FamilycError("exporting safetensors needs a little-endian machine")
    meta = source.meta()
    names = {hf_key(key): key for key in meta}
    shapes = {name: meta[key][0] for name, key in names.items()}
    sizes = {name: math.prod(shape) * dtype.itemsize for name, shape in shapes.items()}
    shards = _shards(sizes, max_shard_bytes)
    advance = progress("writing safetensors", sum(sizes.values()), "bytes")

    def produce(name: str) -> torch.Tensor:
        key = names[name]
        return to_hf_tensor(key, source.read(key), n_heads=n_heads, n_kv_heads=n_kv_heads)

    files: dict[str, str] = {}
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file = WEIGHTS_FILE if len(shards) == 1 else f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        files[file] = _write_safetensors(out / file, [(name, shapes[name]) for name in shard], dtype, produce,
                                         advance)
        weight_map.update(dict.fromkeys(shard, file))
    if len(shards) > 1:
        index_data = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        files[INDEX_FILE] = _write_json(out / INDEX_FILE, index_data)
    return files


# --- config ---------------------------------------------------------------------------------------

def rope_scaling(args: Any) -> dict[str, Any]:
    """torchtitan's RoPEScalingArgs (always applied by 0.2.2's precompute_freqs_cis) in transformers' terms."""
    scaling = args.rope_scaling_args
    return {"rope_type": "llama3", "factor": float(scaling.scaling_factor),
            "low_freq_factor": float(scaling.low_freq_factor), "high_freq_factor": float(scaling.high_freq_factor),
            "original_max_position_embeddings": int(scaling.original_max_position_embeddings)}


def hf_config(plan: Plan, member_name: str, *, dtype: str, bos_id: int, eos_id: int) -> dict[str, Any]:
    """config.json of LlamaForCausalLM for the member, from the torchtitan arguments it trains with."""
    member = plan.member(member_name)
    args = plan_model_args(plan, member_name)
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": args.vocab_size, "hidden_size": args.dim, "intermediate_size": member.ffn_dim,
        "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads or args.n_heads, "head_dim": args.dim // args.n_heads,
        "hidden_act": "silu", "rms_norm_eps": args.norm_eps, "max_position_embeddings": args.max_seq_len,
        "rope_theta": float(args.rope_theta), "rope_scaling": rope_scaling(args),
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "pretraining_tp": 1, "tie_word_embeddings": False, "use_cache": True, "torch_dtype": dtype,
        "bos_token_id": bos_id, "eos_token_id": eos_id,
    }


# --- tokenizer ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class SpecialTokens:
    bos: str
    eos: str
    bos_id: int
    eos_id: int


def _token(config: Mapping[str, Any], name: str) -> str | None:
    """A token as tokenizer_config.json names it: a string or {"content": ...}."""
    value = config.get(name)
    return value.get("content") if isinstance(value, dict) else value


def write_tokenizer(tokenizer_dir: Path, out: Path, *, vocab_size: int,
                    seq_len: int) -> tuple[SpecialTokens, dict[str, str]]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out`; ({file: sha256})."""
    from tokenizers import Tokenizer, processors

    config_path = tokenizer_dir / "tokenizer_config.json"
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise FamilycError(f"{tokenizer_dir}: cannot read the tokenizer ({e})") from e
    bos, eos = _token(config, "bos_token"), _token(config, "eos_token")
    if not bos or not eos:
        raise FamilycError(f"{config_path} names no bos_token and eos_token",
                           hint="torchtitan and transformers both take them from tokenizer_config.json")
    def token_id(token: str, role: str) -> int:
        found = tokenizer.token_to_id(token)
        if found is None:
            raise FamilycError(f"{tokenizer_dir / 'tokenizer.json'} has no token {token!r} (its config's "
                               f"{role}_token)")
        return found

    bos_id, eos_id = token_id(bos, "bos"), token_id(eos, "eos")
    if tokenizer.get_vocab_size() > vocab_size:
        raise FamilycError(f"the tokenizer in {tokenizer_dir} has {tokenizer.get_vocab_size()} tokens, more than the "
                           f"model's vocab_size {vocab_size}")
    special = SpecialTokens(bos=bos, eos=eos, bos_id=bos_id, eos_id=eos_id)
    if tokenizer.post_processor is None:  # what transformers builds from add_bos_token, for every other reader
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, special.bos_id)])
        text = tokenizer.to_str(pretty=True) + "\n"
    else:
        text = (tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8")
    files = {"tokenizer.json": write_synced(out / "tokenizer.json", text.encode())}
    config.update({"bos_token": bos, "eos_token": eos, "add_bos_token": True, "add_eos_token": False,
                   "model_max_length": seq_len})
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    config.setdefault("clean_up_tokenization_spaces", False)
    files["tokenizer_config.json"] = _write_json(out / "tokenizer_config.json", config)
    special_map = {"bos_token": bos, "eos_token": eos}
    files["special_tokens_map.json"] = _write_json(out / "special_tokens_map.json", special_map)
    return special, files


# --- the model card -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class CardFacts:
    """What the model card says besides the shape; None where the run does not know it."""

    step: str
    baseline: bool
    lineage: tuple[str, ...]
    """Members this one was grown from, smallest first (empty: trained from scratch)."""
    tokens: int | None
    """Tokens of this member's own training stage."""
    lineage_tokens: int | None
    """Tokens of this stage and of every stage it grew from."""
    final_loss: float | None
    heldout_loss: float | None


def model_card(plan: Plan, member_name: str, facts: CardFacts, *, dtype: str) -> str:
    member = plan.member(member_name)
    name = f"{plan.family.name}-{member_name}" + ("-baseline" if facts.baseline else "")
    origin = ("trained from scratch (the independent baseline)" if facts.baseline
              else f"grown from {' -> '.join(facts.lineage)}, then trained" if facts.lineage
              else "trained from scratch (the family's first member)")

    def number(value: float | int | None, fmt: str) -> str:
        return "unknown" if value is None else format(value, fmt)

    rows = [
        ("family", f"{plan.family.name} ({plan.family.description})" if plan.family.description else plan.family.name),
        ("member", f"{member_name}: {origin}"),
        ("plan id", f"{plan.plan_id} (step {facts.step})"),
        ("parameters", f"{member.params:,}"),
        ("shape", f"dim {member.dim}, {member.n_layers} layers, {member.n_heads} heads ({member.n_kv_heads} KV), "
                  f"head_dim {member.head_dim}, ffn {member.ffn_dim}, vocab {member.vocab_size}"),
        ("context", f"{member.seq_len} tokens, RoPE theta {plan.architecture.rope_theta:g} with Llama 3.1 scaling"),
        ("training tokens", number(facts.tokens, ",")),
    ]
    if facts.lineage and not facts.baseline:
        rows.append(("with the members it grew from", number(facts.lineage_tokens, ",")))
    rows += [("final training loss", number(facts.final_loss, ".4f")),
             ("held-out loss", number(facts.heldout_loss, ".4f")), ("weights", dtype)]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [familyc, llama, "
            f"{plan.family.name}]\n---\n\n# {name}\n\nA Llama model exported by familyc {__version__} from a "
            f"torchtitan checkpoint.\n\n| | |\n|---|---|\n{table}\n\n```python\nfrom transformers import "
            f"AutoModelForCausalLM, AutoTokenizer\n\nmodel = AutoModelForCausalLM.from_pretrained(PATH)\n"
            f"tokenizer = AutoTokenizer.from_pretrained(PATH)\n```\n")


# --- the whole export -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class Exported:
    path: Path
    files: dict[str, str]
    """{file name: sha256}, the sidecar excepted."""
    bytes_written: int


def export_member(plan: Plan, member_name: str, checkpoint: Path, out: Path, *, tokenizer_dir: Path,
                  facts: CardFacts, dtype: str = "float32", max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                  source: SourceRecord | None = None, progress: Start = quiet) -> Exported:
    """Write the member's DCP checkpoint as a Hugging Face Llama folder `out`. Atomic: `out` appears
    complete or not at all; an existing `out` is refused and left untouched."""
    if dtype not in DTYPES:
        raise FamilycError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise FamilycError(f"{out}: already exists; familyc never overwrites an export",
                           hint="choose another --hf folder, or remove it first")
    member = plan.member(member_name)
    weights = SourceCheckpoint(checkpoint)
    weights.validate(model_keys(member.shape))
    with atomic_folder(out, appeared=lambda: FamilycError(
            f"{out}: appeared while familyc was exporting into it; left untouched")) as tmp:
        special, files = write_tokenizer(tokenizer_dir, tmp, vocab_size=member.vocab_size, seq_len=member.seq_len)
        files |= write_weights(weights, tmp, n_heads=member.n_heads, n_kv_heads=member.n_kv_heads,
                               dtype=DTYPES[dtype], max_shard_bytes=max_shard_bytes, progress=progress)
        config = hf_config(plan, member_name, dtype=dtype, bos_id=special.bos_id, eos_id=special.eos_id)
        files["config.json"] = _write_json(tmp / "config.json", config)
        generation = {"bos_token_id": special.bos_id, "eos_token_id": special.eos_id, "pad_token_id": special.eos_id}
        files["generation_config.json"] = _write_json(tmp / "generation_config.json", generation)
        files["README.md"] = write_synced(tmp / "README.md", model_card(plan, member_name, facts, dtype=dtype).encode())
        sidecar = Sidecar(kind="export", member=member_name, shape=member.shape, plan_id=plan.plan_id, step=facts.step,
                          dtype=dtype, norm_eps=member.norm_eps, source=source,
                          export=ExportRecord(family=plan.family.name, baseline=facts.baseline,
                                              rope_scaling=config["rope_scaling"]))
        write_sidecar(tmp, sidecar, files)
    return Exported(path=out, files=files, bytes_written=sum(p.stat().st_size for p in out.iterdir()))


def _write_json(path: Path, data: Any) -> str:
    return write_synced(path, (json.dumps(data, indent=2) + "\n").encode())
