"""A weighted mix of every kind of source, through what `familyc apply` runs: the inputs resolved and checked
(familyc.execute.data), the manifest and held-out sample written into a run directory, and torchtitan's
tokenizer feeding familyc's loader (familyc.backend.dataset) on two ranks, every document traced.

The sources: a Hugging Face dataset of parquet shards (from a hub cache the test builds, offline), local
jsonl.gz shards, and the builtin corpus. Needs torch and torchtitan (the tokenizer and the loader's base
classes); no stage is started.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.components.tokenizer", reason="torchtitan is not installed")
pytest.importorskip("pyarrow", reason="pyarrow is not installed")

from datafixtures import documents, hub_repo, write_shard  # noqa: E402

from familyc.compiler import compile_spec  # noqa: E402
from familyc.data import ensure_builtin_assets  # noqa: E402
from familyc.data.builtin import split_of  # noqa: E402
from familyc.execute.data import check_inputs, prepare_data  # noqa: E402
from familyc.execute.rundir import RunDir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO / "tests" / "fixtures" / "specs-apply" / "pair.yaml"
WEIGHTS = {"hf:org/web": 2.0, "path:": 1.0, "builtin:stdlib-docstrings": 1.0}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("mix")
    texts = documents(ensure_builtin_assets(root / "texts").root)  # docstrings: short documents, so the mix's
    # shares are near the weights after a few windows (they are within one document of them all along)
    web, code = [f"{t}\n(web page {i})" for i, t in enumerate(texts[:600])], [f"# {t}" for t in texts[600:1200]]
    hf_home = root / "hf"
    snapshot = hub_repo(hf_home, "org/web", kind="dataset")
    for i in range(3):
        write_shard(snapshot / "data" / f"train-{i:05d}-of-00003.parquet", web[i::3])
    for i in range(2):
        write_shard(root / "code" / f"part-{i}.jsonl.gz", code[i::2])
    spec = yaml.safe_load(PAIR.read_text())
    spec["data"] = {"sources": [{"hf": "org/web", "weight": 2}, {"path": str(root / "code"), "weight": 1},
                                {"builtin": "stdlib-docstrings", "weight": 1}], "heldout_fraction": 0.1}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = compile_spec(root / "spec.yaml")
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("FAMILYC_DATA_TRACE", str(root / "trace"))
    try:
        resolved = check_inputs(plan, plan_file=None)
        run = RunDir(root / "run")
        run.root.mkdir()
        inputs = prepare_data(plan, run, plan_file=None, resolved=resolved)
        ranks = [_read(inputs, rank) for rank in range(2)]
        patch.delenv("FAMILYC_DATA_TRACE")
        yield {"root": root, "run": run, "inputs": inputs, "web": web, "code": code, "ranks": ranks}
    finally:
        patch.undo()


def _read(inputs: Any, rank: int, windows: int = 600) -> Any:
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    from familyc.backend.dataset import MixtureDataset

    dataset = MixtureDataset(inputs.dataset_path, HuggingFaceTokenizer(str(inputs.tokenizer_path)), seq_len=256,
                             dp_rank=rank, dp_world_size=2)
    it = iter(dataset)
    for _ in range(windows):
        next(it)
    return dataset


def _traced(root: Path) -> list[dict[str, str]]:
    return [json.loads(line) for p in sorted(root.glob("trace.rank*.jsonl")) for line in p.read_text().splitlines()]


def test_the_mix_draws_tokens_by_weight_from_every_kind_of_source(mix: Any) -> None:
    total = sum(WEIGHTS.values())
    for dataset in mix["ranks"]:
        tokens = dict(zip((s.name for s in dataset.manifest.sources), dataset.mixture.tokens, strict=True))
        drawn = sum(tokens.values())
        shares = {name.split(":")[0]: t / drawn for name, t in tokens.items()}
        assert shares == pytest.approx({"hf": 2 / total, "path": 1 / total, "builtin": 1 / total}, abs=0.02)


def test_no_source_gives_a_heldout_document_to_training(mix: Any) -> None:
    traced = _traced(mix["root"])
    kinds = {r["source"].split(":")[0] for r in traced}
    assert kinds == {"hf", "path", "builtin"}
    heldout = {sha(t) for t in mix["web"] + mix["code"] if split_of(t, heldout_fraction=0.1, seed=0) == "heldout"}
    assets = next(mix["run"].assets.glob("stdlib-docstrings-*"))
    heldout |= {sha(t) for t in documents(assets, "heldout")}
    read = {r["sha256"] for r in traced}
    assert read and not read & heldout
    ranks = [{r["sha256"] for r in _traced_rank(mix["root"], k)} for k in range(2)]
    assert not ranks[0] & ranks[1], "the two ranks read different documents"


def _traced_rank(root: Path, rank: int) -> list[dict[str, str]]:
    return [json.loads(line) for line in (root / f"trace.rank{rank}.jsonl").read_text().splitlines()]


def test_the_heldout_sample_has_every_source_and_the_run_directory_no_copy(mix: Any) -> None:
    sample = mix["inputs"].heldout_path
    rows = [json.loads(line) for line in (sample / "docs.jsonl").read_text().splitlines()]
    assert {r["source"].split(":")[0] for r in rows} == {"hf", "path", "builtin"}
    assert all(split_of(r["text"], heldout_fraction=0.1, seed=0) == "heldout" for r in rows
               if not r["source"].startswith("builtin"))
    shards = [p for p in mix["run"].root.rglob("*") if p.suffix in (".parquet", ".gz")]
    assert not shards
    recorded = json.loads((mix["run"].root / "inputs.json").read_text())
    assert [s["kind"] for s in recorded["sources"]] == ["hf", "path", "builtin"]
    assert recorded["sources"][0]["shards"] == 3 and recorded["sources"][1]["shards"] == 2
    assert recorded["tokenizer_source"]["vocab"] == 2048


def test_a_position_restores_every_source(mix: Any) -> None:
    first = mix["ranks"][0]
    state = json.loads(json.dumps(first.state_dict()))
    again = _read(mix["inputs"], 0, windows=0)
    again.load_state_dict(state)
    a, b = iter(first), iter(again)
    for _ in range(20):
        (x, _), (y, _) = next(a), next(b)
        assert x["input"].tolist() == y["input"].tolist()
