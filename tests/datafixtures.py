"""Data the tests make: shards of every format, and a Hugging Face hub cache as huggingface_hub lays it out.

A cache repository is `HF_HOME/hub/{models,datasets}--OWNER--NAME/` with `refs/main` (the commit) and
`snapshots/COMMIT/FILE`: what `hf download` leaves, minus the blob deduplication (plain files instead of links to
blobs/, which huggingface_hub reads the same way offline).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def documents(assets_root: Path, split: str = "train") -> list[str]:
    """The texts of a builtin corpus's split (real prose to tokenize)."""
    lines = (assets_root / split / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def write_shard(path: Path, texts: Sequence[str], *, text_field: str = "text") -> Path:
    """One shard in the format its name says (.parquet, .jsonl, .json, .jsonl.gz, .json.gz, .txt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({text_field: list(texts), "id": list(range(len(texts)))}), path, row_group_size=7)
    elif name.endswith(".txt"):
        assert len(texts) == 1, "a .txt shard is one document"
        path.write_text(texts[0], encoding="utf-8")
    else:
        body = "".join(json.dumps({text_field: t, "url": f"https://example.org/{i}"}) + "\n"
                       for i, t in enumerate(texts))
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(body)
        else:
            path.write_text(body, encoding="utf-8")
    return path


def hub_repo(hf_home: Path, repo: str, *, kind: str = "model", commit: str = COMMIT) -> Path:
    """The snapshot folder of `repo` in the cache under `hf_home` (created, with refs/main pointing at it)."""
    root = hf_home / "hub" / f"{kind}s--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def hub_tokenizer(hf_home: Path, repo: str, tokenizer_dir: Path) -> Path:
    """A model repository holding `tokenizer_dir`'s tokenizer.json and tokenizer_config.json, and a config.json."""
    snapshot = hub_repo(hf_home, repo)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, snapshot / name)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return snapshot


def hub_c4(hf_home: Path, train: Sequence[str], validation: Sequence[str], *, repo: str = "allenai/c4",
           shards: int = 2) -> Path:
    """A dataset repository laid out as allenai/c4: en/c4-{train,validation}.NNNNN-of-MMMMM.json.gz."""
    snapshot = hub_repo(hf_home, repo, kind="dataset")
    for i in range(shards):
        write_shard(snapshot / "en" / f"c4-train.{i:05d}-of-{shards:05d}.json.gz", train[i::shards])
    write_shard(snapshot / "en" / "c4-validation.00000-of-00001.json.gz", validation)
    (snapshot / "README.md").write_text("# a test's C4\n")
    return snapshot
