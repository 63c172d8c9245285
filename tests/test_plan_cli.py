"""familyc plan / show / diff / schema through the CLI: plan files, their checks, rendered goldens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SPECS, assert_golden, tiny_data
from typer.testing import CliRunner

from familyc.cli import app
from familyc.plan import ir
from familyc.spec.schema import check_schema_itself, schema

GOLDEN = REPO / "tests" / "fixtures" / "render"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_checked_in_plans_are_up_to_date(in_repo: Path, spec: str) -> None:
    """The CI gate: every spec has its plan in plans/, exactly as `familyc plan` writes it now."""
    plan_file = f"plans/{spec.removesuffix('.yaml')}.plan.json"
    code, output = invoke("plan", f"specs/{spec}", "--check", plan_file)
    assert code == 0, output
    assert "up to date" in output


def test_plan_writes_identical_bytes_twice(in_repo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        assert invoke("plan", "specs/llama_1b_8b.yaml", "-o", str(out))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    code, printed = invoke("plan", "specs/llama_1b_8b.yaml", "--format", "json")
    assert code == 0 and printed == a.read_text()
    assert "timestamp" not in printed and str(REPO) not in printed


def test_json_contract(in_repo: Path) -> None:
    code, printed = invoke("plan", "specs/llama_1b_8b.yaml", "--format", "json")
    doc = json.loads(printed)
    assert {"schema_version", "plan_id", "spec", "members", "steps", "baseline", "totals"} <= set(doc)
    assert set(doc["spec"]) >= {"path", "sha256"}
    member_keys = {"name", "params", "non_embedding_params", "flops_per_token", "dim", "n_layers", "n_heads",
                   "n_kv_heads", "ffn_dim", "vocab_size", "seq_len"}
    assert all(member_keys <= set(m) for m in doc["members"])
    step_keys = {"id", "kind", "member", "source", "tokens", "flops", "max_lr", "num_steps", "predicted_seconds"}
    fpt = {m["name"]: m["flops_per_token"] for m in doc["members"]}
    for step in doc["steps"]:
        assert step["kind"] in ("train", "expand")
        if step["kind"] == "train":
            assert step_keys <= set(step)
            assert step["flops"] == step["tokens"] * fpt[step["member"]]
        else:
            assert step["source"] and step["flops"] == 0
    assert all({"name", "tokens", "flops"} <= set(m) for m in doc["baseline"]["members"])
    assert doc["baseline"]["flops"] == sum(m["flops"] for m in doc["baseline"]["members"])
    assert {"progressive_flops", "independent_flops", "savings_fraction", "predicted_gpu_hours",
            "predicted_cost_usd"} <= set(doc["totals"])


def test_check_catches_a_stale_plan(in_repo: Path, tmp_path: Path) -> None:
    stale = tmp_path / "tiny.plan.json"
    data = tiny_data()
    data["lr"]["power_law"]["reference_lr"] = 1e-3
    changed = tmp_path / "tiny.yaml"
    changed.write_text(yaml.safe_dump(data))
    assert invoke("plan", str(changed), "-o", str(stale))[0] == 0
    code, output = invoke("plan", "specs/tiny.yaml", "--check", str(stale))
    assert code == 1
    assert "is stale" in output and "regenerate it: familyc plan specs/tiny.yaml -o" in output
    assert "max_lr" in output  # the diff of what changed is shown


def test_show_refuses_an_edited_plan(in_repo: Path, tmp_path: Path) -> None:
    text = (REPO / "plans" / "tiny.plan.json").read_text()
    edited = tmp_path / "edited.plan.json"
    edited.write_text(text.replace('"mfu": 0.78', '"mfu": 0.9'))
    code, output = invoke("show", str(edited))
    assert code == 1 and "does not match its content" in output
    (tmp_path / "junk.json").write_text("{not json")
    code, output = invoke("show", str(tmp_path / "junk.json"))
    assert code == 1 and "not a JSON plan file" in output


def test_plan_round_trips_through_its_file() -> None:
    text = (REPO / "plans" / "llama_1b_8b.plan.json").read_text()
    plan = ir.loads(text)
    assert ir.dumps(plan) == text


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("plan", str(tmp_path / "missing.yaml"))[0] == 2
    assert invoke("validate", str(tmp_path))[0] == 2
    assert invoke("plan")[0] == 2
    assert invoke("show", str(tmp_path / "missing.json"))[0] == 2


def test_schema_command_prints_the_shipped_schema() -> None:
    code, printed = invoke("schema")
    assert code == 0 and json.loads(printed) == schema()
    check_schema_itself()


def test_schema_quantity_patterns_match_the_parser() -> None:
    from familyc.spec.quantity import COUNT_PATTERN, NUMBER_PATTERN

    defs = schema()["$defs"]
    assert defs["count"]["anyOf"][1]["pattern"] == COUNT_PATTERN
    assert defs["positiveNumber"]["anyOf"][1]["pattern"] == NUMBER_PATTERN


@pytest.mark.parametrize("fmt, suffix", [("text", "txt"), ("markdown", "md")])
def test_rendered_plan_golden(in_repo: Path, fmt: str, suffix: str) -> None:
    code, output = invoke("show", "plans/tiny.plan.json", "--format", fmt)
    assert code == 0
    assert_golden(GOLDEN / f"tiny.plan.{suffix}", output)


def test_diff_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the new plan records its spec as `tiny-changed.yaml`, wherever tmp_path is
    old_plan = str(REPO / "plans" / "tiny.plan.json")
    data = yaml.safe_load((SPECS / "tiny.yaml").read_text())
    data["lr"]["power_law"]["exponent"] = -0.5
    data["members"][3]["n_layers"] = 12
    data["cluster"]["mfu"] = 0.25
    Path("tiny-changed.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert invoke("plan", "tiny-changed.yaml", "-o", "new.plan.json")[0] == 0
    code, output = invoke("diff", old_plan, "new.plan.json", "--format", "markdown")
    assert code == 0
    assert "train-l" in output and "n_layers" in output and "+" in output
    assert_golden(GOLDEN / "tiny.diff.md", output)
    code, output = invoke("diff", old_plan, "new.plan.json", "--format", "json")
    doc = json.loads(output)
    changed = {s["id"]: s for s in doc["steps"]}
    assert changed["train-l"]["deltas"]["flops"] > 0
    code, output = invoke("diff", old_plan, old_plan)
    assert code == 0 and "no changes" in output
