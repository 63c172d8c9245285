"""Streamed checkpoint expansion (familyc.checkpoint, familyc.expand.stream) against the operators and torchtitan.

- Round trips: a source written by dcp.save, expanded on disk, read back: bit-identical to
  expand_state_dict on the same tensors, for each operator, in bf16 and fp32.
- Format: our .metadata equals what dcp.save records; dcp.load and torchtitan 0.2.2's
  CheckpointManager (initial_load_path) load the output into its Llama 3 model.
- A real torchtitan model-only save from 2 FSDP2 ranks (torchrun, gloo) is read chunk by chunk,
  expanded, and loaded back into 2 FSDP2 ranks of the bigger model through initial_load_path.
- Every bad input is one CheckpointError naming the file (and the key), raised before anything is
  written; an interrupted write leaves neither the destination nor a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest
from conftest import REPO, time_limit

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
dcp = pytest.importorskip("torch.distributed.checkpoint")

from familyc.backend.keys import model_keys  # noqa: E402
from familyc.checkpoint import DATA_FILE, METADATA_FILE  # noqa: E402
from familyc.checkpoint.reader import SourceCheckpoint, load_state_dict  # noqa: E402
from familyc.checkpoint.sidecar import EXPANSION_SIDECAR as SIDECAR_FILE  # noqa: E402
from familyc.checkpoint.sidecar import Sidecar, read_sidecar, verify_sidecar  # noqa: E402
from familyc.checkpoint.writer import TensorRecipe, write_checkpoint  # noqa: E402
from familyc.cost.params import torchtitan_ffn_args  # noqa: E402
from familyc.errors import CheckpointError  # noqa: E402
from familyc.expand.operators import Expansion, expand_state_dict  # noqa: E402
from familyc.expand.stream import _SourceCache, expand_checkpoint  # noqa: E402
from familyc.files import sha256_file  # noqa: E402
from familyc.shape import ModelShape  # noqa: E402

XS = ModelShape(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=256)
S = ModelShape(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=256)
M = ModelShape(dim=128, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=384, vocab_size=256)
ODD = ModelShape(dim=96, n_layers=3, n_heads=6, n_kv_heads=3, ffn_dim=250, vocab_size=256)
L = ModelShape(dim=128, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=384, vocab_size=256)
ODD_DEEP = ModelShape(dim=144, n_layers=4, n_heads=9, n_kv_heads=3, ffn_dim=250, vocab_size=256)


def sidecar(member: str = "test", shape: ModelShape = XS) -> Sidecar:
    """A sidecar for weights written outside a plan."""
    return Sidecar(kind="expansion", member=member, shape=shape)


# (source, target, operators): one case per operator, the whole-multiple and the uneven kind
CASES = {
    "zero_insert": (XS, S, dict(width="none", depth="zero_insert")),
    "exact": (S, M, dict(width="exact", depth="none")),
    "fpi_uneven+zero_insert": (XS, ODD, dict(width="fpi", depth="zero_insert", seed=3)),
    "aki+stack": (XS, L, dict(width="aki", depth="stack", seed=1)),
    "fpi+interpolate+noise": (XS, L, dict(width="fpi", depth="interpolate", noise=0.05, seed=2)),
    "zero_uneven+zero_insert": (XS, ODD, dict(width="zero", depth="zero_insert", seed=4)),
    "paired+zero_insert": (XS, L, dict(width="paired", depth="zero_insert", seed=5)),
    "split_uneven": (S, ODD_DEEP, dict(width="split", depth="none", seed=6)),
}


def random_state_dict(shape: ModelShape, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=generator).to(dtype) for k, s in model_keys(shape).items()}


def dcp_save(state_dict: dict[str, object], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... single process"
        dcp.save(state_dict, checkpoint_id=path)
    return path


def dcp_load(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state_dict, checkpoint_id=path)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state_dict = random_state_dict(XS, torch.bfloat16)
    return dcp_save(state_dict, tmp_path / "xs" / "step-42"), state_dict


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# --- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_expansion_on_disk_is_bit_identical_to_in_memory(tmp_path: Path, case: str, dtype: torch.dtype) -> None:
    src_shape, dst_shape, ops = CASES[case]
    state_dict = random_state_dict(src_shape, dtype, seed=7)
    src = dcp_save(state_dict, tmp_path / "src")
    with time_limit(60):
        written = expand_checkpoint(src, tmp_path / "dst", Expansion(src_shape, dst_shape, **ops),
                                    sidecar=sidecar(case, dst_shape))
    expected = expand_state_dict(state_dict, src_shape, dst_shape, **ops)
    got = load_state_dict(tmp_path / "dst")
    assert list(got) == list(expected) == list(model_keys(dst_shape))
    for key, tensor in expected.items():
        assert got[key].dtype == dtype and torch.equal(got[key], tensor), key
    # dcp.load, the reader torchtitan uses, sees the same tensors (converting to fp32 on the way)
    loaded = {k: torch.zeros(v.shape) for k, v in expected.items()}
    dcp_load(loaded, tmp_path / "dst")
    assert all(torch.equal(loaded[k], v.float()) for k, v in expected.items())
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [METADATA_FILE, DATA_FILE, SIDECAR_FILE]
    assert read_sidecar(tmp_path / "dst", "expansion") == dataclasses.replace(sidecar(case, dst_shape),
                                                                             files=written.files)
    assert written.files == {name: sha256_file(tmp_path / "dst" / name) for name in (DATA_FILE, METADATA_FILE)}
    assert verify_sidecar(tmp_path / "dst") == []
    assert written.bytes_written == sum(p.stat().st_size for p in (tmp_path / "dst").iterdir())
    assert leftovers(tmp_path) == []


def test_each_source_tensor_is_read_once_when_targets_reuse_it(tmp_path: Path) -> None:
    state_dict = random_state_dict(XS, torch.bfloat16)
    src = dcp_save(state_dict, tmp_path / "src")
    for case in ("zero_insert", "fpi+interpolate+noise", "aki+stack"):
        _, dst_shape, ops = CASES[case]
        written = expand_checkpoint(src, tmp_path / case, Expansion(XS, dst_shape, **ops), sidecar=sidecar())
        assert written.bytes_read == sum(t.nbytes for t in state_dict.values()), case


def test_a_cache_over_budget_rereads_but_stays_correct() -> None:
    reads: list[str] = []
    tensors = {k: torch.full((4,), float(i)) for i, k in enumerate("abc")}

    def read(key: str) -> torch.Tensor:
        reads.append(key)
        return tensors[key].clone()

    plan = [("a",), ("b",), ("a", "c"), ("b",), ("a",)]
    cache = _SourceCache(read, plan, budget=16)  # room for one 4-float tensor
    for index, sources in enumerate(plan):
        assert all(torch.equal(cache.get(k), tensors[k]) for k in sources)
        cache.finished(index)
    # after target 1, a (next needed at 2) is kept over b (at 3): b is read twice, a once
    assert reads == ["a", "b", "c", "b"]
    assert cache._held == {}


def test_each_target_is_computed_when_written_and_dropped_right_after(tmp_path: Path) -> None:
    alive: list[weakref.ref[torch.Tensor]] = []

    def compute_for(i: int):
        def compute(get):  # the previous target may still be being written; none before it
            assert all(ref() is None for ref in alive[:-1]), "an earlier target is still in memory"
            tensor = torch.full((64, 64), float(i))
            alive.append(weakref.ref(tensor))
            return tensor
        return compute

    items = [TensorRecipe(key=f"t{i}", shape=(64, 64), sources=(), compute=compute_for(i)) for i in range(5)]
    write_checkpoint(tmp_path / "out", items, lambda key: torch.empty(0), sidecar=sidecar())
    assert [float(load_state_dict(tmp_path / "out")[f"t{i}"][0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]


# --- the format ---------------------------------------------------------------------------------

def test_metadata_is_what_dcp_save_records(tmp_path: Path) -> None:
    state_dict = {"w": torch.randn(3, 5).bfloat16(), "v": torch.randn(7), "s": torch.randn(2, 3, 4).half()}
    dcp_save(state_dict, tmp_path / "dcp")
    items = [TensorRecipe(key=k, shape=tuple(v.shape), sources=(k,), compute=lambda get, k=k: get(k))
             for k, v in state_dict.items()]
    write_checkpoint(tmp_path / "ours", items, state_dict.__getitem__, sidecar=sidecar())
    theirs = dcp.FileSystemReader(tmp_path / "dcp").read_metadata()
    ours = dcp.FileSystemReader(tmp_path / "ours").read_metadata()
    assert ours.state_dict_metadata == theirs.state_dict_metadata
    assert ours.planner_data == theirs.planner_data
    assert ours.version == theirs.version
    assert list(ours.storage_data) == list(theirs.storage_data)
    assert {i.relative_path for i in ours.storage_data.values()} == {DATA_FILE}
    assert ours.storage_meta.checkpoint_id == (tmp_path / "ours").absolute()


def torchtitan_model(shape: ModelShape):
    pytest.importorskip("torchtitan.models.llama3", reason="torchtitan's llama3 model does not import (needs triton)")
    from torchtitan.models.llama3 import Transformer, TransformerModelArgs

    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    args = TransformerModelArgs(dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads,
                                n_kv_heads=shape.n_kv_heads, vocab_size=shape.vocab_size, multiple_of=multiple_of,
                                ffn_dim_multiplier=multiplier)
    return Transformer(args)


def test_torchtitan_loads_the_output(tmp_path: Path, source: tuple[Path, dict[str, torch.Tensor]]) -> None:
    src, state_dict = source
    expected = expand_state_dict(state_dict, XS, M, width="fpi", depth="zero_insert")
    dst = tmp_path / "m" / "init"
    expand_checkpoint(src, dst, Expansion(XS, M, width="fpi", depth="zero_insert"), sidecar=sidecar())

    model = torchtitan_model(M)  # dcp.load into the model's own state dict
    own = model.state_dict()
    dcp_load(own, dst)
    assert all(torch.equal(own[k], v.float()) for k, v in expected.items())

    from torchtitan.components.checkpoint import CheckpointManager  # initial_load_path, as a stage would
    from torchtitan.config.job_config import Checkpoint

    model = torchtitan_model(M)
    config = Checkpoint(enable=True, folder="checkpoint", initial_load_path=str(dst.absolute()), load_only=True)
    manager = CheckpointManager(dataloader=None, model_parts=[model], optimizers=None, lr_schedulers=None,
                                states={}, checkpoint_config=config, sd_adapter=None,
                                base_folder=str(tmp_path / "run"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert manager.load()
    loaded = model.state_dict()
    assert list(loaded) == list(expected)
    assert all(torch.equal(loaded[k], v.float()) for k, v in expected.items())


TORCHRUN_SCRIPT = r'''
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torchtitan.components.checkpoint import CheckpointManager
from torchtitan.config.job_config import Checkpoint
from torchtitan.models.llama3 import Transformer, TransformerModelArgs

spec = json.loads(sys.argv[1])
out = Path(spec["out"])
dist.init_process_group("gloo")
rank0 = dist.get_rank() == 0
mesh = init_device_mesh("cpu", (dist.get_world_size(),))

def sharded(args, seed):
    torch.manual_seed(seed)
    model = Transformer(TransformerModelArgs(**args))
    with torch.no_grad():
        model.init_weights()
    full = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in model.layers.values():
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, full

def manager(model, config):
    return CheckpointManager(dataloader=None, model_parts=[model], optimizers=None, lr_schedulers=None, states={},
                             checkpoint_config=config, sd_adapter=None, base_folder=str(out))

# 1. the end of a stage: torchtitan's model-only final save from 2 FSDP2 ranks
model, full = sharded(spec["src"], 0)
if rank0:
    torch.save({k: v.to(getattr(torch, spec["dtype"])) for k, v in full.items()}, out / "source.pt")
manager(model, Checkpoint(enable=True, folder="checkpoint", interval=10**9, last_save_model_only=True,
                          export_dtype=spec["dtype"])).save(curr_step=1, last_step=True)
dist.barrier()
# 2. familyc grows it (rank 0; the other rank waits)
if rank0:
    from familyc.checkpoint.sidecar import Sidecar
    from familyc.expand.operators import Expansion
    from familyc.expand.stream import expand_checkpoint
    from familyc.shape import ModelShape
    expansion = Expansion(ModelShape(**spec["src_shape"]), ModelShape(**spec["dst_shape"]), **spec["ops"])
    expand_checkpoint(out / "checkpoint" / "step-1", out / "grown", expansion,
                      sidecar=Sidecar(kind="expansion", member="grown", shape=expansion.dst))
dist.barrier()
# 3. the next stage starts from it: initial_load_path into 2 FSDP2 ranks of the bigger model
model, _ = sharded(spec["dst"], 1)
config = Checkpoint(enable=True, folder="next", initial_load_path=str(out / "grown"), load_only=True)
assert manager(model, config).load()
loaded = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank0:
    torch.save(loaded, out / "loaded.pt")
dist.barrier()
dist.destroy_process_group()
'''


def tt_args(shape: ModelShape) -> dict[str, object]:
    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    return dict(dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
                vocab_size=shape.vocab_size, multiple_of=multiple_of, ffn_dim_multiplier=multiplier)


def test_sharded_torchtitan_save_is_expanded_and_loads_into_fsdp(tmp_path: Path) -> None:
    """2 ranks on gloo: torchtitan saves XS sharded (each tensor in 2 chunks in 2 files), familyc
    grows it into M, torchtitan's initial load puts it into a 2-rank FSDP2 model of M."""
    pytest.importorskip("torchtitan.models.llama3", reason="torchtitan's llama3 model does not import (needs triton)")
    ops = dict(width="fpi", depth="zero_insert")
    spec = {"out": str(tmp_path), "dtype": "bfloat16", "src": tt_args(XS), "dst": tt_args(L), "ops": ops,
            "src_shape": _shape_fields(XS), "dst_shape": _shape_fields(L)}
    script = tmp_path / "stage.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), json.dumps(spec)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    source = torch.load(tmp_path / "source.pt")
    saved = SourceCheckpoint(tmp_path / "checkpoint" / "step-1")
    assert sorted(p.name for p in saved.path.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert len(saved._entries["layers.0.feed_forward.w1.weight"].chunks) == 2
    assert saved.problems(model_keys(XS)) == []
    assert all(torch.equal(saved.read(k), v) for k, v in source.items())

    expected = expand_state_dict(source, XS, L, **ops)
    loaded = torch.load(tmp_path / "loaded.pt")
    assert list(loaded) == list(expected)
    assert all(torch.equal(loaded[k], v.float()) for k, v in expected.items())


def _shape_fields(shape: ModelShape) -> dict[str, int]:
    return {f: getattr(shape, f) for f in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")}


# --- bad inputs ---------------------------------------------------------------------------------

def expand(src: Path, dst: Path, target: ModelShape = S) -> None:
    expand_checkpoint(src, dst, Expansion(XS, target, width="fpi", depth="zero_insert"), sidecar=sidecar())


def expect_error(src: Path, dst: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        expand(src, dst)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not dst.exists() and leftovers(dst.parent) == []
    return info.value


def test_missing_source_folder(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope", tmp_path / "dst", f"{tmp_path / 'nope'}: no such checkpoint folder")


def test_source_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    expect_error(tmp_path / "file", tmp_path / "dst", "not a folder")


def test_no_metadata(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    (src / METADATA_FILE).unlink()
    error = expect_error(src, tmp_path / "dst", f"{src / METADATA_FILE}: missing")
    assert "step-N" in error.hint


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not_metadata"])
def test_corrupt_metadata(tmp_path: Path, source: tuple[Path, dict], damage: str) -> None:
    src, _ = source
    md = src / METADATA_FILE
    data = md.read_bytes()
    md.write_bytes({"garbage": b"\x80\x04garbage" + data[200:], "truncated": data[: len(data) // 2], "empty": b"",
                    "not_metadata": pickle.dumps({"a": 1})}[damage])
    expect_error(src, tmp_path / "dst", f"{md}: unreadable checkpoint metadata")


def test_metadata_pickle_cannot_run_code(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (src / METADATA_FILE).write_bytes(pickle.dumps(Exploit()))
    expect_error(src, tmp_path / "dst", "unreadable checkpoint metadata", "system")
    assert not marker.exists()


def test_truncated_data_file(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    data = src / DATA_FILE
    size = data.stat().st_size
    os.truncate(data, size - 1000)
    error = expect_error(src, tmp_path / "dst", f"{data} is truncated: key 'output.weight' needs",
                         f"the file has {size - 1000}")
    assert len(error.problems) == 1


def test_missing_data_file(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    (src / DATA_FILE).unlink()
    expect_error(src, tmp_path / "dst", f"{src / DATA_FILE}: missing data file (holds key 'tok_embeddings.weight'")


def test_corrupt_record_header_is_found_before_writing(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    offset = _storage(src, "layers.1.attention.wq.weight").offset
    with open(src / DATA_FILE, "r+b") as f:
        f.seek(offset)
        f.write(b"JUNK")
    expect_error(src, tmp_path / "dst", f"{src / DATA_FILE} is corrupt: key 'layers.1.attention.wq.weight'")


def test_corrupt_record_body_stops_the_write_midway(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    info = _storage(src, "layers.1.feed_forward.w2.weight")
    with open(src / DATA_FILE, "r+b") as f:  # the zip's central directory, at the end of the record
        f.seek(info.offset + info.length - 200)
        f.write(b"\xff" * 150)
    expect_error(src, tmp_path / "dst", f"{src / DATA_FILE}: key 'layers.1.feed_forward.w2.weight': cannot load")


def _storage(src: Path, key: str):
    metadata = dcp.FileSystemReader(src).read_metadata()
    return next(info for index, info in metadata.storage_data.items() if index.fqn == key)


def test_wrong_keys_shapes_and_dtypes_are_reported_together(tmp_path: Path) -> None:
    state_dict = random_state_dict(XS, torch.bfloat16)
    del state_dict["layers.1.ffn_norm.weight"]
    state_dict["layers.1.attention.wq.weight"] = torch.zeros(64, 32, dtype=torch.bfloat16)
    state_dict["extra.weight"] = torch.zeros(3, dtype=torch.bfloat16)
    state_dict["norm.weight"] = torch.zeros(64, dtype=torch.float32)
    state_dict["layers.0.ffn_norm.weight"] = torch.zeros(64, dtype=torch.int64)
    src = dcp_save(state_dict, tmp_path / "checkpoints" / "xs" / "step-42")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep").write_text("mine")
    with pytest.raises(CheckpointError) as info:
        expand(src, dst)
    assert list(info.value.problems) == [
        f"{src}: missing key 'layers.1.ffn_norm.weight' (expected shape [64])",
        f"{src}: unexpected key 'extra.weight' with shape [3]",
        f"{src}: key 'layers.1.attention.wq.weight' has shape [64, 32], expected [64, 64]",
        f"{src}: key 'layers.0.ffn_norm.weight' has dtype int64; weights must be floating point",
        f"{src}: key 'norm.weight' has dtype float32, the others bfloat16; every tensor must share one dtype",
        f"{dst}: already exists; familyc never overwrites a checkpoint",
    ]
    assert [p.name for p in dst.iterdir()] == ["keep"] and (dst / "keep").read_text() == "mine"


def test_full_training_checkpoint_gets_a_hint(tmp_path: Path) -> None:
    state_dict: dict[str, object] = dict(random_state_dict(XS, torch.bfloat16))
    state_dict["optimizer.state.norm.weight.exp_avg"] = torch.zeros(64, dtype=torch.bfloat16)
    state_dict["train_state"] = {"step": 3}
    src = dcp_save(state_dict, tmp_path / "full")
    error = expect_error(src, tmp_path / "dst", "unexpected key 'optimizer.state.norm.weight.exp_avg'",
                         "unexpected key 'train_state.step' (not a tensor)")
    assert "last_save_model_only" in error.hint


def test_existing_destination_is_left_untouched(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep").write_bytes(b"precious")
    with pytest.raises(CheckpointError, match="already exists"):
        expand(src, dst)
    assert [p.name for p in dst.iterdir()] == ["keep"] and (dst / "keep").read_bytes() == b"precious"
    with pytest.raises(CheckpointError, match="already exists"):
        write_checkpoint(dst, [], lambda key: torch.empty(0), sidecar=sidecar())
    assert [p.name for p in dst.iterdir()] == ["keep"]


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path: Path, source: tuple[Path, dict], exception: type) -> None:
    src, _ = source
    expansion = Expansion(XS, S, width="none", depth="zero_insert")
    inner = Expansion.targets

    def targets(self, dtype):
        for index, target in enumerate(inner(self, dtype)):
            if index == 7:
                def boom(get, key=target.key):
                    raise exception(f"interrupted at {key}")
                target = TensorRecipe(key=target.key, shape=target.shape, sources=target.sources, compute=boom)
            yield target

    expansion.targets = targets.__get__(expansion)
    with pytest.raises(exception, match="interrupted at layers.0.feed_forward.w3.weight"):
        expand_checkpoint(src, tmp_path / "dst", expansion, sidecar=sidecar())
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == []


def test_target_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    items = [TensorRecipe(key="w", shape=(2, 3), sources=(), compute=lambda get: torch.zeros(3, 2))]
    with pytest.raises(CheckpointError, match=r"__0_0.distcp: key 'w' came out as \[3, 2\], expected shape \[2, 3\]"):
        write_checkpoint(tmp_path / "out", items, lambda key: torch.empty(0), sidecar=sidecar())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stale_temporary_folders_are_cleaned_and_live_ones_kept(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".dst.tmp-{int(dead.stdout)}"
    live = tmp_path / f".dst.tmp-{os.getppid()}"
    for folder in (stale, live):
        folder.mkdir()
        (folder / DATA_FILE).write_bytes(b"half")
    expand(src, tmp_path / "dst")
    assert not stale.exists() and live.exists()
    assert verify_sidecar(tmp_path / "dst") == []


def test_verify_sidecar_finds_changed_missing_and_unlisted_files(tmp_path: Path, source: tuple[Path, dict]) -> None:
    src, _ = source
    dst = tmp_path / "dst"
    expand(src, dst)
    assert verify_sidecar(dst) == []
    with open(dst / DATA_FILE, "r+b") as f:
        f.seek(100)
        byte = f.read(1)[0]
        f.seek(100)
        f.write(bytes([byte ^ 0xFF]))
    (dst / METADATA_FILE).unlink()
    (dst / "stray.txt").write_text("?")
    problems = verify_sidecar(dst)
    assert problems[0].startswith(f"{dst / METADATA_FILE}: missing")
    assert problems[1].startswith(f"{dst / DATA_FILE}: sha256 ") and "differs from the sidecar's" in problems[1]
    assert problems[2] == f"{dst / 'stray.txt'}: not listed in the sidecar"
    (dst / SIDECAR_FILE).write_text("{")
    assert verify_sidecar(dst)[0].startswith(f"{dst / SIDECAR_FILE}: unreadable")
