"""`familyc export RUN_DIR MEMBER --hf OUT`: transformers loads the export offline, with torchtitan's logits.

The run directory is made without training: each member is torchtitan's model with every weight
(norms included) perturbed at random, written as `familyc apply` leaves it (DCP folder and
familyc-member.json in members/<name>/, the step completed in state.json, the builtin tokenizer in
assets/). The refusals need only torch; the loading tests skip without transformers.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchtitan.models.llama3", reason="the export reads the members' torchtitan arguments")
pytest.importorskip("tokenizers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing may be downloaded

from conftest import REPO  # noqa: E402

from familyc.backend.evaluate import load_member  # noqa: E402
from familyc.backend.hf_export import SIDECAR_FILE, CardFacts, export_member  # noqa: E402
from familyc.backend.model import build_model, forward_logits, plan_model_args  # noqa: E402
from familyc.checkpoint import DATA_FILE  # noqa: E402
from familyc.checkpoint.sidecar import Sidecar  # noqa: E402
from familyc.checkpoint.writer import TensorRecipe, write_checkpoint  # noqa: E402
from familyc.cli import app  # noqa: E402
from familyc.data import ensure_builtin_assets  # noqa: E402
from familyc.enums import COMPLETED  # noqa: E402
from familyc.execute.data import run_tokenizer_dir  # noqa: E402
from familyc.execute.rundir import RunDir, open_run_dir  # noqa: E402
from familyc.files import sha256_file  # noqa: E402
from familyc.plan.ir import loads  # noqa: E402

PLAN = loads((REPO / "plans" / "tiny.plan.json").read_text())
MEMBERS = [m.name for m in PLAN.members]
TOLERANCE = 1e-4
SEQ = 200  # long enough for RoPE's scaled low frequencies to matter
TEXT = "Return the  sum of x and y.\n\n    >>> add(2, 3)\n    5\nnaïve café — ünïcode ✓\ttabs  "
runner = CliRunner()


def perturbed_state(member: str, seed: int) -> dict[str, torch.Tensor]:
    """torchtitan's initialisation with every tensor moved at random (norms too: they must be exported)."""
    model = build_model(plan_model_args(PLAN, member), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        value.add_((0.2 if key.endswith("norm.weight") else 0.05) * torch.randn(value.shape, generator=generator))
    return state


def promote(weights: Path, state: dict[str, torch.Tensor], step_id: str, member: str) -> None:
    """A member's checkpoint as familyc.execute.members.promote leaves it."""
    items = [TensorRecipe(key=k, shape=tuple(v.shape), sources=(k,), compute=lambda get, k=k: get(k))
             for k, v in state.items()]
    write_checkpoint(weights, items, state.__getitem__,
                     sidecar=Sidecar(kind="member", member=member, shape=PLAN.shape(member), plan_id=PLAN.plan_id,
                                     step=step_id, dtype="float32"))


def make_run(root: Path, trained: dict[str, int]) -> RunDir:
    """A run directory of the tiny plan whose steps `trained` ({step id: seed}) are completed."""
    run, state = open_run_dir(root, PLAN)
    ensure_builtin_assets(run.assets, heldout_fraction=PLAN.data.heldout_fraction, vocab_size=2048)
    for step_id, seed in trained.items():
        step = PLAN.step(step_id)
        promote(run.weights(PLAN, step), perturbed_state(step.member, seed), step_id, step.member)
        st = state.step(step_id)
        st.status, st.metrics = COMPLETED, {"tokens": 4096 * (seed + 1), "final_loss": 3.25}
    state.save()
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    trained = {f"train-{name}": seed for seed, name in enumerate(MEMBERS)}
    return make_run(tmp_path_factory.mktemp("run") / "tiny", {**trained, "baseline-s": 7})


@pytest.fixture(scope="module")
def exports(run: RunDir, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every member exported once through the command line (fp32)."""
    out = tmp_path_factory.mktemp("hf")
    for name in MEMBERS:
        code, output = invoke(str(run.root), name, "--hf", str(out / name))
        assert code == 0, output
        assert f"exported {name} of tiny as float32" in output
        assert "writing safetensors: " in output  # progress (plain lines: not a terminal)
    return {name: out / name for name in MEMBERS}


@pytest.fixture(scope="module")
def transformers() -> Any:
    return pytest.importorskip("transformers", reason="loading the export needs transformers (the dev extra)")


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", *args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def tokens(vocab_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def hf_logits(transformers: Any, folder: Path, ids: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        return model(ids).logits.float()


def safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


# --- what transformers sees -----------------------------------------------------------------------

@pytest.mark.parametrize("name", MEMBERS)
def test_each_member_loads_in_transformers_with_torchtitans_logits(name: str, run: RunDir, exports: dict[str, Path],
                                                                   transformers: Any) -> None:
    member = PLAN.member(name)
    ids = tokens(member.vocab_size)
    expected = forward_logits(load_member(PLAN, name, run.root / "members" / name), ids)
    got = hf_logits(transformers, exports[name], ids)
    assert got.shape == expected.shape == (2, SEQ, member.vocab_size)
    diff = float((got - expected).abs().max())
    assert diff <= TOLERANCE, f"{name}: max |delta logit| {diff:.3g}"
    config = json.loads((exports[name] / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == \
        (member.n_heads, member.n_kv_heads, member.head_dim)
    assert config["num_hidden_layers"] == member.n_layers and config["intermediate_size"] == member.ffn_dim
    assert config["max_position_embeddings"] == member.seq_len and config["tie_word_embeddings"] is False


def test_weights_are_torchtitans_own_hf_conversion(run: RunDir, exports: dict[str, Path], transformers: Any) -> None:
    """Our mapping (names, and the wq/wk row permutation for every head count incl. GQA) is torchtitan's to_hf."""
    from safetensors.torch import load_file
    from torchtitan.models.llama3.model.state_dict_adapter import Llama3StateDictAdapter

    from familyc.checkpoint.reader import load_state_dict

    for name in MEMBERS:
        theirs = Llama3StateDictAdapter(plan_model_args(PLAN, name), None).to_hf(
            load_state_dict(run.root / "members" / name))
        ours = load_file(exports[name] / "model.safetensors")
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def test_rope_is_torchtitans_llama31_scaling(exports: dict[str, Path], transformers: Any) -> None:
    """torchtitan 0.2.2 always scales RoPE (factor 8, 1, 4, 8192); the config's llama3 rope_scaling reproduces
    its cos/sin at every position, and leaving the scaling out would not (two of head_dim 16's frequencies)."""
    from torchtitan.models.llama3.model.model import precompute_freqs_cis

    config = json.loads((exports["xs"] / "config.json").read_text())
    assert config["rope_theta"] == 10000.0
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    args = plan_model_args(PLAN, "xs")
    positions = torch.arange(args.max_seq_len)[None]
    freqs_cis = precompute_freqs_cis(16, args.max_seq_len, args.rope_theta, args.rope_scaling_args)

    def max_diff(hf_config: Any) -> float:
        rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(hf_config)
        cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)  # rotate_half: both halves alike
        expected_cos, expected_sin = (torch.cat([part, part], dim=-1) for part in (freqs_cis.real, freqs_cis.imag))
        return max(float((cos[0] - expected_cos).abs().max()), float((sin[0] - expected_sin).abs().max()))

    scaled = transformers.AutoConfig.from_pretrained(exports["xs"])
    assert max_diff(scaled) <= 1e-5
    unscaled = transformers.LlamaConfig(**{k: v for k, v in config.items() if k != "rope_scaling"})
    assert max_diff(unscaled) > 1e-3


def test_tokenizer_round_trips_like_the_tokenizers_library(run: RunDir, exports: dict[str, Path],
                                                           transformers: Any) -> None:
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(str(run_tokenizer_dir(PLAN, run) / "tokenizer.json"))
    ids = trained.encode(TEXT).ids
    hf = transformers.AutoTokenizer.from_pretrained(exports["m"])
    assert isinstance(hf, transformers.PreTrainedTokenizerFast)
    config = json.loads((exports["m"] / "config.json").read_text())
    assert (hf.bos_token, hf.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")
    assert (hf.bos_token_id, hf.eos_token_id) == (config["bos_token_id"], config["eos_token_id"])
    assert hf(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert hf(TEXT)["input_ids"] == [hf.bos_token_id, *ids]  # BOS, as every training document began; no EOS
    assert hf.decode(ids) == trained.decode(ids) == TEXT
    assert hf.decode(hf(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
    # every other reader of tokenizer.json gets the same BOS
    assert Tokenizer.from_file(str(exports["m"] / "tokenizer.json")).encode(TEXT).ids == [hf.bos_token_id, *ids]


def test_bfloat16_export_is_the_rounded_model(run: RunDir, tmp_path: Path, transformers: Any) -> None:
    out = tmp_path / "m-bf16"
    code, output = invoke(str(run.root), "m", "--hf", str(out), "--dtype", "bfloat16")
    assert code == 0, output
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    header = safetensors_header(out / "model.safetensors")
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    model = load_member(PLAN, "m", run.root / "members" / "m")
    model.load_state_dict({k: v.bfloat16().float() for k, v in model.state_dict().items()})
    ids = tokens(PLAN.member("m").vocab_size, seed=1)
    diff = float((hf_logits(transformers, out, ids) - forward_logits(model, ids)).abs().max())
    assert diff <= TOLERANCE


def test_a_large_export_is_sharded_with_an_index(run: RunDir, tmp_path: Path, transformers: Any) -> None:
    out = tmp_path / "l-sharded"
    facts = CardFacts(step="train-l", baseline=False, lineage=(), tokens=None, lineage_tokens=None, final_loss=None,
                      heldout_loss=None)
    export_member(PLAN, "l", run.root / "members" / "l", out, tokenizer_dir=run_tokenizer_dir(PLAN, run), facts=facts,
                  max_shard_bytes=600_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_size"] == 4 * PLAN.member("l").params
    ids = tokens(PLAN.member("l").vocab_size, seed=2)
    expected = forward_logits(load_member(PLAN, "l", run.root / "members" / "l"), ids)
    assert float((hf_logits(transformers, out, ids) - expected).abs().max()) <= TOLERANCE


# --- the files ------------------------------------------------------------------------------------

def test_the_folder_holds_a_model_card_and_a_sidecar_of_hashes(run: RunDir, exports: dict[str, Path]) -> None:
    out = exports["m"]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "README.md", SIDECAR_FILE])
    assert not list(out.parent.glob(".*tmp*"))
    sidecar = json.loads((out / SIDECAR_FILE).read_text())
    assert sidecar["plan_id"] == PLAN.plan_id and sidecar["member"] == "m" and sidecar["step"] == "train-m"
    assert sidecar["source"]["checkpoint"] == "members/m"
    assert sidecar["files"] == {p.name: sha256_file(p) for p in out.iterdir() if p.name != SIDECAR_FILE}
    card = (out / "README.md").read_text()
    assert PLAN.plan_id in card and "grown from xs -> s, then trained" in card
    assert f"| training tokens | {4096 * 3:,} |" in card  # m is the third stage: seed 2 -> 3 x 4096 tokens
    assert f"| with the members it grew from | {4096 * (1 + 2 + 3):,} |" in card
    generation = json.loads((out / "generation_config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert generation["bos_token_id"] == config["bos_token_id"] == 0
    assert generation["eos_token_id"] == config["eos_token_id"] == 1
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tokenizer_config["add_bos_token"], tokenizer_config["add_eos_token"]) == (True, False)


def test_the_baseline_of_a_member_is_exported_with_baseline(run: RunDir, tmp_path: Path) -> None:
    code, output = invoke(str(run.root), "s", "--hf", str(tmp_path / "s-baseline"), "--baseline")
    assert code == 0, output
    assert "exported s (baseline)" in output
    assert "trained from scratch (the independent baseline)" in (tmp_path / "s-baseline" / "README.md").read_text()
    sidecar = json.loads((tmp_path / "s-baseline" / SIDECAR_FILE).read_text())
    assert sidecar["step"] == "baseline-s" and sidecar["source"]["checkpoint"] == "baselines/s"


# --- refusals -------------------------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_directory_is_refused(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "missing"):
        code, output = invoke(str(folder), "xs", "--hf", str(tmp_path / "out"))
        assert code == 1 and "is not a familyc run directory (no state.json)" in output
    assert not (tmp_path / "out").exists()


def test_an_unknown_member_is_a_usage_error_with_a_guess(run: RunDir, tmp_path: Path) -> None:
    code, output = invoke(str(run.root), "xss", "--hf", str(tmp_path / "out"))
    assert code == 2 and "family tiny has no member 'xss'" in output and "did you mean 'xs'?" in output


def test_a_member_not_trained_yet_is_refused_with_its_step(run: RunDir, tmp_path: Path) -> None:
    code, output = invoke(str(run.root), "xs", "--hf", str(tmp_path / "out"), "--baseline")
    assert code == 1 and "xs is not trained yet: step baseline-xs is pending" in output
    assert "--baselines" in output and not (tmp_path / "out").exists()


def test_an_existing_destination_is_left_untouched(run: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, output = invoke(str(run.root), "xs", "--hf", str(out))
    assert code == 1 and "already exists" in output
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_an_unknown_dtype_is_a_usage_error(run: RunDir, tmp_path: Path) -> None:
    code, output = invoke(str(run.root), "xs", "--hf", str(tmp_path / "out"), "--dtype", "float16")
    assert code == 2 and not (tmp_path / "out").exists()


def test_a_corrupt_or_foreign_checkpoint_is_refused_and_nothing_is_written(run: RunDir, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy)
    data = copy / "members" / "xs" / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    code, output = invoke(str(copy), "xs", "--hf", str(tmp_path / "out"))
    assert code == 1 and "__0_0.distcp: sha256" in output and "differs from the sidecar" in output
    # s's folder holding xs's weights (with a sidecar that matches them): the shapes are wrong
    shutil.rmtree(copy / "members" / "s")
    shutil.copytree(run.root / "members" / "xs", copy / "members" / "s")
    code, output = invoke(str(copy), "s", "--hf", str(tmp_path / "out"))
    assert code == 1 and "missing key 'layers.2.attention.wq.weight'" in output
    shutil.rmtree(copy / "members" / "m")
    code, output = invoke(str(copy), "m", "--hf", str(tmp_path / "out"))
    assert code == 1 and "members/m: missing, although" in output and "train-m is completed" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no output, no temporary folder
