"""The built-in corpus and tokenizer: deterministic bytes, disjoint splits, content-addressed cache.

Needs only the `tokenizers` library (no torch); the torchtitan check at the end skips without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install -e '.[train]')")

from familyc.data import build_bpe_tokenizer, build_stdlib_docstrings, ensure_builtin_assets  # noqa: E402
from familyc.data.bpe import BOS, EOS, read_texts  # noqa: E402
from familyc.data.builtin import _cache_key, split_of  # noqa: E402
from familyc.errors import FamilycError  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory):
    return ensure_builtin_assets(tmp_path_factory.mktemp("cache"))


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_build_gives_the_same_bytes(assets, tmp_path: Path) -> None:
    build_stdlib_docstrings(tmp_path, heldout_fraction=0.05, seed=0)
    build_bpe_tokenizer(tmp_path / "tokenizer", 2048, train_dir=tmp_path / "train")
    again = files_of(tmp_path)
    first = files_of(assets.root)
    first.pop("manifest.json")
    assert sorted(again) == ["heldout/docs.jsonl", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                             "train/docs.jsonl"]
    assert again == first


def test_splits_are_disjoint_and_about_the_asked_fraction(assets) -> None:
    train, heldout = read_texts(assets.train_dir), read_texts(assets.heldout_dir)
    assert len(train) > 1500 and len(heldout) > 20
    assert not set(train) & set(heldout)
    assert len(set(train)) == len(train) and len(set(heldout)) == len(heldout)
    assert 0.02 < len(heldout) / (len(train) + len(heldout)) < 0.1
    assert all(len(t) > 200 for t in train + heldout)
    assert all(split_of(t, heldout_fraction=0.05, seed=0) == "heldout" for t in heldout)
    ids = [json.loads(line)["id"] for line in (assets.train_dir / "docs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and any(i.startswith("json/decoder.py:") for i in ids)


def test_another_seed_draws_another_heldout_set(tmp_path: Path) -> None:
    texts = [f"document {i} " * 30 for i in range(2000)]
    a = {t for t in texts if split_of(t, heldout_fraction=0.05, seed=0) == "heldout"}
    b = {t for t in texts if split_of(t, heldout_fraction=0.05, seed=1) == "heldout"}
    assert a != b and 50 < len(a) < 150 and 50 < len(b) < 150
    assert not {t for t in texts if split_of(t, heldout_fraction=0.0, seed=0) == "heldout"}


def test_the_tokenizer_is_trained_on_train_only(assets, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(assets.tokenizer_dir / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 2048
    assert (tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)) == (0, 1)
    text = read_texts(assets.heldout_dir)[0]
    assert tokenizer.decode(tokenizer.encode(text).ids) == text  # byte-level: lossless
    config = json.loads((assets.tokenizer_dir / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"]) == (BOS, EOS)
    # trained on another corpus, the tokenizer differs: the train split is what it saw
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "docs.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in read_texts(assets.heldout_dir)))
    build_bpe_tokenizer(tmp_path / "tok", 2048, train_dir=tmp_path / "other")
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() != (assets.tokenizer_dir / "tokenizer.json").read_bytes()
    with pytest.raises(FamilycError, match="vocab_size 100"):
        build_bpe_tokenizer(tmp_path / "tok2", 100, train_dir=tmp_path / "other")


def test_the_cache_builds_once_and_checks_its_files(assets, tmp_path: Path) -> None:
    manifest = assets.manifest
    splits = manifest["splits"]
    assert splits["train"]["tokens"] > 300_000 and splits["heldout"]["tokens"] > 5_000
    assert manifest["inputs"]["vocab_size"] == 2048 and manifest["tokenizer"]["vocab_size"] == 2048
    before = (assets.root / "manifest.json").stat().st_mtime_ns
    again = ensure_builtin_assets(assets.root.parent)
    assert again == assets
    assert (assets.root / "manifest.json").stat().st_mtime_ns == before
    assert [p.name for p in assets.root.parent.iterdir()] == [assets.root.name]  # no temporary folder left
    # every input is in the key
    key = _cache_key(heldout_fraction=0.05, seed=0, vocab_size=2048)[0]
    assert assets.root.name.endswith(key[:16])
    assert len({key, _cache_key(heldout_fraction=0.05, seed=0, vocab_size=1024)[0],
                _cache_key(heldout_fraction=0.05, seed=1, vocab_size=2048)[0],
                _cache_key(heldout_fraction=0.1, seed=0, vocab_size=2048)[0]}) == 4
    # a changed file is caught, not silently used
    copy = tmp_path / "cache" / assets.root.name
    shutil.copytree(assets.root, copy)
    docs = copy / "train" / "docs.jsonl"
    docs.write_bytes(docs.read_bytes()[:-100])
    with pytest.raises(FamilycError, match="does not match"):
        ensure_builtin_assets(tmp_path / "cache")


def test_torchtitan_reads_the_assets(assets) -> None:
    pytest.importorskip("torchtitan.components.tokenizer", reason="torchtitan is not installed")
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer(str(assets.tokenizer_dir))
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.get_vocab_size()) == (0, 1, 2048)
    ids = tokenizer.encode("Return the sum.", add_bos=True, add_eos=True)
    assert ids[0] == 0 and ids[-1] == 1 and 0 not in ids[1:-1]


def _documents_read(assets, *, seed: int | None, rank: int, world: int, start: int = 0, count: int = 12) -> list[str]:
    """The texts torchtitan's own dataset reads for one rank, shuffled as a stage shuffles them."""
    pytest.importorskip("torchtitan.hf_datasets.text_datasets", reason="torchtitan is not installed")
    from torchtitan.components.tokenizer import HuggingFaceTokenizer
    from torchtitan.hf_datasets.text_datasets import HuggingFaceTextDataset

    from familyc.backend.stage import shuffled_documents

    dataset = HuggingFaceTextDataset("c4_test", str(assets.train_dir), HuggingFaceTokenizer(str(assets.tokenizer_dir)),
                                     seq_len=32, dp_rank=rank, dp_world_size=world)
    if seed is not None:
        dataset._data = shuffled_documents(dataset._data, seed)
    dataset._sample_idx = start  # where a stage continuing the stream (or a resumed one) starts
    return [row["text"] for row, _ in zip(dataset._get_data_iter(), range(count), strict=False)]


def test_a_stage_reads_its_shard_in_a_seeded_order(assets) -> None:
    in_order = _documents_read(assets, seed=None, rank=0, world=2, count=10_000)
    first = _documents_read(assets, seed=7, rank=0, world=2)
    assert first == _documents_read(assets, seed=7, rank=0, world=2)  # the same seed: the same order
    assert first != _documents_read(assets, seed=8, rank=0, world=2)
    assert first != in_order[:12] and set(first) <= set(in_order)  # a permutation of the rank's own shard
    other = set(_documents_read(assets, seed=7, rank=1, world=2, count=10_000))
    assert not other & set(in_order) and len(other) + len(in_order) == len(read_texts(assets.train_dir))
    # a stage continuing at document 5 of the stream reads what the first stage would have read next
    assert _documents_read(assets, seed=7, rank=0, world=2, start=5, count=7) == first[5:]


def test_heldout_windows_are_a_fixed_sample_spread_over_the_documents(assets, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    from familyc.backend.evaluate import load_heldout

    folder = tmp_path / "heldout"
    folder.mkdir()
    texts = [f"def function_{i}(x):\n    return x * {i}\n" * 12 for i in range(60)]  # about 260 tokens each
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    def windows(tokens: int, part: str = "all") -> set[tuple[int, ...]]:
        held = load_heldout(folder, assets.tokenizer_dir, seq_len=64, max_tokens=tokens, part=part)
        assert held.tokens == min(tokens // 64, held.windows.shape[0]) * 64
        return {tuple(w.tolist()) for w in held.windows}

    small = load_heldout(folder, assets.tokenizer_dir, seq_len=64, max_tokens=640)
    first_ten = load_heldout(folder, assets.tokenizer_dir, seq_len=64, max_tokens=10 ** 6).windows[:10]
    assert small.windows.shape == (10, 65) and not bool((small.windows == first_ten).all())
    assert small.documents > 4  # ten windows of a 64-token sequence drawn from far more than the first documents
    assert windows(640) == windows(640) and windows(640) <= windows(6400)  # fixed; a smaller ask is a subset
    assert not windows(10 ** 6, "validation") & windows(10 ** 6, "test")  # the halves share no document
