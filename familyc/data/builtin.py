"""The built-in corpora (`stdlib-docstrings`, `stdlib-source`) and their tokenizer (`bpe-2048`), built offline.

Every Python ships its standard library, so its docstrings are a corpus that needs no network
and no vendored data (PSF licence). Documents are the docstrings of modules, classes and
functions longer than MIN_CHARS characters in `<stdlib>/*.py` and `<stdlib>/*/*.py` (tests and
site-packages excluded), exact duplicates dropped. Each goes to `heldout` when the hash of
(seed, text) falls below `heldout_fraction`, otherwise to `train`: deterministic, independent
of file order, and a text can never be in both splits.

    <dir>/train/docs.jsonl       {"id": "json/decoder.py:JSONDecoder.decode", "text": "..."} per line
    <dir>/heldout/docs.jsonl
    <dir>/tokenizer/             tokenizer.json, tokenizer_config.json (trained on train only)
    <dir>/manifest.json          inputs, counts and the sha256 of every file; written last

`ensure_builtin_assets(cache_dir)` builds this once into `cache_dir/stdlib-docstrings-<key>`,
where key hashes everything the bytes depend on (the standard library's sources, Python's
version, the tokenizers version, the parameters, BUILDER_VERSION), and finds it again after.
The corpus depends on the Python version: 3.11 and 3.12 give different documents.

`stdlib-source` is the larger corpus of the CPU benchmark (benchmarks/family_cpu.py): every
`*.py` file of the standard library, tests included (31.5 MB, about 10.5M tokens of BPE-2048 on
Python 3.11), one document per file, split and built the same way. Learning to continue real
Python code is a task a few million tokens do not exhaust, so the benchmark measures learning
rather than memorising (each member sees well under one epoch).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from familyc.data.bpe import BOS, EOS, build_bpe_tokenizer, count_tokens, read_texts
from familyc.enums import HeldoutPart
from familyc.errors import FamilycError
from familyc.files import atomic_folder, atomic_write, sha256_file

NAME = "stdlib-docstrings"
SOURCE = "stdlib-source"
CORPORA = (NAME, SOURCE)
BUILDER_VERSION = 1
"""Bump when the extraction, the split or the file layout changes: it is part of the cache key."""
MIN_CHARS = 200
SPLITS = ("train", "heldout")
DOCS_FILE = "docs.jsonl"
MANIFEST = "manifest.json"
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages"}


@dataclass(frozen=True, kw_only=True, slots=True)
class CorpusStats:
    documents: dict[str, int]
    """Per split."""
    bytes: dict[str, int]
    """UTF-8 bytes of the document texts, per split."""
    duplicates_dropped: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Assets:
    root: Path
    train_dir: Path
    """The folder torchtitan's `c4_test` loader reads (`training.dataset_path`)."""
    heldout_dir: Path
    tokenizer_dir: Path
    """torchtitan's `model.hf_assets_path`."""
    manifest_sha256: str
    """Of manifest.json, which holds the sha256 of every other file: names the content."""
    manifest: dict[str, Any] = field(compare=False, hash=False)
    """manifest.json as read (JSON)."""


# --- the corpus -------------------------------------------------------------------------------

def _source_files(stdlib: Path, corpus: str = NAME) -> list[Path]:
    if corpus == SOURCE:  # every module, tests included (they are real code too)
        return sorted(p for p in stdlib.rglob("*.py")
                      if "site-packages" not in p.relative_to(stdlib).parts and not p.parent.name.startswith("config-"))
    files = sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py"))
    return [p for p in files
            if not _SKIP_PARTS & set(p.relative_to(stdlib).parts) and not p.parent.name.startswith("config-")]


def source_documents(stdlib: Path | None = None) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every standard-library module longer than MIN_CHARS that is UTF-8."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    for path in _source_files(root, SOURCE):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) > MIN_CHARS:
            yield path.relative_to(root).as_posix(), text


def _statements(node: ast.AST) -> Iterator[ast.AST]:
    """The statements directly under a node (bodies of defs, ifs, loops, trys, withs, matches)."""
    for name in ("body", "orelse", "finalbody", "handlers", "cases"):
        value = getattr(node, name, None)
        if isinstance(value, list):
            yield from value


def _docstrings(tree: ast.Module, prefix: str) -> Iterator[tuple[str, str]]:
    """(id, docstring) of the module and of every class and function in it, depth first."""
    def visit(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node)
            if doc:
                yield (f"{prefix}:{qualname}" if qualname else prefix), doc
        for child in _statements(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(child, f"{qualname}.{child.name}" if qualname else child.name)
            else:
                yield from visit(child, qualname)

    yield from visit(tree, "")


def stdlib_documents(stdlib: Path | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) of every docstring longer than MIN_CHARS, in file and then source order."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    for path in _source_files(root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old modules
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue
        for doc_id, text in _docstrings(tree, path.relative_to(root).as_posix()):
            if len(text) > MIN_CHARS:
                yield doc_id, text


def split_of(text: str, *, heldout_fraction: float, seed: int) -> str:
    """`heldout` or `train`, from the first 64 bits of sha256(seed, text) as a fraction of 2^64."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode("utf-8", "surrogatepass")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") < heldout_fraction * 2**64 else "train"


VALIDATION_SEED = 1
"""The hash seed of the validation/test halves (the held-out split itself is seed 0's)."""


def in_heldout_part(text: str, part: HeldoutPart) -> bool:
    """Whether a held-out document belongs to `part`: half of them (by sha256 of the text, seeded apart from
    the held-out split's own hash) are validation, the others test."""
    if part == "all":
        return True
    validation = split_of(text, heldout_fraction=0.5, seed=VALIDATION_SEED) == "heldout"
    return validation == (part == "validation")


def build_stdlib_docstrings(out_dir: Path | str, heldout_fraction: float = 0.05, seed: int = 0) -> CorpusStats:
    """Write `out_dir/train/docs.jsonl` and `out_dir/heldout/docs.jsonl` (see the module docstring)."""
    return build_corpus(out_dir, NAME, heldout_fraction=heldout_fraction, seed=seed)


def build_corpus(out_dir: Path | str, corpus: str, *, heldout_fraction: float = 0.05, seed: int = 0) -> CorpusStats:
    """Write one of CORPORA as `out_dir/{train,heldout}/docs.jsonl`."""
    if corpus not in CORPORA:
        raise FamilycError(f"unknown builtin corpus {corpus!r}", hint="known: " + ", ".join(CORPORA))
    if not 0.0 <= heldout_fraction < 1.0:
        raise FamilycError(f"heldout_fraction must be in [0, 1), not {heldout_fraction}")
    out = Path(out_dir)
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    seen: set[str] = set()
    duplicates = 0
    for doc_id, text in (stdlib_documents() if corpus == NAME else source_documents()):
        if text in seen:
            duplicates += 1
            continue
        seen.add(text)
        split = split_of(text, heldout_fraction=heldout_fraction, seed=seed)
        # ensure_ascii: every docstring becomes valid JSON, even one holding a lone surrogate
        lines[split].append(json.dumps({"id": doc_id, "text": text}, ensure_ascii=True))
        sizes[split] += len(text.encode("utf-8", "surrogatepass"))
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        with (out / split / DOCS_FILE).open("w", encoding="ascii", newline="\n") as f:
            f.write("".join(line + "\n" for line in lines[split]))
    return CorpusStats(documents={s: len(lines[s]) for s in SPLITS}, bytes=sizes, duplicates_dropped=duplicates)


# --- built once, found by content ---------------------------------------------------------------

def _cache_key(*, corpus: str = NAME, heldout_fraction: float, seed: int,
               vocab_size: int) -> tuple[str, dict[str, Any]]:
    """The hash of everything the output bytes depend on, and those inputs for the manifest."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = hashlib.sha256()
    files = _source_files(stdlib, corpus)
    for path in files:
        sources.update(path.relative_to(stdlib).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    inputs = {
        **({"corpus": corpus} if corpus != NAME else {}),  # absent for the first corpus: its cache keys stay
        "builder_version": BUILDER_VERSION,
        "python": ".".join(map(str, sys.version_info[:3])),
        "tokenizers": metadata.version("tokenizers"),
        "stdlib_files": len(files),
        "stdlib_sha256": sources.hexdigest(),
        "min_chars": MIN_CHARS,
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "vocab_size": vocab_size,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, inputs


def _build(root: Path, inputs: dict[str, Any]) -> None:
    name = inputs.get("corpus", NAME)
    corpus = build_corpus(root, name, heldout_fraction=inputs["heldout_fraction"], seed=inputs["seed"])
    tokenizer = build_bpe_tokenizer(root / "tokenizer", inputs["vocab_size"], train_dir=root / "train")
    splits = {
        split: {"documents": corpus.documents[split], "bytes": corpus.bytes[split],
                "tokens": count_tokens(root / "tokenizer", read_texts(root / split)) if corpus.documents[split] else 0}
        for split in SPLITS
    }
    files = sorted(p for p in root.rglob("*") if p.is_file())
    manifest = {
        "schema_version": 1,
        "name": name,
        "inputs": inputs,
        "splits": splits,
        "duplicates_dropped": corpus.duplicates_dropped,
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "bos": BOS, "eos": EOS},
        "files": {p.relative_to(root).as_posix(): sha256_file(p) for p in files},
    }
    atomic_write(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _open(root: Path) -> Assets:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FamilycError(f"{root} has no {MANIFEST}: not a finished asset build",
                           hint=f"delete {root}; the next run rebuilds it")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, expected in manifest["files"].items():
        path = root / name
        if not path.is_file() or sha256_file(path) != expected:
            raise FamilycError(f"{path} is missing or does not match {manifest_path}",
                               hint=f"delete {root}; the next run rebuilds it")
    return Assets(root=root, train_dir=root / "train", heldout_dir=root / "heldout", tokenizer_dir=root / "tokenizer",
                  manifest_sha256=sha256_file(manifest_path), manifest=manifest)


def ensure_builtin_assets(cache_dir: Path | str, *, corpus: str = NAME, heldout_fraction: float = 0.05, seed: int = 0,
                          vocab_size: int = 2048) -> Assets:
    """A built-in corpus and its tokenizer under `cache_dir`, built there first if this content is new.

    Safe against concurrent callers: each builds into its own temporary folder and renames it into
    place; a loser of the race discards its copy and uses the winner's (the bytes are the same)."""
    if corpus not in CORPORA:
        raise FamilycError(f"unknown builtin corpus {corpus!r}", hint="known: " + ", ".join(CORPORA))
    cache = Path(cache_dir).resolve()
    key, inputs = _cache_key(corpus=corpus, heldout_fraction=heldout_fraction, seed=seed, vocab_size=vocab_size)
    root = cache / f"{corpus}-{key[:16]}"
    if not root.exists():
        with atomic_folder(root) as tmp:
            _build(tmp, inputs)
    return _open(root)
