"""Data sources read in place (familyc.data.sources), the weighted mix (familyc.data.mixture), the Hugging Face
cache (familyc.data.hub) and the checks `familyc apply` makes before a run starts (familyc.execute.data).

Torch-free: shards and a hub cache the tests write (tests/datafixtures.py), the builtin BPE to count tokens.
The end-to-end apply on a hub tokenizer and dataset is tests/test_apply_hub.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install -e '.[train]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (it comes with datasets, in the train extra)")

from datafixtures import documents, hub_c4, hub_repo, hub_tokenizer, write_shard  # noqa: E402

from familyc.data import ensure_builtin_assets  # noqa: E402
from familyc.data.builtin import split_of  # noqa: E402
from familyc.data.hub import local_shard, resolve_dataset, resolve_tokenizer  # noqa: E402
from familyc.data.mixture import DataManifest, Mixture  # noqa: E402
from familyc.data.sources import (  # noqa: E402
    ShardError,
    SourceFiles,
    SourceStream,
    check_shard,
    write_heldout_sample,
)
from familyc.errors import FamilycError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO / "tests" / "fixtures" / "specs-apply" / "pair.yaml"
FRACTION = 0.2


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return ensure_builtin_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def texts(assets: Any) -> list[str]:
    return documents(assets.root)[:300]


@pytest.fixture(scope="module")
def encode(assets: Any) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(assets.tokenizer_dir / "tokenizer.json"))
    return lambda text: [0, *tokenizer.encode(text, add_special_tokens=False).ids, 1]


def every_format(folder: Path, texts: list[str]) -> SourceFiles:
    """`texts` spread over one shard of each format."""
    shards = [write_shard(folder / "a.parquet", texts[0:80]), write_shard(folder / "b.jsonl", texts[80:150]),
              write_shard(folder / "sub" / "c.jsonl.gz", texts[150:220]),
              write_shard(folder / "d.json.gz", texts[220:298]), write_shard(folder / "e.txt", [texts[298]]),
              write_shard(folder / "f.txt", [texts[299]])]
    return SourceFiles(name="path:test", shards=tuple(str(p) for p in shards), text_field="text", weight=1.0,
                       heldout_fraction=FRACTION)


def read(stream: SourceStream, n: int) -> list[str]:
    return [stream.next_document() for _ in range(n)]


def training(texts: list[str]) -> list[str]:
    return [t for t in texts if split_of(t, heldout_fraction=FRACTION, seed=0) == "train"]


# --- one source -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
def test_the_ranks_read_every_training_document_of_every_format_once_per_epoch_and_no_heldout_one(
        tmp_path: Path, texts: list[str], shuffle: bool) -> None:
    source = every_format(tmp_path, texts)
    train = training(texts)
    assert 0 < len(texts) - len(train) < len(texts)  # some documents are held out
    ranks = [SourceStream(source, rank=r, world=2, seed=5, shuffle=shuffle, block=16) for r in range(2)]
    # a rank's share of an epoch: its rows of each shard (rows r, r+2, ...), the training ones
    counts = [sum(1 for t in train if t in set(_rows_of(source, r))) for r in range(2)]
    epochs = [read(stream, count) for stream, count in zip(ranks, counts, strict=True)]
    assert sorted(epochs[0] + epochs[1]) == sorted(train)
    assert not set(epochs[0]) & set(epochs[1])
    again = [read(stream, count) for stream, count in zip(ranks, counts, strict=True)]  # the second epoch
    assert [sorted(e) for e in again] == [sorted(e) for e in epochs]
    if shuffle:
        assert again != epochs, "a new epoch is read in a new order"


def _rows_of(source: SourceFiles, rank: int) -> list[str]:
    from familyc.data.sources import read_rows, shard_format

    out = []
    for name in source.shards:
        fmt = shard_format(name)
        assert fmt is not None
        out += [t for _, t in read_rows(Path(name), fmt, "text", every=2, offset=rank)]
    return out


@pytest.mark.parametrize("stop", [1, 15, 16, 40, 117])
def test_a_stream_restored_from_its_state_reads_on_exactly_where_it_stopped(
        tmp_path: Path, texts: list[str], stop: int) -> None:
    source = every_format(tmp_path, texts)
    first = SourceStream(source, rank=1, world=3, seed=2, shuffle=True, block=16)
    read(first, stop)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint or data_position.json holds
    resumed = SourceStream(source, rank=1, world=3, seed=2, shuffle=True, block=16)
    resumed.load_state_dict(state)
    assert read(resumed, 60) == read(first, 60)


def test_the_order_is_fixed_by_the_seed(tmp_path: Path, texts: list[str]) -> None:
    source = every_format(tmp_path, texts)
    a, b, c = (SourceStream(source, rank=0, world=1, seed=s, shuffle=True) for s in (0, 0, 1))
    assert read(a, 50) == read(b, 50) != read(c, 50)
    plain = SourceStream(source, rank=0, world=1, seed=0, shuffle=False)
    assert read(plain, 5) == training(texts)[:5]  # unshuffled: the shards' own order


def test_a_corrupt_or_missing_shard_is_named(tmp_path: Path, texts: list[str]) -> None:
    good = write_shard(tmp_path / "good.jsonl.gz", texts[:20])
    torn = tmp_path / "torn.jsonl.gz"
    torn.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    badline = tmp_path / "bad.jsonl"
    badline.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    check_shard(good, "jsonl.gz", "text")
    with pytest.raises(ShardError, match="junk.parquet: not a readable parquet file"):
        check_shard(junk, "parquet", "text")
    with pytest.raises(ShardError, match="good.jsonl.gz: .* no column|good.jsonl.gz: row 1 is not a JSON object"):
        check_shard(good, "jsonl.gz", "body")
    for shards, message in [((str(torn),), "torn.jsonl.gz: not a readable jsonl.gz file"),
                            ((str(badline),), "bad.jsonl: row 2 is not a JSON object with a 'text' field"),
                            ((str(tmp_path / "gone.jsonl"),), "gone.jsonl: the shard is missing")]:
        stream = SourceStream(SourceFiles(name="path:x", shards=shards, text_field="text", weight=1,
                                          heldout_fraction=0.0), rank=0, world=1, seed=0, shuffle=False)
        with pytest.raises(ShardError, match=message) as caught:
            read(stream, 100)
        assert "download the shard again" in caught.value.hint


def test_the_heldout_sample_holds_heldout_documents_of_every_source_by_weight(tmp_path: Path,
                                                                              texts: list[str]) -> None:
    a = every_format(tmp_path / "a", texts)
    b = SourceFiles(name="hf:b", shards=(str(write_shard(tmp_path / "b" / "train.jsonl", texts[:10])),),
                    heldout_shards=(str(write_shard(tmp_path / "b" / "validation.jsonl", texts[10:40])),),
                    text_field="text", weight=1.0, heldout_fraction=0.0)
    kept = write_heldout_sample([a, b], tmp_path / "sample", max_chars=10**9, max_scan_chars=10**9)
    rows = [json.loads(line) for line in (tmp_path / "sample" / "docs.jsonl").read_text().splitlines()]
    assert {r["text"] for r in rows if r["source"] == "path:test"} == set(texts) - set(training(texts))
    assert [r["text"] for r in rows if r["source"] == "hf:b"] == texts[10:40]  # its named split, whole
    assert kept["hf:b"] == sum(len(t) for t in texts[10:40])
    small = write_heldout_sample([a, b], tmp_path / "small", max_chars=2000, max_scan_chars=10**9)
    assert all(1000 <= chars < 1000 + max(len(t) for t in texts) for chars in small.values())


# --- the mix --------------------------------------------------------------------------------------

def test_a_mix_draws_tokens_in_proportion_to_the_weights_and_resumes_exactly(
        tmp_path: Path, texts: list[str], encode: Any) -> None:
    web = SourceFiles(name="path:web", shards=(str(write_shard(tmp_path / "web.parquet", texts[:150])),),
                      text_field="text", weight=3.0, heldout_fraction=FRACTION)
    code = SourceFiles(name="path:code", shards=(str(write_shard(tmp_path / "code.jsonl.gz", texts[150:])),),
                       text_field="text", weight=1.0, heldout_fraction=FRACTION)
    manifest = DataManifest(sources=(web, code), seed=0, shuffle=True)
    seen: list[int] = []
    mix = Mixture(manifest, encode, rank=0, world=1, trace=lambda i, _: seen.append(i))
    tokens = [0, 0]
    for _ in range(400):
        i, ids = mix.next_document()
        tokens[i] += len(ids)
    shares = [t / sum(tokens) for t in tokens]
    assert shares == pytest.approx([0.75, 0.25], abs=0.02)
    assert tokens == mix.tokens and set(seen) == {0, 1}
    state = json.loads(json.dumps(mix.state_dict()))
    resumed = Mixture(manifest, encode, rank=0, world=1)
    resumed.load_state_dict(state)
    assert [resumed.next_document() for _ in range(50)] == [mix.next_document() for _ in range(50)]
    other = Mixture(DataManifest(sources=(code, web), seed=0, shuffle=True), encode, rank=0, world=1)
    with pytest.raises(FamilycError, match="written for the sources"):
        other.load_state_dict(state)


# --- the Hugging Face cache -----------------------------------------------------------------------

@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline (huggingface_hub read its constants at import: patched too)."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_a_hub_tokenizer_and_dataset_resolve_offline_from_the_cache(hf_home: Path, assets: Any,
                                                                    texts: list[str]) -> None:
    snapshot = hub_tokenizer(hf_home, "meta-llama/Meta-Llama-3-8B", assets.tokenizer_dir)
    folder, commit = resolve_tokenizer("meta-llama/Meta-Llama-3-8B", None, offline=True)
    assert folder == snapshot and commit == snapshot.name and (folder / "tokenizer.json").is_file()

    hub_c4(hf_home, texts[:100], texts[100:120])
    c4 = resolve_dataset("allenai/c4", config="en", split="train", heldout_split=None, revision=None, offline=True)
    assert [s.rsplit("/", 1)[1] for s in c4.train] == ["c4-train.00000-of-00002.json.gz",
                                                        "c4-train.00001-of-00002.json.gz"]
    assert c4.heldout == () and c4.commit == commit
    assert local_shard(c4.train[0]).is_file()
    named = resolve_dataset("allenai/c4", config="en", split="train", heldout_split="validation", revision=None,
                            offline=True)
    assert [s.rsplit("/", 1)[1] for s in named.heldout] == ["c4-validation.00000-of-00001.json.gz"]

    parquet = hub_repo(hf_home, "org/web", kind="dataset")
    for i in range(2):
        write_shard(parquet / "data" / f"train-{i:05d}-of-00002.parquet", texts[i::2])
    web = resolve_dataset("org/web", config=None, split="train", heldout_split=None, revision=None, offline=True)
    assert len(web.train) == 2
    stream = SourceStream(SourceFiles(name="hf:org/web", shards=web.train, text_field="text", weight=1,
                                      heldout_fraction=FRACTION), rank=0, world=1, seed=0, shuffle=False)
    assert sorted(read(stream, len(training(texts)))) == sorted(training(texts))


MISSING = {
    "tokenizer": ("tokenizer meta-llama/Meta-Llama-3-8B is not in the Hugging Face cache .* the network is off",
                  "hf download meta-llama/Meta-Llama-3-8B tokenizer.json"),
    "dataset": ("dataset allenai/c4 is not in the Hugging Face cache",
                "hf download --repo-type dataset allenai/c4 --include 'en/*'"),
    "config": ("no data files under de/ \\(folders with data: en\\)", "--include 'de/*'"),
    "split": ("no data file of split 'test' .*splits named: train, validation", "name one of those splits"),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_what_is_not_in_the_cache_is_refused_with_the_command_that_fetches_it(hf_home: Path, case: str) -> None:
    if case in ("config", "split"):
        hub_c4(hf_home, ["a train document"], ["a validation document"])
    config, split = {"config": ("de", "train"), "split": ("en", "test")}.get(case, ("en", "train"))
    message, hint = MISSING[case]
    with pytest.raises(FamilycError, match=message) as caught:
        if case == "tokenizer":
            resolve_tokenizer("meta-llama/Meta-Llama-3-8B", None, offline=True)
        else:
            resolve_dataset("allenai/c4", config=config, split=split, heldout_split=None, revision=None, offline=True)
    assert hint in caught.value.hint, caught.value.hint


# --- before a run starts (familyc apply) ----------------------------------------------------------

def spec_with(tmp_path: Path, **sections: Any) -> Path:
    data = yaml.safe_load(PAIR.read_text())
    data.update(sections)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def apply_cli(spec: Path, run_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`familyc apply` as a user runs it (it needs the train extra: skipped without torch)."""
    import os

    pytest.importorskip("torch", reason="familyc apply needs the train extra")
    return subprocess.run([sys.executable, "-m", "familyc", "apply", str(spec), "--yes", "--run-dir", str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_a_tokenizer_larger_than_vocab_size_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                  assets: Any) -> None:
    spec = spec_with(tmp_path, architecture={"vocab_size": 1024, "seq_len": 256, "rope_theta": 10000},
                     tokenizer={"path": str(assets.tokenizer_dir)})
    proc = apply_cli(spec, tmp_path / "run")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "has 2,048 tokens, more than architecture.vocab_size 1,024" in proc.stderr, proc.stderr
    assert "set architecture.vocab_size to at least 2048" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_corrupt_local_shard_is_named_before_anything_is_written(tmp_path: Path, texts: list[str]) -> None:
    folder = tmp_path / "corpus"
    write_shard(folder / "part-0.jsonl.gz", texts[:50])
    (folder / "part-1.jsonl.gz").write_bytes(gzip.compress(b"{}")[:9])
    spec = spec_with(tmp_path, data={"dataset": {"path": str(folder)}})
    proc = apply_cli(spec, tmp_path / "run")
    assert proc.returncode == 1 and "part-1.jsonl.gz: not a readable jsonl.gz file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_missing_hub_tokenizer_names_the_download_and_a_missing_folder_its_path(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = apply_cli(spec_with(tmp_path, tokenizer={"hf": "meta-llama/Meta-Llama-3-8B"}), tmp_path / "run", env)
    assert proc.returncode == 1 and "is not in the Hugging Face cache" in proc.stderr, proc.stderr
    assert "hf download meta-llama/Meta-Llama-3-8B" in proc.stderr and "huggingface-cli" not in proc.stderr
    proc = apply_cli(spec_with(tmp_path, data={"sources": [{"builtin": "stdlib-docstrings"},
                                                           {"path": "no-such-folder", "weight": 2}]}),
                     tmp_path / "run", env)
    assert proc.returncode == 1 and "no-such-folder does not exist" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
