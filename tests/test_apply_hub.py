"""The flagship spec applies from a Hugging Face cache: `specs/llama_1b_8b.yaml` with its members rewritten to two
tiny ones (the pair of tests/fixtures/specs-apply/pair.yaml, on 2 CPU ranks), its data and tokenizer sections as
they are: `{hf: allenai/c4, config: en}` and `{hf: meta-llama/Meta-Llama-3-8B}`, found under those names in a hub
cache the test builds in a temporary HF_HOME, with HF_HUB_OFFLINE=1.

The run is killed (SIGKILL of apply's process group) in the middle of the grown member's stage, applied again to
its end, and reported. Every document each stage read is traced (FAMILYC_DATA_TRACE): none is held out. About
two minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")
pytest.importorskip("pyarrow", reason="pyarrow is not installed")

from datafixtures import COMMIT, documents, hub_c4, hub_tokenizer  # noqa: E402
from test_apply import Applied, apply, apply_killed_at, kill_stage_workers  # noqa: E402

from familyc.data import ensure_builtin_assets  # noqa: E402
from familyc.data.builtin import split_of  # noqa: E402
from familyc.files import sha256_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO / "tests" / "fixtures" / "specs-apply" / "pair.yaml"
FLAGSHIP = REPO / "specs" / "llama_1b_8b.yaml"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class HubRun:
    killed: Applied
    final: Applied
    env: dict[str, str]
    train_docs: list[str]
    tokenizer_sha256: str
    trace: Path

    @property
    def run_dir(self) -> Path:
        return self.final.run_dir


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("hub")
    assets = ensure_builtin_assets(root / "assets")
    hf_home = root / "hf"
    snapshot = hub_tokenizer(hf_home, "meta-llama/Meta-Llama-3-8B", assets.tokenizer_dir)
    train_docs = documents(assets.root, "train") + documents(assets.root, "heldout")  # C4's train: all of them
    hub_c4(hf_home, train_docs, documents(assets.root, "heldout")[:50])
    flagship, pair = yaml.safe_load(FLAGSHIP.read_text()), yaml.safe_load(PAIR.read_text())
    spec = {**pair, "family": flagship["family"], "data": flagship["data"], "tokenizer": flagship["tokenizer"]}
    assert spec["data"] == {"dataset": {"hf": "allenai/c4", "config": "en"}}
    assert spec["tokenizer"] == {"hf": "meta-llama/Meta-Llama-3-8B"}
    spec["budget"] = {"rule": "explicit", "tokens": {"xs": 8192, "s": 16384}}  # 4 and 8 steps
    spec_path = root / "llama_1b_8b_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    trace = root / "trace"
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "FAMILYC_DATA_TRACE": str(trace)}
    run_dir = root / "run"
    try:
        killed = apply_killed_at(run_dir, "train-s", 4, spec=str(spec_path), env=env)
        final = apply(run_dir, spec=str(spec_path), env=env)
    finally:
        kill_stage_workers(run_dir)
    return HubRun(killed=killed, final=final, env=env, train_docs=train_docs,
                  tokenizer_sha256=sha256_file(snapshot / "tokenizer.json"), trace=trace)


def test_the_flagship_spec_trains_from_the_hub_cache_and_resumes_after_a_kill(hub_run: HubRun) -> None:
    assert hub_run.killed.returncode != 0 and hub_run.killed.state["steps"]["train-xs"]["status"] == "completed"
    assert hub_run.final.returncode == 0, hub_run.final.output[-4000:]
    assert [hub_run.final.status(s) for s in ("train-xs", "expand-xs-s", "train-s")] == ["completed"] * 3
    log = (hub_run.run_dir / "steps" / "train-s" / "stdout.log").read_text()
    assert log.count("\n=== familyc apply ") == 2, "train-s ran twice: killed, then resumed"
    assert "Loading the checkpoint" in log.split("\n=== familyc apply ")[2]


def test_the_run_records_the_hub_revisions_and_the_tokenizer_digest(hub_run: HubRun) -> None:
    inputs = json.loads((hub_run.run_dir / "inputs.json").read_text())
    assert inputs["tokenizer_source"]["repo"] == "meta-llama/Meta-Llama-3-8B"
    assert inputs["tokenizer_source"]["revision"] == COMMIT
    assert inputs["tokenizer_source"]["sha256"] == hub_run.tokenizer_sha256
    (source,) = inputs["sources"]
    assert source == {"name": "hf:allenai/c4/en", "kind": "hf", "repo": "allenai/c4", "revision": COMMIT,
                      "shards": 2, "heldout_shards": 0, "weight": 1.0}
    assert inputs["loader"] == "familyc"


def test_the_shards_are_read_in_place(hub_run: HubRun) -> None:
    copies = [p for p in hub_run.run_dir.rglob("*") if p.name.endswith(".json.gz") or p.name == "docs.jsonl"
              and "heldout-" not in p.parent.name]
    assert not copies, copies
    manifest = json.loads((hub_run.run_dir / "data.json").read_text())
    shards = manifest["sources"][0]["shards"]
    assert shards and all(s.startswith(f"hf://datasets/allenai/c4@{COMMIT}/en/c4-train.") for s in shards)


def test_no_stage_read_a_heldout_document_and_the_report_has_a_heldout_loss(hub_run: HubRun) -> None:
    heldout = {sha(t) for t in hub_run.train_docs if split_of(t, heldout_fraction=0.05, seed=0) == "heldout"}
    trained = {sha(t) for t in hub_run.train_docs} - heldout
    read = [json.loads(line) for p in sorted(hub_run.trace.parent.glob("trace.rank*.jsonl"))
            for line in p.read_text().splitlines()]
    assert len(read) > 100 and {r["source"] for r in read} == {"hf:allenai/c4/en"}
    assert not {r["sha256"] for r in read} & heldout
    assert {r["sha256"] for r in read} <= trained
    sample = hub_run.run_dir / json.loads((hub_run.run_dir / "inputs.json").read_text())["heldout"]
    in_sample = {sha(json.loads(line)["text"]) for line in (sample / "docs.jsonl").read_text().splitlines()}
    assert in_sample and in_sample <= heldout
    proc = subprocess.run([sys.executable, "-m", "familyc", "report", str(hub_run.run_dir), "--format", "json",
                           "--heldout-tokens", "2048"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, **hub_run.env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert all(m["heldout_loss"] > 0 for m in report["members"]), report["members"]


def test_the_grown_stage_reads_on_where_the_first_one_stopped(hub_run: HubRun) -> None:
    first = json.loads((hub_run.run_dir / "members" / "xs" / "data_position.json").read_text())
    assert first["world_size"] == 2 and len(first["mixture"]) == 2
    assert all(p["tokens"][0] > 0 for p in first["mixture"])
