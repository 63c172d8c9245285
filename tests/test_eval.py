"""`familyc eval RUN_DIR`: lm-eval on the members' Hugging Face exports, offline, against torchtitan's own forward.

The run directory is made without training, as tests/test_export.py makes it (torchtitan's initialisation with
every weight perturbed, written as `familyc apply` leaves it): xs and s trained, s's baseline too. The tasks are
local: YAML definitions in a temporary include path on local JSON-lines data (`dataset_path: json`), one of
log-likelihood requests, one multiple choice. Each request's log-likelihood that lm-eval logged (HFLM on the
export, transformers' Llama) is computed again with torchtitan's model on the member's DCP weights, tokenized
with the run's tokenizer as lm-eval tokenizes (BOS, context, then the rest of the whole string).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets and transformers are imported: nothing downloads
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval", reason="familyc eval needs the eval extra")
pytest.importorskip("transformers", reason="familyc eval needs the eval extra")

from test_export import PLAN, make_run, perturbed_state, promote  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from familyc.backend.evaluate import load_member  # noqa: E402
from familyc.backend.model import forward_logits  # noqa: E402
from familyc.checkpoint.sidecar import EXPORT_SIDECAR  # noqa: E402
from familyc.cli import app  # noqa: E402
from familyc.cli.eval_command import DEFAULT_TASKS  # noqa: E402
from familyc.execute.data import run_tokenizer_dir  # noqa: E402
from familyc.execute.rundir import RunDir  # noqa: E402
from familyc.files import sha256_file  # noqa: E402
from familyc.report.downstream import RESULTS_SCHEMA_VERSION  # noqa: E402

TOLERANCE = 1e-4
TASKS = ("familyc_loglik", "familyc_choice")
MODELS = {"xs": ("xs", False), "s": ("s", False), "s-baseline": ("s", True)}
runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline even if another test imported datasets before the variables above were set."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def write_tasks(folder: Path) -> Path:
    """Two lm-eval tasks on local data: log-likelihoods of continuations, and three-way multiple choice."""
    folder.mkdir(parents=True)
    names = ["alpha", "beta", "gamma", "delta", "naïve", "café"]
    loglik = [{"context": f"def {names[i % 6]}_{i}(x, y):\n    \"\"\"Return the sum of x and y.\"\"\"\n    return"
               + (" " if i % 3 == 0 else ""),  # a trailing space: lm-eval moves it into the continuation
               "continuation": ("x + y" if i % 3 == 0 else f" x + {i}")} for i in range(24)]
    choice = [{"question": f"What does {names[i % 6]}({i}, {i + 1}) return?",
               "choices": [f"{2 * i + 1}", f"the string {names[(i + 1) % 6]!r}", "None"], "label": i % 3}
              for i in range(24)]
    for name, rows in (("loglik", loglik), ("choice", choice)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "loglik.yaml").write_text(
        "task: familyc_loglik\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'loglik.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood\ndoc_to_text: \"{{context}}\"\n"
        "doc_to_target: \"{{continuation}}\"\ntarget_delimiter: \"\"\nmetric_list:\n  - metric: perplexity\n"
        "  - metric: acc\n", encoding="utf-8")
    (folder / "choice.yaml").write_text(
        "task: familyc_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'choice.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
        "  - metric: acc_norm\n", encoding="utf-8")
    return folder


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_run(tmp_path_factory.mktemp("run") / "tiny", {"train-xs": 0, "train-s": 1, "baseline-s": 7})


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("tasks") / "local")


@pytest.fixture(scope="module")
def evaluated(run: RunDir, tasks: Path) -> tuple[dict[str, Any], str]:
    """`familyc eval` once over the whole run: (results.json, the command's output)."""
    code, output = invoke("eval", str(run.root), "--tasks", ",".join(TASKS), "--include-path", str(tasks),
                          "--batch-size", "4")
    assert code == 0, output
    return json.loads((run.root / "eval" / "results.json").read_text()), output


def samples(run: RunDir, label: str, task: str) -> list[dict[str, Any]]:
    path = run.root / "eval" / "samples" / label / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def torchtitan_loglikelihoods(run: RunDir, member: str, baseline: bool,
                              requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """sum log p(continuation | context) and whether the continuation is greedy, by torchtitan's forward on the
    member's DCP weights, tokenized as lm-eval's HFLM does (trailing spaces of the context belong to the
    continuation; BOS first; the continuation's tokens are those of the whole string after the context's)."""
    from tokenizers import Tokenizer

    folder = run_tokenizer_dir(PLAN, run)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = tokenizer.token_to_id(json.loads((folder / "tokenizer_config.json").read_text())["bos_token"])
    model = load_member(PLAN, member, run.root / ("baselines" if baseline else "members") / member)
    out = []
    for context, continuation in requests:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = [bos, *tokenizer.encode(context, add_special_tokens=False).ids]
        whole = [bos, *tokenizer.encode(context + continuation, add_special_tokens=False).ids]
        target = whole[len(context_ids):]
        assert target, (context, continuation)
        logits = forward_logits(model, torch.tensor(whole[:-1]))[0]
        log_probs = torch.log_softmax(logits[-len(target):].double(), dim=-1)
        chosen = log_probs[torch.arange(len(target)), torch.tensor(target)]
        out.append((float(chosen.sum()), bool((log_probs.argmax(-1) == torch.tensor(target)).all())))
    return out


# --- what lm-eval computed ------------------------------------------------------------------------

@pytest.mark.parametrize("label", MODELS)
def test_lm_evals_loglikelihoods_are_torchtitans(label: str, run: RunDir,
                                                 evaluated: tuple[dict[str, Any], str]) -> None:
    member, baseline = MODELS[label]
    worst = 0.0
    for task in TASKS:
        logged = samples(run, label, task)
        assert len(logged) == 24
        requests = [tuple(args) for s in logged for args in s["arguments"]]
        responses = [tuple(r) for s in logged for r in s["responses"]]
        expected = torchtitan_loglikelihoods(run, member, baseline, requests)  # type: ignore[arg-type]
        for (got, got_greedy), (want, want_greedy) in zip(responses, expected, strict=True):
            worst = max(worst, abs(got - want))
            assert got_greedy == want_greedy
        if task == "familyc_choice":  # lm-eval's accuracy is the argmax of these log-likelihoods
            hits, start = [], 0
            for s in logged:
                choices = [want for want, _ in expected[start:start + len(s["arguments"])]]
                start += len(s["arguments"])
                hits.append(choices.index(max(choices)) == s["target"])
            result = evaluated[0]["baselines" if baseline else "members"][member]["tasks"][task]
            assert result["metrics"]["acc"]["value"] == pytest.approx(sum(hits) / len(hits))
    assert worst <= TOLERANCE, f"{label}: max |delta log-likelihood| {worst:.3g}"
    print(f"{label}: max |lm-eval - torchtitan| log-likelihood {worst:.2e}")


def test_results_file_names_versions_metrics_and_exports(run: RunDir, evaluated: tuple[dict[str, Any], str]) -> None:
    import lm_eval

    results, output = evaluated
    assert results["schema_version"] == RESULTS_SCHEMA_VERSION and results["plan_id"] == PLAN.plan_id
    assert results["lm_eval_version"] == lm_eval.__version__ and (results["device"], results["dtype"]) == \
        ("cpu", "float32")
    assert results["tasks"] == sorted(TASKS)
    assert sorted(results["members"]) == ["s", "xs"] and sorted(results["baselines"]) == ["s"]
    for label, (member, baseline) in MODELS.items():
        model = results["baselines" if baseline else "members"][member]
        assert model["export"]["path"] == f"eval/exports/{label}"
        assert model["export"]["sidecar_sha256"] == sha256_file(run.root / "eval" / "exports" / label / EXPORT_SIDECAR)
        loglik, choice = model["tasks"]["familyc_loglik"], model["tasks"]["familyc_choice"]
        assert set(loglik["metrics"]) == {"perplexity", "acc"} and set(choice["metrics"]) == {"acc", "acc_norm"}
        errors = [m["stderr"] for t in (loglik, choice) for m in t["metrics"].values()]
        assert all(e is not None and e >= 0 for e in errors)
        assert (choice["num_samples"], choice["num_fewshot"], choice["output_type"]) == (24, 0, "multiple_choice")
    lines = [line for line in output.splitlines() if line.startswith("[")]
    assert lines == ["[1/3] eval xs: 2 tasks...", "[2/3] eval s: 2 tasks...", "[3/3] eval s (baseline): 2 tasks..."]
    assert "exported s (baseline) -> eval/exports/s-baseline" in output
    assert "it/s" not in output  # lm-eval's progress bars are not shown


def test_a_second_eval_reuses_the_exports_and_keeps_other_tasks(run: RunDir, tasks: Path,
                                                                evaluated: tuple[dict[str, Any], str]) -> None:
    before = (run.root / "eval" / "exports" / "xs" / "model.safetensors").stat().st_mtime_ns
    code, output = invoke("eval", str(run.root), "--tasks", "familyc_choice", "--include-path", str(tasks),
                          "--limit", "6", "--no-baselines")
    assert code == 0, output
    assert "exported" not in output and "[2/2] eval s: 1 task..." in output
    assert (run.root / "eval" / "exports" / "xs" / "model.safetensors").stat().st_mtime_ns == before
    results = json.loads((run.root / "eval" / "results.json").read_text())
    xs = results["members"]["xs"]["tasks"]
    assert (xs["familyc_choice"]["num_samples"], xs["familyc_choice"]["limit"]) == (6, 6)
    assert xs["familyc_loglik"] == evaluated[0]["members"]["xs"]["tasks"]["familyc_loglik"]
    assert results["baselines"] == evaluated[0]["baselines"]


# --- the report ---------------------------------------------------------------------------------

def test_the_report_shows_both_families_and_leaves_out_stale_results(run: RunDir, tmp_path: Path,
                                                                      evaluated: tuple[dict[str, Any], str]) -> None:
    code, text = invoke("report", str(run.root), "--no-eval", "-o", str(tmp_path / "report"))
    assert code == 0, text
    assert "Downstream evaluation" in text and "familyc_loglik" in text
    results = json.loads((run.root / "eval" / "results.json").read_text())
    code, body = invoke("report", str(run.root), "--no-eval", "--format", "json", "-o", str(tmp_path / "report"))
    downstream = json.loads(body)["downstream"]
    assert downstream["lm_eval_version"] == results["lm_eval_version"] and downstream["stale"] == []
    rows = {(r["member"], r["task"], r["metric"]): r for r in downstream["rows"]}
    assert rows[("s", "familyc_loglik", "perplexity")]["progressive"] == \
        results["members"]["s"]["tasks"]["familyc_loglik"]["metrics"]["perplexity"]
    assert rows[("s", "familyc_loglik", "perplexity")]["independent"] == \
        results["baselines"]["s"]["tasks"]["familyc_loglik"]["metrics"]["perplexity"]
    assert rows[("xs", "familyc_choice", "acc")]["independent"] is None  # xs has no baseline in this run
    assert (tmp_path / "report" / "downstream.png").is_file()
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Downstream evaluation" in html and "id='figure-downstream'" in html
    assert "Downstream evaluation" in (tmp_path / "report" / "report.md").read_text()

    shutil.rmtree(run.root / "members" / "xs")  # xs trained again, after familyc eval
    promote(run.root / "members" / "xs", perturbed_state("xs", 11), "train-xs", "xs")
    code, body = invoke("report", str(run.root), "--no-eval", "--format", "json", "-o", str(tmp_path / "again"))
    downstream = json.loads(body)["downstream"]
    assert downstream["stale"] == ["xs"] and not any(r["member"] == "xs" for r in downstream["rows"])
    assert any("xs" in m and "familyc eval" in m for m in json.loads(body)["missing"])


# --- refusals -----------------------------------------------------------------------------------

def test_a_task_whose_data_is_not_cached_offline_is_refused_by_name(run: RunDir, tmp_path: Path) -> None:
    folder = tmp_path / "hub-tasks"
    folder.mkdir()
    (folder / "hub.yaml").write_text("task: familyc_hub_only\ndataset_path: familyc-tests/never-downloaded\n"
                                     "test_split: test\noutput_type: loglikelihood\ndoc_to_text: \"{{a}}\"\n"
                                     "doc_to_target: \"{{b}}\"\n", encoding="utf-8")
    code, output = invoke("eval", str(run.root), "--tasks", "familyc_hub_only", "--include-path", str(folder))
    assert code == 1, output
    first, *rest = output.splitlines()
    assert first.startswith("error: task familyc_hub_only: its data is not in the Hugging Face cache and this "
                            "machine is offline")
    assert len(rest) == 1 and "--include-path" in rest[0] and "dataset_path: json" in rest[0]
    assert "eval xs" not in output  # refused before any model was exported or evaluated


def test_usage_errors(run: RunDir, tmp_path: Path) -> None:
    code, output = invoke("eval", str(run.root), "--tasks", "x", "--include-path", str(tmp_path / "none"))
    assert code == 2 and "not a directory" in output
    code, output = invoke("eval", str(run.root), "--tasks", " , ")
    assert code == 2 and "no task named" in output
    code, output = invoke("eval", str(tmp_path / "nowhere"), "--tasks", "x")
    assert code == 1 and "not a familyc run directory" in output
    assert DEFAULT_TASKS == ("arc_easy", "hellaswag", "piqa", "lambada_openai")


def test_without_the_eval_extra_it_is_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                                        run: RunDir) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    code, output = invoke("eval", str(run.root))
    assert code == 1
    assert output.splitlines()[0] == ("error: familyc eval needs the eval extra (lm_eval is not installed): "
                                      "pip install -e '.[train,eval]' torch==2.13.0")
