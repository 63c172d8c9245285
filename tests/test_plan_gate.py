"""The PR gate: scripts/plan_gate.sh, run for real in a scratch git repository, and the files that call it.

GitHub Actions cannot run here, so the workflow and the pre-commit hook are checked as data: they call the
script, with the options the README documents. The script itself runs in a temporary repository holding two
specs and the plans the current familyc writes for them (written by the test, never copied from plans/: the
checked-in plans may be regenerated under another change). Nothing here depends on a plan id or a predicted
time: the assertions read names, commands and the diff's own fields.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SCRIPT = REPO / "scripts" / "plan_gate.sh"
WORKFLOW = REPO / ".github" / "workflows" / "familyc-plans.yml"
HOOKS = REPO / ".pre-commit-hooks.yaml"
FAMILYC = str(Path(sys.executable).with_name("familyc"))
SPECS = {"tiny": REPO / "specs" / "tiny.yaml",
         "single": REPO / "tests" / "fixtures" / "specs" / "valid" / "single_member.yaml"}
REGENERATE = "familyc plan specs/tiny.yaml -o plans/tiny.plan.json"

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                                reason="the gate needs git and bash")


# --- the files that call the script -----------------------------------------------------------------

def test_the_workflow_runs_the_gate_on_pull_requests() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0, "the gate reads the base branch's plans"
    python = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    runs = [s.get("run", "") for s in steps]
    install = next(r for r in runs if "pip install" in r)
    assert install.strip() == "pip install -e .", "the planning-only install: no torch"
    gate = next(s for s in steps if "scripts/plan_gate.sh" in s.get("run", ""))
    assert gate["run"].split() == ["scripts/plan_gate.sh", "--base", '"origin/${{', 'github.base_ref', '}}"',
                                   "--comment", "comment.md"]
    assert not gate.get("continue-on-error"), "a stale plan must fail the job"
    post = steps[steps.index(gate) + 1]
    assert "always()" in post["if"], "the comment is posted when the gate fails too"
    assert "gh pr comment" in post["run"] and "--body-file comment.md" in post["run"]
    assert job.get("permissions", workflow.get("permissions", {})).get("pull-requests") == "write"


def test_the_pre_commit_hook_runs_the_gate_without_a_base() -> None:
    (hook,) = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    assert hook["id"] == "familyc-plan-check"
    assert hook["entry"] == "scripts/plan_gate.sh"
    assert hook["language"] == "script" and hook["pass_filenames"] is False


def test_the_script_is_executable_in_git() -> None:
    listed = subprocess.run(["git", "ls-files", "-s", "scripts/plan_gate.sh"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    assert os.access(SCRIPT, os.X_OK)
    assert not listed or listed.startswith("100755"), listed


# --- the script, in a scratch repository ------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def familyc(repo: Path, *args: str) -> None:
    subprocess.run([FAMILYC, *args], cwd=repo, capture_output=True, text=True, check=True)


def gate(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FAMILYC": FAMILYC, "COLUMNS": "160"})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed repository with specs/{tiny,single}.yaml and their plans, as familyc writes them now."""
    repo = tmp_path_factory.mktemp("gate") / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "plans").mkdir()
    for name, spec in SPECS.items():
        shutil.copy(spec, repo / "specs" / f"{name}.yaml")
        familyc(repo, "plan", f"specs/{name}.yaml", "-o", f"plans/{name}.plan.json")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "plans")
    return repo


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "repo"
    shutil.copytree(template, copy)
    yield copy


def change_tiny_mfu(repo: Path) -> None:
    spec = repo / "specs" / "tiny.yaml"
    text = spec.read_text(encoding="utf-8")
    assert "mfu: 0.78" in text
    spec.write_text(text.replace("mfu: 0.78", "mfu: 0.25"), encoding="utf-8")


def test_a_clean_tree_passes_and_says_nothing_changed(repo: Path) -> None:
    result = gate(repo, "--base", "main", "--comment", "comment.md")
    assert result.returncode == 0, result.stderr
    assert "plans/tiny.plan.json: up to date" in result.stdout
    assert "plans/single.plan.json: up to date" in result.stdout
    assert "plan_gate: 2 plan(s) up to date" in result.stdout
    assert "No plan changes against `main`" in (repo / "comment.md").read_text(encoding="utf-8")


def test_a_changed_spec_fails_until_its_plan_is_regenerated(repo: Path) -> None:
    change_tiny_mfu(repo)
    stale = gate(repo, "--base", "main", "--comment", "comment.md")
    assert stale.returncode == 1
    assert f"plans/tiny.plan.json (stale): regenerate it with: {REGENERATE}" in stale.stderr
    assert "plans/single.plan.json: up to date" in stale.stdout
    comment = (repo / "comment.md").read_text(encoding="utf-8")
    assert "**The gate fails: 1 checked-in plan(s)" in comment
    assert f"`{REGENERATE}`" in comment
    assert "- cluster.mfu: 0.78 -> 0.25" in comment, "the diff against what the spec compiles to now"

    familyc(repo, "plan", "specs/tiny.yaml", "-o", "plans/tiny.plan.json")
    fresh = gate(repo, "--base", "main", "--comment", "comment.md")
    assert fresh.returncode == 0, fresh.stderr
    comment = (repo / "comment.md").read_text(encoding="utf-8")
    assert comment.startswith("<!-- familyc-plan-gate -->\n## familyc plans\n\n1 spec(s) change their plan against "
                              "`main`")
    assert "The gate fails" not in comment
    body = comment.split("**`specs/tiny.yaml`**\n\n", 1)[1]
    assert body.startswith("### plan "), "familyc diff --format markdown's own heading"
    assert "- cluster.mfu: 0.78 -> 0.25" in body and "**Totals**" in body
    assert "specs/single.yaml" not in comment, "an unchanged plan is not in the comment"


def test_a_new_spec_and_a_removed_one(repo: Path) -> None:
    shutil.copy(repo / "specs" / "single.yaml", repo / "specs" / "other.yaml")
    missing = gate(repo)
    assert missing.returncode == 1
    assert ("plans/other.plan.json (missing): create it with: familyc plan specs/other.yaml -o "
            "plans/other.plan.json") in missing.stderr
    familyc(repo, "plan", "specs/other.yaml", "-o", "plans/other.plan.json")
    (repo / "specs" / "single.yaml").unlink()
    (repo / "plans" / "single.plan.json").unlink()
    result = gate(repo, "--base", "main", "--comment", "comment.md")
    assert result.returncode == 0, result.stderr
    comment = (repo / "comment.md").read_text(encoding="utf-8")
    assert "**`specs/other.yaml`**\n\nA new spec: main has no `plans/other.plan.json`." in comment
    assert "**`specs/single.yaml`**\n\nRemoved: main had it (`plans/single.plan.json`)." in comment


def test_a_spec_that_does_not_compile_fails(repo: Path) -> None:
    (repo / "specs" / "single.yaml").write_text("version: 1\nfamily: {name: broken}\n", encoding="utf-8")
    result = gate(repo)
    assert result.returncode == 1
    assert ("plans/single.plan.json (its spec does not compile): fix what this reports, then regenerate the plan: "
            "familyc validate specs/single.yaml") in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--base", "no-such-ref"], "git does not know the base no-such-ref"),
    (["--comment", "c.md"], "--comment needs --base"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_usage_errors_exit_2(repo: Path, args: list[str], message: str) -> None:
    result = gate(repo, *args)
    assert result.returncode == 2
    assert message in result.stderr
