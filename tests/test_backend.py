"""The torchtitan backend without training: key names, model arguments, flavors, job TOML, CPU layer.

Everything is checked against the pinned torchtitan 0.2.2 itself: the state dict of a real
`Transformer` (built on the meta device), `ConfigManager` parsing the job TOML we write.
The torch-free half is in test_backend_keys.py, the data in test_backend_data.py, and the runs
(torchrun, checkpoints, compile, NaN) in test_backend_runs.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from familyc.backend.keys import model_keys
from familyc.cost.params import torchtitan_ffn_args
from familyc.plan.ir import loads
from familyc.shape import ModelShape

ROOT = Path(__file__).resolve().parents[1]
PLAN = loads((ROOT / "plans" / "tiny.plan.json").read_text())

SHAPES = [
    ModelShape(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=2048),      # tiny xs
    ModelShape(dim=128, n_layers=3, n_heads=8, n_kv_heads=8, ffn_dim=384, vocab_size=2048),     # MHA
    ModelShape(dim=96, n_layers=1, n_heads=6, n_kv_heads=1, ffn_dim=250, vocab_size=1000),      # MQA, odd FFN
    ModelShape(dim=256, n_layers=2, n_heads=16, n_kv_heads=4, ffn_dim=1000, vocab_size=4099),   # FFN below 8d/3
]


def member_shape(name: str) -> ModelShape:
    m = PLAN.member(name)
    return ModelShape(dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                      ffn_dim=m.ffn_dim, vocab_size=m.vocab_size)


# --- against torchtitan -------------------------------------------------------------------------

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan", reason="torchtitan is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.models.llama3", reason="torchtitan's llama3 does not import (it needs triton)")

from torchtitan.models.llama3 import Transformer, TransformerModelArgs, llama3_args  # noqa: E402

from familyc.backend.model import build_model, forward_logits, model_args, plan_model_args, register_flavor  # noqa: E402
from familyc.errors import PlanError  # noqa: E402


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.describe())
def test_model_keys_are_torchtitans_state_dict(shape: ModelShape) -> None:
    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    args = TransformerModelArgs(dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads,
                                n_kv_heads=shape.n_kv_heads, vocab_size=shape.vocab_size, multiple_of=multiple_of,
                                ffn_dim_multiplier=multiplier)
    with torch.device("meta"):
        model = Transformer(args)
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == list(model_keys(shape).items())  # same names, shapes and order


@pytest.mark.parametrize("name", [m.name for m in PLAN.members])
def test_built_model_matches_the_plan(name: str) -> None:
    member = PLAN.member(name)
    args = plan_model_args(PLAN, name)
    assert (args.attn_type, args.attn_mask_type, args.max_seq_len) == ("sdpa", "causal", member.seq_len)
    model = build_model(args, seed=0)
    assert sum(p.numel() for p in model.parameters()) == member.params
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == list(model_keys(member_shape(name)).items())
    _, flops = args.get_nparams_and_flops(model, member.seq_len)
    assert flops == member.flops_per_token


def test_build_model_is_seeded_and_forward_logits_shapes() -> None:
    args = plan_model_args(PLAN, "xs")
    a, b, c = build_model(args, seed=0), build_model(args, seed=0), build_model(args, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.output.weight, c.output.weight)
    tokens = torch.randint(0, args.vocab_size, (2, 17))
    logits = forward_logits(a, tokens)
    assert logits.shape == (2, 17, args.vocab_size) and logits.dtype == torch.float32
    assert torch.equal(forward_logits(a, tokens[0]), logits[:1])
    assert torch.isfinite(logits).all()


def test_model_args_refuse_an_ffn_torchtitan_would_not_build() -> None:
    member = dataclasses.replace(PLAN.member("xs"), torchtitan_multiple_of=256)
    with pytest.raises(PlanError, match="ffn_dim 192"):
        model_args(member, rope_theta=1e4, seq_len=256)
    member = dataclasses.replace(PLAN.member("xs"), head_dim=32)
    with pytest.raises(PlanError, match="head_dim"):
        model_args(member, rope_theta=1e4, seq_len=256)


def test_register_flavor_and_the_flavors_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from familyc.backend import flavors

    args = {f"test-{m.name}": plan_model_args(PLAN, m.name) for m in PLAN.members}
    path = flavors.write_flavors(tmp_path / "flavors.json", args)
    assert flavors.read_flavors(path) == args
    assert json.loads(path.read_text())["torchtitan_version"] == "0.2.2"
    monkeypatch.setenv(flavors.FLAVORS_ENV, str(path))
    try:
        assert flavors.register_from_env() == sorted(args)
        assert llama3_args["test-s"] == args["test-s"]
    finally:
        for name in args:
            llama3_args.pop(name, None)
    with pytest.raises(ValueError, match="torchtitan's own"):
        register_flavor("debugmodel", args["test-xs"])


def test_enable_cpu_patches_torchtitan_here() -> None:
    from familyc.backend import compat

    if compat.accelerator_present():
        pytest.skip("an accelerator is present: enable_cpu() leaves torchtitan alone")
    assert compat.enable_cpu() is True and compat.enable_cpu() is True  # idempotent
    import torchtitan.components.metrics as metrics
    import torchtitan.distributed.utils as dist_utils
    import torchtitan.tools.utils as tt_utils
    from torch.distributed.fsdp import FSDPModule

    assert tt_utils.device_type == metrics.device_type == dist_utils.device_type == "cpu"
    assert metrics.device_module is tt_utils.device_module
    stats = tt_utils.device_module.memory_stats("cpu")
    assert stats["reserved_bytes.all.peak"] > 10 * 2**20
    assert FSDPModule.set_gradient_divide_factor in compat._PATCHES  # patched to reduce with SUM


# --- the job TOML -------------------------------------------------------------------------------

def parse_job(tmp_path: Path, **overrides: object):  # -> torchtitan JobConfig
    from torchtitan.config import ConfigManager

    from familyc.backend.job import job_config_toml

    step = overrides.pop("step", PLAN.step("train-s"))
    kwargs = dict(dump_folder=tmp_path / "dump", dataset_path=tmp_path / "data", tokenizer_path=tmp_path / "tok",
                  flavor="familyc-s", compile=True, init_from=tmp_path / "expand" / "step-0", checkpoint_interval=7,
                  seed=11)
    kwargs.update(overrides)
    text = job_config_toml(step, PLAN.member(step.member), PLAN, **kwargs)
    path = tmp_path / "job.toml"
    path.write_text(text)
    return ConfigManager().parse_args(["--job.config_file", str(path)]), text


def test_job_toml_is_a_torchtitan_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path.parent)  # paths must not depend on the working directory
    config, text = parse_job(tmp_path, dump_folder=Path(tmp_path.name) / "dump")
    step = PLAN.step("train-s")
    opt = PLAN.training.optimizer
    assert (config.model.name, config.model.flavor, config.model.hf_assets_path) == (
        "llama3", "familyc-s", str(tmp_path / "tok"))
    assert config.job.dump_folder == str(tmp_path / "dump")
    t = config.training
    assert (t.dataset, t.dataset_path, t.local_batch_size, t.global_batch_size, t.seq_len, t.steps) == (
        "c4_test", str(tmp_path / "data"), step.local_batch_size, step.global_batch_size, 256, step.num_steps)
    assert (t.dtype, t.mixed_precision_param, t.max_norm) == ("float32", "float32", opt.max_grad_norm)
    o = config.optimizer
    assert (o.name, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay) == (
        "AdamW", step.max_lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)
    s = config.lr_scheduler
    # specs/tiny.yaml decays on warmup-stable-decay: the last 20% of the stage, linearly
    assert (step.schedule.decay_ratio, step.schedule.decay_type) == (0.2, "linear")
    assert (s.warmup_steps, s.decay_ratio, s.decay_type, s.min_lr_factor) == (
        step.schedule.warmup_steps, 0.2, "linear", step.schedule.min_lr_factor)
    assert config.parallelism.data_parallel_shard_degree == -1
    assert config.activation_checkpoint.mode == "none"
    assert config.compile.enable is True
    c = config.checkpoint
    assert (c.enable, c.folder, c.interval, c.keep_latest_k, c.last_save_model_only, c.export_dtype) == (
        True, "checkpoint", 7, 2, True, "float32")
    assert (c.initial_load_path, c.initial_load_model_only) == (str(tmp_path / "expand" / "step-0"), True)
    assert (config.metrics.log_freq, config.debug.seed) == (PLAN.training.log_interval, 11)
    assert config.experimental.custom_import == "familyc.backend.flavors"
    assert "plan " + PLAN.plan_id in text


def test_job_toml_precision_schedule_and_no_initial_load(tmp_path: Path) -> None:
    step = dataclasses.replace(PLAN.step("train-xs"), precision="bf16", activation_checkpointing="selective",
                               schedule=dataclasses.replace(PLAN.step("train-xs").schedule, decay_type="linear",
                                                            decay_ratio=0.2))
    config, text = parse_job(tmp_path, step=step, flavor="familyc-xs", init_from=None, compile=False)
    assert config.training.mixed_precision_param == "bfloat16"
    assert (config.activation_checkpoint.mode, config.activation_checkpoint.selective_ac_option) == ("selective", "2")
    assert (config.lr_scheduler.decay_type, config.lr_scheduler.decay_ratio) == ("linear", 0.2)
    assert config.checkpoint.initial_load_path is None and "initial_load" not in text
    assert config.compile.enable is False


def test_job_toml_refuses_a_step_of_another_member(tmp_path: Path) -> None:
    from familyc.backend.job import job_config_toml

    with pytest.raises(PlanError, match="trains s, not xs"):
        job_config_toml(PLAN.step("train-s"), PLAN.member("xs"), PLAN, dump_folder=tmp_path, dataset_path=tmp_path,
                        tokenizer_path=tmp_path, flavor="x", compile=False, init_from=None, checkpoint_interval=1,
                        seed=0)
