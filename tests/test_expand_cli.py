"""`familyc expand SPEC FROM TO --src --dst [--verify]`: the command, its sidecar and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchtitan.models.llama3", reason="--verify builds torchtitan's model")

from conftest import REPO  # noqa: E402

from familyc.backend.keys import model_keys  # noqa: E402
from familyc.backend.model import build_model, plan_model_args  # noqa: E402
from familyc.checkpoint.reader import load_state_dict  # noqa: E402
from familyc.checkpoint.sidecar import EXPANSION_SIDECAR as SIDECAR_FILE  # noqa: E402
from familyc.checkpoint.sidecar import Sidecar, verify_sidecar  # noqa: E402
from familyc.checkpoint.writer import TensorRecipe, write_checkpoint  # noqa: E402
from familyc.cli import app  # noqa: E402
from familyc.plan.ir import loads  # noqa: E402

SPEC = str(REPO / "specs" / "tiny.yaml")
PLAN = loads((REPO / "plans" / "tiny.plan.json").read_text())
runner = CliRunner()


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    items = [TensorRecipe(key=k, shape=tuple(v.shape), sources=(k,), compute=lambda get, k=k: get(k))
             for k, v in state.items()]
    write_checkpoint(path, items, state.__getitem__,
                     sidecar=Sidecar(kind="member", member="xs", shape=PLAN.shape("xs")))
    return path


@pytest.fixture(scope="module")
def xs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An xs checkpoint with torchtitan's initialisation and perturbed norms (so copying them matters)."""
    model = build_model(plan_model_args(PLAN, "xs"), seed=1)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if key.endswith("norm.weight"):
            value.add_(0.1 * torch.randn(value.shape, generator=torch.Generator().manual_seed(len(key))))
    return save(state, tmp_path_factory.mktemp("xs") / "xs")


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["expand", SPEC, *args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_expand_writes_the_next_members_weights_and_verifies(xs: Path, tmp_path: Path) -> None:
    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(tmp_path / "s"), "--verify")
    assert code == 0, output
    assert "expanded xs -> s (none + zero_insert, exact)" in output
    assert f"writing {tmp_path / 's'}: " in output  # progress (plain lines: not a terminal), before the result
    assert "verify xs -> s: max |delta logit|" in output
    assert verify_sidecar(tmp_path / "s") == []
    sidecar = json.loads((tmp_path / "s" / SIDECAR_FILE).read_text())
    assert sidecar["plan_id"] == PLAN.plan_id and sidecar["growth"]["exactness"] == "exact"
    assert sidecar["source"]["shape"]["n_layers"] == 2 and sidecar["shape"]["n_layers"] == 4
    assert sidecar["growth"]["width"] == "none" and sidecar["growth"]["depth"] == "zero_insert"
    assert sidecar["growth"]["seed"] == 0
    grown = load_state_dict(tmp_path / "s")
    assert float(grown["layers.1.attention.wo.weight"].abs().sum()) == 0.0  # a zero-inserted block
    assert {k: tuple(v.shape) for k, v in grown.items()} == model_keys(PLAN.shape("s"))


def test_operators_can_be_overridden_and_a_false_exact_claim_fails_verify(xs: Path, tmp_path: Path) -> None:
    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(tmp_path / "stack"), "--depth", "stack",
                          "--verify")
    assert code == 0, output  # stack is declared approximate: verify reports, does not fail
    assert "(none + stack, approximate)" in output and "mean KL(source || target)" in output
    kl = float(output.split("mean KL(source || target) = ")[1].split()[0])
    assert kl > 0


def test_a_width_growth_the_spec_does_not_plan_is_verified_at_the_eps_it_needs(xs: Path, tmp_path: Path) -> None:
    """xs -> m with the split operator (the tiny spec grows m from s with zero, so the plan's m has half the
    architecture's eps): exact, but only at the eps split needs (its copies keep the RMS: scale 2 x 64/128 = 1),
    which verify uses and a note names."""
    code, output = invoke("xs", "m", "--src", str(xs), "--dst", str(tmp_path / "m"), "--width", "split",
                          "--depth", "zero_insert", "--verify")
    assert code == 0, output
    assert "(split + zero_insert, exact)" in output
    assert "note: these weights compute xs's function with norm eps 1e-05; the plan's m has 5e-06" in output
    assert float(output.split("max |delta logit| = ")[1].split(",")[0]) <= 1e-4


def test_refusals_name_the_file_and_exit_1(xs: Path, tmp_path: Path) -> None:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(existing))
    assert code == 1 and "already exists" in output and str(existing) in output
    assert (existing / "keep.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1

    code, output = invoke("xs", "s", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "d1"))
    assert code == 1 and "missing" in output and not (tmp_path / "d1").exists()

    code, output = invoke("s", "m", "--src", str(xs), "--dst", str(tmp_path / "d2"))  # an xs checkpoint is not s
    assert code == 1 and "layers." in output and not (tmp_path / "d2").exists()

    truncated = tmp_path / "truncated"
    save(load_state_dict(xs), truncated)
    data = truncated / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    code, output = invoke("xs", "s", "--src", str(truncated), "--dst", str(tmp_path / "d3"))
    assert code == 1 and "truncated" in output and "__0_0.distcp" in output and not (tmp_path / "d3").exists()

    wrong_dtype = {k: v.to(torch.float16) if k == "norm.weight" else v for k, v in load_state_dict(xs).items()}
    code, output = invoke("xs", "s", "--src", str(save(wrong_dtype, tmp_path / "f16")), "--dst", str(tmp_path / "d4"))
    assert code == 1 and "norm.weight" in output and "dtype" in output


def test_usage_errors_exit_2(xs: Path, tmp_path: Path) -> None:
    code, output = invoke("xss", "s", "--src", str(xs), "--dst", str(tmp_path / "d"))
    assert code == 2 and "did you mean 'xs'?" in output
    code, output = invoke("xs", "m", "--src", str(xs), "--dst", str(tmp_path / "d"))
    assert code == 2 and "does not grow m from xs (it grows it from s)" in output
    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(tmp_path / "d"), "--width", "wide")
    assert code == 2 and "--width 'wide'" in output
    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(tmp_path / "d"), "--optimizer", "keep")
    assert code == 2 and "--optimizer 'keep' is not one of fresh, carry" in output


def test_carry_grows_the_sources_adam_moments_into_the_outputs_optimizer_folder(xs: Path, tmp_path: Path) -> None:
    """--optimizer carry: the moments a carrying stage saved beside its weights go through the growth's maps (the
    recipes apply uses), into dst/optimizer; nothing is left beside dst. Without them: refused, nothing written."""
    from familyc.backend.moments import moment_key
    from familyc.checkpoint import OPTIMIZER_FOLDER
    from familyc.expand.moments import MomentRecipes

    generator = torch.Generator().manual_seed(4)
    moments: dict[str, torch.Tensor] = {}
    for fqn, dims in model_keys(PLAN.shape("xs")).items():
        moments[moment_key(fqn, "exp_avg")] = torch.randn(dims, generator=generator)
        moments[moment_key(fqn, "exp_avg_sq")] = torch.rand(dims, generator=generator)
        moments[moment_key(fqn, "step")] = torch.tensor(42.0)
    source = tmp_path / "xs-carry"
    save(load_state_dict(xs), source)
    items = [TensorRecipe(key=k, shape=tuple(v.shape), sources=(k,), compute=lambda get, k=k: get(k))
             for k, v in moments.items()]
    write_checkpoint(source / OPTIMIZER_FOLDER, items, moments.__getitem__, sidecar=None)

    code, output = invoke("xs", "s", "--src", str(source), "--dst", str(tmp_path / "s"), "--optimizer", "carry")
    assert code == 0, output
    assert "expanded xs -> s (none + zero_insert, exact, optimizer moments carried)" in output
    grown = load_state_dict(tmp_path / "s" / OPTIMIZER_FOLDER)
    recipes = MomentRecipes(PLAN.shape("xs"), PLAN.shape("s"), width="none", depth="zero_insert", seed=0)
    expected = {t.key: t.compute(moments.__getitem__) for t in recipes.targets(torch.float32)}
    assert set(grown) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(grown[key], value, msg=key)
    assert verify_sidecar(tmp_path / "s") == []  # the moments are among the files the sidecar hashes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "xs-carry"]

    code, output = invoke("xs", "s", "--src", str(xs), "--dst", str(tmp_path / "none"), "--optimizer", "carry")
    assert code == 1 and f"{xs / OPTIMIZER_FOLDER}: missing" in output and "--optimizer fresh" in output
    assert not (tmp_path / "none").exists()
